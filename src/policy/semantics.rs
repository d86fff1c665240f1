//! Where the `cel` crate (0.13, through `kube-cel` 0.8) evaluates differently
//! from cel-go as Kubernetes runs it, and the gate corrects it without forking
//! the crate: functions registered in the root context (`cel_env.rs`), and AST
//! rewrites applied after the load-time analysis (`analysis.rs`), which send an
//! operator to one of those functions instead of the interpreter's built-in.
//!
//! - `size(string)` counts Unicode code points, not bytes;
//! - `==`, `!=`, `in` and map keys compare int, uint and double by value
//!   (cel-go's heterogeneous equality: `1 == 1.0`, `[1] == [1.0]`,
//!   `{1: 'a'}[1.0]`), and optionals compare by content
//!   (`optional.none() == optional.none()`);
//! - `string(bool)`, `dyn(x)`;
//! - `x.f` on a value that is not a map is an error (the crate gave `false`);
//! - two-variable comprehensions (`all`, `exists`, `existsOne`,
//!   `transformList`, `transformMap`, `transformMapEntry`; Kubernetes 1.33+).
//!
//! The functions work on the interpreter's own values (`resolve_val`), so a
//! comparison copies nothing.

use super::rewrite::children_mut;
use kube_cel::cel::common::ast::{
    CallExpr, ComprehensionExpr, Expr, ListExpr, LiteralValue, MapExpr, operators,
};
use kube_cel::cel::common::types::{
    CelDouble, CelInt, CelList, CelMap, CelMapKey, CelOptional, CelUInt,
};
use kube_cel::cel::common::value::Val;
use kube_cel::cel::extractors::This;
use kube_cel::cel::objects::{Key, Map, OptionalValue};
use kube_cel::cel::parser::Expression;
use kube_cel::cel::{ExecutionError, FunctionContext, ResolveResult, Value};
use std::collections::HashMap;
use std::sync::Arc;

pub const EQ: &str = "@gate_eq";
pub const NE: &str = "@gate_ne";
pub const IN: &str = "@gate_in";
pub const INDEX: &str = "@gate_index";
pub const OPT_INDEX: &str = "@gate_opt_index";
pub const HAS: &str = "@gate_has_field";
pub const COMPREHENSION2: &str = "@gate_comprehension2";
pub const MAP_INSERT: &str = "@gate_map_insert";

/// A number as cel-go compares across types.
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    UInt(u64),
    Double(f64),
}

fn num(v: &dyn Val) -> Option<Num> {
    if let Some(i) = v.downcast_ref::<CelInt>() {
        Some(Num::Int(*i.inner()))
    } else if let Some(u) = v.downcast_ref::<CelUInt>() {
        Some(Num::UInt(*u.inner()))
    } else {
        v.downcast_ref::<CelDouble>()
            .map(|d| Num::Double(*d.inner()))
    }
}

fn num_eq(a: Num, b: Num) -> bool {
    match (a, b) {
        (Num::Int(a), Num::Int(b)) => a == b,
        (Num::UInt(a), Num::UInt(b)) => a == b,
        (Num::Double(a), Num::Double(b)) => a == b,
        (Num::Int(i), Num::UInt(u)) | (Num::UInt(u), Num::Int(i)) => i >= 0 && i as u64 == u,
        (Num::Int(i), Num::Double(d)) | (Num::Double(d), Num::Int(i)) => {
            // Exact: compare in i128 when the double is integral and in range.
            d.fract() == 0.0 && (-9.3e18..=9.3e18).contains(&d) && (d as i128) == i as i128
        }
        (Num::UInt(u), Num::Double(d)) | (Num::Double(d), Num::UInt(u)) => {
            d.fract() == 0.0 && (0.0..=1.85e19).contains(&d) && (d as i128) == u as i128
        }
    }
}

/// The map keys a number can be found under (`{1: x}[1.0]`, `{1u: x}[1]`).
fn key_candidates(n: Num) -> Vec<CelMapKey> {
    let mut keys = Vec::with_capacity(2);
    let (int, uint) = match n {
        Num::Int(i) => (Some(i), u64::try_from(i).ok()),
        Num::UInt(u) => (i64::try_from(u).ok(), Some(u)),
        Num::Double(d) if d.fract() == 0.0 => (
            (-9.2e18..=9.2e18).contains(&d).then_some(d as i64),
            (0.0..=1.8e19).contains(&d).then_some(d as u64),
        ),
        Num::Double(_) => (None, None),
    };
    if let Some(i) = int {
        keys.push(CelMapKey::from(i));
    }
    if let Some(u) = uint {
        keys.push(CelMapKey::from(u));
    }
    keys
}

fn map_get<'a>(map: &'a CelMap, key: &dyn Val) -> Result<Option<&'a dyn Val>, ExecutionError> {
    if let Some(n) = num(key) {
        return Ok(key_candidates(n)
            .iter()
            .find_map(|k| map.inner().get(k))
            .map(|v| v.as_ref()));
    }
    let key =
        CelMapKey::try_from(key.clone_as_boxed()).map_err(|_| ExecutionError::NoSuchOverload)?;
    Ok(map.inner().get(&key).map(|v| v.as_ref()))
}

/// cel-go's equality: numbers by value across int, uint and double; lists and
/// maps element by element with the same rule; optionals by content.
pub fn equal(a: &dyn Val, b: &dyn Val) -> bool {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return num_eq(x, y);
    }
    if let (Some(x), Some(y)) = (a.downcast_ref::<CelList>(), b.downcast_ref::<CelList>()) {
        return x.inner().len() == y.inner().len()
            && x.inner()
                .iter()
                .zip(y.inner())
                .all(|(p, q)| equal(p.as_ref(), q.as_ref()));
    }
    if let (Some(x), Some(y)) = (a.downcast_ref::<CelMap>(), b.downcast_ref::<CelMap>()) {
        return x.inner().len() == y.inner().len()
            && x.inner().iter().all(|(k, v)| {
                let found = match k {
                    CelMapKey::Int(i) => key_candidates(Num::Int(*i.inner()))
                        .iter()
                        .find_map(|k| y.inner().get(k)),
                    CelMapKey::UInt(u) => key_candidates(Num::UInt(*u.inner()))
                        .iter()
                        .find_map(|k| y.inner().get(k)),
                    other => y.inner().get(other),
                };
                found.is_some_and(|w| equal(v.as_ref(), w.as_ref()))
            });
    }
    if let (Some(x), Some(y)) = (
        a.downcast_ref::<CelOptional>(),
        b.downcast_ref::<CelOptional>(),
    ) {
        return match (x.inner(), y.inner()) {
            (None, None) => true,
            (Some(p), Some(q)) => equal(p, q),
            _ => false,
        };
    }
    a.equals(b)
}

fn two_args<'a>(
    ftx: &'a FunctionContext,
) -> Result<(&'a Expression, &'a Expression), ExecutionError> {
    match ftx.args {
        [a, b] => Ok((a, b)),
        _ => Err(ftx.error("expected two operands")),
    }
}

/// `a == b` (rewritten from `_==_`).
pub fn eq_function(ftx: &FunctionContext) -> ResolveResult {
    let (a, b) = two_args(ftx)?;
    let a = Value::resolve_val(a, ftx.ptx)?;
    let b = Value::resolve_val(b, ftx.ptx)?;
    super::runtime_cost::charge_equality(a.as_ref(), b.as_ref())?;
    Ok(Value::Bool(equal(a.as_ref(), b.as_ref())))
}

/// `a != b` (rewritten from `_!=_`).
pub fn ne_function(ftx: &FunctionContext) -> ResolveResult {
    let (a, b) = two_args(ftx)?;
    let a = Value::resolve_val(a, ftx.ptx)?;
    let b = Value::resolve_val(b, ftx.ptx)?;
    super::runtime_cost::charge_equality(a.as_ref(), b.as_ref())?;
    Ok(Value::Bool(!equal(a.as_ref(), b.as_ref())))
}

/// `x in container` (rewritten from `@in`).
pub fn in_function(ftx: &FunctionContext) -> ResolveResult {
    let (x, container) = two_args(ftx)?;
    let x = Value::resolve_val(x, ftx.ptx)?;
    let container = Value::resolve_val(container, ftx.ptx)?;
    if let Some(list) = container.downcast_ref::<CelList>() {
        return Ok(Value::Bool(
            list.inner().iter().any(|e| equal(e.as_ref(), x.as_ref())),
        ));
    }
    if let Some(map) = container.downcast_ref::<CelMap>() {
        // cel-go: a value that cannot be a key (a list, a map, null) is simply
        // not in the map (kube-apiserver 1.37, e2e/oracle).
        return Ok(Value::Bool(matches!(map_get(map, x.as_ref()), Ok(Some(_)))));
    }
    Err(ExecutionError::NoSuchOverload)
}

fn to_value(v: &dyn Val) -> ResolveResult {
    Value::try_from(v)
}

/// `container[key]` with a key that is not a string literal (rewritten from
/// `_[_]`): list indices and map keys across int, uint and double.
pub fn index_function(ftx: &FunctionContext) -> ResolveResult {
    index(ftx, false)
}

/// `container[?key]` with a key that is not a string literal.
pub fn opt_index_function(ftx: &FunctionContext) -> ResolveResult {
    index(ftx, true)
}

fn index(ftx: &FunctionContext, optional_index: bool) -> ResolveResult {
    let (target, key) = two_args(ftx)?;
    let target = Value::resolve_val(target, ftx.ptx)?;
    let key = Value::resolve_val(key, ftx.ptx)?;
    let (target, optional) = match target.downcast_ref::<CelOptional>() {
        Some(opt) => match opt.inner() {
            Some(v) => (v, true),
            None => return Ok(Value::Opaque(Arc::new(OptionalValue::none()))),
        },
        None => (target.as_ref(), optional_index),
    };
    let found = if let Some(list) = target.downcast_ref::<CelList>() {
        let index = match num(key.as_ref()) {
            Some(Num::Int(i)) => Some(i),
            Some(Num::UInt(u)) => i64::try_from(u).ok(),
            Some(Num::Double(d)) if d.fract() == 0.0 && d.abs() < 9.2e18 => Some(d as i64),
            Some(Num::Double(_)) => {
                return Err(ftx.error("unsupported index value: not an integer"));
            }
            None => return Err(ftx.error("unsupported index type in list: not a number")),
        };
        match index.and_then(|i| usize::try_from(i).ok()) {
            Some(i) if i < list.inner().len() => Some(list.inner()[i].as_ref()),
            _ => {
                if optional {
                    None
                } else {
                    return Err(ftx.error(format!(
                        "index out of bounds: {}",
                        index.map_or_else(|| "?".to_string(), |i| i.to_string())
                    )));
                }
            }
        }
    } else if let Some(map) = target.downcast_ref::<CelMap>() {
        match map_get(map, key.as_ref())? {
            Some(v) => Some(v),
            None if optional => None,
            None => {
                return Err(ExecutionError::no_such_key(
                    to_value(key.as_ref())
                        .map(|k| format!("{k:?}"))
                        .unwrap_or_default()
                        .as_str(),
                ));
            }
        }
    } else if optional {
        // cel-go: `x[?k]` on a string, number, bool or null is none.
        None
    } else {
        return Err(ExecutionError::NoSuchOverload);
    };
    match (found, optional) {
        (Some(v), false) => to_value(v),
        (Some(v), true) => Ok(Value::Opaque(Arc::new(OptionalValue::of(to_value(v)?)))),
        (None, _) => Ok(Value::Opaque(Arc::new(OptionalValue::none()))),
    }
}

/// `has(x.f)` on a value that is not bound from the request: the key test on a
/// map, an error on a list, false on anything else (as cel-go).
pub fn has_field_function(ftx: &FunctionContext) -> ResolveResult {
    let (target, field) = two_args(ftx)?;
    let target = Value::resolve_val(target, ftx.ptx)?;
    let Expr::Literal(LiteralValue::String(field)) = &field.expr else {
        return Err(ftx.error("has() needs a field name"));
    };
    // `has(x.?a.b)`: an absent optional has no fields; a present one is tested.
    let target = match target.downcast_ref::<CelOptional>() {
        Some(opt) => match opt.inner() {
            Some(v) => v,
            None => return Ok(Value::Bool(false)),
        },
        None => target.as_ref(),
    };
    if let Some(map) = target.downcast_ref::<CelMap>() {
        return Ok(Value::Bool(
            map.inner().contains_key(&CelMapKey::from(field.inner())),
        ));
    }
    // cel-go: a list has no fields (an error); a string, number, bool or null
    // has none, so the test is false.
    if target.downcast_ref::<CelList>().is_some() {
        return Err(ftx.error("unsupported index type 'string' in list"));
    }
    Ok(Value::Bool(false))
}

/// `size()` of a string counts Unicode code points, as cel-go does.
pub fn size(ftx: &FunctionContext, This(this): This<Value>) -> Result<i64, ExecutionError> {
    let size = match this {
        Value::String(s) => s.chars().count(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.map.len(),
        Value::Bytes(b) => b.len(),
        value => {
            return Err(ftx.error(format!("no such overload: size({})", value.type_of())));
        }
    };
    Ok(size as i64)
}

/// `string(x)`: the crate's conversions plus `string(bool)`.
pub fn string(ftx: &FunctionContext, This(this): This<Value>) -> ResolveResult {
    match this {
        Value::Bool(b) => Ok(Value::String(Arc::new(b.to_string()))),
        Value::Bytes(b) => match std::str::from_utf8(&b) {
            Ok(s) => Ok(Value::String(Arc::new(s.to_string()))),
            Err(_) => Err(ftx.error("invalid UTF-8 in bytes, cannot convert to string")),
        },
        // ip() and cidr() values: the Kubernetes library's own string().
        Value::Opaque(_) => {
            super::overloads::kube_library_call(&super::overloads::STRING_OF_X, this)
        }
        Value::Float(d) => Ok(Value::String(Arc::new(super::overloads::go_format_double(
            d,
        )))),
        other => kube_cel::cel::functions::string(ftx, This(other)),
    }
}

/// `dyn(x)` is `x`: there is no static type to widen.
pub fn dyn_function(ftx: &FunctionContext) -> ResolveResult {
    match ftx.args {
        [x] => Value::resolve(x, ftx.ptx),
        _ => Err(ftx.error("dyn() takes one argument")),
    }
}

fn literal_name<'a>(ftx: &'a FunctionContext, index: usize) -> Result<&'a str, ExecutionError> {
    match ftx.args.get(index).map(|a| &a.expr) {
        Some(Expr::Literal(LiteralValue::String(s))) => Ok(s.inner()),
        _ => Err(ftx.error("bad comprehension")),
    }
}

/// A comprehension with two iteration variables (index/key and value):
/// `@gate_comprehension2(range, 'i', 'v', 'accu', init, cond, step, result)`.
pub fn comprehension2_function(ftx: &FunctionContext) -> ResolveResult {
    if ftx.args.len() != 8 {
        return Err(ftx.error("bad comprehension"));
    }
    let (var1, var2, accu_var) = (
        literal_name(ftx, 1)?,
        literal_name(ftx, 2)?,
        literal_name(ftx, 3)?,
    );
    let range = Value::resolve(&ftx.args[0], ftx.ptx)?;
    let pairs = iteration_pairs(ftx, range)?;
    let mut scope = ftx.ptx.new_inner_scope();
    let mut accu = Value::resolve(&ftx.args[4], ftx.ptx)?;
    for (first, second) in pairs {
        scope.add_variable_from_value(accu_var, accu.clone());
        if !matches!(Value::resolve(&ftx.args[5], &scope)?, Value::Bool(true)) {
            break;
        }
        scope.add_variable_from_value(var1, first);
        scope.add_variable_from_value(var2, second);
        accu = Value::resolve(&ftx.args[6], &scope)?;
    }
    scope.add_variable_from_value(accu_var, accu);
    Value::resolve(&ftx.args[7], &scope)
}

/// What a two-variable loop over `range` binds: (index, element) of a list,
/// (key, value) of a map; anything else cannot be iterated.
pub(super) fn iteration_pairs(
    ftx: &FunctionContext,
    range: Value,
) -> Result<Vec<(Value, Value)>, ExecutionError> {
    match range {
        Value::List(list) => Ok(list
            .iter()
            .enumerate()
            .map(|(i, v)| (Value::Int(i as i64), v.clone()))
            .collect()),
        Value::Map(map) => Ok(map
            .map
            .iter()
            .map(|(k, v)| (Value::from(k.clone()), v.clone()))
            .collect()),
        other => Err(ftx.error(format!(
            "no such overload: cannot iterate over a {} value",
            other.type_of()
        ))),
    }
}

fn map_key(ftx: &FunctionContext, v: Value) -> Result<Key, ExecutionError> {
    match v {
        Value::Int(i) => Ok(Key::Int(i)),
        Value::UInt(u) => Ok(Key::Uint(u)),
        Value::Bool(b) => Ok(Key::Bool(b)),
        Value::String(s) => Ok(Key::String(s)),
        other => Err(ftx.error(format!("unsupported map key type: {}", other.type_of()))),
    }
}

/// `transformMap`'s step: `(map, key, value)` adds one entry;
/// `transformMapEntry`'s: `(map, entries)` adds a map's entries. A key that is
/// already there is an error, as in cel-go.
pub fn map_insert_function(ftx: &FunctionContext) -> ResolveResult {
    let resolve = |i: usize| Value::resolve(&ftx.args[i], ftx.ptx);
    let Value::Map(map) = resolve(0)? else {
        return Err(ftx.error("bad map insert"));
    };
    let mut out: HashMap<Key, Value> = (*map.map).clone();
    let mut insert = |k: Key, v: Value| {
        if out.contains_key(&k) {
            return Err(ftx.error(format!("insert failed: key {k:?} already exists")));
        }
        out.insert(k, v);
        Ok(())
    };
    match ftx.args.len() {
        3 => insert(map_key(ftx, resolve(1)?)?, resolve(2)?)?,
        2 => match resolve(1)? {
            Value::Map(entries) => {
                for (k, v) in entries.map.iter() {
                    insert(k.clone(), v.clone())?;
                }
            }
            other => {
                return Err(ftx.error(format!(
                    "transformMapEntry must produce a map, got {}",
                    other.type_of()
                )));
            }
        },
        _ => return Err(ftx.error("bad map insert")),
    }
    Ok(Value::Map(Map { map: Arc::new(out) }))
}

pub(super) fn ident_name(e: &Expression) -> Option<&str> {
    match &e.expr {
        Expr::Ident(n) => Some(n),
        _ => None,
    }
}

/// A fresh node; ids only need to be distinct from what the interpreter looks up
/// by id (nothing in the gate does), so reuse the parent's.
pub(super) fn node(id: u64, expr: Expr) -> Expression {
    Expression { id, expr }
}

pub(super) fn call(id: u64, name: &str, args: Vec<Expression>) -> Expression {
    node(
        id,
        Expr::Call(CallExpr {
            func_name: name.to_string(),
            target: None,
            args,
        }),
    )
}

pub(super) fn ident(id: u64, name: &str) -> Expression {
    node(id, Expr::Ident(name.to_string()))
}

pub(super) fn lit_bool(id: u64, b: bool) -> Expression {
    node(id, Expr::Literal(LiteralValue::Boolean(b.into())))
}

fn lit_int(id: u64, i: i64) -> Expression {
    node(id, Expr::Literal(LiteralValue::Int(i.into())))
}

pub(super) fn lit_str(id: u64, s: &str) -> Expression {
    node(id, Expr::Literal(LiteralValue::String(s.into())))
}

/// The accumulator's name in expanded two-variable comprehensions; not a name
/// CEL source can spell.
pub(super) const ACCU: &str = "@result";

/// Expands the two-variable comprehension macros (which the `cel` 0.13 parser
/// leaves as plain calls) into comprehension nodes with two iteration variables,
/// as cel-go's `ext.TwoVarComprehensions` does. Runs before the load-time
/// analysis, which then sees the loop variables as locals.
pub fn expand_two_variable_macros(expr: &mut Expression) {
    for child in children_mut(expr) {
        expand_two_variable_macros(child);
    }
    let id = expr.id;
    let Expr::Call(c) = &mut expr.expr else {
        return;
    };
    let Some(target) = c.target.as_deref() else {
        return;
    };
    let n = c.args.len();
    let kind = c.func_name.as_str();
    let shape_ok = match kind {
        "all" | "exists" | "existsOne" | "exists_one" => n == 3,
        "transformList" | "transformMap" => n == 3 || n == 4,
        "transformMapEntry" => n == 3 || n == 4,
        _ => false,
    };
    if !shape_ok {
        return;
    }
    let (Some(v1), Some(v2)) = (ident_name(&c.args[0]), ident_name(&c.args[1])) else {
        return;
    };
    let (v1, v2) = (v1.to_string(), v2.to_string());
    let range = target.clone();
    let accu = || ident(id, ACCU);
    let (filter, body) = if n == 4 {
        (Some(c.args[2].clone()), c.args[3].clone())
    } else {
        (None, c.args[2].clone())
    };
    let guarded = |step: Expression, filter: Option<Expression>| match filter {
        Some(f) => call(id, operators::CONDITIONAL, vec![f, step, accu()]),
        None => step,
    };
    let (init, cond, step, result) = match kind {
        "all" => (
            lit_bool(id, true),
            call(id, operators::NOT_STRICTLY_FALSE, vec![accu()]),
            call(id, operators::LOGICAL_AND, vec![accu(), body]),
            accu(),
        ),
        "exists" => (
            lit_bool(id, false),
            call(
                id,
                operators::NOT_STRICTLY_FALSE,
                vec![call(id, operators::LOGICAL_NOT, vec![accu()])],
            ),
            call(id, operators::LOGICAL_OR, vec![accu(), body]),
            accu(),
        ),
        "existsOne" | "exists_one" => (
            lit_int(id, 0),
            lit_bool(id, true),
            call(
                id,
                operators::CONDITIONAL,
                vec![
                    body,
                    call(id, operators::ADD, vec![accu(), lit_int(id, 1)]),
                    accu(),
                ],
            ),
            call(id, operators::EQUALS, vec![accu(), lit_int(id, 1)]),
        ),
        "transformList" => (
            node(id, Expr::List(ListExpr::default())),
            lit_bool(id, true),
            guarded(
                call(
                    id,
                    operators::ADD,
                    vec![
                        accu(),
                        node(
                            id,
                            Expr::List(ListExpr {
                                elements: vec![body],
                                optional_indices: Vec::new(),
                            }),
                        ),
                    ],
                ),
                filter,
            ),
            accu(),
        ),
        "transformMap" => (
            node(id, Expr::Map(MapExpr::default())),
            lit_bool(id, true),
            guarded(
                call(id, MAP_INSERT, vec![accu(), ident(id, &v1), body]),
                filter,
            ),
            accu(),
        ),
        _ => (
            node(id, Expr::Map(MapExpr::default())),
            lit_bool(id, true),
            guarded(call(id, MAP_INSERT, vec![accu(), body]), filter),
            accu(),
        ),
    };
    expr.expr = Expr::Comprehension(Box::new(ComprehensionExpr {
        iter_range: range,
        iter_var: v1,
        iter_var2: Some(v2),
        accu_var: ACCU.to_string(),
        accu_init: init,
        loop_cond: cond,
        loop_step: step,
        result,
    }));
}

/// Sends operators whose built-in evaluation differs from cel-go to the
/// functions above. Runs after the load-time analysis and after the data-path
/// rewrite (so `object.a.b` is already one path call and stays one).
pub fn rewrite(expr: &mut Expression) {
    for child in children_mut(expr) {
        rewrite(child);
    }
    let id = expr.id;
    if let Some(q) = super::quantity::rewrite(id, expr) {
        *expr = q;
        return;
    }
    match &mut expr.expr {
        Expr::Call(c) if c.target.is_none() && c.args.len() == 2 => {
            let key_is_string_literal =
                matches!(c.args[1].expr, Expr::Literal(LiteralValue::String(_)));
            let renamed = match c.func_name.as_str() {
                operators::EQUALS => Some(EQ),
                operators::ADD => Some(super::overloads::ADD),
                operators::NOT_EQUALS => Some(NE),
                operators::IN => Some(IN),
                operators::INDEX if !key_is_string_literal => Some(INDEX),
                // Also with a string key: cel-go fails `list[?'a']`, the crate gives none.
                operators::OPT_INDEX => Some(OPT_INDEX),
                _ => None,
            };
            if let Some(name) = renamed {
                c.func_name = name.to_string();
            }
        }
        Expr::Comprehension(c) => {
            if let Some(quantifier) = super::quantifiers::rewrite(id, c) {
                *expr = quantifier;
            } else if let Some(collect) = super::collect::rewrite(id, c) {
                *expr = collect;
            } else if c.iter_var2.is_some() {
                let c = std::mem::replace(c.as_mut(), empty_comprehension());
                *expr = call(
                    id,
                    COMPREHENSION2,
                    vec![
                        c.iter_range,
                        lit_str(id, &c.iter_var),
                        lit_str(id, c.iter_var2.as_deref().unwrap_or_default()),
                        lit_str(id, &c.accu_var),
                        c.accu_init,
                        c.loop_cond,
                        c.loop_step,
                        c.result,
                    ],
                );
            }
        }
        Expr::Select(s) => {
            // `x.f` → `x['f']`: the same value on a map, and an error (not the
            // crate's `false`) on anything else; `has(x.f)` → a checked test.
            let operand = std::mem::replace(s.operand.as_mut(), lit_bool(id, false));
            let field = lit_str(id, &s.field);
            *expr = if s.test {
                call(id, HAS, vec![operand, field])
            } else if in_optional_chain(&operand) {
                // `x.?a.b`: optional from `?a` on, so `.b` of a string or number
                // is none, as in cel-go (the crate fails).
                call(id, INDEX, vec![operand, field])
            } else {
                call(id, operators::INDEX, vec![operand, field])
            };
        }
        _ => {}
    }
}

/// Whether `e` is optional by syntax: an optional selection or index, or a
/// selection or index of one (optional chains are sticky in CEL).
fn in_optional_chain(e: &Expression) -> bool {
    match &e.expr {
        Expr::Call(c) => match c.func_name.as_str() {
            super::rewrite::OPTIONAL_SELECT | OPT_INDEX | operators::OPT_INDEX => true,
            INDEX | operators::INDEX => c.args.first().is_some_and(in_optional_chain),
            _ => false,
        },
        _ => false,
    }
}

fn empty_comprehension() -> ComprehensionExpr {
    let nothing = || lit_bool(0, false);
    ComprehensionExpr {
        iter_range: nothing(),
        iter_var: String::new(),
        iter_var2: None,
        accu_var: String::new(),
        accu_init: nothing(),
        loop_cond: nothing(),
        loop_step: nothing(),
        result: nothing(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::cel_env::evaluate;
    use kube_cel::cel::Value;
    use std::sync::Arc;

    fn eval(src: &str) -> Result<Value, String> {
        evaluate(src, Vec::new())
    }

    use crate::policy::cel_env::assert_true as is_true;

    #[test]
    fn size_of_a_string_counts_code_points() {
        assert_eq!(eval("size('ÄÖÜäöüß')"), Ok(Value::Int(7)));
        assert_eq!(eval("'Grüße'.size()"), Ok(Value::Int(5)));
        assert_eq!(eval("size(b'\\xc3\\xa4')"), Ok(Value::Int(2)));
        assert_eq!(eval("size([1, 2]) + size({'a': 1})"), Ok(Value::Int(3)));
        assert!(eval("size(1)").is_err());
    }

    #[test]
    fn numbers_compare_by_value_across_int_uint_and_double() {
        is_true("1 == 1.0");
        is_true("1u == 1");
        is_true("!(1 != 1.0)");
        is_true("[1] == [1.0]");
        is_true("{'a': 1} == {'a': 1u}");
        is_true("{1: 'x'} == {1u: 'x'}");
        is_true("1 in [0.0, 1.0]");
        is_true("1.0 in {1: 'a'}");
        is_true("!(1.5 in {1: 'a'})");
        is_true("{1: 'a'}[1.0] == 'a'");
        is_true("{1u: 'a'}[1] == 'a'");
        is_true("[7, 8][1u] == 8");
        is_true("{1: 'a'}[?1.0] == optional.of('a') && !{1: 'a'}[?2].hasValue()");
        is_true("!(0.0/0.0 == 0.0/0.0)");
        is_true("9007199254740993 != 9007199254740992.0");
        is_true("'a' in ['b', 'a']");
        is_true("'a' in {'a': 1}");
        is_true("!(1 == 'a')");
        assert!(eval("[1][1.5]").is_err());
        assert!(eval("{1: 'a'}[2]").is_err());
        assert!(eval("1 in 1").is_err());
    }

    #[test]
    fn optionals_compare_by_content() {
        is_true("optional.none() == optional.none()");
        is_true("optional.of(1) == optional.of(1.0)");
        is_true("optional.of(1) != optional.none()");
        is_true("{}.?a == {'b': 1}.?a");
    }

    #[test]
    fn string_of_bool_and_dyn() {
        assert_eq!(
            eval("string(true)"),
            Ok(Value::String(Arc::new("true".into())))
        );
        assert_eq!(eval("string(12)"), Ok(Value::String(Arc::new("12".into()))));
        assert!(eval("string(b'\\xff')").is_err());
        assert_eq!(
            eval("string(ip('192.168.0.1'))"),
            Ok(Value::String(Arc::new("192.168.0.1".into())))
        );
        is_true("dyn(1) == 1.0");
        is_true("dyn([1, 'a']) == [1, 'a']");
    }

    #[test]
    fn field_selection_on_a_non_map_is_an_error() {
        is_true("{'a': {'b': 1}}.a.b == 1");
        assert!(eval("1.f").is_err());
        assert!(eval("'str'.f").is_err());
        assert!(eval("null.f").is_err());
        // The presence test is false on a string, number or null and an error on
        // a list, as cel-go answers (kube-apiserver 1.37, e2e/oracle).
        is_true("!has(dyn(1).f) && !has(dyn('s').f) && !has(dyn(null).f)");
        assert!(eval("has(dyn([1]).f)").is_err());
        is_true("dyn('s').?f.orValue(2) == 2 && {'a': 1}.?a.b.orValue(3) == 3");
        assert!(eval("{'a': 1}.b").is_err(), "absent key");
        is_true("has({'a': 1}.a) && !has({'a': 1}.b)");
        is_true("!has({}.?x.y) && has({'x': {'y': 1}}.?x.y)");
        is_true("[{'n': 1}, {'n': 2}].all(x, x.n > 0)");
    }

    #[test]
    fn two_variable_comprehensions() {
        is_true("{'a': 1, 'b': 2}.all(k, v, v > 0 && k != '')");
        is_true("[10, 20].all(i, v, v == (i + 1) * 10)");
        is_true("{'a': 1}.exists(k, v, k == 'a' && v == 1)");
        is_true("![1, 2].exists(i, v, v == 3)");
        is_true("[1, 2, 1].existsOne(i, v, v == 2)");
        is_true("![1, 2, 1].existsOne(i, v, v == 1)");
        is_true("[1, 2].transformList(i, v, i + v) == [1, 3]");
        is_true("[1, 2, 3].transformList(i, v, v > 1, v * 2) == [4, 6]");
        is_true("{'a': 1}.transformMap(k, v, v + 1) == {'a': 2}");
        is_true("{'a': 1, 'b': 5}.transformMap(k, v, v > 2, v) == {'b': 5}");
        is_true("{'a': 'x'}.transformMapEntry(k, v, {v: k}) == {'x': 'a'}");
        assert!(eval("{'a': 1, 'b': 1}.transformMapEntry(k, v, {'same': v})").is_err());
        // One-variable macros are unchanged.
        is_true("[1, 2].all(x, x > 0) && [1, 2].map(x, x * 2) == [2, 4]");
    }
}

/// `<list>.sum()` as Kubernetes' lists library answers it: int and uint
/// overflow is an error (`integer overflow`, `unsigned integer overflow`,
/// seen with e2e/oracle), never a wrapped value. kube-cel 0.8 adds with `+`,
/// which wraps in a release build and panics in a debug one (found by
/// tests/differential_generated.rs). An empty list sums to `0`.
pub fn sum(This(this): This<Arc<Vec<Value>>>) -> ResolveResult {
    super::runtime_cost::charge_call("sum", Some(&Value::List(this.clone())), &[], None)
        .map_err(|e| ExecutionError::function_error("sum", e))?;
    let mut items = this.iter();
    let Some(first) = items.next() else {
        return Ok(Value::Int(0));
    };
    // cel-go sums int, uint, double and duration lists only ("no such
    // overload: sum(list)" for a list of strings, even of one).
    if !matches!(
        first,
        Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Duration(_)
    ) {
        return Err(ExecutionError::function_error(
            "sum",
            format!("no such overload: sum of a list of {}", first.type_of()),
        ));
    }
    let mut total = first.clone();
    for item in items {
        total = match (&total, item) {
            (Value::Int(a), Value::Int(b)) => a
                .checked_add(*b)
                .map(Value::Int)
                .ok_or_else(|| ExecutionError::function_error("sum", "integer overflow"))?,
            (Value::UInt(a), Value::UInt(b)) => {
                a.checked_add(*b).map(Value::UInt).ok_or_else(|| {
                    ExecutionError::function_error("sum", "unsigned integer overflow")
                })?
            }
            (Value::Float(a), Value::Float(b)) => Value::Float(a + b),
            (Value::Duration(a), Value::Duration(b)) => a
                .checked_add(b)
                .map(Value::Duration)
                .ok_or_else(|| ExecutionError::function_error("sum", "duration overflow"))?,
            _ => {
                return Err(ExecutionError::function_error(
                    "sum",
                    "cannot sum values of different types",
                ));
            }
        };
    }
    Ok(total)
}

#[cfg(test)]
mod sum_tests {
    use crate::policy::cel_env;

    #[test]
    fn sum_overflow_is_an_error_as_in_kubernetes() {
        for (expr, want) in [
            ("[1, 2, 3].sum() == 6", Ok(true)),
            ("[].sum() == 0", Ok(true)),
            ("[1.5, 2.5].sum() == 4.0", Ok(true)),
            (
                "[9223372036854775807, 1].sum() > 0",
                Err("integer overflow"),
            ),
            (
                "[18446744073709551615u, 1u].sum() > 0u",
                Err("unsigned integer overflow"),
            ),
        ] {
            let got = cel_env::evaluate(expr, Vec::new());
            match (want, got) {
                (Ok(b), Ok(v)) => assert_eq!(v, kube_cel::cel::Value::Bool(b), "{expr}"),
                (Err(text), Err(e)) => assert!(e.contains(text), "{expr}: {e}"),
                (w, g) => panic!("{expr}: want {w:?}, got {g:?}"),
            }
        }
    }
}
