//! `safety-gate audit`: which existing objects would the policies deny if
//! they were created now? The dry-run audit of a cluster before enforcement.
//! Objects stream through one at a time; only the state lookups need
//! (namespaces, looked-up kinds) is held in memory.

use super::cluster_source::ClusterSource;
use super::load_policies;
use super::manifest_reader::parse_text;
use super::report::{self, Format, ObjectResult};
use super::{EXIT_FINDINGS, EXIT_OK, EXIT_UNDECIDED, EXIT_USAGE};
use crate::admission::synthetic::{RequestSpec, build_request};
use crate::cluster::Snapshot;
use crate::documents::{STDIN, files_in, read_text};
use crate::policy::ClusterState;
use crate::policy::{EvalOptions, PolicySet};
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// A snapshot of the cluster: a YAML/JSON file or directory (`kubectl get -A -o yaml`
    /// output); `-` reads stdin.
    #[arg(
        short = 'f',
        long,
        visible_alias = "filename",
        value_name = "FILE",
        required_unless_present = "cluster"
    )]
    pub snapshot: Option<PathBuf>,
    /// Read the objects from the cluster (read-only): --kubeconfig, $KUBECONFIG,
    /// ~/.kube/config or the Pod's service account, as kubectl finds them.
    #[arg(long, conflicts_with = "snapshot")]
    pub cluster: bool,
    /// Kubeconfig for --cluster; default as kubectl: $KUBECONFIG, then ~/.kube/config.
    #[arg(long, requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context for --cluster (default: its current context).
    #[arg(long, requires = "cluster")]
    pub context: Option<String>,
    /// Policy directory (searched recursively) or file.
    #[arg(long, default_value = "policies", env = "SAFETY_GATE_POLICIES")]
    pub policies: PathBuf,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "format",
        value_enum,
        default_value = "table"
    )]
    pub format: AuditFormat,
}

/// `-o` of `audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    /// One line per object, the messages below, then counts (default).
    Table,
    /// The table with a MESSAGE column.
    Wide,
    Json,
    Yaml,
    /// wg-policy PolicyReports (one per namespace) and a ClusterPolicyReport.
    Policyreport,
}

impl From<AuditFormat> for Format {
    fn from(f: AuditFormat) -> Self {
        match f {
            AuditFormat::Table => Format::Table,
            AuditFormat::Wide => Format::Wide,
            AuditFormat::Json => Format::Json,
            AuditFormat::Yaml => Format::Yaml,
            AuditFormat::Policyreport => Format::Policyreport,
        }
    }
}

pub fn run(args: &AuditArgs) -> u8 {
    let format = Format::from(args.format);
    let Some(policies) = load_policies(&args.policies) else {
        return EXIT_USAGE;
    };
    let started = Instant::now();
    let user = UserInfo {
        username: Some("system:safety-gate:audit".into()),
        groups: Some(vec!["system:authenticated".into()]),
        ..Default::default()
    };
    let scan = match &args.snapshot {
        Some(snapshot) => audit_snapshot(snapshot, &policies, &user),
        None => audit_cluster(
            args.kubeconfig.as_deref(),
            args.context.as_deref(),
            &policies,
            &user,
        ),
    };
    let (results, scanned) = match scan {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if let (Some(snapshot), 0) = (&args.snapshot, scanned) {
        // An empty or mistyped snapshot path must not pass as "clean".
        eprintln!("error: no objects in the snapshot {}", snapshot.display());
        return EXIT_USAGE;
    }
    let output = match format {
        Format::Json => report::json(&results),
        Format::Yaml => report::yaml(&results),
        Format::Policyreport => report::policy_reports(&results),
        _ => {
            let style = if format == Format::Wide {
                report::TableStyle::Wide
            } else {
                report::TableStyle::Plain
            };
            let mut out = report::table(&results, false, style);
            if !out.is_empty() {
                out.push('\n');
            }
            // Every number counts objects: scanned, then those a policy
            // matched, then how they fared (overall and per policy).
            out.push_str(&format!(
                "{} scanned in {:.1?}; {} matched by a policy\n",
                super::count(scanned, "object", "objects"),
                started.elapsed(),
                results.len()
            ));
            for (policy, counts) in report::per_policy_counts(&results) {
                let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
                out.push_str(&format!("  {policy}: {}\n", parts.join(", ")));
            }
            out.push_str(&report::summary_line(&results));
            out
        }
    };
    println!("{output}");
    let undecided = report::undecided_count(&results);
    if report::any_violation(&results) {
        EXIT_FINDINGS
    } else if undecided > 0 {
        eprintln!(
            "{undecided} object(s) undecided: a policy needs cluster state (namespace labels or lookups) \
             that was not given; add the Namespaces and looked-up objects to the snapshot, or use --cluster"
        );
        EXIT_UNDECIDED
    } else {
        EXIT_OK
    }
}

/// Streams the snapshot's files one at a time through the policies.
fn audit_snapshot(
    snapshot: &Path,
    policies: &PolicySet,
    user: &UserInfo,
) -> Result<(Vec<ObjectResult>, usize), String> {
    let files = if snapshot.as_os_str() == STDIN {
        vec![snapshot.to_path_buf()]
    } else if snapshot.is_dir() {
        files_in(snapshot).map_err(|e| format!("{}: {e}", snapshot.display()))?
    } else if snapshot.exists() {
        vec![snapshot.to_path_buf()]
    } else {
        return Err(format!("{}: no such file or directory", snapshot.display()));
    };
    let state = load_needed_state(&files, policies)?;
    let progress = progress_bar(files.len());
    let mut results = Vec::new();
    let mut scanned = 0usize;
    for file in &files {
        let mut objects = Vec::new();
        let read = read_text(file)
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|text| parse_text(file, &text, &mut objects).map_err(|e| e.to_string()));
        if let Err(e) = read {
            progress.finish_and_clear();
            return Err(e);
        }
        for object in objects {
            scanned += 1;
            let location = Some((display(&object.file), object.line));
            match audit_one(scanned, &object.object, location, policies, &state, user) {
                Ok(Some(r)) => results.push(r),
                Ok(None) => {}
                Err(e) => {
                    progress.finish_and_clear();
                    return Err(format!("{}: {e}", object.location()));
                }
            }
        }
        progress.inc(1);
        progress.set_message(format!("{scanned} objects"));
    }
    progress.finish_and_clear();
    Ok((results, scanned))
}

/// Lists, page by page, every object of the kinds the policies match on CREATE.
fn audit_cluster(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    policies: &PolicySet,
    user: &UserInfo,
) -> Result<(Vec<ObjectResult>, usize), String> {
    let source = ClusterSource::connect(kubeconfig, context, &policies.cluster_needs())
        .map_err(|e| format!("--cluster: {e}"))?;
    let Some((runtime, reader)) = source.reader() else {
        return Err("--cluster: not connected".to_string());
    };
    let rules: Vec<_> = policies
        .policies()
        .iter()
        .filter(|p| p.validates())
        .flat_map(|p| p.webhook_rules())
        .collect();
    let mut results = Vec::new();
    let mut scanned = 0usize;
    runtime.block_on(reader.list_matching(&rules, |object| {
        scanned += 1;
        if let Some(r) = audit_one(scanned, &object, None, policies, source.state(), user)? {
            results.push(r);
        }
        Ok(())
    }))?;
    Ok((results, scanned))
}

/// One pass over the files to keep only what lookups and namespace selectors read.
fn load_needed_state(files: &[PathBuf], policies: &PolicySet) -> Result<Snapshot, String> {
    let needs = policies.cluster_needs();
    if needs.kinds.is_empty() && !needs.namespaces {
        return Ok(Snapshot::empty());
    }
    let mut kinds: Vec<&str> = needs.kinds.iter().map(|(_, k)| k.as_str()).collect();
    if needs.namespaces {
        kinds.push("Namespace");
    }
    let objects_of = |file: &PathBuf, text: Option<String>| -> Result<Vec<_>, String> {
        let text = match text {
            Some(text) => text,
            None => read_text(file).map_err(|e| format!("{}: {e}", file.display()))?,
        };
        let mut objects = Vec::new();
        parse_text(file, &text, &mut objects).map_err(|e| e.to_string())?;
        Ok(objects)
    };
    let mut kept = Vec::new();
    // Files passed over unparsed, by index: if a later file fails, these are
    // parsed after all, so the error is the first file's, as without skipping.
    let mut skipped = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let objects = read_text(file)
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|text| {
                if cannot_hold_kinds(&text, &kinds) {
                    skipped.push(index);
                    Ok(Vec::new())
                } else {
                    objects_of(file, Some(text))
                }
            });
        let objects = match objects {
            Ok(objects) => objects,
            Err(e) => {
                for &earlier in &skipped {
                    objects_of(&files[earlier], None)?;
                }
                return Err(e);
            }
        };
        for m in objects {
            let is_namespace = m.api_version() == "v1" && m.kind() == "Namespace";
            let looked_up = needs
                .kinds
                .iter()
                .any(|(v, k)| v == m.api_version() && k == m.kind());
            if (needs.namespaces && is_namespace) || looked_up {
                kept.push(m.object);
            }
        }
    }
    Ok(Snapshot::from_objects(kept))
}

/// Whether a file's text cannot hold an object of any of `kinds`: no kind's
/// name occurs in it, and no backslash, the only way YAML or JSON can spell a
/// string other than as its own characters (escapes in double quotes; a
/// folded or block scalar keeps the name's letters together, an alias's
/// anchor holds them too). Such a file need not be parsed to read state.
fn cannot_hold_kinds(text: &str, kinds: &[&str]) -> bool {
    !text.contains('\\') && !kinds.iter().any(|kind| text.contains(kind))
}

fn audit_one(
    index: usize,
    object: &serde_json::Value,
    location: Option<(String, usize)>,
    policies: &PolicySet,
    state: &dyn ClusterState,
    user: &UserInfo,
) -> Result<Option<ObjectResult>, String> {
    let request = build_request(RequestSpec {
        uid: format!("audit-{index}"),
        operation: Some(Operation::Create),
        object: Some(object.clone()),
        user_info: user.clone(),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let decision = policies
        .evaluate(&request, state, &EvalOptions::default())
        .map_err(|e| e.to_string())?;
    if decision.policies.is_empty() {
        return Ok(None);
    }
    Ok(Some(ObjectResult::new(
        object, "CREATE", &decision, location,
    )))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn progress_bar(files: usize) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(files as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} auditing [{bar:30}] {pos}/{len} files, {msg} ({elapsed})",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_the_needed_kinds_is_not_parsed_for_state_but_its_error_still_comes_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("policy.yaml");
        std::fs::write(
            &policy,
            "apiVersion: safety-gate.dev/v1alpha1\nkind: GatePolicy\nmetadata:\n  name: prod-only\nspec:\n  matchConstraints:\n    namespaceSelector:\n      matchLabels: {tier: prod}\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [\"*\"]\n      operations: [CREATE]\n      resources: [configmaps]\n  validations:\n  - expression: \"true\"\n",
        )
        .expect("write");
        let set = PolicySet::load_dir(&policy).expect("the policy loads");
        assert!(
            set.cluster_needs().namespaces,
            "the policy reads namespaces"
        );
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let namespace = write(
            "1.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  labels: {tier: prod}\n",
        );
        let broken_without = write("2.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n");
        let broken_with = write("3.yaml", "kind: Namespace\nmetadata: [\n");
        let escaped = write(
            "4.yaml",
            "apiVersion: v1\nkind: \"Name\\x73pace\"\nmetadata: {name: team-b}\n",
        );
        let state = load_needed_state(&[namespace.clone(), escaped], &set).expect("state");
        for name in ["team-a", "team-b"] {
            assert!(
                matches!(state.namespace(name), Ok(Some(_))),
                "{name}: a Namespace spelled with an escape is still found"
            );
        }
        let err = load_needed_state(&[namespace, broken_without, broken_with], &set)
            .expect_err("a broken file is an error");
        assert!(
            err.contains("2.yaml"),
            "the first broken file is named: {err}"
        );
    }
}
