//! JSON → CEL values, the way Kubernetes reads them.
//!
//! Why our own conversion: `cel::to_value` turns every non-negative JSON
//! integer into `uint`, so `object.spec.replicas + 1` fails; Kubernetes reads
//! JSON integers as `int`. Request objects are decoded lazily (`lazy.rs`),
//! subtree by subtree, with [`decode_json`].

use kube_cel::cel::Value;
use kube_cel::cel::objects::{Key, Map};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Converts a parsed JSON value into a CEL value (integers as `int`).
pub fn json_to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => number_to_cel(n),
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(fields) => {
            let map: HashMap<Key, Value> = fields
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_cel(v)))
                .collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

fn number_to_cel(n: &serde_json::Number) -> Value {
    if let Some(i) = n.as_i64() {
        Value::Int(i)
    } else {
        // Integers beyond int64 and all fractions become double, as in Kubernetes' unstructured decoding.
        Value::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Converts a CEL value back to JSON (for patches, messages and reports).
pub fn cel_to_json(value: &Value) -> Result<serde_json::Value, String> {
    Ok(match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::UInt(u) => serde_json::Value::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("{f} cannot be represented in JSON"))?,
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::List(items) => {
            serde_json::Value::Array(items.iter().map(cel_to_json).collect::<Result<_, _>>()?)
        }
        Value::Map(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map.map.iter() {
                let key = match k {
                    Key::String(s) => s.to_string(),
                    Key::Int(i) => i.to_string(),
                    Key::Uint(u) => u.to_string(),
                    Key::Bool(b) => b.to_string(),
                };
                out.insert(key, cel_to_json(v)?);
            }
            serde_json::Value::Object(out)
        }
        other => {
            return Err(format!(
                "a {:?} value cannot be converted to JSON",
                other.type_of()
            ));
        }
    })
}

/// Decodes JSON text straight into CEL values (integers as `int`), without
/// an intermediate `serde_json::Value`.
pub fn decode_json(json: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let value = Decode.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Elements decoded or scanned between two cancellation check points: often
/// enough that a 100,000-element list stops within microseconds, rarely
/// enough to cost nothing measurable.
const CHECK_EVERY: usize = 256;

struct Decode;

impl<'de> DeserializeSeed<'de> for Decode {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Decode {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v)
            .map(Value::Int)
            .unwrap_or(Value::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(Arc::new(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(Arc::new(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(Decode)? {
            items.push(item);
            if items.len().is_multiple_of(CHECK_EVERY) {
                super::cancel::check().map_err(A::Error::custom)?;
            }
        }
        Ok(Value::List(Arc::new(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = HashMap::with_capacity(access.size_hint().unwrap_or(0));
        while let Some(key) = access.next_key::<std::borrow::Cow<'de, str>>()? {
            let value = access.next_value_seed(Decode)?;
            map.insert(Key::String(Arc::new(key.into_owned())), value);
            if map.len().is_multiple_of(CHECK_EVERY) {
                super::cancel::check().map_err(A::Error::custom)?;
            }
        }
        Ok(Value::Map(Map { map: Arc::new(map) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_integers_are_cel_int_not_uint() {
        let v = json_to_cel(
            &serde_json::json!({"replicas": 3, "big": 18446744073709551615u64, "f": 1.5}),
        );
        let Value::Map(m) = v else {
            panic!("not a map")
        };
        assert_eq!(
            m.map.get(&Key::from("replicas".to_string())),
            Some(&Value::Int(3))
        );
        assert!(matches!(
            m.map.get(&Key::from("big".to_string())),
            Some(Value::Float(_))
        ));
        assert_eq!(
            m.map.get(&Key::from("f".to_string())),
            Some(&Value::Float(1.5))
        );
    }

    #[test]
    fn decoding_text_equals_converting_parsed_json() {
        let json = r#"{"a":[1,{"b":2}],"c":null,"d":-3,"e":1.5,"f":18446744073709551615}"#;
        assert_eq!(
            decode_json(json).unwrap(),
            json_to_cel(&serde_json::from_str(json).unwrap())
        );
    }

    #[test]
    fn decoding_rejects_malformed_json() {
        assert!(decode_json("{\"a\":").is_err());
        assert!(decode_json("{} trailing").is_err());
    }

    #[test]
    fn cel_to_json_round_trips() {
        let json = serde_json::json!({"a": [1, "x", true, null, {"b": 2.5}]});
        assert_eq!(cel_to_json(&json_to_cel(&json)).unwrap(), json);
    }
}
