//! Read-only access to a live cluster for `review --cluster` (the live object
//! of each manifest) and `audit --cluster` (every object the policies match).
//! Lookups during evaluation still come from [`LiveCluster`](super::LiveCluster).

use super::live::{ClientError, client_from};
use crate::policy::model::ResourceRule;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersion, TypeMeta};
use kube::discovery::{Discovery, Scope, verbs};
use std::path::Path;

pub struct ClusterReader {
    client: Client,
}

/// Objects are listed in pages of this many, so memory stays bounded on large clusters.
const PAGE: u32 = 500;

impl ClusterReader {
    /// Builds the client and checks that the API server answers.
    ///
    /// # Errors
    /// [`ClientError`]: no usable kubeconfig, or no answer from the API server.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Self, ClientError> {
        let client = client_from(kubeconfig, context).await?;
        client
            .apiserver_version()
            .await
            .map_err(|source| ClientError::Unreachable { source })?;
        Ok(ClusterReader { client })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The live object with this identity; `None` when it does not exist or
    /// its kind is not served (a CRD not installed yet: the apply would create it).
    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<serde_json::Value>, String> {
        let gvk = api_version
            .parse::<GroupVersion>()
            .map_err(|e| e.to_string())?
            .with_kind(kind);
        let (resource, caps) = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok(found) => found,
            Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(None),
            Err(kube::Error::Discovery(_)) => return Ok(None),
            Err(e) => return Err(format!("discovery of {kind} ({api_version}): {e}")),
        };
        let api: Api<DynamicObject> = match (caps.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(self.client.clone(), ns, &resource)
            }
            _ => Api::all_with(self.client.clone(), &resource),
        };
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| format!("get {kind} {name}: {e}"))?;
        found.map(|o| to_json(o, &resource)).transpose()
    }

    /// Calls `each` for every object of every served resource that one of
    /// `rules` matches on CREATE (the audit's "as if created now").
    pub async fn list_matching(
        &self,
        rules: &[ResourceRule],
        mut each: impl FnMut(serde_json::Value) -> Result<(), String>,
    ) -> Result<usize, String> {
        let discovery = Discovery::new(self.client.clone())
            .run()
            .await
            .map_err(|e| format!("discovery failed: {e}"))?;
        let mut count = 0;
        for group in discovery.groups() {
            for (resource, caps) in group.recommended_resources() {
                if !caps.supports_operation(verbs::LIST)
                    || !rules.iter().any(|r| rule_matches_create(r, &resource))
                {
                    continue;
                }
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
                let mut params = ListParams::default().limit(PAGE);
                loop {
                    let page = api
                        .list(&params)
                        .await
                        .map_err(|e| format!("list {}: {e}", resource.plural))?;
                    let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
                    for object in page.items {
                        each(to_json(object, &resource)?)?;
                        count += 1;
                    }
                    match next {
                        Some(token) => {
                            params = ListParams::default().limit(PAGE).continue_token(&token)
                        }
                        None => break,
                    }
                }
            }
        }
        Ok(count)
    }
}

/// List responses omit apiVersion/kind on items; reports and policies need them.
fn to_json(mut object: DynamicObject, resource: &ApiResource) -> Result<serde_json::Value, String> {
    if object.types.as_ref().is_none_or(|t| t.kind.is_empty()) {
        object.types = Some(TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
    }
    serde_json::to_value(object).map_err(|e| e.to_string())
}

fn rule_matches_create(rule: &ResourceRule, resource: &ApiResource) -> bool {
    let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
    any(&rule.operations, "CREATE")
        && any(&rule.api_groups, &resource.group)
        && any(&rule.api_versions, &resource.version)
        && rule
            .resources
            .iter()
            .any(|r| r == "*" || r == &resource.plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_lists_only_resources_a_create_rule_matches() {
        let rule = ResourceRule {
            operations: vec!["CREATE".into(), "UPDATE".into()],
            api_groups: vec!["apps".into()],
            api_versions: vec!["*".into()],
            resources: vec!["deployments".into(), "deployments/scale".into()],
            ..Default::default()
        };
        let deployments = ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("apps", "v1", "Deployment"),
            "deployments",
        );
        let pods = ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("", "v1", "Pod"),
            "pods",
        );
        assert!(rule_matches_create(&rule, &deployments));
        assert!(!rule_matches_create(&rule, &pods));
        let delete_only = ResourceRule {
            operations: vec!["DELETE".into()],
            ..rule
        };
        assert!(
            !rule_matches_create(&delete_only, &deployments),
            "DELETE-only policies report nothing"
        );
    }
}
