//! `'%s'.format([list or map])` as cel-go's strings extension (v2, the version
//! Kubernetes uses) writes it: elements as CEL literals — strings quoted as Go's
//! `%q`, doubles with six decimals, timestamps as `timestamp("…")` — and map
//! entries sorted by their written key (`{"a":1, "b":2}`), where `kube-cel`
//! kept insertion order and wrote strings raw. Lists and maps are written here
//! and handed to `kube-cel`'s `format` as strings; every other argument and
//! verb is `kube-cel`'s.

use kube_cel::cel::extractors::This;
use kube_cel::cel::objects::{Key, Value};
use kube_cel::cel::parser::Expression;
use kube_cel::cel::{ExecutionError, ResolveResult};
use std::fmt::Write;
use std::sync::{Arc, LazyLock};

static FORMAT_X_WITH_Y: LazyLock<Expression> =
    LazyLock::new(|| super::overloads::parse_constant("x.format(y)"));

/// `s.format(args)`.
pub fn format(This(this): This<Arc<String>>, args: Value) -> ResolveResult {
    super::runtime_cost::charge_call("format", Some(&Value::String(this.clone())), &[], None)
        .map_err(|e| ExecutionError::function_error("format", e))?;
    let verbs = verbs(&this);
    let args = match args {
        Value::List(items) => Value::List(Arc::new(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::List(_) | Value::Map(_) => {
                        literal(v).map(|s| Value::String(Arc::new(s)))
                    }
                    // `%s` of a double is Go's `%g` (`0`, `1e+06`).
                    Value::Float(d) if verbs.get(i) == Some(&'s') => Ok(Value::String(Arc::new(
                        super::overloads::go_format_double(*d),
                    ))),
                    other => Ok(other.clone()),
                })
                .collect::<Result<Vec<_>, _>>()?,
        )),
        other => other,
    };
    super::overloads::kube_library_call_with(
        &FORMAT_X_WITH_Y,
        [("x", Value::String(this)), ("y", args)],
    )
}

/// The verb of each argument, in order: `%s`, `%.2f`, … (`%%` takes none).
fn verbs(format: &str) -> Vec<char> {
    let mut verbs = Vec::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            continue;
        }
        for v in chars.by_ref() {
            if v.is_ascii_alphabetic() {
                verbs.push(v);
                break;
            }
        }
    }
    verbs
}

fn format_error(what: &str) -> ExecutionError {
    ExecutionError::function_error("format", format!("no formatting function for {what}"))
}

/// A value as cel-go's `%s` clause writes it, then quoted as `quoteForCEL` does.
fn literal(v: &Value) -> Result<String, ExecutionError> {
    Ok(match v {
        Value::String(s) => go_quote(s),
        Value::Bytes(b) => format!("b{}", go_quote(&String::from_utf8_lossy(b))),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(d) if d.is_finite() => format!("{d:.6}"),
        Value::Float(d) => go_quote(&super::overloads::go_format_double(*d)),
        Value::List(items) => {
            let parts = items.iter().map(literal).collect::<Result<Vec<_>, _>>()?;
            format!("[{}]", parts.join(", "))
        }
        Value::Map(map) => {
            let mut entries = map
                .map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Key::String(s) => go_quote(s),
                        Key::Bool(b) => b.to_string(),
                        Key::Int(i) => i.to_string(),
                        Key::Uint(u) => u.to_string(),
                    };
                    Ok((key, literal(v)?))
                })
                .collect::<Result<Vec<_>, ExecutionError>>()?;
            // Go sorts the written keys as strings (byte order).
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let parts: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Timestamp(_) | Value::Duration(_) => {
            let kind = if matches!(v, Value::Timestamp(_)) {
                "timestamp"
            } else {
                "duration"
            };
            match super::overloads::kube_library_call(&super::overloads::STRING_OF_X, v.clone())? {
                Value::String(s) => format!("{kind}({})", go_quote(&s)),
                _ => return Err(format_error(kind)),
            }
        }
        _ => return Err(format_error("this value")),
    })
}

/// Go's `strconv.Quote`: `"` … `"` with `\a \b \f \n \r \t \v \\ \"`, `\xHH` for
/// other ASCII controls, `\uHHHH` for the non-printable characters below (Go
/// asks Unicode's tables; these are the ones a Kubernetes object can carry:
/// C1 controls, spaces other than U+0020, line and paragraph separators,
/// format characters).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if not_printable(c) => {
                if (c as u32) <= 0xffff {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn not_printable(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x9f | 0xa0 | 0xad | 0x1680 | 0x2000..=0x200f | 0x2028..=0x202f
        | 0x205f..=0x2064 | 0x3000 | 0xfeff | 0xfff9..=0xfffb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values: cel-go in kube-apiserver 1.37.2 (e2e/oracle).
    #[test]
    fn lists_and_maps_are_written_as_cel_go_writes_them() {
        let v = crate::policy::values::json_to_cel(&serde_json::json!([
            {"value": "line1\nline2", "name": "w"},
            {"port": 5, "name": "web-1"},
            [1.5, true, null, "tab\there"]
        ]));
        assert_eq!(
            literal(&v).expect("formats"),
            r#"[{"name":"w", "value":"line1\nline2"}, {"name":"web-1", "port":5}, [1.500000, true, null, "tab\there"]]"#
        );
    }

    #[test]
    fn each_argument_has_its_verb() {
        assert_eq!(verbs("%s and %.2f, 100%% %d%x"), vec!['s', 'f', 'd', 'x']);
    }

    #[test]
    fn quoting_follows_go() {
        assert_eq!(
            go_quote("a\"b\\c\u{1}\u{7f}é\u{a0}"),
            r#""a\"b\\c\x01\x7fé\u00a0""#
        );
    }
}
