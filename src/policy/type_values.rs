//! CEL type values: `type(x)` and the type names `int`, `string`, `map`, …
//! used as values (`type(x) == int`), which Kubernetes' environment has and the
//! `cel` 0.13 interpreter does not.
//!
//! A type is an opaque value holding cel-go's name for it; two types are equal
//! when their names are. The names are bound once in the root scope
//! (`cel_env.rs`); a loop variable of the same name shadows them, as in cel-go.

use kube_cel::cel::objects::{Opaque, OptionalValue, Value};
use kube_cel::cel::{ExecutionError, FunctionContext, ResolveResult};
use std::sync::Arc;

/// A CEL type, by cel-go's name for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeValue(pub String);

impl Opaque for TypeValue {
    fn runtime_type_name(&self) -> &str {
        "type"
    }
}

/// The type names a policy can use as values.
pub const NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

/// The value bound to each of [`NAMES`].
pub fn named(name: &str) -> Value {
    Value::Opaque(Arc::new(TypeValue(name.to_string())))
}

/// cel-go's name of `value`'s type.
pub fn type_of(value: &Value) -> String {
    match value {
        Value::Opaque(o) => {
            if o.downcast_ref::<TypeValue>().is_some() {
                "type".to_string()
            } else if o.downcast_ref::<OptionalValue>().is_some() {
                "optional_type".to_string()
            } else {
                o.runtime_type_name().to_string()
            }
        }
        other => super::overloads::type_name(other).to_string(),
    }
}

/// `type(x)`.
pub fn type_function(ftx: &FunctionContext) -> ResolveResult {
    let [arg] = ftx.args else {
        return Err(ftx.error("type() takes one argument"));
    };
    let value = Value::resolve(arg, ftx.ptx)?;
    Ok(Value::Opaque(Arc::new(TypeValue(type_of(&value)))))
}

/// `bool(x)`: a bool, or a string as Go's `strconv.ParseBool` reads it (cel-go).
pub fn bool_function(ftx: &FunctionContext) -> ResolveResult {
    let [arg] = ftx.args else {
        return Err(ftx.error("bool() takes one argument"));
    };
    match Value::resolve(arg, ftx.ptx)? {
        b @ Value::Bool(_) => Ok(b),
        Value::String(s) => match s.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
            other => Err(ExecutionError::function_error(
                "bool",
                format!("type conversion error from 'string' to 'bool': {other:?}"),
            )),
        },
        other => Err(ExecutionError::function_error(
            "bool",
            format!("no such overload: bool({})", type_of(&other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::cel_env::evaluate;

    use crate::policy::cel_env::assert_true as is_true;

    #[test]
    fn types_are_values_that_compare_by_name() {
        is_true("type(1) == int");
        is_true("type('a') == string");
        is_true("type([]) == list && type({}) == map");
        is_true("type(null) == null_type");
        is_true("type(int) == type && type(type) == type");
        is_true("type(1u) == uint && type(1.5) == double && type(b'x') == bytes");
        is_true("type(1) != string");
        is_true("[1, 'a'].all(x, type(x) == int || type(x) == string)");
    }

    #[test]
    fn optional_lists_unwrap_to_their_present_values() {
        is_true("optional.unwrap([optional.of(1), optional.none(), optional.of(3)]) == [1, 3]");
        is_true("[optional.none(), optional.of('a')].unwrapOpt() == ['a']");
        assert!(evaluate("optional.unwrap([1])", Vec::new()).is_err());
    }

    #[test]
    fn bool_converts_strings_as_cel_go_does() {
        is_true("bool('true') && bool('T') && bool('1') && !bool('false') && !bool('0')");
        is_true("bool(true)");
        assert!(evaluate("bool('yes')", Vec::new()).is_err());
        assert!(evaluate("bool(1)", Vec::new()).is_err());
    }
}
