//! Building the request kube-apiserver would send, from plain objects: used by
//! `test`, and by `review` and `audit`, so that they exercise the same engine
//! path as the webhook.

use crate::policy::Request;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::{GroupVersion, GroupVersionKind, GroupVersionResource};
use serde_json::value::RawValue;

#[derive(Debug, Clone, Default)]
pub struct RequestSpec {
    pub uid: String,
    pub operation: Option<Operation>,
    pub object: Option<serde_json::Value>,
    pub old_object: Option<serde_json::Value>,
    pub user_info: UserInfo,
    /// Explicit name; `Some("")` models the per-item DELETE of a DeleteCollection.
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub kind: Option<GroupVersionKind>,
    pub resource: Option<GroupVersionResource>,
    pub sub_resource: Option<String>,
    pub dry_run: bool,
    pub options: Option<serde_json::Value>,
}

/// The resource (plural, lower case) kube-apiserver serves `kind` under, by
/// kube-core's pluralization of the built-in kinds (`NetworkPolicy` →
/// `networkpolicies`, `Endpoints` → `endpoints`).
pub fn resource_for_kind(kind: &str) -> String {
    kube::core::ApiResource::from_gvk(&GroupVersionKind::gvk("", "", kind)).plural
}

fn meta<'a>(obj: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Why a request could not be built from a [`RequestSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildRequestError {
    #[error("a request needs an object or an oldObject")]
    NoObject,
    #[error("the object has no apiVersion")]
    NoApiVersion,
    #[error("the object has no kind")]
    NoKind,
    #[error("{0}")]
    InvalidApiVersion(String),
    #[error("kind is required when there is no object")]
    KindRequired,
    #[error("{0}")]
    Encoding(String),
}

/// Builds the request; fields not given are derived from the objects.
///
/// # Errors
/// [`BuildRequestError`]: no object to derive the operation or kind from, or
/// an object without `apiVersion`/`kind`.
pub fn build_request(spec: RequestSpec) -> Result<Request, BuildRequestError> {
    let operation = match (&spec.operation, &spec.object, &spec.old_object) {
        (Some(op), _, _) => op.clone(),
        (None, Some(_), None) => Operation::Create,
        (None, Some(_), Some(_)) => Operation::Update,
        (None, None, Some(_)) => Operation::Delete,
        (None, None, None) => return Err(BuildRequestError::NoObject),
    };
    let reference = spec.object.as_ref().or(spec.old_object.as_ref());
    let kind = match (&spec.kind, reference) {
        (Some(k), _) => k.clone(),
        (None, Some(obj)) => {
            let api_version = obj
                .get("apiVersion")
                .and_then(|v| v.as_str())
                .ok_or(BuildRequestError::NoApiVersion)?;
            let kind = obj
                .get("kind")
                .and_then(|v| v.as_str())
                .ok_or(BuildRequestError::NoKind)?;
            api_version
                .parse::<GroupVersion>()
                .map_err(|e| BuildRequestError::InvalidApiVersion(e.to_string()))?
                .with_kind(kind)
        }
        (None, None) => return Err(BuildRequestError::KindRequired),
    };
    let resource = spec.resource.clone().unwrap_or_else(|| {
        GroupVersionResource::gvr(&kind.group, &kind.version, &resource_for_kind(&kind.kind))
    });
    let name = spec.name.clone().unwrap_or_else(|| {
        reference
            .and_then(|o| meta(o, "name"))
            .unwrap_or_default()
            .to_string()
    });
    let is_namespace = resource.group.is_empty() && resource.resource == "namespaces";
    let namespace = match &spec.namespace {
        Some(ns) => ns.clone(),
        // kube-apiserver sets a Namespace's own name as request.namespace.
        None if is_namespace => reference
            .and_then(|o| meta(o, "name"))
            .unwrap_or_default()
            .to_string(),
        None => reference
            .and_then(|o| meta(o, "namespace"))
            .unwrap_or_default()
            .to_string(),
    };
    let raw = |v: &Option<serde_json::Value>| -> Result<Option<Box<RawValue>>, BuildRequestError> {
        v.as_ref()
            .map(|v| {
                serde_json::value::to_raw_value(v)
                    .map_err(|e| BuildRequestError::Encoding(e.to_string()))
            })
            .transpose()
    };
    let object = if matches!(operation, Operation::Delete) {
        None
    } else {
        raw(&spec.object)?
    };
    let old_object = if matches!(operation, Operation::Create | Operation::Connect) {
        None
    } else {
        raw(&spec.old_object)?
    };
    Ok(Request {
        uid: spec.uid,
        kind: kind.clone(),
        resource: resource.clone(),
        sub_resource: spec.sub_resource.clone(),
        request_kind: Some(kind),
        request_resource: Some(resource),
        request_sub_resource: spec.sub_resource,
        name,
        namespace: if namespace.is_empty() {
            None
        } else {
            Some(namespace)
        },
        operation,
        user_info: spec.user_info,
        object,
        old_object,
        dry_run: spec.dry_run,
        options: raw(&spec.options)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_of_built_in_kinds() {
        for (kind, plural) in [
            ("Deployment", "deployments"),
            ("ClusterRoleBinding", "clusterrolebindings"),
            ("StorageClass", "storageclasses"),
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("Endpoints", "endpoints"),
            ("Namespace", "namespaces"),
            ("KubeFedCluster", "kubefedclusters"),
        ] {
            assert_eq!(resource_for_kind(kind), plural);
        }
    }

    #[test]
    fn namespaces_carry_their_own_name_as_request_namespace() {
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}});
        let r = build_request(RequestSpec {
            old_object: Some(ns),
            operation: Some(Operation::Delete),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.namespace.as_deref(), Some("team-a"));
        assert_eq!(r.resource.resource, "namespaces");
        assert!(r.object.is_none());
    }
}
