//! Proof of one meaning (issue 14 item 2, issue 11 corpus (a)): every shipped
//! GatePolicy that `safety-gate manifests --native` renders decides, inside
//! kube-apiserver's own ValidatingAdmissionPolicy plugin (the oracle,
//! `e2e/oracle`), as the gate decides with the GatePolicy.
//!
//! For every rendered policy and every PolicyTest case of `tests/policies/`
//! whose suite loads that policy, the case runs through the gate (the
//! GatePolicy's file alone, in-process as `safety-gate test` runs it, at the
//! validating stage: the native policy runs where `/validate` does) and through
//! the oracle with the rendered native documents for the case's mode (`mode:
//! Audit` → rendered with `--mode dry-run`). Compared:
//! - `decision`: allowed;
//! - `code`: the HTTP code of a denial;
//! - `message`: the policy's text (the gate's after `<policy>: `,
//!   kube-apiserver's after `denied request: `; the framing differs by design);
//! - `warnings`: the policy's texts (`[dry-run] <policy>: ` and
//!   `Validation failed for ValidatingAdmissionPolicy '…' with binding '…': `
//!   removed; kube-apiserver warns once per failed validation, the gate once per
//!   policy with the messages joined by `; `);
//! - `audit`: the `validation_failure` messages of bindings with `Audit`
//!   (the gate's Audit-action failures, or Deny in dry-run mode), the
//!   `break_glass` record (the gate's JSON vs the break-glass companion's
//!   `validation_failure` entries), the break-glass audit annotation of the
//!   native policy whenever the gate records a break-glass, and the policy's
//!   own audit annotations (`<key>` vs `<native policy>/<key>`).
//!
//! Suites of policies that do not render are reported, not compared. A
//! difference fails the test unless `tests/differential/native-known-differences.yaml`
//! lists it (policy, suite, optional case, class, reason); listed entries
//! that no longer occur are printed. The oracle is found as in
//! tests/differential.rs (`SAFETY_GATE_ORACLE`, else `e2e/build.sh`; a
//! failure under `CI=true`). `DIFFERENTIAL_VERBOSE=1` prints every difference.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod differential_support;

use differential_support::{
    Case, ask_oracle, assert_reason, documents, manifest_dir, oracle_binary, read_known,
    request_json,
};
use safety_gate::cluster::Snapshot;
use safety_gate::deploy::native::{
    NativePolicy, break_glass_key, break_glass_name, native_name, render_native,
};
use safety_gate::documents::files_in;
use safety_gate::policy::{Decision, EvalOptions, Mode, PolicySet, Stage};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownDifference {
    policy: String,
    suite: String,
    #[serde(default)]
    case: Option<String>,
    class: String,
    reason: String,
}

#[derive(Debug, Clone)]
struct Difference {
    policy: String,
    suite: String,
    case: String,
    class: &'static str,
    detail: String,
}

/// One side's answer, reduced to what both can say.
#[derive(Debug, Default, PartialEq)]
struct View {
    allowed: bool,
    code: u16,
    message: String,
    warnings: Vec<String>,
    /// `validation_failure` messages of Audit bindings.
    audit_failures: Vec<String>,
    /// Break-glass records, as the gate's warning text.
    break_glass: Vec<String>,
    /// The policy's own audit annotations.
    annotations: BTreeMap<String, String>,
}

fn gate_view(policy: &str, d: &Decision) -> View {
    let strip = |m: &str| {
        m.strip_prefix(&format!("{policy}: "))
            .unwrap_or(m)
            .to_string()
    };
    let mut v = View {
        allowed: d.allowed,
        code: d.status.as_ref().map(|s| s.code).unwrap_or(200),
        message: d
            .status
            .as_ref()
            .map(|s| strip(&s.message))
            .unwrap_or_default(),
        ..View::default()
    };
    for w in &d.warnings {
        if w.starts_with("[break-glass] ") {
            v.warnings.push(w.clone());
        } else {
            v.warnings
                .push(strip(w.strip_prefix("[dry-run] ").unwrap_or(w)));
        }
    }
    for (key, value) in &d.audit_annotations {
        match key.as_str() {
            "validation_failure" => {
                let entries: Vec<Json> = serde_json::from_str(value).unwrap_or_default();
                for e in entries {
                    // A Deny failure is recorded only where the binding audits
                    // (dry-run mode: Deny becomes Warn + Audit).
                    if e["action"] == "Audit" || d.allowed {
                        v.audit_failures
                            .push(e["message"].as_str().unwrap_or_default().to_string());
                    }
                }
            }
            "break_glass" => {
                let entries: Vec<Json> = serde_json::from_str(value).unwrap_or_default();
                for e in entries {
                    v.break_glass.push(format!(
                        "[break-glass] {}: bypassed by {} through exemption '{}': {}",
                        e["policy"].as_str().unwrap_or_default(),
                        e["user"].as_str().unwrap_or_default(),
                        e["exemption"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default()
                    ));
                }
            }
            "evaluation_error" => {}
            _ => {
                v.annotations.insert(key.clone(), value.clone());
            }
        }
    }
    v.warnings.sort();
    v.audit_failures.sort();
    v.break_glass.sort();
    v
}

fn kube_view(policy: &str, k: &Json) -> (View, Option<String>) {
    let main = native_name(policy);
    let companion = break_glass_name(policy);
    let mut v = View {
        allowed: k["allowed"].as_bool().unwrap_or(false),
        code: k["code"].as_u64().unwrap_or(0) as u16,
        ..View::default()
    };
    if !v.allowed {
        let m = k["message"].as_str().unwrap_or_default();
        v.message = m
            .split_once("denied request: ")
            .map(|(_, t)| t)
            .unwrap_or(m)
            .to_string();
    } else {
        v.code = 200;
    }
    // One warning per failed validation; the gate joins a policy's messages.
    let mut per_policy: BTreeMap<bool, Vec<String>> = BTreeMap::new();
    for w in k["warnings"].as_array().into_iter().flatten() {
        let w = w.as_str().unwrap_or_default();
        let (is_companion, text) = if let Some(t) = w.strip_prefix(&format!(
            "Validation failed for ValidatingAdmissionPolicy '{companion}' with binding '{companion}': "
        )) {
            (true, t)
        } else if let Some(t) = w.strip_prefix(&format!(
            "Validation failed for ValidatingAdmissionPolicy '{main}' with binding '{main}': "
        )) {
            (false, t)
        } else {
            (false, w)
        };
        let list = per_policy.entry(is_companion).or_default();
        if !list.iter().any(|x| x == text) {
            list.push(text.to_string());
        }
    }
    for (_, list) in per_policy {
        v.warnings.push(list.join("; "));
    }
    let mut break_glass_annotation = None;
    for (key, value) in k["auditAnnotations"].as_object().into_iter().flatten() {
        let value = value.as_str().unwrap_or_default();
        if key == "validation.policy.admission.k8s.io/validation_failure" {
            let entries: Vec<Json> = serde_json::from_str(value).unwrap_or_default();
            for e in entries {
                let message = e["message"].as_str().unwrap_or_default().to_string();
                if e["policy"] == companion.as_str() {
                    v.break_glass.push(message);
                } else {
                    v.audit_failures.push(message);
                }
            }
        } else if let Some(k) = key.strip_prefix(&format!("{main}/")) {
            if k == break_glass_key(policy) {
                break_glass_annotation = Some(value.to_string());
            } else {
                v.annotations.insert(k.to_string(), value.to_string());
            }
        } else {
            v.annotations.insert(key.clone(), value.to_string());
        }
    }
    v.warnings.sort();
    v.audit_failures.sort();
    v.break_glass.sort();
    (v, break_glass_annotation)
}

/// Equal, or the gate's copy is kube-apiserver's cut to the gate's 256-character
/// warning limit.
fn same_text(gate: &str, kube: &str) -> bool {
    gate == kube
        || gate
            .strip_suffix("...")
            .is_some_and(|g| gate.chars().count() == 256 && kube.starts_with(g))
}

fn same_texts(gate: &[String], kube: &[String]) -> bool {
    gate.len() == kube.len() && gate.iter().zip(kube).all(|(g, k)| same_text(g, k))
}

struct Run {
    policy: String,
    suite: String,
    case: String,
    user: String,
    gate: Decision,
    input: Json,
}

fn native_documents(r: &NativePolicy) -> (Vec<Json>, Vec<Json>) {
    let mut policies = Vec::new();
    let mut bindings = Vec::new();
    for o in &r.objects {
        if o["kind"] == "ValidatingAdmissionPolicy" {
            policies.push(o.clone());
        } else {
            bindings.push(o.clone());
        }
    }
    (policies, bindings)
}

#[test]
fn native_policies_decide_as_the_gate() {
    let root = manifest_dir();
    let set = PolicySet::load_dir(&root.join("policies")).expect("the shipped policies load");
    let enforce = render_native(&set, Mode::Enforce);
    let audit = render_native(&set, Mode::DryRun);
    for n in &enforce.not_rendered {
        println!("differential-native: not compared: {n}");
    }
    assert!(
        !enforce.rendered.is_empty(),
        "no shipped policy renders natively"
    );

    // The rendered documents load in the gate as plain VAP documents.
    let dir = std::env::temp_dir().join(format!("safety-gate-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for r in &enforce.rendered {
        std::fs::write(dir.join(&r.file_name), &r.yaml).expect("write");
    }
    let reloaded = PolicySet::load_dir(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let reloaded = reloaded.unwrap_or_else(|e| panic!("rendered documents do not load: {e}"));
    assert_eq!(
        reloaded.len(),
        enforce
            .rendered
            .iter()
            .map(|r| r.objects.len() / 2)
            .sum::<usize>()
    );

    let Some(oracle) = oracle_binary() else {
        return;
    };
    let known_path = root.join("tests/differential/native-known-differences.yaml");
    let known: Vec<KnownDifference> = read_known(&known_path);
    for k in &known {
        assert_reason(
            &known_path,
            &k.reason,
            &format!("{} {} {:?} {}", k.policy, k.suite, k.case, k.class),
        );
    }

    let mut suite_files: Vec<PathBuf> = files_in(&root.join("tests/policies"))
        .expect("tests/policies")
        .into_iter()
        .filter(|p| p.parent() == Some(&root.join("tests/policies")))
        .collect();
    suite_files.sort();
    let mut runs = Vec::new();
    let mut not_compared = 0usize;
    for file in &suite_files {
        let Some(doc) = documents(file)
            .into_iter()
            .find(|d| d["kind"] == "PolicyTest")
        else {
            continue;
        };
        let suite = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let spec = &doc["spec"];
        let base = file.parent().unwrap_or(Path::new("."));
        let mut policy_files = Vec::new();
        for p in spec["policies"].as_array().into_iter().flatten() {
            let path = base.join(p.as_str().expect("a path"));
            if path.is_dir() {
                policy_files.extend(files_in(&path).expect("a directory"));
            } else {
                policy_files.push(path);
            }
        }
        let policy_files: Vec<PathBuf> = policy_files
            .iter()
            .map(|p| p.canonicalize().expect("a policy file"))
            .collect();
        let mut state_files = Vec::new();
        for p in spec["clusterState"].as_array().into_iter().flatten() {
            let pattern = base.join(p.as_str().expect("a path"));
            state_files.extend(
                glob::glob(&pattern.to_string_lossy())
                    .expect("glob")
                    .flatten(),
            );
        }
        let cluster = Snapshot::load_files(&state_files).expect("clusterState");
        let namespaces: Vec<Json> = state_files
            .iter()
            .flat_map(|f| documents(f))
            .filter(|d| d["kind"] == "Namespace")
            .collect();
        let cases: Vec<Case> = serde_json::from_value(spec["cases"].clone())
            .unwrap_or_else(|e| panic!("{suite}: cases: {e}"));
        let suite_mode = spec["mode"].as_str().map(str::to_string);
        let in_suite = |p: &safety_gate::policy::Policy| {
            p.file
                .canonicalize()
                .is_ok_and(|f| policy_files.contains(&f))
        };
        for p in set.policies().iter().filter(|p| in_suite(p)) {
            let Some(native_enforce) = enforce.rendered.iter().find(|r| r.policy == p.name) else {
                not_compared += cases.len();
                continue;
            };
            let native_audit = audit
                .rendered
                .iter()
                .find(|r| r.policy == p.name)
                .expect("renders in both modes");
            let gate_set = PolicySet::load_files(std::slice::from_ref(&p.file))
                .expect("the policy file loads");
            for (index, case) in cases.iter().enumerate() {
                let audit_mode = case.mode.as_deref().or(suite_mode.as_deref()) == Some("Audit");
                let user_info = case.user();
                let request = case
                    .request(index, file)
                    .unwrap_or_else(|e| panic!("{suite}/{}: {e}", case.name));
                let gate = gate_set
                    .evaluate(
                        &request,
                        &cluster,
                        &EvalOptions {
                            mode: if audit_mode {
                                Mode::DryRun
                            } else {
                                Mode::Enforce
                            },
                            stage: Stage::Validate,
                            deadline: None,
                            trace: false,
                        },
                    )
                    .unwrap_or_else(|e| panic!("{suite}/{}: {e}", case.name));
                let native = if audit_mode {
                    native_audit
                } else {
                    native_enforce
                };
                let (policies, bindings) = native_documents(native);
                runs.push(Run {
                    policy: p.name.clone(),
                    suite: suite.clone(),
                    case: case.name.clone(),
                    user: user_info.username.clone().unwrap_or_default(),
                    gate,
                    input: json!({
                        "policies": policies,
                        "bindings": bindings,
                        "params": [],
                        "namespaces": namespaces,
                        "request": request_json(&request),
                    }),
                });
            }
        }
    }

    let answers = ask_oracle(&oracle, runs.iter().map(|r| r.input.clone()).collect());
    let mut differences = Vec::new();
    let mut agree = 0usize;
    for (r, k) in runs.iter().zip(&answers) {
        let before = differences.len();
        let mut diff = |class: &'static str, detail: String| {
            differences.push(Difference {
                policy: r.policy.clone(),
                suite: r.suite.clone(),
                case: r.case.clone(),
                class,
                detail,
            })
        };
        if let Some(e) = k["error"].as_str() {
            diff("oracle-error", e.to_string());
            continue;
        }
        if let Some(rej) = k["rejected"].as_array().filter(|a| !a.is_empty()) {
            let first: String = rej
                .iter()
                .map(|r| r["message"].as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" | ")
                .chars()
                .take(400)
                .collect();
            diff(
                "rejected",
                format!("kube-apiserver rejects the rendered documents: {first}"),
            );
            continue;
        }
        let g = gate_view(&r.policy, &r.gate);
        let (kv, bg_annotation) = kube_view(&r.policy, k);
        if g.allowed != kv.allowed {
            diff(
                "decision",
                format!(
                    "gate allowed={} {:?}; kube allowed={} {:?}",
                    g.allowed, g.message, kv.allowed, kv.message
                ),
            );
        } else if !g.allowed {
            if g.code != kv.code {
                diff("code", format!("gate {}, kube {}", g.code, kv.code));
            }
            if g.message != kv.message {
                diff(
                    "message",
                    format!("gate {:?}\n          kube {:?}", g.message, kv.message),
                );
            }
        }
        if !same_texts(&g.warnings, &kv.warnings) {
            diff(
                "warnings",
                format!("gate {:?}\n          kube {:?}", g.warnings, kv.warnings),
            );
        }
        if g.audit_failures != kv.audit_failures
            || !same_texts(&g.break_glass, &kv.break_glass)
            || g.annotations != kv.annotations
            || (!g.break_glass.is_empty()
                && !bg_annotation
                    .as_deref()
                    .is_some_and(|a| a.contains(&r.user)))
        {
            diff(
                "audit",
                format!(
                    "gate {:?} {:?} {:?}\n          kube {:?} {:?} {:?} (break-glass annotation {bg_annotation:?})",
                    g.audit_failures,
                    g.break_glass,
                    g.annotations,
                    kv.audit_failures,
                    kv.break_glass,
                    kv.annotations
                ),
            );
        }
        if differences.len() == before {
            agree += 1;
        }
    }

    let matches = |k: &KnownDifference, d: &Difference| {
        k.policy == d.policy
            && k.suite == d.suite
            && k.class == d.class
            && k.case.as_deref().is_none_or(|c| c == d.case)
    };
    let verbose = std::env::var("DIFFERENTIAL_VERBOSE").is_ok_and(|v| v == "1");
    let mut per_class: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut new = Vec::new();
    for d in &differences {
        let listed = known.iter().find(|k| matches(k, d));
        match listed {
            Some(k) => *per_class.entry((d.class, k.reason.as_str())).or_default() += 1,
            None => new.push(d),
        }
        if verbose {
            println!(
                "  [{}] {} {} / {} / {}: {}",
                if listed.is_some() { "listed" } else { "NEW" },
                d.class,
                d.policy,
                d.suite,
                d.case,
                d.detail
            );
        }
    }
    println!(
        "differential-native: {} policies rendered; {} (policy, case) pairs compared, {agree} agree, {} differ ({} listed, {} unlisted); {not_compared} cases of unrendered policies not compared",
        enforce.rendered.len(),
        runs.len(),
        runs.len() - agree,
        differences.len() - new.len(),
        new.len()
    );
    for ((class, reason), n) in &per_class {
        println!("  listed {class:9} {n:4}  {reason}");
    }
    for k in known
        .iter()
        .filter(|k| !differences.iter().any(|d| matches(k, d)))
    {
        println!(
            "differential-native: stale entry (no longer occurs): policy {} suite {} case {:?} class {}",
            k.policy, k.suite, k.case, k.class
        );
    }
    if !new.is_empty() {
        let mut msg = format!(
            "{} difference(s) between the gate and its native policies are not listed in {}:\n",
            new.len(),
            known_path.display()
        );
        for d in &new {
            msg.push_str(&format!(
                "  {} {} / {} / {}:\n          {}\n",
                d.class, d.policy, d.suite, d.case, d.detail
            ));
        }
        panic!("{msg}");
    }
}
