//! The CEL that only MutatingAdmissionPolicy mutations have: the types
//! `JSONPatch` and `Object` (`Object.spec.template{…}` and so on), built with
//! message-construction syntax, and `jsonpatch.escapeKey`.
//!
//! The `cel` crate parses `Type{field: value}` but panics (`todo!`) when it
//! evaluates one, so a mutation expression is lowered before it is checked:
//! every construction becomes a call of [`STRUCT_FUNCTION`] with the type name
//! and the fields, evaluated to a [`PatchStruct`]. Only mutation expressions
//! are lowered; elsewhere construction stays a compile error, as in
//! kube-apiserver, where these types are declared for mutations only.

use crate::policy::values::cel_to_json;
use kube_cel::cel::common::ast::{CallExpr, EntryExpr, Expr, LiteralValue};
use kube_cel::cel::objects::{Key, Opaque, OpaqueEq, OptionalValue};
use kube_cel::cel::parser::Expression;
use kube_cel::cel::{FunctionContext, ResolveResult, Value};
use std::sync::Arc;

/// What `Type{f: v, ?g: w}` is lowered to: `@gate_patch_struct('Type', 'f', v, '?g', w)`.
pub const STRUCT_FUNCTION: &str = "@gate_patch_struct";
/// What `jsonpatch.escapeKey(k)` is lowered to.
pub const ESCAPE_KEY_FUNCTION: &str = "@gate_jsonpatch_escape_key";

/// The fields kube-apiserver declares for `JSONPatch` (`k8s.io/apiserver/pkg/cel/mutation`).
const JSONPATCH_FIELDS: &[&str] = &["op", "path", "from", "value"];

/// Lowers the constructions and `jsonpatch.escapeKey` calls of one mutation
/// expression. `Err` is a compile error worded as cel-go words it.
pub fn lower(expr: &mut Expression) -> Result<(), String> {
    if let Expr::Struct(s) = &mut expr.expr {
        let type_name = s.type_name.trim_start_matches('.').to_string();
        let is_object = type_name == "Object" || type_name.starts_with("Object.");
        if type_name != "JSONPatch" && !is_object {
            return Err(format!("undeclared reference to '{type_name}'"));
        }
        let mut args = vec![literal(expr.id, &type_name)];
        for entry in std::mem::take(&mut s.entries) {
            let EntryExpr::StructField(field) = entry.expr else {
                return Err(format!("'{type_name}' takes field initializers"));
            };
            if type_name == "JSONPatch" && !JSONPATCH_FIELDS.contains(&field.field.as_str()) {
                return Err(format!("undefined field '{}'", field.field));
            }
            let name = if field.optional {
                format!("?{}", field.field)
            } else {
                field.field.clone()
            };
            args.push(literal(entry.id, &name));
            args.push(field.value);
        }
        expr.expr = Expr::Call(CallExpr {
            func_name: STRUCT_FUNCTION.to_string(),
            target: None,
            args,
        });
    }
    if let Expr::Call(call) = &mut expr.expr
        && call.func_name == "escapeKey"
        && call.args.len() == 1
        && matches!(call.target.as_deref().map(|t| &t.expr), Some(Expr::Ident(n)) if n == "jsonpatch")
    {
        call.func_name = ESCAPE_KEY_FUNCTION.to_string();
        call.target = None;
    }
    for child in crate::policy::rewrite::children_mut(expr) {
        lower(child)?;
    }
    Ok(())
}

/// What a mutation must evaluate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultType {
    /// `list(JSONPatch)`.
    JsonPatchList,
    /// `Object`.
    Object,
}

/// The part of kube-apiserver's type check that needs no types: a result that
/// is visibly of the wrong type (a literal, a list of maps, `op: 1`) is a
/// compile error there, so it is one here. Results computed by functions or
/// variables are checked when they are evaluated.
pub fn check_result(expr: &Expression, want: ResultType) -> Result<(), String> {
    use kube_cel::cel::common::ast::operators;
    if let Expr::Call(call) = &expr.expr
        && call.func_name == operators::CONDITIONAL
        && call.args.len() == 3
    {
        check_result(&call.args[1], want)?;
        return check_result(&call.args[2], want);
    }
    let got = match &expr.expr {
        Expr::Literal(_) => Some("a literal"),
        Expr::Map(_) => Some("a map"),
        Expr::List(_) if want == ResultType::Object => Some("a list"),
        Expr::Struct(s) if want == ResultType::JsonPatchList => {
            Some(if s.type_name == "JSONPatch" {
                "a JSONPatch"
            } else {
                "an Object"
            })
        }
        Expr::Struct(s) if s.type_name != "Object" => Some("a nested Object or JSONPatch"),
        _ => None,
    };
    let want_text = match want {
        ResultType::JsonPatchList => "list(JSONPatch)",
        ResultType::Object => "Object",
    };
    if let Some(got) = got {
        return Err(format!("must evaluate to {want_text} but got {got}"));
    }
    if let Expr::List(list) = &expr.expr {
        for element in &list.elements {
            match &element.expr {
                Expr::Struct(s) if s.type_name == "JSONPatch" => check_jsonpatch_fields(s)?,
                Expr::Struct(_) | Expr::Map(_) | Expr::Literal(_) | Expr::List(_) => {
                    return Err(format!(
                        "must evaluate to {want_text} but got a list with other elements"
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// `op`, `path` and `from` are strings: a literal of another type is a type error.
fn check_jsonpatch_fields(s: &kube_cel::cel::common::ast::StructExpr) -> Result<(), String> {
    for entry in &s.entries {
        if let EntryExpr::StructField(field) = &entry.expr
            && matches!(field.field.as_str(), "op" | "path" | "from")
            && !field.optional
            && let Expr::Literal(value) = &field.value.expr
            && !matches!(value, LiteralValue::String(_))
        {
            let provided = match value {
                LiteralValue::Int(_) => "int",
                LiteralValue::UInt(_) => "uint",
                LiteralValue::Double(_) => "double",
                LiteralValue::Boolean(_) => "bool",
                LiteralValue::Bytes(_) => "bytes",
                LiteralValue::Null => "null_type",
                LiteralValue::String(_) => "string",
            };
            return Err(format!(
                "expected type of field '{}' is 'string' but provided type is '{provided}'",
                field.field
            ));
        }
    }
    Ok(())
}

fn literal(id: u64, text: &str) -> Expression {
    Expression {
        id,
        expr: Expr::Literal(LiteralValue::String(text.to_string().into())),
    }
}

/// A constructed `JSONPatch` or `Object…` value: its type name and the fields
/// that were set, in source order.
#[derive(Debug)]
pub struct PatchStruct {
    pub type_name: String,
    pub fields: Vec<(String, Value)>,
}

impl Opaque for PatchStruct {
    fn runtime_type_name(&self) -> &str {
        &self.type_name
    }
}

impl OpaqueEq for PatchStruct {
    fn opaque_eq(&self, other: &dyn Opaque) -> bool {
        other
            .downcast_ref::<PatchStruct>()
            .is_some_and(|o| o.type_name == self.type_name && o.fields == self.fields)
    }
}

impl PatchStruct {
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// `@gate_patch_struct('Type', 'field', value, …)`.
pub fn struct_function(ftx: &FunctionContext) -> ResolveResult {
    let mut args = ftx.args.iter();
    let Some(type_name) = args.next() else {
        return Err(ftx.error("a construction needs its type"));
    };
    let Value::String(type_name) = Value::resolve(type_name, ftx.ptx)? else {
        return Err(ftx.error("a construction's type must be a name"));
    };
    let mut fields: Vec<(String, Value)> = Vec::new();
    while let Some(name) = args.next() {
        let Value::String(name) = Value::resolve(name, ftx.ptx)? else {
            return Err(ftx.error("a field name must be a string"));
        };
        let Some(value) = args.next() else {
            return Err(ftx.error("a field needs a value"));
        };
        let value = Value::resolve(value, ftx.ptx)?;
        let (name, value) = match name.strip_prefix('?') {
            // `?field: optional`: set when the optional has a value.
            Some(plain) => match &value {
                Value::Opaque(o) => match o.downcast_ref::<OptionalValue>() {
                    Some(opt) => match opt.value() {
                        Some(v) => (plain.to_string(), v.clone()),
                        None => continue,
                    },
                    None => {
                        return Err(ftx.error(format!(
                            "field '{plain}' is optional: its value must be an optional"
                        )));
                    }
                },
                _ => {
                    return Err(ftx.error(format!(
                        "field '{plain}' is optional: its value must be an optional"
                    )));
                }
            },
            None => (name.to_string(), value),
        };
        if fields.iter().any(|(n, _)| *n == name) {
            return Err(ftx.error(format!("field '{name}' is set twice")));
        }
        fields.push((name, value));
    }
    Ok(Value::Opaque(Arc::new(PatchStruct {
        type_name: type_name.to_string(),
        fields,
    })))
}

/// `jsonpatch.escapeKey(k)`: `~` → `~0`, `/` → `~1` (RFC 6901).
pub fn escape_key_function(ftx: &FunctionContext) -> ResolveResult {
    let Some(arg) = ftx.args.first() else {
        return Err(ftx.error("jsonpatch.escapeKey takes one string"));
    };
    match Value::resolve(arg, ftx.ptx)? {
        Value::String(s) => Ok(Value::String(Arc::new(
            s.replace('~', "~0").replace('/', "~1"),
        ))),
        other => Err(ftx.error(format!(
            "no such overload: jsonpatch.escapeKey({:?})",
            other.type_of()
        ))),
    }
}

/// A value as JSON, constructions included (their fields become object members).
pub fn to_json(value: &Value) -> Result<serde_json::Value, String> {
    match value {
        Value::Opaque(o) => match o.downcast_ref::<PatchStruct>() {
            Some(s) => {
                let mut out = serde_json::Map::new();
                for (name, v) in &s.fields {
                    out.insert(name.clone(), to_json(v)?);
                }
                Ok(serde_json::Value::Object(out))
            }
            None => Err(format!(
                "a {} value cannot be converted to JSON",
                o.runtime_type_name()
            )),
        },
        Value::List(items) => Ok(serde_json::Value::Array(
            items.iter().map(to_json).collect::<Result<_, _>>()?,
        )),
        Value::Map(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map.map.iter() {
                let Key::String(key) = k else {
                    return Err(format!(
                        "a map key {k:?} cannot be converted to JSON (keys must be strings)"
                    ));
                };
                out.insert(key.to_string(), to_json(v)?);
            }
            Ok(serde_json::Value::Object(out))
        }
        // kube-apiserver passes values through protobuf's Struct, where every
        // number is a double and an integral one is written without a fraction.
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
            Ok(serde_json::Value::from(*f as i64))
        }
        other => cel_to_json(other),
    }
}

/// kube-apiserver's check that every nested construction is named after its
/// field path from the root (`Object{spec: Object.spec{…}}`); the errors are
/// worded as kube-apiserver words them.
pub fn check_type_names(value: &Value, path: &mut Vec<String>, errors: &mut Vec<String>) {
    match value {
        Value::Opaque(o) => {
            if let Some(s) = o.downcast_ref::<PatchStruct>() {
                let expected = path.join(".");
                if s.type_name != expected {
                    errors.push(format!(
                        "unexpected type name {:?}, expected {expected:?}, which matches field name path from root Object type",
                        s.type_name
                    ));
                }
                for (name, v) in &s.fields {
                    path.push(name.clone());
                    check_type_names(v, path, errors);
                    path.pop();
                }
            }
        }
        Value::List(items) => {
            for v in items.iter() {
                check_type_names(v, path, errors);
            }
        }
        Value::Map(map) => {
            for v in map.map.values() {
                check_type_names(v, path, errors);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lowered(source: &str) -> Result<Value, String> {
        let mut ast = crate::policy::cel_env::parse(source)?;
        lower(&mut ast)?;
        let scope = crate::policy::cel_env::root().new_inner_scope();
        Value::resolve(&ast, &scope).map_err(|e| e.to_string())
    }

    #[test]
    fn constructions_evaluate_instead_of_panicking() {
        let v = lowered(
            "[JSONPatch{op: 'add', path: '/metadata/labels/' + jsonpatch.escapeKey('a/b~c'), value: 'x'}]",
        )
        .unwrap();
        assert_eq!(
            to_json(&v).unwrap(),
            serde_json::json!([{"op": "add", "path": "/metadata/labels/a~1b~0c", "value": "x"}])
        );
        let v =
            lowered("Object{spec: Object.spec{replicas: 2, ?paused: optional.none()}}").unwrap();
        assert_eq!(
            to_json(&v).unwrap(),
            serde_json::json!({"spec": {"replicas": 2}})
        );
    }

    #[test]
    fn unknown_types_and_fields_are_compile_errors() {
        assert_eq!(
            lowered("Foo{a: 1}").unwrap_err(),
            "undeclared reference to 'Foo'"
        );
        assert_eq!(
            lowered("[JSONPatch{op: 'add', pth: '/x'}]").unwrap_err(),
            "undefined field 'pth'"
        );
    }

    #[test]
    fn nested_type_names_must_follow_the_field_path() {
        let v = lowered("Object{spec: Object.spec{selector: Object.spec.wrong{}}}").unwrap();
        let mut errors = Vec::new();
        check_type_names(&v, &mut vec!["Object".into()], &mut errors);
        assert_eq!(
            errors,
            vec![
                "unexpected type name \"Object.spec.wrong\", expected \"Object.spec.selector\", which matches field name path from root Object type"
            ]
        );
    }
}
