//! How a case's `expect` is checked against the engine's decision, and what a
//! failed case reports: one line per unmet expectation, then what the decision
//! was (message, warnings, audit annotations, each policy's messages and
//! errors, the patch) so the failure can be read without a re-run.

use super::spec::Expect;
use crate::policy::Decision;

impl Expect {
    /// Checks every expectation given against `d`; `object` is the request's
    /// object (for `patchedObject`).
    ///
    /// # Errors
    /// The lines to print under the failed case: each unmet expectation in
    /// the order of the fields, then the decision as it was.
    pub(crate) fn check(
        &self,
        d: &Decision,
        object: Option<&serde_json::Value>,
    ) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let patch_text = d.patch.as_ref().and_then(|p| serde_json::to_string(p).ok());
        self.check_verdict(d, &mut problems);
        self.check_warnings(d, &mut problems);
        self.check_audit_annotations(d, &mut problems);
        self.check_patch(d, patch_text.as_deref(), object, &mut problems);
        if problems.is_empty() {
            return Ok(());
        }
        describe_decision(d, patch_text.as_deref(), &mut problems);
        Err(problems)
    }

    /// `allowed`, `deniedBy`, `code`, `messageContains`.
    fn check_verdict(&self, d: &Decision, problems: &mut Vec<String>) {
        if let Some(allowed) = self.allowed
            && allowed != d.allowed
        {
            problems.push(format!(
                "expected allowed={allowed}, got allowed={}",
                d.allowed
            ));
        }
        if let Some(expected) = &self.denied_by {
            let mut want = expected.clone();
            want.sort();
            let mut got = d.denied_by();
            got.sort();
            if want != got {
                problems.push(format!("expected deniedBy {want:?}, got {got:?}"));
            }
        }
        if let Some(code) = self.code {
            let got = d.status.as_ref().map(|s| s.code);
            if got != Some(code) {
                let got = got.map_or_else(|| "none (allowed)".to_string(), |c| c.to_string());
                problems.push(format!("expected code {code}, got {got}"));
            }
        }
        if let Some(parts) = &self.message_contains {
            let message = message(d);
            for part in parts.items() {
                if !message.contains(part) {
                    problems.push(format!("expected the message to contain {part:?}"));
                }
            }
        }
    }

    /// `warnings` (an exact count) and `warningsContain`.
    fn check_warnings(&self, d: &Decision, problems: &mut Vec<String>) {
        if let Some(n) = self.warnings
            && d.warnings.len() != n
        {
            problems.push(format!("expected {n} warning(s), got {}", d.warnings.len()));
        }
        if let Some(parts) = &self.warnings_contain {
            for part in parts.items() {
                if !d.warnings.iter().any(|w| w.contains(part)) {
                    problems.push(format!("expected a warning containing {part:?}"));
                }
            }
        }
    }

    /// `auditAnnotations` (key → substring of the value) and `noAuditAnnotations`.
    fn check_audit_annotations(&self, d: &Decision, problems: &mut Vec<String>) {
        if let Some(annotations) = &self.audit_annotations {
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
        if let Some(absent) = &self.no_audit_annotations {
            for key in absent {
                if d.audit_annotations.contains_key(key) {
                    problems.push(format!("expected no audit annotation {key:?}"));
                }
            }
        }
    }

    /// `patched`, `patchContains` (against `patch_text`, the patch's JSON) and
    /// `patchedObject` (the patch applied to `object`).
    fn check_patch(
        &self,
        d: &Decision,
        patch_text: Option<&str>,
        object: Option<&serde_json::Value>,
        problems: &mut Vec<String>,
    ) {
        if let Some(patched) = self.patched
            && patched != patch_text.is_some()
        {
            problems.push(format!(
                "expected patched={patched}, got patched={}",
                patch_text.is_some()
            ));
        }
        if let Some(parts) = &self.patch_contains {
            for part in parts.items() {
                if !patch_text.unwrap_or("").contains(part) {
                    problems.push(format!("expected the patch to contain {part:?}"));
                }
            }
        }
        if let Some(want) = &self.patched_object {
            let mut got = object.cloned().unwrap_or(serde_json::Value::Null);
            match d.patch.as_ref().map(|p| json_patch::patch(&mut got, p)) {
                Some(Err(e)) => {
                    problems.push(format!("the patch does not apply to the object: {e}"));
                }
                _ if &got != want => problems.push(format!(
                    "expected the patched object {}, got {}",
                    serde_json::to_string(want).unwrap_or_default(),
                    serde_json::to_string(&got).unwrap_or_default()
                )),
                _ => {}
            }
        }
    }
}

/// The decision's status message; `""` when it allows.
fn message(d: &Decision) -> &str {
    d.status.as_ref().map(|s| s.message.as_str()).unwrap_or("")
}

/// Appends what the decision was, indented under the `got:` line: only the
/// parts that are there, and only policies with messages or errors.
fn describe_decision(d: &Decision, patch_text: Option<&str>, lines: &mut Vec<String>) {
    lines.push(format!(
        "got: allowed={} message={:?}",
        d.allowed,
        message(d)
    ));
    if !d.warnings.is_empty() {
        lines.push(format!("     warnings={:?}", d.warnings));
    }
    if !d.audit_annotations.is_empty() {
        lines.push(format!("     auditAnnotations={:?}", d.audit_annotations));
    }
    for p in &d.policies {
        if !p.errors.is_empty() || !p.messages.is_empty() {
            lines.push(format!(
                "     {}: {} {:?} {:?}",
                p.policy,
                p.outcome.as_str(),
                p.messages,
                p.errors
            ));
        }
    }
    if let Some(t) = patch_text {
        lines.push(format!("     patch={t}"));
    }
}
