//! The part of kube-apiserver's CEL type check that needs no schema: what it
//! refuses when a policy is created, because the types it knows for certain —
//! literals, `object`/`oldObject`/`params` (declared `dyn`), and the results of
//! a few functions — admit no overload.
//!
//! Examples, with kube-apiserver v1.37.2's own words (seen with `e2e/oracle`):
//! `'a' + 1` "found no matching overload for '_+_' applied to '(string, int)'",
//! `1.5 % 2.0`, `x % 2.0` (`%` has no `double` overload even for a `dyn` `x`),
//! `true ? 'x' : null`, `[1, object.x]` "expected type 'int' but found 'dyn'"
//! (list and map literals are homogeneous in Kubernetes), `x && 1`
//! "expected type 'bool' but found 'int'", `size(1)`.
//!
//! The checker only refuses what kube-apiserver refuses: every type it does not
//! know for certain is [`Ty::Unknown`], which matches anything and makes a
//! check pass (kube-apiserver types `request`, `namespaceObject` and variables,
//! which the gate does not model). `tests/differential_cel.rs` and
//! `tests/differential_generated.rs` compare it with kube-apiserver's checker.

use kube_cel::cel::common::ast::{CallExpr, EntryExpr, Expr, LiteralValue, operators};
use kube_cel::cel::parser::Expression;
use std::fmt;

/// A type as cel-go names it; `Unknown` is "not known to the gate".
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    Unknown,
    Dyn,
    Null,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    Type,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Unknown | Ty::Dyn => f.write_str("dyn"),
            Ty::Null => f.write_str("null"),
            Ty::Bool => f.write_str("bool"),
            Ty::Int => f.write_str("int"),
            Ty::Uint => f.write_str("uint"),
            Ty::Double => f.write_str("double"),
            Ty::String => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Duration => f.write_str("duration"),
            Ty::Timestamp => f.write_str("timestamp"),
            Ty::Type => f.write_str("type"),
            Ty::List(e) => write!(f, "list({e})"),
            Ty::Map(k, v) => write!(f, "map({k}, {v})"),
        }
    }
}

impl Ty {
    /// Contains nothing the gate does not know.
    fn known(&self) -> bool {
        match self {
            Ty::Unknown => false,
            Ty::List(e) => e.known(),
            Ty::Map(k, v) => k.known() && v.known(),
            _ => true,
        }
    }

    /// An argument of this type can be passed where `param` is expected
    /// (`dyn` either way, element types alike).
    fn fits(&self, param: &Ty) -> bool {
        match (self, param) {
            (Ty::Unknown | Ty::Dyn, _) | (_, Ty::Unknown | Ty::Dyn) => true,
            // `null` converts to the message types, `google.protobuf.Timestamp`
            // and `Duration` among them (`null < null` type-checks in cel-go).
            (Ty::Null, Ty::Timestamp | Ty::Duration) => true,
            (Ty::List(a), Ty::List(b)) => a.fits(b),
            (Ty::Map(a, b), Ty::Map(c, d)) => a.fits(c) && b.fits(d),
            (a, b) => a == b,
        }
    }
}

/// Checks `expr` (parsed, macros expanded, before the engine's rewrites).
/// `Err` is kube-apiserver's message for the first type error.
pub fn check(expr: &Expression) -> Result<(), String> {
    let mut checker = Checker {
        locals: Vec::new(),
        depth: 0,
        exempt: 0,
    };
    checker.ty(expr).map(|_| ())
}

struct Checker {
    /// Loop variables in scope, innermost last.
    locals: Vec<(String, Ty)>,
    /// Nesting of the node being checked.
    depth: usize,
    /// Inside the arguments of `format`, whose literals cel-go exempts from
    /// being homogeneous (`'%s %d'.format(['a', 1])`).
    exempt: usize,
}

/// Deeper than this the checker stops looking (the rest is `Unknown`): the
/// parser accepts nesting that would otherwise exhaust a thread's stack here.
const MAX_DEPTH: usize = 64;

fn no_overload(function: &str, args: &[&Ty]) -> String {
    let args: Vec<String> = args.iter().map(|t| t.to_string()).collect();
    format!(
        "found no matching overload for '{function}' applied to '({})'",
        args.join(", ")
    )
}

fn expected(want: &Ty, found: &Ty) -> String {
    format!("expected type '{want}' but found '{found}'")
}

/// The overloads of an operator: parameter types and result.
fn overloads(function: &str) -> Vec<(Vec<Ty>, Ty)> {
    use Ty::*;
    let same = |ts: &[Ty], result: fn(&Ty) -> Ty| -> Vec<(Vec<Ty>, Ty)> {
        ts.iter()
            .map(|t| (vec![t.clone(), t.clone()], result(t)))
            .collect()
    };
    let numbers = [Int, Uint, Double];
    match function {
        operators::ADD => {
            let mut o = same(&[Int, Uint, Double, String, Bytes, Duration], Ty::clone);
            o.push((vec![List(Box::new(Dyn)), List(Box::new(Dyn))], Unknown));
            o.push((vec![Timestamp, Duration], Timestamp));
            o.push((vec![Duration, Timestamp], Timestamp));
            o
        }
        operators::SUBSTRACT => {
            let mut o = same(&[Int, Uint, Double, Duration], Ty::clone);
            o.push((vec![Timestamp, Timestamp], Duration));
            o.push((vec![Timestamp, Duration], Timestamp));
            o
        }
        operators::MULTIPLY | operators::DIVIDE => same(&numbers, Ty::clone),
        operators::MODULO => same(&[Int, Uint], Ty::clone),
        operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS => {
            let mut o = Vec::new();
            for a in &numbers {
                for b in &numbers {
                    o.push((vec![a.clone(), b.clone()], Bool));
                }
            }
            o.extend(same(&[Bool, String, Bytes, Timestamp, Duration], |_| Bool));
            o
        }
        _ => Vec::new(),
    }
}

impl Checker {
    fn local(&self, name: &str) -> Option<&Ty> {
        self.locals
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    fn ty(&mut self, expr: &Expression) -> Result<Ty, String> {
        if self.depth >= MAX_DEPTH {
            return Ok(Ty::Unknown);
        }
        self.depth += 1;
        let t = self.node(expr);
        self.depth -= 1;
        t
    }

    fn node(&mut self, expr: &Expression) -> Result<Ty, String> {
        Ok(match &expr.expr {
            Expr::Literal(l) => match l {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::UInt(_) => Ty::Uint,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::String(_) => Ty::String,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Null => Ty::Null,
            },
            Expr::Ident(name) => match self.local(name) {
                Some(t) => t.clone(),
                None => match name.as_str() {
                    "object" | "oldObject" | "params" => Ty::Dyn,
                    n if super::type_values::NAMES.contains(&n) => Ty::Type,
                    _ => Ty::Unknown,
                },
            },
            Expr::Select(s) => {
                let operand = self.ty(&s.operand)?;
                if s.test {
                    Ty::Bool
                } else {
                    match operand {
                        Ty::Dyn => Ty::Dyn,
                        Ty::Map(_, v) => *v,
                        _ => Ty::Unknown,
                    }
                }
            }
            Expr::List(list) => {
                let mut first: Option<Ty> = None;
                for element in &list.elements {
                    let t = self.ty(element)?;
                    match &first {
                        None => first = Some(t),
                        Some(f) if self.exempt == 0 && f.known() && t.known() && *f != t => {
                            return Err(expected(f, &t));
                        }
                        Some(_) => {}
                    }
                }
                Ty::List(Box::new(first.unwrap_or(Ty::Unknown)))
            }
            Expr::Map(map) => {
                let (mut key, mut value): (Option<Ty>, Option<Ty>) = (None, None);
                for entry in &map.entries {
                    let EntryExpr::MapEntry(e) = &entry.expr else {
                        return Ok(Ty::Unknown);
                    };
                    for (slot, t) in [
                        (&mut key, self.ty(&e.key)?),
                        (&mut value, self.ty(&e.value)?),
                    ] {
                        match slot {
                            None => *slot = Some(t),
                            Some(f) if self.exempt == 0 && f.known() && t.known() && *f != t => {
                                return Err(expected(f, &t));
                            }
                            Some(_) => {}
                        }
                    }
                }
                Ty::Map(
                    Box::new(key.unwrap_or(Ty::Unknown)),
                    Box::new(value.unwrap_or(Ty::Unknown)),
                )
            }
            Expr::Comprehension(c) => {
                let range = self.ty(&c.iter_range)?;
                let (first, second) = match &range {
                    Ty::List(e) => (Ty::Int, (**e).clone()),
                    Ty::Map(k, v) => ((**k).clone(), (**v).clone()),
                    Ty::Dyn => (Ty::Dyn, Ty::Dyn),
                    _ => (Ty::Unknown, Ty::Unknown),
                };
                self.ty(&c.accu_init)?;
                let before = self.locals.len();
                match &c.iter_var2 {
                    // Two variables: index (or key) and value.
                    Some(v2) => {
                        self.locals.push((c.iter_var.clone(), first));
                        self.locals.push((v2.clone(), second));
                    }
                    None => {
                        let one = if matches!(range, Ty::List(_)) {
                            second
                        } else {
                            first
                        };
                        self.locals.push((c.iter_var.clone(), one));
                    }
                }
                self.locals.push((c.accu_var.clone(), Ty::Unknown));
                let checked = self
                    .ty(&c.loop_cond)
                    .and_then(|_| self.ty(&c.loop_step))
                    .and_then(|_| self.ty(&c.result));
                self.locals.truncate(before);
                checked?;
                Ty::Unknown
            }
            Expr::Call(call) => self.call(call)?,
            Expr::Struct(_) | Expr::Unspecified => Ty::Unknown,
        })
    }

    fn call(&mut self, call: &CallExpr) -> Result<Ty, String> {
        let name = call.func_name.as_str();
        // Namespaced functions (`lists.range`): the namespace is not a value.
        let target = match call.target.as_deref() {
            Some(t)
                if matches!(&t.expr, Expr::Ident(n) if self.local(n).is_none()
                && super::cel_env::is_namespace(n)) =>
            {
                return Ok(Ty::Unknown);
            }
            Some(t) => Some(self.ty(t)?),
            None => None,
        };
        let exempt = usize::from(name == "format");
        self.exempt += exempt;
        let args = call
            .args
            .iter()
            .map(|a| self.ty(a))
            .collect::<Result<Vec<_>, _>>();
        self.exempt -= exempt;
        let args = args?;
        let all_known = target.iter().chain(&args).all(Ty::known);
        match (name, target.as_ref(), args.as_slice()) {
            (operators::LOGICAL_AND | operators::LOGICAL_OR, None, [a, b]) => {
                for t in [a, b] {
                    if t.known() && !t.fits(&Ty::Bool) {
                        return Err(expected(&Ty::Bool, t));
                    }
                }
                Ok(Ty::Bool)
            }
            (operators::LOGICAL_NOT, None, [a]) => {
                if a.known() && !a.fits(&Ty::Bool) {
                    return Err(no_overload("!_", &[a]));
                }
                Ok(Ty::Bool)
            }
            (operators::NEGATE, None, [a]) => {
                if a.known() && ![Ty::Int, Ty::Double].iter().any(|p| a.fits(p)) {
                    return Err(no_overload("-_", &[a]));
                }
                Ok(if matches!(a, Ty::Int | Ty::Double) {
                    a.clone()
                } else {
                    Ty::Unknown
                })
            }
            (operators::CONDITIONAL, None, [c, t, f]) => {
                if all_known && (!c.fits(&Ty::Bool) || !t.fits(f)) {
                    return Err(no_overload("_?_:_", &[c, t, f]));
                }
                Ok(if t == f { t.clone() } else { Ty::Unknown })
            }
            (operators::EQUALS | operators::NOT_EQUALS, None, [a, b]) => {
                if all_known && !a.fits(b) {
                    return Err(no_overload(name, &[a, b]));
                }
                Ok(Ty::Bool)
            }
            (operators::IN, None, [x, container]) => {
                let fits = match container {
                    Ty::List(e) => x.fits(e),
                    Ty::Map(k, _) => x.fits(k),
                    Ty::Dyn | Ty::Unknown => true,
                    _ => false,
                };
                if all_known && !fits {
                    return Err(no_overload("@in", &[x, container]));
                }
                Ok(Ty::Bool)
            }
            (
                operators::ADD
                | operators::SUBSTRACT
                | operators::MULTIPLY
                | operators::DIVIDE
                | operators::MODULO
                | operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                None,
                [a, b],
            ) => {
                if !all_known {
                    return Ok(Ty::Unknown);
                }
                let matching: Vec<Ty> = overloads(name)
                    .into_iter()
                    .filter(|(params, _)| a.fits(&params[0]) && b.fits(&params[1]))
                    .map(|(_, result)| result)
                    .collect();
                // `[1] + ['a']`: list concatenation keeps one element type.
                if let (Ty::List(x), Ty::List(y)) = (a, b)
                    && !x.fits(y)
                {
                    return Err(no_overload(name, &[a, b]));
                }
                match matching.as_slice() {
                    [] => Err(no_overload(name, &[a, b])),
                    // `[1] + [2]`: the list's own type.
                    [Ty::Unknown] if name == operators::ADD && a == b => Ok(a.clone()),
                    [one] => Ok(one.clone()),
                    _ => Ok(Ty::Unknown),
                }
            }
            ("size", None, [a]) | ("size", Some(a), []) => {
                let sized = [
                    Ty::String,
                    Ty::Bytes,
                    Ty::List(Box::new(Ty::Dyn)),
                    Ty::Map(Box::new(Ty::Dyn), Box::new(Ty::Dyn)),
                ];
                if a.known() && !sized.iter().any(|p| a.fits(p)) {
                    return Err(match target {
                        Some(_) => {
                            format!("found no matching overload for 'size' applied to '{a}.()'")
                        }
                        None => no_overload("size", &[a]),
                    });
                }
                Ok(Ty::Int)
            }
            ("string", None, [_]) => Ok(Ty::String),
            ("int", None, [_]) => Ok(Ty::Int),
            ("uint", None, [_]) => Ok(Ty::Uint),
            ("double", None, [_]) => Ok(Ty::Double),
            ("bool", None, [_]) => Ok(Ty::Bool),
            ("bytes", None, [_]) => Ok(Ty::Bytes),
            ("duration", None, [_]) => Ok(Ty::Duration),
            ("timestamp", None, [_]) => Ok(Ty::Timestamp),
            ("dyn", None, [_]) => Ok(Ty::Dyn),
            ("type", None, [_]) => Ok(Ty::Type),
            ("contains" | "startsWith" | "endsWith" | "matches", Some(s), [_]) => {
                if s.known() && !s.fits(&Ty::String) {
                    return Err(format!(
                        "found no matching overload for '{name}' applied to '{s}.({})'",
                        args.iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Ok(Ty::Bool)
            }
            ("lowerAscii" | "upperAscii" | "trim", Some(_), []) => Ok(Ty::String),
            ("split", Some(_), [_] | [_, _]) => Ok(Ty::List(Box::new(Ty::String))),
            ("join", Some(_), [] | [_]) => Ok(Ty::String),
            _ => Ok(Ty::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    fn refused(source: &str) -> String {
        let ast = super::super::cel_env::parse(source).expect("parses");
        check(&ast).expect_err(source)
    }

    fn accepted(source: &str) {
        let ast = super::super::cel_env::parse(source).expect("parses");
        assert_eq!(check(&ast), Ok(()), "{source}");
    }

    /// Each refusal with kube-apiserver v1.37.2's words (e2e/oracle,
    /// NewExpressions environment, `x` declared dyn).
    #[test]
    fn refuses_what_kube_apiserver_refuses_with_its_words() {
        for (source, words) in [
            ("[1, object]", "expected type 'int' but found 'dyn'"),
            ("[object, 1]", "expected type 'dyn' but found 'int'"),
            ("[1, 2.0]", "expected type 'int' but found 'double'"),
            (
                "[[1], [object]]",
                "expected type 'list(int)' but found 'list(dyn)'",
            ),
            (
                "{'a': 1, 'b': object}",
                "expected type 'int' but found 'dyn'",
            ),
            (
                "true ? 'x' : null",
                "found no matching overload for '_?_:_' applied to '(bool, string, null)'",
            ),
            (
                "true ? 1 : 2.0",
                "found no matching overload for '_?_:_' applied to '(bool, int, double)'",
            ),
            (
                "1 + 1.0",
                "found no matching overload for '_+_' applied to '(int, double)'",
            ),
            (
                "'a' + 1",
                "found no matching overload for '_+_' applied to '(string, int)'",
            ),
            (
                "1.5 % 2.0",
                "found no matching overload for '_%_' applied to '(double, double)'",
            ),
            (
                "object % 2.0",
                "found no matching overload for '_%_' applied to '(dyn, double)'",
            ),
            (
                "1 == 1.0",
                "found no matching overload for '_==_' applied to '(int, double)'",
            ),
            (
                "'a' < 1",
                "found no matching overload for '_<_' applied to '(string, int)'",
            ),
            (
                "size(1)",
                "found no matching overload for 'size' applied to '(int)'",
            ),
            (
                "object.size() + 'a'",
                "found no matching overload for '_+_' applied to '(int, string)'",
            ),
            (
                "1 in ['a']",
                "found no matching overload for '@in' applied to '(int, list(string))'",
            ),
            (
                "[1] + ['a']",
                "found no matching overload for '_+_' applied to '(list(int), list(string))'",
            ),
            (
                "!1",
                "found no matching overload for '!_' applied to '(int)'",
            ),
            ("object && 1", "expected type 'bool' but found 'int'"),
            (
                "object.exists(e, 1)",
                "expected type 'bool' but found 'int'",
            ),
            (
                "[1, 2].map(e, 'a' + e)",
                "found no matching overload for '_+_' applied to '(string, int)'",
            ),
            (
                "string(object) + 1",
                "found no matching overload for '_+_' applied to '(string, int)'",
            ),
            (
                "null == 1",
                "found no matching overload for '_==_' applied to '(null, int)'",
            ),
        ] {
            assert_eq!(refused(source), words, "{source}");
        }
    }

    /// What kube-apiserver accepts, the checker must accept: `dyn` against
    /// anything, and whatever involves a type the gate does not know.
    /// The parser accepts deep nesting; checking it must not exhaust a 2 MiB
    /// thread stack (a tokio worker's). Parsed and dropped on a large stack,
    /// which the parser itself needs.
    #[test]
    fn deep_nesting_is_not_a_crash() {
        let big = |f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .stack_size(256 << 20)
                .spawn(f)
                .expect("thread")
                .join()
                .expect("joins");
        };
        let (tx, rx) = std::sync::mpsc::channel();
        big(Box::new(move || {
            let deep = format!("{}1{}", "[".repeat(90), "]".repeat(90));
            tx.send(super::super::cel_env::parse(&deep).expect("parses"))
                .expect("send");
        }));
        let ast = rx.recv().expect("ast");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let result = check(&ast);
                tx.send(ast).expect("send");
                result
            })
            .expect("thread")
            .join()
            .expect("the check fits in 2 MiB")
            .expect("accepted");
        let ast = rx.recv().expect("ast");
        big(Box::new(move || drop(ast)));
    }

    #[test]
    fn accepts_what_kube_apiserver_accepts() {
        for source in [
            "[object, oldObject]",
            "true ? 'x' : object",
            "object + 1",
            "object == 1.0",
            "1 < 1.0",
            "'a' in {'b': 1}",
            "object ? 1 : 2",
            "object.?a.orValue(1) + 'b'",
            "request.operation == 'CREATE'",
            "variables.names + ['a']",
            "[variables.a, 'x']",
            "object.spec.containers.all(c, c.image.startsWith('r/'))",
            "object.metadata.labels.exists(k, k.startsWith('a'))",
            "object.spec.replicas * 2 > 3",
            "has(object.spec) && object.spec.x != null",
            "duration('1s') + duration('2s') > duration('2s')",
            "timestamp('2020-01-01T00:00:00Z') - duration('1h') < timestamp('2020-01-01T00:00:00Z')",
            "[1, 2].map(e, e * 2).size() > 1",
            "lists.range(3).all(i, i >= 0)",
            "{'a': [1], 'b': [2]}.all(k, size(k) == 1)",
            "type(object) == map",
            "[1, 2].all(i, v, i < v)",
            "null < null",
            "'%s %d'.format(['a', 1])",
            "'%s'.format([['abc', 3.14, null]])",
        ] {
            accepted(source);
        }
    }
}
