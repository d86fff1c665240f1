//! Cluster state with some kinds unavailable, for a case's
//! `lookupsUnavailable`: the engine sees the same lookup error it would get
//! from a watch cache that has not synced or a list that RBAC forbids.

use crate::cluster::Snapshot;
use crate::policy::{ClusterState, LookupError, NamespaceInfo};

/// `inner` with every `(apiVersion, kind)` in `unavailable` failing to list.
pub(super) struct Degraded<'a> {
    pub(super) inner: &'a Snapshot,
    pub(super) unavailable: Vec<(String, String)>,
}

impl crate::policy::ParamSource for Degraded<'_> {
    fn param_scope(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<crate::policy::ParamScope>, LookupError> {
        self.list(api_version, kind, None)?;
        self.inner.param_scope(api_version, kind)
    }
}

impl ClusterState for Degraded<'_> {
    fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, LookupError> {
        self.inner.namespace(name)
    }

    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<kube_cel::cel::Value, LookupError> {
        if self
            .unavailable
            .iter()
            .any(|(v, k)| v == api_version && k == kind)
        {
            return Err(LookupError::Unavailable(format!(
                "{kind} ({api_version}) is unavailable in this test case"
            )));
        }
        self.inner.list(api_version, kind, namespace)
    }

    fn authorizer(&self) -> Result<std::sync::Arc<dyn crate::policy::authz::Authorizer>, String> {
        self.inner.authorizer()
    }
}
