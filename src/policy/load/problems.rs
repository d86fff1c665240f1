//! The problems of one policy document, each with its file, line, policy and
//! field; and the helpers that check and compile lists of named expressions.

use super::LoadError;
use crate::documents::Document;
use crate::policy::Named;
use crate::policy::analysis::Scope;
use crate::policy::compile::{CompileError, CompiledExpression, compile};
use crate::policy::model::NamedExpression;
use crate::policy::validation::FieldError;
use serde_saphyr::Spanned;
use std::collections::HashSet;

/// Collects errors of one policy with its file and name.
pub(super) struct Problems<'a> {
    pub(super) doc: &'a Document,
    pub(super) policy: String,
    pub(super) errors: Vec<LoadError>,
}

impl Problems<'_> {
    /// Adds one problem at `line_in_doc` (1-based, within the document).
    pub(super) fn push(
        &mut self,
        line_in_doc: u64,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(LoadError {
            file: self.doc.file.clone(),
            line: self.doc.line(line_in_doc),
            policy: Some(self.policy.clone()),
            field: Some(field.into()),
            message: message.into(),
        });
    }

    /// Adds kube-apiserver-style field errors, all reported at `line_in_doc`.
    pub(super) fn push_all(&mut self, line_in_doc: u64, errors: Vec<FieldError>) {
        for e in errors {
            self.push(line_in_doc, e.field, e.message);
        }
    }

    /// Compiles `expr` in `scope` (`consume`: see [`compile`]). A compile error
    /// becomes a problem of `field` at the expression's own line in the file,
    /// with the line and column within the expression; then `None`.
    pub(super) fn compile(
        &mut self,
        expr: &Spanned<String>,
        field: String,
        scope: &Scope,
        consume: bool,
    ) -> Option<CompiledExpression> {
        match compile(&expr.value, scope, consume) {
            Ok(c) => Some(c),
            Err(CompileError {
                message,
                line,
                column,
            }) => {
                let at_line = expr.referenced.line();
                // Block scalars (`>-`, `|`) start on the line after the key.
                let source_line = at_line
                    + (line as u64).saturating_sub(1)
                    + u64::from(is_block_scalar(self.doc, at_line));
                self.push(
                    source_line,
                    field,
                    format!("{message} (expression line {line}, column {column})"),
                );
                None
            }
        }
    }
}

/// Whether line `line_in_doc` (1-based) of `doc` starts a YAML block scalar
/// (`|`, `>`, with an optional chomping indicator), whose text is on the next lines.
pub(in crate::policy) fn is_block_scalar(doc: &Document, line_in_doc: u64) -> bool {
    doc.text
        .lines()
        .nth(line_in_doc.saturating_sub(1) as usize)
        .map(|l| {
            let t = l.trim_end();
            t.ends_with('|')
                || t.ends_with('>')
                || t.ends_with("|-")
                || t.ends_with(">-")
                || t.ends_with("|+")
                || t.ends_with(">+")
        })
        .unwrap_or(false)
}

/// Compiles a list of named expressions (`field` is its path, such as
/// `spec.exemptions`): names unique, expressions required. Those that do not
/// compile are left out.
pub(super) fn compile_named(
    p: &mut Problems,
    list: &[NamedExpression],
    field: &str,
    scope: &Scope,
    name_line: u64,
) -> Vec<Named> {
    let names: Vec<String> = list.iter().map(|n| n.name.clone()).collect();
    check_unique(p, name_line, field, &names);
    list.iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let at = format!("{field}[{i}].expression");
            if n.expression.value.trim().is_empty() {
                p.push(n.expression.referenced.line(), at, "Required value");
                return None;
            }
            p.compile(&n.expression, at, scope, true)
                .map(|expression| Named {
                    name: n.name.clone(),
                    expression,
                })
        })
        .collect()
}

/// One problem, at `line`, per name already seen earlier in `names`.
pub(super) fn check_unique(p: &mut Problems, line: u64, field: &str, names: &[String]) {
    let mut seen = HashSet::new();
    for (i, n) in names.iter().enumerate() {
        if !seen.insert(n) {
            p.push(
                line,
                format!("{field}[{i}].name"),
                format!("duplicate name '{n}'"),
            );
        }
    }
}
