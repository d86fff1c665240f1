//! Rewrites of a parsed expression into what the engine evaluates: the
//! engine's own optional selection, `authorizer.requestResource`, variables
//! and data paths as calls of the engine's functions. Run after analysis.

use kube_cel::cel::common::ast::{EntryExpr, Expr, LiteralValue, operators};
use kube_cel::cel::parser::Expression;

/// What `x.?field` is rewritten to at compile time: `cel` 0.13 errors on
/// `map.?absent` instead of returning `optional.none()`, and policies guard
/// absent fields with exactly that. `cel_env.rs` registers its function.
pub const OPTIONAL_SELECT: &str = "@gate_optional_select";

/// Every rewrite of a compiled policy expression, in order; `variables` are
/// the names the policy's `variables` define.
pub(super) fn lower(expr: &mut Expression, variables: &[String]) {
    rewrite_data_paths(expr);
    rewrite_request_resource(expr);
    rewrite_optional_selects(expr);
    rewrite_variables(expr, variables);
}

/// Replaces `x.?f` with the engine's own optional selection (see
/// [`OPTIONAL_SELECT`]); run after analysis, which knows `_?._`.
pub fn rewrite_optional_selects(expr: &mut Expression) {
    if let Expr::Call(call) = &mut expr.expr
        && call.func_name == operators::OPT_SELECT
        && call.args.len() == 2
        && call.target.is_none()
    {
        call.func_name = OPTIONAL_SELECT.to_string();
    }
    for child in children_mut(expr) {
        rewrite_optional_selects(child);
    }
}

/// Replaces `authorizer.requestResource` (a variable of its own in
/// kube-apiserver's environment) with the engine's binding for it.
fn rewrite_request_resource(expr: &mut Expression) {
    if let Expr::Select(select) = &expr.expr
        && !select.test
        && select.field == "requestResource"
        && matches!(&select.operand.expr, Expr::Ident(root) if root == super::authz::AUTHORIZER_BINDING)
    {
        expr.expr = Expr::Ident(super::authz::REQUEST_RESOURCE_BINDING.to_string());
        return;
    }
    for child in children_mut(expr) {
        rewrite_request_resource(child);
    }
}

/// Replaces `variables.<name>` with a lazy, cached lookup by index (see
/// `variables.rs`); `has(variables.<name>)` is always true for a declared name.
fn rewrite_variables(expr: &mut Expression, names: &[String]) {
    if let Expr::Select(select) = &expr.expr
        && let Expr::Ident(root) = &select.operand.expr
        && root == "variables"
        && let Some(index) = names.iter().position(|n| *n == select.field)
    {
        let id = expr.id;
        expr.expr = if select.test {
            Expr::Literal(LiteralValue::Boolean(true.into()))
        } else {
            Expr::Call(kube_cel::cel::common::ast::CallExpr {
                func_name: super::variables::VARIABLE_FUNCTION.to_string(),
                target: None,
                args: vec![Expression {
                    id,
                    expr: Expr::Literal(LiteralValue::Int((index as i64).into())),
                }],
            })
        };
        return;
    }
    for child in children_mut(expr) {
        rewrite_variables(child, names);
    }
}

/// A constant access path rooted at `object`, `oldObject` or `namespaceObject`:
/// the root's code and the steps (see `paths.rs` for their encoding).
fn data_chain(expr: &Expression) -> Option<(usize, Vec<String>)> {
    use super::paths::{OPTIONAL_STEP, REQUIRED_STEP, ROOTS};
    match &expr.expr {
        Expr::Ident(name) => ROOTS
            .iter()
            .position(|r| r == name)
            .map(|i| (i, Vec::new())),
        Expr::Select(s) if !s.test => {
            let (root, mut steps) = data_chain(&s.operand)?;
            steps.push(format!("{REQUIRED_STEP}{}", s.field));
            Some((root, steps))
        }
        Expr::Call(call) if call.target.is_none() && call.args.len() == 2 => {
            let optional = match call.func_name.as_str() {
                operators::OPT_SELECT | operators::OPT_INDEX => true,
                operators::INDEX => false,
                _ => return None,
            };
            let Expr::Literal(LiteralValue::String(key)) = &call.args[1].expr else {
                return None;
            };
            let (root, mut steps) = data_chain(&call.args[0])?;
            steps.push(format!(
                "{}{}",
                if optional {
                    OPTIONAL_STEP
                } else {
                    REQUIRED_STEP
                },
                key.inner()
            ));
            Some((root, steps))
        }
        _ => None,
    }
}

fn path_call(id: u64, function: &str, root: usize, steps: Vec<String>) -> Expr {
    let mut args = Vec::with_capacity(steps.len() + 1);
    args.push(Expression {
        id,
        expr: Expr::Literal(LiteralValue::Int((root as i64).into())),
    });
    args.extend(steps.into_iter().map(|s| Expression {
        id,
        expr: Expr::Literal(LiteralValue::String(s.into())),
    }));
    Expr::Call(kube_cel::cel::common::ast::CallExpr {
        func_name: function.to_string(),
        target: None,
        args,
    })
}

/// Replaces access paths into the request's objects with calls that walk the
/// shared tree without copying it (see `paths.rs`).
fn rewrite_data_paths(expr: &mut Expression) {
    use super::paths::{HAS_FUNCTION, PATH_FUNCTION, REQUIRED_STEP};
    if let Some((root, steps)) = data_chain(expr) {
        expr.expr = path_call(expr.id, PATH_FUNCTION, root, steps);
        return;
    }
    if let Expr::Select(s) = &expr.expr
        && s.test
        && let Some((root, mut steps)) = data_chain(&s.operand)
    {
        steps.push(format!("{REQUIRED_STEP}{}", s.field));
        expr.expr = path_call(expr.id, HAS_FUNCTION, root, steps);
        return;
    }
    for child in children_mut(expr) {
        rewrite_data_paths(child);
    }
}

/// The direct sub-expressions of `expr`, for the compile-time rewrites.
pub(super) fn children_mut(expr: &mut Expression) -> Vec<&mut Expression> {
    match &mut expr.expr {
        Expr::Call(call) => call
            .target
            .as_deref_mut()
            .into_iter()
            .chain(call.args.iter_mut())
            .collect(),
        Expr::Select(select) => vec![&mut *select.operand],
        Expr::List(list) => list.elements.iter_mut().collect(),
        Expr::Map(map) => map
            .entries
            .iter_mut()
            .filter_map(|entry| match &mut entry.expr {
                EntryExpr::MapEntry(e) => Some([&mut e.key, &mut e.value]),
                EntryExpr::StructField(_) => None,
            })
            .flatten()
            .collect(),
        Expr::Comprehension(c) => vec![
            &mut c.iter_range,
            &mut c.accu_init,
            &mut c.loop_cond,
            &mut c.loop_step,
            &mut c.result,
        ],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Struct(_) | Expr::Unspecified => Vec::new(),
    }
}
