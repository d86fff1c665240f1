//! What kube-apiserver would receive as `object` for `kubectl apply` of a
//! manifest over a live object: the live object with the manifest's fields laid
//! over it. Lists of named items (containers, env, ports, volumes, …) merge by
//! their key like a strategic merge patch, so server-set fields that the
//! manifest does not mention (defaults, status, managedFields) do not show up
//! as changes.

use serde_json::{Map, Value};

/// Keys by which Kubernetes merges lists of objects in a strategic merge patch.
const MERGE_KEYS: &[&str] = &[
    "name",
    "mountPath",
    "containerPort",
    "devicePath",
    "ip",
    "type",
    "port",
];

/// Lays `manifest` over `live`. Fields the manifest does not set keep their live value.
pub fn merge_over_live(live: &Value, manifest: &Value) -> Value {
    match (live, manifest) {
        (Value::Object(l), Value::Object(m)) => Value::Object(merge_maps(l, m)),
        (Value::Array(l), Value::Array(m)) => merge_lists(l, m),
        (_, m) => m.clone(),
    }
}

fn merge_maps(live: &Map<String, Value>, manifest: &Map<String, Value>) -> Map<String, Value> {
    let mut out = live.clone();
    for (k, v) in manifest {
        let merged = match live.get(k) {
            Some(l) if !v.is_null() => merge_over_live(l, v),
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    out
}

fn merge_key(items: &[Value]) -> Option<&'static str> {
    MERGE_KEYS
        .iter()
        .find(|key| {
            !items.is_empty()
                && items.iter().all(|i| {
                    i.get(**key)
                        .is_some_and(|v| !v.is_null() && !v.is_object() && !v.is_array())
                })
        })
        .copied()
}

/// The manifest decides which items exist and in what order; each item keeps
/// the live fields it does not set.
fn merge_lists(live: &[Value], manifest: &[Value]) -> Value {
    let Some(key) = merge_key(manifest) else {
        return Value::Array(manifest.to_vec());
    };
    Value::Array(
        manifest
            .iter()
            .map(|m| match live.iter().find(|l| l.get(key) == m.get(key)) {
                Some(l) => merge_over_live(l, m),
                None => m.clone(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_set_fields_survive_and_manifest_fields_win() {
        let live = json!({
            "metadata": {"name": "web", "uid": "1", "resourceVersion": "7", "labels": {"app": "web", "extra": "x"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "release": "pre"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.24", "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"}], "dnsPolicy": "ClusterFirst"}}},
            "status": {"readyReplicas": 3}
        });
        let manifest = json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"selector": {"matchLabels": {"app": "web", "release": "qa"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}}
        });
        let merged = merge_over_live(&live, &manifest);
        assert_eq!(merged["metadata"]["uid"], "1");
        assert_eq!(merged["metadata"]["labels"]["extra"], "x");
        assert_eq!(merged["spec"]["replicas"], 3);
        assert_eq!(merged["spec"]["selector"]["matchLabels"]["release"], "qa");
        let c = &merged["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1.25");
        assert_eq!(
            c["terminationMessagePath"], "/dev/termination-log",
            "defaults set by the server are not a change"
        );
        assert_eq!(merged["status"]["readyReplicas"], 3);
    }

    #[test]
    fn lists_without_a_merge_key_are_replaced() {
        let merged = merge_over_live(&json!({"args": ["a", "b"]}), &json!({"args": ["c"]}));
        assert_eq!(merged, json!({"args": ["c"]}));
        let merged = merge_over_live(
            &json!({"c": [{"name": "a", "x": 1}, {"name": "b"}]}),
            &json!({"c": [{"name": "b", "y": 2}]}),
        );
        assert_eq!(
            merged,
            json!({"c": [{"name": "b", "y": 2}]}),
            "items the manifest drops are dropped"
        );
    }
}
