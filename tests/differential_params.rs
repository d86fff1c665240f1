//! Differential test: ValidatingAdmissionPolicies with `paramKind` and bindings
//! with `paramRef`, decided by the gate and by the oracle (kube-apiserver's own
//! admission plugin, `e2e/oracle`) on the same policies, param objects and
//! requests; every answer must be the same (allowed, code, message, warnings,
//! audit annotations). No difference is listed: any one fails the test.
//!
//! Covered: a param by name in the request's namespace and in a fixed one; a
//! cluster-scoped param kind (and `paramRef.namespace` refused for it); label
//! selectors matching several, one or no objects (one evaluation per object);
//! `parameterNotFoundAction` Deny and Allow, also under `failurePolicy: Ignore`
//! and for Warn- or Audit-only bindings; an object of the wrong kind with the
//! right name; a namespaced param kind for a cluster-scoped request (a
//! ClusterRole; a Namespace request carries its own name as namespace); a binding
//! without `paramRef` (`params` is null); params in matchConditions,
//! variables, messageExpression and audit annotations.
//!
//! The param sets are chosen so that at most one param object of a binding
//! fails a request: kube-apiserver lists params from its informer cache in no
//! fixed order, so with two different failures its first message is chance.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use safety_gate::admission::synthetic::{RequestSpec, build_request};
use safety_gate::cluster::Snapshot;
use safety_gate::policy::{EvalOptions, PolicySet, Request};
use serde_json::{Value as Json, json};

mod differential_support;
use differential_support::{
    OracleProcess, audit_difference, compare_answers, oracle_binary, request_json,
};

/// Policies over ConfigMaps and Namespaces (CREATE), one per param kind.
fn policies() -> Vec<Json> {
    let rules = json!({"resourceRules": [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps", "namespaces"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["clusterroles"]}
    ]});
    vec![
        // A namespaced built-in param kind.
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "max-keys"},
        "spec": {
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": rules,
            "matchConditions": [{"name": "not-exempt", "expression": "params == null || !has(params.data.exempt) || params.data.exempt != object.metadata.name"}],
            "variables": [{"name": "limit", "expression": "params == null ? 0 : int(params.data.maxKeys)"}],
            "validations": [{
                "expression": "params == null ? object.metadata.name != 'no-params' : (!has(object.data) || object.data.size() <= variables.limit)",
                "messageExpression": "params == null ? 'no params' : 'at most ' + params.data.maxKeys + ' keys (' + params.metadata.name + ')'",
            }],
            "auditAnnotations": [{"key": "checked", "valueExpression": "'by ' + (params == null ? 'nothing' : params.kind)"}],
        }}),
        // A cluster-scoped custom param kind.
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "forbidden-names"},
        "spec": {
            "paramKind": {"apiVersion": "rules.example.com/v1", "kind": "Limit"},
            "matchConstraints": rules,
            "validations": [{
                "expression": "object.metadata.name != params.spec.forbidden",
                "messageExpression": "'name ' + object.metadata.name + ' is forbidden by ' + params.metadata.name",
                "reason": "Forbidden",
            }],
        }}),
        // A namespaced custom param kind.
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "team-names"},
        "spec": {
            "paramKind": {"apiVersion": "rules.example.com/v1", "kind": "TeamLimit"},
            "matchConstraints": rules,
            "failurePolicy": "Fail",
            "validations": [{"expression": "object.metadata.name != params.spec.forbidden", "message": "forbidden for the team"}],
        }}),
    ]
}

fn param_objects() -> Vec<Json> {
    let cm = |ns: &str, name: &str, max: &str, tier: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {"tier": tier}},
            "data": {"maxKeys": max, "exempt": "exempt-me"}})
    };
    let limit = |name: &str, forbidden: &str, tier: &str| {
        json!({"apiVersion": "rules.example.com/v1", "kind": "Limit",
            "metadata": {"name": name, "labels": {"tier": tier}},
            "spec": {"forbidden": forbidden}})
    };
    vec![
        cm("team-a", "limits", "1", "strict"),
        cm("team-a", "other", "3", "relaxed"),
        cm("policy-config", "limits", "2", "strict"),
        // The right name in the wrong kind: not a param of a ConfigMap policy.
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "limits", "namespace": "team-b"}, "data": {"maxKeys": "MQ=="}}),
        limit("l1", "blocked", "a"),
        limit("l2", "evil", "a"),
        limit("l3", "team-a", "b"),
        json!({"apiVersion": "rules.example.com/v1", "kind": "TeamLimit",
            "metadata": {"name": "t1", "namespace": "team-a", "labels": {"tier": "a"}},
            "spec": {"forbidden": "blocked"}}),
    ]
}

/// (policy, paramRef or null, validationActions, failurePolicy override).
fn bindings() -> Vec<(&'static str, Json, &'static str)> {
    let by_name = |name: &str, ns: Option<&str>, action: &str| {
        let mut r = json!({"name": name, "parameterNotFoundAction": action});
        if let Some(ns) = ns {
            r["namespace"] = json!(ns);
        }
        r
    };
    let by_selector = |selector: Json, ns: Option<&str>, action: &str| {
        let mut r = json!({"selector": selector, "parameterNotFoundAction": action});
        if let Some(ns) = ns {
            r["namespace"] = json!(ns);
        }
        r
    };
    let mut out = Vec::new();
    for action in ["Deny", "Allow"] {
        out.push(("max-keys", by_name("limits", None, action), "Deny"));
        out.push((
            "max-keys",
            by_name("limits", Some("policy-config"), action),
            "Deny",
        ));
        out.push((
            "max-keys",
            by_name("missing", Some("team-a"), action),
            "Deny",
        ));
        out.push(("max-keys", by_selector(json!({}), None, action), "Deny"));
        out.push((
            "max-keys",
            by_selector(json!({"matchLabels": {"tier": "strict"}}), None, action),
            "Deny",
        ));
        out.push(("forbidden-names", by_name("l1", None, action), "Deny"));
        out.push((
            "forbidden-names",
            by_name("l1", Some("team-a"), action),
            "Deny",
        ));
        out.push((
            "forbidden-names",
            by_selector(json!({"matchLabels": {"tier": "a"}}), None, action),
            "Deny",
        ));
        out.push((
            "forbidden-names",
            by_selector(
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}),
                None,
                action,
            ),
            "Deny",
        ));
        out.push((
            "forbidden-names",
            by_selector(json!({"matchLabels": {"tier": "none"}}), None, action),
            "Deny",
        ));
        out.push(("team-names", by_name("t1", None, action), "Deny"));
        out.push((
            "team-names",
            by_selector(
                json!({"matchLabels": {"tier": "a"}}),
                Some("team-a"),
                action,
            ),
            "Deny",
        ));
    }
    out.push(("max-keys", Json::Null, "Deny"));
    out.push(("max-keys", by_name("limits", None, "Deny"), "Warn"));
    out.push(("max-keys", by_name("limits", None, "Deny"), "Audit"));
    out.push((
        "forbidden-names",
        by_selector(json!({}), None, "Deny"),
        "Warn",
    ));
    out.push((
        "forbidden-names",
        by_selector(json!({"matchLabels": {"tier": "a"}}), None, "Deny"),
        "Deny,Audit",
    ));
    out
}

fn requests() -> Vec<Request> {
    let mut out = Vec::new();
    let mut uid = 0;
    let mut push = |object: Json, namespace: Option<&str>| {
        uid += 1;
        out.push(
            build_request(RequestSpec {
                uid: format!("params-{uid}"),
                object: Some(object),
                namespace: namespace.map(str::to_string),
                ..Default::default()
            })
            .expect("request"),
        );
    };
    for ns in ["team-a", "team-b", "policy-config"] {
        for (name, keys) in [
            ("ok", 0),
            ("two", 2),
            ("blocked", 1),
            ("exempt-me", 2),
            ("no-params", 0),
        ] {
            let data: serde_json::Map<String, Json> =
                (0..keys).map(|i| (format!("k{i}"), json!("v"))).collect();
            let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}});
            if keys > 0 {
                cm["data"] = Json::Object(data);
            }
            push(cm, Some(ns));
        }
    }
    for name in ["team-a", "blocked", "fine"] {
        push(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            None,
        );
        // Cluster-scoped and not a Namespace: no namespace at all.
        push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}}),
            None,
        );
    }
    out
}

#[test]
fn params_decide_as_kube_apiserver() {
    let Some(oracle) = oracle_binary() else {
        return;
    };
    let all_policies = policies();
    let params = param_objects();
    let requests = requests();
    let mut inputs = Vec::new();
    let mut gate = Vec::new();
    for (index, (policy, param_ref, actions)) in bindings().into_iter().enumerate() {
        for failure_policy in ["Fail", "Ignore"] {
            let mut p = all_policies
                .iter()
                .find(|p| p["metadata"]["name"] == policy)
                .expect("a policy")
                .clone();
            p["spec"]["failurePolicy"] = json!(failure_policy);
            let mut b = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": format!("b{index}")},
                "spec": {"policyName": policy, "validationActions": actions.split(',').collect::<Vec<_>>()}});
            if !param_ref.is_null() {
                b["spec"]["paramRef"] = param_ref.clone();
            }
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("p.yaml"), format!("{}\n---\n{}\n", p, b))
                .expect("write");
            let set = PolicySet::load_dir(dir.path())
                .unwrap_or_else(|e| panic!("binding b{index} ({policy}) does not load: {e}"));
            let cluster = Snapshot::from_objects(params.clone());
            for r in &requests {
                let d = set
                    .evaluate(r, &cluster, &EvalOptions::default())
                    .expect("evaluates");
                inputs.push(json!({
                    "policies": [p], "bindings": [b], "params": params, "namespaces": [],
                    "request": request_json(r),
                }));
                gate.push((
                    format!("{policy} b{index} {failure_policy} {b} / {}", r.name),
                    d,
                ));
            }
        }
    }
    let mut process = OracleProcess::start(&oracle);
    let answers = process.ask(&inputs);
    process.finish();
    let mut differences = Vec::new();
    let (mut denied, mut allowed) = (0, 0);
    for ((what, d), kube) in gate.iter().zip(&answers) {
        assert!(kube["error"].is_null(), "oracle error for {what}: {kube}");
        assert!(
            kube["rejected"].as_array().is_none_or(|r| r.is_empty()),
            "kube-apiserver rejects a document of {what}: {kube}"
        );
        if d.allowed {
            allowed += 1;
        } else {
            denied += 1;
        }
        for (class, detail) in compare_answers(d, kube) {
            // The documented wrapping of every denial (tests/differential/
            // known-differences.yaml) and the keys of a webhook's audit
            // annotations, compared below under kube-apiserver's keys.
            if class == "message-framing" || class == "audit-annotations" {
                continue;
            }
            differences.push(format!("{class} {what}:\n          {detail}"));
        }
        if let Some(detail) = audit_difference(policy_of(what), d, kube) {
            differences.push(format!("audit-annotations {what}:\n          {detail}"));
        }
    }
    let mut distinct: Vec<String> = gate
        .iter()
        .filter_map(|(_, d)| {
            d.status
                .as_ref()
                .map(|s| format!("{} {}", s.code, s.message))
        })
        .chain(gate.iter().flat_map(|(_, d)| d.warnings.clone()))
        .collect();
    distinct.sort();
    distinct.dedup();
    if std::env::var("DIFFERENTIAL_VERBOSE").is_ok_and(|v| v == "1") {
        for m in &distinct {
            println!("  {m}");
        }
    }
    println!(
        "differential (params): {} cases compared ({denied} denied, {allowed} allowed by the gate), {} differences",
        gate.len(),
        differences.len()
    );
    assert!(
        denied > 0 && allowed > 0,
        "the cases must both allow and deny"
    );
    assert!(
        differences.is_empty(),
        "{} difference(s) from kube-apiserver:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

fn policy_of(what: &str) -> &str {
    what.split(' ').next().unwrap_or_default()
}

/// Documents kube-apiserver refuses to store (its own validation, run by the
/// oracle) do not load in the gate, and the gate names the same field; the
/// valid ones load.
#[test]
fn param_fields_are_validated_as_kube_apiserver_validates_them() {
    let Some(oracle) = oracle_binary() else {
        return;
    };
    let base = policies().remove(1);
    let mut variants: Vec<(Json, Json)> = Vec::new();
    let binding = |param_ref: Json| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "b"},
            "spec": {"policyName": "forbidden-names", "validationActions": ["Deny"], "paramRef": param_ref}})
    };
    for param_ref in [
        json!({"name": "l1"}),
        json!({"name": "l1", "parameterNotFoundAction": "Maybe"}),
        json!({"name": "l1", "parameterNotFoundAction": ""}),
        json!({"name": "l1", "selector": {}, "parameterNotFoundAction": "Deny"}),
        json!({"parameterNotFoundAction": "Deny"}),
        json!({"name": "a/b", "parameterNotFoundAction": "Deny"}),
        json!({"name": "..", "parameterNotFoundAction": "Allow"}),
        json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}, "parameterNotFoundAction": "Deny"}),
        json!({"selector": {"matchLabels": {"tier": "a b"}}, "parameterNotFoundAction": "Deny"}),
        json!({"name": "l1", "namespace": "any-namespace", "parameterNotFoundAction": "Allow"}),
        json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, "parameterNotFoundAction": "Allow"}),
    ] {
        variants.push((base.clone(), binding(param_ref)));
    }
    for param_kind in [
        json!({"apiVersion": "", "kind": "Limit"}),
        json!({"apiVersion": "rules.example.com/v1"}),
        json!({"apiVersion": "a/b/c", "kind": "Limit"}),
        json!({"apiVersion": "Rules.example.com/v1", "kind": "Limit"}),
        json!({"apiVersion": "rules.example.com/", "kind": "Limit"}),
        json!({"apiVersion": "rules.example.com/V1", "kind": "Limit"}),
        json!({"apiVersion": "v1", "kind": "Bad_Kind"}),
        json!({"apiVersion": "/", "kind": "Limit"}),
        json!({"apiVersion": "v1beta1", "kind": "MixedCaseKind"}),
    ] {
        let mut p = base.clone();
        p["spec"]["paramKind"] = param_kind;
        variants.push((
            p,
            binding(json!({"name": "l1", "parameterNotFoundAction": "Deny"})),
        ));
    }
    let request = requests().remove(0);
    let inputs: Vec<Json> = variants
        .iter()
        .map(|(p, b)| json!({"policies": [p], "bindings": [b], "params": [], "namespaces": [], "request": request_json(&request)}))
        .collect();
    let mut process = OracleProcess::start(&oracle);
    let answers = process.ask(&inputs);
    process.finish();
    let (mut rejected, mut accepted) = (0, 0);
    for ((p, b), kube) in variants.iter().zip(&answers) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("p.yaml"), format!("{p}\n---\n{b}\n")).expect("write");
        let gate = PolicySet::load_dir(dir.path());
        let kube_rejections: Vec<&str> = kube["rejected"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["message"].as_str())
            .collect();
        match (&gate, kube_rejections.first()) {
            (Ok(_), None) => accepted += 1,
            (Err(e), Some(k)) => {
                rejected += 1;
                // kube-apiserver: `... is invalid: [spec.a: msg, spec.b: msg]`;
                // the gate names each field with the same message.
                let list = k.split_once("is invalid: ").map(|(_, r)| r).unwrap_or(k);
                let list = list
                    .strip_prefix('[')
                    .and_then(|l| l.strip_suffix(']'))
                    .unwrap_or(list);
                let gate_text = e.to_string();
                for (i, part) in list.split(", spec.").enumerate() {
                    let part = if i == 0 {
                        part.to_string()
                    } else {
                        format!("spec.{part}")
                    };
                    // The gate leaves out the examples and regex that end
                    // some of kube-apiserver's format messages.
                    let part = part.split(" (e.g. ").next().unwrap_or_default();
                    assert!(
                        gate_text.contains(part),
                        "the gate does not say what kube-apiserver says ({part}):\n  gate: {gate_text}\n  kube: {k}"
                    );
                }
            }
            (Ok(_), Some(k)) => {
                panic!("the gate loads what kube-apiserver rejects: {p} {b}\n  kube: {k}")
            }
            (Err(e), None) => {
                panic!("the gate rejects what kube-apiserver stores: {p} {b}\n  gate: {e}")
            }
        }
    }
    println!("differential (param fields): {rejected} rejected and {accepted} accepted by both");
    assert!(rejected > 0 && accepted > 0);
}

/// The published param policies of `../shared/vap-corpus` (the Kubernetes docs'
/// installer CSR policies, 004 and 005) with their published param object,
/// and without it, decided by both engines for the installer's service
/// account and another user.
#[test]
fn corpus_param_policies_with_their_param_objects_decide_as_kube_apiserver() {
    let corpus = differential_support::manifest_dir().join("../shared/vap-corpus");
    assert!(
        corpus.join("params").is_dir(),
        "no corpus at {} (it sits in ../shared beside the clone)",
        corpus.display()
    );
    let Some(oracle) = oracle_binary() else {
        return;
    };
    let installer = "system:serviceaccount:csr-signer-installer:installer";
    let user = |name: &str| -> k8s_openapi::api::authentication::v1::UserInfo {
        serde_json::from_value(json!({"username": name})).expect("user")
    };
    let role = |signer: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "signer"},
            "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "verbs": ["sign"], "resourceNames": [signer]}]})
    };
    let csr = |signer: &str| {
        json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "csr-1"},
            "spec": {"signerName": signer, "request": "", "usages": ["digital signature"]}})
    };
    let mut requests = Vec::new();
    for who in [installer, "alice"] {
        for signer in ["example.com/web", "other.org/web"] {
            requests.push((
                "004-web-installer-csr-delegation-policy",
                build_request(RequestSpec {
                    uid: format!("004-{who}-{signer}"),
                    object: Some(role(signer)),
                    user_info: user(who),
                    ..Default::default()
                })
                .expect("request"),
            ));
            requests.push((
                "005-web-installer-csr-policy",
                build_request(RequestSpec {
                    uid: format!("005-{who}-{signer}"),
                    operation: Some(kube::core::admission::Operation::Update),
                    object: Some(csr(signer)),
                    old_object: Some(csr(signer)),
                    user_info: user(who),
                    ..Default::default()
                })
                .expect("request"),
            ));
        }
    }
    let mut inputs = Vec::new();
    let mut gate = Vec::new();
    for with_params in [true, false] {
        for (doc, request) in &requests {
            let file = corpus.join(format!("docs/{doc}.yaml"));
            let docs = differential_support::documents(&file);
            let params: Vec<Json> = if with_params {
                differential_support::documents(&corpus.join(format!("params/{doc}.params.yaml")))
            } else {
                Vec::new()
            };
            let set = PolicySet::load_files(&[file]).expect("the corpus policy loads");
            let d = set
                .evaluate(
                    request,
                    &Snapshot::from_objects(params.clone()),
                    &EvalOptions::default(),
                )
                .expect("evaluates");
            let of = |k: &str| -> Vec<Json> {
                docs.iter().filter(|d| d["kind"] == k).cloned().collect()
            };
            inputs.push(json!({"policies": of("ValidatingAdmissionPolicy"), "bindings": of("ValidatingAdmissionPolicyBinding"),
                "params": params, "namespaces": [], "request": request_json(request)}));
            gate.push((format!("{doc} params={with_params} {}", request.uid), d));
        }
    }
    let mut process = OracleProcess::start(&oracle);
    let answers = process.ask(&inputs);
    process.finish();
    let mut differences = Vec::new();
    let mut denied = 0;
    for ((what, d), kube) in gate.iter().zip(&answers) {
        assert!(kube["error"].is_null(), "oracle error for {what}: {kube}");
        denied += usize::from(!d.allowed);
        for (class, detail) in compare_answers(d, kube) {
            if class != "message-framing" {
                differences.push(format!("{class} {what}:\n          {detail}"));
            }
        }
    }
    println!(
        "differential (corpus params): {} cases ({denied} denied), {} differences",
        gate.len(),
        differences.len()
    );
    assert!(denied > 0 && denied < gate.len());
    assert!(
        differences.is_empty(),
        "{} difference(s) from kube-apiserver:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
