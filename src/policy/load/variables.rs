//! What the other expressions see: `matchConditions` (and a GatePolicy's
//! `exemptions`) are compiled without variables; `variables` in order, each
//! seeing those before it.

use super::problems::{Problems, compile_named};
use crate::policy::Named;
use crate::policy::analysis::{Origin, Scope};
use crate::policy::model::NamedExpression;
use crate::policy::validation;

/// `spec.matchConditions`: kube-apiserver's limit on their number and its rule
/// for their names, then compiled without variables.
pub(super) fn compile_match_conditions(
    p: &mut Problems,
    conditions: &[NamedExpression],
    scope: &Scope,
    name_line: u64,
) -> Vec<Named> {
    if conditions.len() > validation::MAX_MATCH_CONDITIONS {
        p.push(
            name_line,
            "spec.matchConditions",
            format!(
                "Too many: {}: must have at most {} items",
                conditions.len(),
                validation::MAX_MATCH_CONDITIONS
            ),
        );
    }
    for (i, c) in conditions.iter().enumerate() {
        let field = format!("spec.matchConditions[{i}].name");
        if c.name.is_empty() {
            p.push(c.expression.referenced.line(), field, "Required value");
            continue;
        }
        for m in validation::qualified_name_errors(&c.name) {
            p.push(
                c.expression.referenced.line(),
                field.clone(),
                validation::invalid("", &c.name, &m).message,
            );
        }
    }
    compile_named(p, conditions, "spec.matchConditions", scope, name_line)
}

/// `spec.variables` as compiled: the names and origins later expressions see,
/// and the variables that compiled.
pub(super) struct Variables {
    /// Every variable's name, in order, compiled or not.
    pub(super) names: Vec<String>,
    /// What each variable aliases, parallel to `names` (empty if it did not compile).
    pub(super) origins: Vec<Vec<Origin>>,
    pub(super) compiled: Vec<Named>,
}

/// Compiles `spec.variables` in order, each in a scope holding the ones before it.
pub(super) fn compile_variables(
    p: &mut Problems,
    list: &[NamedExpression],
    lookups: &[String],
    params: bool,
    is_vap: bool,
) -> Variables {
    let mut vars = Variables {
        names: Vec::new(),
        origins: Vec::new(),
        compiled: Vec::new(),
    };
    for (i, v) in list.iter().enumerate() {
        check_variable_name(p, i, v, &vars.names, is_vap);
        let field = format!("spec.variables[{i}].expression");
        let scope = Scope {
            variables: &vars.names,
            variable_origins: &vars.origins,
            lookups,
            allow_variables: true,
            params,
            authorizer: true,
        };
        let compiled = if v.expression.value.trim().is_empty() {
            p.push(
                v.expression.referenced.line(),
                field,
                "Required value: expression is not specified",
            );
            None
        } else {
            p.compile(&v.expression, field, &scope, false)
        };
        vars.origins.push(
            compiled
                .as_ref()
                .map(|c| c.origins.clone())
                .unwrap_or_default(),
        );
        vars.names.push(v.name.clone());
        if let Some(c) = compiled {
            vars.compiled.push(Named {
                name: v.name.clone(),
                expression: c,
            });
        }
    }
    vars
}

/// The name of `spec.variables[i]`: a CEL identifier in a VAP, and not one of
/// the `earlier` names.
fn check_variable_name(
    p: &mut Problems,
    i: usize,
    v: &NamedExpression,
    earlier: &[String],
    is_vap: bool,
) {
    // kube-apiserver's rule (its reserved words include `namespace`); a
    // GatePolicy keeps accepting what the gate's CEL accepts.
    if is_vap && !validation::is_cel_identifier(&v.name) {
        p.push(
            v.expression.referenced.line(),
            format!("spec.variables[{i}].name"),
            validation::invalid("", &v.name, "must be a valid CEL identifier").message,
        );
    }
    if earlier.contains(&v.name) {
        p.push(
            v.expression.referenced.line(),
            format!("spec.variables[{i}].name"),
            format!("duplicate variable '{}'", v.name),
        );
    }
}
