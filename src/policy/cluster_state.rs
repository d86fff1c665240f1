//! The port through which the engine reads cluster state: namespace labels
//! (`namespaceSelector`, `namespaceObject`), `lookups`, params and the
//! `authorizer`. The engine defines it; `crate::cluster` implements it with a
//! snapshot of files (CI, audit, tests) and, in the cluster, with watch caches.

use super::authz::Authorizer;
use super::{ParamScope, ParamSource};
use kube_cel::cel::Value;
use std::sync::Arc;

/// Why cluster state could not be read. Evaluation treats it as an error that
/// the policy's failurePolicy decides, never as "no objects".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LookupError {
    /// No cluster state is configured at all: an offline command run without
    /// `--cluster-state` (the message names the flag).
    #[error("{0}")]
    NoClusterState(String),
    /// The state exists but cannot be read now: a watch cache not synced yet,
    /// a kind not watched, RBAC, a case that declares it unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// The request's namespace is not in the cluster state.
    #[error("namespace '{0}' is not known to the cluster state")]
    UnknownNamespace(String),
}

/// A namespace as policies see it.
#[derive(Debug, Clone)]
pub struct NamespaceInfo {
    pub labels: std::collections::BTreeMap<String, String>,
    /// The Namespace object as a CEL value (for `namespaceObject`).
    pub object: Value,
}

/// Cluster state as policies read it; param objects (`paramRef`) come from the
/// same state through [`ParamSource`].
pub trait ClusterState: ParamSource + Send + Sync {
    /// `Ok(None)` when the namespace does not exist; `Err` when it cannot be known.
    fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, LookupError>;

    /// Objects of `apiVersion`/`kind`, in `namespace` or cluster-wide, as a CEL list.
    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Value, LookupError>;

    /// Who answers policies' `authorizer` checks; `Err` says why nobody can
    /// (then every check is an evaluation error for failurePolicy).
    fn authorizer(&self) -> Result<Arc<dyn Authorizer>, String> {
        Err(NO_AUTHORIZER.to_string())
    }
}

/// Why offline cluster state cannot answer `authorizer` checks.
pub const NO_AUTHORIZER: &str = "no API server to ask (authorizer checks are SubjectAccessReviews, made by `safety-gate serve` and `--cluster`)";

/// No cluster state at all: every lookup is unavailable.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCluster;

impl ParamSource for NoCluster {
    fn param_scope(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<ParamScope>, LookupError> {
        Err(LookupError::NoClusterState(format!(
            "params of kind {kind} ({api_version}) are unavailable: no cluster state is configured (--cluster-state DIR)"
        )))
    }
}

impl ClusterState for NoCluster {
    fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, LookupError> {
        Err(LookupError::NoClusterState(format!(
            "the labels of namespace '{name}' are unknown: no cluster state is configured (--cluster-state DIR)"
        )))
    }

    fn list(
        &self,
        api_version: &str,
        kind: &str,
        _namespace: Option<&str>,
    ) -> Result<Value, LookupError> {
        Err(LookupError::NoClusterState(format!(
            "lookup of {kind} ({api_version}) is unavailable: no cluster state is configured (--cluster-state DIR)"
        )))
    }
}
