//! Differential test for MutatingAdmissionPolicy: safety-gate against
//! kube-apiserver's own mutating policy plugin (the oracle's mutating mode,
//! `e2e/oracle/mutating.go`: `k8s.io/apiserver` v0.37.2 in its admission chain,
//! with reinvocation and the built-in types' OpenAPI models).
//!
//! Corpus: every suite in `tests/differential_map/policies/` (MAP + binding
//! documents) × every request in `tests/differential_map/objects.yaml`. The gate
//! answers on `/mutate` in-process; its patch is applied to the request's object.
//! Compared: which documents load (kube-apiserver's validation), allowed, the
//! HTTP code, the denial's `policy '…' with binding '…' denied request:` framing,
//! and the resulting object, exactly.
//!
//! Classes: `loader` (one side loads what the other refuses), `decision`,
//! `code`, `message-framing`, `object`, `oracle-error` (always a failure).
//! Every difference must be listed in `tests/differential_map/known-differences.yaml`
//! (suite, optional object, class, reason); an unlisted one fails the test and
//! is printed with a ready-to-paste entry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod differential_support;

use differential_support::{
    Case, OracleProcess, assert_reason, documents, load_object, manifest_dir, oracle_binary,
    read_known, request_json,
};
use safety_gate::admission::synthetic::{RequestSpec, build_request};
use safety_gate::cluster::Snapshot;
use safety_gate::documents::files_in;
use safety_gate::policy::{EvalOptions, Mode, PolicySet, Stage};
use serde::Deserialize;
use serde_json::{Value as Json, json};

#[derive(Debug, Deserialize)]
struct Known {
    suite: String,
    #[serde(default)]
    object: Option<String>,
    class: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
struct ObjectCase {
    name: String,
    operation: kube::core::admission::Operation,
    namespace: String,
    resource: kube::core::GroupVersionResource,
    object: Json,
    #[serde(default)]
    old_object: Option<Json>,
}

#[test]
fn mutating_admission_policies_match_kube_apiserver() {
    let Some(oracle) = oracle_binary() else {
        return;
    };
    let root = manifest_dir().join("tests/differential_map");
    let known_path = root.join("known-differences.yaml");
    let known: Vec<Known> = read_known(&known_path);
    for k in &known {
        assert_reason(&known_path, &k.reason, &k.suite);
    }
    let objects: Vec<ObjectCase> = documents(&root.join("objects.yaml"))
        .into_iter()
        .map(|d| serde_json::from_value(d).expect("an object case"))
        .collect();
    let suites = files_in(&root.join("policies")).expect("policies");
    assert!(
        suites.len() >= 8 && objects.len() >= 5,
        "the corpus is there"
    );

    let mut process = OracleProcess::start(&oracle);
    let mut differences: Vec<(String, String, &'static str, String)> = Vec::new();
    let (mut compared, mut mutated) = (0usize, 0usize);
    for suite_file in &suites {
        let suite = suite_file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let docs = documents(suite_file);
        let kind =
            |k: &str| -> Vec<Json> { docs.iter().filter(|d| d["kind"] == k).cloned().collect() };
        let gate = PolicySet::load_files(std::slice::from_ref(suite_file));
        let mut inputs = Vec::new();
        let mut requests = Vec::new();
        for o in &objects {
            let request = build_request(RequestSpec {
                uid: format!("{suite}/{}", o.name),
                operation: Some(o.operation.clone()),
                object: Some(o.object.clone()),
                old_object: o.old_object.clone(),
                user_info: k8s_openapi::api::authentication::v1::UserInfo {
                    username: Some("alice".into()),
                    groups: Some(vec!["system:authenticated".into()]),
                    ..Default::default()
                },
                namespace: Some(o.namespace.clone()),
                resource: Some(o.resource.clone()),
                ..Default::default()
            })
            .expect("a request");
            inputs.push(json!({
                "mutatingPolicies": kind("MutatingAdmissionPolicy"),
                "mutatingBindings": kind("MutatingAdmissionPolicyBinding"),
                "request": request_json(&request),
            }));
            requests.push(request);
        }
        let answers = process.ask(&inputs);
        let kube_rejects = answers
            .first()
            .and_then(|a| a["rejected"].as_array())
            .is_some_and(|r| !r.is_empty());
        let gate = match (gate, kube_rejects) {
            (Ok(set), false) => set,
            (Err(_), true) => {
                compared += 1;
                continue;
            }
            (Ok(_), true) => {
                differences.push((
                    suite.clone(),
                    String::new(),
                    "loader",
                    format!(
                        "kube-apiserver refuses what the gate loads: {}",
                        answers[0]["rejected"]
                    ),
                ));
                continue;
            }
            (Err(e), false) => {
                differences.push((
                    suite.clone(),
                    String::new(),
                    "loader",
                    format!("the gate refuses what kube-apiserver loads: {e}"),
                ));
                continue;
            }
        };
        for ((o, request), kube) in objects.iter().zip(&requests).zip(&answers) {
            assert!(
                kube["error"].is_null(),
                "differential: oracle-error on {suite} × {}: {}",
                o.name,
                kube["error"]
            );
            compared += 1;
            let options = EvalOptions {
                mode: Mode::Enforce,
                stage: Stage::Mutate,
                deadline: None,
                trace: false,
            };
            let d = match gate.evaluate(request, &Snapshot::empty(), &options) {
                Ok(d) => d,
                Err(e) => {
                    differences.push((
                        suite.clone(),
                        o.name.clone(),
                        "decision",
                        format!("gate input error: {e}"),
                    ));
                    continue;
                }
            };
            let mut diff = |class: &'static str, text: String| {
                differences.push((suite.clone(), o.name.clone(), class, text));
            };
            let kube_allowed = kube["allowed"].as_bool().unwrap_or(false);
            if d.allowed != kube_allowed {
                diff(
                    "decision",
                    format!(
                        "gate allowed={} ({:?}), kube-apiserver allowed={kube_allowed} ({})",
                        d.allowed,
                        d.status.as_ref().map(|s| &s.message),
                        kube["message"]
                    ),
                );
                continue;
            }
            if !d.allowed {
                let status = d.status.clone().unwrap_or_default_status();
                if i64::from(status.0) != kube["code"].as_i64().unwrap_or(0) {
                    diff(
                        "code",
                        format!("gate {} / kube-apiserver {}", status.0, kube["code"]),
                    );
                }
                let frame = |m: &str| {
                    m.split(" denied request: ")
                        .next()
                        .unwrap_or("")
                        .to_string()
                };
                let kube_message = kube["message"].as_str().unwrap_or("");
                if frame(&status.1) != frame(kube_message) {
                    diff(
                        "message-framing",
                        format!("gate {:?} / kube-apiserver {kube_message:?}", status.1),
                    );
                }
                continue;
            }
            let mut object = o.object.clone();
            if let Some(patch) = &d.patch {
                json_patch::patch(&mut object, patch).expect("the gate's patch applies");
            }
            if object != o.object {
                mutated += 1;
            }
            if object != kube["object"] {
                diff(
                    "object",
                    format!(
                        "gate {}\n      kube-apiserver {}",
                        serde_json::to_string(&object).unwrap_or_default(),
                        kube["object"]
                    ),
                );
            }
        }
    }
    process.finish();

    let listed = |s: &str, o: &str, c: &str| {
        known
            .iter()
            .any(|k| k.suite == s && k.class == c && k.object.as_deref().is_none_or(|ko| ko == o))
    };
    let verbose = std::env::var("DIFFERENTIAL_VERBOSE").is_ok();
    let mut unlisted = 0;
    for (suite, object, class, text) in &differences {
        let is_listed = listed(suite, object, class);
        if !is_listed || verbose {
            println!(
                "{} {suite} × {object} [{class}]: {text}",
                if is_listed { "listed" } else { "UNLISTED" }
            );
        }
        if !is_listed {
            unlisted += 1;
            println!(
                "- suite: {suite}\n  object: {object}\n  class: {class}\n  reason: \"FILL IN\""
            );
        }
    }
    for k in &known {
        let occurs = differences.iter().any(|(s, o, c, _)| {
            *s == k.suite && *c == k.class && k.object.as_deref().is_none_or(|ko| ko == o)
        });
        if !occurs {
            println!(
                "no longer occurs (remove from the list): {} {:?} {}",
                k.suite, k.object, k.class
            );
        }
    }
    println!(
        "differential_map: {compared} compared ({mutated} objects mutated), {} differences, {unlisted} unlisted",
        differences.len()
    );
    assert!(mutated > 10, "the corpus mutates objects");
    assert_eq!(unlisted, 0, "unlisted differences (see above)");
}

/// (code, message) of a denial.
trait StatusParts {
    fn unwrap_or_default_status(self) -> (u16, String);
}

impl StatusParts for Option<safety_gate::policy::DenyStatus> {
    fn unwrap_or_default_status(self) -> (u16, String) {
        self.map(|s| (s.code, s.message))
            .unwrap_or((0, String::new()))
    }
}

/// The PolicyTest suites of `tests/policies/map/`: every `/mutate` case gives
/// the same decision and the same object as kube-apiserver's plugin.
#[test]
fn mutating_policy_test_cases_match_kube_apiserver() {
    let Some(oracle) = oracle_binary() else {
        return;
    };
    let dir = manifest_dir().join("tests/policies/map");
    let mut process = OracleProcess::start(&oracle);
    let mut compared = 0;
    let mut problems = Vec::new();
    for file in files_in(&dir).expect("tests/policies/map") {
        for suite in documents(&file)
            .into_iter()
            .filter(|d| d["kind"] == "PolicyTest")
        {
            let policy_files: Vec<_> = suite["spec"]["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
                .map(|p| dir.join(p))
                .collect();
            let docs: Vec<Json> = policy_files.iter().flat_map(|f| documents(f)).collect();
            let kind = |k: &str| -> Vec<Json> {
                docs.iter().filter(|d| d["kind"] == k).cloned().collect()
            };
            let gate = PolicySet::load_files(&policy_files).expect("the suite's policies load");
            let cases: Vec<Case> =
                serde_json::from_value(suite["spec"]["cases"].clone()).expect("cases");
            for (index, case) in cases.iter().enumerate() {
                let endpoint = case_endpoint(&suite["spec"]["cases"][index]);
                if endpoint != "mutate" {
                    continue;
                }
                let request = case.request(index, &file).expect("a request");
                let kube = &process.ask(&[json!({
                    "mutatingPolicies": kind("MutatingAdmissionPolicy"),
                    "mutatingBindings": kind("MutatingAdmissionPolicyBinding"),
                    "request": request_json(&request),
                })])[0];
                assert!(kube["error"].is_null(), "oracle-error: {}", kube["error"]);
                let options = EvalOptions {
                    mode: Mode::Enforce,
                    stage: Stage::Mutate,
                    deadline: None,
                    trace: false,
                };
                let d = gate
                    .evaluate(&request, &Snapshot::empty(), &options)
                    .expect("evaluates");
                compared += 1;
                if Some(d.allowed) != kube["allowed"].as_bool() {
                    problems.push(format!(
                        "{}: allowed {} / kube-apiserver {}",
                        case.name, d.allowed, kube
                    ));
                    continue;
                }
                if d.allowed {
                    let mut object = case
                        .object
                        .as_ref()
                        .map(|o| load_object(&file, o))
                        .unwrap_or(Json::Null);
                    if let Some(p) = &d.patch {
                        json_patch::patch(&mut object, p).expect("the patch applies");
                    }
                    if object != kube["object"] {
                        problems.push(format!(
                            "{}: object {object} / kube-apiserver {}",
                            case.name, kube["object"]
                        ));
                    }
                }
            }
        }
    }
    process.finish();
    println!("differential_map: {compared} PolicyTest cases compared");
    assert!(compared >= 6, "the PolicyTest suites have /mutate cases");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn case_endpoint(case: &Json) -> &str {
    case["endpoint"].as_str().unwrap_or("validate")
}
