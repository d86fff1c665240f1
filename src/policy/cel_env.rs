//! The one CEL environment every expression runs in: the standard library of
//! the `cel` crate and the Kubernetes libraries of `kube-cel`.
//! Functions are registered once per process; evaluations bind their variables
//! in child scopes of this root. Every function is a cancellation check point
//! (see `cancel.rs`).

use super::rewrite::OPTIONAL_SELECT;
use super::{cancel, overloads, semantics};
use kube_cel::KubeCelExt;
use kube_cel::cel::extractors::IntoFunction;
use kube_cel::cel::parser::Expression;
use kube_cel::cel::{Context, FunctionContext, ResolveResult, Value};
use std::sync::{Arc, LazyLock, OnceLock};

static ROOT: LazyLock<Context<'static>> = LazyLock::new(|| {
    let mut ctx = Context::default();
    ctx.register_all();
    // Every callable library function becomes a cancellation check point that
    // calls the library's own implementation (see `delegated`); the overrides
    // below replace some of them.
    for d in super::kubernetes_version::FUNCTIONS {
        ctx.add_function(d.name, delegated(d.name));
    }
    // RE2's meaning, each pattern compiled once (see re2.rs).
    ctx.add_function("matches", guarded(super::re2::matches));
    ctx.add_function("find", guarded(super::re2::find));
    ctx.add_function("findAll", guarded(super::re2::find_all));
    // Kubernetes' words for a malformed quantity (see quantity.rs).
    ctx.add_function("quantity", guarded(super::quantity::quantity_constructor));
    // Where the crate differs from cel-go as Kubernetes runs it (see semantics.rs,
    // overloads.rs, format_values.rs).
    ctx.add_function("size", guarded(semantics::size));
    ctx.add_function("sum", guarded(semantics::sum));
    ctx.add_function("string", guarded(semantics::string));
    ctx.add_function("contains", guarded(overloads::contains));
    ctx.add_function("startsWith", guarded(overloads::starts_with));
    ctx.add_function("endsWith", guarded(overloads::ends_with));
    ctx.add_function("min", guarded(overloads::min));
    ctx.add_function("max", guarded(overloads::max));
    ctx.add_function("sort", guarded(overloads::sort));
    ctx.add_function("isSorted", guarded(overloads::is_sorted));
    ctx.add_function("int", guarded(overloads::int));
    ctx.add_function("uint", guarded(overloads::uint));
    ctx.add_function("bytes", guarded(overloads::bytes));
    ctx.add_function("duration", guarded(overloads::duration));
    ctx.add_function("timestamp", guarded(overloads::timestamp));
    ctx.add_function("split", guarded(overloads::split));
    ctx.add_function("format", guarded(super::format_values::format));
    ctx.add_function(overloads::ADD, guarded(overloads::add_function));
    ctx.add_function("dyn", guarded(semantics::dyn_function));
    ctx.add_function("type", guarded(super::type_values::type_function));
    ctx.add_function("bool", guarded(super::type_values::bool_function));
    ctx.add_function("optional.unwrap", guarded(overloads::unwrap_optionals));
    ctx.add_function("unwrapOpt", guarded(overloads::unwrap_optionals));
    for name in super::type_values::NAMES {
        ctx.add_variable_from_value(*name, super::type_values::named(name));
    }
    ctx.add_function(semantics::EQ, guarded(semantics::eq_function));
    ctx.add_function(semantics::NE, guarded(semantics::ne_function));
    ctx.add_function(semantics::IN, guarded(semantics::in_function));
    ctx.add_function(semantics::INDEX, guarded(semantics::index_function));
    ctx.add_function(semantics::OPT_INDEX, guarded(semantics::opt_index_function));
    ctx.add_function(semantics::HAS, guarded(semantics::has_field_function));
    ctx.add_function(
        semantics::COMPREHENSION2,
        guarded(semantics::comprehension2_function),
    );
    ctx.add_function(
        semantics::MAP_INSERT,
        guarded(semantics::map_insert_function),
    );
    ctx.add_function(
        super::macros::OPT_ITEMS,
        guarded(super::macros::opt_items_function),
    );
    ctx.add_function(
        super::macros::OPT_RESULT,
        guarded(super::macros::opt_result_function),
    );
    ctx.add_function(
        super::macros::SORT_BY,
        guarded(super::macros::sort_by_function),
    );
    ctx.add_function(
        super::quantifiers::QUANTIFIER,
        guarded(super::quantifiers::quantifier_function),
    );
    ctx.add_function(OPTIONAL_SELECT, guarded(optional_select));
    ctx.add_function(
        super::quantity::QUANTITY_INTEGER,
        guarded(super::quantity::quantity_integer_function),
    );
    ctx.add_function(
        super::collect::COLLECT,
        guarded(super::collect::collect_function),
    );
    ctx.add_function(
        super::runtime_cost::COST_FUNCTION,
        super::runtime_cost::cost_function,
    );
    ctx.add_function(
        super::paths::PATH_FUNCTION,
        guarded(super::paths::path_function),
    );
    ctx.add_function(
        super::paths::HAS_FUNCTION,
        guarded(super::paths::has_function),
    );
    ctx.add_function(
        super::variables::VARIABLE_FUNCTION,
        guarded(super::variables::variable_function),
    );
    for name in super::authz::FUNCTIONS {
        ctx.add_function(name, guarded(super::authz::authz_function));
    }
    // Only MutatingAdmissionPolicy mutations are lowered to these (see mutating/cel.rs).
    ctx.add_function(
        super::mutating::cel::STRUCT_FUNCTION,
        guarded(super::mutating::cel::struct_function),
    );
    ctx.add_function(
        super::mutating::cel::ESCAPE_KEY_FUNCTION,
        guarded(super::mutating::cel::escape_key_function),
    );
    ctx
});

/// A registered function, as the `cel` crate stores it.
type Handler = Box<dyn Fn(&mut FunctionContext) -> ResolveResult + Send + Sync>;

/// `function`, made a cancellation check point: a cancelled evaluation fails
/// here instead of running the function.
fn guarded<T: 'static, F: IntoFunction<T>>(function: F) -> Handler {
    let inner = function.into_function();
    Box::new(move |ftx: &mut FunctionContext| {
        cancel::check().map_err(|e| ftx.error(e))?;
        inner(ftx)
    })
}

/// The most arguments a delegated call keeps a parsed call expression for;
/// longer calls are parsed on each use (no library function takes that many).
const CACHED_ARITY: usize = 4;

/// A check point in front of the library's own `name` (the `cel` standard
/// library or `kube-cel`, whose functions are private and so cannot be wrapped
/// directly): the operand and arguments are evaluated in the caller's scope,
/// where nested calls are check points too, bound in a scope of
/// [`overloads::library`], and `name` is called there on them.
fn delegated(name: &'static str) -> Handler {
    let calls: [[OnceLock<Option<Expression>>; CACHED_ARITY + 1]; 2] = Default::default();
    Box::new(move |ftx: &mut FunctionContext| {
        cancel::check().map_err(|e| ftx.error(e))?;
        let method = ftx.this.is_some();
        let arity = ftx.args.len();
        let mut scope = overloads::library().new_inner_scope();
        if let Some(this) = ftx.this.clone() {
            scope.add_variable_from_value("t", this);
        }
        let charged = super::runtime_cost::charged_at_run_time(name);
        let mut values = Vec::new();
        for (i, arg) in ftx.args.iter().enumerate() {
            let value = Value::resolve(arg, ftx.ptx)?;
            if charged {
                values.push(value.clone());
            }
            scope.add_variable_from_value(format!("a{i}"), value);
        }
        let cached = calls
            .get(usize::from(method))
            .and_then(|by_arity| by_arity.get(arity))
            .map(|slot| {
                slot.get_or_init(|| call_expression(name, method, arity))
                    .clone()
            });
        let call = match cached {
            Some(call) => call,
            None => call_expression(name, method, arity),
        }
        .ok_or_else(|| ftx.error("cannot build the library call"))?;
        let result = Value::resolve(&call, &scope);
        if charged {
            super::runtime_cost::charged(name, ftx.this.as_ref(), &values, result)
        } else {
            result
        }
    })
}

/// `t.name(a0, a1, …)` or `name(a0, …)`, parsed.
fn call_expression(name: &str, method: bool, arity: usize) -> Option<Expression> {
    let args = (0..arity)
        .map(|i| format!("a{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let source = if method {
        format!("t.{name}({args})")
    } else {
        format!("{name}({args})")
    };
    kube_cel::cel::parser::Parser::new().parse(&source).ok()
}

fn optional_select(ftx: &FunctionContext) -> ResolveResult {
    use kube_cel::cel::objects::{Key, OptionalValue};
    let (Some(target), Some(field)) = (ftx.args.first(), ftx.args.get(1)) else {
        return Err(ftx.error("optional field selection needs an operand and a field"));
    };
    let none = || Value::Opaque(Arc::new(OptionalValue::none()));
    let target = Value::resolve(target, ftx.ptx)?;
    let Value::String(field) = Value::resolve(field, ftx.ptx)? else {
        return Err(ftx.error("the selected field must be a string"));
    };
    let operand = match target {
        Value::Opaque(o) => match o.downcast_ref::<OptionalValue>() {
            Some(opt) => match opt.value() {
                Some(v) => v.clone(),
                None => return Ok(none()),
            },
            None => return Err(ftx.error("optional field selection on an opaque value")),
        },
        other => other,
    };
    match operand {
        Value::Map(map) => Ok(match map.map.get(&Key::String(field)) {
            Some(v) => Value::Opaque(Arc::new(OptionalValue::of(v.clone()))),
            None => none(),
        }),
        // cel-go: a list has no fields (an error); selecting from a string,
        // number, bool or null (`oldObject.?spec` on CREATE) gives none.
        Value::List(_) => Err(ftx.error("unsupported index type 'string' in list")),
        _ => Ok(none()),
    }
}

/// The shared root context (functions only, no variables).
pub fn root() -> &'static Context<'static> {
    &ROOT
}

/// Parses an expression exactly as policy expressions are parsed (optional syntax on).
pub fn parse(source: &str) -> Result<kube_cel::cel::parser::Expression, String> {
    kube_cel::cel::parser::Parser::new()
        .enable_optional_syntax(true)
        .parse(&super::unary_runs::normalize(source))
        .map_err(|e| e.to_string())
}

/// Evaluates one expression in the engine's environment with the given variables.
/// For conformance tests and tools; policies go through the compiled path.
pub fn evaluate(
    source: &str,
    bindings: Vec<(String, kube_cel::cel::Value)>,
) -> Result<kube_cel::cel::Value, String> {
    evaluate_with_cost(source, bindings).0
}

/// Asserts that `source` evaluates to `true` with no variables (the engine's
/// unit tests state each CEL fact as one such expression).
#[cfg(test)]
pub(crate) fn assert_true(source: &str) {
    assert_eq!(
        evaluate(source, Vec::new()),
        Ok(kube_cel::cel::Value::Bool(true)),
        "{source}"
    );
}

/// What kube-apiserver's type check refuses in `source`, as the loader checks
/// a policy expression (see `type_check.rs`); a syntax error is an error too.
pub fn check_types(source: &str) -> Result<(), String> {
    let mut ast = parse(source)?;
    semantics::expand_two_variable_macros(&mut ast);
    super::macros::expand(&mut ast);
    super::type_check::check(&ast)
}

/// [`evaluate`], with the runtime cost in Kubernetes' units (see
/// `runtime_cost.rs`); past the per-expression limit the result is its error.
pub fn evaluate_with_cost(
    source: &str,
    bindings: Vec<(String, kube_cel::cel::Value)>,
) -> (Result<kube_cel::cel::Value, String>, u64) {
    let mut ast = match parse(source) {
        Ok(ast) => ast,
        Err(e) => return (Err(e), 0),
    };
    semantics::expand_two_variable_macros(&mut ast);
    super::macros::expand(&mut ast);
    super::rewrite::rewrite_optional_selects(&mut ast);
    semantics::rewrite(&mut ast);
    if let Some(problem) = unsupported(&ast) {
        return (Err(problem.to_string()), 0);
    }
    super::runtime_cost::annotate(&mut ast);
    let mut scope = root().new_inner_scope();
    for (name, value) in bindings {
        scope.add_variable_from_value(name, value);
    }
    let measured = super::runtime_cost::measure(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kube_cel::cel::Value::resolve(&ast, &scope)
        }))
    });
    let result = if measured.exceeded {
        Err(super::runtime_cost::LIMIT_EXCEEDED.to_string())
    } else {
        match measured.value {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("the CEL interpreter panicked".to_string()),
        }
    };
    (result, measured.cost)
}

/// The first construct in `expr` that the `cel` crate cannot evaluate and
/// panics on (`todo!("Support structs!")`, "Can't evaluate Unspecified
/// Expr"), named with the words the policy compiler refuses it with. Found by
/// the `cel_expression` fuzz target.
fn unsupported(expr: &Expression) -> Option<&'static str> {
    use kube_cel::cel::common::ast::{EntryExpr, Expr};
    const MESSAGE_CONSTRUCTION: &str = "message construction ('Type{field: ...}') is not supported";
    match &expr.expr {
        Expr::Struct(_) => Some(MESSAGE_CONSTRUCTION),
        Expr::Unspecified => Some("incomplete expression"),
        Expr::Literal(_) | Expr::Ident(_) => None,
        Expr::Select(select) => unsupported(&select.operand),
        Expr::Call(call) => call
            .target
            .as_deref()
            .and_then(unsupported)
            .or_else(|| call.args.iter().find_map(unsupported)),
        Expr::List(list) => list.elements.iter().find_map(unsupported),
        Expr::Map(map) => map.entries.iter().find_map(|entry| match &entry.expr {
            EntryExpr::StructField(_) => Some(MESSAGE_CONSTRUCTION),
            EntryExpr::MapEntry(e) => unsupported(&e.key).or_else(|| unsupported(&e.value)),
        }),
        Expr::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .find_map(unsupported),
    }
}

// Function names that can be called (as the parser names them: `lists.range`
// for namespaced ones) are the rows of `kubernetes_version::FUNCTIONS`: what
// both `cel` 0.13 + `kube-cel` 0.8 evaluate and Kubernetes declares;
// `known_functions_resolve` checks every row resolves here. Left out because
// kube-apiserver 1.37 does not declare them for ValidatingAdmissionPolicy, so a
// policy using them would load here and be refused there (seen with
// e2e/oracle): kube-cel's `math.*`, `base64.*`, `isIPv4`/`isIPv6`/`isCIDRv4`/
// `isCIDRv6`, and `jsonpatch.escapeKey` (MutatingAdmissionPolicy only).

/// Namespaces of namespaced functions (`lists.range`).
const NAMESPACES: &[&str] = &[
    "optional",
    "format",
    "ip",
    "jsonpatch",
    "lists",
    "sets",
    "strings",
];

pub fn is_function(name: &str) -> bool {
    super::kubernetes_version::declared(name).is_some()
}

pub fn is_namespace(name: &str) -> bool {
    NAMESPACES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_cel::cel::ExecutionError;
    use kube_cel::cel::Value;
    use kube_cel::cel::parser::Parser;

    fn eval(src: &str) -> Result<Value, ExecutionError> {
        let ast = Parser::new()
            .enable_optional_syntax(true)
            .parse(src)
            .expect("parses");
        Value::resolve(&ast, &root().new_inner_scope())
    }

    /// Every row of kubernetes_version::FUNCTIONS must be registered: an unregistered name would
    /// pass the load-time check and then fail every request.
    #[test]
    fn known_functions_resolve() {
        for name in super::super::kubernetes_version::FUNCTIONS
            .iter()
            .map(|d| d.name)
        {
            let call = match name.split_once('.') {
                Some((ns, f)) => format!("{ns}.{f}()"),
                None => format!("{name}()"),
            };
            if let Err(ExecutionError::UndeclaredReference(r)) = eval(&call) {
                panic!("function {name} is listed but not registered ({r})");
            }
        }
        assert!(matches!(
            eval("noSuchFunction()"),
            Err(ExecutionError::UndeclaredReference(_))
        ));
    }

    #[test]
    fn matches_uses_the_cache_and_reports_bad_patterns() {
        assert_eq!(eval("'abc'.matches('^a.c$')").ok(), Some(Value::Bool(true)));
        assert_eq!(eval("'abc'.matches('^a.c$')").ok(), Some(Value::Bool(true)));
        assert!(eval("'abc'.matches('(')").is_err());
    }

    #[test]
    fn optional_field_selection_returns_none_for_absent_fields() {
        let eval_compiled = |src: &str| {
            let mut ast = parse(src).expect("parses");
            super::super::rewrite::rewrite_optional_selects(&mut ast);
            Value::resolve(&ast, &root().new_inner_scope())
        };
        assert_eq!(
            eval_compiled("{'a': 1}.?b.orValue(2)").ok(),
            Some(Value::Int(2))
        );
        assert_eq!(
            eval_compiled("{'a': {'b': 1}}.?a.?b.orValue(0)").ok(),
            Some(Value::Int(1))
        );
        assert_eq!(
            eval_compiled("{'a': {'b': 1}}.?x.?b.orValue(0)").ok(),
            Some(Value::Int(0))
        );
        assert_eq!(
            eval_compiled("{'a': 1}.?a.hasValue()").ok(),
            Some(Value::Bool(true))
        );
        assert_eq!(
            eval_compiled("null.?a.hasValue()").ok(),
            Some(Value::Bool(false))
        );
        // cel-go (kube-apiserver 1.37, e2e/oracle): none from a string, an error
        // from a list.
        assert_eq!(
            eval_compiled("'str'.?a.hasValue()").ok(),
            Some(Value::Bool(false))
        );
        assert!(eval_compiled("[1].?a").is_err());
    }

    #[test]
    fn kubernetes_libraries_are_registered() {
        assert_eq!(
            eval("quantity('1Gi').isGreaterThan(quantity('1Mi'))").ok(),
            Some(Value::Bool(true))
        );
        assert_eq!(eval("[1, 2, 3].sum()").ok(), Some(Value::Int(6)));
        assert_eq!(eval("{'a': 1}[?'b'].orValue(7)").ok(), Some(Value::Int(7)));
    }
}
