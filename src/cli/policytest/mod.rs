//! `safety-gate test`: runs PolicyTest suites (design.md §6) through the same
//! engine path as the webhook and prints each case like a test runner.

use super::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, paint, stdout_is_color_terminal};
use crate::admission::synthetic::{RequestSpec, build_request};
use crate::cluster::{ClusterState, LookupError, NamespaceInfo, Snapshot};
use crate::policy::documents::{Located, STDIN, files_in, read_text, split_documents};
use crate::policy::{Decision, EvalOptions, GATE_API_VERSION, Mode, PolicySet, Stage};
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// PolicyTest files or directories (searched recursively); `-` reads stdin
    /// (relative paths in it are then relative to the working directory).
    #[arg(default_value = "tests/policies")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyTestDocument {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: TestMeta,
    spec: PolicyTestSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestMeta {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyTestSpec {
    policies: Vec<String>,
    #[serde(default)]
    cluster_state: Vec<String>,
    /// Param objects (files or globs) for bindings with a `paramRef`: part of
    /// the same cluster state, listed apart so a suite says what they are.
    #[serde(default)]
    params: Vec<String>,
    #[serde(default)]
    mode: Option<TestMode>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
enum TestMode {
    Enforce,
    Audit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    #[serde(default)]
    operation: Option<Operation>,
    #[serde(default)]
    user_info: Option<UserInfo>,
    #[serde(default)]
    object: Option<ObjectSource>,
    #[serde(default)]
    old_object: Option<ObjectSource>,
    /// `request.name`; `""` models the per-item DELETEs of a DeleteCollection.
    #[serde(default)]
    request_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    kind: Option<GroupVersionKind>,
    #[serde(default)]
    resource: Option<GroupVersionResource>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    options: Option<serde_json::Value>,
    /// `request.uid` (default `policytest-<index>`).
    #[serde(default)]
    uid: Option<String>,
    /// Lookups (by name) whose cluster state is unavailable in this case, as when
    /// a watch cache has not synced or RBAC forbids the list.
    #[serde(default)]
    lookups_unavailable: Vec<String>,
    /// `validate` (default) or `mutate`: which webhook path the case goes through.
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    mode: Option<TestMode>,
    expect: Expect,
}

/// An object inline, or `{file: path}` relative to the test file.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ObjectSource {
    File { file: String },
    Inline(serde_json::Value),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    #[serde(default)]
    allowed: Option<bool>,
    #[serde(default)]
    denied_by: Option<Vec<String>>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message_contains: Option<OneOrMany>,
    /// Exact number of warnings (0 proves "no noise").
    #[serde(default)]
    warnings: Option<usize>,
    #[serde(default)]
    warnings_contain: Option<OneOrMany>,
    /// Key → substring of the value; an empty string only requires the key.
    #[serde(default)]
    audit_annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    no_audit_annotations: Option<Vec<String>>,
    #[serde(default)]
    patched: Option<bool>,
    /// Substrings that must appear in the JSON text of the patch.
    #[serde(default)]
    patch_contains: Option<OneOrMany>,
    /// The object as kube-apiserver would store it: the request's object with
    /// the response's patch applied, compared exactly (no patch: unchanged).
    #[serde(default)]
    patched_object: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

pub fn run(args: &TestArgs) -> u8 {
    let color = stdout_is_color_terminal();
    let mut files = Vec::new();
    for p in &args.paths {
        if p.is_dir() {
            match files_in(p) {
                Ok(f) => files.extend(f),
                Err(e) => {
                    eprintln!("error: {}: {e}", p.display());
                    return EXIT_USAGE;
                }
            }
        } else if p.exists() || p.as_os_str() == STDIN {
            files.push(p.clone());
        } else {
            eprintln!("error: {}: no such file or directory", p.display());
            return EXIT_USAGE;
        }
    }
    let (mut passed, mut failed, mut broken) = (0usize, 0usize, 0usize);
    let mut suites = 0;
    for file in &files {
        let text = match read_text(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                broken += 1;
                continue;
            }
        };
        for doc in split_documents(file, &text) {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Header {
                api_version: Option<String>,
                kind: Option<String>,
            }
            match doc.decode::<Header>() {
                Ok(Header {
                    api_version: Some(v),
                    kind: Some(k),
                }) if v == GATE_API_VERSION && k == "PolicyTest" => {}
                Ok(_) => continue, // fixtures may live beside suites
                Err(e) => {
                    eprintln!("error: {e}");
                    broken += 1;
                    continue;
                }
            }
            suites += 1;
            match doc.decode::<PolicyTestDocument>() {
                Err(e) => {
                    eprintln!("error: {e}");
                    broken += 1;
                }
                Ok(suite) => match run_suite(file, &suite, color) {
                    Ok((p, f)) => {
                        passed += p;
                        failed += f;
                    }
                    Err(e) => {
                        eprintln!(
                            "error: {}:{}: suite {}: {e}",
                            file.display(),
                            doc.first_line,
                            suite.metadata.name
                        );
                        broken += 1;
                    }
                },
            }
        }
    }
    if suites == 0 && broken == 0 {
        eprintln!(
            "error: no PolicyTest documents found in {}",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return EXIT_USAGE;
    }
    println!();
    println!("{passed} passed, {failed} failed");
    if broken > 0 {
        eprintln!("{broken} suite(s) could not be run");
        return EXIT_USAGE;
    }
    if failed > 0 { EXIT_FINDINGS } else { EXIT_OK }
}

fn resolve(base: &Path, relative: &str) -> PathBuf {
    base.parent().unwrap_or(Path::new(".")).join(relative)
}

fn run_suite(
    file: &Path,
    suite: &PolicyTestDocument,
    color: bool,
) -> Result<(usize, usize), String> {
    let policy_files: Vec<PathBuf> = suite
        .spec
        .policies
        .iter()
        .map(|p| resolve(file, p))
        .collect();
    let mut expanded = Vec::new();
    for p in &policy_files {
        if p.is_dir() {
            expanded.extend(files_in(p).map_err(|e| format!("{}: {e}", p.display()))?);
        } else {
            expanded.push(p.clone());
        }
    }
    let policies =
        PolicySet::load_files(&expanded).map_err(|e| format!("policies do not load:\n{e}"))?;
    let mut state_files = Vec::new();
    let patterns = (suite.spec.cluster_state.iter().map(|p| ("clusterState", p)))
        .chain(suite.spec.params.iter().map(|p| ("params", p)));
    for (field, pattern) in patterns {
        let full = resolve(file, pattern);
        let matches =
            glob::glob(&full.to_string_lossy()).map_err(|e| format!("{field} '{pattern}': {e}"))?;
        let before = state_files.len();
        for m in matches.flatten() {
            state_files.push(m);
        }
        if state_files.len() == before {
            return Err(format!("{field} '{pattern}' matches no file"));
        }
    }
    let cluster =
        Snapshot::load_files(&state_files).map_err(|e| format!("clusterState/params:\n{e}"))?;

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
    let request = build_request(RequestSpec {
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
    .map_err(|e| vec![format!("cannot build the request: {e}")])?;
    let stage = match case.endpoint.as_deref() {
        None | Some("validate") => Stage::Validate,
        Some("mutate") => Stage::Mutate,
        Some(other) => {
            return Err(vec![format!(
                "endpoint '{other}' must be validate or mutate"
            )]);
        }
    };
    let mode = match case.mode.or(suite_mode) {
        Some(TestMode::Audit) => Mode::DryRun,
        _ => Mode::Enforce,
    };
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
                return Err(vec![format!(
                    "lookupsUnavailable: no loaded policy declares a lookup named '{name}'"
                )]);
            }
        }
    }
    let degraded = Degraded {
        inner: cluster,
        unavailable,
    };
    let decision = policies
        .evaluate(
            &request,
            &degraded,
            &EvalOptions {
                mode,
                stage,
                deadline: None,
            },
        )
        .map_err(|e| vec![format!("input error: {e}")])?;
    check(&case.expect, &decision, original.as_ref())
}

/// Cluster state with some kinds unavailable (for `lookupsUnavailable`).
struct Degraded<'a> {
    inner: &'a Snapshot,
    unavailable: Vec<(String, String)>,
}

impl crate::policy::ParamSource for Degraded<'_> {
    fn param_scope(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<crate::policy::ParamScope>, LookupError> {
        self.list(api_version, kind, None)?;
        self.inner.param_scope(api_version, kind)
    }

    fn param_list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
    ) -> Result<kube_cel::cel::Value, LookupError> {
        self.list(api_version, kind, Some(namespace))
    }
}

impl ClusterState for Degraded<'_> {
    fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, LookupError> {
        self.inner.namespace(name)
    }

    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<kube_cel::cel::Value, LookupError> {
        if self
            .unavailable
            .iter()
            .any(|(v, k)| v == api_version && k == kind)
        {
            return Err(LookupError(format!(
                "{kind} ({api_version}) is unavailable in this test case"
            )));
        }
        self.inner.list(api_version, kind, namespace)
    }

    fn authorizer(&self) -> Result<std::sync::Arc<dyn crate::policy::authz::Authorizer>, String> {
        self.inner.authorizer()
    }
}

fn check(
    expect: &Expect,
    d: &Decision,
    object: Option<&serde_json::Value>,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let message = d.status.as_ref().map(|s| s.message.as_str()).unwrap_or("");
    if let Some(allowed) = expect.allowed
        && allowed != d.allowed
    {
        problems.push(format!(
            "expected allowed={allowed}, got allowed={}",
            d.allowed
        ));
    }
    if let Some(expected) = &expect.denied_by {
        let mut want = expected.clone();
        want.sort();
        let mut got = d.denied_by();
        got.sort();
        if want != got {
            problems.push(format!("expected deniedBy {want:?}, got {got:?}"));
        }
    }
    if let Some(code) = expect.code {
        let got = d.status.as_ref().map(|s| s.code);
        if got != Some(code) {
            let got = got.map_or_else(|| "none (allowed)".to_string(), |c| c.to_string());
            problems.push(format!("expected code {code}, got {got}"));
        }
    }
    if let Some(parts) = &expect.message_contains {
        for part in parts.items() {
            if !message.contains(part) {
                problems.push(format!("expected the message to contain {part:?}"));
            }
        }
    }
    if let Some(n) = expect.warnings
        && d.warnings.len() != n
    {
        problems.push(format!("expected {n} warning(s), got {}", d.warnings.len()));
    }
    if let Some(parts) = &expect.warnings_contain {
        for part in parts.items() {
            if !d.warnings.iter().any(|w| w.contains(part)) {
                problems.push(format!("expected a warning containing {part:?}"));
            }
        }
    }
    if let Some(annotations) = &expect.audit_annotations {
        for (key, part) in annotations {
            match d.audit_annotations.get(key) {
                None => problems.push(format!("expected audit annotation {key:?}")),
                Some(v) if !v.contains(part.as_str()) => problems.push(format!(
                    "expected audit annotation {key:?} to contain {part:?}, got {v:?}"
                )),
                Some(_) => {}
            }
        }
    }
    if let Some(absent) = &expect.no_audit_annotations {
        for key in absent {
            if d.audit_annotations.contains_key(key) {
                problems.push(format!("expected no audit annotation {key:?}"));
            }
        }
    }
    let patch_text = d.patch.as_ref().and_then(|p| serde_json::to_string(p).ok());
    if let Some(patched) = expect.patched
        && patched != patch_text.is_some()
    {
        problems.push(format!(
            "expected patched={patched}, got patched={}",
            patch_text.is_some()
        ));
    }
    if let Some(parts) = &expect.patch_contains {
        for part in parts.items() {
            if !patch_text.as_deref().unwrap_or("").contains(part) {
                problems.push(format!("expected the patch to contain {part:?}"));
            }
        }
    }
    if let Some(want) = &expect.patched_object {
        let mut got = object.cloned().unwrap_or(serde_json::Value::Null);
        match d.patch.as_ref().map(|p| json_patch::patch(&mut got, p)) {
            Some(Err(e)) => problems.push(format!("the patch does not apply to the object: {e}")),
            _ if &got != want => problems.push(format!(
                "expected the patched object {}, got {}",
                serde_json::to_string(want).unwrap_or_default(),
                serde_json::to_string(&got).unwrap_or_default()
            )),
            _ => {}
        }
    }
    if !problems.is_empty() {
        problems.push(format!("got: allowed={} message={message:?}", d.allowed));
        if !d.warnings.is_empty() {
            problems.push(format!("     warnings={:?}", d.warnings));
        }
        if !d.audit_annotations.is_empty() {
            problems.push(format!("     auditAnnotations={:?}", d.audit_annotations));
        }
        for p in &d.policies {
            if !p.errors.is_empty() || !p.messages.is_empty() {
                problems.push(format!(
                    "     {}: {} {:?} {:?}",
                    p.policy,
                    p.outcome.as_str(),
                    p.messages,
                    p.errors
                ));
            }
        }
        if let Some(t) = patch_text {
            problems.push(format!("     patch={t}"));
        }
        return Err(problems);
    }
    Ok(())
}
