//! Macros of Kubernetes' CEL environment that the `cel` 0.13 parser leaves as
//! plain calls: `opt.optMap(v, e)`, `opt.optFlatMap(v, e)` (cel-go's optional
//! library) and `list.sortBy(v, key)` (cel-go's lists extension v3, new
//! policies from Kubernetes 1.35). Expanded before the load-time analysis into
//! comprehensions, so `v` is a loop variable there, plus a function that
//! finishes the result:
//!
//! - `opt.optMap(v, e)` → a loop over `@gate_opt_items(opt)` (`[]` or
//!   `[opt.value()]`) collecting `[e]`, finished by `@gate_opt_result` into
//!   `optional.none()` / `optional.of(e)`; `optFlatMap` collects
//!   `e.hasValue() ? [e.value()] : []` (so `e` must be an optional) and
//!   finishes it into `e` again;
//! - `list.sortBy(v, key)` → `@gate_sort_by(list, list.map(v, key))`: the
//!   list ordered by its keys, stably; keys of one orderable type, as cel-go's
//!   `@sortByAssociatedKeys` requires.

use super::semantics::{ACCU, call, ident, ident_name, lit_bool, lit_str, node};
use crate::policy::rewrite::children_mut;
use kube_cel::cel::common::ast::{ComprehensionExpr, Expr, ListExpr, operators};
use kube_cel::cel::objects::{OptionalValue, Value};
use kube_cel::cel::parser::Expression;
use kube_cel::cel::{ExecutionError, FunctionContext, ResolveResult};
use std::cmp::Ordering;
use std::sync::Arc;

pub const OPT_ITEMS: &str = "@gate_opt_items";
pub const OPT_RESULT: &str = "@gate_opt_result";
pub const SORT_BY: &str = "@gate_sort_by";

/// Rewrites every `optMap`, `optFlatMap` and `sortBy` call in `expr`.
pub fn expand(expr: &mut Expression) {
    for child in children_mut(expr) {
        expand(child);
    }
    let id = expr.id;
    let Expr::Call(c) = &mut expr.expr else {
        return;
    };
    let kind = c.func_name.as_str();
    if !matches!(kind, "optMap" | "optFlatMap" | "sortBy") || c.args.len() != 2 {
        return;
    }
    let (Some(target), Some(var)) = (c.target.as_deref(), ident_name(&c.args[0])) else {
        return;
    };
    let var = var.to_string();
    let body = c.args[1].clone();
    let target = target.clone();
    let flat = kind == "optFlatMap";
    *expr = if kind == "sortBy" {
        let keys = collect(id, target.clone(), &var, body);
        call(id, SORT_BY, vec![target, keys])
    } else if flat {
        // Collected as `[]` or `[v]` rather than as the optional itself: an
        // optional inside a list does not survive the crate's comprehension.
        let unwrapped = call(
            id,
            operators::CONDITIONAL,
            vec![
                member(id, body.clone(), "hasValue", Vec::new()),
                node(
                    id,
                    Expr::List(ListExpr {
                        elements: vec![member(id, body, "value", Vec::new())],
                        optional_indices: Vec::new(),
                    }),
                ),
                node(id, Expr::List(ListExpr::default())),
            ],
        );
        let range = call(id, OPT_ITEMS, vec![target]);
        let collected = collect(id, range, &var, unwrapped);
        call(id, OPT_RESULT, vec![collected, lit_str(id, "flat")])
    } else {
        let range = call(id, OPT_ITEMS, vec![target]);
        let collected = collect(id, range, &var, body);
        call(
            id,
            OPT_RESULT,
            vec![collected, lit_str(id, if flat { "flat" } else { "map" })],
        )
    };
}

/// `target.name(args…)`.
fn member(id: u64, target: Expression, name: &str, args: Vec<Expression>) -> Expression {
    node(
        id,
        Expr::Call(kube_cel::cel::common::ast::CallExpr {
            func_name: name.to_string(),
            target: Some(Box::new(target)),
            args,
        }),
    )
}

/// `range.map(var, body)` as the comprehension the `map` macro expands to.
fn collect(id: u64, range: Expression, var: &str, body: Expression) -> Expression {
    let list = |elements: Vec<Expression>| {
        node(
            id,
            Expr::List(ListExpr {
                elements,
                optional_indices: Vec::new(),
            }),
        )
    };
    node(
        id,
        Expr::Comprehension(Box::new(ComprehensionExpr {
            iter_range: range,
            iter_var: var.to_string(),
            iter_var2: None,
            accu_var: ACCU.to_string(),
            accu_init: list(Vec::new()),
            loop_cond: lit_bool(id, true),
            loop_step: call(id, operators::ADD, vec![ident(id, ACCU), list(vec![body])]),
            result: ident(id, ACCU),
        })),
    )
}

fn optional_of(v: &Value) -> Option<Option<Value>> {
    match v {
        Value::Opaque(o) => o
            .downcast_ref::<OptionalValue>()
            .map(|opt| opt.value().cloned()),
        _ => None,
    }
}

/// `[]` for `optional.none()`, `[v]` for `optional.of(v)`.
pub fn opt_items_function(ftx: &FunctionContext) -> ResolveResult {
    let [opt] = ftx.args else {
        return Err(ftx.error("bad optMap"));
    };
    let opt = Value::resolve(opt, ftx.ptx)?;
    match optional_of(&opt) {
        Some(inner) => Ok(Value::List(Arc::new(inner.into_iter().collect()))),
        None => Err(ftx.error(format!(
            "no such overload: optMap/optFlatMap of a {} value",
            opt.type_of()
        ))),
    }
}

/// `[]` → `optional.none()`; `[e]` → `optional.of(e)` (`optMap`) or `e`, an
/// optional (`optFlatMap`).
pub fn opt_result_function(ftx: &FunctionContext) -> ResolveResult {
    let [items, kind] = ftx.args else {
        return Err(ftx.error("bad optMap"));
    };
    let flat = matches!(Value::resolve(kind, ftx.ptx)?, Value::String(k) if k.as_str() == "flat");
    let Value::List(items) = Value::resolve(items, ftx.ptx)? else {
        return Err(ftx.error("bad optMap"));
    };
    let none = || Value::Opaque(Arc::new(OptionalValue::none()));
    match items.first() {
        None => Ok(none()),
        // optFlatMap collected `[]` or `[v]` for the expression's optional.
        Some(Value::List(inner)) if flat => Ok(match inner.first() {
            Some(v) => Value::Opaque(Arc::new(OptionalValue::of(v.clone()))),
            None => none(),
        }),
        Some(_) if flat => Err(ftx.error("bad optFlatMap")),
        Some(v) => Ok(Value::Opaque(Arc::new(OptionalValue::of(v.clone())))),
    }
}

fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::UInt(x), Value::UInt(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Bytes(x), Value::Bytes(y)) => Some(x.cmp(y)),
        (Value::Duration(x), Value::Duration(y)) => Some(x.cmp(y)),
        (Value::Timestamp(x), Value::Timestamp(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// `list.sortBy(v, key)`: `list` ordered by `keys` (same length), stably.
pub fn sort_by_function(ftx: &FunctionContext) -> ResolveResult {
    let [list, keys] = ftx.args else {
        return Err(ftx.error("bad sortBy"));
    };
    let (Value::List(list), Value::List(keys)) = (
        Value::resolve(list, ftx.ptx)?,
        Value::resolve(keys, ftx.ptx)?,
    ) else {
        return Err(ftx.error("no such overload: sortBy of a value that is not a list"));
    };
    let same_type = keys.first().is_none_or(|first| {
        keys.iter()
            .all(|k| std::mem::discriminant(k) == std::mem::discriminant(first))
    });
    if !same_type {
        return Err(ExecutionError::function_error(
            "sortBy",
            "list elements must have the same type",
        ));
    }
    if let Some(k) = keys.first()
        && order(k, k).is_none()
    {
        return Err(ExecutionError::function_error(
            "sortBy",
            "list elements must be comparable",
        ));
    }
    let mut indexed: Vec<(usize, &Value)> = keys.iter().enumerate().collect();
    indexed.sort_by(|(_, a), (_, b)| order(a, b).unwrap_or(Ordering::Equal));
    Ok(Value::List(Arc::new(
        indexed
            .into_iter()
            .filter_map(|(i, _)| list.get(i).cloned())
            .collect(),
    )))
}

#[cfg(test)]
mod tests {
    use crate::policy::cel_env::evaluate;

    use crate::policy::cel_env::assert_true as is_true;

    /// Expected values: cel-go in kube-apiserver 1.37.2 (e2e/oracle).
    #[test]
    fn optional_macros_map_present_values_and_keep_absent_ones() {
        is_true("optional.of(2).optMap(x, x * 3).value() == 6");
        is_true("!optional.none().optMap(x, x * 3).hasValue()");
        is_true("optional.of(2).optFlatMap(x, optional.of(x + 1)).value() == 3");
        is_true("!optional.of(2).optFlatMap(x, optional.none()).hasValue()");
        is_true("{'a': {'b': 1}}.?a.optMap(m, m.b).orValue(0) == 1");
        is_true("{'a': {'b': 1}}.?x.optMap(m, m.b).orValue(0) == 0");
        assert!(evaluate("optional.of(2).optFlatMap(x, x)", Vec::new()).is_err());
        assert!(evaluate("[1].optMap(x, x)", Vec::new()).is_err());
    }

    #[test]
    fn sort_by_orders_stably_by_keys_of_one_type() {
        is_true("[3, 1, 2].sortBy(x, x) == [1, 2, 3]");
        is_true("['bb', 'a', 'ccc'].sortBy(s, -s.size()) == ['ccc', 'bb', 'a']");
        is_true(
            "[{'n': 2, 'k': 'a'}, {'n': 1, 'k': 'b'}, {'n': 2, 'k': 'c'}].sortBy(e, e.n).map(e, e.k) == ['b', 'a', 'c']",
        );
        is_true("[].sortBy(x, x) == []");
        assert!(evaluate("[1, 'a'].sortBy(x, x)", Vec::new()).is_err());
        assert!(evaluate("[[1], [2]].sortBy(x, x)", Vec::new()).is_err());
    }
}
