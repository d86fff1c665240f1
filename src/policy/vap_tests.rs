//! Plain ValidatingAdmissionPolicy documents: loaded as kube-apiserver stores them
//! (its `validation.go` at v1.37.2) and answered as its validating admission
//! policy plugin answers (`k8s.io/apiserver` v0.37.2, `policy/validating`).

use super::*;
use crate::admission::synthetic::{RequestSpec, build_request};
use crate::cluster::Snapshot;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::GroupVersionResource;
use serde_json::json;

fn load(yaml: &str) -> Result<PolicySet, LoadErrors> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.yaml"), yaml).expect("write");
    PolicySet::load_dir(dir.path())
}

const CM_RULES: &str = "  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [v1]\n      operations: [CREATE]\n      resources: [configmaps]\n";

fn vap(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn binding(name: &str, policy: &str, actions: &str) -> String {
    format!(
        "---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: {name}\nspec:\n  policyName: {policy}\n  validationActions: {actions}\n"
    )
}

/// A policy with the given validations, bound once with the given actions.
fn bound(name: &str, validations: &str, actions: &str) -> String {
    format!(
        "{}{}",
        vap(name, &format!("{CM_RULES}  validations:\n{validations}")),
        binding(&format!("{name}-binding"), name, actions)
    )
}

fn create_cm(name: &str) -> Request {
    build_request(RequestSpec {
        uid: "u1".into(),
        object: Some(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "team-a"}}),
        ),
        user_info: UserInfo {
            username: Some("alice".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("request")
}

fn eval(set: &PolicySet, req: &Request) -> Decision {
    set.evaluate(req, &Snapshot::empty(), &EvalOptions::default())
        .expect("evaluates")
}

fn error_text(yaml: &str) -> String {
    let err = load(yaml).expect_err("rejected");
    assert!(err.0.iter().all(|e| e.line > 0), "{err}");
    err.to_string()
}

#[test]
fn policies_read_back_from_a_cluster_load() {
    let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: admissionregistration.k8s.io/v1\n  kind: ValidatingAdmissionPolicy\n  metadata:\n    name: read-back\n    uid: 0b6f0b4e-5c4c-4c0e-9d1e-2f0f3c9b9a11\n    resourceVersion: \"4242\"\n    generation: 3\n    creationTimestamp: \"2025-01-01T00:00:00Z\"\n    namespace: ignored-for-cluster-scoped\n    ownerReferences:\n    - {apiVersion: v1, kind: ConfigMap, name: owner, uid: x}\n    managedFields:\n    - manager: kubectl\n      operation: Apply\n      fieldsV1: {f:spec: {}}\n    finalizers: [example.com/keep]\n  spec:\n    failurePolicy: Fail\n    matchConstraints:\n      matchPolicy: Equivalent\n      namespaceSelector: {}\n      objectSelector: {}\n      resourceRules:\n      - apiGroups: [\"\"]\n        apiVersions: [v1]\n        operations: [CREATE]\n        resources: [configmaps]\n        scope: \"*\"\n    validations:\n    - expression: object.metadata.name != 'bad'\n  status:\n    observedGeneration: 3\n    typeChecking: {}\n    conditions: []\n- apiVersion: admissionregistration.k8s.io/v1\n  kind: ValidatingAdmissionPolicyBinding\n  metadata:\n    name: read-back-binding\n    resourceVersion: \"4243\"\n  spec:\n    policyName: read-back\n    validationActions: [Deny]\nmetadata:\n  resourceVersion: \"\"\n";
    let set = load(yaml).expect("loads");
    assert_eq!(set.len(), 1);
    assert!(!eval(&set, &create_cm("bad")).allowed);
    assert!(eval(&set, &create_cm("good")).allowed);
}

#[test]
fn what_kube_apiserver_accepts_loads() {
    // A name with a 100-character label (a subdomain has no per-label limit), a
    // message ending in the newline of a `>` block (trimmed before the check), a
    // multi-line expression without a message (never required).
    let long = format!("{}.example.com", "a".repeat(100));
    let yaml = bound(
        &long,
        "  - expression: >\n      object.metadata.name !=\n      'bad'\n  - expression: object.metadata.name != 'worse'\n    message: >\n      a message folded by YAML\n",
        "[Deny]",
    );
    let set = load(&yaml).expect("loads");
    let d = eval(&set, &create_cm("bad"));
    assert_eq!(
        d.status.expect("denied").message,
        format!(
            "ValidatingAdmissionPolicy '{long}' with binding '{long}-binding' denied request: failed expression: object.metadata.name != 'bad'"
        ),
        "the default message names the trimmed expression"
    );
    let d = eval(&set, &create_cm("worse"));
    assert!(
        d.status
            .expect("denied")
            .message
            .ends_with("denied request: a message folded by YAML"),
        "the message is trimmed"
    );
}

#[test]
fn unbound_policies_and_dangling_bindings_are_notes() {
    let yaml = format!(
        "{}{}",
        vap(
            "alone",
            &format!("{CM_RULES}  validations:\n  - expression: \"false\"\n")
        ),
        binding("orphan", "not-here", "[Deny]")
    );
    let set = load(&yaml).expect("loads");
    assert!(set.is_empty(), "nothing is evaluated");
    let notes: Vec<String> = set.notes().iter().map(|n| n.to_string()).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("p.yaml:4: note: alone:")));
    assert!(notes.iter().any(|n| {
        n.contains("orphan: binds ValidatingAdmissionPolicy 'not-here', which is not loaded")
    }));
    assert!(eval(&set, &create_cm("x")).allowed);
    // An unbound policy is still checked as kube-apiserver checks it.
    let broken = vap(
        "alone",
        &format!("{CM_RULES}  validations:\n  - expression: \"nosuch\"\n"),
    );
    assert!(error_text(&broken).contains("undeclared reference to 'nosuch'"));
}

#[test]
fn what_kube_apiserver_rejects_is_rejected_with_its_reason() {
    let cases: Vec<(String, &str)> = vec![
        (
            bound(
                "p",
                "  - expression: \"true\"\n    reason: Unauthorized\n",
                "[Deny]",
            ),
            "spec.validations[0].reason: Unsupported value: \"Unauthorized\": supported values: \"Forbidden\", \"Invalid\", \"RequestEntityTooLarge\"",
        ),
        (
            bound(
                "p",
                "  - expression: \"true\"\n    message: \"   \"\n",
                "[Deny]",
            ),
            "spec.validations[0].message: Invalid value: \"   \": must be non-empty if specified",
        ),
        (
            bound(
                "p",
                "  - expression: \"true\"\n    message: \"two\\nlines\"\n",
                "[Deny]",
            ),
            "must not contain line breaks",
        ),
        (
            bound(
                "p",
                "  - expression: \"true\"\n    messageExpression: \"  \"\n",
                "[Deny]",
            ),
            "spec.validations[0].messageExpression: Invalid value: \"  \": must be non-empty if specified",
        ),
        (
            bound("p", "  - expression: \"true\"\n", "[]"),
            "p-binding: spec.validationActions: Required value: at least one validation action is required",
        ),
        (
            bound("p", "  - expression: \"true\"\n", "[Deny, Warn]"),
            "must not contain both Deny and Warn",
        ),
        (
            bound("p", "  - expression: \"true\"\n", "[Deny, Deny]"),
            "spec.validationActions[1]: Duplicate value: \"Deny\"",
        ),
        (
            vap(
                "p",
                "  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [v1]\n      operations: [\"*\", CREATE]\n      resources: [\"*\", configmaps]\n  validations:\n  - expression: \"true\"\n",
            ),
            "if '*' is present, must not specify other resources without subresources",
        ),
        (
            vap(
                "p",
                "  matchConstraints:\n    matchPolicy: Fuzzy\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [v1]\n      operations: [CREATE]\n      resources: [configmaps]\n  validations:\n  - expression: \"true\"\n",
            ),
            "spec.matchConstraints.matchPolicy: Unsupported value: \"Fuzzy\"",
        ),
        (
            vap("p", "  validations:\n  - expression: \"true\"\n"),
            "spec.matchConstraints: Required value",
        ),
        (
            vap("p", CM_RULES),
            "spec.validations: Required value: validations or auditAnnotations must contain at least one item",
        ),
        (
            vap(
                "p",
                &format!(
                    "{CM_RULES}  auditAnnotations:\n  - key: a/b\n    valueExpression: \"'v'\"\n"
                ),
            ),
            "spec.auditAnnotations[0].key: Invalid value: \"a/b\"",
        ),
        (
            vap(
                "p",
                &format!(
                    "{CM_RULES}  variables:\n  - name: not-an-identifier\n    expression: \"1\"\n  validations:\n  - expression: \"true\"\n"
                ),
            ),
            "spec.variables[0].name: Invalid value: \"not-an-identifier\": must be a valid CEL identifier",
        ),
        (
            vap(
                "p",
                &format!(
                    "{CM_RULES}  variables:\n  - name: namespace\n    expression: \"1\"\n  validations:\n  - expression: \"true\"\n"
                ),
            ),
            "spec.variables[0].name: Invalid value: \"namespace\": must be a valid CEL identifier",
        ),
        (
            vap(
                "p",
                &format!(
                    "{CM_RULES}  matchConditions:\n  - name: Bad Name\n    expression: \"true\"\n  validations:\n  - expression: \"true\"\n"
                ),
            ),
            "spec.matchConditions[0].name: Invalid value: \"Bad Name\"",
        ),
        (
            vap(
                "p",
                &format!("{CM_RULES}  validations:\n  - expression: \"params.x == 1\"\n"),
            ),
            "undeclared reference to 'params'",
        ),
        (
            vap(
                "p",
                &format!(
                    "{CM_RULES}  variables:\n  - name: v\n    expression: \" \"\n  validations:\n  - expression: \"true\"\n"
                ),
            ),
            "spec.variables[0].expression: Required value: expression is not specified",
        ),
        (
            vap(
                "p",
                &format!("{CM_RULES}  validations:\n  - expression: \"true\"\n"),
            )
            .replace(
                "metadata:\n  name: p\n",
                "metadata:\n  name: p\n  labels: {app: has space}\n",
            ),
            "metadata.labels: Invalid value: \"has space\"",
        ),
    ];
    for (yaml, needle) in cases {
        let text = error_text(&yaml);
        assert!(text.contains(needle), "expected {needle:?} in\n{text}");
    }
}

#[test]
fn mutating_policies_say_they_are_not_supported_yet() {
    let map = "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicy\nmetadata:\n  name: m\nspec: {}\n";
    // Loaded now (see mutating/tests.rs), and checked as kube-apiserver checks it.
    let text = error_text(map);
    assert!(
        text.contains("spec.reinvocationPolicy: Required value"),
        "{text}"
    );
}

#[test]
fn a_denial_is_worded_and_coded_as_kube_apiserver_does() {
    let yaml = format!(
        "{}{}",
        bound(
            "first",
            "  - expression: object.metadata.name != 'bad'\n    message: first says no\n  - expression: object.metadata.name != 'bad'\n    message: first says no again\n",
            "[Deny]",
        ),
        bound(
            "second",
            "  - expression: object.metadata.name != 'bad'\n    message: second says no\n    reason: Forbidden\n",
            "[Deny, Audit]",
        )
        .replacen("apiVersion", "---\napiVersion", 1)
    );
    let set = load(&yaml).expect("loads");
    let d = eval(&set, &create_cm("bad"));
    let status = d.status.as_ref().expect("denied");
    // Default reason for a VAP: 422 Invalid. Only the first denial is answered.
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "ValidatingAdmissionPolicy 'first' with binding 'first-binding' denied request: first says no"
    );
    assert_eq!(d.denied_by(), vec!["first", "second"]);
    // validation_failure lists only the failures of bindings with Audit, in
    // kube-apiserver's shape.
    let failures: serde_json::Value =
        serde_json::from_str(&d.audit_annotations["validation_failure"]).expect("json");
    assert_eq!(
        failures,
        json!([{"message": "second says no", "policy": "second", "binding": "second-binding", "expressionIndex": 0, "validationActions": ["Deny", "Audit"]}])
    );
    let deny_only = load(&bound(
        "p",
        "  - expression: \"false\"\n    reason: RequestEntityTooLarge\n",
        "[Deny]",
    ))
    .expect("loads");
    let d = eval(&deny_only, &create_cm("x"));
    assert!(d.audit_annotations.is_empty(), "{:?}", d.audit_annotations);
    assert_eq!(d.status.expect("denied").code, 413);
}

#[test]
fn warn_gives_one_warning_per_failed_validation() {
    let set = load(&bound(
        "w",
        "  - expression: \"false\"\n    message: one\n  - expression: \"false\"\n    messageExpression: \"'  two  '\"\n",
        "[Warn]",
    ))
    .expect("loads");
    let d = eval(&set, &create_cm("x"));
    assert!(d.allowed);
    assert_eq!(
        d.warnings,
        vec![
            "Validation failed for ValidatingAdmissionPolicy 'w' with binding 'w-binding': one",
            "Validation failed for ValidatingAdmissionPolicy 'w' with binding 'w-binding': two",
        ]
    );
    assert!(d.audit_annotations.is_empty());
}

#[test]
fn evaluation_errors_of_a_vap_are_422() {
    let set = load(&bound(
        "e",
        "  - expression: \"object.data.missing == 'x'\"\n",
        "[Deny]",
    ))
    .expect("loads");
    let status = eval(&set, &create_cm("x")).status.expect("denied");
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status
            .message
            .starts_with("ValidatingAdmissionPolicy 'e' with binding 'e-binding' denied request: "),
        "{status:?}"
    );
}

#[test]
fn match_policy_exact_ignores_requests_made_through_another_version() {
    let rules = |policy: &str| {
        format!(
            "  matchConstraints:\n    matchPolicy: {policy}\n    resourceRules:\n    - apiGroups: [apps]\n      apiVersions: [v1]\n      operations: [CREATE]\n      resources: [deployments]\n  validations:\n  - expression: \"false\"\n"
        )
    };
    let mut request = build_request(RequestSpec {
        uid: "u1".into(),
        object: Some(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "team-a"}}),
        ),
        ..Default::default()
    })
    .expect("request");
    // Sent to the webhook as apps/v1, called by the client as apps/v1beta2.
    request.request_resource = Some(GroupVersionResource::gvr("apps", "v1beta2", "deployments"));
    for (policy, denied) in [("Exact", false), ("Equivalent", true)] {
        let set = load(&format!(
            "{}{}",
            vap("p", &rules(policy)),
            binding("b", "p", "[Deny]")
        ))
        .expect("loads");
        assert_eq!(!eval(&set, &request).allowed, denied, "{policy}");
    }
}

#[test]
fn a_failing_audit_annotation_denies_whatever_the_actions() {
    let policy = |failure_policy: &str, value: &str| {
        format!(
            "{}{}",
            vap(
                "a",
                &format!(
                    "  failurePolicy: {failure_policy}\n{CM_RULES}  auditAnnotations:\n  - key: k\n    valueExpression: \"{value}\"\n"
                )
            ),
            binding("a-binding", "a", "[Warn]")
        )
    };
    // An error under Fail: denied although the binding only warns, and no warning.
    let set = load(&policy("Fail", "object.data.missing")).expect("loads");
    let d = eval(&set, &create_cm("x"));
    assert!(!d.allowed, "{d:?}");
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    // Under Ignore the error is dropped...
    let set = load(&policy("Ignore", "object.data.missing")).expect("loads");
    assert!(eval(&set, &create_cm("x")).allowed);
    // ...but a value that is not a string or null denies even then.
    let set = load(&policy("Ignore", "1")).expect("loads");
    let status = eval(&set, &create_cm("x")).status.expect("denied");
    assert!(
        status
            .message
            .contains("resulted in unsupported return type"),
        "{status:?}"
    );
    // A blank value is no annotation; others are trimmed.
    let set = load(&policy("Fail", "'  v  '")).expect("loads");
    assert_eq!(eval(&set, &create_cm("x")).audit_annotations["k"], "v");
}

#[test]
fn without_an_api_server_authorizer_checks_are_errors_for_failure_policy_never_allows() {
    let policy =
        |failure_policy: &str| {
            bound(
            "p",
            "  - expression: \"authorizer.group('').resource('pods').check('get').allowed()\"\n",
            "[Deny]",
        )
        .replacen("spec:\n", &format!("spec:\n  failurePolicy: {failure_policy}\n"), 1)
        };
    let set = load(&policy("Fail")).expect("authorizer policies load");
    let d = eval(&set, &create_cm("x"));
    assert!(!d.allowed);
    let status = d.status.expect("denied");
    assert!(
        status
            .message
            .contains("authorizer unavailable: no API server to ask"),
        "{}",
        status.message
    );
    // `authorizer.requestResource` is a variable of its own, not a field.
    let rr = bound(
        "p",
        "  - expression: \"authorizer.requestResource.check('get').allowed()\"\n",
        "[Deny]",
    );
    let d = eval(&load(&rr).expect("loads"), &create_cm("x"));
    assert!(!d.allowed, "{:?}", d.status);
    // Under Ignore the error is ignored as any other: allowed, and never by the check.
    let d = eval(&load(&policy("Ignore")).expect("loads"), &create_cm("x"));
    assert!(d.allowed);
    assert!(
        d.audit_annotations
            .get("evaluation_error")
            .is_some_and(|e| e.contains("authorizer unavailable")),
        "{:?}",
        d.audit_annotations
    );
    // messageExpression has no `authorizer` in kube-apiserver's environment.
    let message = bound(
        "p",
        "  - expression: \"false\"\n    messageExpression: \"authorizer.path('/x').check('get').reason()\"\n",
        "[Deny]",
    );
    assert!(
        error_text(&message).contains("undeclared reference to 'authorizer'"),
        "{}",
        error_text(&message)
    );
}
