//! cel-go's overloads where the `cel` crate or `kube-cel` accept more, or
//! answer differently, and Kubernetes fails or formats otherwise. Found by the
//! generated differential cases (`tests/differential_generated.rs`) against
//! kube-apiserver's own CEL environment (`e2e/oracle`):
//!
//! - `contains`, `startsWith`, `endsWith` exist only for strings: on a map or a
//!   list they are "no such overload" (the crate looked up keys and elements);
//! - `list + x` needs a list on both sides (the crate appended a map's keys);
//! - `min()`, `max()` only of a list, whose elements compare (numbers across
//!   int, uint and double; otherwise one type); `sort()` of one element type;
//! - `int()` and `uint()` raise "integer overflow" / "unsigned integer
//!   overflow" at cel-go's bounds (−2⁶³ < d < 2⁶³ and 0 ≤ d < 2⁶⁴), and
//!   `int(timestamp)` is its Unix seconds;
//! - `string(double)` is Go's `%g` (`3e+10`, `1e-05`, `123456`);
//! - `split('')` splits into characters, as Go's `strings.SplitN`.

use kube_cel::cel::common::ast::{Expr, LiteralValue};
use kube_cel::cel::extractors::{Arguments, This};
use kube_cel::cel::objects::Value;
use kube_cel::cel::parser::Expression;
use kube_cel::cel::{Context, ExecutionError, FunctionContext, ResolveResult};
use std::sync::{Arc, LazyLock};

/// What `_+_` is rewritten to (`semantics::rewrite`).
pub const ADD: &str = "@gate_add";

fn no_such_overload(function: &str, this: &Value) -> ExecutionError {
    ExecutionError::function_error(
        function,
        format!("no such overload: {function} on {}", type_name(this)),
    )
}

/// cel-go's type names, for messages.
pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Duration(_) => "google.protobuf.Duration",
        Value::Timestamp(_) => "google.protobuf.Timestamp",
        Value::Null => "null_type",
        _ => "opaque",
    }
}

/// `s.contains(t)`: strings only.
pub fn contains(This(this): This<Value>, arg: Value) -> ResolveResult {
    let result = match (&this, &arg) {
        (Value::String(s), Value::String(t)) => Ok(Value::Bool(s.contains(t.as_str()))),
        _ => Err(no_such_overload("contains", &this)),
    };
    super::runtime_cost::charged("contains", Some(&this), std::slice::from_ref(&arg), result)
}

/// `s.startsWith(t)`: strings only.
pub fn starts_with(This(this): This<Value>, arg: Value) -> ResolveResult {
    let result = match (&this, &arg) {
        (Value::String(s), Value::String(t)) => Ok(Value::Bool(s.starts_with(t.as_str()))),
        _ => Err(no_such_overload("startsWith", &this)),
    };
    super::runtime_cost::charged(
        "startsWith",
        Some(&this),
        std::slice::from_ref(&arg),
        result,
    )
}

/// `s.endsWith(t)`: strings only.
pub fn ends_with(This(this): This<Value>, arg: Value) -> ResolveResult {
    let result = match (&this, &arg) {
        (Value::String(s), Value::String(t)) => Ok(Value::Bool(s.ends_with(t.as_str()))),
        _ => Err(no_such_overload("endsWith", &this)),
    };
    super::runtime_cost::charged("endsWith", Some(&this), std::slice::from_ref(&arg), result)
}

/// `a + b` (rewritten from `_+_`): the interpreter's own addition, except that a
/// list adds only a list.
pub fn add_function(ftx: &FunctionContext) -> ResolveResult {
    let [a, b] = ftx.args else {
        return Err(ftx.error("expected two operands"));
    };
    // With a string literal on either side kube-apiserver's type checker picks
    // the string overload, whose cost grows with the strings (one unit is
    // already counted for the call).
    let literal = [a, b]
        .iter()
        .any(|e| matches!(e.expr, Expr::Literal(LiteralValue::String(_))));
    let a = Value::resolve(a, ftx.ptx)?;
    let b = Value::resolve(b, ftx.ptx)?;
    if literal {
        super::runtime_cost::charge_string_concatenation(&a, &b).map_err(|e| ftx.error(e))?;
    }
    if matches!(a, Value::List(_)) != matches!(b, Value::List(_)) {
        return Err(ExecutionError::function_error(
            "_+_",
            "no such overload: a list adds only a list",
        ));
    }
    // The interpreter's own addition of values (int overflow, string and list
    // concatenation, durations and timestamps), which leaves bytes out.
    match (a, b) {
        (Value::Bytes(x), Value::Bytes(y)) => Ok(Value::Bytes(Arc::new(
            [x.as_slice(), y.as_slice()].concat(),
        ))),
        (a, b) => a + b,
    }
}

/// Which elements cel-go orders against each other: numbers across types, the
/// rest within their own type.
fn order_class(v: &Value) -> Option<u8> {
    Some(match v {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Bytes(_) => 3,
        Value::Duration(_) => 4,
        Value::Timestamp(_) => 5,
        _ => return None,
    })
}

/// `list.min()` / `list.max()`: a list, whose elements compare; then
/// `kube-cel`'s own.
fn extremum(
    function: &'static str,
    call: &'static LazyLock<Expression>,
    this: Value,
) -> ResolveResult {
    let Value::List(items) = &this else {
        return Err(no_such_overload(function, &this));
    };
    let mut classes = items.iter().map(order_class);
    if let Some(first) = classes.next()
        && (first.is_none() || classes.any(|c| c != first))
    {
        return Err(ExecutionError::function_error(
            function,
            format!("no such overload: {function} of a list whose elements do not compare"),
        ));
    }
    kube_library_call(call, this)
}

/// `list.isSorted()`: elements that can be ordered (not maps, lists or null);
/// then `kube-cel`'s.
pub fn is_sorted(This(this): This<Value>) -> ResolveResult {
    super::runtime_cost::charge_call("isSorted", Some(&this), &[], None)
        .map_err(|e| ExecutionError::function_error("isSorted", e))?;
    let Value::List(items) = &this else {
        return Err(no_such_overload("isSorted", &this));
    };
    // Kubernetes' lists library: every element must be comparable at all, and
    // the list is unsorted only where a pair compares as greater; a pair that
    // cannot be compared (a double next to a string) does not count
    // (`[1.5, 'b', 'a'].isSorted()` is false, `[1.5, 'a']` true).
    let mut previous: Option<&Value> = None;
    for item in items.iter() {
        if order_class(item).is_none() {
            return Err(ExecutionError::function_error(
                "isSorted",
                "no such overload: isSorted of a list whose elements do not compare",
            ));
        }
        if let Some(before) = previous
            && compare(before, item) == Some(std::cmp::Ordering::Greater)
        {
            return Ok(Value::Bool(false));
        }
        previous = Some(item);
    }
    Ok(Value::Bool(true))
}

/// cel-go's `Compare` of two values: numbers across int, uint and double by
/// value, then strings, bools, bytes, durations and timestamps of one kind;
/// `None` when they do not compare.
fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Bytes(x), Value::Bytes(y)) => Some(x.cmp(y)),
        _ if order_class(a) == order_class(b) => a.partial_cmp(b),
        _ => None,
    }
}

static MIN_OF_X: LazyLock<Expression> = LazyLock::new(|| parse_constant("x.min()"));
static MAX_OF_X: LazyLock<Expression> = LazyLock::new(|| parse_constant("x.max()"));
static SORT_OF_X: LazyLock<Expression> = LazyLock::new(|| parse_constant("x.sort()"));

pub fn min(This(this): This<Value>) -> ResolveResult {
    super::runtime_cost::charge_call("min", Some(&this), &[], None)
        .map_err(|e| ExecutionError::function_error("min", e))?;
    extremum("min", &MIN_OF_X, this)
}

pub fn max(This(this): This<Value>) -> ResolveResult {
    super::runtime_cost::charge_call("max", Some(&this), &[], None)
        .map_err(|e| ExecutionError::function_error("max", e))?;
    extremum("max", &MAX_OF_X, this)
}

/// `list.sort()`: elements of one type (cel-go: "list elements must have the
/// same type"), then `kube-cel`'s own.
pub fn sort(This(this): This<Value>) -> ResolveResult {
    let Value::List(items) = &this else {
        return Err(no_such_overload("sort", &this));
    };
    if let Some(first) = items.first() {
        if order_class(first).is_none() {
            return Err(ExecutionError::function_error(
                "sort",
                "list elements must be comparable",
            ));
        }
        if items
            .iter()
            .any(|v| std::mem::discriminant(v) != std::mem::discriminant(first))
        {
            return Err(ExecutionError::function_error(
                "sort",
                "list elements must have the same type",
            ));
        }
    }
    kube_library_call(&SORT_OF_X, this)
}

/// cel-go's `doubleToInt64Checked` bounds: −2⁶³ < d < 2⁶³, not NaN.
const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;
/// cel-go's `doubleToUint64Checked` bound: 0 ≤ d < 2⁶⁴.
const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;

/// `int(x)` with cel-go's overflow rules.
pub fn int(ftx: &FunctionContext, This(this): This<Value>) -> ResolveResult {
    let overflow = || ftx.error("integer overflow");
    match this {
        Value::Int(i) => Ok(Value::Int(i)),
        Value::UInt(u) => i64::try_from(u).map(Value::Int).map_err(|_| overflow()),
        Value::Float(d) => {
            if d.is_nan() || d <= -TWO_TO_63 || d >= TWO_TO_63 {
                Err(overflow())
            } else {
                Ok(Value::Int(d as i64))
            }
        }
        Value::String(s) => s
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| ftx.error("type conversion error from 'string' to 'int'")),
        Value::Timestamp(t) => Ok(Value::Int(t.timestamp())),
        other => Err(ftx.error(format!(
            "type conversion error from '{}' to 'int'",
            type_name(&other)
        ))),
    }
}

/// `uint(x)` with cel-go's overflow rules.
pub fn uint(ftx: &FunctionContext, This(this): This<Value>) -> ResolveResult {
    let overflow = || ftx.error("unsigned integer overflow");
    match this {
        Value::UInt(u) => Ok(Value::UInt(u)),
        Value::Int(i) => u64::try_from(i).map(Value::UInt).map_err(|_| overflow()),
        Value::Float(d) => {
            if d.is_nan() || !(0.0..TWO_TO_64).contains(&d) {
                Err(overflow())
            } else {
                Ok(Value::UInt(d as u64))
            }
        }
        // Go's ParseUint takes no sign; Rust's parse would take "+3".
        Value::String(s) if s.starts_with('+') => {
            Err(ftx.error("type conversion error from 'string' to 'uint'"))
        }
        Value::String(s) => s
            .parse::<u64>()
            .map(Value::UInt)
            .map_err(|_| ftx.error("type conversion error from 'string' to 'uint'")),
        other => Err(ftx.error(format!(
            "type conversion error from '{}' to 'uint'",
            type_name(&other)
        ))),
    }
}

/// A double as Go's `fmt.Sprintf("%g", d)` writes it, which is cel-go's
/// `string(double)`: the shortest digits that round-trip, in exponent form when
/// the decimal exponent is below −4 or at least 6 (`1e+06`, `123456`, `1e-05`,
/// `0.0001`), the exponent with at least two digits.
pub fn go_format_double(d: f64) -> String {
    if d.is_nan() {
        return "NaN".to_string();
    }
    if d.is_infinite() {
        return if d > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-5", "3e10".
    let sci = format!("{d:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..6).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{fraction}e{exp_sign}{:02}", exponent.abs());
    }
    // Plain form: the decimal point `exponent + 1` digits into `digits`.
    let point = exponent + 1;
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if (point as usize) >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

/// `s.split(sep)` / `s.split(sep, n)` as Go's `strings.SplitN` (cel-go's strings
/// extension): an empty separator splits into characters; `n == 0` is `[]`,
/// `n < 0` is all parts, `n > 0` at most `n`.
pub fn split(This(this): This<Arc<String>>, Arguments(args): Arguments) -> ResolveResult {
    super::runtime_cost::charge_call("split", Some(&Value::String(this.clone())), &[], None)
        .map_err(|e| ExecutionError::function_error("split", e))?;
    let (Some(Value::String(sep)), limit) = (args.first(), args.get(1)) else {
        return Err(ExecutionError::function_error(
            "split",
            "no such overload: split needs a string separator",
        ));
    };
    let limit = match limit {
        None => -1,
        Some(Value::Int(n)) => *n,
        Some(_) => {
            return Err(ExecutionError::function_error(
                "split",
                "no such overload: the limit must be an int",
            ));
        }
    };
    let parts: Vec<String> = match limit {
        0 => Vec::new(),
        n if sep.is_empty() => {
            let chars: Vec<char> = this.chars().collect();
            let cap = if n < 0 {
                chars.len()
            } else {
                (n as usize).min(chars.len())
            };
            let mut parts: Vec<String> = chars
                .iter()
                .take(cap.saturating_sub(1))
                .map(|c| c.to_string())
                .collect();
            if cap > 0 {
                parts.push(chars[cap - 1..].iter().collect());
            }
            parts
        }
        n if n < 0 => this.split(sep.as_str()).map(str::to_string).collect(),
        n => this
            .splitn(n as usize, sep.as_str())
            .map(str::to_string)
            .collect(),
    };
    Ok(Value::List(Arc::new(
        parts
            .into_iter()
            .map(|p| Value::String(Arc::new(p)))
            .collect(),
    )))
}

/// `kube-cel`'s functions alone, for what the overrides here delegate to.
static KUBE_LIBRARY: LazyLock<Context<'static>> = LazyLock::new(|| {
    use kube_cel::KubeCelExt;
    let mut ctx = Context::default();
    ctx.register_all();
    ctx
});

/// The `cel` standard library and `kube-cel`'s functions, unwrapped: what the
/// engine's cancellation check points delegate to (see `cel_env.rs`).
pub fn library() -> &'static Context<'static> {
    &KUBE_LIBRARY
}

pub(super) fn parse_constant(source: &str) -> Expression {
    kube_cel::cel::parser::Parser::new()
        .parse(source)
        .unwrap_or_else(|e| panic!("the constant expression {source:?} parses: {e}"))
}

/// Evaluates `call` (an expression of `x`) with `kube-cel`'s own functions.
pub(super) fn kube_library_call(call: &Expression, x: Value) -> ResolveResult {
    kube_library_call_with(call, [("x", x)])
}

/// Evaluates `call` with `kube-cel`'s own functions and the given variables.
pub(super) fn kube_library_call_with<const N: usize>(
    call: &Expression,
    bindings: [(&str, Value); N],
) -> ResolveResult {
    let mut scope = KUBE_LIBRARY.new_inner_scope();
    for (name, value) in bindings {
        scope.add_variable_from_value(name, value);
    }
    Value::resolve(call, &scope)
}

/// `string(x)`: the library's own conversion (for values the overrides leave
/// to it: ip(), cidr(), timestamps, durations).
pub(super) static STRING_OF_X: LazyLock<Expression> = LazyLock::new(|| parse_constant("string(x)"));

static BYTES_OF_X: LazyLock<Expression> = LazyLock::new(|| parse_constant("bytes(x)"));
static DURATION_OF_X: LazyLock<Expression> = LazyLock::new(|| parse_constant("duration(x)"));
static TIMESTAMP_OF_X: LazyLock<Expression> = LazyLock::new(|| parse_constant("timestamp(x)"));

/// `bytes(x)`, `duration(x)`, `timestamp(x)` with cel-go's identity overloads
/// (`bytes(b'a')`, `duration(d)`, `timestamp(t)`) and `timestamp(int)` (Unix
/// seconds), which the library lacks; the rest is the library's own.
pub fn bytes(This(this): This<Value>) -> ResolveResult {
    match this {
        b @ Value::Bytes(_) => Ok(b),
        other => kube_library_call(&BYTES_OF_X, other),
    }
}

pub fn duration(This(this): This<Value>) -> ResolveResult {
    match this {
        d @ Value::Duration(_) => Ok(d),
        other => kube_library_call(&DURATION_OF_X, other),
    }
}

pub fn timestamp(This(this): This<Value>) -> ResolveResult {
    match this {
        t @ Value::Timestamp(_) => Ok(t),
        // CEL's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
        Value::Int(seconds) => (-62_135_596_800..=253_402_300_799)
            .contains(&seconds)
            .then(|| chrono::DateTime::from_timestamp(seconds, 0))
            .flatten()
            .map(|t| Value::Timestamp(t.fixed_offset()))
            .ok_or_else(|| ExecutionError::function_error("timestamp", "timestamp out of range")),
        other => kube_library_call(&TIMESTAMP_OF_X, other),
    }
}

/// `optional.unwrap(list)` / `list.unwrapOpt()` (cel-go's optional library):
/// the values of the present optionals, in order; an element that is not an
/// optional is an error.
pub fn unwrap_optionals(ftx: &FunctionContext) -> ResolveResult {
    use kube_cel::cel::objects::OptionalValue;
    let list = match (&ftx.this, ftx.args.first()) {
        (Some(this), None) => this.clone(),
        (None, Some(arg)) => Value::resolve(arg, ftx.ptx)?,
        _ => return Err(ftx.error("unwrap takes one list")),
    };
    let Value::List(items) = &list else {
        return Err(no_such_overload("unwrap", &list));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        match item {
            Value::Opaque(o) => match o.downcast_ref::<OptionalValue>() {
                Some(opt) => out.extend(opt.value().cloned()),
                None => return Err(no_such_overload("unwrap", item)),
            },
            other => return Err(no_such_overload("unwrap", other)),
        }
    }
    Ok(Value::List(Arc::new(out)))
}

#[cfg(test)]
mod tests {
    use super::go_format_double;

    use crate::policy::cel_env::assert_true as is_true;

    #[test]
    fn conversions_take_their_own_type_and_unix_seconds() {
        is_true("bytes(b'abc') == b'abc' && bytes('abc') == b'abc'");
        is_true("duration(duration('100s')) == duration('100s')");
        is_true("timestamp(1000000000) == timestamp('2001-09-09T01:46:40Z')");
        is_true("timestamp(timestamp('2001-09-09T01:46:40Z')) == timestamp(1000000000)");
    }

    /// Expected values are what cel-go's string(double) gives in kube-apiserver
    /// 1.37.2's environment (e2e/oracle, CEL mode).
    #[test]
    fn doubles_are_written_as_go_writes_them() {
        for (d, go) in [
            (3e10, "3e+10"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5, "1.5"),
            (-0.0, "-0"),
            (1e21, "1e+21"),
            (100.0, "100"),
            (1234567.0, "1.234567e+06"),
            (-2.5e-7, "-2.5e-07"),
            (0.1, "0.1"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
            (1e100, "1e+100"),
        ] {
            assert_eq!(go_format_double(d), go, "{d}");
        }
    }
}
