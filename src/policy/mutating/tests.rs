//! MutatingAdmissionPolicy: loading as kube-apiserver validates it, and the
//! object its mutations produce, as kube-apiserver's plugin produces it
//! (the oracle comparison is `tests/differential_map.rs`).

use crate::admission::synthetic::{RequestSpec, build_request};
use crate::cluster::Snapshot;
use crate::policy::{EvalOptions, LoadErrors, Mode, PolicySet, Request, Stage};
use kube::core::admission::Operation;
use serde_json::{Value as Json, json};

fn load(yaml: &str) -> Result<PolicySet, LoadErrors> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.yaml"), yaml).expect("write");
    PolicySet::load_dir(dir.path())
}

/// One policy on ConfigMap CREATE/UPDATE with the given extra spec and mutations, bound once.
fn map(name: &str, extra: &str, mutations: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicy\nmetadata:\n  name: {name}\nspec:\n  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [v1]\n      operations: [CREATE, UPDATE]\n      resources: [configmaps]\n{extra}  mutations:\n{mutations}---\napiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicyBinding\nmetadata:\n  name: {name}\nspec:\n  policyName: {name}\n---\n"
    )
}

fn json_patch(expression: &str) -> String {
    format!("  - patchType: JSONPatch\n    jsonPatch:\n      expression: '{expression}'\n")
}

fn create(object: Json) -> Request {
    build_request(RequestSpec {
        uid: "u1".into(),
        operation: Some(Operation::Create),
        object: Some(object),
        ..Default::default()
    })
    .expect("request")
}

fn cm(data: Json) -> Json {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}, "data": data})
}

/// The object after the decision's patch, or the denial message.
fn mutate(set: &PolicySet, object: Json) -> Result<Json, String> {
    let options = EvalOptions {
        mode: Mode::Enforce,
        stage: Stage::Mutate,
        deadline: None,
        trace: false,
    };
    let d = set
        .evaluate(&create(object.clone()), &Snapshot::empty(), &options)
        .expect("evaluates");
    if !d.allowed {
        return Err(d.status.map(|s| s.message).unwrap_or_default());
    }
    let mut out = object;
    if let Some(p) = &d.patch {
        json_patch::patch(&mut out, p).expect("the patch applies");
    }
    Ok(out)
}

#[test]
fn kube_apiserver_validation_is_applied_with_its_wording() {
    let bad = "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicy\nmetadata:\n  name: m\nspec:\n  failurePolicy: Sometimes\n  reinvocationPolicy: Always\n  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [v1]\n      operations: [DELETE]\n      resources: [configmaps]\n  mutations:\n  - patchType: Merge\n  - patchType: JSONPatch\n";
    let text = load(bad).expect_err("rejected").to_string();
    for expected in [
        "spec.failurePolicy: Unsupported value: \"Sometimes\": supported values: \"Fail\", \"Ignore\"",
        "spec.reinvocationPolicy: Unsupported value: \"Always\": supported values: \"IfNeeded\", \"Never\"",
        "spec.matchConstraints.resourceRules.operations: Unsupported value: \"DELETE\": supported values: \"*\", \"CONNECT\", \"CREATE\", \"UPDATE\"",
        "spec.mutations[0].patchType: Unsupported value: \"Merge\": supported values: \"ApplyConfiguration\", \"JSONPatch\"",
        "spec.mutations[1].jsonPatch: Required value: must be specified when patchType is JSONPatch",
    ] {
        assert!(text.contains(expected), "{expected}\n---\n{text}");
    }
    assert!(
        text.starts_with(&format!("{}", std::path::Path::new("p.yaml").display()))
            || text.contains("p.yaml:"),
        "{text}"
    );
    let params = map(
        "p",
        "  reinvocationPolicy: Never\n  paramKind: {apiVersion: v1, kind: ConfigMap}\n",
        &json_patch("[]"),
    );
    assert!(load(&params).expect_err("rejected").to_string().contains(
        "spec.paramKind: params for MutatingAdmissionPolicy are not supported by safety-gate yet"
    ));
}

#[test]
fn construction_errors_are_load_errors_with_their_line() {
    let yaml = map(
        "m",
        "  reinvocationPolicy: Never\n",
        &json_patch("[JSONPatch{op: \"add\", pth: \"/data/x\"}]"),
    );
    let err = load(&yaml).expect_err("rejected");
    let text = err.to_string();
    assert!(
        text.contains(
            "spec.mutations[0].jsonPatch.expression: compilation failed: undefined field 'pth'"
        ),
        "{text}"
    );
    assert_eq!(err.0[0].line, 16, "{text}");
}

#[test]
fn json_patch_escapes_keys_and_applies_in_order() {
    let yaml = map(
        "m",
        "  reinvocationPolicy: Never\n",
        &format!(
            "{}{}",
            json_patch(
                "[JSONPatch{op: \"add\", path: \"/data/\" + jsonpatch.escapeKey(\"a/b~c\"), value: \"1\"}]"
            ),
            // The second mutation sees the first one's result.
            json_patch(
                "[JSONPatch{op: \"add\", path: \"/data/n\", value: string(size(object.data))}]"
            ),
        ),
    );
    let set = load(&yaml).expect("loads");
    assert_eq!(
        mutate(&set, cm(json!({"x": "y"}))).expect("allowed"),
        cm(json!({"x": "y", "a/b~c": "1", "n": "2"}))
    );
}

#[test]
fn a_failed_test_operation_changes_nothing_and_is_no_error() {
    let yaml = map(
        "m",
        "  reinvocationPolicy: Never\n",
        &json_patch(
            "[JSONPatch{op: \"test\", path: \"/data/x\", value: \"other\"}, JSONPatch{op: \"add\", path: \"/data/y\", value: \"1\"}]",
        ),
    );
    let set = load(&yaml).expect("loads");
    assert_eq!(
        mutate(&set, cm(json!({"x": "y"}))).expect("allowed"),
        cm(json!({"x": "y"}))
    );
}

#[test]
fn an_invalid_patch_is_never_half_applied() {
    let ops = "[JSONPatch{op: \"add\", path: \"/data/y\", value: \"1\"}, JSONPatch{op: \"remove\", path: \"/data/absent\"}]";
    let fail = load(&map("m", "  reinvocationPolicy: Never\n", &json_patch(ops))).expect("loads");
    let message = mutate(&fail, cm(json!({"x": "y"}))).expect_err("denied");
    assert!(
        message.starts_with("policy 'm' with binding 'm' denied request: "),
        "{message}"
    );
    let ignore = load(&map(
        "m",
        "  reinvocationPolicy: Never\n  failurePolicy: Ignore\n",
        &format!(
            "{}{}",
            json_patch(ops),
            json_patch("[JSONPatch{op: \"add\", path: \"/data/z\", value: \"2\"}]")
        ),
    ))
    .expect("loads");
    // Under Ignore the broken mutation changes nothing; the next one still applies.
    assert_eq!(
        mutate(&ignore, cm(json!({"x": "y"}))).expect("allowed"),
        cm(json!({"x": "y", "z": "2"}))
    );
}

#[test]
fn if_needed_policies_see_what_later_policies_changed() {
    // `first` copies data.b into data.a; `second` sets data.b. Only with IfNeeded
    // does `first` run again and see b.
    let first = |policy: &str| {
        map(
            "first",
            &format!("  reinvocationPolicy: {policy}\n"),
            &json_patch(
                "has(object.data.b) ? [JSONPatch{op: \"add\", path: \"/data/a\", value: object.data.b}] : []",
            ),
        )
    };
    let second = map(
        "second",
        "  reinvocationPolicy: Never\n",
        &json_patch("[JSONPatch{op: \"add\", path: \"/data/b\", value: \"B\"}]"),
    );
    let set = load(&format!("{}{second}", first("IfNeeded"))).expect("loads");
    assert_eq!(
        mutate(&set, cm(json!({}))).expect("allowed"),
        cm(json!({"a": "B", "b": "B"}))
    );
    let set = load(&format!("{}{second}", first("Never"))).expect("loads");
    assert_eq!(
        mutate(&set, cm(json!({}))).expect("allowed"),
        cm(json!({"b": "B"}))
    );
}

#[test]
fn apply_configuration_merges_with_the_types_schema() {
    let apply = |expression: &str| {
        format!(
            "  - patchType: ApplyConfiguration\n    applyConfiguration:\n      expression: '{expression}'\n"
        )
    };
    let set = load(&map(
        "m",
        "  reinvocationPolicy: Never\n",
        &apply("Object{metadata: Object.metadata{labels: {\"a\": \"1\"}, finalizers: [\"example.com/f\"]}, data: {\"k\": \"v\"}}"),
    ))
    .expect("loads");
    let mut want = cm(json!({"x": "y", "k": "v"}));
    want["metadata"]["labels"] = json!({"a": "1"});
    // finalizers is a set: the item is added.
    want["metadata"]["finalizers"] = json!(["example.com/f"]);
    assert_eq!(mutate(&set, cm(json!({"x": "y"}))).expect("allowed"), want);

    let undeclared = load(&map(
        "m",
        "  reinvocationPolicy: Never\n",
        &apply("Object{metadata: Object.metadata{nickname: \"x\"}}"),
    ))
    .expect("loads");
    let message = mutate(&undeclared, cm(json!({}))).expect_err("denied");
    assert!(
        message.contains(".metadata.nickname: field not declared in schema"),
        "{message}"
    );

    let mismatch = load(&map(
        "m",
        "  reinvocationPolicy: Never\n",
        &apply("Object{metadata: Object.meta{name: \"x\"}}"),
    ))
    .expect("loads");
    let message = mutate(&mismatch, cm(json!({}))).expect_err("denied");
    assert!(
        message.contains(
            "type mismatch: unexpected type name \"Object.meta\", expected \"Object.metadata\""
        ),
        "{message}"
    );
}

#[test]
fn a_request_past_its_deadline_is_decided_by_the_failure_policy() {
    let patch = json_patch("[JSONPatch{op: \"add\", path: \"/data/y\", value: \"1\"}]");
    let options = EvalOptions {
        mode: Mode::Enforce,
        stage: Stage::Mutate,
        deadline: None,
        trace: false,
    };
    let fail = load(&map("m", "  reinvocationPolicy: Never\n", &patch)).expect("loads");
    let d = fail.deadline_decision(&create(cm(json!({}))), &options);
    assert!(!d.allowed);
    assert!(
        d.status
            .expect("a status")
            .message
            .starts_with("policy 'm' with binding 'm' denied request: evaluation did not finish")
    );
    let ignore = load(&map(
        "m",
        "  reinvocationPolicy: Never\n  failurePolicy: Ignore\n",
        &patch,
    ))
    .expect("loads");
    let d = ignore.deadline_decision(&create(cm(json!({}))), &options);
    assert!(d.allowed && d.patch.is_none());
}

#[test]
fn results_of_a_visibly_wrong_type_are_load_errors() {
    for (mutation, expected) in [
        (
            json_patch("[{\"op\": \"add\", \"path\": \"/data\", \"value\": {}}]"),
            "must evaluate to list(JSONPatch) but got a list with other elements",
        ),
        (
            json_patch("[JSONPatch{op: 1, path: \"/data\"}]"),
            "expected type of field 'op' is 'string' but provided type is 'int'",
        ),
        (
            "  - patchType: ApplyConfiguration\n    applyConfiguration:\n      expression: '{\"data\": {}}'\n".to_string(),
            "must evaluate to Object but got a map",
        ),
    ] {
        let text = load(&map("m", "  reinvocationPolicy: Never\n", &mutation))
            .expect_err("rejected")
            .to_string();
        assert!(text.contains(expected), "{expected}\n{text}");
    }
}

#[test]
fn a_namespace_selector_makes_the_cluster_state_watch_namespaces() {
    let patch = json_patch("[]");
    let plain = load(&map("m", "  reinvocationPolicy: Never\n", &patch)).expect("loads");
    assert!(!plain.cluster_needs().namespaces);
    let selecting = load(&map("m", "  reinvocationPolicy: Never\n", &patch).replace(
        "spec:\n  matchConstraints:\n",
        "spec:\n  matchConstraints:\n    namespaceSelector: {matchLabels: {env: prod}}\n",
    ))
    .expect("loads");
    assert!(selecting.cluster_needs().namespaces);
}
