//! The cel-spec "simple" conformance suite (`../shared/cel-spec-tests`): reading it,
//! converting its values to `cel::Value`, judging results and running the gate's
//! CEL setup over it with a per-test timeout. Shared by `cel_conformance.rs` and
//! `differential_cel.rs`.

#![allow(dead_code)]

use base64::Engine as _;
use kube_cel::cel::Value;
use kube_cel::cel::objects::{Key, Map};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// A test that runs longer than this counts as failed ("timed out"); the
/// runner abandons its thread and continues with the next test.
pub const PER_TEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum Expected {
    Value(Value),
    /// A type value (`int`, `list`, ...): cel 0.13 has no type values, so no
    /// result can match; the test still runs and counts as failed.
    Type(String),
    Error,
}

pub struct Runnable {
    pub expr: String,
    pub bindings: Vec<(String, Value)>,
    pub expected: Expected,
}

#[derive(Debug)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(&'static str),
}

pub fn suite_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list ../shared/cel-spec-tests")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

pub fn str_field<'a>(test: &'a Json, key: &str) -> &'a str {
    test[key].as_str().unwrap_or("?")
}

/// Decides whether a test runs here, and converts what it needs.
pub fn classify(test: &Json) -> Result<Runnable, &'static str> {
    if test["needs_proto"].as_bool().unwrap_or(false) {
        return Err("needs protobuf messages or enums");
    }
    if test["check_only"].as_bool().unwrap_or(false) {
        return Err("check_only (type-checker test, nothing to evaluate)");
    }
    let expected = &test["expected"];
    let expected = if expected.get("unknown").is_some() {
        return Err("expects an unknown result");
    } else if expected.get("error").is_some() {
        Expected::Error
    } else if let Some(value) = expected.get("value") {
        if let Some(t) = value.get("type").and_then(Json::as_str) {
            Expected::Type(t.to_string())
        } else {
            Expected::Value(to_cel(value).ok_or("expected value has no cel::Value form")?)
        }
    } else {
        return Err("no evaluation result to compare");
    };
    let mut bindings = Vec::new();
    if let Some(map) = test["bindings"].as_object() {
        for (name, value) in map {
            let value = to_cel(value).ok_or("a binding has no cel::Value form")?;
            bindings.push((name.clone(), value));
        }
    }
    Ok(Runnable {
        expr: str_field(test, "expr").to_string(),
        bindings,
        expected,
    })
}

/// Converts the suite's `<value>` JSON to a CEL value; `None` when it has no
/// `cel::Value` form (types, enums, messages, errors, unknowns).
pub fn to_cel(v: &Json) -> Option<Value> {
    let (kind, body) = v.as_object()?.iter().next()?;
    Some(match kind.as_str() {
        "null" => Value::Null,
        "bool" => Value::Bool(body.as_bool()?),
        "int" => Value::Int(body.as_str()?.parse().ok()?),
        "uint" => Value::UInt(body.as_str()?.parse().ok()?),
        "double" => Value::Float(match body.as_str()? {
            "NaN" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            s => s.parse().ok()?,
        }),
        "string" => Value::String(Arc::new(body.as_str()?.to_string())),
        "bytes" => Value::Bytes(Arc::new(
            base64::engine::general_purpose::STANDARD
                .decode(body.as_str()?)
                .ok()?,
        )),
        "list" => Value::List(Arc::new(
            body.as_array()?
                .iter()
                .map(to_cel)
                .collect::<Option<Vec<_>>>()?,
        )),
        "map" => {
            let mut map = HashMap::new();
            for entry in body.as_array()? {
                let pair = entry.as_array()?;
                let key = match to_cel(pair.first()?)? {
                    Value::Int(i) => Key::Int(i),
                    Value::UInt(u) => Key::Uint(u),
                    Value::Bool(b) => Key::Bool(b),
                    Value::String(s) => Key::String(s),
                    _ => return None,
                };
                map.insert(key, to_cel(pair.get(1)?)?);
            }
            Value::Map(Map { map: Arc::new(map) })
        }
        "duration" => {
            let (seconds, nanos) = seconds_nanos(body)?;
            Value::Duration(chrono::Duration::new(seconds, nanos)?)
        }
        "timestamp" => {
            let (seconds, nanos) = seconds_nanos(body)?;
            Value::Timestamp(chrono::DateTime::from_timestamp(seconds, nanos)?.fixed_offset())
        }
        _ => return None,
    })
}

pub fn seconds_nanos(body: &Json) -> Option<(i64, u32)> {
    let seconds = match &body["seconds"] {
        Json::String(s) => s.parse().ok()?,
        Json::Number(n) => n.as_i64()?,
        Json::Null => 0,
        _ => return None,
    };
    let nanos = match &body["nanos"] {
        Json::Number(n) => u32::try_from(n.as_i64()?).ok()?,
        Json::Null => 0,
        _ => return None,
    };
    Some((seconds, nanos))
}

/// CEL equality for the comparison: same type, NaN equal to NaN, structural
/// lists and maps.
pub fn same(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Float(a), Value::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
        (Value::List(a), Value::List(b)) => {
            a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| same(x, y))
        }
        (Value::Map(a), Value::Map(b)) => {
            a.map.len() == b.map.len()
                && a.map
                    .iter()
                    .all(|(k, v)| b.map.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::UInt(a), Value::UInt(b)) => a == b,
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bytes(a), Value::Bytes(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        (Value::Duration(a), Value::Duration(b)) => a == b,
        (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
        _ => false,
    }
}

pub fn judge(result: Result<Value, String>, expected: &Expected) -> Outcome {
    match (result, expected) {
        (Err(_), Expected::Error) => Outcome::Passed,
        (Ok(v), Expected::Error) => Outcome::Failed(format!("expected an error, got {v:?}")),
        (Ok(v), Expected::Value(want)) if same(&v, want) => Outcome::Passed,
        (Ok(v), Expected::Value(want)) => Outcome::Failed(format!("expected {want:?}, got {v:?}")),
        (Err(e), Expected::Value(want)) => {
            Outcome::Failed(format!("expected {want:?}, got error: {e}"))
        }
        (Ok(Value::Opaque(o)), Expected::Type(t))
            if o.downcast_ref::<safety_gate::policy::type_values::TypeValue>()
                .is_some_and(|got| got.0 == *t) =>
        {
            Outcome::Passed
        }
        (Ok(v), Expected::Type(t)) => Outcome::Failed(format!("expected type {t}, got {v:?}")),
        (Err(e), Expected::Type(t)) => {
            Outcome::Failed(format!("expected type {t}, got error: {e}"))
        }
    }
}

pub fn evaluate(expr: &str, bindings: &[(String, Value)]) -> Result<Value, String> {
    // `evaluate` catches interpreter panics; this also covers the parser.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        safety_gate::policy::cel_env::evaluate(expr, bindings.to_vec())
    }))
    .unwrap_or_else(|_| Err("panicked".to_string()))
}

/// Runs every test in order on a worker thread with a large stack (the
/// parser recurses deeply on the suite's nesting tests) and judges the
/// results. A test that does not finish within `PER_TEST_TIMEOUT` is recorded
/// as failed, its thread is left behind, and a new worker continues with the
/// next test.
pub fn run_all(tests: &[&Runnable]) -> Vec<Outcome> {
    type Work = (String, Vec<(String, Value)>);
    let work: Arc<Vec<Work>> = Arc::new(
        tests
            .iter()
            .map(|t| (t.expr.clone(), t.bindings.clone()))
            .collect(),
    );
    // Interpreter panics are expected for some inputs; keep their messages
    // out of the output while the suite runs.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));

    let mut outcomes: Vec<Outcome> = Vec::with_capacity(work.len());
    while outcomes.len() < work.len() {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::clone(&work);
        let start = outcomes.len();
        let spawned = std::thread::Builder::new()
            .name(format!("cel-conformance-{start}"))
            .stack_size(256 * 1024 * 1024)
            .spawn(move || {
                for (expr, bindings) in shared.iter().skip(start) {
                    if tx.send(evaluate(expr, bindings)).is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            std::panic::set_hook(default_hook);
            panic!("cannot spawn the conformance worker thread: {e}");
        }
        loop {
            match rx.recv_timeout(PER_TEST_TIMEOUT) {
                Ok(result) => {
                    let i = outcomes.len();
                    outcomes.push(judge(result, &tests[i].expected));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // This test hangs: abandon the worker, go on after it.
                    outcomes.push(Outcome::Failed(format!(
                        "timed out after {} s",
                        PER_TEST_TIMEOUT.as_secs()
                    )));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if outcomes.len() < work.len() {
                        // The worker died on this test; go on after it.
                        outcomes.push(Outcome::Failed("the worker thread died".into()));
                    }
                    break;
                }
            }
        }
    }
    std::panic::set_hook(default_hook);
    outcomes
}
