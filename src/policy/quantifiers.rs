//! `all` and `exists` (one and two variables) with cel-go's error absorption:
//! `[a, b].all(x, p)` is false when `p` is false for some element, even if it
//! fails for another (`[{}, {'n': 'x'}].all(x, x.n == 'w')` is false, not "no
//! such key"); an error decides only when no element decides. The `cel` crate
//! evaluates the macro's `accu && p` step and stops at the first error, so the
//! comprehension is rewritten to [`QUANTIFIER`] (`semantics::rewrite`).

use super::semantics::{call, lit_str};
use kube_cel::cel::common::ast::{ComprehensionExpr, Expr, LiteralValue, operators};
use kube_cel::cel::objects::Value;
use kube_cel::cel::parser::Expression;
use kube_cel::cel::{ExecutionError, FunctionContext, ResolveResult};

/// `@gate_quantifier(range, var1, var2 or '', 'all' | 'exists', predicate)`.
pub const QUANTIFIER: &str = "@gate_quantifier";

/// The call replacing `c` when it is the expansion of `all` or `exists`
/// (accumulator `true && p` or `false || p`, result the accumulator).
pub fn rewrite(id: u64, c: &ComprehensionExpr) -> Option<Expression> {
    let Expr::Call(step) = &c.loop_step.expr else {
        return None;
    };
    let kind = match (&c.accu_init.expr, step.func_name.as_str()) {
        (Expr::Literal(LiteralValue::Boolean(b)), operators::LOGICAL_AND) if *b.inner() => "all",
        (Expr::Literal(LiteralValue::Boolean(b)), operators::LOGICAL_OR) if !*b.inner() => "exists",
        _ => return None,
    };
    let is_accu = |e: &Expression| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
    let [accu, predicate] = step.args.as_slice() else {
        return None;
    };
    if !is_accu(accu) || !is_accu(&c.result) || step.target.is_some() {
        return None;
    }
    Some(call(
        id,
        QUANTIFIER,
        vec![
            c.iter_range.clone(),
            lit_str(id, &c.iter_var),
            lit_str(id, c.iter_var2.as_deref().unwrap_or_default()),
            lit_str(id, kind),
            predicate.clone(),
        ],
    ))
}

fn literal<'a>(ftx: &'a FunctionContext, index: usize) -> Result<&'a str, ExecutionError> {
    match ftx.args.get(index).map(|a| &a.expr) {
        Some(Expr::Literal(LiteralValue::String(s))) => Ok(s.inner()),
        _ => Err(ftx.error("bad quantifier")),
    }
}

/// Evaluates `all` / `exists`: the deciding value (false for `all`, true for
/// `exists`) wins over errors; otherwise the first error; otherwise the other.
pub fn quantifier_function(ftx: &FunctionContext) -> ResolveResult {
    if ftx.args.len() != 5 {
        return Err(ftx.error("bad quantifier"));
    }
    let (var1, var2, kind) = (literal(ftx, 1)?, literal(ftx, 2)?, literal(ftx, 3)?);
    let decides = kind == "exists";
    let range = Value::resolve(&ftx.args[0], ftx.ptx)?;
    let is_map = matches!(range, Value::Map(_));
    let items = super::semantics::iteration_pairs(ftx, range)?;
    let mut scope = ftx.ptx.new_inner_scope();
    let mut first_error = None;
    let mut items = items.into_iter().peekable();
    while let Some((key_or_index, value)) = items.next() {
        if var2.is_empty() {
            // One variable: a list's element, a map's key.
            scope.add_variable_from_value(var1, if is_map { key_or_index } else { value });
        } else {
            scope.add_variable_from_value(var1, key_or_index);
            scope.add_variable_from_value(var2, value);
        }
        match Value::resolve(&ftx.args[4], &scope) {
            Ok(Value::Bool(b)) if b == decides => {
                // cel-go tests its loop condition once more before it stops.
                if items.peek().is_some() {
                    super::runtime_cost::charge_final_condition(decides)
                        .map_err(|e| ftx.error(e))?;
                }
                return Ok(Value::Bool(decides));
            }
            Ok(Value::Bool(_)) => {}
            Ok(_) => {
                first_error.get_or_insert_with(|| {
                    ftx.error(format!(
                        "no such overload: {kind}() of a non-bool predicate"
                    ))
                });
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Value::Bool(!decides)),
    }
}
