//! Mutations: `annotate` and `mutations` turn into one RFC 6902 patch computed
//! as the difference between the incoming object and the mutated one, so that
//! applying it twice changes nothing and an unchanged object gets no patch.

use super::values::cel_to_json;
use json_patch::{Patch, PatchOperation};
use kube_cel::cel::Value;

/// Reads the list of JSON Patch operations a mutation expression returned.
pub fn operations_from(value: &Value) -> Result<Vec<PatchOperation>, String> {
    let json = cel_to_json(value)?;
    if !json.is_array() {
        return Err("a mutation must return a list of JSON Patch operations".to_string());
    }
    serde_json::from_value::<Vec<PatchOperation>>(json)
        .map_err(|e| format!("not a JSON Patch operation: {e}"))
}

/// Applies annotations and operations to `object`; returns the minimal patch, if any.
pub fn build_patch(
    object_json: &str,
    annotations: &[(String, Option<String>)],
    operations: &[PatchOperation],
) -> Result<Option<Patch>, String> {
    let original: serde_json::Value =
        serde_json::from_str(object_json).map_err(|e| format!("request.object: {e}"))?;
    let mut mutated = original.clone();
    if !annotations.is_empty() {
        let metadata = mutated
            .as_object_mut()
            .ok_or("request.object must be a JSON object")?
            .entry("metadata")
            .or_insert_with(|| serde_json::json!({}));
        let metadata = metadata
            .as_object_mut()
            .ok_or("metadata must be a JSON object")?;
        let current = metadata
            .entry("annotations")
            .or_insert_with(|| serde_json::json!({}));
        if current.is_null() {
            *current = serde_json::json!({});
        }
        let map = current
            .as_object_mut()
            .ok_or("metadata.annotations must be a JSON object")?;
        for (key, value) in annotations {
            match value {
                Some(v) => {
                    map.insert(key.clone(), serde_json::Value::String(v.clone()));
                }
                None => {
                    map.remove(key);
                }
            }
        }
        if map.is_empty() && original.pointer("/metadata/annotations").is_none() {
            metadata.remove("annotations");
        }
    }
    if !operations.is_empty() {
        json_patch::patch(&mut mutated, operations)
            .map_err(|e| format!("applying mutations: {e}"))?;
    }
    let patch = json_patch::diff(&original, &mutated);
    Ok(if patch.0.is_empty() {
        None
    } else {
        Some(patch)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(object: &str, patch: &Patch) -> String {
        let mut v: serde_json::Value = serde_json::from_str(object).unwrap();
        json_patch::patch(&mut v, patch).unwrap();
        v.to_string()
    }

    #[test]
    fn creates_the_annotations_map_and_escapes_keys() {
        let object = r#"{"metadata":{"name":"x"}}"#;
        let patch = build_patch(
            object,
            &[(
                "safety-gate.dev/last-changed-by".into(),
                Some("alice".into()),
            )],
            &[],
        )
        .unwrap()
        .unwrap();
        let patched = apply(object, &patch);
        let v: serde_json::Value = serde_json::from_str(&patched).unwrap();
        assert_eq!(
            v.pointer("/metadata/annotations/safety-gate.dev~1last-changed-by")
                .and_then(|v| v.as_str()),
            Some("alice")
        );
        // Idempotent: the patched object needs no further patch.
        assert!(
            build_patch(
                &patched,
                &[(
                    "safety-gate.dev/last-changed-by".into(),
                    Some("alice".into())
                )],
                &[]
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn escaped_key_in_an_existing_map() {
        let object = r#"{"metadata":{"name":"x","annotations":{"a~b":"1"}}}"#;
        let patch = build_patch(object, &[("x/y~z".into(), Some("v".into()))], &[])
            .unwrap()
            .unwrap();
        let text = serde_json::to_string(&patch).unwrap();
        assert!(text.contains("/metadata/annotations/x~1y~0z"), "{text}");
    }

    #[test]
    fn removing_an_absent_annotation_is_no_patch() {
        let object = r#"{"metadata":{"name":"x"}}"#;
        assert!(
            build_patch(object, &[("gone".into(), None)], &[])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn mutation_operations_apply_and_bad_ones_are_errors() {
        let v = crate::policy::values::json_to_cel(
            &serde_json::json!([{"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}]),
        );
        let ops = operations_from(&v).unwrap();
        let object = r#"{"metadata":{"name":"x"}}"#;
        let patch = build_patch(object, &[], &ops).unwrap().unwrap();
        assert!(apply(object, &patch).contains(r#""labels":{"x":"y"}"#));
        let bad = crate::policy::values::json_to_cel(&serde_json::json!([{"op": "explode"}]));
        assert!(operations_from(&bad).is_err());
        let remove_missing = operations_from(&crate::policy::values::json_to_cel(
            &serde_json::json!([{"op": "remove", "path": "/nope"}]),
        ))
        .unwrap();
        assert!(build_patch(object, &[], &remove_missing).is_err());
    }
}
