//! Param objects: which objects a binding's `paramRef` selects for one request,
//! exactly as kube-apiserver's `CollectParams` (admission/plugin/policy/generic,
//! v1.37.2) selects them, and with its messages when it cannot.
//!
//! The engine asks a [`ParamSource`] — the same cluster state that serves
//! `lookups` and namespace labels: live caches in `serve` and `--cluster`, a
//! snapshot of files in `review --live`, `audit --snapshot` and PolicyTest.

use super::Policy;
use super::matching::Selector;
use super::model::ParamKind;
use crate::policy::{ClusterState, LookupError};
use kube_cel::cel::Value;
use kube_cel::cel::objects::{Key, Map};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How the API server serves a param kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamScope {
    Namespaced,
    Cluster,
    /// Cluster state from files with no object of the kind: nothing tells its
    /// scope, and nothing can be found either way.
    Unknown,
}

/// What param lookup needs from cluster state besides [`ClusterState::list`]
/// (which lists the param objects, `""` as namespace for cluster-scoped ones).
pub trait ParamSource {
    /// How `apiVersion`/`kind` is served: `Ok(None)` when the API server does not
    /// serve it (no CRD); `Err` when that cannot be known yet (cache not synced,
    /// RBAC, no cluster state at all).
    fn param_scope(&self, api_version: &str, kind: &str)
    -> Result<Option<ParamScope>, LookupError>;
}

/// Kinds every cluster serves namespaced that are commonly used as params; for
/// other kinds a snapshot can only tell from its objects (see [`guess_scope`]).
const NAMESPACED_BUILTINS: &[(&str, &str)] = &[
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "LimitRange"),
    ("v1", "ResourceQuota"),
];

/// The scope of a kind that cluster state from files holds: namespaced when it
/// is a namespaced built-in or any object of it has a namespace, cluster-scoped
/// when it has objects and none has one, unknown without objects. Files cannot
/// say whether a kind is served, so every kind is.
pub fn guess_scope(
    api_version: &str,
    kind: &str,
    mut namespaces: impl Iterator<Item = bool>,
) -> ParamScope {
    if NAMESPACED_BUILTINS.contains(&(api_version, kind)) {
        return ParamScope::Namespaced;
    }
    let mut any = false;
    for namespaced in namespaces.by_ref() {
        if namespaced {
            return ParamScope::Namespaced;
        }
        any = true;
    }
    if any {
        ParamScope::Cluster
    } else {
        ParamScope::Unknown
    }
}

/// Why a binding's params could not be collected: kube-apiserver reports it as a
/// configuration error of the policy (no binding in the message) or the binding.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamError {
    Policy(String),
    Binding(String),
    /// Cluster state could not be read (failurePolicy decides; the request is
    /// undecided rather than denied when state is merely absent).
    Unavailable(String),
}

/// kube-apiserver's `%v` of a GroupVersionKind: `group/version, Kind=kind`.
fn gvk_string(p: &ParamKind) -> String {
    match p.api_version.parse::<kube::core::GroupVersion>() {
        Ok(gv) => format!("{}/{}, Kind={}", gv.group, gv.version, p.kind),
        Err(_) => format!("{}, Kind={}", p.api_version, p.kind),
    }
}

/// The param objects one evaluation each, for `policy` on a request in
/// `namespace` (`""` for cluster-scoped requests). `[Null]` when the policy has
/// no `paramKind` or its binding no `paramRef`; empty when none was found and
/// `parameterNotFoundAction` is `Allow` (nothing is evaluated).
pub fn collect(
    policy: &Policy,
    namespace: &str,
    source: &dyn ClusterState,
) -> Result<Vec<Value>, ParamError> {
    let Some(kind) = &policy.param_kind else {
        return Ok(vec![Value::Null]);
    };
    // kube-apiserver resolves every policy's paramKind, bound with a paramRef
    // or not, and fails the policy when nothing serves it.
    let scope = match source.param_scope(&kind.api_version, &kind.kind) {
        Ok(Some(scope)) => Ok(scope),
        Ok(None) => {
            return Err(ParamError::Policy(format!(
                "failed to find resource referenced by paramKind: '{}'",
                gvk_string(kind)
            )));
        }
        Err(e) => Err(e),
    };
    let Some(param_ref) = &policy.param_ref else {
        return Ok(vec![Value::Null]);
    };
    let scope = match scope {
        Ok(scope) => scope,
        Err(e) => {
            return Err(ParamError::Unavailable(format!(
                "paramKind kind `&ParamKind{{APIVersion:{},Kind:{},}}` not yet synced to use for admission: {e}",
                kind.api_version, kind.kind
            )));
        }
    };
    let list_namespace = match scope {
        ParamScope::Namespaced if !param_ref.namespace.is_empty() => param_ref.namespace.as_str(),
        ParamScope::Namespaced if namespace.is_empty() => {
            return Err(ParamError::Binding(
                "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources"
                    .to_string(),
            ));
        }
        ParamScope::Namespaced => namespace,
        ParamScope::Cluster if !param_ref.namespace.is_empty() => {
            return Err(ParamError::Binding(
                "paramRef.namespace must not be provided for a cluster-scoped `paramKind`"
                    .to_string(),
            ));
        }
        ParamScope::Cluster => "",
        // No object of the kind at all: whatever its scope, none is found.
        ParamScope::Unknown => "",
    };
    let listed = source
        .list(&kind.api_version, &kind.kind, Some(list_namespace))
        .map_err(|e| {
            ParamError::Unavailable(format!(
                "params of kind {} ({}): {e}",
                kind.kind, kind.api_version
            ))
        })?;
    let Value::List(objects) = listed else {
        return Err(ParamError::Unavailable(format!(
            "params of kind {} ({}) are not a list",
            kind.kind, kind.api_version
        )));
    };
    let mut params: Vec<(String, Value)> = if !param_ref.name.is_empty() {
        objects
            .iter()
            .filter(|o| metadata_str(o, "name").as_deref() == Some(param_ref.name.as_str()))
            .take(1)
            .map(|o| (String::new(), o.clone()))
            .collect()
    } else {
        let selector = param_ref
            .selector
            .as_ref()
            .map(Selector::new)
            .transpose()
            .map_err(ParamError::Binding)?;
        objects
            .iter()
            .filter(|o| selector.as_ref().is_none_or(|s| s.matches(&labels(o))))
            .map(|o| (metadata_str(o, "name").unwrap_or_default(), o.clone()))
            .collect()
    };
    if params.is_empty() {
        if param_ref.parameter_not_found_action.as_deref() == Some("Deny") {
            return Err(ParamError::Binding(
                "no params found for policy binding with `Deny` parameterNotFoundAction"
                    .to_string(),
            ));
        }
        return Ok(Vec::new());
    }
    // kube-apiserver's lister returns them in its cache's order (unordered); by
    // name, so that the gate's answer never depends on chance.
    params.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(params
        .into_iter()
        .map(|(_, o)| with_type_meta(o, kind))
        .collect())
}

fn metadata(o: &Value) -> Option<&HashMap<Key, Value>> {
    let Value::Map(m) = o else { return None };
    match m.map.get(&Key::String(Arc::new("metadata".to_string()))) {
        Some(Value::Map(meta)) => Some(&meta.map),
        _ => None,
    }
}

fn metadata_str(o: &Value, field: &str) -> Option<String> {
    match metadata(o)?.get(&Key::String(Arc::new(field.to_string()))) {
        Some(Value::String(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn labels(o: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Map(labels)) =
        metadata(o).and_then(|m| m.get(&Key::String(Arc::new("labels".to_string()))))
    {
        for (k, v) in labels.map.iter() {
            if let (Key::String(k), Value::String(v)) = (k, v) {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

/// kube-apiserver gives a param object without `apiVersion` and `kind` (what
/// its typed caches hold) those of the paramKind before CEL sees it.
fn with_type_meta(o: Value, kind: &ParamKind) -> Value {
    let Value::Map(m) = &o else { return o };
    let key_av = Key::String(Arc::new("apiVersion".to_string()));
    let key_kind = Key::String(Arc::new("kind".to_string()));
    let has = |k: &Key| matches!(m.map.get(k), Some(Value::String(s)) if !s.is_empty());
    if has(&key_av) && has(&key_kind) {
        return o;
    }
    let mut map = (*m.map).clone();
    map.insert(key_av, Value::String(Arc::new(kind.api_version.clone())));
    map.insert(key_kind, Value::String(Arc::new(kind.kind.clone())));
    Value::Map(Map { map: Arc::new(map) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::synthetic::{RequestSpec, build_request};
    use crate::policy::{EvalOptions, PolicySet, Request};

    /// A cluster whose API server serves no param kind at all.
    struct NothingServed;

    impl ParamSource for NothingServed {
        fn param_scope(&self, _: &str, _: &str) -> Result<Option<ParamScope>, LookupError> {
            Ok(None)
        }
    }

    impl crate::policy::ClusterState for NothingServed {
        fn namespace(&self, _: &str) -> Result<Option<crate::policy::NamespaceInfo>, LookupError> {
            Ok(None)
        }
        fn list(&self, _: &str, _: &str, _: Option<&str>) -> Result<Value, LookupError> {
            Ok(Value::List(Arc::new(Vec::new())))
        }
    }

    fn set(failure_policy: &str) -> PolicySet {
        let dir = set_dir(failure_policy);
        PolicySet::load_dir(dir.path()).expect("loads")
    }

    fn set_dir(failure_policy: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("p.yaml"),
            format!("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: p\nspec:\n  failurePolicy: {failure_policy}\n  paramKind: {{apiVersion: rules.example.com/v1, kind: Limit}}\n  matchConstraints:\n    resourceRules:\n    - {{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}\n  validations:\n  - expression: \"true\"\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: b\nspec:\n  policyName: p\n  validationActions: [Warn]\n  paramRef: {{name: x, parameterNotFoundAction: Allow}}\n"),
        )
        .expect("write");
        dir
    }

    fn request() -> Request {
        build_request(RequestSpec {
            uid: "u".into(),
            object: Some(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}})),
            ..Default::default()
        })
        .expect("request")
    }

    #[test]
    fn a_param_kind_the_api_server_does_not_serve_fails_the_policy_as_kube_apiserver_says() {
        let d = set("Fail")
            .evaluate(&request(), &NothingServed, &EvalOptions::default())
            .expect("evaluates");
        // Denied whatever the binding's actions (Warn) and parameterNotFoundAction.
        assert!(!d.allowed);
        let status = d.status.expect("denied");
        assert_eq!(status.code, 422);
        assert_eq!(
            status.message,
            "ValidatingAdmissionPolicy 'p' denied request: failed to configure policy: failed to find resource referenced by paramKind: 'rules.example.com/v1, Kind=Limit'"
        );
        let d = set("Ignore")
            .evaluate(&request(), &NothingServed, &EvalOptions::default())
            .expect("evaluates");
        assert!(d.allowed && d.warnings.is_empty());
        // Also for a binding without paramRef (kube-apiserver resolves the
        // paramKind of every policy it has).
        let dir = set_dir("Fail");
        let text = std::fs::read_to_string(dir.path().join("p.yaml"))
            .expect("read")
            .replace(
                "  paramRef: {name: x, parameterNotFoundAction: Allow}\n",
                "",
            );
        std::fs::write(dir.path().join("p.yaml"), text).expect("write");
        let set = PolicySet::load_dir(dir.path()).expect("loads");
        assert!(set.policies()[0].param_ref.is_none());
        let d = set
            .evaluate(&request(), &NothingServed, &EvalOptions::default())
            .expect("evaluates");
        assert!(!d.allowed);
        // Offline, where nothing tells whether it is served, params are null.
        let d = set
            .evaluate(
                &request(),
                &crate::policy::NoCluster,
                &EvalOptions::default(),
            )
            .expect("evaluates");
        assert!(d.allowed, "{:?}", d.status);
    }

    #[test]
    fn files_without_an_object_of_the_kind_find_none_whatever_its_scope() {
        // No Limit object at all: a `paramRef.namespace` is not taken for a
        // cluster-scoped kind's error; the binding's Allow applies.
        let dir = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read_to_string(set_dir("Fail").path().join("p.yaml"))
            .expect("read")
            .replace("paramRef: {name: x,", "paramRef: {name: x, namespace: a,");
        std::fs::write(dir.path().join("p.yaml"), text).expect("write");
        let set = PolicySet::load_dir(dir.path()).expect("loads");
        let d = set
            .evaluate(
                &request(),
                &crate::cluster::Snapshot::empty(),
                &EvalOptions::default(),
            )
            .expect("evaluates");
        assert!(d.allowed, "{:?}", d.status);
        assert_eq!(
            guess_scope("rules.example.com/v1", "Limit", [false].into_iter()),
            ParamScope::Cluster
        );
        assert_eq!(
            guess_scope("v1", "ConfigMap", std::iter::empty()),
            ParamScope::Namespaced
        );
    }

    #[test]
    fn without_cluster_state_params_are_unknown_not_missing() {
        let d = set("Fail")
            .evaluate(
                &request(),
                &crate::policy::NoCluster,
                &EvalOptions::default(),
            )
            .expect("evaluates");
        assert!(!d.allowed);
        assert!(d.policies[0].undecided, "{:?}", d.policies);
    }
}
