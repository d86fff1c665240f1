//! `spec.validations`: each expression, its message or messageExpression, and
//! the reason a failure answers with.

use super::problems::Problems;
use crate::policy::CompiledValidation;
use crate::policy::analysis::Scope;
use crate::policy::compile::CompiledExpression;
use crate::policy::model::{Reason, ValidationSpec};
use crate::policy::validation;
use serde_saphyr::Spanned;

/// Compiles `spec.validations`; one that does not compile is left out (its
/// message and reason are still checked).
pub(super) fn compile_validations(
    p: &mut Problems,
    list: &[ValidationSpec],
    scope: &Scope,
    is_vap: bool,
) -> Vec<CompiledValidation> {
    // kube-apiserver declares neither `authorizer` nor (oddly, even with paramKind)
    // `params` for messageExpression: it compiles them with the matchConditions
    // options, which allow params only when paramKind is set. Keep `params` as is.
    let message_scope = Scope {
        authorizer: false,
        ..*scope
    };
    let mut validations = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let line = v.expression.referenced.line();
        let expression = if v.expression.value.trim().is_empty() {
            p.push(
                line,
                format!("spec.validations[{i}].expression"),
                "Required value: expression is not specified",
            );
            None
        } else {
            p.compile(
                &v.expression,
                format!("spec.validations[{i}].expression"),
                scope,
                true,
            )
        };
        let message_expression = v
            .message_expression
            .as_ref()
            .and_then(|m| compile_message_expression(p, i, m, &message_scope));
        if let Some(m) = &v.message {
            let mut out = Vec::new();
            validation::validation_message(m, &format!("spec.validations[{i}].message"), &mut out);
            p.push_all(line, out);
        }
        let reason = validation_reason(p, i, v.reason, line, is_vap);
        if let Some(expression) = expression {
            validations.push(CompiledValidation {
                expression,
                // kube-apiserver trims the message before it uses it.
                message: v.message.as_deref().map(str::trim).map(str::to_string),
                message_expression,
                reason,
            });
        }
    }
    validations
}

/// `spec.validations[i].messageExpression`: blank (but not empty) is an error,
/// either means "none".
fn compile_message_expression(
    p: &mut Problems,
    i: usize,
    m: &Spanned<String>,
    scope: &Scope,
) -> Option<CompiledExpression> {
    let field = format!("spec.validations[{i}].messageExpression");
    if m.value.trim().is_empty() {
        if !m.value.is_empty() {
            p.push(
                m.referenced.line(),
                field,
                validation::invalid("", &m.value, "must be non-empty if specified").message,
            );
        }
        return None;
    }
    p.compile(m, field, scope, true)
}

/// The reason a failed `spec.validations[i]` answers with.
fn validation_reason(
    p: &mut Problems,
    i: usize,
    reason: Option<Reason>,
    line: u64,
    is_vap: bool,
) -> Reason {
    match reason {
        Some(Reason::Unauthorized) if is_vap => {
            p.push(
                line,
                format!("spec.validations[{i}].reason"),
                validation::not_supported("", "Unauthorized", validation::VAP_REASONS).message,
            );
            Reason::Unauthorized
        }
        Some(r) => r,
        // kube-apiserver answers a failed VAP validation without a reason with 422
        // Invalid; a GatePolicy keeps its documented default, 403 Forbidden.
        None if is_vap => Reason::Invalid,
        None => Reason::Forbidden,
    }
}
