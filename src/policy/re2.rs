//! Regular expressions as Kubernetes runs them: RE2 syntax and meaning on the
//! `regex` crate, each pattern compiled once.
//!
//! cel-go's `matches` and Kubernetes' `find`/`findAll` use Go's RE2, whose
//! Perl classes are ASCII (`\w` is `[0-9A-Za-z_]`, `\d` `[0-9]`, `\s`
//! `[\t\n\f\r ]`, `\b` an ASCII word boundary) and which reads `\Q…\E` as a
//! literal. The `regex` crate's classes are Unicode and it has no `\Q`:
//! `'é'.matches('^\\w$')` would be true here and false in kube-apiserver.
//! [`translate`] rewrites those escapes before compiling; everything else in
//! RE2's syntax means the same in both.
//!
//! Compiling is the expensive part (a Unicode `[\w.-]{0,127}`, as a published
//! Kubescape policy writes it, took 67 ms; its ASCII form is far smaller), and
//! `kube-cel`'s `find`/`findAll` compile on every call, so all three functions
//! are replaced by cached ones here.

use kube_cel::cel::extractors::{Arguments, This};
use kube_cel::cel::{ExecutionError, FunctionContext, ResolveResult, Value};
use regex::Regex;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

/// Patterns kept compiled; past it the cache starts again (patterns built
/// from request data could otherwise grow it without end).
const CACHE_LIMIT: usize = 512;
static CACHE: LazyLock<RwLock<HashMap<String, Arc<Regex>>>> = LazyLock::new(Default::default);

/// `pattern` (RE2 syntax) compiled with RE2's meaning, from the cache when
/// it was compiled before.
///
/// # Errors
/// The `regex` crate's error for a pattern it cannot compile.
pub fn compiled(pattern: &str) -> Result<Arc<Regex>, regex::Error> {
    if let Ok(cache) = CACHE.read()
        && let Some(re) = cache.get(pattern)
    {
        return Ok(re.clone());
    }
    let re = Arc::new(Regex::new(&translate(pattern))?);
    if let Ok(mut cache) = CACHE.write() {
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(pattern.to_string(), re.clone());
    }
    Ok(re)
}

/// RE2's ASCII Perl classes and word boundaries, and `\Q…\E` literals, in the
/// `regex` crate's syntax; the rest of `pattern` unchanged. A class becomes a
/// bracket expression, which the crate also accepts nested inside `[…]`.
pub fn translate(pattern: &str) -> Cow<'_, str> {
    if !pattern.contains('\\') {
        return Cow::Borrowed(pattern);
    }
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut in_class = false;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    out.push('\\');
                    break;
                };
                match (next, in_class) {
                    ('w', _) => out.push_str("[0-9A-Za-z_]"),
                    ('W', _) => out.push_str("[^0-9A-Za-z_]"),
                    ('d', _) => out.push_str("[0-9]"),
                    ('D', _) => out.push_str("[^0-9]"),
                    ('s', _) => out.push_str(r"[\t\n\x0C\r ]"),
                    ('S', _) => out.push_str(r"[^\t\n\x0C\r ]"),
                    ('b', false) => out.push_str(r"(?-u:\b)"),
                    ('B', false) => out.push_str(r"(?-u:\B)"),
                    ('Q', false) => {
                        // Up to `\E` or the end, every character is itself.
                        let mut literal = String::new();
                        while let Some(l) = chars.next() {
                            if l == '\\' && chars.peek() == Some(&'E') {
                                chars.next();
                                break;
                            }
                            literal.push(l);
                        }
                        out.push_str(&regex::escape(&literal));
                    }
                    _ => {
                        out.push('\\');
                        out.push(next);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // `[]…]` and `[^]…]`: a leading `]` is a member, not the end.
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
                if chars.peek() == Some(&']') {
                    chars.next();
                    out.push_str(r"\]");
                }
            }
            '[' if in_class && chars.peek() == Some(&':') => {
                // A POSIX class (`[[:alpha:]]`) inside a bracket: copied
                // through its own `:]`.
                out.push('[');
                while let Some(p) = chars.next() {
                    out.push(p);
                    if p == ':' && chars.peek() == Some(&']') {
                        chars.next();
                        out.push(']');
                        break;
                    }
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn invalid(ftx: &FunctionContext, pattern: &str, e: &regex::Error) -> ExecutionError {
    ftx.error(format!("'{pattern}' is not a valid regex: {e}"))
}

/// `s.matches(re)`.
pub fn matches(
    ftx: &FunctionContext,
    This(this): This<Arc<String>>,
    pattern: Arc<String>,
) -> Result<bool, ExecutionError> {
    super::runtime_cost::charge_call(
        "matches",
        Some(&Value::String(this.clone())),
        &[Value::String(pattern.clone())],
        None,
    )
    .map_err(|e| ftx.error(e))?;
    compiled(&pattern)
        .map(|re| re.is_match(&this))
        .map_err(|e| invalid(ftx, &pattern, &e))
}

/// `s.find(re)`: the leftmost match, or `''`.
pub fn find(
    ftx: &FunctionContext,
    This(this): This<Arc<String>>,
    pattern: Arc<String>,
) -> ResolveResult {
    let re = compiled(&pattern).map_err(|e| invalid(ftx, &pattern, &e))?;
    let found = re.find(&this).map_or("", |m| m.as_str());
    let result = Ok(Value::String(Arc::new(found.to_string())));
    super::runtime_cost::charged(
        "find",
        Some(&Value::String(this)),
        &[Value::String(pattern)],
        result,
    )
}

/// `s.findAll(re)` and `s.findAll(re, n)`: the matches, left to right, at
/// most `n` of them when `n` is not negative (Go's `FindAllString`).
pub fn find_all(
    ftx: &FunctionContext,
    This(this): This<Arc<String>>,
    Arguments(args): Arguments,
) -> ResolveResult {
    let (pattern, limit) = match args.as_slice() {
        [Value::String(p)] => (p.clone(), None),
        [Value::String(p), Value::Int(n)] => (p.clone(), usize::try_from(*n).ok()),
        _ => return Err(ftx.error("no such overload")),
    };
    let re = compiled(&pattern).map_err(|e| invalid(ftx, &pattern, &e))?;
    let found: Vec<Value> = re
        .find_iter(&this)
        .take(limit.unwrap_or(usize::MAX))
        .map(|m| Value::String(Arc::new(m.as_str().to_string())))
        .collect();
    super::runtime_cost::charged(
        "findAll",
        Some(&Value::String(this)),
        &args,
        Ok(Value::List(Arc::new(found))),
    )
}

#[cfg(test)]
mod tests {
    use super::{compiled, translate};

    #[test]
    fn perl_classes_and_boundaries_are_ascii_as_in_re2() {
        let is = |pattern: &str, text: &str| compiled(pattern).expect("compiles").is_match(text);
        assert!(!is(r"^\w$", "é"));
        assert!(is(r"^\w$", "a"));
        assert!(!is(r"^\d$", "٣"));
        assert!(!is(r"a\sb", "a\u{a0}b"));
        assert!(is(r"a\sb", "a\tb"));
        assert!(is(r"^\W$", "é"));
        assert!(is(r"^[\w.-]+$", "nginx.io-1"));
        assert!(!is(r"^[\w.-]+$", "nginé"));
        assert!(!is(r"\béa", "éa"));
        assert!(is(r"\bx\b", "x y"));
        assert!(is(r"^\Qa.b\E$", "a.b"));
        assert!(!is(r"^\Qa.b\E$", "axb"));
        assert!(is(r"^[]a]+$", "]a"));
        assert!(is(r"^\\w$", r"\w"));
        assert!(is(r"^[[:alpha:]\d]+$", "ab1"));
        assert!(!is(r"^[[:alpha:]\d]+$", "a٣"));
    }

    /// The fuzzer's slow PolicyTest suites (a published Kubescape policy,
    /// 1.0-1.1 s): `findAll(':[\\w][\\w.-]{0,127}(\\/)?')` compiled its
    /// pattern on every call, 67 ms each. Compiled once now: the second call
    /// gets the same compiled pattern.
    #[test]
    fn a_pattern_is_compiled_once() {
        let pattern = r":[\w][\w.-]{0,127}(\/)?";
        let first = compiled(pattern).expect("compiles");
        let second = compiled(pattern).expect("compiles");
        assert!(std::sync::Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn patterns_without_escapes_are_untouched() {
        assert!(matches!(
            translate("^[a-z]+$"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(translate(r"x\.y\+"), r"x\.y\+");
    }
}
