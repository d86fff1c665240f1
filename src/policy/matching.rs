//! Which policies apply to a request: resource rules, exclusions, namespace and
//! object selectors — the VAP `MatchResources` semantics — checked before any CEL runs.

use super::model::{LabelSelector, MatchResources, ResourceRule};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// The request attributes rules are matched against.
///
/// `group`/`version`/`resource`/`sub_resource` are the request's `resource` and
/// `subResource`: what kube-apiserver converted the object to for the webhook.
/// `requested` is `requestResource`/`requestSubResource`, the resource the client
/// called, when kube-apiserver sent it.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    pub operation: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub sub_resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub requested: Option<RequestedResource<'a>>,
}

/// The resource a client called (`requestResource`, `requestSubResource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedResource<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub sub_resource: &'a str,
}

impl<'a> Attributes<'a> {
    /// The attributes as the client called them. `matchPolicy: Exact` matches these
    /// only, as kube-apiserver does.
    pub fn as_requested(&self) -> Attributes<'a> {
        match self.requested {
            Some(r) => Attributes {
                group: r.group,
                version: r.version,
                resource: r.resource,
                sub_resource: r.sub_resource,
                ..*self
            },
            None => *self,
        }
    }

    /// The request as called and, when kube-apiserver converted it for the
    /// webhook, as converted: the resources `matchPolicy: Equivalent` may match.
    fn candidates(&self, policy: MatchPolicy) -> Vec<Attributes<'a>> {
        let requested = self.as_requested();
        let converted = self.group != requested.group
            || self.version != requested.version
            || self.resource != requested.resource
            || self.sub_resource != requested.sub_resource;
        match policy {
            MatchPolicy::Equivalent if converted => vec![requested, *self],
            _ => vec![requested],
        }
    }

    /// Namespace objects are cluster-scoped even though kube-apiserver sets
    /// `request.namespace` to their own name.
    pub fn is_namespace_object(&self) -> bool {
        self.group.is_empty() && self.resource == "namespaces"
    }

    pub fn is_cluster_scoped(&self) -> bool {
        self.namespace.is_empty() || self.is_namespace_object()
    }
}

#[derive(Debug, Clone)]
struct Rule {
    operations: Vec<String>,
    groups: Vec<String>,
    versions: Vec<String>,
    resources: Vec<String>,
    names: Vec<String>,
    scope: RuleScope,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RuleScope {
    Any,
    Cluster,
    Namespaced,
}

/// A compiled label selector (matchLabels AND matchExpressions): kube-core's
/// [`kube::core::Selector`], after the checks kube-apiserver makes when it
/// stores a selector (`In`/`NotIn` need values, `Exists`/`DoesNotExist` take
/// none), with the keys it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    selector: kube::core::Selector,
    keys: Vec<String>,
}

impl Selector {
    /// # Errors
    /// What is wrong with a requirement, naming its key.
    pub fn new(selector: &LabelSelector) -> Result<Self, String> {
        use kube::core::Expression;
        let mut expressions: Vec<Expression> = selector
            .match_labels
            .iter()
            .map(|(k, v)| Expression::Equal(k.clone(), v.clone()))
            .collect();
        for e in &selector.match_expressions {
            let values = || e.values.iter().cloned().collect();
            let expression = match e.operator.as_str() {
                "In" | "NotIn" if e.values.is_empty() => {
                    return Err(format!(
                        "selector on '{}': operator {} needs values",
                        e.key, e.operator
                    ));
                }
                "In" => Expression::In(e.key.clone(), values()),
                "NotIn" => Expression::NotIn(e.key.clone(), values()),
                "Exists" | "DoesNotExist" if !e.values.is_empty() => {
                    return Err(format!(
                        "selector on '{}': operator {} takes no values",
                        e.key, e.operator
                    ));
                }
                "Exists" => Expression::Exists(e.key.clone()),
                "DoesNotExist" => Expression::DoesNotExist(e.key.clone()),
                other => {
                    return Err(format!(
                        "selector on '{}': unknown operator '{other}' (In, NotIn, Exists, DoesNotExist)",
                        e.key
                    ));
                }
            };
            expressions.push(expression);
        }
        let keys = selector
            .match_labels
            .keys()
            .chain(selector.match_expressions.iter().map(|e| &e.key))
            .cloned()
            .collect();
        Ok(Selector {
            selector: expressions.into_iter().collect(),
            keys,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether every requirement reads only `key`: then the labels other than
    /// `key` cannot change the answer.
    pub fn reads_only(&self, key: &str) -> bool {
        self.keys.iter().all(|k| k == key)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        use kube::core::SelectorExt;
        self.selector.matches(labels)
    }
}

/// `matchPolicy` of a policy's or a binding's match resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchPolicy {
    /// Only the resource the client called.
    Exact,
    /// Also an equivalent resource (another version, or another group serving the
    /// same objects); kube-apiserver's default.
    Equivalent,
}

#[derive(Debug, Clone)]
struct Part {
    match_policy: MatchPolicy,
    rules: Vec<Rule>,
    excludes: Vec<Rule>,
    namespace_selector: Option<Selector>,
    object_selector: Option<Selector>,
}

/// A policy's match constraints, intersected with a VAP binding's when there is one.
#[derive(Debug, Clone)]
pub struct Matcher {
    parts: Vec<Part>,
}

const OPERATIONS: &[&str] = &["CREATE", "UPDATE", "DELETE", "CONNECT", "*"];

impl Matcher {
    pub fn new(policy: &MatchResources, binding: Option<&MatchResources>) -> Result<Self, String> {
        let mut parts = vec![Part::new(policy)?];
        if let Some(b) = binding {
            parts.push(Part::new(b)?);
        }
        Ok(Matcher { parts })
    }

    pub fn never() -> Self {
        Matcher {
            parts: vec![Part {
                match_policy: MatchPolicy::Equivalent,
                rules: Vec::new(),
                excludes: Vec::new(),
                namespace_selector: None,
                object_selector: None,
            }],
        }
    }

    /// Resource rules and exclusions (no selectors).
    pub fn matches_rules(&self, attrs: &Attributes) -> bool {
        self.parts.iter().enumerate().all(|(i, part)| {
            let candidates = attrs.candidates(part.match_policy);
            let any = |rules: &[Rule]| {
                candidates
                    .iter()
                    .any(|a| rules.iter().any(|r| r.matches(a)))
            };
            // A binding without its own rules narrows nothing by resource.
            let rules_ok = (i > 0 && part.rules.is_empty()) || any(&part.rules);
            rules_ok && !any(&part.excludes)
        })
    }

    pub fn namespace_selectors(&self) -> impl Iterator<Item = &Selector> {
        self.parts
            .iter()
            .filter_map(|p| p.namespace_selector.as_ref())
            .filter(|s| !s.is_empty())
    }

    pub fn object_selectors(&self) -> impl Iterator<Item = &Selector> {
        self.parts
            .iter()
            .filter_map(|p| p.object_selector.as_ref())
            .filter(|s| !s.is_empty())
    }

    /// The policy's own resource rules (not a binding's), as webhook rules:
    /// what kube-apiserver must send to the gate for this policy to see it.
    pub fn webhook_rules(&self) -> Vec<ResourceRule> {
        self.parts[0]
            .rules
            .iter()
            .map(|r| ResourceRule {
                operations: r.operations.clone(),
                api_groups: r.groups.clone(),
                api_versions: r.versions.clone(),
                resources: r.resources.clone(),
                resource_names: Vec::new(),
                scope: match r.scope {
                    RuleScope::Any => None,
                    RuleScope::Cluster => Some("Cluster".to_string()),
                    RuleScope::Namespaced => Some("Namespaced".to_string()),
                },
            })
            .collect()
    }

    /// (operation, apiGroup, resource pattern) triples under which [`RuleIndex`]
    /// files this policy: every combination its own resource rules name (a
    /// binding's rules only narrow further, so they add no key).
    fn index_keys(&self) -> Vec<(&str, &str, &str)> {
        let mut keys = Vec::new();
        for rule in &self.parts[0].rules {
            for op in &rule.operations {
                for g in &rule.groups {
                    for r in &rule.resources {
                        let key = (op.as_str(), g.as_str(), r.as_str());
                        if !keys.contains(&key) {
                            keys.push(key);
                        }
                    }
                }
            }
        }
        keys
    }
}

/// Policies filed by what kube-apiserver's rule matching compares first: the
/// operation, the API group and the resource (with its subresource), each as
/// written in a rule, `*` included. A request looks up only the keys its own
/// operation, group and resource can match, so the work per request grows with
/// the policies filed under them, not with the whole set. It is a pre-filter
/// only: every policy found still goes through [`Matcher::matches_rules`], and
/// every policy whose rules could match is found (the keys cover each way a
/// rule field can match, see [`RuleIndex::candidates`]).
#[derive(Debug, Default)]
pub struct RuleIndex {
    /// operation → apiGroup → resource pattern → positions of the policies, ascending.
    by_operation: HashMap<String, HashMap<String, HashMap<String, Vec<usize>>>>,
}

impl RuleIndex {
    /// Files the policy at `position` (positions must be added in ascending order).
    pub fn insert(&mut self, position: usize, matcher: &Matcher) {
        for (op, group, resource) in matcher.index_keys() {
            self.by_operation
                .entry(op.to_string())
                .or_default()
                .entry(group.to_string())
                .or_default()
                .entry(resource.to_string())
                .or_default()
                .push(position);
        }
    }

    /// Positions of the policies whose resource rules may match `attrs`, as
    /// called or as converted, ascending and without repeats.
    pub fn candidates(&self, attrs: &Attributes) -> Vec<usize> {
        let mut hits: Vec<usize> = Vec::new();
        let requested = attrs.as_requested();
        let both = [*attrs, requested];
        let views = if requested.group == attrs.group
            && requested.resource == attrs.resource
            && requested.sub_resource == attrs.sub_resource
        {
            &both[..1]
        } else {
            &both[..]
        };
        for op in [attrs.operation, "*"] {
            let Some(by_group) = self.by_operation.get(op) else {
                continue;
            };
            for a in views {
                let patterns = resource_patterns(a);
                for group in [a.group, "*"] {
                    let Some(by_resource) = by_group.get(group) else {
                        continue;
                    };
                    for pattern in &patterns {
                        if let Some(list) = by_resource.get(pattern.as_ref()) {
                            hits.extend(list);
                        }
                    }
                }
            }
        }
        hits.sort_unstable();
        hits.dedup();
        hits
    }
}

/// Every resource pattern a rule can write that matches the request's
/// resource and subresource (see [`resource_matches`]).
fn resource_patterns<'a>(attrs: &Attributes<'a>) -> Vec<Cow<'a, str>> {
    if attrs.sub_resource.is_empty() {
        vec![Cow::Borrowed(attrs.resource), Cow::Borrowed("*")]
    } else {
        vec![
            Cow::Owned(format!("{}/{}", attrs.resource, attrs.sub_resource)),
            Cow::Owned(format!("*/{}", attrs.sub_resource)),
            Cow::Owned(format!("{}/*", attrs.resource)),
            Cow::Borrowed("*/*"),
        ]
    }
}

impl Part {
    fn new(m: &MatchResources) -> Result<Self, String> {
        if let Some(mp) = &m.match_policy
            && mp != "Equivalent"
            && mp != "Exact"
        {
            return Err(format!("matchPolicy '{mp}' must be Equivalent or Exact"));
        }
        Ok(Part {
            // kube-apiserver defaults an absent matchPolicy to Equivalent.
            match_policy: match m.match_policy.as_deref() {
                Some("Exact") => MatchPolicy::Exact,
                _ => MatchPolicy::Equivalent,
            },
            rules: m
                .resource_rules
                .iter()
                .map(Rule::new)
                .collect::<Result<_, _>>()?,
            excludes: m
                .exclude_resource_rules
                .iter()
                .map(Rule::new)
                .collect::<Result<_, _>>()?,
            namespace_selector: m
                .namespace_selector
                .as_ref()
                .map(Selector::new)
                .transpose()?,
            object_selector: m.object_selector.as_ref().map(Selector::new).transpose()?,
        })
    }
}

impl Rule {
    fn new(r: &ResourceRule) -> Result<Self, String> {
        for op in &r.operations {
            if !OPERATIONS.contains(&op.as_str()) {
                return Err(format!(
                    "unknown operation '{op}' (CREATE, UPDATE, DELETE, CONNECT, *)"
                ));
            }
        }
        for (field, list) in [
            ("operations", &r.operations),
            ("apiGroups", &r.api_groups),
            ("apiVersions", &r.api_versions),
            ("resources", &r.resources),
        ] {
            if list.is_empty() {
                return Err(format!(
                    "a resource rule needs {field} (use [\"*\"] for all)"
                ));
            }
        }
        let scope = match r.scope.as_deref() {
            None | Some("*") => RuleScope::Any,
            Some("Cluster") => RuleScope::Cluster,
            Some("Namespaced") => RuleScope::Namespaced,
            Some(other) => return Err(format!("unknown scope '{other}' (Cluster, Namespaced, *)")),
        };
        Ok(Rule {
            operations: r.operations.clone(),
            groups: r.api_groups.clone(),
            versions: r.api_versions.clone(),
            resources: r.resources.clone(),
            names: r.resource_names.clone(),
            scope,
        })
    }

    fn matches(&self, a: &Attributes) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        any(&self.operations, a.operation)
            && any(&self.groups, a.group)
            && any(&self.versions, a.version)
            && self
                .resources
                .iter()
                .any(|pattern| resource_matches(pattern, a.resource, a.sub_resource))
            && (self.names.is_empty() || self.names.iter().any(|n| n == a.name))
            && match self.scope {
                RuleScope::Any => true,
                RuleScope::Cluster => a.is_cluster_scoped(),
                RuleScope::Namespaced => !a.is_cluster_scoped(),
            }
    }
}

/// `*` matches every resource but no subresource; subresources match only when named
/// (`pods/status`, `*/scale`, `deployments/*`, `*/*`).
fn resource_matches(pattern: &str, resource: &str, sub: &str) -> bool {
    match pattern.split_once('/') {
        None => sub.is_empty() && (pattern == "*" || pattern == resource),
        Some((r, s)) => !sub.is_empty() && (r == "*" || r == resource) && (s == "*" || s == sub),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::LabelSelectorRequirement;

    fn attrs<'a>(
        op: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: &'a str,
        ns: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            operation: op,
            group,
            version: "v1",
            resource,
            sub_resource: sub,
            namespace: ns,
            name: "x",
            requested: None,
        }
    }

    fn rule(
        ops: &[&str],
        groups: &[&str],
        resources: &[&str],
        scope: Option<&str>,
    ) -> ResourceRule {
        ResourceRule {
            operations: ops.iter().map(|s| s.to_string()).collect(),
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            api_versions: vec!["*".into()],
            resources: resources.iter().map(|s| s.to_string()).collect(),
            resource_names: vec![],
            scope: scope.map(str::to_string),
        }
    }

    fn matcher(rules: Vec<ResourceRule>, excludes: Vec<ResourceRule>) -> Matcher {
        Matcher::new(
            &MatchResources {
                resource_rules: rules,
                exclude_resource_rules: excludes,
                ..Default::default()
            },
            None,
        )
        .unwrap()
    }

    #[test]
    fn subresources_match_only_when_named() {
        let m = matcher(
            vec![rule(&["*"], &["apps"], &["deployments"], None)],
            vec![],
        );
        assert!(m.matches_rules(&attrs("UPDATE", "apps", "deployments", "", "ns")));
        assert!(!m.matches_rules(&attrs("UPDATE", "apps", "deployments", "scale", "ns")));
        let star = matcher(vec![rule(&["*"], &["*"], &["*"], None)], vec![]);
        assert!(!star.matches_rules(&attrs("UPDATE", "", "pods", "status", "ns")));
        let scale = matcher(vec![rule(&["UPDATE"], &["*"], &["*/scale"], None)], vec![]);
        assert!(scale.matches_rules(&attrs("UPDATE", "apps", "deployments", "scale", "ns")));
        assert!(!scale.matches_rules(&attrs("UPDATE", "apps", "deployments", "status", "ns")));
        let pods_all = matcher(vec![rule(&["*"], &[""], &["pods/*"], None)], vec![]);
        assert!(pods_all.matches_rules(&attrs("CREATE", "", "pods", "eviction", "ns")));
        assert!(!pods_all.matches_rules(&attrs("CREATE", "", "pods", "", "ns")));
    }

    #[test]
    fn operations_groups_and_excludes() {
        let m = matcher(
            vec![rule(
                &["DELETE"],
                &["rbac.authorization.k8s.io"],
                &["clusterroles"],
                None,
            )],
            vec![rule(&["*"], &["*"], &["clusterroles"], None)],
        );
        assert!(
            !m.matches_rules(&attrs(
                "DELETE",
                "rbac.authorization.k8s.io",
                "clusterroles",
                "",
                ""
            )),
            "exclude wins"
        );
        let m = matcher(
            vec![rule(
                &["DELETE"],
                &["rbac.authorization.k8s.io"],
                &["clusterroles"],
                None,
            )],
            vec![],
        );
        assert!(m.matches_rules(&attrs(
            "DELETE",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            ""
        )));
        assert!(!m.matches_rules(&attrs(
            "UPDATE",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            ""
        )));
        assert!(!m.matches_rules(&attrs("DELETE", "", "clusterroles", "", "")));
    }

    #[test]
    fn scope_treats_namespaces_as_cluster_scoped() {
        let cluster = matcher(vec![rule(&["*"], &["*"], &["*"], Some("Cluster"))], vec![]);
        assert!(cluster.matches_rules(&attrs("DELETE", "", "namespaces", "", "team-a")));
        assert!(!cluster.matches_rules(&attrs("DELETE", "", "configmaps", "", "team-a")));
        let namespaced = matcher(
            vec![rule(&["*"], &["*"], &["*"], Some("Namespaced"))],
            vec![],
        );
        assert!(namespaced.matches_rules(&attrs("DELETE", "", "configmaps", "", "team-a")));
        assert!(!namespaced.matches_rules(&attrs("DELETE", "", "namespaces", "", "team-a")));
    }

    #[test]
    fn resource_names_restrict_the_rule() {
        let mut r = rule(&["*"], &[""], &["configmaps"], None);
        r.resource_names = vec!["kube-root-ca.crt".into()];
        let m = matcher(vec![r], vec![]);
        let mut a = attrs("UPDATE", "", "configmaps", "", "ns");
        assert!(!m.matches_rules(&a));
        a.name = "kube-root-ca.crt";
        assert!(m.matches_rules(&a));
    }

    #[test]
    fn label_selector_semantics() {
        let sel = Selector::new(&LabelSelector {
            match_labels: [("team".to_string(), "a".to_string())].into(),
            match_expressions: vec![
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: vec!["dev".into()],
                },
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "Exists".into(),
                    values: vec![],
                },
            ],
        })
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(
            sel.matches(&labels(&[("team", "a"), ("tier", "web")])),
            "NotIn matches an absent key"
        );
        assert!(!sel.matches(&labels(&[("team", "a"), ("tier", "web"), ("env", "dev")])));
        assert!(!sel.matches(&labels(&[("team", "a")])));
        let bad = LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Near".into(),
                values: vec![],
            }],
        };
        assert!(Selector::new(&bad).is_err());
    }

    #[test]
    fn match_policy_exact_matches_only_the_resource_called() {
        // A Deployment created through apps/v1beta1 (say), sent to the webhook
        // converted to apps/v1.
        let mut a = attrs("CREATE", "apps", "deployments", "", "ns");
        a.requested = Some(RequestedResource {
            group: "apps",
            version: "v1beta1",
            resource: "deployments",
            sub_resource: "",
        });
        let rules = |policy: Option<&str>, version: &str| {
            let mut r = rule(&["CREATE"], &["apps"], &["deployments"], None);
            r.api_versions = vec![version.to_string()];
            Matcher::new(
                &MatchResources {
                    resource_rules: vec![r],
                    match_policy: policy.map(str::to_string),
                    ..Default::default()
                },
                None,
            )
            .unwrap()
        };
        assert!(
            rules(None, "v1").matches_rules(&a),
            "Equivalent is the default"
        );
        assert!(rules(Some("Equivalent"), "v1").matches_rules(&a));
        assert!(!rules(Some("Exact"), "v1").matches_rules(&a));
        assert!(rules(Some("Exact"), "v1beta1").matches_rules(&a));
        assert!(rules(Some("Equivalent"), "v1beta1").matches_rules(&a));
        let mut index = RuleIndex::default();
        index.insert(0, &rules(Some("Equivalent"), "v1"));
        assert_eq!(
            index.candidates(&a),
            vec![0],
            "filed under the converted resource"
        );
        // Excluding the converted resource excludes under Equivalent only.
        let mut excluded = rule(&["*"], &["apps"], &["deployments"], None);
        excluded.api_versions = vec!["v1".into()];
        for (policy, matches) in [("Equivalent", false), ("Exact", true)] {
            let m = Matcher::new(
                &MatchResources {
                    resource_rules: vec![rule(&["*"], &["*"], &["*"], None)],
                    exclude_resource_rules: vec![excluded.clone()],
                    match_policy: Some(policy.to_string()),
                    ..Default::default()
                },
                None,
            )
            .unwrap();
            assert_eq!(m.matches_rules(&a), matches, "{policy}");
        }
    }

    #[test]
    fn index_finds_subresource_wildcards_and_not_the_parent() {
        let filed = |resource: &str| {
            let mut index = RuleIndex::default();
            index.insert(
                0,
                &matcher(vec![rule(&["UPDATE"], &["*"], &[resource], None)], vec![]),
            );
            !index
                .candidates(&attrs("UPDATE", "apps", "deployments", "scale", "ns"))
                .is_empty()
        };
        for pattern in ["*/scale", "deployments/scale", "deployments/*", "*/*"] {
            assert!(filed(pattern), "{pattern}");
        }
        for pattern in ["deployments", "*", "*/status"] {
            assert!(!filed(pattern), "{pattern}");
        }
    }
}
