//! The RBAC a policy set needs: `get`, `list` and `watch` on exactly the kinds
//! its lookups and param references read, plus Namespaces when it reads
//! namespace labels, and `create` on SubjectAccessReviews when a policy uses
//! `authorizer`. The one ClusterRole built here is what
//! `safety-gate check --print-rbac` prints, so whoever adds a policy knows
//! what to grant, and what `safety-gate manifests` commits as
//! `clusterrole.yaml`.
//!
//! It lives in `deploy/`, not `cluster/`: it says what the gate must be
//! granted (a manifest) and reads no cluster state. `cli` and the manifests
//! renderer both call down into it; `cluster/` needs nothing from here.

use super::RenderError;
use super::yaml::to_yaml;
use crate::policy::ClusterNeeds;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, GroupVersion};
use std::collections::BTreeMap;

const VERBS: [&str; 3] = ["get", "list", "watch"];

/// PolicyRules, one per API group, groups and resources sorted, then
/// `create` on SubjectAccessReviews when `needs.authorizer`.
///
/// Resource names are the plural guess kube-apiserver uses for built-in
/// kinds; a CRD whose plural is irregular needs its real name here (the live
/// cache resolves it by discovery and names it in its RBAC error).
pub fn policy_rules(needs: &ClusterNeeds) -> Vec<PolicyRule> {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let namespaces = needs
        .namespaces
        .then(|| ("v1".to_string(), "Namespace".to_string()));
    for (api_version, kind) in needs.kinds.iter().chain(namespaces.as_ref()) {
        // `GroupVersion` parsing cannot fail (one `/` splits, none is the core
        // group); the fallback only keeps this total.
        let gv = api_version
            .parse::<GroupVersion>()
            .unwrap_or_else(|_| GroupVersion::gv("", api_version));
        let resource = ApiResource::from_gvk(&gv.with_kind(kind));
        let resources = by_group.entry(resource.group).or_default();
        if !resources.contains(&resource.plural) {
            resources.push(resource.plural);
        }
    }
    let mut rules: Vec<PolicyRule> = by_group
        .into_iter()
        .map(|(group, mut resources)| {
            resources.sort();
            PolicyRule {
                api_groups: Some(vec![group]),
                resources: Some(resources),
                verbs: VERBS.map(str::to_string).to_vec(),
                ..PolicyRule::default()
            }
        })
        .collect();
    if needs.authorizer {
        rules.push(PolicyRule {
            api_groups: Some(vec!["authorization.k8s.io".to_string()]),
            resources: Some(vec!["subjectaccessreviews".to_string()]),
            verbs: vec!["create".to_string()],
            ..PolicyRule::default()
        });
    }
    rules
}

/// The gate's ClusterRole: `metadata` and [`policy_rules`] (`rules: []` when
/// no policy reads cluster state).
pub fn cluster_role(needs: &ClusterNeeds, metadata: ObjectMeta) -> ClusterRole {
    ClusterRole {
        metadata,
        rules: Some(policy_rules(needs)),
        aggregation_rule: None,
    }
}

/// [`cluster_role`] named `name` (no labels), as the YAML document
/// `check --print-rbac` prints.
///
/// # Errors
/// [`RenderError::Yaml`] if the YAML writer fails.
pub fn cluster_role_yaml(needs: &ClusterNeeds, name: &str) -> Result<String, RenderError> {
    let metadata = ObjectMeta {
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    };
    to_yaml(&cluster_role(needs, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(kinds: &[(&str, &str)], namespaces: bool) -> ClusterNeeds {
        ClusterNeeds {
            kinds: kinds
                .iter()
                .map(|(a, k)| (a.to_string(), k.to_string()))
                .collect(),
            namespaces,
            authorizer: false,
        }
    }

    #[test]
    fn one_rule_per_group_with_plural_resources() {
        let rules = policy_rules(&needs(
            &[
                ("core.kubefed.io/v1beta1", "KubeFedCluster"),
                ("networking.k8s.io/v1", "Ingress"),
                ("networking.k8s.io/v1", "NetworkPolicy"),
                ("v1", "Namespace"),
            ],
            true,
        ));
        assert_eq!(
            serde_json::to_value(rules).unwrap(),
            serde_json::json!([
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["core.kubefed.io"], "resources": ["kubefedclusters"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"], "verbs": ["get", "list", "watch"]},
            ])
        );
    }

    #[test]
    fn authorizer_checks_need_create_on_subjectaccessreviews_only() {
        let mut n = needs(&[("v1", "ConfigMap")], false);
        n.authorizer = true;
        assert_eq!(
            serde_json::to_value(policy_rules(&n)).unwrap(),
            serde_json::json!([
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            ])
        );
    }

    #[test]
    fn nothing_needed_grants_nothing() {
        assert!(policy_rules(&needs(&[], false)).is_empty());
        let yaml = cluster_role_yaml(&needs(&[], false), "safety-gate").unwrap();
        let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back["rules"], serde_json::json!([]));
    }

    #[test]
    fn cluster_role_yaml_round_trips() {
        let n = needs(&[("core.kubefed.io/v1beta1", "KubeFedCluster")], true);
        let yaml = cluster_role_yaml(&n, "safety-gate-lookups").unwrap();
        let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back["kind"], "ClusterRole");
        assert_eq!(back["apiVersion"], "rbac.authorization.k8s.io/v1");
        assert_eq!(back["metadata"]["name"], "safety-gate-lookups");
        assert_eq!(
            back["rules"],
            serde_json::to_value(policy_rules(&n)).unwrap(),
            "{yaml}"
        );
        // The core group must stay an explicit empty string, not null.
        assert!(yaml.contains("\"\""), "{yaml}");
    }
}
