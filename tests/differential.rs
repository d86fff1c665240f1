//! Differential test: safety-gate against kube-apiserver's own
//! ValidatingAdmissionPolicy engine (the oracle, `e2e/oracle`: the real
//! admission plugin of `k8s.io/apiserver` at the release pinned in
//! `e2e/go.mod`), on identical inputs (issue 11).
//!
//! Corpus: `../shared/vap-corpus` (published VAPs nobody on this project
//! wrote). Every PolicyTest case in `cases/*.test.yaml` is run through the gate
//! in-process (the same path as `safety-gate test`) and through the oracle,
//! and the answers are compared: allowed, HTTP code, message, warnings, audit
//! annotations. Before that, every document is checked by kube-apiserver's own
//! validation (the oracle reports rejections) against the gate's loader.
//!
//! Classes of difference:
//! - `loader-rejects`: the gate does not load a suite's documents that
//!   kube-apiserver accepts (one difference per suite; all its cases are
//!   uncompared).
//! - `gate-accepts-invalid`: kube-apiserver rejects a document the gate loads.
//! - `decision`, `code`, `message-framing` (same policy text, different
//!   wrapping), `message`, `warnings`, `audit-annotations`: per case.
//! - `gate-error`: the gate's engine returned an input error.
//! - `oracle-error`: the oracle could not run the case (always a failure).
//!
//! Every difference must be listed in `tests/differential/known-differences.yaml`
//! (suite = case file name without `.test.yaml`, optional case name, class,
//! reason). An unlisted difference fails the test and is printed with a
//! ready-to-paste entry; a listed difference that no longer occurs is printed
//! so the list can shrink, and does not fail the test.
//!
//! The oracle: `e2e/build.sh` builds it (and the rest of the pinned control
//! plane) and prints its folder; `SAFETY_GATE_ORACLE=/path/to/oracle` skips the
//! build. Without Go or when the build fails the test is skipped with a message,
//! except under `CI=true`, where that is a failure. A missing corpus is a skip.
//!
//! `DIFFERENTIAL_VERBOSE=1` prints every difference, listed or not.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use safety_gate::cluster::Snapshot;
use safety_gate::documents::files_in;
use safety_gate::policy::{Decision, EvalOptions, PolicySet};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod differential_support;
use differential_support::{
    Case, ask_oracle, assert_reason, compare_answers, documents, manifest_dir, oracle_binary,
    read_known, request_json, yaml_quote,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownDifference {
    suite: String,
    #[serde(default)]
    case: Option<String>,
    class: String,
    reason: String,
}

#[derive(Debug, Clone)]
struct Difference {
    suite: String,
    /// `None`: the whole suite (load classes).
    case: Option<String>,
    class: &'static str,
    detail: String,
}

/// A case ready for both sides.
struct Prepared {
    suite: String,
    case: String,
    expect: Json,
    oracle_input: Json,
    /// The gate's answer, or why it has none.
    gate: Result<Decision, String>,
}

struct Suite {
    name: String,
    /// The gate's load error, if any.
    gate_load_error: Option<String>,
    cases: Vec<Prepared>,
}

fn prepare_suite(file: &Path) -> Suite {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_end_matches(".test.yaml").to_string())
        .unwrap_or_default();
    let doc = documents(file).into_iter().next().expect("a PolicyTest");
    let spec = &doc["spec"];
    let base = file.parent().unwrap_or(Path::new("."));
    let mut policy_files = Vec::new();
    for p in spec["policies"].as_array().into_iter().flatten() {
        let path = base.join(p.as_str().expect("policy paths are strings"));
        if path.is_dir() {
            policy_files.extend(files_in(&path).expect("a readable directory"));
        } else {
            policy_files.push(path);
        }
    }
    let mut state_files = Vec::new();
    let state_patterns = ["clusterState", "params"]
        .iter()
        .flat_map(|field| spec[field].as_array().into_iter().flatten());
    for p in state_patterns {
        let pattern = base.join(p.as_str().expect("clusterState/params paths are strings"));
        for m in glob::glob(&pattern.to_string_lossy())
            .expect("a glob")
            .flatten()
        {
            state_files.push(m);
        }
    }

    // The oracle's documents: what `kubectl apply -f` of the same files
    // would create.
    let (mut policies, mut bindings, mut params, mut namespaces) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for f in policy_files.iter().chain(&state_files) {
        for d in documents(f) {
            match d.get("kind").and_then(Json::as_str) {
                Some("ValidatingAdmissionPolicy") => policies.push(d),
                Some("ValidatingAdmissionPolicyBinding") => bindings.push(d),
                Some("Namespace") => namespaces.push(d),
                _ => params.push(d),
            }
        }
    }

    let gate_set = PolicySet::load_files(&policy_files).map_err(|e| e.to_string());
    let cluster = Snapshot::load_files(&state_files)
        .unwrap_or_else(|e| panic!("differential: {name}: clusterState: {e}"));
    let cases: Vec<Case> = serde_json::from_value(spec["cases"].clone())
        .unwrap_or_else(|e| panic!("differential: {name}: cases: {e}"));
    let mut prepared = Vec::new();
    for (index, case) in cases.into_iter().enumerate() {
        let request = case
            .request(index, file)
            .unwrap_or_else(|e| panic!("differential: {name}/{}: request: {e}", case.name));
        let gate = match &gate_set {
            Err(e) => Err(e.clone()),
            Ok(set) => set
                .evaluate(&request, &cluster, &EvalOptions::default())
                .map_err(|e| format!("input error: {e}")),
        };
        prepared.push(Prepared {
            suite: name.clone(),
            case: case.name.clone(),
            expect: case.expect.clone(),
            oracle_input: json!({
                "policies": policies,
                "bindings": bindings,
                "params": params,
                "namespaces": namespaces,
                "request": request_json(&request),
            }),
            gate,
        });
    }
    Suite {
        name,
        gate_load_error: gate_set.err(),
        cases: prepared,
    }
}

fn compare(p: &Prepared, d: &Decision, kube: &Json, out: &mut Vec<Difference>) {
    for (class, detail) in compare_answers(d, kube) {
        out.push(Difference {
            suite: p.suite.clone(),
            case: Some(p.case.clone()),
            class,
            detail,
        });
    }
}

#[test]
fn gate_decides_as_kube_apiserver_on_the_vap_corpus() {
    let corpus = manifest_dir().join("../shared/vap-corpus");
    assert!(
        corpus.join("cases").is_dir(),
        "no corpus at {} (it sits in ../shared beside the clone)",
        corpus.display()
    );
    let Some(oracle) = oracle_binary() else {
        return;
    };
    let known_path = manifest_dir().join("tests/differential/known-differences.yaml");
    let known: Vec<KnownDifference> = read_known(&known_path);
    for k in &known {
        assert_reason(
            &known_path,
            &k.reason,
            &format!("{} {:?} {}", k.suite, k.case, k.class),
        );
    }

    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus.join("cases"))
        .expect("cases/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    files.sort();
    let started = Instant::now();
    let suites: Vec<Suite> = files.iter().map(|f| prepare_suite(f)).collect();
    let gate_time = started.elapsed();

    let inputs: Vec<Json> = suites
        .iter()
        .flat_map(|s| s.cases.iter().map(|c| c.oracle_input.clone()))
        .collect();
    let n_cases = inputs.len();
    let started = Instant::now();
    let answers = ask_oracle(&oracle, inputs);
    let oracle_time = started.elapsed();

    let mut differences = Vec::new();
    let mut compared = 0usize;
    let mut uncompared = 0usize;
    let mut expectation_disagreements = Vec::new();
    let mut expectations_checked = 0usize;
    let mut answers = answers.into_iter();
    for suite in &suites {
        let kube: Vec<Json> = answers.by_ref().take(suite.cases.len()).collect();
        // Documents kube-apiserver rejects (the same for every case of the suite).
        let rejected: Vec<String> = kube
            .first()
            .map(|a| {
                a["rejected"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| r["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        match (&suite.gate_load_error, rejected.is_empty()) {
            (Some(e), true) => differences.push(Difference {
                suite: suite.name.clone(),
                case: None,
                class: "loader-rejects",
                detail: format!(
                    "kube-apiserver accepts every document; the gate: {}",
                    e.lines().next().unwrap_or_default()
                ),
            }),
            (None, false) => differences.push(Difference {
                suite: suite.name.clone(),
                case: None,
                class: "gate-accepts-invalid",
                detail: format!("kube-apiserver: {}", rejected.join("; ")),
            }),
            _ => {}
        }
        for (p, k) in suite.cases.iter().zip(&kube) {
            if let Some(e) = k["error"].as_str() {
                differences.push(Difference {
                    suite: p.suite.clone(),
                    case: Some(p.case.clone()),
                    class: "oracle-error",
                    detail: e.to_string(),
                });
                continue;
            }
            if p.expect.get("allowed").and_then(Json::as_bool).is_some()
                && k["rejected"].as_array().is_none_or(|r| r.is_empty())
            {
                expectations_checked += 1;
            }
            if let Some(want) = p.expect.get("allowed").and_then(Json::as_bool)
                && k["rejected"].as_array().is_none_or(|r| r.is_empty())
                && k["allowed"].as_bool() != Some(want)
            {
                expectation_disagreements.push(format!(
                    "{}/{}: expect allowed={want}, kube-apiserver allowed={} {:?}",
                    p.suite, p.case, k["allowed"], k["message"]
                ));
            }
            match &p.gate {
                Err(_) if suite.gate_load_error.is_some() => uncompared += 1,
                Err(e) => differences.push(Difference {
                    suite: p.suite.clone(),
                    case: Some(p.case.clone()),
                    class: "gate-error",
                    detail: e.clone(),
                }),
                Ok(d) => {
                    compared += 1;
                    compare(p, d, k, &mut differences);
                }
            }
        }
    }

    // Listed or new?
    let is_listed = |d: &Difference| {
        known.iter().any(|k| {
            k.suite == d.suite
                && k.class == d.class
                && (k.case.is_none() || k.case.as_deref() == d.case.as_deref())
        })
    };
    let verbose = std::env::var("DIFFERENTIAL_VERBOSE").is_ok_and(|v| v == "1");
    let mut per_class: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut new = Vec::new();
    for d in &differences {
        let listed = is_listed(d);
        let e = per_class.entry(d.class).or_default();
        if listed {
            e.0 += 1;
        } else {
            e.1 += 1;
            new.push(d.clone());
        }
        if verbose {
            println!(
                "  [{}] {} {}{}: {}",
                if listed { "listed" } else { "NEW" },
                d.class,
                d.suite,
                d.case
                    .as_deref()
                    .map(|c| format!(" / {c}"))
                    .unwrap_or_default(),
                d.detail
            );
        }
    }
    let stale: Vec<&KnownDifference> = known
        .iter()
        .filter(|k| {
            !differences.iter().any(|d| {
                k.suite == d.suite
                    && k.class == d.class
                    && (k.case.is_none() || k.case.as_deref() == d.case.as_deref())
            })
        })
        .collect();

    let suites_loading = suites
        .iter()
        .filter(|s| s.gate_load_error.is_none())
        .count();
    println!(
        "differential (vap-corpus): {} suites ({} load in the gate), {n_cases} cases: {compared} compared, {uncompared} not compared (suite does not load in the gate)",
        suites.len(),
        suites_loading
    );
    println!(
        "differential: oracle {:.1} ms/case ({:.2} s for {n_cases}, one process); gate load+evaluate {:.2} s",
        oracle_time.as_secs_f64() * 1000.0 / n_cases.max(1) as f64,
        oracle_time.as_secs_f64(),
        gate_time.as_secs_f64()
    );
    println!("differential: differences by class (listed / new):");
    for (class, (listed, unlisted)) in &per_class {
        println!("  {class:22} {listed:4} / {unlisted}");
    }
    println!(
        "differential: the corpus' `expect.allowed` checked against kube-apiserver's engine: {expectations_checked} cases, {} disagree",
        expectation_disagreements.len()
    );
    if !expectation_disagreements.is_empty() {
        println!(
            "differential: {} case expectation(s) of the corpus disagree with kube-apiserver's engine (informational):",
            expectation_disagreements.len()
        );
        for e in &expectation_disagreements {
            println!("  {e}");
        }
    }
    if !stale.is_empty() {
        println!(
            "differential: {} listed difference(s) no longer occur; remove them from {}:",
            stale.len(),
            known_path.display()
        );
        for k in &stale {
            println!(
                "  - suite: {}{} class: {}",
                k.suite,
                k.case
                    .as_deref()
                    .map(|c| format!(" case: {}", yaml_quote(c)))
                    .unwrap_or_default(),
                k.class
            );
        }
    }
    if !new.is_empty() {
        let mut msg = format!(
            "{} difference(s) from kube-apiserver are not listed in {}:\n",
            new.len(),
            known_path.display()
        );
        for d in &new {
            msg.push_str(&format!(
                "  {} {}{}:\n          {}\n",
                d.class,
                d.suite,
                d.case
                    .as_deref()
                    .map(|c| format!(" / {c}"))
                    .unwrap_or_default(),
                d.detail
            ));
        }
        msg.push_str(
            "\nFix the gate, or list them with a reason a Kubernetes user would accept:\n",
        );
        let mut seen = BTreeSet::new();
        for d in &new {
            let entry = format!(
                "- suite: {}\n{}  class: {}\n  reason: \"FILL IN\"\n",
                d.suite,
                d.case
                    .as_deref()
                    .map(|c| format!("  case: {}\n", yaml_quote(c)))
                    .unwrap_or_default(),
                d.class
            );
            if seen.insert(entry.clone()) {
                msg.push_str(&entry);
            }
        }
        panic!("{msg}");
    }
}
