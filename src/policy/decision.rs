//! Combining per-policy results into one admission decision (design.md §4).

use super::model::Reason;
use super::mutate;
use super::options::{EvalOptions, Stage};
use super::{Mode, Policy, PolicyKind, Request};
use json_patch::{Patch, PatchOperation};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Annotation keys the engine writes itself; policies cannot claim them.
pub const RESERVED_ANNOTATION_KEYS: &[&str] =
    &["validation_failure", "break_glass", "evaluation_error"];

/// kube-apiserver keeps at most 4096 runes of warnings and cuts each to 256 once over.
const WARNING_MAX_CHARS: usize = 256;
const WARNINGS_BUDGET_CHARS: usize = 4096;
/// Kubernetes v1.37 caps the validation_failure list at 50 entries.
const MAX_VALIDATION_FAILURES: usize = 50;

/// What happened to one policy that matched the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyOutcome {
    Passed,
    Failed,
    Errored,
    Exempted,
    Skipped,
}

impl PolicyOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyOutcome::Passed => "passed",
            PolicyOutcome::Failed => "failed",
            PolicyOutcome::Errored => "errored",
            PolicyOutcome::Exempted => "exempted",
            PolicyOutcome::Skipped => "skipped",
        }
    }
}

/// The overall result, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    Warned,
    WouldDeny,
    Error,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::Warned => "warned",
            Verdict::WouldDeny => "would_deny",
            Verdict::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidationFailure {
    /// Index of the validation (or mutation); `None` for the policy's other
    /// fields (matchConditions, params, audit annotations, the policy as a whole).
    pub index: Option<usize>,
    pub message: String,
    pub reason: Reason,
    /// An evaluation error enforced under `failurePolicy: Fail`.
    pub error: bool,
    /// A VAP auditAnnotation that failed under `failurePolicy: Fail`: kube-apiserver
    /// denies the request whatever the binding's `validationActions`, and neither
    /// warns nor audits it.
    pub denies_regardless: bool,
}

/// One policy's result before combination.
#[derive(Debug, Clone)]
pub struct PolicyEvaluation {
    pub policy: String,
    pub kind: PolicyKind,
    /// The VAP binding this unit evaluates (None for a GatePolicy).
    pub binding: Option<String>,
    /// The binding's `validationActions` in its own order, for `validation_failure`.
    pub validation_actions: Vec<String>,
    pub deny: bool,
    pub warn: bool,
    pub audit: bool,
    pub outcome: PolicyOutcome,
    pub failures: Vec<ValidationFailure>,
    pub exempted_by: Option<String>,
    pub audit_annotations: Vec<(String, String)>,
    pub ignored_errors: Vec<String>,
    pub annotations: Vec<(String, Option<String>)>,
    pub patch_operations: Vec<PatchOperation>,
    /// Every error came from cluster state the evaluation could not read
    /// (a namespace's labels, a lookup): the request is undecided rather
    /// than denied where that state is simply absent (`review` without it).
    pub cluster_state_unknown: bool,
    /// The failure is the policy's own configuration (its paramKind is not
    /// served): kube-apiserver names the policy without the binding.
    pub policy_level: bool,
    /// Every expression's run, when the evaluation was traced.
    pub trace: Vec<super::ExpressionTrace>,
}

impl PolicyEvaluation {
    pub fn new(policy: &Policy) -> Self {
        PolicyEvaluation {
            policy: policy.name.clone(),
            kind: policy.kind,
            binding: policy.binding.clone(),
            validation_actions: match policy.kind {
                PolicyKind::ValidatingAdmissionPolicy => policy
                    .action_label
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect(),
                PolicyKind::GatePolicy => Vec::new(),
            },
            deny: policy.actions.deny,
            warn: policy.actions.warn,
            audit: policy.actions.audit,
            outcome: PolicyOutcome::Passed,
            failures: Vec::new(),
            exempted_by: None,
            audit_annotations: Vec::new(),
            ignored_errors: Vec::new(),
            annotations: Vec::new(),
            patch_operations: Vec::new(),
            cluster_state_unknown: false,
            policy_level: false,
            trace: Vec::new(),
        }
    }

    /// A binding whose params could not be collected, as kube-apiserver's
    /// dispatcher reports it (`failed to configure binding: ...`): under
    /// `failurePolicy: Fail` it denies whatever the binding's validationActions.
    pub fn config_error(policy: &Policy, error: super::params::ParamError) -> Self {
        use super::params::ParamError;
        let mut e = PolicyEvaluation::new(policy);
        let (message, policy_level, unknown) = match error {
            ParamError::Policy(m) => (format!("failed to configure policy: {m}"), true, false),
            ParamError::Binding(m) => (format!("failed to configure binding: {m}"), false, false),
            ParamError::Unavailable(m) => {
                (format!("failed to configure binding: {m}"), false, true)
            }
        };
        e.policy_level = policy_level;
        e.cluster_state_unknown = unknown;
        e.outcome = PolicyOutcome::Errored;
        match policy.failure_policy {
            super::FailurePolicy::Fail => e.failures.push(ValidationFailure {
                index: None,
                message,
                reason: error_reason(policy.kind),
                error: true,
                denies_regardless: true,
            }),
            super::FailurePolicy::Ignore => e.ignored_errors.push(message),
        }
        e
    }

    /// A policy that could not be evaluated at all (lookups, selectors, matchConditions).
    pub fn error(policy: &Policy, message: String) -> Self {
        let mut e = PolicyEvaluation::new(policy);
        match policy.failure_policy {
            super::FailurePolicy::Fail => {
                e.failures.push(ValidationFailure {
                    index: None,
                    message: format!("policy could not be evaluated: {message}"),
                    reason: error_reason(policy.kind),
                    error: true,
                    denies_regardless: false,
                });
                e.outcome = PolicyOutcome::Errored;
            }
            super::FailurePolicy::Ignore => {
                e.ignored_errors.push(message);
                e.outcome = PolicyOutcome::Errored;
            }
        }
        e
    }

    pub fn finish(&mut self) {
        if self.outcome == PolicyOutcome::Skipped {
            return;
        }
        self.outcome = if self.failures.is_empty() {
            if self.ignored_errors.is_empty() {
                PolicyOutcome::Passed
            } else {
                PolicyOutcome::Errored
            }
        } else if self.exempted_by.is_some() {
            PolicyOutcome::Exempted
        } else if self.failures.iter().all(|f| f.error) {
            PolicyOutcome::Errored
        } else {
            PolicyOutcome::Failed
        };
    }

    /// kube-apiserver's name for this unit in messages (VAP only).
    fn vap_label(&self) -> String {
        if self.policy_level {
            return format!("ValidatingAdmissionPolicy '{}'", self.policy);
        }
        format!(
            "ValidatingAdmissionPolicy '{}' with binding '{}'",
            self.policy,
            self.binding.as_deref().unwrap_or_default()
        )
    }

    fn message(&self) -> String {
        let mut seen = Vec::new();
        for f in &self.failures {
            if !seen.contains(&f.message) {
                seen.push(f.message.clone());
            }
        }
        seen.join("; ")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DenyStatus {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyVerdict {
    pub policy: String,
    pub outcome: PolicyOutcome,
    /// ValidationFailure messages (also of exempted or audited failures).
    pub messages: Vec<String>,
    pub exempted_by: Option<String>,
    pub errors: Vec<String>,
    /// This policy denied the request (or would have, in dry-run mode).
    pub denies: bool,
    /// It denied only because cluster state it needs was unknown.
    pub undecided: bool,
    /// Every expression this policy ran, in order, when
    /// [`EvalOptions::trace`] was on (empty otherwise).
    pub trace: Vec<super::ExpressionTrace>,
}

/// The combined decision the server and every CLI command report.
#[derive(Debug, Clone)]
pub struct Decision {
    pub uid: String,
    pub allowed: bool,
    pub status: Option<DenyStatus>,
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
    pub patch: Option<Patch>,
    pub verdict: Verdict,
    pub policies: Vec<PolicyVerdict>,
    pub elapsed: Duration,
}

impl Decision {
    pub fn allow(request: &Request, started: Instant) -> Self {
        Decision {
            uid: request.uid.clone(),
            allowed: true,
            status: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
            patch: None,
            verdict: Verdict::Allowed,
            policies: Vec::new(),
            elapsed: started.elapsed(),
        }
    }

    pub fn combine(
        request: &Request,
        options: &EvalOptions,
        evaluations: Vec<PolicyEvaluation>,
        object_json: Option<&str>,
        started: Instant,
    ) -> Self {
        let mut decision = Decision::allow(request, started);
        let mut denials: Vec<Denial> = Vec::new();
        let mut warnings = Warnings::default();
        let mut validation_failures = Vec::new();
        let mut break_glass = Vec::new();
        let mut ignored = Vec::new();
        let mut would_deny = false;
        let mut warned = false;
        let user = request.username().to_string();
        let mut annotations: Vec<(String, Option<String>)> = Vec::new();
        let mut operations: Vec<PatchOperation> = Vec::new();

        for e in &evaluations {
            for (key, value) in &e.audit_annotations {
                let slot = decision.audit_annotations.entry(key.clone()).or_default();
                if slot.is_empty() {
                    *slot = value.clone();
                } else if !slot.split(", ").any(|v| v == value) {
                    slot.push_str(", ");
                    slot.push_str(value);
                }
            }
            for err in &e.ignored_errors {
                ignored.push(serde_json::json!({"policy": e.policy, "error": err, "failurePolicy": "Ignore"}));
            }
            annotations.extend(e.annotations.iter().cloned());
            operations.extend(e.patch_operations.iter().cloned());
            if e.failures.is_empty() {
                continue;
            }
            if e.kind == PolicyKind::ValidatingAdmissionPolicy {
                combine_vap(
                    e,
                    options.mode,
                    &mut VapSinks {
                        denials: &mut denials,
                        warnings: &mut warnings,
                        validation_failures: &mut validation_failures,
                    },
                );
                would_deny |= options.mode == Mode::DryRun && e.deny;
                warned |= e.warn;
                continue;
            }
            let message = e.message();
            if let Some(exemption) = &e.exempted_by {
                warnings.push(format!("[break-glass] {}: bypassed by {user} through exemption '{exemption}': {message}", e.policy));
                break_glass.push(serde_json::json!({"policy": e.policy, "exemption": exemption, "user": user, "message": message}));
                continue;
            }
            if e.deny {
                for f in &e.failures {
                    validation_failures.push(failure_entry(&e.policy, f, "Deny"));
                }
                match options.mode {
                    Mode::DryRun => {
                        warnings.push(format!("[dry-run] {}: {message}", e.policy));
                        would_deny = true;
                    }
                    Mode::Enforce => denials.push(Denial {
                        reason: e.failures[0].reason,
                        message: format!("{}: {message}", e.policy),
                        vap: false,
                    }),
                }
            }
            if e.warn {
                warnings.push(format!("{}: {message}", e.policy));
                warned = true;
            }
            if e.audit {
                for f in &e.failures {
                    validation_failures.push(failure_entry(&e.policy, f, "Audit"));
                }
            }
        }

        validation_failures.truncate(MAX_VALIDATION_FAILURES);
        if !validation_failures.is_empty() {
            decision.audit_annotations.insert(
                "validation_failure".into(),
                serde_json::to_string(&validation_failures).unwrap_or_default(),
            );
        }
        if !break_glass.is_empty() {
            decision.audit_annotations.insert(
                "break_glass".into(),
                serde_json::Value::Array(break_glass).to_string(),
            );
        }
        if !ignored.is_empty() {
            decision.audit_annotations.insert(
                "evaluation_error".into(),
                serde_json::Value::Array(ignored).to_string(),
            );
        }
        if let Some(first) = denials.first() {
            decision.allowed = false;
            // kube-apiserver answers with its first denial only (reason, code and
            // message); GatePolicy denials are all listed, as documented.
            let mut first_vap = true;
            let lines: Vec<&str> = denials
                .iter()
                .filter(|d| !d.vap || std::mem::replace(&mut first_vap, false))
                .map(|d| d.message.as_str())
                .collect();
            decision.status = Some(DenyStatus {
                code: first.reason.code(),
                reason: first.reason.as_str().to_string(),
                message: lines.join("; "),
            });
        }
        if options.stage == Stage::Mutate
            && decision.allowed
            && let Some(object) = object_json
        {
            match mutate::build_patch(object, &annotations, &operations) {
                Ok(patch) => decision.patch = patch,
                Err(e) => {
                    decision.allowed = false;
                    decision.status = Some(DenyStatus {
                        code: 500,
                        reason: "InternalError".into(),
                        message: format!("safety-gate could not build the patch: {e}"),
                    });
                }
            }
        }
        decision.warnings = warnings.0;
        let any_error = evaluations
            .iter()
            .any(|e| e.outcome == PolicyOutcome::Errored);
        decision.verdict = if !decision.allowed {
            Verdict::Denied
        } else if would_deny {
            Verdict::WouldDeny
        } else if any_error {
            Verdict::Error
        } else if warned || !decision.warnings.is_empty() {
            Verdict::Warned
        } else {
            Verdict::Allowed
        };
        decision.policies = evaluations
            .into_iter()
            .map(|e| PolicyVerdict {
                undecided: e.cluster_state_unknown && e.failures.iter().all(|f| f.error),
                denies: (e.deny && !e.failures.is_empty()
                    || e.failures.iter().any(|f| f.denies_regardless))
                    && e.exempted_by.is_none(),
                messages: e.failures.iter().map(|f| f.message.clone()).collect(),
                policy: e.policy,
                outcome: e.outcome,
                exempted_by: e.exempted_by,
                errors: e.ignored_errors,
                trace: e.trace,
            })
            .collect();
        decision.elapsed = started.elapsed();
        decision
    }

    /// Names of the policies that denied (or would deny in dry-run mode).
    pub fn denied_by(&self) -> Vec<String> {
        self.policies
            .iter()
            .filter(|p| p.denies)
            .map(|p| p.policy.clone())
            .collect()
    }
}

/// One evaluation unit's denial, before the response is built.
struct Denial {
    reason: Reason,
    message: String,
    /// From a ValidatingAdmissionPolicy (kube-apiserver's wording and rules).
    vap: bool,
}

struct VapSinks<'a> {
    denials: &'a mut Vec<Denial>,
    warnings: &'a mut Warnings,
    validation_failures: &'a mut Vec<Box<RawValue>>,
}

/// A failed VAP evaluation unit, as kube-apiserver's validating admission policy
/// dispatcher reports it: for `Deny`, the first failed validation of the unit
/// (`ValidatingAdmissionPolicy 'p' with binding 'b' denied request: msg`); for
/// `Warn`, one warning per failed validation; for `Audit`, one entry per failed
/// validation in `validation_failure`, in kube-apiserver's shape.
fn combine_vap(e: &PolicyEvaluation, mode: Mode, sinks: &mut VapSinks) {
    let label = e.vap_label();
    let denying = e.failures.iter().find(|f| e.deny || f.denies_regardless);
    if let Some(first) = denying {
        let message = format!("{label} denied request: {}", first.message);
        match mode {
            Mode::DryRun => sinks.warnings.push(format!("[dry-run] {message}")),
            Mode::Enforce => sinks.denials.push(Denial {
                reason: first.reason,
                message,
                vap: true,
            }),
        }
    }
    for f in e.failures.iter().filter(|f| !f.denies_regardless) {
        if e.warn {
            sinks
                .warnings
                .push(format!("Validation failed for {label}: {}", f.message));
        }
        if e.audit {
            let value = ValidationFailureValue {
                message: &f.message,
                policy: &e.policy,
                binding: e.binding.as_deref().unwrap_or_default(),
                // Errors that are not one validation's are reported at index 0 by
                // kube-apiserver (its only decision for the unit).
                expression_index: f.index.unwrap_or(0),
                validation_actions: &e.validation_actions,
            };
            // Strings and numbers always serialise.
            if let Ok(raw) = serde_json::value::to_raw_value(&value) {
                sinks.validation_failures.push(raw);
            }
        }
    }
}

/// The reason of a failure that is an evaluation error under `failurePolicy: Fail`:
/// kube-apiserver sets none for VAPs, which it answers as 422 Invalid.
pub fn error_reason(kind: PolicyKind) -> Reason {
    match kind {
        PolicyKind::ValidatingAdmissionPolicy => Reason::Invalid,
        PolicyKind::GatePolicy => Reason::Forbidden,
    }
}

/// One entry of `validation_failure` for a VAP, with kube-apiserver's fields in its
/// order, so that the annotation's text is the same as kube-apiserver's.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ValidationFailureValue<'a> {
    message: &'a str,
    policy: &'a str,
    binding: &'a str,
    expression_index: usize,
    validation_actions: &'a [String],
}

fn failure_entry(policy: &str, f: &ValidationFailure, action: &str) -> Box<RawValue> {
    let index = f
        .index
        .map_or(serde_json::Value::Null, serde_json::Value::from);
    let value = serde_json::json!({"policy": policy, "message": f.message, "expressionIndex": index, "action": action});
    // A JSON value always serialises.
    serde_json::value::to_raw_value(&value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Warnings as kube-apiserver's warning recorder keeps them
/// (`endpoints/filters/warning.go`): duplicates, empty ones and ones with a
/// control character dropped; whole while all of
/// them fit in 4096 characters; once they do not, every warning is cut to 256
/// characters and those past the budget are dropped. kube-apiserver relays a
/// webhook's warnings through that same recorder, so cutting earlier would
/// only lose text the client would have seen.
#[derive(Default)]
struct Warnings(Vec<String>, usize, bool);

/// The first 256 characters, as kube-apiserver cuts (no ellipsis).
fn cut_warning(text: &str) -> String {
    text.chars().take(WARNING_MAX_CHARS).collect()
}

impl Warnings {
    fn push(&mut self, text: String) {
        // kube-apiserver cannot put an empty warning or one with a control
        // character (a tab, a newline) in a Warning header, and drops it
        // (`net.NewWarningHeader`); the client never sees it.
        if self.0.contains(&text) || text.is_empty() || text.chars().any(char::is_control) {
            return;
        }
        let mut text = if self.2 { cut_warning(&text) } else { text };
        if !self.2 && self.1 + text.chars().count() > WARNINGS_BUDGET_CHARS {
            // Over budget: from now on every warning is cut, the earlier ones too.
            self.2 = true;
            for w in &mut self.0 {
                *w = cut_warning(w);
            }
            self.0.dedup();
            self.1 = self.0.iter().map(|w| w.chars().count()).sum();
            text = cut_warning(&text);
        }
        let len = text.chars().count();
        if self.0.contains(&text) || self.1 + len > WARNINGS_BUDGET_CHARS {
            return;
        }
        self.1 += len;
        self.0.push(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_cut_deduplicated_and_budgeted() {
        let mut w = Warnings::default();
        // Whole while everything fits, as kube-apiserver relays them.
        w.push("a".repeat(300));
        assert_eq!(w.0[0].chars().count(), 300);
        w.push("same".into());
        w.push("same".into());
        assert_eq!(w.0.len(), 2);
        for i in 0..100 {
            w.push(format!("{i}{}", "x".repeat(200)));
        }
        assert!(w.0.iter().map(|s| s.chars().count()).sum::<usize>() <= WARNINGS_BUDGET_CHARS);
        // Past the budget every warning is cut to 256, the first one too.
        assert_eq!(
            w.0[0],
            "a".repeat(256),
            "cut as kube-apiserver cuts: no ellipsis"
        );
        // kube-apiserver cannot send a warning with a control character: dropped.
        let mut w = Warnings::default();
        w.push("first line\nsecond line".into());
        w.push("tab\there".into());
        w.push(String::new());
        assert!(w.0.is_empty(), "{:?}", w.0);
    }
}
