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
                // The member's text is a slice of the same buffer: keep its offsets.
                let members = object_members(raw)?;
                let mut map = HashMap::with_capacity(members.len());
                for (key, from, to) in members {
                    let source = Source::Text {
                        text: text.clone(),
                        start: start + from,
                        end: start + to,
                    };
                    // A repeated key: the last one counts, as in serde_json's maps.
                    map.insert(key.into_owned(), LazyValue::new(source));
                }
                Ok(Some(map))
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

/// The members of the JSON object `raw`: each key (unescaped) with the
/// offsets of its value's text in `raw`. A structural scan, not a parse:
/// `raw` is valid JSON (serde_json checked the whole body when it was
/// decoded), so only strings and nesting need to be followed. serde_json's
/// `RawValue` map did the same with a validating scan of every level, at
/// several times the instructions; anything unexpected is still an error.
fn object_members(raw: &str) -> Result<Vec<(Cow<'_, str>, usize, usize)>, String> {
    const BAD: &str = "malformed JSON object";
    let bytes = raw.as_bytes();
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return Err(BAD.into());
    }
    i = skip_ws(bytes, i + 1);
    let mut members = Vec::new();
    if bytes.get(i) == Some(&b'}') {
        return Ok(members);
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return Err(BAD.into());
        }
        let key_end = skip_string(bytes, i).ok_or(BAD)?;
        let quoted = raw.get(i..key_end).ok_or(BAD)?;
        let key = match quoted.get(1..quoted.len() - 1) {
            Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
            _ => Cow::Owned(serde_json::from_str::<String>(quoted).map_err(|e| e.to_string())?),
        };
        i = skip_ws(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return Err(BAD.into());
        }
        let value_start = skip_ws(bytes, i + 1);
        let value_end = skip_value(bytes, value_start).ok_or(BAD)?;
        members.push((key, value_start, value_end));
        i = skip_ws(bytes, value_end);
        match bytes.get(i) {
            Some(b',') => i = skip_ws(bytes, i + 1),
            Some(b'}') => return Ok(members),
            _ => return Err(BAD.into()),
        }
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `bytes[i]` is the opening quote; the index after the closing one.
fn skip_string(bytes: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let rest = bytes.get(j..)?;
        let k = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
        j += k;
        if bytes.get(j) == Some(&b'"') {
            return Some(j + 1);
        }
        // A backslash and the character it escapes.
        j += 2;
    }
}

/// The index after the JSON value that starts at `bytes[i]`.
fn skip_value(bytes: &[u8], i: usize) -> Option<usize> {
    match bytes.get(i)? {
        b'"' => skip_string(bytes, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match bytes.get(j)? {
                    b'"' => {
                        j = skip_string(bytes, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        // Numbers, true, false, null: up to the next delimiter.
        _ => {
            let mut j = i;
            while !matches!(
                bytes.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                j += 1;
            }
            (j > i).then_some(j)
        }
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

    /// The structural scan finds the members serde_json's validating map finds.
    #[test]
    fn object_members_match_serde_json() {
        use serde_json::value::RawValue;
        let docs = [
            r#"{}"#,
            r#" { } "#,
            r#"{"a":1}"#,
            r#"{ "a" : 1 , "b" :[ 1, {"c":"]}"} ] ,"d":{"e":{"f":[]}} }"#,
            r#"{"k\"ey":"va\\lue\"}{","n":null,"t":true,"f":false,"x":-1.5e-3}"#,
            r#"{"\u00e9t\u00e9":"\u00e9","é":"ü \\","sl\/ash":[["\"["]]}"#,
            r#"{"dup":1,"dup":{"x":2}}"#,
            "{\n\t\"a\"\r\n:\n[1,\n2]\n}",
        ];
        for doc in docs {
            let expected: HashMap<Cow<'_, str>, &RawValue> =
                serde_json::from_str(doc).expect("valid JSON");
            let mut got = HashMap::new();
            for (k, from, to) in object_members(doc).expect("scans") {
                got.insert(k, &doc[from..to]);
            }
            let expected: HashMap<Cow<'_, str>, &str> =
                expected.into_iter().map(|(k, v)| (k, v.get())).collect();
            assert_eq!(got, expected, "{doc}");
        }
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a""#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":"x}"#,
            r#"{"a":[1}"#,
        ] {
            assert!(object_members(bad).is_err(), "{bad}");
        }
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
