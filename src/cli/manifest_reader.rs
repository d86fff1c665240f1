//! Reading manifests the way `kubectl apply -f` accepts them: files,
//! directories (recursively), `-` for stdin; multi-document YAML, JSON, and
//! `kind: List`. Every object remembers its file and line.

use crate::documents::{Located, read_text, split_documents};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: PathBuf,
    pub line: usize,
    pub object: serde_json::Value,
}

impl Manifest {
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    pub fn api_version(&self) -> &str {
        self.object
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.object
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/namespace")
            .and_then(|v| v.as_str())
    }
}

/// Reads every manifest; the first unreadable or malformed input is an error naming file and line.
pub fn read_all(inputs: &[PathBuf]) -> Result<Vec<Manifest>, Located> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let files = crate::documents::files_in(input).map_err(|e| Located {
                file: input.clone(),
                line: 0,
                message: format!("cannot read: {e}"),
            })?;
            for f in files {
                read_file(&f, &mut out)?;
            }
        } else {
            read_file(input, &mut out)?;
        }
    }
    Ok(out)
}

fn read_file(file: &Path, out: &mut Vec<Manifest>) -> Result<(), Located> {
    let text = read_text(file).map_err(|e| Located {
        file: file.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse_text(file, &text, out)
}

/// Parses one file's text into objects.
pub fn parse_text(file: &Path, text: &str, out: &mut Vec<Manifest>) -> Result<(), Located> {
    for doc in split_documents(file, text) {
        let (mut value, item_lines) = doc.decode_data_with_item_lines()?;
        if is_list(&value) {
            // Each item of a `kind: List` (what `kubectl get -o yaml` writes)
            // is reported at its own line, not at the List's.
            let lines = item_lines.unwrap_or_default();
            if let Some(serde_json::Value::Array(items)) = value.get_mut("items") {
                for (i, item) in std::mem::take(items).into_iter().enumerate() {
                    let line = lines.get(i).copied().unwrap_or(doc.first_line);
                    push_object(item, file, line, out)?;
                }
            }
        } else {
            push_object(value, file, doc.first_line, out)?;
        }
    }
    Ok(())
}

fn is_list(value: &serde_json::Value) -> bool {
    value
        .get("kind")
        .and_then(|k| k.as_str())
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(|i| i.is_array())
}

fn push_object(
    value: serde_json::Value,
    file: &Path,
    line: usize,
    out: &mut Vec<Manifest>,
) -> Result<(), Located> {
    if value.is_null() {
        return Ok(());
    }
    let ok = value.is_object()
        && value.get("apiVersion").and_then(|v| v.as_str()).is_some()
        && value
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| !k.is_empty())
        && value.get("metadata").is_some_and(|m| m.is_object());
    if !ok {
        return Err(Located {
            file: file.to_path_buf(),
            line,
            message: "not a Kubernetes object: apiVersion, kind and metadata are required"
                .to_string(),
        });
    }
    out.push(Manifest {
        file: file.to_path_buf(),
        line,
        object: value,
    });
    Ok(())
}

/// Built-in kinds that are cluster-scoped; everything else is namespaced.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "CustomResourceDefinition",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "APIService",
    "CSIDriver",
    "CSINode",
    "IngressClass",
    "RuntimeClass",
    "VolumeAttachment",
    "CertificateSigningRequest",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "VolumeAttributesClass",
    "ComponentStatus",
    "Cluster",
    "Workspace",
    "WorkspaceTemplate",
];

pub fn is_cluster_scoped(kind: &str) -> bool {
    CLUSTER_SCOPED.contains(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_documents_and_json() {
        let mut out = Vec::new();
        let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\n";
        parse_text(Path::new("m.yaml"), yaml, &mut out).unwrap();
        parse_text(
            Path::new("m.json"),
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
            &mut out,
        )
        .unwrap();
        let names: Vec<_> = out
            .iter()
            .map(|m| format!("{}/{}@{}", m.kind(), m.name(), m.line))
            .collect();
        assert_eq!(names, vec!["ConfigMap/a@4", "Service/s@8", "Secret/x@1"]);
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let mut out = Vec::new();
        let err = parse_text(
            Path::new("bad.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [unclosed\n",
            &mut out,
        )
        .unwrap_err();
        assert_eq!(err.file, Path::new("bad.yaml"));
        assert!(err.line >= 5, "{err}");
        let err = parse_text(Path::new("x.yaml"), "just: a map\n", &mut out).unwrap_err();
        assert!(err.message.contains("not a Kubernetes object"));
    }
}
