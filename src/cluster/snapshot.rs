//! Cluster state from YAML/JSON files: single objects, several documents per
//! file, and `kind: List` as `kubectl get -A -o yaml` prints it.

use crate::documents::{Located, files_in, split_documents};
use crate::policy::values::json_to_cel;
use crate::policy::{ClusterState, LookupError, NamespaceInfo};
use crate::policy::{ParamScope, ParamSource, guess_scope};
use kube_cel::cel::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotError(pub Vec<Located>);

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|l| l.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for SnapshotError {}

/// Objects indexed by (apiVersion, kind) and namespace.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// (apiVersion, kind) → namespace ("" for cluster-scoped) → objects.
    objects: HashMap<(String, String), BTreeMap<String, Vec<serde_json::Value>>>,
    namespaces: HashMap<String, NamespaceInfo>,
    /// Lists already converted to CEL, per (apiVersion, kind, namespace filter).
    converted: HashMap<(String, String, Option<String>), Value>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot::default()
    }

    /// Reads every YAML/JSON file below `dir` (or the one file `dir` names).
    pub fn load_dir(dir: &Path) -> Result<Self, SnapshotError> {
        let files = if dir.is_dir() {
            files_in(dir).map_err(|e| {
                SnapshotError(vec![Located {
                    file: dir.to_path_buf(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                }])
            })?
        } else {
            vec![dir.to_path_buf()]
        };
        Self::load_files(&files)
    }

    pub fn load_files(files: &[PathBuf]) -> Result<Self, SnapshotError> {
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            match crate::documents::read_text(file) {
                Err(e) => errors.push(Located {
                    file: file.clone(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                }),
                Ok(text) => sources.push((file.clone(), text)),
            }
        }
        if !errors.is_empty() {
            return Err(SnapshotError(errors));
        }
        Self::load_texts(&sources)
    }

    /// Reads `(file name, text)` pairs already in memory as [`Snapshot::load_files`]
    /// reads files (the names only label errors): PolicyTest suites with inline
    /// cluster state, the playground.
    ///
    /// # Errors
    /// Every document that is not an object or a list of objects, with file and line.
    pub fn load_texts(sources: &[(PathBuf, String)]) -> Result<Self, SnapshotError> {
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        for (file, text) in sources {
            for doc in split_documents(file, text) {
                match doc.decode_data::<serde_json::Value>() {
                    Ok(v) => flatten(v, &mut objects, &doc, &mut errors),
                    Err(e) => errors.push(e),
                }
            }
        }
        if !errors.is_empty() {
            return Err(SnapshotError(errors));
        }
        Ok(Self::from_objects(objects))
    }

    pub fn from_objects(list: Vec<serde_json::Value>) -> Self {
        let mut snapshot = Snapshot::default();
        for obj in list {
            snapshot.insert(obj);
        }
        snapshot.prepare();
        snapshot
    }

    fn insert(&mut self, obj: serde_json::Value) {
        let api_version = obj
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        if api_version == "v1"
            && kind == "Namespace"
            && let Some(name) = obj.pointer("/metadata/name").and_then(|v| v.as_str())
        {
            let labels = obj
                .pointer("/metadata/labels")
                .and_then(|l| l.as_object())
                .map(|l| {
                    l.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            self.namespaces.insert(
                name.to_string(),
                NamespaceInfo {
                    labels,
                    object: json_to_cel(&obj),
                },
            );
        }
        self.objects
            .entry((api_version, kind))
            .or_default()
            .entry(namespace)
            .or_default()
            .push(obj);
    }

    /// Convert once, at load, what every evaluation would otherwise convert again.
    fn prepare(&mut self) {
        let mut converted = HashMap::new();
        for ((api_version, kind), by_ns) in &self.objects {
            let all: Vec<Value> = by_ns.values().flatten().map(json_to_cel).collect();
            converted.insert(
                (api_version.clone(), kind.clone(), None),
                Value::List(Arc::new(all)),
            );
            for (ns, list) in by_ns {
                let items: Vec<Value> = list.iter().map(json_to_cel).collect();
                converted.insert(
                    (api_version.clone(), kind.clone(), Some(ns.clone())),
                    Value::List(Arc::new(items)),
                );
            }
        }
        self.converted = converted;
    }

    /// Every object in the snapshot (for `audit`).
    pub fn objects(&self) -> impl Iterator<Item = &serde_json::Value> {
        self.objects
            .values()
            .flat_map(|by_ns| by_ns.values().flatten())
    }

    /// The object with this identity, if the snapshot has it.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<&serde_json::Value> {
        self.objects
            .get(&(api_version.to_string(), kind.to_string()))?
            .get(namespace)?
            .iter()
            .find(|o| o.pointer("/metadata/name").and_then(|n| n.as_str()) == Some(name))
    }

    pub fn len(&self) -> usize {
        self.objects().count()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

fn flatten(
    value: serde_json::Value,
    out: &mut Vec<serde_json::Value>,
    doc: &crate::documents::Document,
    errors: &mut Vec<Located>,
) {
    if value.is_null() {
        return;
    }
    let is_list = value
        .get("kind")
        .and_then(|k| k.as_str())
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && value.get("items").is_some_and(|i| i.is_array());
    if is_list {
        if let Some(serde_json::Value::Array(items)) = value.get("items") {
            for item in items {
                flatten(item.clone(), out, doc, errors);
            }
        }
        return;
    }
    let has_identity = value.get("apiVersion").and_then(|v| v.as_str()).is_some()
        && value.get("kind").and_then(|v| v.as_str()).is_some()
        && value
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .is_some();
    if has_identity {
        out.push(value);
    } else {
        errors.push(doc.located(
            1,
            "not a Kubernetes object: apiVersion, kind and metadata.name are required",
        ));
    }
}

impl ParamSource for Snapshot {
    /// Files cannot say whether a kind is served: every kind is; its scope is
    /// guessed from its objects (see [`guess_scope`]).
    fn param_scope(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<ParamScope>, LookupError> {
        let namespaces = self
            .objects
            .get(&(api_version.to_string(), kind.to_string()))
            .into_iter()
            .flat_map(|by_ns| by_ns.iter())
            .filter(|(_, objects)| !objects.is_empty())
            .map(|(ns, _)| !ns.is_empty());
        Ok(Some(guess_scope(api_version, kind, namespaces)))
    }
}

impl ClusterState for Snapshot {
    fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, LookupError> {
        Ok(self.namespaces.get(name).cloned())
    }

    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Value, LookupError> {
        Ok(self
            .converted
            .get(&(
                api_version.to_string(),
                kind.to_string(),
                namespace.map(str::to_string),
            ))
            .cloned()
            .unwrap_or_else(|| Value::List(Arc::new(Vec::new()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_and_multi_document_files() {
        let dir = tempfile::tempdir().unwrap();
        let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: team-a\n    labels:\n      safety-gate.dev/protected: \"true\"\n- apiVersion: core.kubefed.io/v1beta1\n  kind: KubeFedCluster\n  metadata:\n    name: host\n    namespace: kube-federation-system\n  spec:\n    apiEndpoint: https://10.0.0.1:6443\n";
        std::fs::write(dir.path().join("a.yaml"), list).unwrap();
        std::fs::write(dir.path().join("b.json"), r#"{"apiVersion":"core.kubefed.io/v1beta1","kind":"KubeFedCluster","metadata":{"name":"stale","namespace":"kube-federation-system"}}"#).unwrap();
        let s = Snapshot::load_dir(dir.path()).unwrap();
        assert_eq!(s.len(), 3);
        let ns = s.namespace("team-a").unwrap().unwrap();
        assert_eq!(
            ns.labels
                .get("safety-gate.dev/protected")
                .map(String::as_str),
            Some("true")
        );
        assert!(s.namespace("nope").unwrap().is_none());
        let Value::List(items) = s
            .list(
                "core.kubefed.io/v1beta1",
                "KubeFedCluster",
                Some("kube-federation-system"),
            )
            .unwrap()
        else {
            panic!("not a list")
        };
        assert_eq!(items.len(), 2);
        let Value::List(none) = s
            .list("core.kubefed.io/v1beta1", "KubeFedCluster", Some("other"))
            .unwrap()
        else {
            panic!()
        };
        assert!(none.is_empty());
    }

    #[test]
    fn unreadable_files_are_named_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ok.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n---\nfoo: [1, 2\n",
        )
        .unwrap();
        let err = Snapshot::load_dir(dir.path()).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].file.ends_with("bad.yaml"));
        assert!(err.0[0].line >= 5, "{err}");
    }
}
