//! YAML with fields in the order a reviewer reads a Kubernetes object:
//! `apiVersion`, `kind`, `metadata` (`name`, `namespace`, `labels`), then
//! the body, each webhook's `name` and failure behaviour before its
//! selectors and rules.
//!
//! k8s-openapi serialises fields alphabetically (`caBundle` before
//! `service`, `labels` before `name`), which would reorder every committed
//! manifest and bury what a reviewer looks for. So an object goes through
//! `serde_json::Value` and its maps are written in [`FIELD_ORDER`]; fields
//! not listed there follow, by name. Values are untouched: only the order of
//! keys differs from k8s-openapi's own output.

use super::RenderError;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// Field order per map, by path from the document root (field names joined
/// with `.`; a list's items share the list's path). Only the maps whose
/// order differs from alphabetical are listed.
pub const FIELD_ORDER: &[(&str, &[&str])] = &[
    ("", &["apiVersion", "kind", "metadata"]),
    ("metadata", &["name", "namespace", "labels"]),
    (
        "webhooks",
        &[
            "name",
            "failurePolicy",
            "timeoutSeconds",
            "sideEffects",
            "admissionReviewVersions",
            "matchPolicy",
            "reinvocationPolicy",
            "namespaceSelector",
            "clientConfig",
            "rules",
        ],
    ),
    ("webhooks.clientConfig", &["service", "url", "caBundle"]),
    (
        "webhooks.clientConfig.service",
        &["namespace", "name", "path", "port"],
    ),
    (
        "webhooks.rules",
        &[
            "apiGroups",
            "apiVersions",
            "resources",
            "operations",
            "scope",
        ],
    ),
];

/// `object` as one YAML document (no `---`), fields in [`FIELD_ORDER`].
///
/// # Errors
/// [`RenderError::Json`] if `object` cannot be represented as JSON (never
/// for k8s-openapi types), [`RenderError::Yaml`] if the YAML writer fails.
pub fn to_yaml<T: Serialize>(object: &T) -> Result<String, RenderError> {
    let value = serde_json::to_value(object)?;
    Ok(serde_saphyr::to_string(&Ordered {
        value: &value,
        path: String::new(),
    })?)
}

/// A JSON value that serialises its maps in [`FIELD_ORDER`].
struct Ordered<'a> {
    value: &'a Value,
    /// Where `value` sits, as in [`FIELD_ORDER`].
    path: String,
}

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Object(map) => {
                let order = FIELD_ORDER
                    .iter()
                    .find(|(path, _)| *path == self.path)
                    .map_or(&[][..], |(_, order)| *order);
                let rank = |key: &str| order.iter().position(|o| *o == key).unwrap_or(order.len());
                let mut fields: Vec<(&String, &Value)> = map.iter().collect();
                fields.sort_by(|(a, _), (b, _)| (rank(a), *a).cmp(&(rank(b), *b)));
                let mut out = serializer.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    let path = if self.path.is_empty() {
                        key.clone()
                    } else {
                        format!("{}.{key}", self.path)
                    };
                    out.serialize_entry(key, &Ordered { value, path })?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for value in items {
                    out.serialize_element(&Ordered {
                        value,
                        path: self.path.clone(),
                    })?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_fields_first_then_the_rest_by_name() {
        let object = serde_json::json!({
            "zeta": 1,
            "kind": "K",
            "apiVersion": "v1",
            "metadata": {"labels": {"b": "two", "a": "one"}, "name": "gate"},
            "alpha": [{"x": 1}],
        });
        assert_eq!(
            to_yaml(&object).unwrap(),
            "apiVersion: v1\nkind: K\nmetadata:\n  name: gate\n  labels:\n    a: one\n    b: two\nalpha:\n- x: 1\nzeta: 1\n"
        );
    }
}
