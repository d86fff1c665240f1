//! `patchType: ApplyConfiguration`: the `Object{…}` a mutation returns, merged
//! into the object.
//!
//! kube-apiserver merges with structured-merge-diff and the type's OpenAPI
//! schema: list-maps merge by their keys (containers by `name`), atomic lists,
//! maps and structs may not be set at all, and fields the schema does not
//! declare are errors. safety-gate has no schemas yet, so it merges exactly
//! the part that needs none — nested objects and scalar values, which merge
//! field by field in every schema — and refuses the rest with an error (for
//! failurePolicy) instead of guessing: a list anywhere in the configuration, or
//! a `null`. See the README ("MutatingAdmissionPolicy") for what differs.

use super::cel::{PatchStruct, check_type_names, to_json};
use kube_cel::cel::Value;

/// Merges the configuration `value` into `current`; the new object, or why not.
pub fn apply_configuration(
    value: &Value,
    current: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let root = match value {
        Value::Opaque(o) => o.downcast_ref::<PatchStruct>(),
        _ => None,
    };
    let Some(root) = root.filter(|r| r.type_name == "Object") else {
        return Err(format!(
            "unsupported return type from ApplyConfiguration expression: {}",
            match value {
                Value::Opaque(o) => o.runtime_type_name().to_string(),
                other => format!("{:?}", other.type_of()),
            }
        ));
    };
    let mut errors = Vec::new();
    check_type_names(value, &mut vec![root.type_name.clone()], &mut errors);
    if !errors.is_empty() {
        return Err(format!("type mismatch: {}", errors.join("\n")));
    }
    let patch = to_json(value)?;
    let mut next = current.clone();
    merge(&mut next, &patch, &mut Vec::new())?;
    Ok(next)
}

fn merge(
    live: &mut serde_json::Value,
    patch: &serde_json::Value,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let Some(fields) = patch.as_object() else {
        return Ok(());
    };
    if !live.is_object() {
        *live = serde_json::Value::Object(serde_json::Map::new());
    }
    let Some(target) = live.as_object_mut() else {
        return Ok(());
    };
    for (name, value) in fields {
        path.push(name.clone());
        let at = || format!(".{}", path.join("."));
        match value {
            serde_json::Value::Array(_) => {
                return Err(format!(
                    "error applying patch: {}: safety-gate cannot merge lists in an ApplyConfiguration yet (it needs the type's schema to know list keys); use a JSONPatch mutation for lists",
                    at()
                ));
            }
            serde_json::Value::Null => {
                return Err(format!(
                    "error applying patch: {}: safety-gate does not support null in an ApplyConfiguration yet",
                    at()
                ));
            }
            serde_json::Value::Object(_) => {
                let slot = target
                    .entry(name.clone())
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                merge(slot, value, path)?;
            }
            scalar => {
                target.insert(name.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    Ok(())
}
