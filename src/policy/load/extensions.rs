//! The GatePolicy-only fields that change the object: `annotate` and
//! `mutations`.

use super::annotations::check_qualified_name;
use super::problems::Problems;
use crate::policy::analysis::Scope;
use crate::policy::compile::CompiledExpression;
use crate::policy::model::MutationSpec;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// `spec.annotate` (GatePolicy only): each key a qualified name, each value an
/// expression or null. An entry whose expression does
/// not compile is left out.
pub(super) fn compile_annotate(
    p: &mut Problems,
    annotate: &BTreeMap<String, Spanned<Option<String>>>,
    scope: &Scope,
) -> Vec<(String, Option<CompiledExpression>)> {
    let mut out = Vec::new();
    for (key, value) in annotate {
        let field = format!("spec.annotate[{key}]");
        if let Err(m) = check_qualified_name(key, true) {
            p.push(
                value.referenced.line(),
                field.clone(),
                format!("invalid annotation key: {m}"),
            );
        }
        let compiled = match &value.value {
            None => None,
            Some(src) => {
                let spanned = Spanned {
                    value: src.clone(),
                    referenced: value.referenced,
                    defined: value.defined,
                };
                match p.compile(&spanned, field, scope, true) {
                    Some(c) => Some(c),
                    None => continue,
                }
            }
        };
        out.push((key.clone(), compiled));
    }
    out
}

/// `spec.mutations` (GatePolicy only): JSONPatch expressions, compiled.
pub(super) fn compile_mutations(
    p: &mut Problems,
    list: &[MutationSpec],
    scope: &Scope,
) -> Vec<CompiledExpression> {
    let mut mutations = Vec::new();
    for (i, m) in list.iter().enumerate() {
        if m.patch_type != "JSONPatch" {
            p.push(
                m.expression.referenced.line(),
                format!("spec.mutations[{i}].patchType"),
                "only JSONPatch is supported",
            );
        }
        if let Some(c) = p.compile(
            &m.expression,
            format!("spec.mutations[{i}].expression"),
            scope,
            true,
        ) {
            mutations.push(c);
        }
    }
    mutations
}
