//! The webhook configurations as `k8s-openapi` objects, built from the
//! routing decisions in [`routing`](super::routing), and the metadata every
//! object the gate ships carries.
//!
//! What is fixed here for every webhook, and why:
//! - `sideEffects: None`: the gate writes nothing, so dry-run requests are sent too;
//! - `admissionReviewVersions: [v1]`: the only version the gate reads;
//! - `matchPolicy: Equivalent`: a request through another group/version of
//!   a routed resource is converted and sent, not let through;
//! - `reinvocationPolicy: IfNeeded` (mutation): the gate's annotations are
//!   re-applied after a later webhook changed the object;
//! - `namespaceSelector`: `kube-system` and the gate's namespace are never
//!   sent, so neither the control plane nor the gate's own Pods can wait on
//!   the gate.

use super::routing::{Webhook, failure_policy_name};
use super::rules::Rule;
use super::{OBJECT_NAME, RenderError, Target};
use crate::policy::Stage;
use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use std::collections::BTreeMap;

/// `metadata` of every object the gate ships: `name`, `namespace` for
/// namespaced objects, and the `app.kubernetes.io/name: safety-gate` label.
pub fn metadata(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_string(),
            "safety-gate".to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

/// The ValidatingWebhookConfiguration for the `/validate` webhooks of
/// [`webhooks`](super::webhooks) (an empty list renders `webhooks: []`).
///
/// # Errors
/// [`RenderError::CaBundle`] when `target.ca_bundle` is not base64.
pub fn validating_configuration(
    webhooks: &[Webhook],
    target: &Target,
) -> Result<ValidatingWebhookConfiguration, RenderError> {
    let webhooks = webhooks
        .iter()
        .map(|w| {
            Ok(ValidatingWebhook {
                name: w.name(),
                failure_policy: Some(failure_policy_name(w.failure_policy).to_string()),
                timeout_seconds: Some(i32::from(w.timeout_seconds())),
                side_effects: SIDE_EFFECTS.to_string(),
                admission_review_versions: review_versions(),
                match_policy: Some(MATCH_POLICY.to_string()),
                namespace_selector: Some(namespace_selector(target)),
                client_config: client_config(w.stage, target)?,
                rules: Some(w.rules.iter().map(rule_with_operations).collect()),
                ..ValidatingWebhook::default()
            })
        })
        .collect::<Result<_, RenderError>>()?;
    Ok(ValidatingWebhookConfiguration {
        metadata: metadata(OBJECT_NAME, None),
        webhooks: Some(webhooks),
    })
}

/// The MutatingWebhookConfiguration for the `/mutate` webhooks of
/// [`webhooks`](super::webhooks) (an empty list renders `webhooks: []`).
///
/// # Errors
/// [`RenderError::CaBundle`] when `target.ca_bundle` is not base64.
pub fn mutating_configuration(
    webhooks: &[Webhook],
    target: &Target,
) -> Result<MutatingWebhookConfiguration, RenderError> {
    let webhooks = webhooks
        .iter()
        .map(|w| {
            Ok(MutatingWebhook {
                name: w.name(),
                failure_policy: Some(failure_policy_name(w.failure_policy).to_string()),
                timeout_seconds: Some(i32::from(w.timeout_seconds())),
                side_effects: SIDE_EFFECTS.to_string(),
                admission_review_versions: review_versions(),
                match_policy: Some(MATCH_POLICY.to_string()),
                reinvocation_policy: Some("IfNeeded".to_string()),
                namespace_selector: Some(namespace_selector(target)),
                client_config: client_config(w.stage, target)?,
                rules: Some(w.rules.iter().map(rule_with_operations).collect()),
                ..MutatingWebhook::default()
            })
        })
        .collect::<Result<_, RenderError>>()?;
    Ok(MutatingWebhookConfiguration {
        metadata: metadata(OBJECT_NAME, None),
        webhooks: Some(webhooks),
    })
}

const SIDE_EFFECTS: &str = "None";
const MATCH_POLICY: &str = "Equivalent";

fn review_versions() -> Vec<String> {
    vec!["v1".to_string()]
}

/// Every namespace but [`Target::excluded_namespaces`].
fn namespace_selector(target: &Target) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".to_string(),
            operator: "NotIn".to_string(),
            values: Some(target.excluded_namespaces()),
        }]),
        match_labels: None,
    }
}

/// The Service, or `target.url` + the endpoint's path when the gate runs
/// outside the cluster; exactly one of the two is set.
fn client_config(stage: Stage, target: &Target) -> Result<WebhookClientConfig, RenderError> {
    let ca_bundle = match &target.ca_bundle {
        Some(text) => Some(ByteString(
            base64::engine::general_purpose::STANDARD.decode(text)?,
        )),
        None => None,
    };
    Ok(WebhookClientConfig {
        service: target.url.is_none().then(|| ServiceReference {
            namespace: target.namespace.clone(),
            name: target.service.clone(),
            path: Some(stage.path().to_string()),
            port: Some(i32::from(target.port)),
        }),
        url: target
            .url
            .as_ref()
            .map(|base| format!("{}{}", base.trim_end_matches('/'), stage.path())),
        ca_bundle,
    })
}

/// A compressed rule as the API object; `scope` stays out when it is the
/// default `*` ([`Rule::scope`]).
fn rule_with_operations(rule: &Rule) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(rule.api_groups.clone()),
        api_versions: Some(rule.api_versions.clone()),
        operations: Some(rule.operations.clone()),
        resources: Some(rule.resources.clone()),
        scope: rule.scope.clone(),
    }
}
