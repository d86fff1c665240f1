//! The on-disk shape of policy documents: `GatePolicy` (design.md §3) and plain
//! `ValidatingAdmissionPolicy` + `ValidatingAdmissionPolicyBinding`.
//!
//! Every struct denies unknown fields: a typo in a policy must be an error at
//! load, never a silently ignored guardrail. Expression fields keep their
//! source location so that compile errors can name the line.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// What a failing validation does (★ extension; VAP expresses this on the binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Action {
    #[default]
    Deny,
    Warn,
    Audit,
}

/// What an evaluation error means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum FailurePolicy {
    #[default]
    Fail,
    Ignore,
}

/// `reason` of a validation, mapped to an HTTP status code like VAP does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Reason {
    Unauthorized,
    Forbidden,
    Invalid,
    RequestEntityTooLarge,
}

impl Reason {
    pub fn code(self) -> u16 {
        match self {
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::Invalid => 422,
            Reason::RequestEntityTooLarge => 413,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::Invalid => "Invalid",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
        }
    }
}

/// Only the two fields every document has; used to pick the real type.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentHeader {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Spanned<String>,
    /// kube-apiserver clears the namespace of a cluster-scoped object; so do we.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    // What `kubectl get -o yaml` adds to an object read back from a cluster: set by
    // kube-apiserver, meaningless for evaluation, accepted and ignored so that a
    // policy exported from a cluster loads unchanged.
    #[serde(default)]
    pub uid: Option<IgnoredAny>,
    #[serde(default)]
    pub resource_version: Option<IgnoredAny>,
    #[serde(default)]
    pub generation: Option<IgnoredAny>,
    #[serde(default)]
    pub creation_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    pub deletion_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    pub deletion_grace_period_seconds: Option<IgnoredAny>,
    #[serde(default)]
    pub managed_fields: Option<IgnoredAny>,
    #[serde(default)]
    pub owner_references: Option<IgnoredAny>,
    #[serde(default)]
    pub finalizers: Option<IgnoredAny>,
    #[serde(default)]
    pub generate_name: Option<IgnoredAny>,
    #[serde(default)]
    pub self_link: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValidatingPolicyDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PolicySpec,
    /// A VAP read back from a cluster carries `status.typeChecking` and conditions:
    /// written by kube-apiserver's controllers, ignored here.
    #[serde(default)]
    pub status: Option<IgnoredAny>,
}

/// The spec shared by `GatePolicy` and `ValidatingAdmissionPolicy`; the ★
/// fields are rejected on a VAP when the document is converted.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub failure_policy: Option<FailurePolicy>,
    #[serde(default)]
    pub match_constraints: Option<MatchResources>,
    #[serde(default)]
    pub match_conditions: Vec<NamedExpression>,
    #[serde(default)]
    pub variables: Vec<NamedExpression>,
    #[serde(default)]
    pub lookups: Vec<LookupSpec>,
    #[serde(default)]
    pub exemptions: Vec<NamedExpression>,
    #[serde(default)]
    pub validations: Vec<ValidationSpec>,
    #[serde(default)]
    pub audit_annotations: Vec<AuditAnnotationSpec>,
    #[serde(default)]
    pub annotate: BTreeMap<String, Spanned<Option<String>>>,
    #[serde(default)]
    pub mutations: Vec<MutationSpec>,
    /// ★ Also evaluate the validations at the mutating stage. kube-apiserver
    /// validates an object (and refuses, e.g., "field is immutable") after
    /// mutating webhooks and before validating webhooks, so only a denial
    /// from `/mutate` reaches the user for a change it refuses itself.
    #[serde(default)]
    pub deny_before_object_validation: bool,
    /// VAP only: the kind of the objects a binding's `paramRef` selects; each
    /// selected object is `params` in one evaluation of the policy.
    #[serde(default)]
    pub param_kind: Option<ParamKind>,
}

/// `spec.paramKind` of a ValidatingAdmissionPolicy.
#[derive(Debug, Deserialize, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParamKind {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
}

/// `spec.paramRef` of a ValidatingAdmissionPolicyBinding: which param objects
/// (by name, or all that a label selector matches) and what to do when there is none.
#[derive(Debug, Deserialize, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParamRef {
    #[serde(default)]
    pub name: String,
    /// Empty: the request's namespace (for a namespaced param kind).
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// `Allow` or `Deny`; required by kube-apiserver.
    #[serde(default)]
    pub parameter_not_found_action: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchResources {
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub object_selector: Option<LabelSelector>,
    #[serde(default)]
    pub resource_rules: Vec<ResourceRule>,
    #[serde(default)]
    pub exclude_resource_rules: Vec<ResourceRule>,
    #[serde(default)]
    pub match_policy: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceRule {
    #[serde(default)]
    pub operations: Vec<String>,
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub api_versions: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamedExpression {
    pub name: String,
    pub expression: Spanned<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LookupSpec {
    pub name: String,
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValidationSpec {
    pub expression: Spanned<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub message_expression: Option<Spanned<String>>,
    #[serde(default)]
    pub reason: Option<Reason>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditAnnotationSpec {
    pub key: String,
    pub value_expression: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutationSpec {
    #[serde(default = "json_patch_type")]
    pub patch_type: String,
    pub expression: Spanned<String>,
}

fn json_patch_type() -> String {
    "JSONPatch".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VapBindingDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: VapBindingSpec,
    #[serde(default)]
    pub status: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VapBindingSpec {
    pub policy_name: String,
    #[serde(default)]
    pub validation_actions: Vec<String>,
    #[serde(default)]
    pub match_resources: Option<MatchResources>,
    #[serde(default)]
    pub param_ref: Option<ParamRef>,
}
