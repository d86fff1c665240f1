//! Engine semantics, one rule per test: each would fail if the rule broke.

use super::*;
use crate::admission::synthetic::{RequestSpec, build_request};
use crate::cluster::Snapshot;
use crate::policy::NoCluster;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use serde_json::json;
use std::time::{Duration, Instant};

fn load(yaml: &str) -> Result<PolicySet, LoadErrors> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.yaml"), yaml).expect("write");
    PolicySet::load_dir(dir.path())
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: safety-gate.dev/v1alpha1\nkind: GatePolicy\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

const CM_RULES: &str = "  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [\"*\"]\n      operations: [\"*\"]\n      resources: [\"configmaps\"]\n";

fn cm(name: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "team-a", "labels": {"app": "web"}}, "data": data})
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        username: Some(name.into()),
        groups: Some(groups.iter().map(|g| g.to_string()).collect()),
        ..Default::default()
    }
}

fn create(object: serde_json::Value) -> Request {
    build_request(RequestSpec {
        uid: "u1".into(),
        object: Some(object),
        user_info: user("alice", &["system:authenticated"]),
        ..Default::default()
    })
    .expect("request")
}

fn eval(set: &PolicySet, req: &Request) -> Decision {
    set.evaluate(req, &Snapshot::empty(), &EvalOptions::default())
        .expect("evaluates")
}

fn deny_cm_named(name: &str, extra: &str) -> String {
    policy(
        name,
        &format!(
            "{CM_RULES}{extra}  validations:\n  - expression: \"object.metadata.name != 'forbidden'\"\n    message: no forbidden configmaps\n"
        ),
    )
}

#[test]
fn json_integers_are_int_in_expressions() {
    let set = load(&policy("ints", &format!("{CM_RULES}  validations:\n  - expression: \"object.data.n + 1 == 4 && object.data.f > 1.0\"\n")))
        .expect("loads");
    let d = eval(
        &set,
        &create(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"n": 3, "f": 1.5}}),
        ),
    );
    assert!(d.allowed, "{:?}", d.status);
}

#[test]
fn failing_validation_denies_naming_the_policy_with_the_reason_code() {
    let yaml = policy(
        "no-forbidden",
        &format!(
            "{CM_RULES}  validations:\n  - expression: \"object.metadata.name != 'forbidden'\"\n    message: no forbidden configmaps\n    reason: Invalid\n"
        ),
    );
    let set = load(&yaml).expect("loads");
    let d = eval(&set, &create(cm("forbidden", json!({}))));
    assert!(!d.allowed);
    let status = d.status.expect("status");
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert_eq!(status.message, "no-forbidden: no forbidden configmaps");
    let failures: serde_json::Value =
        serde_json::from_str(&d.audit_annotations["validation_failure"]).expect("json");
    assert_eq!(
        failures,
        json!([{"policy": "no-forbidden", "message": "no forbidden configmaps", "expressionIndex": 0, "action": "Deny"}])
    );
    assert!(eval(&set, &create(cm("fine", json!({})))).allowed);
}

#[test]
fn deny_message_lists_every_failing_policy() {
    let yaml = format!(
        "{}---\n{}",
        deny_cm_named("first", ""),
        deny_cm_named("second", "")
    );
    let set = load(&yaml).expect("loads");
    let d = eval(&set, &create(cm("forbidden", json!({}))));
    let message = d.status.clone().expect("denied").message;
    assert!(
        message.contains("first: no forbidden configmaps")
            && message.contains("second: no forbidden configmaps"),
        "{message}"
    );
    assert_eq!(
        d.denied_by(),
        vec!["first".to_string(), "second".to_string()]
    );
}

#[test]
fn message_expression_and_its_fallbacks() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"false\"\n    messageExpression: \"'name is ' + object.metadata.name\"\n  - expression: \"false\"\n    message: static fallback\n    messageExpression: \"object.metadata.labels['absent']\"\n  - expression: \"false\"\n    messageExpression: \"''\"\n    message: empty falls back\n  - expression: \"1 == 2\"\n"
    );
    let set = load(&policy("messages", &spec)).expect("loads");
    let d = eval(&set, &create(cm("web", json!({}))));
    let message = d.status.expect("denied").message;
    assert_eq!(
        message,
        "messages: name is web; static fallback; empty falls back; failed expression: 1 == 2"
    );
}

#[test]
fn actions_warn_and_audit_do_not_deny() {
    let warn = policy(
        "warn-only",
        &format!(
            "  action: Warn\n{CM_RULES}  validations:\n  - expression: \"false\"\n    message: heads up\n"
        ),
    );
    let audit = policy(
        "audit-only",
        &format!(
            "  action: Audit\n{CM_RULES}  validations:\n  - expression: \"false\"\n    message: noted\n"
        ),
    );
    let set = load(&format!("{warn}---\n{audit}")).expect("loads");
    let d = eval(&set, &create(cm("x", json!({}))));
    assert!(d.allowed);
    assert_eq!(d.warnings, vec!["warn-only: heads up".to_string()]);
    assert_eq!(d.verdict, Verdict::Warned);
    let failures: serde_json::Value =
        serde_json::from_str(&d.audit_annotations["validation_failure"]).expect("json");
    assert_eq!(
        failures,
        json!([{"policy": "audit-only", "message": "noted", "expressionIndex": 0, "action": "Audit"}])
    );
}

#[test]
fn audit_mode_turns_denials_into_prefixed_warnings() {
    let set = load(&deny_cm_named("no-forbidden", "")).expect("loads");
    let req = create(cm("forbidden", json!({})));
    let d = set
        .evaluate(
            &req,
            &NoCluster,
            &EvalOptions {
                mode: Mode::DryRun,
                ..Default::default()
            },
        )
        .expect("evaluates");
    assert!(d.allowed);
    assert_eq!(d.verdict, Verdict::WouldDeny);
    assert_eq!(
        d.warnings,
        vec!["[dry-run] no-forbidden: no forbidden configmaps".to_string()]
    );
    assert!(d.audit_annotations["validation_failure"].contains("\"action\":\"Deny\""));
    assert_eq!(d.denied_by(), vec!["no-forbidden".to_string()]);
}

#[test]
fn match_conditions_are_tri_state() {
    let with = |cond: &str, fp: &str| {
        policy(
            "mc",
            &format!(
                "  failurePolicy: {fp}\n{CM_RULES}  matchConditions:\n  - name: c\n    expression: \"{cond}\"\n  validations:\n  - expression: \"false\"\n    message: denied\n"
            ),
        )
    };
    let req = create(cm("x", json!({})));
    // false: the policy does not apply.
    assert!(eval(&load(&with("false", "Fail")).expect("loads"), &req).allowed);
    // true: it applies.
    assert!(!eval(&load(&with("true", "Fail")).expect("loads"), &req).allowed);
    // error under Fail: denied, and the message says the policy could not be evaluated.
    let d = eval(
        &load(&with("object.metadata.labels['absent'] == 'x'", "Fail")).expect("loads"),
        &req,
    );
    assert!(!d.allowed);
    assert!(
        d.status
            .expect("status")
            .message
            .contains("could not be evaluated")
    );
    // error under Ignore: skipped, recorded.
    let d = eval(
        &load(&with("object.metadata.labels['absent'] == 'x'", "Ignore")).expect("loads"),
        &req,
    );
    assert!(d.allowed);
    assert!(d.audit_annotations.contains_key("evaluation_error"));
    // any false wins over an error.
    let two = policy(
        "mc2",
        &format!(
            "{CM_RULES}  matchConditions:\n  - name: err\n    expression: \"object.metadata.labels['absent'] == 'x'\"\n  - name: no\n    expression: \"false\"\n  validations:\n  - expression: \"false\"\n"
        ),
    );
    assert!(eval(&load(&two).expect("loads"), &req).allowed);
}

#[test]
fn runtime_errors_follow_failure_policy() {
    let with = |fp: &str| {
        policy(
            "rt",
            &format!(
                "  failurePolicy: {fp}\n{CM_RULES}  validations:\n  - expression: \"object.metadata.labels['absent'] == 'x'\"\n"
            ),
        )
    };
    let req = create(cm("x", json!({})));
    let d = eval(&load(&with("Fail")).expect("loads"), &req);
    assert!(!d.allowed);
    assert!(
        d.status
            .expect("status")
            .message
            .contains("resulted in error"),
        "absent map keys are errors, as in Kubernetes"
    );
    let d = eval(&load(&with("Ignore")).expect("loads"), &req);
    assert!(d.allowed);
    assert_eq!(d.verdict, Verdict::Error);
}

#[test]
fn non_bool_validation_is_an_error() {
    let set = load(&policy(
        "nb",
        &format!("{CM_RULES}  validations:\n  - expression: \"'yes'\"\n"),
    ))
    .expect("loads");
    let d = eval(&set, &create(cm("x", json!({}))));
    assert!(!d.allowed);
    assert!(
        d.status
            .expect("status")
            .message
            .contains("must return a bool")
    );
}

#[test]
fn variables_are_lazy_cached_and_ordered() {
    let spec = format!(
        "{CM_RULES}  variables:\n  - name: broken\n    expression: \"object.metadata.labels['absent']\"\n  - name: app\n    expression: \"object.metadata.labels['app']\"\n  - name: loud\n    expression: \"variables.app + '!'\"\n  validations:\n  - expression: \"variables.loud == 'web!' && variables.app == 'web'\"\n  - expression: \"variables.app.size() == 3\"\n"
    );
    let set = load(&policy("vars", &spec)).expect("loads");
    variables::reset_evaluations();
    let d = eval(&set, &create(cm("x", json!({}))));
    assert!(
        d.allowed,
        "an erroring variable that nothing reads is never evaluated: {:?}",
        d.status
    );
    assert_eq!(
        variables::evaluations(),
        2,
        "app and loud, once each, although app is read three times"
    );
    // Referencing a later variable is a load error.
    let bad = format!(
        "{CM_RULES}  variables:\n  - name: a\n    expression: \"variables.b\"\n  - name: b\n    expression: \"1\"\n  validations:\n  - expression: \"true\"\n"
    );
    let err = load(&policy("later", &bad)).expect_err("rejected");
    assert!(
        err.to_string().contains("spec.variables[0].expression"),
        "{err}"
    );
    // A read variable that errors makes the reading expression an error.
    let reads_broken = format!(
        "{CM_RULES}  variables:\n  - name: broken\n    expression: \"object.metadata.labels['absent']\"\n  validations:\n  - expression: \"variables.broken == 'x'\"\n"
    );
    let d = eval(
        &load(&policy("rb", &reads_broken)).expect("loads"),
        &create(cm("x", json!({}))),
    );
    assert!(
        d.status
            .expect("denied")
            .message
            .contains("variables.broken")
    );
}

#[test]
fn variables_in_branches_not_taken_are_never_evaluated() {
    let spec = format!(
        "{CM_RULES}  variables:\n  - name: boom\n    expression: \"object.spec.selector\"\n  validations:\n  - expression: \"true || variables.boom == 1\"\n  - expression: \"true ? true : variables.boom == 1\"\n  - expression: \"!has(variables.boom) || object.?spec.?selector.orValue('none') == 'none'\"\n"
    );
    let set = load(&policy("lazy", &spec)).expect("loads");
    variables::reset_evaluations();
    let d = eval(&set, &create(cm("x", json!({}))));
    assert!(d.allowed, "{:?} {:?}", d.status, d.policies);
    assert_eq!(variables::evaluations(), 0);
}

#[test]
fn comprehensions_cannot_shadow_policy_variables() {
    let err = load(&policy(
        "shadow",
        &format!("{CM_RULES}  validations:\n  - expression: \"[1].all(object, object == 1)\"\n"),
    ))
    .expect_err("rejected");
    assert!(
        err.to_string().contains("cannot name a loop variable"),
        "{err}"
    );
}

#[test]
fn null_object_and_old_object() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"request.operation == 'DELETE' ? object == null && oldObject.metadata.name == 'x' : oldObject == null\"\n"
    );
    let set = load(&policy("nulls", &spec)).expect("loads");
    assert!(eval(&set, &create(cm("x", json!({})))).allowed);
    let del = build_request(RequestSpec {
        operation: Some(Operation::Delete),
        old_object: Some(cm("x", json!({}))),
        ..Default::default()
    })
    .expect("req");
    let d = eval(&set, &del);
    assert!(d.allowed, "{:?}", d.status);
}

#[test]
fn request_fields_and_user_info() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"request.userInfo.username == 'alice' && 'system:authenticated' in request.userInfo.groups && request.namespace == 'team-a' && request.resource.resource == 'configmaps' && request.kind.kind == 'ConfigMap' && request.name == 'x' && !request.dryRun && !has(request.subResource)\"\n"
    );
    let set = load(&policy("req", &spec)).expect("loads");
    let d = eval(&set, &create(cm("x", json!({}))));
    assert!(d.allowed, "{:?}", d.status);
}

#[test]
fn exemptions_pass_but_are_never_silent() {
    let spec = format!(
        "{CM_RULES}  exemptions:\n  - name: break-glass\n    expression: \"'safety-gate:break-glass' in request.userInfo.groups\"\n  validations:\n  - expression: \"false\"\n    message: blocked\n"
    );
    let set = load(&policy("guard", &spec)).expect("loads");
    let mut req = create(cm("x", json!({})));
    assert!(!eval(&set, &req).allowed);
    req.user_info = user("bob", &["safety-gate:break-glass"]);
    let d = eval(&set, &req);
    assert!(d.allowed);
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].contains("guard")
            && d.warnings[0].contains("bob")
            && d.warnings[0].contains("break-glass"),
        "{:?}",
        d.warnings
    );
    let bg: serde_json::Value =
        serde_json::from_str(&d.audit_annotations["break_glass"]).expect("json");
    assert_eq!(bg[0]["policy"], "guard");
    assert_eq!(bg[0]["exemption"], "break-glass");
    assert_eq!(bg[0]["user"], "bob");
    assert_eq!(d.policies[0].outcome, PolicyOutcome::Exempted);
}

#[test]
fn audit_annotations_are_emitted_and_null_omitted() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"true\"\n  auditAnnotations:\n  - key: touched-by\n    valueExpression: \"request.userInfo.username + ' touched ' + object.metadata.name\"\n  - key: never\n    valueExpression: \"null\"\n"
    );
    let set = load(&policy("annot", &spec)).expect("loads");
    let d = eval(&set, &create(cm("x", json!({}))));
    assert_eq!(
        d.audit_annotations.get("touched-by").map(String::as_str),
        Some("alice touched x")
    );
    assert!(!d.audit_annotations.contains_key("never"));
}

#[test]
fn object_selector_matches_object_or_old_object() {
    let spec = "  matchConstraints:\n    objectSelector:\n      matchLabels: {app: web}\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [\"*\"]\n      operations: [\"*\"]\n      resources: [\"configmaps\"]\n  validations:\n  - expression: \"false\"\n";
    let set = load(&policy("sel", spec)).expect("loads");
    assert!(
        !eval(&set, &create(cm("x", json!({})))).allowed,
        "labels match"
    );
    let mut other = cm("x", json!({}));
    other["metadata"]["labels"] = json!({"app": "db"});
    assert!(
        eval(&set, &create(other.clone())).allowed,
        "labels do not match"
    );
    let update = build_request(RequestSpec {
        object: Some(other),
        old_object: Some(cm("x", json!({}))),
        ..Default::default()
    })
    .expect("req");
    assert!(!eval(&set, &update).allowed, "oldObject matches");
}

#[test]
fn namespace_selector_reads_the_namespace_or_the_namespace_itself() {
    let spec = "  matchConstraints:\n    namespaceSelector:\n      matchLabels: {safety-gate.dev/protected: \"true\"}\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [\"*\"]\n      operations: [\"DELETE\"]\n      resources: [\"namespaces\", \"configmaps\", \"persistentvolumes\"]\n  validations:\n  - expression: \"false\"\n";
    let set = load(&policy("nssel", spec)).expect("loads");
    let ns = |name: &str, protected: bool| {
        let mut o = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        if protected {
            o["metadata"]["labels"] = json!({"safety-gate.dev/protected": "true"});
        }
        o
    };
    let delete = |o: serde_json::Value| {
        build_request(RequestSpec {
            operation: Some(Operation::Delete),
            old_object: Some(o),
            ..Default::default()
        })
        .expect("req")
    };
    let cluster = Snapshot::from_objects(vec![ns("prod", true), ns("dev", false)]);
    let run = |r: &Request| {
        set.evaluate(r, &cluster, &EvalOptions::default())
            .expect("evaluates")
    };
    assert!(
        !run(&delete(ns("prod", true))).allowed,
        "a Namespace is matched on its own labels"
    );
    assert!(run(&delete(ns("dev", false))).allowed);
    let mut in_prod = cm("x", json!({}));
    in_prod["metadata"]["namespace"] = json!("prod");
    assert!(
        !run(&delete(in_prod.clone())).allowed,
        "a namespaced object is matched on its namespace's labels"
    );
    in_prod["metadata"]["namespace"] = json!("dev");
    assert!(run(&delete(in_prod.clone())).allowed);
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"}});
    assert!(
        !run(&delete(pv)).allowed,
        "other cluster-scoped objects are never filtered out"
    );
    in_prod["metadata"]["namespace"] = json!("unknown");
    let d = run(&delete(in_prod));
    assert!(
        !d.allowed && d.status.expect("status").message.contains("namespace"),
        "an unknown namespace is an error for failurePolicy Fail"
    );
}

#[test]
fn a_selector_on_the_namespace_name_label_needs_no_cluster_state() {
    // kube-apiserver sets kubernetes.io/metadata.name on every namespace, so a
    // selector that reads only that label is decided for a namespace the
    // cluster state does not know; any other label is still unknown.
    let by_name = "  matchConstraints:\n    namespaceSelector:\n      matchExpressions:\n      - {key: kubernetes.io/metadata.name, operator: In, values: [prod]}\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [\"*\"]\n      operations: [\"CREATE\"]\n      resources: [\"configmaps\"]\n  validations:\n  - expression: \"false\"\n";
    let by_label = by_name.replace(
        "{key: kubernetes.io/metadata.name, operator: In, values: [prod]}",
        "{key: team, operator: In, values: [a]}",
    );
    let create_in = |ns: &str| {
        let mut o = cm("x", json!({}));
        o["metadata"]["namespace"] = json!(ns);
        build_request(RequestSpec {
            operation: Some(Operation::Create),
            namespace: Some(ns.to_string()),
            object: Some(o),
            ..Default::default()
        })
        .expect("req")
    };
    for state in [
        &Snapshot::empty() as &dyn crate::policy::ClusterState,
        &crate::policy::NoCluster,
    ] {
        let set = load(&policy("byname", by_name)).expect("loads");
        let run = |r: &Request| {
            set.evaluate(r, state, &EvalOptions::default())
                .expect("evaluates")
        };
        assert!(run(&create_in("dev")).allowed, "dev is not selected");
        assert!(!run(&create_in("prod")).allowed, "prod is selected");
        let set = load(&policy("bylabel", &by_label)).expect("loads");
        let d = set
            .evaluate(&create_in("dev"), state, &EvalOptions::default())
            .expect("evaluates");
        assert!(
            !d.allowed && d.status.expect("status").message.contains("namespace"),
            "another label of an unknown namespace stays an error for failurePolicy Fail"
        );
    }
}

#[test]
fn namespace_object_is_bound_for_namespaced_requests() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"namespaceObject.metadata.labels['tier'] == 'gold'\"\n"
    );
    let set = load(&policy("nsobj", &spec)).expect("loads");
    let cluster = Snapshot::from_objects(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"tier": "gold"}}}),
    ]);
    let d = set
        .evaluate(
            &create(cm("x", json!({}))),
            &cluster,
            &EvalOptions::default(),
        )
        .expect("evaluates");
    assert!(d.allowed, "{:?}", d.status);
}

#[test]
fn lookups_read_cluster_state_and_unavailable_lookups_follow_failure_policy() {
    let with = |fp: &str| {
        policy(
            "lk",
            &format!(
                "  failurePolicy: {fp}\n{CM_RULES}  lookups:\n  - name: clusters\n    apiVersion: core.kubefed.io/v1beta1\n    kind: KubeFedCluster\n    namespace: kube-federation-system\n  validations:\n  - expression: \"lookups.clusters.size() < 2\"\n    messageExpression: \"'conflicting registrations: ' + lookups.clusters.map(c, c.metadata.name).join(', ')\"\n"
            ),
        )
    };
    let kfc = |name: &str| json!({"apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster", "metadata": {"name": name, "namespace": "kube-federation-system"}, "spec": {"apiEndpoint": "https://10.0.0.1:6443"}});
    let req = create(cm("x", json!({})));
    let set = load(&with("Fail")).expect("loads");
    let one = Snapshot::from_objects(vec![kfc("host")]);
    assert!(
        set.evaluate(&req, &one, &EvalOptions::default())
            .expect("ok")
            .allowed
    );
    let two = Snapshot::from_objects(vec![kfc("host"), kfc("stale")]);
    let d = set
        .evaluate(&req, &two, &EvalOptions::default())
        .expect("ok");
    assert!(
        d.status
            .expect("denied")
            .message
            .contains("conflicting registrations: ")
    );
    let d = set
        .evaluate(&req, &NoCluster, &EvalOptions::default())
        .expect("ok");
    assert!(
        !d.allowed,
        "no cluster state is an error, not an empty list"
    );
    let d = load(&with("Ignore"))
        .expect("loads")
        .evaluate(&req, &NoCluster, &EvalOptions::default())
        .expect("ok");
    assert!(d.allowed);
}

#[test]
fn kubernetes_libraries_in_policies() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"quantity(object.data.size).isLessThan(quantity('1Gi')) && object.data.url.startsWith('https://') && url(object.data.url).getHost() == 'example.com'\"\n"
    );
    let set = load(&policy("libs", &spec)).expect("loads");
    assert!(
        eval(
            &set,
            &create(cm(
                "x",
                json!({"size": "512Mi", "url": "https://example.com/x"})
            ))
        )
        .allowed
    );
    assert!(
        !eval(
            &set,
            &create(cm(
                "x",
                json!({"size": "2Gi", "url": "https://example.com/x"})
            ))
        )
        .allowed
    );
}

#[test]
fn label_keys_are_not_escaped() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"'app.kubernetes.io/name' in object.metadata.labels && object.metadata.labels['app.kubernetes.io/name'] == 'web' && object.metadata.labels[?'kubernetes.io/bootstrapping'].orValue('') == ''\"\n"
    );
    let set = load(&policy("keys", &spec)).expect("loads");
    let mut o = cm("x", json!({}));
    o["metadata"]["labels"] = json!({"app.kubernetes.io/name": "web"});
    assert!(eval(&set, &create(o)).allowed);
}

/// kube-apiserver does not limit how deep comprehensions nest (the runtime
/// cost limit bounds them), so neither does the gate.
#[test]
fn deeply_nested_comprehensions_load_and_run() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"[1].all(a, [1].all(b, [1].all(c, [1].all(d, [1].all(e, true)))))\"\n"
    );
    let set = load(&policy("nested", &spec)).expect("loads");
    assert!(eval(&set, &create(cm("x", json!({})))).allowed);
}

#[test]
fn cost_guard_stops_pathological_expressions_quickly() {
    let with = |fp: &str| {
        policy(
            "quadratic",
            &format!(
                "  failurePolicy: {fp}\n{CM_RULES}  validations:\n  - expression: \"object.data.items.all(x, object.data.items.exists(y, y == x))\"\n"
            ),
        )
    };
    let items: Vec<i64> = (0..100_000).collect();
    let req = create(cm("big", json!({"items": items})));
    let started = Instant::now();
    let d = eval(&load(&with("Fail")).expect("loads"), &req);
    // It runs until its runtime cost passes Kubernetes' 1,000,000 (about 600
    // passes of the inner loop, each reading the 100,000-element list): 10-40 s
    // in a debug build on a loaded 2-core machine, not the hours the full loop
    // would take. The bound only tells "stopped" from "ran to the end".
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "took {:?}",
        started.elapsed()
    );
    assert!(!d.allowed);
    assert!(
        d.status
            .expect("status")
            .message
            .contains(super::runtime_cost::LIMIT_EXCEEDED)
    );
    assert!(eval(&load(&with("Ignore")).expect("loads"), &req).allowed);
    // The same expression on a small list runs normally.
    let small = create(cm("small", json!({"items": [1, 2, 3]})));
    assert!(eval(&load(&with("Fail")).expect("loads"), &small).allowed);
}

#[test]
fn cost_guard_counts_whole_values_compared_inside_loops() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"object.data.items.all(x, object.data.items == object.data.items)\"\n"
    );
    let items: Vec<i64> = (0..20_000).collect();
    let d = eval(
        &load(&policy("eqloop", &spec)).expect("loads"),
        &create(cm("big", json!({"items": items}))),
    );
    assert!(
        d.status
            .expect("status")
            .message
            .contains(super::runtime_cost::LIMIT_EXCEEDED)
    );
}

#[test]
fn constant_ranges_are_bounded() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"lists.range(2000).all(x, lists.range(2000).exists(y, y == x))\"\n"
    );
    let started = Instant::now();
    let d = eval(
        &load(&policy("ranges", &spec)).expect("loads"),
        &create(cm("x", json!({}))),
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        d.status
            .expect("status")
            .message
            .contains(super::runtime_cost::LIMIT_EXCEEDED)
    );
}

#[test]
fn deadline_passed_is_an_error_for_failure_policy() {
    let set = load(&deny_cm_named("p", "")).expect("loads");
    let past = Instant::now()
        .checked_sub(Duration::from_millis(1))
        .unwrap_or_else(Instant::now);
    let d = set
        .evaluate(
            &create(cm("fine", json!({}))),
            &NoCluster,
            &EvalOptions {
                deadline: Some(past),
                ..Default::default()
            },
        )
        .expect("ok");
    assert!(!d.allowed);
    assert!(d.status.expect("status").message.contains("deadline"));
}

#[test]
fn an_object_that_is_not_an_object_is_an_input_error() {
    let set = load(&deny_cm_named("p", "")).expect("loads");
    let mut req = create(cm("x", json!({})));
    req.object = Some(serde_json::value::to_raw_value(&json!([1, 2])).expect("raw"));
    let err = set
        .evaluate(&req, &NoCluster, &EvalOptions::default())
        .expect_err("input error");
    assert!(err.0.contains("request.object must be a JSON object"));
}

#[test]
fn the_index_only_evaluates_policies_filed_under_the_resource() {
    let deploy = "  matchConstraints:\n    resourceRules:\n    - apiGroups: [apps]\n      apiVersions: [\"*\"]\n      operations: [\"*\"]\n      resources: [deployments]\n  validations:\n  - expression: \"false\"\n";
    let mut yaml = String::new();
    for i in 0..50 {
        yaml.push_str(&policy(&format!("d{i}"), deploy));
        yaml.push_str("---\n");
    }
    yaml.push_str(&deny_cm_named("cm", ""));
    let set = load(&yaml).expect("loads");
    let req = create(cm("x", json!({})));
    let attrs = matching::Attributes {
        operation: "CREATE",
        group: "",
        version: "v1",
        resource: "configmaps",
        sub_resource: "",
        namespace: "team-a",
        name: "x",
        requested: None,
    };
    assert_eq!(set.matching(&attrs, Stage::Validate).len(), 1);
    assert_eq!(eval(&set, &req).policies.len(), 1);
}

#[test]
fn mutate_stage_annotates_and_is_idempotent() {
    let spec = format!(
        "{CM_RULES}  annotate:\n    safety-gate.dev/last-changed-by: \"request.userInfo.username\"\n    safety-gate.dev/obsolete: null\n"
    );
    let set = load(&policy("trail", &spec)).expect("loads");
    let req = create(cm("x", json!({})));
    let opts = EvalOptions {
        stage: Stage::Mutate,
        ..Default::default()
    };
    let d = set.evaluate(&req, &NoCluster, &opts).expect("ok");
    let patch = d.patch.expect("patched");
    let mut patched = cm("x", json!({}));
    json_patch::patch(&mut patched, &patch).expect("applies");
    assert_eq!(
        patched["metadata"]["annotations"]["safety-gate.dev/last-changed-by"],
        "alice"
    );
    let again = set
        .evaluate(&create(patched), &NoCluster, &opts)
        .expect("ok");
    assert!(again.patch.is_none(), "the patched object needs no patch");
    let del = build_request(RequestSpec {
        operation: Some(Operation::Delete),
        old_object: Some(cm("x", json!({}))),
        ..Default::default()
    })
    .expect("req");
    assert!(
        set.evaluate(&del, &NoCluster, &opts)
            .expect("ok")
            .patch
            .is_none(),
        "never a patch on DELETE"
    );
    assert!(
        eval(&set, &req).policies.is_empty(),
        "mutating policies do not run on /validate"
    );
}

#[test]
fn vap_with_binding_uses_validation_actions() {
    let yaml = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: vap-cm\nspec:\n  failurePolicy: Fail\n  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [v1]\n      operations: [CREATE]\n      resources: [configmaps]\n  validations:\n  - expression: \"object.metadata.name != 'forbidden'\"\n    message: vap says no\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: vap-cm-binding\nspec:\n  policyName: vap-cm\n  validationActions: [Warn, Audit]\n";
    let set = load(yaml).expect("loads");
    let d = eval(&set, &create(cm("forbidden", json!({}))));
    assert!(d.allowed);
    assert_eq!(
        d.warnings,
        vec![
            "Validation failed for ValidatingAdmissionPolicy 'vap-cm' with binding 'vap-cm-binding': vap says no"
                .to_string()
        ]
    );
    assert!(
        d.audit_annotations["validation_failure"]
            .contains("\"validationActions\":[\"Warn\",\"Audit\"]")
    );
    // kube-apiserver stores an unbound policy and evaluates nothing: so do we.
    let unbound = load(yaml.split("---").next().expect("first")).expect("an unbound VAP loads");
    assert!(unbound.is_empty());
    assert!(
        unbound.notes()[0]
            .to_string()
            .contains("no ValidatingAdmissionPolicyBinding names this policy"),
        "{:?}",
        unbound.notes()
    );
}

#[test]
fn load_errors_name_file_line_policy_field_and_position() {
    let yaml = "apiVersion: safety-gate.dev/v1alpha1\nkind: GatePolicy\nmetadata:\n  name: broken\nspec:\n  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [\"*\"]\n      operations: [\"*\"]\n      resources: [configmaps]\n  validations:\n  - expression: \"true\"\n  - expression: \"true\"\n  - expression: \"true\"\n    messageExpression: \"'a' + \"\n";
    let err = load(yaml).expect_err("rejected");
    let e = &err.0[0];
    assert_eq!(e.line, 16, "{err}");
    assert_eq!(e.policy.as_deref(), Some("broken"));
    assert_eq!(
        e.field.as_deref(),
        Some("spec.validations[2].messageExpression")
    );
    assert!(e.message.contains("column"), "{err}");
    assert!(
        err.to_string()
            .contains("p.yaml:16: policy broken: spec.validations[2].messageExpression:"),
        "{err}"
    );
}

#[test]
fn load_rejects_what_can_be_known_at_load() {
    let cases: Vec<(String, &str)> = vec![
        (
            policy(
                "x",
                &format!(
                    "{CM_RULES}  validations:\n  - expression: \"objet.metadata.name == ''\"\n"
                ),
            ),
            "undeclared reference to 'objet'",
        ),
        (
            policy(
                "x",
                &format!(
                    "{CM_RULES}  validations:\n  - expression: \"object.metadata.name.nosuch()\"\n"
                ),
            ),
            "undeclared reference to function 'nosuch'",
        ),
        (
            // kube-apiserver 1.37 declares no `math` library.
            policy(
                "x",
                &format!("{CM_RULES}  validations:\n  - expression: \"math.abs(-1) == 1\"\n"),
            ),
            "undeclared reference to function 'abs'",
        ),
        (
            policy(
                "x",
                &format!(
                    "{CM_RULES}  validations:\n  - expression: \"object.metadata.name.matches('[')\"\n"
                ),
            ),
            "invalid regular expression",
        ),
        (
            policy(
                "x",
                &format!("{CM_RULES}  bogusField: 1\n  validations:\n  - expression: \"true\"\n"),
            ),
            "bogusField",
        ),
        (
            policy(
                "x",
                &format!(
                    "{CM_RULES}  validations:\n  - expression: \"true\"\n  auditAnnotations:\n  - key: has/slash\n    valueExpression: \"'v'\"\n"
                ),
            ),
            "must not contain '/'",
        ),
        (
            policy(
                "x",
                &format!("{CM_RULES}  validations:\n  - expression: \"variables.none\"\n"),
            ),
            "variables.none",
        ),
        (
            policy(
                "x",
                &format!(
                    "{CM_RULES}  validations:\n  - expression: \"lookups.none.size() == 0\"\n"
                ),
            ),
            "lookups.none",
        ),
        (
            policy(
                "x",
                &format!("{CM_RULES}  validations:\n  - expression: \"Foo{{a: 1}} == null\"\n"),
            ),
            "not supported",
        ),
        (
            format!(
                "{}---\n{}",
                deny_cm_named("dup", ""),
                deny_cm_named("dup", "")
            ),
            "duplicate policy name",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n".to_string(),
            "unknown document kind",
        ),
        ("this: is: not: yaml: [\n".to_string(), ""),
        (
            policy(
                "Bad_Name",
                &format!("{CM_RULES}  validations:\n  - expression: \"true\"\n"),
            ),
            "RFC 1123 subdomain",
        ),
        (
            policy("x", "  validations:\n  - expression: \"true\"\n"),
            "at least one rule",
        ),
    ];
    for (yaml, needle) in cases {
        let err = load(&yaml).expect_err(needle);
        assert!(
            err.to_string().contains(needle),
            "expected {needle:?} in {err}"
        );
        assert!(err.0.iter().all(|e| e.line > 0), "{err}");
    }
}

#[test]
fn audit_annotation_keys_are_unique_across_the_set() {
    let a = policy(
        "a",
        &format!(
            "{CM_RULES}  validations:\n  - expression: \"true\"\n  auditAnnotations:\n  - key: shared\n    valueExpression: \"'1'\"\n"
        ),
    );
    let b = policy(
        "b",
        &format!(
            "{CM_RULES}  validations:\n  - expression: \"true\"\n  auditAnnotations:\n  - key: shared\n    valueExpression: \"'2'\"\n"
        ),
    );
    let err = load(&format!("{a}---\n{b}")).expect_err("rejected");
    assert!(err.to_string().contains("keys must be unique"), "{err}");
}

#[test]
fn a_broken_document_rejects_the_whole_set() {
    let good = deny_cm_named("good", "");
    let bad = policy(
        "bad",
        &format!("{CM_RULES}  validations:\n  - expression: \"(\"\n"),
    );
    let err = load(&format!("{good}---\n{bad}")).expect_err("rejected");
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].policy.as_deref(), Some("bad"));
}

#[test]
fn has_tests_presence_and_namespace_reads_are_recorded() {
    let spec = format!(
        "{CM_RULES}  validations:\n  - expression: \"has(object.data.keep) && !has(object.data.other) == false && !has(object.data.gone)\"\n"
    );
    let set = load(&policy("reads", &spec)).expect("loads");
    assert!(!set.policies()[0].reads.namespace_object);
    assert!(eval(&set, &create(cm("x", json!({"keep": "1", "other": "2"})))).allowed);
    assert!(
        !eval(
            &set,
            &create(cm("x", json!({"keep": "1", "other": "2", "gone": "3"})))
        )
        .allowed
    );
    let ns =
        format!("{CM_RULES}  validations:\n  - expression: \"has(namespaceObject.metadata)\"\n");
    assert!(
        load(&policy("ns", &ns)).expect("loads").policies()[0]
            .reads
            .namespace_object
    );
}

/// `n` ClusterRoleBindings shaped like kube-apiserver's bootstrap ones (one
/// subject, the rbac-defaults label and autoupdate annotation), as the live
/// cache stores them (no managedFields).
fn bootstrap_bindings(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            let name = format!("system:controller:controller-{i}");
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {
                    "name": name,
                    "uid": format!("00000000-0000-0000-0000-{i:012}"),
                    "resourceVersion": format!("{}", 100 + i),
                    "creationTimestamp": "2026-01-10T08:00:00Z",
                    "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                    "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}
                },
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": format!("controller-{i}"), "namespace": "kube-system"}]
            })
        })
        .collect()
}

fn kubefed_cluster(name: &str, endpoint: &str) -> serde_json::Value {
    json!({"apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
        "metadata": {"name": name, "namespace": "kube-federation-system"},
        "spec": {"apiEndpoint": endpoint, "secretRef": {"name": format!("{name}-secret")}}})
}

/// Labelling a namespace kubefed.io/managed=true under the shipped policy,
/// with `bindings` ClusterRoleBindings (one of them the host's join identity)
/// and the given KubeFedClusters.
fn attach_namespace_with(bindings: usize, clusters: Vec<serde_json::Value>) -> Decision {
    let set = load(include_str!("../../policies/kubefed-host-conflict.yaml")).expect("loads");
    let mut objects = bootstrap_bindings(bindings);
    objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "kubefed-controller-manager:host-kubesphere"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubefed-controller-manager:host-kubesphere"},
        "subjects": [{"kind": "ServiceAccount", "name": "host-kubesphere", "namespace": "kube-federation-system"}]}));
    objects.extend(clusters);
    let cluster = Snapshot::from_objects(objects);
    let old = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-prod", "labels": {"kubernetes.io/metadata.name": "shop-prod"}}});
    let mut new = old.clone();
    new["metadata"]["labels"]["kubefed.io/managed"] = json!("true");
    let req = build_request(RequestSpec {
        uid: "u1".into(),
        operation: Some(Operation::Update),
        object: Some(new),
        old_object: Some(old),
        user_info: user("alice", &["system:authenticated"]),
        ..Default::default()
    })
    .expect("request");
    set.evaluate(&req, &cluster, &EvalOptions::default())
        .expect("evaluates")
}

#[test]
fn cost_guard_lets_kubefed_policy_run_on_a_real_clusters_bindings() {
    for bindings in [116, 200, 1000] {
        let conflict = attach_namespace_with(
            bindings,
            vec![
                kubefed_cluster("host", "https://10.20.0.10:6443"),
                kubefed_cluster("host-2023", "HTTPS://10.20.0.10:6443/"),
            ],
        );
        assert!(!conflict.allowed, "{bindings} bindings");
        let message = conflict.status.expect("denied").message;
        assert!(
            message.contains("KubeFedClusters host (10.20.0.10:6443), host-2023 (10.20.0.10:6443)")
                && !message.contains("cost"),
            "{bindings} bindings: {message}"
        );
        let healthy = attach_namespace_with(
            bindings,
            vec![kubefed_cluster("host", "https://10.20.0.10:6443")],
        );
        assert!(healthy.allowed, "{bindings} bindings: {:?}", healthy.status);
    }
}

/// A CREATE of a ConfigMap whose data is `data`, under a policy with one validation.
fn cost_of(name: &str, variables: &str, expression: &str, data: serde_json::Value) -> Decision {
    let spec = format!("{CM_RULES}{variables}  validations:\n  - expression: \"{expression}\"\n");
    eval(
        &load(&policy(name, &spec)).expect("loads"),
        &create(cm("big", data)),
    )
}

#[test]
fn cost_guard_bounds_filtered_and_mapped_ranges_by_their_source() {
    let items: Vec<i64> = (0..100_000).collect();
    let cases = [
        (
            "",
            "object.data.items.filter(x, x >= 0).all(x, object.data.items.exists(y, y == x))",
        ),
        (
            "",
            "object.data.items.map(x, x + 1).all(x, object.data.items.exists(y, y == x))",
        ),
        (
            "",
            "object.data.items.all(x, object.data.items.filter(y, y > x).size() >= 0)",
        ),
        (
            "  variables:\n  - name: v\n    expression: \"object.data.items.map(x, x)\"\n",
            "variables.v.all(a, variables.v.exists(b, b == a))",
        ),
        (
            "",
            "(has(object.data.few) ? object.data.few : object.data.items.filter(x, true)).all(a, object.data.items.exists(b, b == a))",
        ),
    ];
    for (variables, expression) in cases {
        let started = Instant::now();
        let d = cost_of("nested", variables, expression, json!({"items": items}));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{expression}: took {:?}",
            started.elapsed()
        );
        let message = d.status.expect(expression).message;
        assert!(
            message.contains(super::runtime_cost::LIMIT_EXCEEDED),
            "{expression}: {message}"
        );
    }
}

#[test]
fn cost_guard_bounds_loop_variables_by_what_lies_inside_their_elements() {
    // One element holding a wide list: what its elements reach is as wide as the list.
    let cells: Vec<i64> = (0..100_000).collect();
    let started = Instant::now();
    let d = cost_of(
        "inner",
        "",
        "object.data.rows.all(r, r.cells.filter(c, true).all(c, r.cells.exists(d, d == c)))",
        json!({"rows": [{"cells": cells}]}),
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        d.status
            .expect("denied")
            .message
            .contains(super::runtime_cost::LIMIT_EXCEEDED)
    );
    // Many narrow elements: nested passes cost the list times the elements'
    // width (about 70 units a row, so 2,000 rows stay under the limit).
    let rows: Vec<_> = (0..2_000).map(|i| json!({"cells": [i, i + 1]})).collect();
    let d = cost_of(
        "inner",
        "",
        "object.data.rows.all(r, r.cells.filter(c, true).all(c, r.cells.exists(d, d == c)))",
        json!({ "rows": rows }),
    );
    assert!(d.allowed, "{:?}", d.status);
}

#[test]
fn cost_guard_sees_lookups_the_expression_reads_first() {
    let spec = format!(
        "{CM_RULES}  lookups:\n  - name: things\n    apiVersion: example.com/v1\n    kind: Thing\n  validations:\n  - expression: \"lookups.things.all(a, lookups.things.exists(b, b.metadata.name == a.metadata.name))\"\n"
    );
    let things: Vec<_> = (0..2000)
        .map(|i| json!({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": format!("t{i}")}}))
        .collect();
    let d = load(&policy("lk", &spec))
        .expect("loads")
        .evaluate(
            &create(cm("x", json!({}))),
            &Snapshot::from_objects(things),
            &EvalOptions::default(),
        )
        .expect("evaluates");
    assert!(
        d.status
            .expect("denied")
            .message
            .contains(super::runtime_cost::LIMIT_EXCEEDED)
    );
}

/// `matches_nothing` (the server's cue to answer without the blocking pool)
/// holds exactly when evaluation has no policy to run: then the decision is
/// the plain allow.
#[test]
fn matches_nothing_only_when_no_policy_applies() {
    let set = load(&deny_cm_named("no-forbidden", "")).expect("loads");
    let configmap = create(cm("forbidden", json!({})));
    assert!(!set.matches_nothing(&configmap, Stage::Validate));
    assert!(!eval(&set, &configmap).allowed);
    let secret = create(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "forbidden", "namespace": "team-a"}}),
    );
    assert!(set.matches_nothing(&secret, Stage::Validate));
    let decision = eval(&set, &secret);
    assert!(decision.allowed && decision.policies.is_empty());
    // The policy validates only: nothing to do on /mutate either.
    assert!(set.matches_nothing(&configmap, Stage::Mutate));
}

/// The rule index is a pre-filter only: over random rules (wildcards,
/// subresources, exclusions, Exact/Equivalent, scopes) and random requests
/// (some converted by kube-apiserver), the policies it yields are exactly
/// those the full rule match selects when it walks every policy.
#[test]
fn the_rule_index_finds_exactly_what_walking_every_policy_finds() {
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(15);
    // Sets of values as kube-apiserver accepts them in one rule (a wildcard
    // stands alone, subresource patterns do not overlap).
    const OPS: &[&[&str]] = &[
        &["CREATE"],
        &["UPDATE"],
        &["DELETE"],
        &["CONNECT"],
        &["*"],
        &["CREATE", "UPDATE"],
        &["UPDATE", "DELETE"],
    ];
    const GROUPS: &[&[&str]] = &[
        &[""],
        &["apps"],
        &["batch"],
        &["*"],
        &["", "apps"],
        &["apps", "batch"],
    ];
    const RESOURCES: &[&[&str]] = &[
        &["deployments"],
        &["pods"],
        &["configmaps"],
        &["*"],
        &["pods/status"],
        &["deployments/scale"],
        &["*/scale"],
        &["deployments/*"],
        &["*/*"],
        &["pods/*"],
        &["deployments", "pods"],
        &["pods", "pods/status"],
        &["*", "deployments/scale"],
        &["*", "*/scale"],
        &["configmaps", "deployments/*"],
        &["deployments", "*/scale"],
    ];
    fn rule(rng: &mut Xoshiro256PlusPlus) -> String {
        let mut list = |from: &[&[&str]]| {
            let quoted: Vec<String> = from[rng.random_range(0..from.len())]
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect();
            format!("[{}]", quoted.join(", "))
        };
        let (operations, groups, resources) = (list(OPS), list(GROUPS), list(RESOURCES));
        let versions = ["[\"*\"]", "[\"v1\"]", "[\"v1beta1\"]"][rng.random_range(0..3)];
        let scope =
            ["", "      scope: Cluster\n", "      scope: Namespaced\n"][rng.random_range(0..3)];
        format!(
            "    - operations: {operations}\n      apiGroups: {groups}\n      apiVersions: {versions}\n      resources: {resources}\n{scope}"
        )
    }
    let mut yaml = String::new();
    for i in 0..300 {
        let mut spec = "  matchConstraints:\n".to_string();
        if let Some(mp) = [None, Some("Exact"), Some("Equivalent")][rng.random_range(0..3)] {
            spec.push_str(&format!("    matchPolicy: {mp}\n"));
        }
        spec.push_str("    resourceRules:\n");
        for _ in 0..rng.random_range(1..=2) {
            spec.push_str(&rule(&mut rng));
        }
        if rng.random_bool(0.3) {
            spec.push_str("    excludeResourceRules:\n");
            spec.push_str(&rule(&mut rng));
        }
        spec.push_str("  validations:\n  - expression: \"true\"\n");
        yaml.push_str(&policy(&format!("p{i}"), &spec));
        yaml.push_str("---\n");
    }
    let set = load(&yaml).expect("the random policies load");
    let (mut requests, mut matched) = (0, 0);
    for _ in 0..5000 {
        let group = ["", "apps", "batch", "extensions"][rng.random_range(0..4)];
        let resource = ["deployments", "pods", "configmaps", "secrets"][rng.random_range(0..4)];
        let sub_resource = ["", "", "status", "scale"][rng.random_range(0..4)];
        let requested = rng.random_bool(0.3).then(|| matching::RequestedResource {
            group: ["", "apps", "extensions"][rng.random_range(0..3)],
            version: ["v1", "v1beta1"][rng.random_range(0..2)],
            resource: ["deployments", "pods", "replicasets"][rng.random_range(0..3)],
            sub_resource: ["", "scale"][rng.random_range(0..2)],
        });
        let attrs = matching::Attributes {
            operation: ["CREATE", "UPDATE", "DELETE", "CONNECT"][rng.random_range(0..4)],
            group,
            version: ["v1", "v1beta1"][rng.random_range(0..2)],
            resource,
            sub_resource,
            namespace: ["", "team-a"][rng.random_range(0..2)],
            name: "x",
            requested,
        };
        let indexed: Vec<&str> = set
            .matching(&attrs, Stage::Validate)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let walked: Vec<&str> = set
            .policies()
            .iter()
            .filter(|p| p.validates() && p.matcher.matches_rules(&attrs))
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(indexed, walked, "{attrs:?}");
        requests += 1;
        matched += usize::from(!walked.is_empty());
    }
    // The comparison means something only if many requests match some policy.
    assert!(
        matched > requests / 4,
        "{matched} of {requests} requests matched"
    );
}

#[test]
fn a_traced_evaluation_records_each_expression_and_an_untraced_one_nothing() {
    let set = load(&policy(
        "traced",
        &format!(
            "{CM_RULES}  matchConditions:\n  - name: not-system\n    expression: \"!request.userInfo.username.startsWith('system:')\"\n  validations:\n  - expression: \"object.metadata.name != 'forbidden'\"\n    messageExpression: \"'no ' + object.metadata.name\"\n  - expression: \"object.data.missing == 'x'\"\n  auditAnnotations:\n  - key: seen\n    valueExpression: \"object.metadata.name\"\n"
        ),
    ))
    .expect("loads");
    let req = create(cm("forbidden", json!({})));
    let traced = set
        .evaluate(
            &req,
            &NoCluster,
            &EvalOptions {
                trace: true,
                ..Default::default()
            },
        )
        .expect("evaluates");
    let untraced = eval(&set, &req);
    // The trace changes nothing in the decision.
    assert_eq!(traced.allowed, untraced.allowed);
    assert_eq!(traced.status, untraced.status);
    assert_eq!(traced.audit_annotations, untraced.audit_annotations);
    assert!(untraced.policies[0].trace.is_empty());

    let trace = &traced.policies[0].trace;
    let phases: Vec<(TracePhase, usize)> = trace.iter().map(|t| (t.phase, t.index)).collect();
    assert_eq!(
        phases,
        vec![
            (TracePhase::MatchCondition, 0),
            (TracePhase::Validation, 0),
            (TracePhase::MessageExpression, 0),
            (TracePhase::Validation, 1),
            (TracePhase::AuditAnnotation, 0),
        ]
    );
    assert_eq!(trace[0].name.as_deref(), Some("not-system"));
    assert_eq!(trace[0].value, Some(json!(true)));
    assert_eq!(trace[1].value, Some(json!(false)));
    assert_eq!(trace[2].value, Some(json!("no forbidden")));
    // The second validation reads a key that is not there: an error, no value.
    assert!(trace[3].value.is_none());
    assert!(
        trace[3]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("missing")),
        "{:?}",
        trace[3]
    );
    assert_eq!(trace[4].name.as_deref(), Some("seen"));
    // Costs are Kubernetes' units: a comparison of a field costs something.
    assert!(trace[1].cost > 0, "{:?}", trace[1]);
}
