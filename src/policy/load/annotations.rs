//! `spec.auditAnnotations`: their keys (kube-apiserver's rules for a VAP, the
//! gate's for a GatePolicy) and value expressions.

use super::problems::{Problems, check_unique};
use crate::policy::Named;
use crate::policy::analysis::Scope;
use crate::policy::compile::CompiledExpression;
use crate::policy::decision::RESERVED_ANNOTATION_KEYS;
use crate::policy::model::AuditAnnotationSpec;
use crate::policy::validation;

/// `spec.auditAnnotations`: unique keys (at most 20 in a VAP), each key checked
/// as its kind's rules require, each value expression compiled.
pub(super) fn compile_audit_annotations(
    p: &mut Problems,
    list: &[AuditAnnotationSpec],
    scope: &Scope,
    is_vap: bool,
    name_line: u64,
) -> Vec<Named> {
    let keys: Vec<String> = list.iter().map(|a| a.key.clone()).collect();
    check_unique(p, name_line, "spec.auditAnnotations", &keys);
    if is_vap && keys.len() > validation::MAX_AUDIT_ANNOTATIONS {
        p.push(
            name_line,
            "spec.auditAnnotations",
            format!(
                "must not have more than {} auditAnnotations",
                validation::MAX_AUDIT_ANNOTATIONS
            ),
        );
    }
    let mut audit_annotations = Vec::new();
    for (i, a) in list.iter().enumerate() {
        check_audit_annotation_key(p, i, a, is_vap);
        if let Some(c) = compile_audit_annotation_value(p, i, a, scope) {
            audit_annotations.push(Named {
                name: a.key.clone(),
                expression: c,
            });
        }
    }
    audit_annotations
}

/// The key of `spec.auditAnnotations[i]`: kube-apiserver's rule for a VAP, the
/// gate's (see [`check_annotation_key`]) for a GatePolicy.
fn check_audit_annotation_key(p: &mut Problems, i: usize, a: &AuditAnnotationSpec, is_vap: bool) {
    let line = a.value_expression.referenced.line();
    let key_field = format!("spec.auditAnnotations[{i}].key");
    if is_vap {
        // kube-apiserver publishes the value as `<policy name>/<key>`, and checks
        // that whole string as a qualified name.
        for m in validation::qualified_name_errors(&format!("{}/{}", p.policy, a.key)) {
            p.push(
                line,
                key_field.clone(),
                validation::invalid("", &a.key, &m).message,
            );
        }
        if RESERVED_ANNOTATION_KEYS.contains(&a.key.as_str()) {
            p.push(
                line,
                key_field,
                format!("'{}' is reserved for safety-gate's own audit annotations (a limitation of safety-gate: kube-apiserver accepts it)", a.key),
            );
        }
    } else if let Err(m) = check_annotation_key(&a.key) {
        p.push(line, key_field, m);
    }
}

/// The value expression of `spec.auditAnnotations[i]`: required, at most 5 KiB
/// once trimmed, then compiled.
fn compile_audit_annotation_value(
    p: &mut Problems,
    i: usize,
    a: &AuditAnnotationSpec,
    scope: &Scope,
) -> Option<CompiledExpression> {
    let line = a.value_expression.referenced.line();
    let trimmed = a.value_expression.value.trim();
    let value_field = format!("spec.auditAnnotations[{i}].valueExpression");
    if trimmed.is_empty() {
        p.push(
            line,
            value_field,
            "Required value: valueExpression is not specified",
        );
        return None;
    }
    if trimmed.len() > validation::MAX_VALUE_EXPRESSION_BYTES {
        p.push(
            line,
            value_field,
            format!(
                "Required value: must not exceed {} bytes in length",
                validation::MAX_VALUE_EXPRESSION_BYTES
            ),
        );
        return None;
    }
    p.compile(&a.value_expression, value_field, scope, true)
}

/// Audit annotation keys become `<webhook name>/<key>`: a qualified name with no `/` of its own.
pub fn check_annotation_key(key: &str) -> Result<(), String> {
    if key.contains('/') {
        return Err(format!(
            "'{key}' must not contain '/': kube-apiserver stores it as <webhook name>/{key}"
        ));
    }
    if RESERVED_ANNOTATION_KEYS.contains(&key) {
        return Err(format!(
            "'{key}' is reserved for safety-gate's own audit annotations"
        ));
    }
    check_qualified_name(key, false)
}

/// A Kubernetes qualified name: optional DNS-subdomain prefix and `/`, then ≤ 63 chars.
pub fn check_qualified_name(key: &str, allow_prefix: bool) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) if allow_prefix => (Some(p), n),
        _ => (None, key),
    };
    if let Some(prefix) = prefix
        && !validation::dns1123_subdomain_errors(prefix).is_empty()
    {
        return Err(format!(
            "prefix '{prefix}' of '{key}' must be a DNS subdomain"
        ));
    }
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "'{key}' must have a name part of 1 to 63 characters"
        ));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_ends = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !(ok_chars && ok_ends) {
        return Err(format!(
            "'{key}' must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_keys_follow_kube_apiserver_rules() {
        assert!(check_annotation_key("protected-object").is_ok());
        assert!(check_annotation_key("a/b").is_err());
        assert!(check_annotation_key(&"x".repeat(64)).is_err());
        assert!(check_annotation_key(&"x".repeat(63)).is_ok());
        assert!(check_annotation_key("-bad").is_err());
        assert!(check_annotation_key("validation_failure").is_err());
        assert!(check_qualified_name("safety-gate.dev/last-changed-by", true).is_ok());
        assert!(check_qualified_name("Bad_Prefix/x", true).is_err());
    }
}
