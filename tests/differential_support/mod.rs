//! Helpers shared by the differential tests (tests/differential*.rs): the
//! oracle (kube-apiserver's own admission plugin, `e2e/oracle`), how to find or
//! build it, how to ask it, and the AdmissionReview request it is given.

#![allow(dead_code)]

use kube::core::{GroupVersionKind, GroupVersionResource};
use serde_json::{Value as Json, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The oracle binary, or `None` (skip) with the reason printed.
pub fn oracle_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("SAFETY_GATE_ORACLE") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SAFETY_GATE_ORACLE={} is not a file",
            path.display()
        );
        return Some(path);
    }
    let unavailable = |why: String| -> Option<PathBuf> {
        if in_ci() {
            panic!("differential: the oracle is required under CI=true: {why}");
        }
        println!("differential: SKIPPED: {why}");
        None
    };
    let script = manifest_dir().join("e2e/build.sh");
    let started = Instant::now();
    let output = match Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(o) => o,
        Err(e) => return unavailable(format!("cannot run {}: {e}", script.display())),
    };
    if !output.status.success() {
        return unavailable(format!(
            "{} failed ({}); is Go installed? (output above)",
            script.display(),
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(folder) = stdout.lines().last().map(str::trim) else {
        return unavailable(format!("{} printed no folder", script.display()));
    };
    let oracle = Path::new(folder).join("oracle");
    if !oracle.is_file() {
        return unavailable(format!("{} built no oracle", oracle.display()));
    }
    println!(
        "differential: oracle {} (e2e/build.sh took {:.1} s)",
        oracle.display(),
        started.elapsed().as_secs_f64()
    );
    Some(oracle)
}

/// The AdmissionReview request kube-apiserver would send for this request.
pub fn request_json(r: &safety_gate::policy::Request) -> Json {
    let raw = |v: &Option<Box<serde_json::value::RawValue>>| -> Json {
        v.as_ref()
            .map(|r| serde_json::from_str(r.get()).expect("request objects are JSON"))
            .unwrap_or(Json::Null)
    };
    let gvk =
        |k: &GroupVersionKind| json!({"group": k.group, "version": k.version, "kind": k.kind});
    let gvr = |k: &GroupVersionResource| json!({"group": k.group, "version": k.version, "resource": k.resource});
    let mut req = json!({
        "uid": r.uid,
        "kind": gvk(&r.kind),
        "resource": gvr(&r.resource),
        "name": r.name,
        "operation": r.operation,
        "userInfo": r.user_info,
        "object": raw(&r.object),
        "oldObject": raw(&r.old_object),
        "dryRun": r.dry_run,
        "options": raw(&r.options),
    });
    let m = req.as_object_mut().expect("an object");
    if let Some(s) = &r.sub_resource {
        m.insert("subResource".into(), json!(s));
    }
    if let Some(k) = &r.request_kind {
        m.insert("requestKind".into(), gvk(k));
    }
    if let Some(k) = &r.request_resource {
        m.insert("requestResource".into(), gvr(k));
    }
    if let Some(s) = &r.request_sub_resource {
        m.insert("requestSubResource".into(), json!(s));
    }
    if let Some(ns) = &r.namespace {
        m.insert("namespace".into(), json!(ns));
    }
    req
}

/// Runs every input through one oracle process; one answer per input.
pub fn ask_oracle(oracle: &Path, inputs: Vec<Json>) -> Vec<Json> {
    let mut child = Command::new(oracle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("differential: cannot run {}: {e}", oracle.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let n = inputs.len();
    let writer = std::thread::spawn(move || {
        for input in inputs {
            let mut line = serde_json::to_vec(&input).expect("JSON");
            line.push(b'\n');
            if stdin.write_all(&line).is_err() {
                break;
            }
        }
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let mut answers = Vec::with_capacity(n);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("oracle output");
        answers.push(serde_json::from_str(&line).expect("oracle answers are JSON"));
    }
    writer.join().expect("writer thread");
    let status = child.wait().expect("oracle exit");
    assert!(status.success(), "differential: the oracle exited {status}");
    assert_eq!(answers.len(), n, "differential: one answer per case");
    answers
}
