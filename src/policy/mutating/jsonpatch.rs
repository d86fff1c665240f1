//! JSON Patch as kube-apiserver applies a MutatingAdmissionPolicy's `JSONPatch`
//! mutations: `gopkg.in/evanphx/json-patch.v4` (v4.13.0), which differs from a
//! strict RFC 6902 implementation (the `json-patch` crate) in ways a policy
//! can observe:
//!
//! - `replace` of an absent object member sets it (v4 checks only the parent);
//! - negative array indexes count from the end (`/containers/-1`);
//! - `test` of an absent member passes when the operation has no `value`;
//! - `move` reads the source before removing it, then resolves the destination.
//!
//! Operations apply in order to a copy; any error discards the copy.

use serde_json::Value;

/// Why a patch did not apply. `TestFailed` is not an error for kube-apiserver:
/// the object stays as it was.
#[derive(Debug, PartialEq)]
pub enum PatchError {
    TestFailed(String),
    Invalid(String),
}

/// One operation, as kube-apiserver builds it from a `JSONPatch` value.
#[derive(Debug, Clone)]
pub struct Operation {
    pub op: String,
    pub path: String,
    pub from: Option<String>,
    pub value: Option<Value>,
}

/// Applies `ops` to a copy of `doc`; the patched copy, or why not.
pub fn apply(doc: &Value, ops: &[Operation]) -> Result<Value, PatchError> {
    let mut out = doc.clone();
    for op in ops {
        match op.op.as_str() {
            "add" => add(&mut out, &op.path, op.value.clone().unwrap_or(Value::Null))?,
            "remove" => {
                remove(&mut out, &op.path)?;
            }
            "replace" => replace(&mut out, &op.path, op.value.clone().unwrap_or(Value::Null))?,
            "move" => {
                let from = op
                    .from
                    .as_deref()
                    .ok_or_else(|| invalid("move operation, missing from field: missing value"))?;
                let value = get(&mut out, from, "move")?;
                remove(&mut out, from)?;
                add(&mut out, &op.path, value.unwrap_or(Value::Null))?;
            }
            "copy" => {
                let from = op
                    .from
                    .as_deref()
                    .ok_or_else(|| invalid("copy operation, missing from field: missing value"))?;
                let value = get(&mut out, from, "copy")?;
                add(&mut out, &op.path, value.unwrap_or(Value::Null))?;
            }
            "test" => test(&mut out, &op.path, op.value.as_ref())?,
            other => return Err(invalid(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(out)
}

fn invalid(message: impl Into<String>) -> PatchError {
    PatchError::Invalid(message.into())
}

/// RFC 6901 key decoding, as v4 does it: `~1` first, then `~0`.
fn decode(key: &str) -> String {
    key.replace("~1", "/").replace("~0", "~")
}

/// Go's `strconv.Atoi`: optional sign, decimal digits.
fn atoi(key: &str) -> Option<i64> {
    let digits = key.strip_prefix(['+', '-']).unwrap_or(key);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
}

/// The container holding the last path segment, and that segment (decoded).
fn container<'a>(doc: &'a mut Value, path: &str) -> Option<(&'a mut Value, String)> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 2 {
        return None;
    }
    let mut current = doc;
    for part in &parts[1..parts.len() - 1] {
        let key = decode(part);
        current = match current {
            Value::Object(map) => map.get_mut(&key)?,
            Value::Array(items) => {
                let index = array_index(atoi(&key)?, items.len())?;
                items.get_mut(index)?
            }
            _ => return None,
        };
        // v4 cannot step into null (or a scalar).
        if !(current.is_object() || current.is_array()) {
            return None;
        }
    }
    Some((current, decode(parts[parts.len() - 1])))
}

/// A negative index counts from the end; `None` when out of range.
fn array_index(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let index = if index < 0 { index + len } else { index };
    usize::try_from(index)
        .ok()
        .filter(|_| (0..len).contains(&index))
}

fn missing_path(op: &str, path: &str) -> PatchError {
    invalid(format!(
        "{op} operation does not apply: doc is missing path: \"{path}\": missing value"
    ))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let (parent, key) = container(doc, path).ok_or_else(|| missing_path("add", path))?;
    match parent {
        Value::Object(map) => {
            map.insert(key, value);
            Ok(())
        }
        Value::Array(items) => {
            if key == "-" {
                items.push(value);
                return Ok(());
            }
            let index = atoi(&key).ok_or_else(|| {
                invalid(format!(
                    "error in add for path: '{path}': value was not a proper array index: '{key}'"
                ))
            })?;
            let size = items.len() as i64 + 1;
            let bad = || {
                invalid(format!(
                    "error in add for path: '{path}': Unable to access invalid index: {index}: invalid index referenced"
                ))
            };
            if index >= size || index < -size {
                return Err(bad());
            }
            let at = if index < 0 { index + size } else { index };
            items.insert(at as usize, value);
            Ok(())
        }
        _ => Err(missing_path("add", path)),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (parent, key) = container(doc, path).ok_or_else(|| missing_path("remove", path))?;
    match parent {
        Value::Object(map) => map.remove(&key).ok_or_else(|| {
            invalid(format!(
                "error in remove for path: '{path}': Unable to remove nonexistent key: {key}: missing value"
            ))
        }),
        Value::Array(items) => {
            let index = atoi(&key)
                .and_then(|i| array_index(i, items.len()))
                .ok_or_else(|| {
                    invalid(format!(
                        "error in remove for path: '{path}': Unable to access invalid index: {key}: invalid index referenced"
                    ))
                })?;
            Ok(items.remove(index))
        }
        _ => Err(missing_path("remove", path)),
    }
}

fn replace(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        if value.is_object() || value.is_array() {
            *doc = value;
            return Ok(());
        }
        return Err(invalid("replace operation value must be object or array"));
    }
    let (parent, key) = container(doc, path).ok_or_else(|| {
        invalid(format!(
            "replace operation does not apply: doc is missing path: {path}: missing value"
        ))
    })?;
    match parent {
        // v4 only checks the parent: an absent member is set.
        Value::Object(map) => {
            map.insert(key, value);
            Ok(())
        }
        Value::Array(items) => {
            let index = atoi(&key)
                .and_then(|i| array_index(i, items.len()))
                .ok_or_else(|| {
                    invalid(format!(
                        "replace operation does not apply: doc is missing key: {path}: missing value"
                    ))
                })?;
            items[index] = value;
            Ok(())
        }
        _ => Err(missing_path("replace", path)),
    }
}

/// The value at `path` (`None`: an absent object member or a null).
fn get(doc: &mut Value, path: &str, op: &str) -> Result<Option<Value>, PatchError> {
    let (parent, key) = container(doc, path).ok_or_else(|| {
        invalid(format!(
            "{op} operation does not apply: doc is missing from path: {path}: missing value"
        ))
    })?;
    match parent {
        Value::Object(map) => Ok(map.get(&key).filter(|v| !v.is_null()).cloned()),
        Value::Array(items) => atoi(&key)
            .and_then(|i| array_index(i, items.len()))
            .map(|i| Some(items[i].clone()))
            .ok_or_else(|| {
                invalid(format!(
                    "error in {op} for path: '{key}': Unable to access invalid index: {key}: invalid index referenced"
                ))
            }),
        _ => Err(missing_path(op, path)),
    }
}

fn test(doc: &mut Value, path: &str, value: Option<&Value>) -> Result<(), PatchError> {
    let failed = || PatchError::TestFailed(format!("testing value {path} failed: test failed"));
    if path.is_empty() {
        return if value == Some(doc) {
            Ok(())
        } else {
            Err(failed())
        };
    }
    let actual = match container(doc, path) {
        None => {
            return Err(invalid(format!(
                "test operation does not apply: is missing path: {path}: missing value"
            )));
        }
        Some((parent, key)) => match parent {
            Value::Object(map) => map.get(&key).filter(|v| !v.is_null()).cloned(),
            Value::Array(items) => Some(
                atoi(&key)
                    .and_then(|i| array_index(i, items.len()))
                    .map(|i| items[i].clone())
                    .ok_or_else(|| {
                        invalid(format!(
                            "error in test for path: '{path}': Unable to access invalid index: {key}: invalid index referenced"
                        ))
                    })?,
            ),
            _ => None,
        },
    };
    match (actual, value) {
        // An absent (or null) member passes only a test without a value.
        (None, None) => Ok(()),
        (None, Some(_)) | (Some(_), None) => Err(failed()),
        (Some(a), Some(v)) if a == *v => Ok(()),
        _ => Err(failed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(op: &str, path: &str, value: Option<Value>) -> Operation {
        Operation {
            op: op.into(),
            path: path.into(),
            from: None,
            value,
        }
    }

    #[test]
    fn replace_of_an_absent_member_sets_it_as_kube_apiserver_does() {
        let doc = json!({"spec": {}});
        assert_eq!(
            apply(&doc, &[op("replace", "/spec/replicas", Some(json!(3)))]),
            Ok(json!({"spec": {"replicas": 3}}))
        );
        // Its parent must exist.
        assert!(matches!(
            apply(&doc, &[op("replace", "/status/x", Some(json!(1)))]),
            Err(PatchError::Invalid(_))
        ));
    }

    #[test]
    fn negative_indexes_count_from_the_end() {
        let doc = json!({"l": [1, 2, 3]});
        assert_eq!(
            apply(&doc, &[op("remove", "/l/-1", None)]),
            Ok(json!({"l": [1, 2]}))
        );
        // v4 counts an insertion index from the end of the grown list.
        assert_eq!(
            apply(&doc, &[op("add", "/l/-2", Some(json!(9)))]),
            Ok(json!({"l": [1, 2, 9, 3]}))
        );
        assert_eq!(
            apply(&doc, &[op("add", "/l/-", Some(json!(9)))]),
            Ok(json!({"l": [1, 2, 3, 9]}))
        );
        assert!(apply(&doc, &[op("add", "/l/5", Some(json!(9)))]).is_err());
    }

    #[test]
    fn tests_and_escapes() {
        let doc = json!({"m": {"a/b": "x", "c~d": "y"}});
        assert_eq!(
            apply(
                &doc,
                &[
                    op("test", "/m/a~1b", Some(json!("x"))),
                    op("remove", "/m/c~0d", None)
                ]
            ),
            Ok(json!({"m": {"a/b": "x"}}))
        );
        assert!(matches!(
            apply(&doc, &[op("test", "/m/a~1b", Some(json!("z")))]),
            Err(PatchError::TestFailed(_))
        ));
        assert_eq!(
            apply(&doc, &[op("test", "/m/absent", None)]),
            Ok(doc.clone())
        );
        assert!(matches!(
            apply(&doc, &[op("remove", "/m/absent", None)]),
            Err(PatchError::Invalid(_))
        ));
    }
}
