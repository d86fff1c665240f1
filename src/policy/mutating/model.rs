//! The on-disk shape of `admissionregistration.k8s.io/v1` MutatingAdmissionPolicy
//! and MutatingAdmissionPolicyBinding. Unknown fields are refused, as
//! kube-apiserver refuses them under `fieldValidation=Strict` (kubectl's default).
//!
//! Fields whose values kube-apiserver validates (`failurePolicy`,
//! `reinvocationPolicy`, `patchType`) are read as text so that a wrong value
//! gets kube-apiserver's "Unsupported value" wording, not a decoder error.

use crate::policy::model::{MatchResources, NamedExpression, ObjectMeta};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MapDocument {
    // Read by the loader's header pass; kept so that a full document decodes.
    #[allow(dead_code)]
    pub api_version: String,
    #[allow(dead_code)]
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: MapSpec,
    /// Written by kube-apiserver's controllers; ignored.
    #[allow(dead_code)]
    #[serde(default)]
    pub status: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MapSpec {
    #[serde(default)]
    pub param_kind: Option<serde_json::Value>,
    #[serde(default)]
    pub match_constraints: Option<MatchResources>,
    #[serde(default)]
    pub variables: Vec<NamedExpression>,
    #[serde(default)]
    pub mutations: Vec<MutationDocument>,
    #[serde(default)]
    pub failure_policy: Option<String>,
    #[serde(default)]
    pub match_conditions: Vec<NamedExpression>,
    #[serde(default)]
    pub reinvocation_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutationDocument {
    #[serde(default)]
    pub patch_type: Option<Spanned<String>>,
    #[serde(default)]
    pub json_patch: Option<ExpressionHolder>,
    #[serde(default)]
    pub apply_configuration: Option<ExpressionHolder>,
}

/// `jsonPatch` / `applyConfiguration`: `{expression: ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExpressionHolder {
    #[serde(default)]
    pub expression: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MapBindingDocument {
    #[allow(dead_code)]
    pub api_version: String,
    #[allow(dead_code)]
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: MapBindingSpec,
    /// Written by kube-apiserver's controllers; ignored.
    #[allow(dead_code)]
    #[serde(default)]
    pub status: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MapBindingSpec {
    #[serde(default)]
    pub policy_name: String,
    #[serde(default)]
    pub param_ref: Option<serde_json::Value>,
    #[serde(default)]
    pub match_resources: Option<MatchResources>,
}
