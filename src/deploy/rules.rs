//! Webhook rules as sets: union, coverage and a canonical compact form.
//!
//! A rule (`operations` × `apiGroups` × `apiVersions` × `resources` ×
//! `scope`) is a cross product, so a list of rules is exactly the union of
//! its single-valued [`Atom`]s. Working on atoms makes the union, the
//! deduplication and "is this request already sent by the fail-closed
//! webhook?" exact; [`compress`] then folds the atoms back into few rules in
//! an order that depends only on the set, so the rendered YAML is stable.

use crate::policy::model::ResourceRule;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One operation on one resource of one group/version in one scope.
/// Values may be wildcards (`*`, `*/*`, `x/*`, `*/scale`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Atom {
    pub scope: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub operation: String,
}

/// A webhook rule (`admissionregistration.k8s.io/v1` `RuleWithOperations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub api_versions: Vec<String>,
    pub resources: Vec<String>,
    pub operations: Vec<String>,
    /// Omitted for `*`, the API default, so a rendered rule reads like a hand-written one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The atoms of policy rules. An empty list in a rule matches nothing, like
/// in the API, so it contributes no atom.
pub fn atoms<'a>(rules: impl IntoIterator<Item = &'a ResourceRule>) -> BTreeSet<Atom> {
    let mut out = BTreeSet::new();
    for r in rules {
        let scope = r.scope.clone().unwrap_or_else(|| "*".to_string());
        for operation in &r.operations {
            for group in &r.api_groups {
                for version in &r.api_versions {
                    for resource in &r.resources {
                        out.insert(Atom {
                            scope: scope.clone(),
                            group: group.clone(),
                            version: version.clone(),
                            resource: resource.clone(),
                            operation: operation.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// Does `outer` match every request `inner` matches?
pub fn covers(outer: &Atom, inner: &Atom) -> bool {
    wildcard_covers(&outer.operation, &inner.operation)
        && wildcard_covers(&outer.group, &inner.group)
        && wildcard_covers(&outer.version, &inner.version)
        && wildcard_covers(&outer.scope, &inner.scope)
        && resource_covers(&outer.resource, &inner.resource)
}

fn wildcard_covers(outer: &str, inner: &str) -> bool {
    outer == "*" || outer == inner
}

/// Resource patterns as kube-apiserver reads them: `*` is every resource but
/// no subresource, `*/*` everything, `x/*` every subresource of x, `*/s` the
/// subresource s of every resource.
pub fn resource_covers(outer: &str, inner: &str) -> bool {
    if outer == inner || outer == "*/*" {
        return true;
    }
    match (outer.split_once('/'), inner.split_once('/')) {
        (None, None) => outer == "*",
        (Some((o_res, o_sub)), Some((i_res, i_sub))) => {
            wildcard_covers(o_res, i_res) && wildcard_covers(o_sub, i_sub)
        }
        _ => false,
    }
}

/// Drops every atom that another atom of the set already covers.
pub fn minimize(set: &BTreeSet<Atom>) -> BTreeSet<Atom> {
    set.iter()
        .filter(|a| !set.iter().any(|b| b != *a && covers(b, a)))
        .cloned()
        .collect()
}

/// The atoms of `set` that no atom of `taken` covers.
pub fn subtract(set: &BTreeSet<Atom>, taken: &BTreeSet<Atom>) -> BTreeSet<Atom> {
    set.iter()
        .filter(|a| !taken.iter().any(|b| covers(b, a)))
        .cloned()
        .collect()
}

type List = Vec<String>;
/// Values collected per key, in order.
type Grouped<K> = BTreeMap<K, BTreeSet<String>>;

/// Folds atoms into rules: first operations, then versions, resources and
/// groups are collected for everything else equal. Each step regroups
/// cross products, so the rules match exactly the atoms' requests.
pub fn compress(set: &BTreeSet<Atom>) -> Vec<Rule> {
    // (scope, group, version, resource) -> operations
    let mut ops: Grouped<(String, String, String, String)> = BTreeMap::new();
    for a in set {
        ops.entry((
            a.scope.clone(),
            a.group.clone(),
            a.version.clone(),
            a.resource.clone(),
        ))
        .or_default()
        .insert(a.operation.clone());
    }
    // (scope, group, resource, operations) -> versions
    let mut versions: Grouped<(String, String, String, List)> = BTreeMap::new();
    for ((scope, group, version, resource), o) in ops {
        versions
            .entry((scope, group, resource, collapse(o)))
            .or_default()
            .insert(version);
    }
    // (scope, group, operations, versions) -> resources
    let mut resources: Grouped<(String, String, List, List)> = BTreeMap::new();
    for ((scope, group, resource, o), v) in versions {
        resources
            .entry((scope, group, o, collapse(v)))
            .or_default()
            .insert(resource);
    }
    // (scope, operations, versions, resources) -> groups
    let mut groups: Grouped<(String, List, List, List)> = BTreeMap::new();
    for ((scope, group, o, v), r) in resources {
        groups
            .entry((scope, o, v, r.into_iter().collect()))
            .or_default()
            .insert(group);
    }
    let mut rules: Vec<Rule> = groups
        .into_iter()
        .map(|((scope, operations, api_versions, resources), g)| Rule {
            api_groups: g.into_iter().collect(),
            api_versions,
            resources,
            operations,
            scope: (scope != "*").then_some(scope),
        })
        .collect();
    rules.sort_by(|a, b| {
        (&a.api_groups, &a.resources, &a.api_versions, &a.scope).cmp(&(
            &b.api_groups,
            &b.resources,
            &b.api_versions,
            &b.scope,
        ))
    });
    for r in &mut rules {
        r.operations
            .sort_by(|a, b| operation_rank(a).cmp(&operation_rank(b)));
    }
    rules
}

/// A set that holds `*` is just `*`; anything else is listed in order.
fn collapse(values: BTreeSet<String>) -> Vec<String> {
    if values.contains("*") {
        vec!["*".to_string()]
    } else {
        values.into_iter().collect()
    }
}

/// The order people write operations in.
fn operation_rank(op: &str) -> (u8, &str) {
    let rank = match op {
        "CREATE" => 0,
        "UPDATE" => 1,
        "DELETE" => 2,
        "CONNECT" => 3,
        "*" => 4,
        _ => 5,
    };
    (rank, op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ops: &[&str], groups: &[&str], versions: &[&str], resources: &[&str]) -> ResourceRule {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        ResourceRule {
            operations: v(ops),
            api_groups: v(groups),
            api_versions: v(versions),
            resources: v(resources),
            resource_names: Vec::new(),
            scope: None,
        }
    }

    fn atom(op: &str, group: &str, version: &str, resource: &str) -> Atom {
        Atom {
            scope: "*".into(),
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            operation: op.into(),
        }
    }

    #[test]
    fn resource_patterns_follow_the_api() {
        assert!(resource_covers("*", "pods"));
        assert!(!resource_covers("*", "pods/status"));
        assert!(resource_covers("*/*", "pods/status"));
        assert!(resource_covers("*/*", "*"));
        assert!(resource_covers("pods/*", "pods/exec"));
        assert!(!resource_covers("pods/*", "pods"));
        assert!(resource_covers("*/scale", "deployments/scale"));
        assert!(!resource_covers("*/scale", "deployments/status"));
        assert!(!resource_covers("pods", "*"));
        assert!(!resource_covers("deployments", "pods"));
    }

    #[test]
    fn union_round_trips_through_compress() {
        let input = [
            rule(
                &["UPDATE", "DELETE"],
                &["rbac.authorization.k8s.io"],
                &["*"],
                &["clusterroles", "clusterrolebindings"],
            ),
            rule(
                &["CREATE"],
                &["rbac.authorization.k8s.io"],
                &["v1"],
                &["clusterrolebindings"],
            ),
            rule(&["DELETE", "UPDATE"], &[""], &["v1"], &["namespaces"]),
            rule(
                &["CREATE", "UPDATE", "DELETE"],
                &[""],
                &["v1"],
                &["namespaces"],
            ),
        ];
        let set = minimize(&atoms(&input));
        let rules = compress(&set);
        let back: Vec<ResourceRule> = rules
            .iter()
            .map(|r| ResourceRule {
                operations: r.operations.clone(),
                api_groups: r.api_groups.clone(),
                api_versions: r.api_versions.clone(),
                resources: r.resources.clone(),
                resource_names: Vec::new(),
                scope: r.scope.clone(),
            })
            .collect();
        assert_eq!(minimize(&atoms(&back)), set);
        assert_eq!(
            rules[0],
            Rule {
                api_groups: vec!["".into()],
                api_versions: vec!["v1".into()],
                resources: vec!["namespaces".into()],
                operations: vec!["CREATE".into(), "UPDATE".into(), "DELETE".into()],
                scope: None,
            }
        );
    }

    #[test]
    fn compress_is_independent_of_input_order() {
        let a = rule(
            &["CREATE"],
            &["apps"],
            &["v1"],
            &["deployments", "statefulsets"],
        );
        let b = rule(
            &["UPDATE"],
            &["apps", "batch"],
            &["v1"],
            &["jobs", "deployments"],
        );
        assert_eq!(compress(&atoms([&a, &b])), compress(&atoms([&b, &a])));
    }

    #[test]
    fn subtract_drops_only_covered_atoms() {
        let fail = atoms(&[rule(
            &["UPDATE", "DELETE"],
            &["rbac.authorization.k8s.io"],
            &["*"],
            &["clusterroles"],
        )]);
        let ignore = atoms(&[rule(
            &["CREATE", "UPDATE"],
            &["rbac.authorization.k8s.io"],
            &["v1"],
            &["clusterroles"],
        )]);
        let left = subtract(&ignore, &fail);
        assert_eq!(
            left.into_iter().collect::<Vec<_>>(),
            vec![atom(
                "CREATE",
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles"
            )]
        );
    }

    #[test]
    fn wildcard_operations_and_versions_collapse() {
        let set = minimize(&atoms(&[
            rule(&["*"], &["apps"], &["v1"], &["deployments"]),
            rule(&["CREATE"], &["apps"], &["v1"], &["deployments"]),
        ]));
        let rules = compress(&set);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].operations, vec!["*".to_string()]);
    }
}
