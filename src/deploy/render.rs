//! The files `safety-gate manifests` writes: each object of
//! [`objects`](super::objects), [`rbac`](super::rbac) and
//! [`configmap`](super::configmap) as YAML ([`yaml`](super::yaml) keeps the
//! field order), under a header that says what it carries and why.

use super::configmap::{policies_config_map, policy_files};
use super::objects::{metadata, mutating_configuration, validating_configuration};
use super::rbac::cluster_role;
use super::routing::{Webhook, failure_policy_name, webhooks};
use super::yaml::to_yaml;
use super::{OBJECT_NAME, RenderError, Target};
use crate::policy::PolicySet;
use crate::policy::Stage;
use std::path::Path;

/// File `safety-gate manifests --out DIR` writes the webhook configurations to.
pub const WEBHOOKS_FILE: &str = "webhooks.yaml";
/// File `safety-gate manifests --out DIR` writes the ClusterRole to.
pub const CLUSTER_ROLE_FILE: &str = "clusterrole.yaml";
/// File `safety-gate manifests --out DIR` writes the policies ConfigMap to.
pub const POLICIES_FILE: &str = "policies.yaml";

const GENERATED: &str = "\
# Rendered by `safety-gate manifests` from the policy files. Do not edit: change
# the policies, then run `safety-gate manifests --out deploy/base`
# (tests/deploy.rs fails while a committed copy is stale).
";

/// The two webhook configurations as one YAML stream, with a header that
/// says what each webhook carries and why its settings are what they are.
///
/// # Errors
/// [`RenderError::BroadFailClosed`] from [`webhooks`],
/// [`RenderError::CaBundle`] when `target.ca_bundle` is not base64.
pub fn render_webhooks(set: &PolicySet, target: &Target) -> Result<String, RenderError> {
    let validate = webhooks(set, Stage::Validate)?;
    let mutate = webhooks(set, Stage::Mutate)?;
    let validating = validating_configuration(&validate, target)?;
    let mutating = mutating_configuration(&mutate, target)?;
    let all: Vec<&Webhook> = validate.iter().chain(&mutate).collect();
    let mut out = String::from(GENERATED);
    out.push_str("#\n# One webhook per failurePolicy; each routes only what its policies match:\n");
    let width = all.iter().map(|w| w.name().len()).max().unwrap_or(0);
    for w in &all {
        out.push_str(&format!(
            "#   {:width$}  {:6}  {}s  {}\n",
            w.name(),
            failure_policy_name(w.failure_policy),
            w.timeout_seconds(),
            w.policies.join(", "),
        ));
    }
    let max_validate = validate
        .iter()
        .map(|w| u32::from(w.timeout_seconds()))
        .max()
        .unwrap_or(0);
    let sum_mutate: u32 = mutate.iter().map(|w| u32::from(w.timeout_seconds())).sum();
    out.push_str(&format!(
        "\
# A request both validating webhooks would match is sent to the fail-closed one
# only; the gate evaluates every matching policy per call, and each policy's own
# failurePolicy still decides its errors and deadlines.
# timeoutSeconds only matter while the gate is unreachable (it answers in
# milliseconds). Mutating webhooks run in sequence and may be called again
# (reinvocationPolicy IfNeeded); validating webhooks run in parallel. Worst case
# the gate adds 2 x {sum_mutate}s + {max_validate}s = {}s to a write; other webhooks add
# theirs, and the total must stay under kube-apiserver's request deadline (60s).
# namespaceSelector: nothing in {} is ever sent, so the
# control plane and the gate's own Pods can be re-created while the gate is down.
# Webhook configurations are never sent to any webhook: deleting these two is
# the break-glass when the gate is down (deploy/README.md).
",
        2 * sum_mutate + max_validate,
        target.excluded_namespaces().join(" and "),
    ));
    out.push_str("---\n");
    out.push_str(&to_yaml(&validating)?);
    out.push_str("---\n");
    out.push_str(&to_yaml(&mutating)?);
    Ok(out)
}

/// The ClusterRole of the gate's ServiceAccount: `get`/`list`/`watch` on
/// exactly the kinds the policies look up (and Namespaces when they read
/// namespace labels), nothing else: [`cluster_role`] with the gate's
/// metadata, under a header that lists what is granted.
///
/// # Errors
/// [`RenderError::Yaml`] if the YAML writer fails.
pub fn render_cluster_role(set: &PolicySet) -> Result<String, RenderError> {
    let needs = set.cluster_needs();
    let mut out = String::from(GENERATED);
    out.push_str("#\n# Least privilege: read-only access to what the policies look up");
    if needs.kinds.is_empty() && !needs.namespaces {
        out.push_str(" (nothing).\n");
    } else {
        let mut what: Vec<String> = needs
            .kinds
            .iter()
            .map(|(a, k)| format!("{k} ({a})"))
            .collect();
        if needs.namespaces {
            what.push("Namespace (v1, for namespace labels)".to_string());
        }
        out.push_str(":\n");
        for w in what {
            out.push_str(&format!("#   {w}\n"));
        }
    }
    out.push_str("---\n");
    out.push_str(&to_yaml(&cluster_role(
        &needs,
        metadata(OBJECT_NAME, None),
    ))?);
    Ok(out)
}

/// The policies ConfigMap ([`policies_config_map`] of the files in `dir`)
/// under a header.
///
/// # Errors
/// As [`policy_files`] and [`policies_config_map`].
pub fn render_policies_configmap(dir: &Path, target: &Target) -> Result<String, RenderError> {
    let config_map = policies_config_map(policy_files(dir)?, target)?;
    let mut out = String::from(GENERATED);
    out.push_str(
        "#\n# The policy files, one key per file; mounted at the Deployment's --policies\n# directory.\n---\n",
    );
    out.push_str(&to_yaml(&config_map)?);
    Ok(out)
}

/// A file of `deploy/base` and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// File name under `--out DIR` ([`WEBHOOKS_FILE`], ...).
    pub name: &'static str,
    /// The YAML stream, header comments included.
    pub contents: String,
}

/// Everything `safety-gate manifests --out DIR` writes, for the policy set
/// loaded from `dir`: [`WEBHOOKS_FILE`], [`CLUSTER_ROLE_FILE`] and
/// [`POLICIES_FILE`], in that order.
///
/// # Errors
/// The first error of [`render_webhooks`], [`render_cluster_role`] or
/// [`render_policies_configmap`].
pub fn render_all(
    dir: &Path,
    set: &PolicySet,
    target: &Target,
) -> Result<Vec<RenderedFile>, RenderError> {
    Ok(vec![
        RenderedFile {
            name: WEBHOOKS_FILE,
            contents: render_webhooks(set, target)?,
        },
        RenderedFile {
            name: CLUSTER_ROLE_FILE,
            contents: render_cluster_role(set)?,
        },
        RenderedFile {
            name: POLICIES_FILE,
            contents: render_policies_configmap(dir, target)?,
        },
    ])
}
