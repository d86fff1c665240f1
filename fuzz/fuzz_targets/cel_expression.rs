//! CEL text from the fuzzer compiled and evaluated against objects, at each
//! place a policy holds CEL: a ValidatingAdmissionPolicy's validation,
//! messageExpression, matchCondition, variable and auditAnnotation (through
//! the loader and `/validate`, the `catch_unwind` in `policy/evaluate.rs`), a
//! MutatingAdmissionPolicy's JSONPatch and ApplyConfiguration (through
//! `/mutate`, the `catch_unwind` in `policy/mutating/dispatch.rs`), and the
//! tools' `cel_env::evaluate` (its own `catch_unwind`).
//!
//! Input: byte 0 picks the site, byte 1 the object (a PolicyTest fixture or
//! one generated from the bytes after the expression), then the expression
//! up to the first NUL byte, then those bytes. `fuzz/cel.dict` holds CEL
//! tokens; `fuzz/run.sh` seeds the shipped policies' expressions.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use safety_gate::policy::{Mode, PolicySet, cel_env, values::json_to_cel};
use safety_gate_fuzz::shape::Json;
use safety_gate_fuzz::{repo, review_body};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Objects of the kinds the shipped policies read, from the PolicyTest fixtures.
const FIXTURES: &[&str] = &[
    "tests/policies/fixtures/workloads/deployment-english-grammar-web.yaml",
    "tests/policies/fixtures/namespaces/namespace-payments-prod.yaml",
    "tests/policies/fixtures/rbac/user/clusterrole-english-grammar-reader.yaml",
    "tests/policies/fixtures/workloads/pod-english-grammar-web-x2x7k.yaml",
    "tests/policies/fixtures/services/service-english-grammar-web.yaml",
];

fn fixtures() -> &'static [Value] {
    static OBJECTS: OnceLock<Vec<Value>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        FIXTURES
            .iter()
            .map(|path| {
                let path = repo().join(path);
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) => panic!("{}: {e}", path.display()),
                };
                let docs = safety_gate::documents::split_documents(&path, &text);
                match docs.first().map(|d| d.decode::<Value>()) {
                    Some(Ok(v)) => v,
                    _ => panic!("{}: not one object", path.display()),
                }
            })
            .collect()
    })
}

const MATCH_ALL: &str = r#"{"resourceRules":[{"apiGroups":["*"],"apiVersions":["*"],"operations":["*"],"resources":["*"]}]}"#;

fn vap(spec_extra: Value) -> String {
    let mut spec = json!({
        "failurePolicy": "Fail",
        "matchConstraints": serde_json::from_str::<Value>(MATCH_ALL).unwrap_or_default(),
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "fuzz"},
        "spec": spec,
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "fuzz"},
        "spec": {"policyName": "fuzz", "validationActions": ["Deny", "Audit"]},
    });
    format!("{policy}\n---\n{binding}\n")
}

fn map(mutation: Value) -> String {
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": "fuzz"},
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "matchConstraints": serde_json::from_str::<Value>(MATCH_ALL).unwrap_or_default(),
            "mutations": [mutation],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": "fuzz"},
        "spec": {"policyName": "fuzz"},
    });
    format!("{policy}\n---\n{binding}\n")
}

/// The AdmissionReview for `object` (an UPDATE over `old` when given).
fn review(object: &Value, old: Option<&Value>) -> Vec<u8> {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or("ConfigMap");
    let resource = format!("{}s", kind.to_lowercase());
    let mut request = json!({
        "uid": "fuzz",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "name": object["metadata"]["name"].as_str().unwrap_or("fuzz"),
        "namespace": object["metadata"]["namespace"].as_str().unwrap_or("default"),
        "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
        "userInfo": {"username": "fuzz", "groups": ["system:authenticated"]},
        "object": object,
    });
    if let Some(old) = old {
        request["oldObject"] = old.clone();
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
        .to_string()
        .into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let [site, object_choice, rest @ ..] = data else {
        return;
    };
    let (expression, tail) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(expression) = std::str::from_utf8(expression) else {
        return;
    };
    let fixtures = fixtures();
    let choice = usize::from(*object_choice) % (fixtures.len() + 1);
    let object = match fixtures.get(choice) {
        Some(fixture) => fixture.clone(),
        None => match Json::arbitrary(&mut Unstructured::new(tail)) {
            Ok(Json(v)) => v,
            Err(_) => return,
        },
    };
    // Even object bytes: an UPDATE over the Deployment fixture.
    let old = (object_choice % 2 == 0).then(|| fixtures[0].clone());
    let body = review(&object, old.as_ref());
    let text = match site % 8 {
        0 => vap(json!({"validations": [{"expression": expression}]})),
        1 => {
            vap(json!({"validations": [{"expression": "false", "messageExpression": expression}]}))
        }
        2 => vap(json!({
            "matchConditions": [{"name": "fuzz", "expression": expression}],
            "validations": [{"expression": "true"}],
        })),
        3 => vap(json!({
            "variables": [{"name": "v", "expression": expression}],
            "validations": [{"expression": "variables.v == variables.v"}],
        })),
        4 => vap(json!({
            "validations": [{"expression": "true"}],
            "auditAnnotations": [{"key": "fuzz", "valueExpression": expression}],
        })),
        5 => map(json!({"patchType": "JSONPatch", "jsonPatch": {"expression": expression}})),
        6 => map(json!({
            "patchType": "ApplyConfiguration",
            "applyConfiguration": {"expression": expression},
        })),
        _ => {
            let mut bindings = vec![("object".to_string(), json_to_cel(&object))];
            if let Some(old) = &old {
                bindings.push(("oldObject".to_string(), json_to_cel(old)));
            }
            let _ = cel_env::evaluate(expression, bindings);
            return;
        }
    };
    if let Ok(set) = PolicySet::load_texts(&[(PathBuf::from("fuzz-cel.yaml"), text)]) {
        review_body(&set, &body, Mode::Enforce);
    }
});
