//! Shared by the differential tests (`tests/differential.rs`,
//! `tests/differential_generated.rs`, `tests/differential_cel.rs`,
//! `tests/differential_native.rs`): finding or building the oracle
//! (kube-apiserver's own ValidatingAdmissionPolicy plugin, `e2e/oracle`),
//! the AdmissionReview request it is given, running it, and comparing its
//! answer with the gate's decision.
#![allow(dead_code)]

use kube::core::{GroupVersionKind, GroupVersionResource};
use safety_gate::policy::Decision;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
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

/// The oracle binary. Without it the test fails, naming why (Go 1.26 and the
/// Go module proxy build it): a comparison that did not run must not read as
/// passed. `Option` so the callers stay as they are.
pub fn oracle_binary() -> Option<PathBuf> {
    // Once per test binary: its tests run in parallel, and two `e2e/build.sh`
    // runs at once race over the same cache folder.
    static ORACLE: std::sync::Mutex<Option<Option<PathBuf>>> = std::sync::Mutex::new(None);
    let mut found = ORACLE.lock().unwrap_or_else(|e| e.into_inner());
    found.get_or_insert_with(find_oracle).clone()
}

fn find_oracle() -> Option<PathBuf> {
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
        panic!("differential: the oracle (kube-apiserver's own admission code) is required: {why}");
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

pub fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

pub fn yaml_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The differences between the gate's decision and kube-apiserver's answer,
/// as `(class, detail)`: `decision`; when both deny, `code`, `message-framing`
/// (same policy text, different wrapping) or `message`; `warnings`;
/// `audit-annotations`.
pub fn compare_answers(d: &Decision, kube: &Json) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut diff = |class: &'static str, detail: String| out.push((class, detail));
    let k_allowed = kube["allowed"].as_bool().unwrap_or(false);
    let k_message = kube["message"].as_str().unwrap_or("");
    let g_message = d.status.as_ref().map(|s| s.message.as_str()).unwrap_or("");
    if d.allowed != k_allowed {
        diff(
            "decision",
            format!(
                "gate allowed={} kube allowed={k_allowed}; gate message {g_message:?}; kube message {k_message:?}",
                d.allowed
            ),
        );
    } else if !k_allowed {
        let g_code = d.status.as_ref().map(|s| s.code).unwrap_or(200);
        let k_code = kube["code"].as_u64().unwrap_or(0);
        if u64::from(g_code) != k_code {
            diff("code", format!("gate {g_code}, kube {k_code}"));
        }
        if g_message != k_message {
            // The policy's own text is the same; only the wrapping differs
            // (kube-apiserver: `<resource> "<name>" is forbidden:
            // ValidatingAdmissionPolicy '<p>' with binding '<b>' denied request: <text>`).
            let inner = k_message
                .split_once("denied request: ")
                .map(|(_, t)| t)
                .unwrap_or(k_message);
            let class = if g_message.ends_with(&format!(": {inner}")) {
                "message-framing"
            } else {
                "message"
            };
            diff(
                class,
                format!("gate {g_message:?}\n          kube {k_message:?}"),
            );
        }
    }
    let mut g_warnings = d.warnings.clone();
    let mut k_warnings = strings(&kube["warnings"]);
    g_warnings.sort();
    k_warnings.sort();
    if g_warnings != k_warnings {
        diff(
            "warnings",
            format!("gate {g_warnings:?}\n          kube {k_warnings:?}"),
        );
    }
    let k_annotations: BTreeMap<String, String> = kube["auditAnnotations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    if d.audit_annotations != k_annotations {
        diff(
            "audit-annotations",
            format!(
                "gate {:?}\n          kube {k_annotations:?}",
                d.audit_annotations
            ),
        );
    }
    out
}

/// One oracle process kept open: cases go in as JSON lines, answers come
/// back one line each, in order (the oracle flushes after every answer).
pub struct OracleProcess {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl OracleProcess {
    pub fn start(oracle: &Path) -> Self {
        let mut child = Command::new(oracle)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("differential: cannot run {}: {e}", oracle.display()));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        OracleProcess {
            child,
            stdin,
            stdout,
        }
    }

    /// The oracle's answers to `inputs`, one each.
    pub fn ask(&mut self, inputs: &[Json]) -> Vec<Json> {
        let stdin = self.stdin.as_mut().expect("the oracle is running");
        let stdout = &mut self.stdout;
        std::thread::scope(|scope| {
            // Writing and reading at once: the pipes would fill otherwise.
            let writer = scope.spawn(move || {
                let mut w = std::io::BufWriter::new(stdin);
                for input in inputs {
                    let mut line = serde_json::to_vec(input).expect("JSON");
                    line.push(b'\n');
                    if w.write_all(&line).is_err() {
                        return;
                    }
                }
                let _ = w.flush();
            });
            let mut answers = Vec::with_capacity(inputs.len());
            let mut line = String::new();
            while answers.len() < inputs.len() {
                line.clear();
                let n = stdout.read_line(&mut line).expect("oracle output");
                assert!(n > 0, "differential: the oracle stopped answering");
                answers.push(serde_json::from_str(&line).expect("oracle answers are JSON"));
            }
            writer.join().expect("writer thread");
            answers
        })
    }

    /// Closes the input and checks the process ended well.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("oracle exit");
        assert!(status.success(), "differential: the oracle exited {status}");
    }
}

/// One PolicyTest case, as much of it as the differential tests need: the
/// request fields `safety-gate test` reads (src/cli/policytest/spec.rs), the expectation
/// and the mode.
#[derive(Debug, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub operation: Option<kube::core::admission::Operation>,
    #[serde(default)]
    pub user_info: Option<k8s_openapi::api::authentication::v1::UserInfo>,
    #[serde(default)]
    pub object: Option<Json>,
    #[serde(default)]
    pub old_object: Option<Json>,
    #[serde(default)]
    pub request_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub resource: Option<GroupVersionResource>,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub options: Option<Json>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub expect: Json,
}

impl Case {
    /// The case's user, or the one `safety-gate test` uses by default.
    pub fn user(&self) -> k8s_openapi::api::authentication::v1::UserInfo {
        self.user_info
            .clone()
            .unwrap_or_else(|| k8s_openapi::api::authentication::v1::UserInfo {
                username: Some("policy-test".into()),
                groups: Some(vec!["system:authenticated".into()]),
                ..Default::default()
            })
    }

    /// The request `safety-gate test` builds for case number `index` of the
    /// PolicyTest file `file` (objects given as `{file: …}` are read next to it).
    pub fn request(
        &self,
        index: usize,
        file: &Path,
    ) -> Result<safety_gate::policy::Request, String> {
        safety_gate::admission::synthetic::build_request(
            safety_gate::admission::synthetic::RequestSpec {
                uid: self
                    .uid
                    .clone()
                    .unwrap_or_else(|| format!("policytest-{index}")),
                operation: self.operation.clone(),
                object: self.object.as_ref().map(|o| load_object(file, o)),
                old_object: self.old_object.as_ref().map(|o| load_object(file, o)),
                user_info: self.user(),
                name: self.request_name.clone(),
                namespace: self.namespace.clone(),
                kind: self.kind.clone(),
                resource: self.resource.clone(),
                sub_resource: self.sub_resource.clone(),
                dry_run: self.dry_run,
                options: self.options.clone(),
            },
        )
        .map_err(|e| e.to_string())
    }
}

/// Every object in a YAML file, `kind: List` items unwrapped.
pub fn documents(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("differential: {}: {e}", path.display()));
    let mut out = Vec::new();
    for doc in safety_gate::documents::split_documents(path, &text) {
        let value: Json = doc
            .decode()
            .unwrap_or_else(|e| panic!("differential: {}: {e}", path.display()));
        match value {
            Json::Null => {}
            Json::Object(ref m) if m.get("kind").and_then(Json::as_str) == Some("List") => {
                if let Some(Json::Array(items)) = m.get("items") {
                    out.extend(items.iter().cloned());
                }
            }
            v => out.push(v),
        }
    }
    out
}

/// A case's object: inline, or `{file: path}` relative to the PolicyTest file.
pub fn load_object(test_file: &Path, source: &Json) -> Json {
    if let Some(file) = source.get("file").and_then(Json::as_str)
        && source.as_object().is_some_and(|m| m.len() == 1)
    {
        let path = test_file.parent().unwrap_or(Path::new(".")).join(file);
        let mut docs = documents(&path);
        assert_eq!(
            docs.len(),
            1,
            "differential: {}: one object",
            path.display()
        );
        return docs.remove(0);
    }
    source.clone()
}

/// A list of known differences: empty when the file holds only comments,
/// otherwise YAML; panics naming the file when it cannot be read or parsed.
pub fn read_known<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("differential: {}: {e}", path.display()));
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Vec::new();
    }
    serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("differential: {}: {e}", path.display()))
}

/// Every listed difference needs a reason a Kubernetes user would accept.
pub fn assert_reason(path: &Path, reason: &str, entry: &str) {
    assert!(
        !reason.trim().is_empty() && !reason.starts_with("FILL IN"),
        "differential: {}: the entry for {entry} needs a reason",
        path.display()
    );
}

/// The gate's audit annotations under the keys kube-apiserver gives them
/// (`<policy>/<key>`, `validation.policy.admission.k8s.io/validation_failure`;
/// the gate is a webhook, whose keys kube-apiserver prefixes itself), values
/// compared as JSON where they are JSON. The gate's own `evaluation_error`
/// (an error ignored under failurePolicy Ignore) has no kube-apiserver
/// counterpart and is left out.
pub fn audit_difference(
    policy: &str,
    d: &safety_gate::policy::Decision,
    kube: &Json,
) -> Option<String> {
    let as_json = |v: &str| serde_json::from_str::<Json>(v).unwrap_or_else(|_| json!(v));
    let gate: BTreeMap<String, Json> = d
        .audit_annotations
        .iter()
        .filter(|(k, _)| *k != "evaluation_error")
        .map(|(k, v)| {
            let key = match k.as_str() {
                "validation_failure" => {
                    "validation.policy.admission.k8s.io/validation_failure".to_string()
                }
                other => format!("{policy}/{other}"),
            };
            (key, as_json(v))
        })
        .collect();
    let kube: BTreeMap<String, Json> = kube["auditAnnotations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), as_json(v.as_str().unwrap_or_default())))
        .collect();
    (gate != kube).then(|| format!("gate {gate:?}\n          kube {kube:?}"))
}
