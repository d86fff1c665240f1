//! The PolicyTest document as its YAML reads (README "PolicyTest reference"):
//! the suite, its cases and each case's `expect`. Unknown fields are refused,
//! so a misspelt expectation fails the suite instead of passing unchecked.

use crate::documents::{Document, Located};
use crate::policy::GATE_API_VERSION;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `kind: PolicyTest`, which [`is_policy_test`] recognises.
const KIND: &str = "PolicyTest";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PolicyTestDocument {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    pub(crate) metadata: TestMeta,
    pub(crate) spec: PolicyTestSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestMeta {
    pub(crate) name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PolicyTestSpec {
    pub(crate) policies: Vec<Source>,
    #[serde(default)]
    pub(crate) cluster_state: Vec<Source>,
    /// Param objects (files or globs) for bindings with a `paramRef`: part of
    /// the same cluster state, listed apart so a suite says what they are.
    #[serde(default)]
    pub(crate) params: Vec<Source>,
    #[serde(default)]
    pub(crate) mode: Option<TestMode>,
    pub(crate) cases: Vec<Case>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
pub(crate) enum TestMode {
    Enforce,
    /// The gate's dry-run mode (`--mode dry-run`); `Audit`, its name before,
    /// is still read.
    #[serde(alias = "Audit")]
    DryRun,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Case {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) operation: Option<Operation>,
    #[serde(default)]
    pub(crate) user_info: Option<UserInfo>,
    #[serde(default)]
    pub(crate) object: Option<ObjectSource>,
    #[serde(default)]
    pub(crate) old_object: Option<ObjectSource>,
    /// `request.name`; `""` models the per-item DELETEs of a DeleteCollection.
    #[serde(default)]
    pub(crate) request_name: Option<String>,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub(crate) resource: Option<GroupVersionResource>,
    #[serde(default)]
    pub(crate) sub_resource: Option<String>,
    #[serde(default)]
    pub(crate) dry_run: bool,
    #[serde(default)]
    pub(crate) options: Option<serde_json::Value>,
    /// `request.uid` (default `policytest-<index>`).
    #[serde(default)]
    pub(crate) uid: Option<String>,
    /// Lookups (by name) whose cluster state is unavailable in this case, as when
    /// a watch cache has not synced or RBAC forbids the list.
    #[serde(default)]
    pub(crate) lookups_unavailable: Vec<String>,
    /// `validate` (default) or `mutate`: which webhook path the case goes through.
    #[serde(default)]
    pub(crate) endpoint: Option<String>,
    #[serde(default)]
    pub(crate) mode: Option<TestMode>,
    pub(crate) expect: Expect,
}

/// An entry of `policies`, `clusterState` or `params`: a path (a glob for
/// cluster state) relative to the test file, or the documents themselves
/// (`{name, text}`), so that one file holds a whole case (the playground's
/// "Save as test").
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(crate) enum Source {
    Path(String),
    Inline(InlineSource),
}

/// YAML or JSON documents written into the suite; `name` labels their errors
/// (`name:line`, lines counted in `text`).
#[derive(Debug, Deserialize, Clone, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InlineSource {
    pub name: String,
    pub text: String,
}

/// An object inline, or `{file: path}` relative to the test file.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ObjectSource {
    File { file: String },
    Inline(serde_json::Value),
}

/// What a case expects of the decision; every field is optional and only the
/// fields given are checked (see `expectations.rs`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Expect {
    #[serde(default)]
    pub(crate) allowed: Option<bool>,
    #[serde(default)]
    pub(crate) denied_by: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) code: Option<u16>,
    #[serde(default)]
    pub(crate) message_contains: Option<OneOrMany>,
    /// Exact number of warnings (0 proves "no noise").
    #[serde(default)]
    pub(crate) warnings: Option<usize>,
    #[serde(default)]
    pub(crate) warnings_contain: Option<OneOrMany>,
    /// Key → substring of the value; an empty string only requires the key.
    #[serde(default)]
    pub(crate) audit_annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(crate) no_audit_annotations: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) patched: Option<bool>,
    /// Substrings that must appear in the JSON text of the patch.
    #[serde(default)]
    pub(crate) patch_contains: Option<OneOrMany>,
    /// The object as kube-apiserver would store it: the request's object with
    /// the response's patch applied, compared exactly (no patch: unchanged).
    #[serde(default)]
    pub(crate) patched_object: Option<serde_json::Value>,
}

/// A string or a list of strings (`messageContains: "x"` or `["x", "y"]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, one or many, in their order.
    pub(crate) fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Whether `doc` is a PolicyTest (`apiVersion` the gate's, `kind: PolicyTest`);
/// other documents (fixtures may live beside suites) are not.
///
/// # Errors
/// The document is not a YAML mapping with string `apiVersion` and `kind`
/// where present (file and line named).
pub(crate) fn is_policy_test(doc: &Document) -> Result<bool, Located> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Header {
        api_version: Option<String>,
        kind: Option<String>,
    }
    let header = doc.decode::<Header>()?;
    Ok(header.api_version.as_deref() == Some(GATE_API_VERSION)
        && header.kind.as_deref() == Some(KIND))
}
