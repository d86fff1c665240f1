//! Results of `review` and `audit`, and their output formats.

use super::stdout_is_color_terminal;
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

    /// Denied, or would be denied (dry-run mode).
    pub fn is_violation(&self) -> bool {
        !self.denied_by.is_empty()
    }

    /// `file:line`, or empty for objects read from a cluster.
    fn location(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{f}:{l}"),
            _ => String::new(),
        }
    }

    /// The DECISION cell and its colour.
    fn decision_label(&self) -> (&'static str, comfy_table::Color) {
        use comfy_table::Color;
        match (self.allowed, self.is_violation()) {
            (false, false) if self.decision == UNDECIDED => ("UNDECIDED", Color::Magenta),
            (false, _) | (true, true) => ("DENY", Color::Red),
            (true, false) if !self.warnings.is_empty() => ("WARN", Color::Yellow),
            _ => ("allow", Color::Green),
        }
    }

    fn object_ref(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }

    /// `by <policies>: <JSON Patch>` when MutatingAdmissionPolicies changed the object.
    fn mutation_text(&self) -> Option<String> {
        self.patch
            .as_ref()
            .map(|patch| format!("by {}: {patch}", self.mutated_by.join(", ")))
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

/// Every output `review` and `audit` can write; each command's `-o` offers its own subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    /// The table with one row per finding and its message.
    Wide,
    Json,
    Yaml,
    Sarif,
    Junit,
    Policyreport,
}

/// How `table` lays out findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStyle {
    /// One row per object (no messages), then every message in full below the table.
    Plain,
    /// One row per finding, with a MESSAGE column (`-o wide`).
    Wide,
}

/// The kubectl-style table: plain columns separated by three spaces, fitted to
/// the terminal's width (or `$COLUMNS`); colour only where [`stdout_is_color_terminal`]
/// says so, applied by the table itself so it never counts towards a column's width.
/// Objects with nothing to say are left out unless `show_passing`. Empty when no row remains.
pub fn table(results: &[ObjectResult], show_passing: bool, style: TableStyle) -> String {
    use comfy_table::{Cell, ColumnConstraint, Table, Width};
    let color = stdout_is_color_terminal();
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    if color {
        t.enforce_styling();
    }
    if let Some(width) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|w| *w > 0)
    {
        t.set_width(width);
    }
    let mut header = vec!["LOCATION", "OPERATION", "OBJECT", "DECISION"];
    header.push(match style {
        TableStyle::Plain => "POLICIES",
        TableStyle::Wide => "POLICY",
    });
    if style == TableStyle::Wide {
        header.push("MESSAGE");
    }
    let header_names = header.clone();
    t.set_header(header);
    let mut details = String::new();
    let mut rows = 0;
    for r in results {
        let findings = r.findings();
        if findings.is_empty() && r.warnings.is_empty() && r.mutated_by.is_empty() && !show_passing
        {
            continue;
        }
        rows += 1;
        let location = r.location();
        let (label, paint_as) = r.decision_label();
        let decision = || {
            let cell = Cell::new(label);
            if color { cell.fg(paint_as) } else { cell }
        };
        match style {
            TableStyle::Plain => {
                let mut policies: Vec<&str> = Vec::new();
                for (policy, _, _) in &findings {
                    if !policies.contains(policy) {
                        policies.push(policy);
                    }
                }
                t.add_row(vec![
                    Cell::new(&location),
                    Cell::new(&r.operation),
                    Cell::new(r.object_ref()),
                    decision(),
                    Cell::new(policies.join(",")),
                ]);
                if findings.is_empty() && r.warnings.is_empty() && r.patch.is_none() {
                    continue;
                }
                details.push_str(&format!("\n{} {}", r.operation, r.object_ref()));
                if !location.is_empty() {
                    details.push_str(&format!(" ({location})"));
                }
                details.push_str(":\n");
                for (policy, level, message) in &findings {
                    details.push_str(&indented(&format!(
                        "{} {policy}: {message}",
                        level.to_uppercase()
                    )));
                }
                if findings.is_empty() {
                    for w in &r.warnings {
                        details.push_str(&indented(&format!("WARN {w}")));
                    }
                }
                if let Some(mutation) = r.mutation_text() {
                    details.push_str(&indented(&format!("MUTATED {mutation}")));
                }
            }
            TableStyle::Wide => {
                let one_line = |m: &str| m.split_whitespace().collect::<Vec<_>>().join(" ");
                if findings.is_empty() {
                    t.add_row(vec![
                        Cell::new(&location),
                        Cell::new(&r.operation),
                        Cell::new(r.object_ref()),
                        decision(),
                        Cell::new(""),
                        Cell::new(one_line(
                            &r.warnings
                                .iter()
                                .cloned()
                                .chain(r.mutation_text())
                                .collect::<Vec<_>>()
                                .join(" "),
                        )),
                    ]);
                }
                for (policy, _, message) in &findings {
                    t.add_row(vec![
                        Cell::new(&location),
                        Cell::new(&r.operation),
                        Cell::new(r.object_ref()),
                        decision(),
                        Cell::new(policy),
                        Cell::new(one_line(message)),
                    ]);
                }
            }
        }
    }
    if rows == 0 {
        return String::new();
    }
    // Short columns never wrap; LOCATION and OBJECT wrap only on a terminal
    // too narrow for them, and in `wide` the MESSAGE column takes what is left.
    let last = t.column_count().saturating_sub(1);
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 3 }));
        let header = header_names.get(i).copied().unwrap_or_default();
        let constraint = match header {
            "LOCATION" | "OBJECT" => ColumnConstraint::LowerBoundary(Width::Fixed(12)),
            "MESSAGE" => ColumnConstraint::LowerBoundary(Width::Fixed(30)),
            _ => ColumnConstraint::ContentWidth,
        };
        column.set_constraint(constraint);
    }
    let mut out = t.trim_fmt();
    if !details.is_empty() {
        out.push('\n');
        out.push_str(details.trim_end());
        out.push('\n');
    }
    out
}

/// `text` as an indented block: two spaces, continuation lines four.
fn indented(text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        out.push_str(if i == 0 { "  " } else { "    " });
        out.push_str(line);
        out.push('\n');
    }
    out
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
        "{}: {denied} would be denied{undecided_text}, {warned} warned, {} clean",
        super::count(results.len(), "object", "objects"),
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

/// The same fields as [`json`], as one YAML sequence.
pub fn yaml(results: &[ObjectResult]) -> String {
    serde_saphyr::to_string(&results)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "[]".to_string())
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
