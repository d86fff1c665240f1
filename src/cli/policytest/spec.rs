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
pub(super) struct PolicyTestDocument {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    pub(super) metadata: TestMeta,
    pub(super) spec: PolicyTestSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestMeta {
    pub(super) name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct PolicyTestSpec {
    pub(super) policies: Vec<String>,
    #[serde(default)]
    pub(super) cluster_state: Vec<String>,
    /// Param objects (files or globs) for bindings with a `paramRef`: part of
    /// the same cluster state, listed apart so a suite says what they are.
    #[serde(default)]
    pub(super) params: Vec<String>,
    #[serde(default)]
    pub(super) mode: Option<TestMode>,
    pub(super) cases: Vec<Case>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
pub(super) enum TestMode {
    Enforce,
    /// The gate's dry-run mode (`--mode dry-run`); `Audit`, its name before,
    /// is still read.
    #[serde(alias = "Audit")]
    DryRun,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Case {
    pub(super) name: String,
    #[serde(default)]
    pub(super) operation: Option<Operation>,
    #[serde(default)]
    pub(super) user_info: Option<UserInfo>,
    #[serde(default)]
    pub(super) object: Option<ObjectSource>,
    #[serde(default)]
    pub(super) old_object: Option<ObjectSource>,
    /// `request.name`; `""` models the per-item DELETEs of a DeleteCollection.
    #[serde(default)]
    pub(super) request_name: Option<String>,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub(super) resource: Option<GroupVersionResource>,
    #[serde(default)]
    pub(super) sub_resource: Option<String>,
    #[serde(default)]
    pub(super) dry_run: bool,
    #[serde(default)]
    pub(super) options: Option<serde_json::Value>,
    /// `request.uid` (default `policytest-<index>`).
    #[serde(default)]
    pub(super) uid: Option<String>,
    /// Lookups (by name) whose cluster state is unavailable in this case, as when
    /// a watch cache has not synced or RBAC forbids the list.
    #[serde(default)]
    pub(super) lookups_unavailable: Vec<String>,
    /// `validate` (default) or `mutate`: which webhook path the case goes through.
    #[serde(default)]
    pub(super) endpoint: Option<String>,
    #[serde(default)]
    pub(super) mode: Option<TestMode>,
    pub(super) expect: Expect,
}

/// An object inline, or `{file: path}` relative to the test file.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ObjectSource {
    File { file: String },
    Inline(serde_json::Value),
}

/// What a case expects of the decision; every field is optional and only the
/// fields given are checked (see `expectations.rs`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Expect {
    #[serde(default)]
    pub(super) allowed: Option<bool>,
    #[serde(default)]
    pub(super) denied_by: Option<Vec<String>>,
    #[serde(default)]
    pub(super) code: Option<u16>,
    #[serde(default)]
    pub(super) message_contains: Option<OneOrMany>,
    /// Exact number of warnings (0 proves "no noise").
    #[serde(default)]
    pub(super) warnings: Option<usize>,
    #[serde(default)]
    pub(super) warnings_contain: Option<OneOrMany>,
    /// Key → substring of the value; an empty string only requires the key.
    #[serde(default)]
    pub(super) audit_annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(super) no_audit_annotations: Option<Vec<String>>,
    #[serde(default)]
    pub(super) patched: Option<bool>,
    /// Substrings that must appear in the JSON text of the patch.
    #[serde(default)]
    pub(super) patch_contains: Option<OneOrMany>,
    /// The object as kube-apiserver would store it: the request's object with
    /// the response's patch applied, compared exactly (no patch: unchanged).
    #[serde(default)]
    pub(super) patched_object: Option<serde_json::Value>,
}

/// A string or a list of strings (`messageContains: "x"` or `["x", "y"]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, one or many, in their order.
    pub(super) fn items(&self) -> Vec<&str> {
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
pub(super) fn is_policy_test(doc: &Document) -> Result<bool, Located> {
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
