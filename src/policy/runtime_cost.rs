//! Kubernetes' runtime cost of a CEL evaluation, in its units, and the limits
//! kube-apiserver enforces with it.
//!
//! kube-apiserver runs every expression with cel-go's cost tracker (plus the
//! Kubernetes libraries' `CostEstimator.CallCost`): an identifier or a field
//! selection costs 1, a constant 0, a list literal 10 and a map literal 30 (0 when
//! all their elements are constants, which cel-go folds), a call 1 unless its
//! cost depends on the size of its arguments (`contains`, `matches`, `split`,
//! `sum`, `==`, …), and every step of a comprehension costs what its condition
//! and step evaluate. An expression that goes past [`PER_CALL_LIMIT`] stops with
//! [`LIMIT_EXCEEDED`]; the expressions of one policy evaluation share
//! [`RUNTIME_BUDGET`] (matchConditions [`MATCH_CONDITIONS_BUDGET`]) and going past
//! it ends the evaluation with [`OUT_OF_BUDGET`] (`k8s.io/apiserver`
//! `pkg/apis/cel/config.go`, `plugin/cel/activation.go`).
//!
//! The `cel` crate counts nothing, so the count is split in two:
//! - [`annotate`] walks the compiled expression once at load and adds up the
//!   constant part of every *region* (a stretch that runs as a whole: the
//!   expression, each branch of `?:`, the right side of `&&`/`||`, each
//!   comprehension's condition and step). Each region becomes
//!   `@gate_cost(n, region)` ([`COST_FUNCTION`]), which charges `n` when the
//!   region starts;
//! - functions whose cost depends on their arguments charge it themselves with
//!   [`charge_call`] once they have the argument values.
//!
//! The count lives in a thread-local, like the cancellation token (`cancel.rs`):
//! one evaluation runs on one thread, and [`measure`] gives every expression (and
//! every variable it evaluates) its own count. Each region start is also a
//! cancellation check point, so a loop whose body calls nothing else still
//! stops at its next step.
//!
//! Where the count differs from kube-apiserver's is measured against its own code
//! (`tests/differential_cost.rs`) and listed there.

use super::cancel;
use kube_cel::cel::common::ast::{CallExpr, EntryExpr, Expr, LiteralValue, operators};
use kube_cel::cel::parser::Expression;
use kube_cel::cel::{FunctionContext, ResolveResult, Value};
use std::cell::Cell;

/// cel-go's per-expression cost limit as kube-apiserver sets it (`PerCallLimit`).
pub const PER_CALL_LIMIT: u64 = 1_000_000;
/// What the validations of one policy evaluation may cost together
/// (`RuntimeCELCostBudget`); messageExpressions get what the validations left,
/// audit annotations a budget of their own.
pub const RUNTIME_BUDGET: u64 = 10_000_000;
/// What the matchConditions of one policy evaluation may cost together
/// (`RuntimeCELCostBudgetMatchConditions`).
pub const MATCH_CONDITIONS_BUDGET: u64 = 2_500_000;
/// cel-go's error when one expression goes past [`PER_CALL_LIMIT`].
pub const LIMIT_EXCEEDED: &str = "operation cancelled: actual cost limit exceeded";
/// kube-apiserver's error when a policy evaluation goes past its budget.
pub const OUT_OF_BUDGET: &str =
    "validation failed due to running out of cost budget, no further validation rules will be run";
/// `@gate_cost(n, region)`: charges `n`, then evaluates `region`.
pub const COST_FUNCTION: &str = "@gate_cost";

/// cel-go's `StringTraversalCostFactor`.
const STRING_TRAVERSAL: f64 = 0.1;
/// cel-go's `RegexStringLengthCostFactor`.
const REGEX_LENGTH: f64 = 0.25;
const LIST_CREATE: u64 = 10;
const MAP_CREATE: u64 = 30;
const STRUCT_CREATE: u64 = 40;

#[derive(Clone, Copy)]
struct Tracker {
    used: u64,
    limit: u64,
    exceeded: bool,
}

const IDLE: Tracker = Tracker {
    used: 0,
    limit: PER_CALL_LIMIT,
    exceeded: false,
};

thread_local! {
    static TRACKER: Cell<Tracker> = const { Cell::new(IDLE) };
    /// Cost of the variables evaluated since [`take_composition_cost`] was last called.
    static COMPOSITION: Cell<u64> = const { Cell::new(0) };
}

/// Adds `n` units to the running expression. Errors with [`LIMIT_EXCEEDED`] once
/// the expression is past [`PER_CALL_LIMIT`], and on every call after that (so
/// `&&`, `||` and `all` cannot absorb it: cel-go aborts the evaluation).
pub fn charge(n: u64) -> Result<(), String> {
    TRACKER.with(|t| {
        let mut state = t.get();
        state.used = state.used.saturating_add(n);
        if state.used > state.limit {
            state.exceeded = true;
        }
        t.set(state);
        if state.exceeded {
            Err(LIMIT_EXCEEDED.to_string())
        } else {
            Ok(())
        }
    })
}

/// The result of [`measure`].
pub struct Measured<T> {
    pub value: T,
    /// Units the evaluation used (its variables' are reported separately).
    pub cost: u64,
    /// It went past [`PER_CALL_LIMIT`]: its value must be read as [`LIMIT_EXCEEDED`].
    pub exceeded: bool,
}

/// Runs `evaluate` (one expression) with a count of its own, then restores the
/// enclosing count (an expression evaluating a variable).
pub fn measure<T>(evaluate: impl FnOnce() -> T) -> Measured<T> {
    let outer = TRACKER.with(|t| t.replace(IDLE));
    let value = evaluate();
    let inner = TRACKER.with(|t| t.replace(outer));
    Measured {
        value,
        cost: inner.used,
        exceeded: inner.exceeded,
    }
}

/// Records what a variable cost: kube-apiserver charges it to the policy's
/// budget, not to the expression that first read it.
pub fn add_composition_cost(n: u64) {
    COMPOSITION.with(|c| c.set(c.get().saturating_add(n)));
}

/// The variables' cost since the last call, and resets it.
pub fn take_composition_cost() -> u64 {
    COMPOSITION.with(|c| c.replace(0))
}

/// The registered function behind [`COST_FUNCTION`].
pub fn cost_function(ftx: &FunctionContext) -> ResolveResult {
    let (Some(Expr::Literal(LiteralValue::Int(n))), Some(region)) =
        (ftx.args.first().map(|a| &a.expr), ftx.args.get(1))
    else {
        return Err(ftx.error("bad cost region"));
    };
    charge(u64::try_from(*n.inner()).unwrap_or(0)).map_err(|e| ftx.error(e))?;
    cancel::check().map_err(|e| ftx.error(e))?;
    Value::resolve(region, ftx.ptx)
}

/// Charges what a call of `function` (a size-dependent one, see
/// [`charged_at_run_time`]) costs kube-apiserver for these values.
pub fn charge_call(
    function: &str,
    target: Option<&Value>,
    args: &[Value],
    result: Option<&Value>,
) -> Result<(), String> {
    charge(call_cost(function, target, args, result))
}

/// `a + b` of two strings with the string overload: a tenth of both sizes,
/// less the unit [`annotate`] counted for the call.
pub fn charge_string_concatenation(a: &Value, b: &Value) -> Result<(), String> {
    if let (Value::String(_), Value::String(_)) = (a, b) {
        charge(scaled(size(a) + size(b), STRING_TRAVERSAL).saturating_sub(1))
    } else {
        Ok(())
    }
}

/// cel-go's `actualSize`: code points of a string, bytes, elements of a list
/// or map, the value of a present optional; 1 for anything else.
fn size(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.chars().count() as u64,
        Value::Bytes(b) => b.len() as u64,
        Value::List(l) => l.len() as u64,
        Value::Map(m) => m.map.len() as u64,
        Value::Opaque(o) => match o.downcast_ref::<kube_cel::cel::objects::OptionalValue>() {
            Some(opt) => opt.value().map(size).unwrap_or(1),
            None => 1,
        },
        _ => 1,
    }
}

/// [`size`] of a value as the interpreter holds it (`Value::resolve_val`).
pub fn val_size(value: &dyn kube_cel::cel::common::value::Val) -> u64 {
    use kube_cel::cel::common::types::{CelBytes, CelList, CelMap, CelOptional, CelString};
    if let Some(s) = value.downcast_ref::<CelString>() {
        s.inner().chars().count() as u64
    } else if let Some(b) = value.downcast_ref::<CelBytes>() {
        b.inner().len() as u64
    } else if let Some(l) = value.downcast_ref::<CelList>() {
        l.inner().len() as u64
    } else if let Some(m) = value.downcast_ref::<CelMap>() {
        m.inner().len() as u64
    } else if let Some(o) = value.downcast_ref::<CelOptional>() {
        o.inner().map(val_size).unwrap_or(1)
    } else {
        1
    }
}

/// Charges `a == b` / `a != b` (cel-go's `Equals`: a tenth of the smaller size).
pub fn charge_equality(
    a: &dyn kube_cel::cel::common::value::Val,
    b: &dyn kube_cel::cel::common::value::Val,
) -> Result<(), kube_cel::cel::ExecutionError> {
    // Kubernetes' own types (quantity, IP, …) compare at cost 1, which is
    // what their size of 1 gives.
    let n = scaled(val_size(a).min(val_size(b)), STRING_TRAVERSAL);
    charge(n).map_err(|e| kube_cel::cel::ExecutionError::function_error("_==_", e))
}

/// The Kubernetes library's `traversalCost`: a tenth of a string's bytes
/// (rounded down), the sum over a list's elements or a map's keys and values,
/// 1 for anything else.
fn traversal(value: &Value) -> u64 {
    match value {
        Value::String(s) => (s.len() as f64 * STRING_TRAVERSAL) as u64,
        Value::Bytes(b) => (b.len() as f64 * STRING_TRAVERSAL) as u64,
        Value::List(l) => l.iter().map(traversal).sum(),
        Value::Map(m) => m
            .map
            .iter()
            .map(|(k, v)| traversal(&Value::from(k.clone())) + traversal(v))
            .sum(),
        _ => 1,
    }
}

fn scaled(n: u64, factor: f64) -> u64 {
    (n as f64 * factor).ceil() as u64
}

/// The size-dependent rows of cel-go's `costCall` and of the Kubernetes
/// libraries' `CallCost` (k8s.io/apiserver `pkg/cel/library/cost.go`).
/// `args` excludes the receiver, which is `target`.
fn call_cost(
    function: &str,
    target: Option<&Value>,
    args: &[Value],
    result: Option<&Value>,
) -> u64 {
    // Kubernetes' estimator sees the receiver as the first argument.
    let first = target.or(args.first());
    let second = if target.is_some() {
        args.first()
    } else {
        args.get(1)
    };
    let first_size = first.map(size).unwrap_or(1);
    let second_size = second.map(size).unwrap_or(1);
    match function {
        "check" => 350_000,
        "isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf" => {
            first.map(traversal).unwrap_or(1)
        }
        "lists.range" => {
            LIST_CREATE
                + 1
                + first
                    .map(|n| match n {
                        Value::Int(n) => u64::try_from(*n).unwrap_or(0),
                        _ => 0,
                    })
                    .unwrap_or(0)
        }
        "url" | "lowerAscii" | "upperAscii" | "substring" | "trim" | "quantity" | "isQuantity"
        | "semver" | "isSemver" | "cidr" | "isIP" | "isCIDR" | "ip" => {
            scaled(first_size, STRING_TRAVERSAL)
        }
        "ip.isCanonical" | "isCanonical" | "replace" | "split" => {
            scaled(first_size, 2.0 * STRING_TRAVERSAL)
        }
        "join" => scaled(result.map(size).unwrap_or(1), 2.0 * STRING_TRAVERSAL),
        "find" | "findAll" | "matches" => {
            scaled(1 + first_size, STRING_TRAVERSAL) * scaled(second_size, REGEX_LENGTH)
        }
        "contains" => match (first, second) {
            (Some(Value::String(_)), Some(Value::String(_))) => {
                scaled(first_size, STRING_TRAVERSAL) * scaled(second_size, STRING_TRAVERSAL)
            }
            _ => 1,
        },
        "startsWith" | "endsWith" => scaled(second_size, STRING_TRAVERSAL),
        "format" => scaled(first_size, STRING_TRAVERSAL),
        _ => 1,
    }
}

/// Calls whose cost [`charge_call`] charges when they run: not counted by [`annotate`].
pub(super) fn charged_at_run_time(name: &str) -> bool {
    matches!(
        name,
        "check"
            | "isSorted"
            | "sum"
            | "max"
            | "min"
            | "indexOf"
            | "lastIndexOf"
            | "lists.range"
            | "url"
            | "lowerAscii"
            | "upperAscii"
            | "substring"
            | "trim"
            | "quantity"
            | "isQuantity"
            | "semver"
            | "isSemver"
            | "cidr"
            | "isIP"
            | "isCIDR"
            | "ip"
            | "ip.isCanonical"
            | "replace"
            | "split"
            | "join"
            | "find"
            | "findAll"
            | "matches"
            | "contains"
            | "startsWith"
            | "endsWith"
            | "format"
    ) || name == super::semantics::EQ
        || name == super::semantics::NE
}

/// Makes every region of `expr` charge its constant cost when it starts (see
/// the module documentation). Run once, on the fully rewritten expression.
pub fn annotate(expr: &mut Expression) {
    let n = walk(expr);
    wrap(expr, n, true);
}

/// Replaces `expr` by `@gate_cost(n, expr)`. A region that costs nothing and
/// is not a loop step needs no check point.
fn wrap(expr: &mut Expression, n: u64, always: bool) {
    if n == 0 && !always {
        return;
    }
    let id = expr.id;
    let inner = std::mem::replace(
        expr,
        Expression {
            id,
            expr: Expr::Literal(LiteralValue::Null),
        },
    );
    expr.expr = Expr::Call(CallExpr {
        func_name: COST_FUNCTION.to_string(),
        target: None,
        args: vec![
            Expression {
                id,
                expr: Expr::Literal(LiteralValue::Int(
                    i64::try_from(n).unwrap_or(i64::MAX).into(),
                )),
            },
            inner,
        ],
    });
}

/// A region of its own: charged when it runs, nothing for the enclosing one.
fn region(expr: &mut Expression, loop_step: bool) -> u64 {
    let n = walk(expr);
    wrap(expr, n, loop_step);
    0
}

/// Whether cel-go plans `expr` as an attribute (a variable and a chain of
/// selections and indexes on it): a branch of `?:` that is one costs nothing.
fn is_attribute(expr: &Expression) -> bool {
    use super::{paths, semantics, variables};
    match &expr.expr {
        Expr::Ident(_) => true,
        Expr::Select(s) => !s.test && is_attribute(&s.operand),
        Expr::Call(c) => match c.func_name.as_str() {
            paths::PATH_FUNCTION | variables::VARIABLE_FUNCTION => true,
            semantics::INDEX
            | semantics::OPT_INDEX
            | operators::INDEX
            | operators::OPT_INDEX
            | super::rewrite::OPTIONAL_SELECT => c.args.first().is_some_and(is_attribute),
            operators::CONDITIONAL => c.args.iter().skip(1).all(is_attribute),
            _ => false,
        },
        _ => false,
    }
}

/// The selections and indexes of an attribute (see [`is_attribute`]), without its variable.
fn qualifiers(expr: &Expression) -> u64 {
    use super::{paths, semantics, variables};
    match &expr.expr {
        Expr::Select(s) => 1 + qualifiers(&s.operand),
        Expr::Call(c) => match c.func_name.as_str() {
            paths::PATH_FUNCTION => c.args.len().saturating_sub(1) as u64,
            variables::VARIABLE_FUNCTION => 1,
            semantics::INDEX
            | semantics::OPT_INDEX
            | operators::INDEX
            | operators::OPT_INDEX
            | super::rewrite::OPTIONAL_SELECT => 1 + c.args.first().map(qualifiers).unwrap_or(0),
            _ => 0,
        },
        _ => 0,
    }
}

fn is_constant(expr: &Expression) -> bool {
    match &expr.expr {
        Expr::Literal(_) => true,
        Expr::List(l) => l.elements.iter().all(is_constant),
        Expr::Map(m) => m.entries.iter().all(|e| match &e.expr {
            EntryExpr::MapEntry(e) => is_constant(&e.key) && is_constant(&e.value),
            EntryExpr::StructField(_) => false,
        }),
        _ => false,
    }
}

/// The constant cost of `expr`'s own region; wraps the regions inside it.
fn walk(expr: &mut Expression) -> u64 {
    use super::{cel_env, paths, quantifiers, semantics, variables};
    if is_constant(expr) {
        return 0;
    }
    match &mut expr.expr {
        Expr::Literal(_) | Expr::Unspecified => 0,
        // A type name is a constant in cel-go.
        Expr::Ident(name) if super::type_values::NAMES.contains(&name.as_str()) => 0,
        Expr::Ident(_) => 1,
        // `has(x.f)` is free in Kubernetes (PresenceTestHasCost(false)).
        Expr::Select(s) => walk(&mut s.operand) + u64::from(!s.test),
        Expr::List(l) => LIST_CREATE + l.elements.iter_mut().map(walk).sum::<u64>(),
        Expr::Map(m) => {
            MAP_CREATE
                + m.entries
                    .iter_mut()
                    .map(|e| match &mut e.expr {
                        EntryExpr::MapEntry(e) => walk(&mut e.key) + walk(&mut e.value),
                        EntryExpr::StructField(f) => walk(&mut f.value),
                    })
                    .sum::<u64>()
        }
        Expr::Struct(s) => {
            STRUCT_CREATE
                + s.entries
                    .iter_mut()
                    .map(|e| match &mut e.expr {
                        EntryExpr::MapEntry(e) => walk(&mut e.key) + walk(&mut e.value),
                        EntryExpr::StructField(f) => walk(&mut f.value),
                    })
                    .sum::<u64>()
        }
        Expr::Comprehension(c) => {
            let once = walk(&mut c.iter_range) + walk(&mut c.accu_init) + walk(&mut c.result);
            region(&mut c.loop_cond, true);
            region(&mut c.loop_step, true);
            once
        }
        Expr::Call(call) => {
            let name = call.func_name.as_str();
            match name {
                operators::LOGICAL_AND | operators::LOGICAL_OR if call.args.len() == 2 => {
                    let lhs = walk(&mut call.args[0]);
                    region(&mut call.args[1], false);
                    lhs
                }
                operators::CONDITIONAL if call.args.len() == 3 => {
                    let condition = walk(&mut call.args[0]);
                    for branch in &mut call.args[1..] {
                        if is_attribute(branch) {
                            // cel-go resolves it inside the conditional: its
                            // selections are counted, its variable is not.
                            let n = qualifiers(branch);
                            wrap(branch, n, false);
                        } else {
                            region(branch, false);
                        }
                    }
                    condition
                }
                // `object.a.b`: the variable and one per step.
                paths::PATH_FUNCTION => call.args.len() as u64,
                // `has(object.a.b)`: the operand path; the test itself is free.
                paths::HAS_FUNCTION => call.args.len().saturating_sub(1) as u64,
                // `variables.x`: the name and the selection; the variable's own
                // evaluation is charged to the budget when it runs.
                variables::VARIABLE_FUNCTION => 2,
                semantics::HAS => call.args.first_mut().map(walk).unwrap_or(0),
                semantics::INDEX
                | semantics::OPT_INDEX
                | operators::INDEX
                | operators::OPT_INDEX
                | super::rewrite::OPTIONAL_SELECT => {
                    // On a computed value (`f(x).a`) cel-go builds an attribute
                    // first, which costs one more.
                    let mut n = if call.args.first().is_some_and(is_attribute) {
                        1
                    } else {
                        2
                    };
                    for (i, arg) in call.args.iter_mut().enumerate() {
                        // A key that is itself an attribute is read by the qualifier, uncounted.
                        if i == 0 || !is_attribute(arg) {
                            n += walk(arg);
                        }
                    }
                    n
                }
                // `all`/`exists`: the range and the result once; per element the
                // condition (`@not_strictly_false(@result)`, with a `!` for
                // `exists`), `@result` and the predicate, charged in the loop.
                quantifiers::QUANTIFIER if call.args.len() == 5 => {
                    let range = walk(&mut call.args[0]);
                    let exists = matches!(
                        &call.args[3].expr,
                        Expr::Literal(LiteralValue::String(k)) if k.inner() == "exists"
                    );
                    let per_element = walk(&mut call.args[4]) + if exists { 4 } else { 3 };
                    wrap(&mut call.args[4], per_element, true);
                    range + 1
                }
                // `map`/`filter`: the range and the result (`@result`) once; per
                // element the predicate, and for a kept one `@result + [f]`
                // (the accumulator 1, the list 10, the addition 1, and `f`).
                super::collect::COLLECT if call.args.len() == 4 => {
                    let range = walk(&mut call.args[0]);
                    region(&mut call.args[2], true);
                    let per_kept = walk(&mut call.args[3]) + 1 + LIST_CREATE + 1;
                    wrap(&mut call.args[3], per_kept, true);
                    range + 1
                }
                // Two-variable comprehensions: range, accumulator, condition, step, result.
                semantics::COMPREHENSION2 if call.args.len() == 8 => {
                    let mut once = 0;
                    for (i, arg) in call.args.iter_mut().enumerate() {
                        match i {
                            0 | 4 | 7 => once += walk(arg),
                            5 | 6 => {
                                region(arg, true);
                            }
                            _ => {}
                        }
                    }
                    once
                }
                // cel-go folds a type conversion of a constant.
                "int" | "uint" | "double" | "string" | "bytes" | "bool" | "duration"
                | "timestamp"
                    if call.target.is_none() && call.args.iter().all(is_constant) =>
                {
                    0
                }
                _ => {
                    // `lists.range(n)`: `lists` names a library, not a variable.
                    let namespace = match call.target.as_deref().map(|t| &t.expr) {
                        Some(Expr::Ident(ns)) if cel_env::is_namespace(ns) => Some(ns.clone()),
                        _ => None,
                    };
                    let qualified = match &namespace {
                        Some(ns) => format!("{ns}.{name}"),
                        None => name.to_string(),
                    };
                    // `orValue` costs nothing in kube-apiserver (measured with e2e/oracle).
                    let own = if name == COST_FUNCTION
                        || name == "orValue"
                        || charged_at_run_time(&qualified)
                    {
                        0
                    } else {
                        1
                    };
                    let target = match namespace {
                        Some(_) => 0,
                        None => call.target.as_deref_mut().map(walk).unwrap_or(0),
                    };
                    own + target + call.args.iter_mut().map(walk).sum::<u64>()
                }
            }
        }
    }
}

/// After a quantifier decided with elements left, cel-go evaluates its loop
/// condition once more (`@not_strictly_false(@result)`, 2; with the `!` of
/// `exists`, 3).
pub fn charge_final_condition(exists: bool) -> Result<(), String> {
    charge(if exists { 3 } else { 2 })
}

/// `result` of a call of `function` after charging its cost; for the
/// functions the engine implements itself.
pub fn charged(
    function: &str,
    target: Option<&Value>,
    args: &[Value],
    result: ResolveResult,
) -> ResolveResult {
    charge_call(function, target, args, result.as_ref().ok())
        .map_err(|e| kube_cel::cel::ExecutionError::function_error(function, e))?;
    result
}
