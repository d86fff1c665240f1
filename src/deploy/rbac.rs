//! The RBAC a policy set needs: `get`, `list` and `watch` on exactly the kinds
//! its lookups and param references read, plus Namespaces when it reads
//! namespace labels, and `create` on SubjectAccessReviews when a policy uses
//! `authorizer`. This is
//! what `safety-gate check --print-rbac` prints, so whoever adds a policy
//! knows what to grant, and what `safety-gate manifests` commits as
//! `clusterrole.yaml`.
//!
//! It lives in `deploy/`, not `cluster/`: it says what the gate must be
//! granted (a manifest), and reads no cluster state; `cluster/` no longer
//! needs anything from here.

use crate::admission::synthetic::{resource_for_kind, split_api_version};
use crate::policy::ClusterNeeds;
use std::collections::BTreeMap;

const VERBS: [&str; 3] = ["get", "list", "watch"];

/// PolicyRule objects, one per API group, groups and resources sorted.
///
/// Resource names are the plural guess kube-apiserver uses for built-in
/// kinds; a CRD whose plural is irregular needs its real name here (the live
/// cache resolves it by discovery and names it in its RBAC error).
pub fn rbac_rules(needs: &ClusterNeeds) -> Vec<serde_json::Value> {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let namespaces = needs
        .namespaces
        .then(|| ("v1".to_string(), "Namespace".to_string()));
    for (api_version, kind) in needs.kinds.iter().chain(namespaces.as_ref()) {
        let (group, _) = split_api_version(api_version);
        let resources = by_group.entry(group).or_default();
        let resource = resource_for_kind(kind);
        if !resources.contains(&resource) {
            resources.push(resource);
        }
    }
    let mut rules: Vec<serde_json::Value> = by_group
        .into_iter()
        .map(|(group, mut resources)| {
            resources.sort();
            serde_json::json!({
                "apiGroups": [group],
                "resources": resources,
                "verbs": VERBS,
            })
        })
        .collect();
    if needs.authorizer {
        rules.push(serde_json::json!({
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        }));
    }
    rules
}

/// A ClusterRole named `name` with [`rbac_rules`], as YAML (`rules: []` when
/// no policy reads cluster state).
pub fn rbac_cluster_role_yaml(needs: &ClusterNeeds, name: &str) -> String {
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": { "name": name },
        "rules": rbac_rules(needs),
    });
    // Serialising a JSON value cannot fail; fall back to JSON, which is YAML too.
    serde_saphyr::to_string(&role).unwrap_or_else(|_| role.to_string())
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
        let rules = rbac_rules(&needs(
            &[
                ("core.kubefed.io/v1beta1", "KubeFedCluster"),
                ("networking.k8s.io/v1", "Ingress"),
                ("networking.k8s.io/v1", "NetworkPolicy"),
                ("v1", "Namespace"),
            ],
            true,
        ));
        assert_eq!(
            serde_json::Value::Array(rules),
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
            serde_json::Value::Array(rbac_rules(&n)),
            serde_json::json!([
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            ])
        );
    }

    #[test]
    fn nothing_needed_grants_nothing() {
        assert!(rbac_rules(&needs(&[], false)).is_empty());
        let yaml = rbac_cluster_role_yaml(&needs(&[], false), "safety-gate");
        let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back["rules"], serde_json::json!([]));
    }

    #[test]
    fn cluster_role_yaml_round_trips() {
        let n = needs(&[("core.kubefed.io/v1beta1", "KubeFedCluster")], true);
        let yaml = rbac_cluster_role_yaml(&n, "safety-gate-lookups");
        let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back["kind"], "ClusterRole");
        assert_eq!(back["apiVersion"], "rbac.authorization.k8s.io/v1");
        assert_eq!(back["metadata"]["name"], "safety-gate-lookups");
        assert_eq!(
            back["rules"],
            serde_json::Value::Array(rbac_rules(&n)),
            "{yaml}"
        );
        // The core group must stay an explicit empty string, not null.
        assert!(yaml.contains("\"\""), "{yaml}");
    }
}
