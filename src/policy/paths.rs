//! Reading the request's objects without copying them.
//!
//! The `cel` crate deep-copies the selected subtree on every field access, so
//! `object.spec.selector` used to copy all of `spec` first. At compile time
//! every access path rooted at `object`, `oldObject` or `namespaceObject`
//! (field selections, `.?field`, `['key']`, `[?'key']`) becomes one call of
//! [`PATH_FUNCTION`], and `has(path.field)` one call of [`HAS_FUNCTION`]. They
//! walk the shared, reference-counted tree bound once per request and hand the
//! interpreter only the value at the end of the path.

use super::lazy::LazyValue;
use kube_cel::cel::common::ast::{Expr, LiteralValue};
use kube_cel::cel::objects::{Opaque, OptionalValue};
use kube_cel::cel::{ExecutionError, FunctionContext, ResolveResult, Value};
use std::fmt;
use std::sync::Arc;

pub const PATH_FUNCTION: &str = "@gate_path";
pub const HAS_FUNCTION: &str = "@gate_has";
/// The scope entry holding [`DataRoots`]; not a name CEL source can spell.
pub const DATA_BINDING: &str = "@gate_data";

/// The roots a path can start from, in the order of their numeric codes.
pub const ROOTS: [&str; 3] = ["object", "oldObject", "namespaceObject"];

/// A step's first character says how a missing key is treated.
pub const REQUIRED_STEP: char = '.';
pub const OPTIONAL_STEP: char = '?';

/// The input of one request, decoded at first access; null where absent.
pub struct DataRoots {
    pub roots: [LazyValue; 3],
}

impl fmt::Debug for DataRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataRoots")
    }
}

impl PartialEq for DataRoots {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for DataRoots {}

impl Opaque for DataRoots {
    fn runtime_type_name(&self) -> &str {
        "safety-gate.dev/data"
    }
}

fn roots(ftx: &FunctionContext) -> Result<Arc<dyn Opaque>, ExecutionError> {
    let binding = ftx
        .ptx
        .get_variable(DATA_BINDING)
        .ok_or_else(|| ftx.error("request data is not bound"))?;
    match Value::try_from(binding.as_ref())? {
        Value::Opaque(o) if o.downcast_ref::<DataRoots>().is_some() => Ok(o),
        _ => Err(ftx.error("request data is not bound")),
    }
}

fn literal_int(ftx: &FunctionContext, index: usize) -> Result<usize, ExecutionError> {
    match ftx.args.get(index).map(|a| &a.expr) {
        Some(Expr::Literal(LiteralValue::Int(i))) => {
            usize::try_from(*i.inner()).map_err(|_| ftx.error("bad path root"))
        }
        _ => Err(ftx.error("bad path root")),
    }
}

fn literal_str<'a>(ftx: &'a FunctionContext, index: usize) -> Result<&'a str, ExecutionError> {
    match ftx.args.get(index).map(|a| &a.expr) {
        Some(Expr::Literal(LiteralValue::String(s))) => Ok(s.inner()),
        _ => Err(ftx.error("bad path step")),
    }
}

enum Walk<'a> {
    Found(&'a LazyValue),
    /// An optional step found nothing: the result is `optional.none()`.
    Absent,
}

/// Follows the steps in arguments `1..end` from the root in argument 0.
fn walk<'a>(
    ftx: &FunctionContext,
    data: &'a DataRoots,
    end: usize,
    optional: &mut bool,
) -> Result<Walk<'a>, ExecutionError> {
    let root = literal_int(ftx, 0)?;
    let mut current = data
        .roots
        .get(root)
        .ok_or_else(|| ftx.error("bad path root"))?;
    for i in 1..end {
        let step = literal_str(ftx, i)?;
        let mut chars = step.chars();
        *optional |= chars.next() == Some(OPTIONAL_STEP);
        let key = chars.as_str();
        match current.members().map_err(|e| ftx.error(e))? {
            Some(members) => match members.get(key) {
                Some(v) => current = v,
                None if *optional => return Ok(Walk::Absent),
                None => return Err(ExecutionError::no_such_key(key)),
            },
            None if *optional && current.is_null() => return Ok(Walk::Absent),
            // cel-go: a list has no fields, optional or not.
            None if matches!(current.value(), Ok(Value::List(_))) => {
                return Err(ftx.error("unsupported index type 'string' in list"));
            }
            // An optional step from a string, number or bool: none, as cel-go.
            None if *optional => return Ok(Walk::Absent),
            // Kubernetes errors here; the `cel` crate would quietly give `false`.
            None => {
                let kind = current
                    .value()
                    .map(|v| v.type_of().to_string())
                    .unwrap_or_default();
                return Err(ftx.error(format!("no such key: {key} (selected from a {kind} value)")));
            }
        }
    }
    Ok(Walk::Found(current))
}

/// `object.a.?b['c']` → the value, or an optional once an optional step was taken.
pub fn path_function(ftx: &FunctionContext) -> ResolveResult {
    let data = roots(ftx)?;
    let Some(data) = data.downcast_ref::<DataRoots>() else {
        return Err(ftx.error("request data is not bound"));
    };
    let mut optional = false;
    match walk(ftx, data, ftx.args.len(), &mut optional)? {
        Walk::Found(v) => {
            let value = v.value().map_err(|e| ftx.error(e))?.clone();
            Ok(if optional {
                Value::Opaque(Arc::new(OptionalValue::of(value)))
            } else {
                value
            })
        }
        Walk::Absent => Ok(Value::Opaque(Arc::new(OptionalValue::none()))),
    }
}

/// `has(object.a.b)`: the path up to the last step must exist (as in CEL), the
/// last field is tested for presence.
pub fn has_function(ftx: &FunctionContext) -> ResolveResult {
    let data = roots(ftx)?;
    let Some(data) = data.downcast_ref::<DataRoots>() else {
        return Err(ftx.error("request data is not bound"));
    };
    let last = ftx
        .args
        .len()
        .checked_sub(1)
        .filter(|l| *l >= 1)
        .ok_or_else(|| ftx.error("bad has() path"))?;
    let mut optional = false;
    let parent = match walk(ftx, data, last, &mut optional)? {
        Walk::Found(v) => v,
        Walk::Absent => return Ok(Value::Bool(false)),
    };
    let field = literal_str(ftx, last)?;
    let field = field.strip_prefix(REQUIRED_STEP).unwrap_or(field);
    match parent.members().map_err(|e| ftx.error(e))? {
        Some(members) => Ok(Value::Bool(members.contains_key(field))),
        // cel-go: a list has no fields ("unsupported index type 'string' in
        // list"); a string, number, bool or null has none, so `has()` is false
        // (`has(oldObject.metadata)` on CREATE among them).
        None if parent.is_null() => Ok(Value::Bool(false)),
        None => match parent.value() {
            Ok(Value::List(_)) => Err(ftx.error("unsupported index type 'string' in list")),
            Ok(_) => Ok(Value::Bool(false)),
            Err(e) => Err(ftx.error(e)),
        },
    }
}
