//! Differential test, corpus (c) of issue 11: the cel-spec "simple" conformance
//! suite (`../shared/cel-spec-tests`) evaluated in Kubernetes' own CEL
//! environment by the oracle (`e2e/oracle`, CEL mode: `k8s.io/apiserver`'s
//! `environment.MustBaseEnvSet` at the pinned release, StoredExpressions, every
//! binding declared `dyn`, type-checked as kube-apiserver compiles a policy) and
//! through the gate's CEL setup (`safety_gate::policy::cel_env::evaluate`, as
//! `cel_conformance.rs` runs it). The bar is what Kubernetes passes, not the
//! whole spec.
//!
//! Every test is put in one class:
//! - `agree`: Kubernetes and the gate both give the spec's result;
//! - `gate-fails`: Kubernetes gives the spec's result and the gate does not. A
//!   gate bug, unless listed in `tests/differential/cel-known-differences.yaml`
//!   with a reason; an unlisted one fails the test;
//! - `kube-fails`: Kubernetes does not give the spec's result either (mostly
//!   the type checker refusing what the spec runs unchecked, and features not
//!   in Kubernetes' environment): not our bar, counted by whether the gate
//!   passes anyway;
//! - skipped: what `cel_conformance.rs` skips (protobuf, check-only, unknowns),
//!   and tests whose bindings have no JSON form (kube-apiserver binds JSON
//!   objects: no uint, bytes, duration, timestamp, NaN or non-string map keys).
//!
//! Judging Kubernetes' answer: an expected error passes on any error (compile or
//! eval, as the conformance runner judges the gate); an expected value must
//! match the oracle's rendering (`celeval.go`'s `celToJSON`) and, at the top
//! level, its type name. Inside lists and maps the rendering keeps no types
//! (`[1u]` and `[1]` look alike); the top-level type still has to match.
//!
//! The oracle is found as `differential.rs` finds it (`SAFETY_GATE_ORACLE`, else
//! `e2e/build.sh`); without it the test is skipped, except under `CI=true`.
//! `DIFFERENTIAL_CEL_VERBOSE=1` prints every case that is not `agree`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod cel_spec_support;
mod differential_support;

use base64::Engine as _;
use cel_spec_support::{Expected, Outcome, Runnable, classify, run_all, str_field, suite_files};
use differential_support::{ask_oracle, manifest_dir, oracle_binary};
use kube_cel::cel::Value;
use kube_cel::cel::objects::Key;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

const KNOWN: &str = "tests/differential/cel-known-differences.yaml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownGroup {
    reason: String,
    cases: Vec<String>,
}

/// A binding's JSON form as kube-apiserver would hold it, or `None`.
fn to_json(v: &Value) -> Option<Json> {
    Some(match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) if f.is_finite() => json!(f),
        Value::String(s) => json!(s.as_str()),
        Value::List(l) => Json::Array(l.iter().map(to_json).collect::<Option<_>>()?),
        Value::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m.map.iter() {
                let Key::String(k) = k else { return None };
                out.insert(k.to_string(), to_json(v)?);
            }
            Json::Object(out)
        }
        _ => return None,
    })
}

/// The oracle's type name for a value (cel-go `TypeName()`).
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null_type",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Duration(_) => "google.protobuf.Duration",
        Value::Timestamp(_) => "google.protobuf.Timestamp",
        _ => "?",
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs())
}

/// Whether the oracle's rendering `got` shows the value `want`.
fn renders_as(want: &Value, got: &Json) -> bool {
    match want {
        Value::Null => got.is_null(),
        Value::Bool(b) => got.as_bool() == Some(*b),
        Value::Int(i) => got.as_i64() == Some(*i),
        Value::UInt(u) => got.as_u64() == Some(*u),
        Value::Float(f) if f.is_nan() => got.as_str() == Some("NaN"),
        Value::Float(f) if f.is_infinite() => {
            got.as_str() == Some(if *f > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Value::Float(f) => got.as_f64().is_some_and(|g| close(g, *f)),
        Value::String(s) => got.as_str() == Some(s.as_str()),
        Value::Bytes(b) => {
            got.as_str()
                == Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(b.as_slice())
                        .as_str(),
                )
        }
        Value::List(l) => got
            .as_array()
            .is_some_and(|g| g.len() == l.len() && l.iter().zip(g).all(|(w, g)| renders_as(w, g))),
        Value::Map(m) => got.as_object().is_some_and(|g| {
            g.len() == m.map.len()
                && m.map.iter().all(|(k, v)| {
                    let key = match k {
                        Key::Int(i) => i.to_string(),
                        Key::Uint(u) => u.to_string(),
                        Key::Bool(b) => b.to_string(),
                        Key::String(s) => s.to_string(),
                    };
                    g.get(&key).is_some_and(|gv| renders_as(v, gv))
                })
        }),
        Value::Duration(d) => got.as_str().is_some_and(|g| {
            g.strip_suffix('s')
                .and_then(|n| n.parse::<f64>().ok())
                .is_some_and(|secs| {
                    close(
                        secs,
                        d.num_nanoseconds().map_or(f64::NAN, |n| n as f64 / 1e9),
                    )
                })
        }),
        Value::Timestamp(t) => got
            .as_str()
            .and_then(|g| chrono::DateTime::parse_from_rfc3339(g).ok())
            .is_some_and(|g| g == *t),
        _ => false,
    }
}

/// Whether Kubernetes gave the spec's result; the detail when it did not.
fn kube_passes(expected: &Expected, answer: &Json) -> Result<(), String> {
    let error = answer.get("error").and_then(Json::as_str);
    let stage = answer.get("stage").and_then(Json::as_str).unwrap_or("");
    let got = answer.get("value").unwrap_or(&Json::Null);
    let ty = answer.get("type").and_then(Json::as_str).unwrap_or("");
    match (expected, error) {
        (Expected::Error, Some(_)) => Ok(()),
        (Expected::Error, None) => Err(format!("expected an error, got {got} ({ty})")),
        (_, Some(e)) => Err(format!("{stage} error: {}", e.lines().next().unwrap_or(e))),
        (Expected::Type(t), None) if ty == "type" && got.as_str() == Some(t.as_str()) => Ok(()),
        (Expected::Type(t), None) => Err(format!("expected type {t}, got {got} ({ty})")),
        (Expected::Value(want), None) if ty == type_name(want) && renders_as(want, got) => Ok(()),
        (Expected::Value(want), None) => Err(format!("expected {want:?}, got {got} ({ty})")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Agree,
    GateFails,
    KubeFailsGatePasses,
    KubeFailsGateFails,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::Agree => "agree (Kubernetes and the gate both pass)",
            Class::GateFails => "gate-fails (Kubernetes passes, the gate does not)",
            Class::KubeFailsGatePasses => "kube-fails (the gate passes)",
            Class::KubeFailsGateFails => "kube-fails (the gate fails too)",
        }
    }
}

#[test]
fn gate_cel_passes_what_kubernetes_passes_on_the_cel_spec_suite() {
    let dir = manifest_dir().join("../shared/cel-spec-tests");
    assert!(
        dir.is_dir(),
        "{} not found (it sits in ../shared beside the clone)",
        dir.display()
    );
    let Some(oracle) = oracle_binary() else {
        return;
    };
    let verbose = std::env::var_os("DIFFERENTIAL_CEL_VERBOSE").is_some();
    let known_text = std::fs::read_to_string(manifest_dir().join(KNOWN))
        .unwrap_or_else(|e| panic!("differential_cel: {KNOWN}: {e}"));
    let groups: Vec<KnownGroup> = serde_saphyr::from_str(&known_text)
        .unwrap_or_else(|e| panic!("differential_cel: {KNOWN}: {e}"));
    let mut known: BTreeMap<&str, &str> = BTreeMap::new();
    for g in &groups {
        assert!(
            !g.reason.trim().is_empty(),
            "{KNOWN}: a group has no reason"
        );
        for c in &g.cases {
            assert!(
                known.insert(c.as_str(), g.reason.as_str()).is_none(),
                "{KNOWN}: {c} is listed twice"
            );
        }
    }

    // Read the suite; keep what both sides can run.
    let mut ids = Vec::new();
    let mut runnable: Vec<Runnable> = Vec::new();
    let mut inputs = Vec::new();
    let mut skipped: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut all_ids = BTreeSet::new();
    for file in suite_files(&dir) {
        let text = std::fs::read_to_string(&file).expect("read a cel-spec test file");
        let doc: Json = serde_json::from_str(&text).expect("cel-spec test file is JSON");
        for test in doc["tests"].as_array().expect("a `tests` array") {
            let id = format!(
                "{}/{}/{}",
                str_field(test, "file"),
                str_field(test, "section"),
                str_field(test, "name")
            );
            all_ids.insert(id.clone());
            let run = match classify(test) {
                Ok(run) => run,
                Err(why) => {
                    *skipped.entry(why).or_default() += 1;
                    continue;
                }
            };
            let mut bindings = serde_json::Map::new();
            let mut json_form = true;
            for (name, value) in &run.bindings {
                match to_json(value) {
                    Some(j) => {
                        bindings.insert(name.clone(), j);
                    }
                    None => json_form = false,
                }
            }
            if !json_form {
                *skipped
                    .entry("a binding has no JSON form (kube-apiserver binds JSON objects)")
                    .or_default() += 1;
                continue;
            }
            inputs.push(json!({
                "expression": run.expr,
                "bindings": bindings,
                "envType": "StoredExpressions",
            }));
            ids.push(id);
            runnable.push(run);
        }
    }

    let started = Instant::now();
    let answers = ask_oracle(&oracle, inputs);
    let oracle_time = started.elapsed();
    let started = Instant::now();
    let refs: Vec<&Runnable> = runnable.iter().collect();
    let gate = run_all(&refs);
    let gate_time = started.elapsed();

    let mut counts: BTreeMap<Class, usize> = BTreeMap::new();
    let mut unlisted = Vec::new();
    let mut listed_by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    let mut stale = Vec::new();
    let mut oracle_errors = Vec::new();
    // (kube-apiserver refuses to compile and the gate's check refuses too, or not).
    let mut type_check = (0usize, 0usize);
    let mut wrongly_refused = Vec::new();
    for ((id, run), (answer, outcome)) in ids.iter().zip(&runnable).zip(answers.iter().zip(&gate)) {
        if answer.get("stage").and_then(Json::as_str) == Some("input") {
            oracle_errors.push(format!("{id}: {answer}"));
            continue;
        }
        let kube = kube_passes(&run.expected, answer);
        let gate_detail = match outcome {
            Outcome::Passed => None,
            Outcome::Failed(d) => Some(d.replace('\n', " ")),
            Outcome::Skipped(why) => Some(why.to_string()),
        };
        // The load-time type check against kube-apiserver's: it may refuse
        // only what kube-apiserver refuses to compile.
        let kube_refuses = answer.get("stage").and_then(Json::as_str) == Some("compile");
        // On a large stack: the parser recurses deeply on the suite's nesting tests.
        let expr = run.expr.clone();
        let (parses, refused) = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                (
                    safety_gate::policy::cel_env::parse(&expr).is_ok(),
                    safety_gate::policy::cel_env::check_types(&expr).is_err(),
                )
            })
            .expect("thread")
            .join()
            .expect("checks");
        match (kube_refuses, refused) {
            (true, true) => type_check.0 += 1,
            (true, false) => type_check.1 += 1,
            (false, true) if parses => {
                wrongly_refused.push(format!("{id}: {}", run.expr.replace('\n', " ")))
            }
            _ => {}
        }
        let class = match (&kube, &gate_detail) {
            (Ok(()), None) => Class::Agree,
            (Ok(()), Some(_)) => Class::GateFails,
            (Err(_), None) => Class::KubeFailsGatePasses,
            (Err(_), Some(_)) => Class::KubeFailsGateFails,
        };
        *counts.entry(class).or_default() += 1;
        let listed = known.get(id.as_str());
        match (class, listed) {
            (Class::GateFails, Some(reason)) => *listed_by_reason.entry(reason).or_default() += 1,
            (Class::GateFails, None) => unlisted.push(format!(
                "{id}: {} [expr: {}]",
                gate_detail.as_deref().unwrap_or(""),
                run.expr.replace('\n', " ")
            )),
            (_, Some(_)) => stale.push(format!("{id} ({})", class.label())),
            _ => {}
        }
        if verbose && class != Class::Agree {
            println!(
                "{id}: {}; kube: {}; gate: {}",
                class.label(),
                kube.err().unwrap_or_else(|| "passes".into()),
                gate_detail.unwrap_or_else(|| "passes".into())
            );
        }
    }
    for name in known.keys() {
        if !all_ids.contains(*name) {
            stale.push(format!("{name} (names no test of the suite)"));
        } else if !ids.iter().any(|i| i == name) {
            stale.push(format!("{name} (skipped)"));
        }
    }

    println!(
        "differential_cel: {} tests compared (oracle {:.1} s, gate {:.1} s)",
        ids.len(),
        oracle_time.as_secs_f64(),
        gate_time.as_secs_f64()
    );
    for class in [
        Class::Agree,
        Class::GateFails,
        Class::KubeFailsGatePasses,
        Class::KubeFailsGateFails,
    ] {
        println!(
            "  {:5}  {}",
            counts.get(&class).copied().unwrap_or(0),
            class.label()
        );
    }
    for (why, n) in &skipped {
        println!("  {n:5}  skipped: {why}");
    }
    for (reason, n) in &listed_by_reason {
        println!("  gate-fails, listed {n:4}: {reason}");
    }
    if !stale.is_empty() {
        println!(
            "{} entries of {KNOWN} are stale (no longer a gate-fails difference; remove them):",
            stale.len()
        );
        for s in &stale {
            println!("  {s}");
        }
    }
    println!(
        "  type check at load: kube-apiserver refuses {} expressions to compile; the gate refuses {} of them, and nothing kube-apiserver compiles ({} refused wrongly)",
        type_check.0 + type_check.1,
        type_check.0,
        wrongly_refused.len()
    );
    assert!(
        wrongly_refused.is_empty(),
        "the gate's type check refuses what kube-apiserver compiles:\n{}",
        wrongly_refused.join("\n")
    );
    assert!(
        oracle_errors.is_empty(),
        "the oracle could not run {} cases:\n{}",
        oracle_errors.len(),
        oracle_errors.join("\n")
    );
    assert!(
        unlisted.is_empty(),
        "{} tests pass in Kubernetes and fail in the gate, and are not listed in {KNOWN}:\n{}",
        unlisted.len(),
        unlisted.join("\n")
    );
}
