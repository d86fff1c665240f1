//! Running one PolicyTest suite: load the policies and cluster state it names,
//! then send each case through the engine as the webhook would (same request
//! building, same evaluation) and print one line per case.

use super::degraded::Degraded;
use super::spec::{Case, ObjectSource, PolicyTestDocument, PolicyTestSpec, Source, TestMode};
use crate::admission::synthetic::{RequestSpec, build_request};
use crate::cli::paint;
use crate::cluster::Snapshot;
use crate::documents::{Located, files_in, read_text, split_documents};
use crate::policy::{EvalOptions, Mode, PolicySet, Request, Stage};
use k8s_openapi::api::authentication::v1::UserInfo;
use std::path::{Path, PathBuf};

/// A path in a suite, relative to the suite's file.
fn resolve(base: &Path, relative: &str) -> PathBuf {
    base.parent().unwrap_or(Path::new(".")).join(relative)
}

/// Runs every case of `suite` (read from `file`), printing each as `ok` or
/// `FAIL` with the reasons (in colour when `color`).
///
/// Returns `(passed, failed)` case counts.
///
/// # Errors
/// The suite cannot run: its policies do not load, or its cluster state or
/// params name no file or do not load. The message names what failed.
pub(super) fn run_suite(
    file: &Path,
    suite: &PolicyTestDocument,
    color: bool,
) -> Result<(usize, usize), String> {
    let policies = load_policies(file, &suite.spec)?;
    let cluster = load_cluster_state(file, &suite.spec)?;

    println!("{} ({})", suite.metadata.name, file.display());
    let (mut passed, mut failed) = (0, 0);
    for (index, case) in suite.spec.cases.iter().enumerate() {
        let outcome = run_case(file, index, case, suite.spec.mode, &policies, &cluster);
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("  {}  {}", paint("ok  ", "32", color), case.name);
            }
            Err(problems) => {
                failed += 1;
                println!("  {}  {}", paint("FAIL", "31;1", color), case.name);
                for p in problems {
                    println!("        {p}");
                }
            }
        }
    }
    Ok((passed, failed))
}

/// `spec.policies`: files, directories searched recursively, and documents
/// written inline.
fn load_policies(file: &Path, spec: &PolicyTestSpec) -> Result<PolicySet, String> {
    let mut sources = Vec::new();
    for entry in &spec.policies {
        let p = match entry {
            Source::Inline(inline) => {
                sources.push((PathBuf::from(&inline.name), inline.text.clone()));
                continue;
            }
            Source::Path(p) => resolve(file, p),
        };
        let files = if p.is_dir() {
            files_in(&p).map_err(|e| format!("{}: {e}", p.display()))?
        } else {
            vec![p]
        };
        for f in files {
            let text = read_text(&f)
                .map_err(|e| format!("policies do not load:\n{}: cannot read: {e}", f.display()))?;
            sources.push((f, text));
        }
    }
    PolicySet::load_texts(&sources).map_err(|e| format!("policies do not load:\n{e}"))
}

/// `spec.clusterState` then `spec.params`: globs, each of which must match a
/// file, and documents written inline.
fn load_cluster_state(file: &Path, spec: &PolicyTestSpec) -> Result<Snapshot, String> {
    let mut sources = Vec::new();
    let entries = (spec.cluster_state.iter().map(|p| ("clusterState", p)))
        .chain(spec.params.iter().map(|p| ("params", p)));
    for (field, entry) in entries {
        let pattern = match entry {
            Source::Inline(inline) => {
                sources.push((PathBuf::from(&inline.name), inline.text.clone()));
                continue;
            }
            Source::Path(p) => p,
        };
        let full = resolve(file, pattern);
        let matches =
            glob::glob(&full.to_string_lossy()).map_err(|e| format!("{field} '{pattern}': {e}"))?;
        let before = sources.len();
        for m in matches.flatten() {
            let text = read_text(&m).map_err(|e| format!("{}: cannot read: {e}", m.display()))?;
            sources.push((m, text));
        }
        if sources.len() == before {
            return Err(format!("{field} '{pattern}' matches no file"));
        }
    }
    Snapshot::load_texts(&sources).map_err(|e| format!("clusterState/params:\n{e}"))
}

/// An `object`/`oldObject`: inline, or the one object in a file.
fn load_object(file: &Path, source: &ObjectSource) -> Result<serde_json::Value, String> {
    match source {
        ObjectSource::Inline(v) => Ok(v.clone()),
        ObjectSource::File { file: f } => {
            let path = resolve(file, f);
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let docs = split_documents(&path, &text);
            match docs.as_slice() {
                [one] => one
                    .decode::<serde_json::Value>()
                    .map_err(|e: Located| e.to_string()),
                _ => Err(format!(
                    "{}: expected exactly one object, found {}",
                    path.display(),
                    docs.len()
                )),
            }
        }
    }
}

/// One case: its request through the engine, the decision against `expect`.
/// `Err` holds the lines to print under the failed case.
fn run_case(
    file: &Path,
    index: usize,
    case: &Case,
    suite_mode: Option<TestMode>,
    policies: &PolicySet,
    cluster: &Snapshot,
) -> Result<(), Vec<String>> {
    let object = case
        .object
        .as_ref()
        .map(|o| load_object(file, o))
        .transpose()
        .map_err(|e| vec![e])?;
    let old_object = case
        .old_object
        .as_ref()
        .map(|o| load_object(file, o))
        .transpose()
        .map_err(|e| vec![e])?;
    let original = object.clone();
    let request = case_request(index, case, object, old_object)
        .map_err(|e| vec![format!("cannot build the request: {e}")])?;
    let stage = case_stage(case).map_err(|e| vec![e])?;
    let mode = match case.mode.or(suite_mode) {
        Some(TestMode::DryRun) => Mode::DryRun,
        _ => Mode::Enforce,
    };
    let degraded = Degraded {
        inner: cluster,
        unavailable: unavailable_kinds(case, policies).map_err(|e| vec![e])?,
    };
    let decision = policies
        .evaluate(
            &request,
            &degraded,
            &EvalOptions {
                mode,
                stage,
                deadline: None,
                trace: false,
            },
        )
        .map_err(|e| vec![format!("input error: {e}")])?;
    case.expect.check(&decision, original.as_ref())
}

/// The AdmissionRequest a case describes; the user defaults to `policy-test`
/// in `system:authenticated`, the uid to `policytest-<index>`.
pub(crate) fn case_request(
    index: usize,
    case: &Case,
    object: Option<serde_json::Value>,
    old_object: Option<serde_json::Value>,
) -> Result<Request, String> {
    build_request(RequestSpec {
        uid: case
            .uid
            .clone()
            .unwrap_or_else(|| format!("policytest-{index}")),
        operation: case.operation.clone(),
        object,
        old_object,
        user_info: case.user_info.clone().unwrap_or_else(|| UserInfo {
            username: Some("policy-test".into()),
            groups: Some(vec!["system:authenticated".into()]),
            ..Default::default()
        }),
        name: case.request_name.clone(),
        namespace: case.namespace.clone(),
        kind: case.kind.clone(),
        resource: case.resource.clone(),
        sub_resource: case.sub_resource.clone(),
        dry_run: case.dry_run,
        options: case.options.clone(),
    })
    .map_err(|e| e.to_string())
}

/// `endpoint`: `validate` (the default) or `mutate`.
pub(crate) fn case_stage(case: &Case) -> Result<Stage, String> {
    match case.endpoint.as_deref() {
        None | Some("validate") => Ok(Stage::Validate),
        Some("mutate") => Ok(Stage::Mutate),
        Some(other) => Err(format!("endpoint '{other}' must be validate or mutate")),
    }
}

/// `lookupsUnavailable` as `(apiVersion, kind)` pairs, through the loaded
/// policies' lookup declarations.
fn unavailable_kinds(case: &Case, policies: &PolicySet) -> Result<Vec<(String, String)>, String> {
    let mut unavailable = Vec::new();
    for name in &case.lookups_unavailable {
        let spec = policies
            .policies()
            .iter()
            .flat_map(|p| &p.lookups)
            .find(|l| &l.name == name);
        match spec {
            Some(l) => unavailable.push((l.api_version.clone(), l.kind.clone())),
            None => {
                return Err(format!(
                    "lookupsUnavailable: no loaded policy declares a lookup named '{name}'"
                ));
            }
        }
    }
    Ok(unavailable)
}
