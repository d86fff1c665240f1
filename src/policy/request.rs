//! The admission request as the engine sees it: the fields of
//! `AdmissionReview.request`, with `object`, `oldObject` and `options` kept as
//! raw JSON so that only what policies read is ever decoded.

use super::values::json_to_cel;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use kube_cel::cel::Value;
use kube_cel::cel::objects::{Key, Map};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

/// Serialises as `AdmissionReview.request` (the playground shows, and its
/// tests send to `serve`, the request it evaluated).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub request_kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub request_resource: Option<GroupVersionResource>,
    #[serde(default)]
    pub request_sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Box<RawValue>>,
    #[serde(default)]
    pub old_object: Option<Box<RawValue>>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub options: Option<Box<RawValue>>,
}

pub fn operation_str(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

impl Request {
    pub fn operation_str(&self) -> &'static str {
        operation_str(&self.operation)
    }

    pub fn namespace_str(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    pub fn username(&self) -> &str {
        self.user_info.username.as_deref().unwrap_or("")
    }

    /// The request as the CEL variable `request` (the VAP shape). As in
    /// kube-apiserver, which builds it from `admission/v1.AdmissionRequest`
    /// through JSON with `omitempty`, an empty `name`, `namespace`,
    /// `subResource`, `requestSubResource`, `userInfo.username`, `uid`,
    /// `groups` or `extra` is absent, not `''`: `request.name == ''` is a
    /// "no such key" error there, so policies write `request.?name`
    /// (verified with e2e/oracle on v1.37.2). `uid` is kept: a webhook always
    /// has one (kube-apiserver's own policies see none).
    pub fn to_cel(&self) -> Value {
        let mut m: HashMap<Key, Value> = HashMap::with_capacity(16);
        let put = |m: &mut HashMap<Key, Value>, k: &str, v: Value| {
            m.insert(Key::String(Arc::new(k.to_string())), v);
        };
        let put_nonempty = |m: &mut HashMap<Key, Value>, k: &str, v: &str| {
            if !v.is_empty() {
                m.insert(Key::String(Arc::new(k.to_string())), string(v));
            }
        };
        put(&mut m, "uid", string(&self.uid));
        put(&mut m, "kind", gvk(&self.kind));
        put(&mut m, "resource", gvr(&self.resource));
        put_nonempty(
            &mut m,
            "subResource",
            self.sub_resource.as_deref().unwrap_or(""),
        );
        put(
            &mut m,
            "requestKind",
            gvk(self.request_kind.as_ref().unwrap_or(&self.kind)),
        );
        put(
            &mut m,
            "requestResource",
            gvr(self.request_resource.as_ref().unwrap_or(&self.resource)),
        );
        put_nonempty(
            &mut m,
            "requestSubResource",
            self.request_sub_resource
                .as_deref()
                .or(self.sub_resource.as_deref())
                .unwrap_or(""),
        );
        put_nonempty(&mut m, "name", &self.name);
        put_nonempty(&mut m, "namespace", self.namespace_str());
        put(&mut m, "operation", string(self.operation_str()));
        let ui = &self.user_info;
        let mut user: HashMap<Key, Value> = HashMap::new();
        put_nonempty(&mut user, "username", ui.username.as_deref().unwrap_or(""));
        put_nonempty(&mut user, "uid", ui.uid.as_deref().unwrap_or(""));
        let groups: Vec<Value> = ui.groups.iter().flatten().map(|g| string(g)).collect();
        if !groups.is_empty() {
            user.insert(key("groups"), Value::List(Arc::new(groups)));
        }
        let extra: HashMap<Key, Value> = ui
            .extra
            .iter()
            .flatten()
            .map(|(k, v)| {
                (
                    key(k),
                    Value::List(Arc::new(v.iter().map(|s| string(s)).collect())),
                )
            })
            .collect();
        if !extra.is_empty() {
            user.insert(
                key("extra"),
                Value::Map(Map {
                    map: Arc::new(extra),
                }),
            );
        }
        put(
            &mut m,
            "userInfo",
            Value::Map(Map {
                map: Arc::new(user),
            }),
        );
        put(&mut m, "dryRun", Value::Bool(self.dry_run));
        let options = self
            .options
            .as_ref()
            .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
            .map(|v| json_to_cel(&v))
            .unwrap_or(Value::Null);
        put(&mut m, "options", options);
        Value::Map(Map { map: Arc::new(m) })
    }
}

fn key(k: &str) -> Key {
    Key::String(Arc::new(k.to_string()))
}

fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

fn gvk(g: &GroupVersionKind) -> Value {
    let m: HashMap<Key, Value> = [
        (key("group"), string(&g.group)),
        (key("version"), string(&g.version)),
        (key("kind"), string(&g.kind)),
    ]
    .into();
    Value::Map(Map { map: Arc::new(m) })
}

fn gvr(g: &GroupVersionResource) -> Value {
    let m: HashMap<Key, Value> = [
        (key("group"), string(&g.group)),
        (key("version"), string(&g.version)),
        (key("resource"), string(&g.resource)),
    ]
    .into();
    Value::Map(Map { map: Arc::new(m) })
}
