//! `map` and `filter` without copying their result on every step.
//!
//! The `cel` crate evaluates the macros as CEL expands them: an accumulator
//! `@result` and a step `@result + [f(x)]`, which copies the list built so far
//! on every element, so `lists.range(30000).map(y, y + 1)` took 37 s (its
//! runtime cost in Kubernetes is 420,000, well under the limit). The
//! comprehension is rewritten (`semantics::rewrite`) into [`COLLECT`], which
//! appends in place. Errors are cel-go's: the first error of a predicate or a
//! transform is the result, and the loop still runs to the end, as cel-go's does
//! (so its cost is counted the same way, see `runtime_cost.rs`).

use super::semantics::{call, lit_str};
use kube_cel::cel::common::ast::{ComprehensionExpr, Expr, LiteralValue, operators};
use kube_cel::cel::objects::Value;
use kube_cel::cel::parser::Expression;
use kube_cel::cel::{FunctionContext, ResolveResult};
use std::sync::Arc;

/// `@gate_collect(range, var, predicate, transform)`: `[transform(x) for x in
/// range if predicate(x)]`; the predicate of `map(x, f)` is `true`.
pub const COLLECT: &str = "@gate_collect";

/// `@result + [f]` (after `_+_` was renamed or not): `f`.
fn appended<'e>(step: &'e Expression, accu: &str) -> Option<&'e Expression> {
    let Expr::Call(add) = &step.expr else {
        return None;
    };
    if add.target.is_some()
        || (add.func_name != operators::ADD && add.func_name != super::overloads::ADD)
    {
        return None;
    }
    let [lhs, rhs] = add.args.as_slice() else {
        return None;
    };
    let Expr::List(list) = &rhs.expr else {
        return None;
    };
    match (&lhs.expr, list.elements.as_slice()) {
        (Expr::Ident(name), [f]) if name == accu => Some(f),
        _ => None,
    }
}

/// The call replacing `c` when it is the expansion of `map` (two or three
/// arguments) or `filter`.
pub fn rewrite(id: u64, c: &ComprehensionExpr) -> Option<Expression> {
    let is_accu = |e: &Expression| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
    let starts_empty = matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty());
    let always = matches!(&c.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if *b.inner());
    if c.iter_var2.is_some() || !starts_empty || !always || !is_accu(&c.result) {
        return None;
    }
    let (predicate, transform) = match &c.loop_step.expr {
        Expr::Call(ternary)
            if ternary.func_name == operators::CONDITIONAL && ternary.args.len() == 3 =>
        {
            if !is_accu(&ternary.args[2]) {
                return None;
            }
            (
                ternary.args[0].clone(),
                appended(&ternary.args[1], &c.accu_var)?.clone(),
            )
        }
        _ => (
            Expression {
                id,
                expr: Expr::Literal(LiteralValue::Boolean(true.into())),
            },
            appended(&c.loop_step, &c.accu_var)?.clone(),
        ),
    };
    Some(call(
        id,
        COLLECT,
        vec![
            c.iter_range.clone(),
            lit_str(id, &c.iter_var),
            predicate,
            transform,
        ],
    ))
}

/// Evaluates [`COLLECT`]: a list's elements or a map's keys.
pub fn collect_function(ftx: &FunctionContext) -> ResolveResult {
    let [range, var, predicate, transform] = ftx.args else {
        return Err(ftx.error("bad collect"));
    };
    let Expr::Literal(LiteralValue::String(var)) = &var.expr else {
        return Err(ftx.error("bad collect"));
    };
    let items: Vec<Value> = match Value::resolve(range, ftx.ptx)? {
        Value::List(list) => list.iter().cloned().collect(),
        Value::Map(map) => map.map.keys().map(|k| Value::from(k.clone())).collect(),
        other => {
            return Err(ftx.error(format!(
                "no such overload: cannot iterate over a {} value",
                other.type_of()
            )));
        }
    };
    let mut scope = ftx.ptx.new_inner_scope();
    let mut out = Vec::new();
    let mut first_error = None;
    for item in items {
        scope.add_variable_from_value(var.inner(), item);
        let keep = match Value::resolve(predicate, &scope) {
            Ok(Value::Bool(b)) => b,
            Ok(_) => {
                first_error
                    .get_or_insert_with(|| ftx.error("no such overload: a non-bool predicate"));
                false
            }
            Err(e) => {
                first_error.get_or_insert(e);
                false
            }
        };
        if keep {
            match Value::resolve(transform, &scope) {
                Ok(v) if first_error.is_none() => out.push(v),
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Value::List(Arc::new(out))),
    }
}
