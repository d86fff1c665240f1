//! Results of `review` and `audit`, and their output formats.

use super::{paint, stdout_is_color_terminal};
use crate::policy::{Decision, PolicyOutcome, PolicySet, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub api_version: String,
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    pub operation: String,
    pub allowed: bool,
    pub decision: &'static str,
    pub denied_by: Vec<String>,
    /// Policies that would deny only because cluster state they read is
    /// unknown here (a namespace's labels, a lookup): neither allowed nor
    /// denied, `decision: undecided`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undecided_by: Vec<String>,
    pub policies: Vec<PolicyResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// MutatingAdmissionPolicies that changed the object before the
    /// validations ran, and the JSON Patch of their changes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mutated_by: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResult {
    pub policy: String,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    pub denies: bool,
}

impl ObjectResult {
    pub fn new(
        object: &serde_json::Value,
        operation: &str,
        decision: &Decision,
        location: Option<(String, usize)>,
    ) -> Self {
        let s = |p: &str| {
            object
                .pointer(p)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let undecided: Vec<String> = decision
            .policies
            .iter()
            .filter(|p| p.denies && p.undecided)
            .map(|p| p.policy.clone())
            .collect();
        let denied: Vec<String> = decision
            .denied_by()
            .into_iter()
            .filter(|p| !undecided.contains(p))
            .collect();
        ObjectResult {
            file: location.as_ref().map(|l| l.0.clone()),
            line: location.map(|l| l.1),
            api_version: s("/apiVersion"),
            kind: s("/kind"),
            namespace: s("/metadata/namespace"),
            name: s("/metadata/name"),
            uid: s("/metadata/uid"),
            operation: operation.to_string(),
            allowed: decision.allowed,
            decision: if !decision.allowed && denied.is_empty() && !undecided.is_empty() {
                UNDECIDED
            } else {
                decision.verdict.as_str()
            },
            denied_by: denied,
            undecided_by: undecided,
            policies: decision
                .policies
                .iter()
                .filter(|p| p.outcome != PolicyOutcome::Skipped)
                .map(|p| PolicyResult {
                    policy: p.policy.clone(),
                    result: p.outcome.as_str(),
                    messages: p.messages.clone(),
                    errors: p.errors.clone(),
                    denies: p.denies,
                })
                .collect(),
            warnings: decision.warnings.clone(),
            mutated_by: Vec::new(),
            patch: None,
        }
    }

    /// Denied, or would be denied (audit mode).
    pub fn is_violation(&self) -> bool {
        !self.denied_by.is_empty()
    }

    fn object_ref(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }

    fn findings(&self) -> Vec<(&str, &str, String)> {
        let mut out = Vec::new();
        for p in &self.policies {
            for m in p.messages.iter().chain(&p.errors) {
                let level = if p.denies && self.undecided_by.contains(&p.policy) {
                    UNDECIDED
                } else if p.denies {
                    "deny"
                } else if p.result == "exempted" {
                    "exempted"
                } else {
                    "warn"
                };
                out.push((p.policy.as_str(), level, m.clone()));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Sarif,
    Junit,
    Policyreport,
}

pub fn table(results: &[ObjectResult], show_passing: bool) -> String {
    let color = stdout_is_color_terminal();
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    t.set_header(vec![
        "LOCATION",
        "OPERATION",
        "OBJECT",
        "DECISION",
        "POLICY",
        "MESSAGE",
    ]);
    let mut rows = 0;
    for r in results {
        let findings = r.findings();
        if findings.is_empty() && r.warnings.is_empty() && r.mutated_by.is_empty() && !show_passing
        {
            continue;
        }
        let location = match (&r.file, r.line) {
            (Some(f), Some(l)) => format!("{f}:{l}"),
            _ => String::new(),
        };
        let decision = match (r.allowed, r.is_violation()) {
            (false, false) if r.decision == UNDECIDED => paint("UNDECIDED", "35", color),
            (false, _) | (true, true) => paint("DENY", "31;1", color),
            (true, false) if !r.warnings.is_empty() => paint("WARN", "33", color),
            _ => paint("allow", "32", color),
        };
        if findings.is_empty() {
            let mut warning = r.warnings.join("\n");
            if let Some(patch) = &r.patch {
                if !warning.is_empty() {
                    warning.push('\n');
                }
                warning.push_str(&format!("mutated by {}: {patch}", r.mutated_by.join(", ")));
            }
            t.add_row(vec![
                location,
                r.operation.clone(),
                r.object_ref(),
                decision,
                String::new(),
                warning,
            ]);
        } else {
            for (i, (policy, _, message)) in findings.iter().enumerate() {
                let (loc, op, obj, dec) = if i == 0 {
                    (
                        location.clone(),
                        r.operation.clone(),
                        r.object_ref(),
                        decision.clone(),
                    )
                } else {
                    Default::default()
                };
                t.add_row(vec![loc, op, obj, dec, policy.to_string(), message.clone()]);
            }
        }
        rows += 1;
    }
    if rows == 0 {
        return String::new();
    }
    t.to_string()
}

pub fn summary_line(results: &[ObjectResult]) -> String {
    let denied = results.iter().filter(|r| r.is_violation()).count();
    let undecided = undecided_count(results);
    let warned = results
        .iter()
        .filter(|r| !r.is_violation() && r.decision != UNDECIDED && !r.warnings.is_empty())
        .count();
    let undecided_text = if undecided > 0 {
        format!(", {undecided} undecided (cluster state needed)")
    } else {
        String::new()
    };
    format!(
        "{} object(s): {denied} would be denied{undecided_text}, {warned} warned, {} clean",
        results.len(),
        results.len() - denied - undecided - warned
    )
}

/// Counts per policy, for the end of an audit.
pub fn per_policy_counts(
    results: &[ObjectResult],
) -> BTreeMap<String, BTreeMap<&'static str, usize>> {
    let mut counts: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
    for r in results {
        for p in &r.policies {
            *counts
                .entry(p.policy.clone())
                .or_default()
                .entry(p.result)
                .or_default() += 1;
        }
    }
    counts
}

pub fn json(results: &[ObjectResult]) -> String {
    serde_json::to_string_pretty(results).unwrap_or_else(|_| "[]".to_string())
}

pub fn sarif(results: &[ObjectResult], policies: &PolicySet) -> String {
    use serde_sarif::sarif::{
        ArtifactLocation, Location, Message, MultiformatMessageString, PhysicalLocation, Region,
        ReportingDescriptor, Result as SarifResult, Run, Sarif, Tool, ToolComponent,
    };
    let rules: Vec<ReportingDescriptor> = policies
        .policies()
        .iter()
        .map(|p| {
            let text = p
                .description
                .clone()
                .unwrap_or_else(|| format!("safety-gate policy {}", p.name));
            ReportingDescriptor::builder()
                .id(p.name.clone())
                .short_description(MultiformatMessageString::builder().text(text).build())
                .build()
        })
        .collect();
    let mut out = Vec::new();
    for r in results {
        for (policy, level, message) in r.findings() {
            let level = match level {
                "deny" => serde_sarif::sarif::ResultLevel::Error,
                UNDECIDED => serde_sarif::sarif::ResultLevel::Warning,
                "exempted" => serde_sarif::sarif::ResultLevel::Note,
                _ => serde_sarif::sarif::ResultLevel::Warning,
            };
            let mut result = SarifResult::builder()
                .rule_id(policy.to_string())
                .level(level)
                .message(
                    Message::builder()
                        .text(format!("{} {}: {message}", r.operation, r.object_ref()))
                        .build(),
                )
                .build();
            if let (Some(file), Some(line)) = (&r.file, r.line) {
                result.locations = Some(vec![
                    Location::builder()
                        .physical_location(
                            PhysicalLocation::builder()
                                .artifact_location(
                                    ArtifactLocation::builder().uri(file.clone()).build(),
                                )
                                .region(Region::builder().start_line(line as i64).build())
                                .build(),
                        )
                        .build(),
                ]);
            }
            out.push(result);
        }
    }
    let driver = ToolComponent::builder()
        .name("safety-gate")
        .version(env!("CARGO_PKG_VERSION").to_string())
        .rules(rules)
        .build();
    let run = Run::builder()
        .tool(Tool::builder().driver(driver).build())
        .results(out)
        .build();
    let log = Sarif::builder()
        .version(serde_json::json!("2.1.0"))
        .schema(serde_sarif::sarif::SCHEMA_URL.to_string())
        .runs(vec![run])
        .build();
    serde_json::to_string_pretty(&log).unwrap_or_default()
}

pub fn junit(results: &[ObjectResult], suite_name: &str) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(suite_name);
    for r in results {
        let status = if r.is_violation() {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let messages: Vec<String> = r
                .findings()
                .into_iter()
                .filter(|f| f.1 == "deny")
                .map(|(p, _, m)| format!("{p}: {m}"))
                .collect();
            s.set_message(messages.join("\n"));
            s.set_type("denied");
            s
        } else {
            TestCaseStatus::success()
        };
        let mut case = TestCase::new(format!("{} {}", r.operation, r.object_ref()), status);
        if let Some(file) = &r.file {
            case.set_classname(format!("{file}:{}", r.line.unwrap_or(0)));
        }
        if !r.warnings.is_empty() {
            case.set_system_out(r.warnings.join("\n"));
        }
        suite.add_test_case(case);
    }
    let mut report = Report::new("safety-gate");
    report.add_test_suite(suite);
    report.to_string().unwrap_or_default()
}

/// wg-policy `PolicyReport` per namespace and one `ClusterPolicyReport`, as a YAML stream.
pub fn policy_reports(results: &[ObjectResult]) -> String {
    let mut by_namespace: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for r in results {
        for p in &r.policies {
            let result = match p.result {
                "passed" => "pass",
                "failed" if p.denies => "fail",
                "failed" => "warn",
                "errored" => "error",
                "exempted" => "skip",
                _ => continue,
            };
            let mut resource =
                serde_json::json!({"apiVersion": r.api_version, "kind": r.kind, "name": r.name});
            if !r.namespace.is_empty() {
                resource["namespace"] = serde_json::json!(r.namespace);
            }
            if !r.uid.is_empty() {
                resource["uid"] = serde_json::json!(r.uid);
            }
            let message = p
                .messages
                .iter()
                .chain(&p.errors)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            let mut entry = serde_json::json!({
                "source": "safety-gate",
                "policy": p.policy,
                "rule": p.policy,
                "result": result,
                "resources": [resource],
                "scored": true,
                "timestamp": {"seconds": now, "nanos": 0},
            });
            if !message.is_empty() {
                entry["message"] = serde_json::json!(message);
            }
            by_namespace
                .entry(r.namespace.clone())
                .or_default()
                .push(entry);
        }
    }
    let mut docs = Vec::new();
    for (namespace, results) in by_namespace {
        let mut summary =
            serde_json::json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0});
        for r in &results {
            if let Some(k) = r["result"].as_str() {
                summary[k] = serde_json::json!(summary[k].as_u64().unwrap_or(0) + 1);
            }
        }
        let (kind, metadata) = if namespace.is_empty() {
            (
                "ClusterPolicyReport",
                serde_json::json!({"name": "safety-gate-audit"}),
            )
        } else {
            (
                "PolicyReport",
                serde_json::json!({"name": "safety-gate-audit", "namespace": namespace}),
            )
        };
        let doc = serde_json::json!({
            "apiVersion": "wgpolicyk8s.io/v1alpha2",
            "kind": kind,
            "metadata": metadata,
            "summary": summary,
            "results": results,
        });
        docs.push(serde_saphyr::to_string(&doc).unwrap_or_default());
    }
    docs.join("---\n")
}

/// The verdict used for exit codes: 1 when anything would be denied.
/// `decision` of an object no policy denies, but one would deny for lack of
/// cluster state.
pub const UNDECIDED: &str = "undecided";

/// Objects whose decision needs cluster state that was not given.
pub fn undecided_count(results: &[ObjectResult]) -> usize {
    results.iter().filter(|r| r.decision == UNDECIDED).count()
}

pub fn any_violation(results: &[ObjectResult]) -> bool {
    results
        .iter()
        .any(|r| r.is_violation() || r.decision == Verdict::Denied.as_str())
}
