//! `quantity(s).isInteger()` and `quantity(s).asInteger()` as Kubernetes
//! answers them: by how `s` is written, not only by its value.
//!
//! Kubernetes' `Quantity.AsInt64` (k8s.io/apimachinery `resource`) succeeds
//! only for a quantity that `ParseQuantity` stored as a scaled int64 with a
//! scale of zero or more: `quantity('0.5Gi')` (a binary suffix with a
//! fraction) and `quantity('1.0')` (scale −1) are not integers there, whatever
//! their value. `kube-cel` keeps only the value, so the call on a `quantity(…)`
//! of a string is rewritten (`semantics::rewrite`) into [`QUANTITY_INTEGER`],
//! which reads the string with `ParseQuantity`'s rules. Other receivers (a
//! variable, `a.add(b)`) keep `kube-cel`'s answer.

use super::semantics::{call, lit_str};
use kube_cel::cel::common::ast::{Expr, LiteralValue};
use kube_cel::cel::objects::Value;
use kube_cel::cel::parser::Expression;
use kube_cel::cel::{ExecutionError, FunctionContext, ResolveResult};
use std::sync::LazyLock;

/// `@gate_quantity_integer(s, 'isInteger' | 'asInteger')`.
pub const QUANTITY_INTEGER: &str = "@gate_quantity_integer";

/// The replacement of `quantity(s).isInteger()` / `.asInteger()`, if `expr` is one.
pub fn rewrite(id: u64, expr: &Expression) -> Option<Expression> {
    let Expr::Call(method) = &expr.expr else {
        return None;
    };
    let kind = method.func_name.as_str();
    if !matches!(kind, "isInteger" | "asInteger") || !method.args.is_empty() {
        return None;
    }
    let Expr::Call(construct) = &method.target.as_deref()?.expr else {
        return None;
    };
    match (
        construct.func_name.as_str(),
        construct.target.as_deref(),
        &construct.args[..],
    ) {
        ("quantity", None, [source]) => Some(call(
            id,
            QUANTITY_INTEGER,
            vec![source.clone(), lit_str(id, kind)],
        )),
        _ => None,
    }
}

static IS_QUANTITY_OF_X: LazyLock<Expression> =
    LazyLock::new(|| super::overloads::parse_constant("quantity(x)"));

/// `ParseQuantity`'s errors, in its words (k8s.io/apimachinery `resource`).
const ERR_FORMAT_WRONG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const ERR_SUFFIX: &str = "unable to parse quantity's suffix";

/// `quantity(source)` by `kube-cel`, its failure worded as kube-apiserver
/// words it: `kube-cel` quotes the input (which may hold a newline, and then
/// cannot travel in a warning header), Kubernetes names the rule broken.
fn construct(source: Value) -> ResolveResult {
    let text = match &source {
        Value::String(text) => Some(text.clone()),
        _ => None,
    };
    super::overloads::kube_library_call(&IS_QUANTITY_OF_X, source).map_err(|e| {
        match text.as_deref().map(|t| malformed(t)) {
            Some(Some(message)) => ExecutionError::function_error("quantity", message),
            _ => e,
        }
    })
}

/// Registered as `quantity(s)`: [`construct`], with its runtime cost.
pub fn quantity_constructor(source: Value) -> ResolveResult {
    let result = construct(source.clone());
    super::runtime_cost::charged("quantity", None, std::slice::from_ref(&source), result)
}

/// Which of `ParseQuantity`'s errors `s` meets, if it is malformed:
/// `parseQuantityString`'s format (a suffix that is not letters of
/// `eEinumkKMGTP` followed by an optionally signed exponent), then a suffix
/// that is no known one.
fn malformed(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some(ERR_FORMAT_WRONG);
    }
    let (_, _, _, suffix) = split(s)?;
    let letters = suffix
        .find(|c: char| !"eEinumkKMGTP".contains(c))
        .unwrap_or(suffix.len());
    let rest = &suffix[letters..];
    let exponent = rest.strip_prefix(['-', '+']).unwrap_or(rest);
    if !exponent.bytes().all(|b| b.is_ascii_digit()) {
        return Some(ERR_FORMAT_WRONG);
    }
    let known = matches!(
        suffix,
        "" | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
            | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
    ) || ((suffix.starts_with('e') || suffix.starts_with('E'))
        && suffix[1..]
            .strip_prefix(['-', '+'])
            .unwrap_or(&suffix[1..])
            .parse::<i32>()
            .is_ok());
    (!known).then_some(ERR_SUFFIX)
}

/// Evaluates [`QUANTITY_INTEGER`].
pub fn quantity_integer_function(ftx: &FunctionContext) -> ResolveResult {
    let [source, kind] = ftx.args else {
        return Err(ftx.error("bad quantity call"));
    };
    let Expr::Literal(LiteralValue::String(kind)) = &kind.expr else {
        return Err(ftx.error("bad quantity call"));
    };
    let source = Value::resolve(source, ftx.ptx)?;
    // `quantity(s)` itself: its cost, and its error for a malformed string.
    super::runtime_cost::charge_call("quantity", None, std::slice::from_ref(&source), None)
        .map_err(|e| ftx.error(e))?;
    construct(source.clone())?;
    let Value::String(text) = &source else {
        return Err(ftx.error("no such overload: quantity of a non-string"));
    };
    let integer = as_int64(text);
    match (kind.inner(), integer) {
        ("isInteger", i) => Ok(Value::Bool(i.is_some())),
        (_, Some(i)) => Ok(Value::Int(i)),
        (_, None) => Err(ExecutionError::function_error(
            "asInteger",
            "cannot convert value to integer",
        )),
    }
}

/// `ParseQuantity(s).AsInt64()`: the value when Kubernetes stores `s` as an
/// int64 it can give back whole, else `None`.
fn as_int64(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let (positive, num, denom, suffix) = split(s)?;
    // (base 10 or 2, exponent, decimal SI or exponent: true; binary SI: false)
    let (exponent, decimal): (i32, bool) = match suffix {
        "" => (0, true),
        "n" => (-9, true),
        "u" => (-6, true),
        "m" => (-3, true),
        "k" => (3, true),
        "M" => (6, true),
        "G" => (9, true),
        "T" => (12, true),
        "P" => (15, true),
        "E" => (18, true),
        "Ki" => (10, false),
        "Mi" => (20, false),
        "Gi" => (30, false),
        "Ti" => (40, false),
        "Pi" => (50, false),
        "Ei" => (60, false),
        other if other.starts_with(['e', 'E']) => (other[1..].parse().ok()?, true),
        _ => return None,
    };
    let digits = |s: &str| i32::try_from(s.len()).unwrap_or(i32::MAX);
    let (mut scale, precision, mantissa) = if decimal {
        (exponent, 18 - (digits(num) + digits(denom)), 1i64)
    } else if exponent >= 0 && denom.is_empty() {
        // Go: int32(float32(exponent)*3/10), truncated toward zero.
        let shift = (exponent as f32 * 3.0 / 10.0) as i32;
        (0, 15 - digits(num) - shift - 1, 1i64 << exponent)
    } else {
        (0, -1, 1)
    };
    if precision < 0 {
        return None;
    }
    scale -= digits(denom);
    if scale < -9 {
        return None;
    }
    let value: i64 = format!("{num}{denom}").parse().ok()?;
    let mut result = value.checked_mul(mantissa)?;
    if !positive {
        result = -result;
    }
    match scale {
        0 => Some(result),
        s if s < 0 => None,
        s => 10i64
            .checked_pow(u32::try_from(s).ok()?)?
            .checked_mul(result),
    }
}

/// `parseQuantityString`: sign, digits without leading zeros, fraction digits
/// and suffix.
fn split(s: &str) -> Option<(bool, &str, &str, &str)> {
    let (positive, rest) = match s.as_bytes().first() {
        Some(b'-') => (false, &s[1..]),
        Some(b'+') => (true, &s[1..]),
        _ => (true, s),
    };
    let rest = rest.trim_start_matches('0');
    let num_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let num = if num_end == 0 { "0" } else { &rest[..num_end] };
    let rest = &rest[num_end..];
    let (denom, rest) = match rest.strip_prefix('.') {
        Some(after) => {
            let end = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        }
        None => ("", rest),
    };
    Some((positive, num, denom, rest))
}

#[cfg(test)]
mod tests {
    use super::super::cel_env::evaluate;
    use super::as_int64;
    use kube_cel::cel::Value;

    /// What kube-apiserver v1.37.2 answers (e2e/oracle, CEL mode).
    #[test]
    fn integers_as_kubernetes_parses_them() {
        for (s, want) in [
            ("0", Some(0)),
            ("1", Some(1)),
            ("1k", Some(1000)),
            ("50000000G", Some(50_000_000_000_000_000)),
            ("1Gi", Some(1 << 30)),
            ("1.0", None),
            ("0.5Gi", None),
            ("500m", None),
            ("1.5", None),
            ("-2", Some(-2)),
            ("1e3", Some(1000)),
            ("9999999999999999999999999999999999999G", None),
            ("100Mi", Some(104_857_600)),
            ("1.5Ki", None),
            ("0.000000001", None),
            ("1000n", None),
            ("1000000000n", None),
            ("12E2", Some(1200)),
            ("01", Some(1)),
            ("2.50k", Some(2500)),
            ("0.5k", Some(500)),
        ] {
            assert_eq!(as_int64(s), want, "{s}");
        }
    }

    #[test]
    fn the_call_on_quantity_of_a_string_uses_them() {
        let eval = |s: &str| evaluate(s, Vec::new());
        assert_eq!(
            eval("quantity('0.5Gi').isInteger()"),
            Ok(Value::Bool(false))
        );
        assert_eq!(eval("quantity('1.0').isInteger()"), Ok(Value::Bool(false)));
        assert_eq!(eval("quantity('2k').asInteger()"), Ok(Value::Int(2000)));
        assert!(eval("quantity('1.0').asInteger()").is_err());
        assert!(eval("quantity('bogus').isInteger()").is_err());
    }

    /// kube-apiserver v1.37.2's words for malformed quantities (e2e/oracle):
    /// the rule broken, never the input (which may hold a newline).
    #[test]
    fn malformed_quantities_fail_in_kubernetes_words() {
        let format = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
        for (source, words) in [
            ("quantity('line1\\nline2')", format),
            ("quantity('1x')", format),
            ("quantity('')", format),
            ("quantity('1.5Zi')", format),
            ("quantity('abc').isInteger()", format),
            ("quantity('1e')", "unable to parse quantity's suffix"),
        ] {
            let error = evaluate(source, Vec::new()).expect_err(source);
            assert!(error.ends_with(words), "{source}: {error}");
        }
        assert!(evaluate("quantity('1E').isInteger()", Vec::new()).is_ok());
    }
}
