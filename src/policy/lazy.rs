//! A JSON object decoded one level at a time, at first access.
//!
//! A policy that compares Job pod templates reads `spec.template.spec` whole,
//! but only when the request is a Job; static analysis cannot know that, so
//! decoding up front pays for it on every Deployment. Here a request's object
//! stays JSON text: reaching `spec.selector` scans the top level and `spec`
//! for their members (without building values) and decodes only `selector`.
//! Every level is decoded at most once per request.

use super::values::{decode_json, json_to_cel};
use kube_cel::cel::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

pub struct LazyValue {
    source: Source,
    members: OnceLock<Result<Option<HashMap<String, LazyValue>>, String>>,
    value: OnceLock<Result<Value, String>>,
}

enum Source {
    /// `text[start..end]` is this value's JSON.
    Text {
        text: Arc<str>,
        start: usize,
        end: usize,
    },
    Decoded(Value),
}

impl LazyValue {
    /// `text` must be valid JSON (kube-apiserver's, already checked by serde_json).
    pub fn from_text(text: Arc<str>) -> Self {
        let end = text.len();
        Self::new(Source::Text {
            text,
            start: 0,
            end,
        })
    }

    pub fn from_value(value: Value) -> Self {
        Self::new(Source::Decoded(value))
    }

    pub fn null() -> Self {
        Self::from_value(Value::Null)
    }

    fn new(source: Source) -> Self {
        LazyValue {
            source,
            members: OnceLock::new(),
            value: OnceLock::new(),
        }
    }

    fn raw(&self) -> Option<&str> {
        match &self.source {
            Source::Text { text, start, end } => text.get(*start..*end),
            Source::Decoded(_) => None,
        }
    }

    pub fn is_null(&self) -> bool {
        match &self.source {
            Source::Text { .. } => self.raw().is_some_and(|r| r.trim() == "null"),
            Source::Decoded(v) => matches!(v, Value::Null),
        }
    }

    /// The members when this is a JSON object (values still undecoded); `None` otherwise.
    pub fn members(&self) -> Result<Option<&HashMap<String, LazyValue>>, String> {
        self.members
            .get_or_init(|| self.decode_members())
            .as_ref()
            .map(Option::as_ref)
            .map_err(Clone::clone)
    }

    fn decode_members(&self) -> Result<Option<HashMap<String, LazyValue>>, String> {
        match &self.source {
            Source::Decoded(Value::Map(map)) => Ok(Some(
                map.map
                    .iter()
                    .filter_map(|(k, v)| match k {
                        kube_cel::cel::objects::Key::String(s) => {
                            Some((s.to_string(), LazyValue::from_value(v.clone())))
                        }
                        _ => None,
                    })
                    .collect(),
            )),
            Source::Decoded(_) => Ok(None),
            Source::Text { text, start, end } => {
                let raw = text.get(*start..*end).ok_or("bad offsets")?;
                if !raw.trim_start().starts_with('{') {
                    return Ok(None);
                }
                let fields: HashMap<Cow<'_, str>, &RawValue> =
                    serde_json::from_str(raw).map_err(|e| e.to_string())?;
                let base = text.as_ptr() as usize;
                Ok(Some(
                    fields
                        .into_iter()
                        .map(|(k, v)| {
                            // The member's text is a slice of the same buffer: keep its offsets.
                            let from = v.get().as_ptr() as usize - base;
                            let source = Source::Text {
                                text: text.clone(),
                                start: from,
                                end: from + v.get().len(),
                            };
                            (k.into_owned(), LazyValue::new(source))
                        })
                        .collect(),
                ))
            }
        }
    }

    /// The member `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Result<Option<&LazyValue>, String> {
        Ok(self.members()?.and_then(|m| m.get(key)))
    }

    /// The whole value, decoded (once) into CEL values.
    pub fn value(&self) -> Result<&Value, String> {
        self.value
            .get_or_init(|| match &self.source {
                Source::Decoded(v) => Ok(v.clone()),
                Source::Text { .. } => {
                    let raw = self.raw().ok_or("bad offsets")?;
                    decode_json(raw).map_err(|e| e.to_string())
                }
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Follows field names; `None` when a step is absent or not an object.
    pub fn path(&self, path: &[String]) -> Option<&LazyValue> {
        let mut current = self;
        for field in path {
            current = current.get(field).ok().flatten()?;
        }
        Some(current)
    }
}

impl From<&serde_json::Value> for LazyValue {
    fn from(v: &serde_json::Value) -> Self {
        LazyValue::from_value(json_to_cel(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_only_the_levels_it_walks() {
        let text: Arc<str> = Arc::from(
            r#"{"metadata":{"name":"web","managedFields":[{"x":1}]},"spec":{"selector":{"matchLabels":{"app":"web"}},"replicas":3}}"#,
        );
        let lazy = LazyValue::from_text(text);
        let selector = lazy
            .path(&["spec".into(), "selector".into()])
            .expect("present");
        let expected = json_to_cel(&serde_json::json!({"matchLabels": {"app": "web"}}));
        assert_eq!(selector.value().expect("decodes"), &expected);
        let replicas = lazy
            .get("spec")
            .expect("ok")
            .expect("spec")
            .get("replicas")
            .expect("ok")
            .expect("replicas");
        assert_eq!(
            replicas.value().expect("decodes"),
            &Value::Int(3),
            "integers are int"
        );
        let metadata = lazy.get("metadata").expect("ok").expect("metadata");
        assert!(
            metadata.members.get().is_none(),
            "metadata was never walked into"
        );
        assert!(lazy.get("status").expect("ok").is_none());
        assert!(
            replicas.members().expect("ok").is_none(),
            "a number has no members"
        );
    }

    #[test]
    fn escaped_keys_and_whole_values_round_trip() {
        let json = serde_json::json!({"a\"b": {"c": [1, 2.5, null, "x"]}, "e": true});
        let lazy = LazyValue::from_text(Arc::from(json.to_string()));
        assert!(lazy.get("a\"b").expect("ok").is_some());
        assert_eq!(lazy.value().expect("decodes"), &json_to_cel(&json));
        assert!(LazyValue::null().is_null());
        assert!(LazyValue::from_text(Arc::from("null")).is_null());
    }
}
