//! `patchType: ApplyConfiguration`: the `Object{…}` a mutation returns, merged
//! into the object as kube-apiserver merges it (structured-merge-diff with the
//! type's OpenAPI schema).
//!
//! The schema comes from `k8s-openapi`: its types carry Kubernetes' list and
//! map semantics (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`) as `DeepMerge` strategies, so containers merge by
//! `name`, ports by `containerPort` and `protocol`, and labels key by key.
//! For the built-in kinds in [`merge_typed`] the configuration and the object
//! are read as those types, merged, and the difference is applied to the
//! object as it came (fields the types normalise are left as they were).
//!
//! As in kube-apiserver, a configuration that sets an atomic list or map (a
//! container's `args`, say) is refused, and so is a field the type does not
//! declare. What `k8s-openapi` does not carry, and so is not refused here:
//! structs marked atomic (`+structType=atomic`, e.g. a `LabelSelector` or a
//! `secretKeyRef`), which the gate merges field by field. Other kinds (CRDs)
//! get a clear error: their schema is not available to the gate.

use super::cel::{PatchStruct, check_type_names, to_json};
use k8s_openapi::DeepMerge;
use kube_cel::cel::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

/// Merges the configuration `value` into `current`; the new object, or why not.
pub fn apply_configuration(value: &Value, current: &Json) -> Result<Json, String> {
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
    let mut patch = to_json(value)?;
    // kube-apiserver gives the configuration the object's apiVersion and kind.
    let (api_version, kind) = (
        current["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        current["kind"].as_str().unwrap_or_default().to_string(),
    );
    if let Some(map) = patch.as_object_mut() {
        map.insert("apiVersion".into(), Json::String(api_version.clone()));
        map.insert("kind".into(), Json::String(kind.clone()));
    }
    merge_typed(&api_version, &kind, current, &patch)
}

/// The built-in kinds whose schema the gate has, by apiVersion and kind.
fn merge_typed(
    api_version: &str,
    kind: &str,
    current: &Json,
    patch: &Json,
) -> Result<Json, String> {
    use k8s_openapi::api::{apps, batch, core, networking, rbac};
    match (api_version, kind) {
        ("v1", "Pod") => merge::<core::v1::Pod>(current, patch),
        ("v1", "ConfigMap") => merge::<core::v1::ConfigMap>(current, patch),
        ("v1", "Secret") => merge::<core::v1::Secret>(current, patch),
        ("v1", "Service") => merge::<core::v1::Service>(current, patch),
        ("v1", "ServiceAccount") => merge::<core::v1::ServiceAccount>(current, patch),
        ("v1", "Namespace") => merge::<core::v1::Namespace>(current, patch),
        ("v1", "PersistentVolumeClaim") => merge::<core::v1::PersistentVolumeClaim>(current, patch),
        ("apps/v1", "Deployment") => merge::<apps::v1::Deployment>(current, patch),
        ("apps/v1", "StatefulSet") => merge::<apps::v1::StatefulSet>(current, patch),
        ("apps/v1", "DaemonSet") => merge::<apps::v1::DaemonSet>(current, patch),
        ("apps/v1", "ReplicaSet") => merge::<apps::v1::ReplicaSet>(current, patch),
        ("batch/v1", "Job") => merge::<batch::v1::Job>(current, patch),
        ("batch/v1", "CronJob") => merge::<batch::v1::CronJob>(current, patch),
        ("networking.k8s.io/v1", "Ingress") => merge::<networking::v1::Ingress>(current, patch),
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            merge::<networking::v1::NetworkPolicy>(current, patch)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => merge::<rbac::v1::Role>(current, patch),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            merge::<rbac::v1::ClusterRole>(current, patch)
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            merge::<rbac::v1::RoleBinding>(current, patch)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            merge::<rbac::v1::ClusterRoleBinding>(current, patch)
        }
        _ => Err(format!(
            "safety-gate has no schema for {kind} ({api_version}) to merge an ApplyConfiguration with; use a JSONPatch mutation"
        )),
    }
}

fn typed<T: DeserializeOwned>(json: &Json, what: &str) -> Result<T, String> {
    serde_json::from_value(json.clone())
        .map_err(|e| format!("failed to convert {what} to typed object: {e}"))
}

fn untyped<T: Serialize>(value: &T) -> Result<Json, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot encode the merged object: {e}"))
}

fn merge<T>(current: &Json, patch: &Json) -> Result<Json, String>
where
    T: DeserializeOwned + Serialize + DeepMerge + Clone,
{
    let patch_typed: T = typed(patch, "patch object")?;
    // A field the type does not declare is dropped when read: kube-apiserver refuses it.
    if let Some(path) = first_dropped(patch, &untyped(&patch_typed)?, &mut String::new()) {
        return Err(format!(
            "error applying patch: failed to convert patch object to typed object: {path}: field not declared in schema"
        ));
    }
    let atomics = atomics::<T>(patch, &patch_typed)?;
    if !atomics.is_empty() {
        return Err(format!(
            "error applying patch: invalid ApplyConfiguration: may not mutate atomic arrays, maps or structs: {}",
            atomics.join(", ")
        ));
    }
    let base: T = typed(current, "original object")?;
    let mut merged = base.clone();
    merged.merge_from(patch_typed);
    let difference = json_patch::diff(&untyped(&base)?, &untyped(&merged)?);
    let mut out = current.clone();
    json_patch::patch(&mut out, &difference)
        .map_err(|e| format!("error applying patch: failed to merge patch: {e}"))?;
    Ok(out)
}

/// The first member of `given` that reading it as the type dropped.
fn first_dropped(given: &Json, read: &Json, path: &mut String) -> Option<String> {
    match (given, read) {
        (Json::Object(g), Json::Object(r)) => {
            for (k, v) in g {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                let found = match r.get(k) {
                    None if !v.is_null() => Some(path.clone()),
                    None => None,
                    Some(rv) => first_dropped(v, rv, path),
                };
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        (Json::Array(g), Json::Array(r)) => {
            g.iter().zip(r).enumerate().find_map(|(i, (gv, rv))| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = first_dropped(gv, rv, path);
                path.truncate(len);
                found
            })
        }
        _ => None,
    }
}

/// The paths (kube-apiserver's notation) of atomic lists and maps the
/// configuration sets: merging an empty one in their place replaces them.
fn atomics<T>(patch: &Json, patch_typed: &T) -> Result<Vec<String>, String>
where
    T: DeserializeOwned + Serialize + DeepMerge + Clone,
{
    let mut paths = Vec::new();
    collect_containers(patch, &mut Vec::new(), &mut paths);
    let mut out = Vec::new();
    for pointer in paths {
        let mut emptied = patch.clone();
        let Some(node) = emptied.pointer_mut(&pointer.pointer) else {
            continue;
        };
        *node = if node.is_array() {
            Json::Array(Vec::new())
        } else {
            Json::Object(Default::default())
        };
        let other: T = typed(&emptied, "patch object")?;
        let mut merged = patch_typed.clone();
        merged.merge_from(other);
        let after = untyped(&merged)?;
        let became_empty = after.pointer(&pointer.pointer).is_some_and(|v| {
            v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(|m| m.is_empty())
        });
        if became_empty {
            out.push(pointer.display);
        }
    }
    Ok(out)
}

struct NodePath {
    pointer: String,
    display: String,
}

/// Every non-empty list and map below the root, with its JSON pointer and its
/// path as kube-apiserver prints it (`.spec.containers[0].args`).
fn collect_containers(value: &Json, steps: &mut Vec<(String, bool)>, out: &mut Vec<NodePath>) {
    let here = |steps: &[(String, bool)]| NodePath {
        pointer: steps
            .iter()
            .map(|(s, _)| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
            .collect(),
        display: steps
            .iter()
            .map(|(s, index)| {
                if *index {
                    format!("[{s}]")
                } else {
                    format!(".{s}")
                }
            })
            .collect(),
    };
    match value {
        Json::Object(map) => {
            if !steps.is_empty() && !map.is_empty() {
                out.push(here(steps));
            }
            for (k, v) in map {
                if steps.is_empty() && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                steps.push((k.clone(), false));
                collect_containers(v, steps, out);
                steps.pop();
            }
        }
        Json::Array(items) => {
            if !items.is_empty() {
                out.push(here(steps));
            }
            for (i, v) in items.iter().enumerate() {
                steps.push((i.to_string(), true));
                collect_containers(v, steps, out);
                steps.pop();
            }
        }
        _ => {}
    }
}
