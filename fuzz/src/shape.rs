//! A structure-aware AdmissionReview: the fields kube-apiserver sends, each
//! absent, `null`, empty or set, with the kinds, namespaces, label keys and
//! user groups the shipped policies look at, unicode, and numbers at the
//! edges of what JSON and CEL represent. `arbitrary` derives the choices from
//! the fuzzer's bytes; [`AdmissionReviewShape::to_json`] writes the body.

use arbitrary::{Arbitrary, Result, Unstructured};
use serde_json::{Map, Value, json};

/// How deep [`Json`] nests: deeper than any policy path reads, shallow enough
/// that serialising never approaches serde_json's recursion limit of 128.
const MAX_DEPTH: u32 = 6;

/// A field as it reaches the decoder.
#[derive(Arbitrary, Debug)]
pub enum Field<T> {
    Absent,
    Null,
    /// `""`, `{}`, `[]` or `0`, whichever the field's type makes empty.
    Empty,
    Set(T),
}

/// Values that have an empty form and a JSON form.
pub trait ToJson {
    fn to_json(&self) -> Value;
    fn empty() -> Value;
}

impl<T: ToJson> Field<T> {
    /// Inserts the field into `map` under `key` (or leaves it out).
    fn put(&self, map: &mut Map<String, Value>, key: &str) {
        let value = match self {
            Field::Absent => return,
            Field::Null => Value::Null,
            Field::Empty => T::empty(),
            Field::Set(v) => v.to_json(),
        };
        map.insert(key.to_string(), value);
    }
}

impl ToJson for bool {
    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
    fn empty() -> Value {
        Value::Bool(false)
    }
}

/// Words the shipped policies compare against, and anything else.
const WORDS: &[&str] = &[
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "safety-gate",
    "payments-prod",
    "english",
    "english-grammar-web",
    "shop-prod",
    "host",
    "cluster-admin",
    "system:masters",
    "system:authenticated",
    "system:serviceaccounts",
    "system:serviceaccount:kube-system:namespace-controller",
    "system:kube-controller-manager",
    "safety-gate:break-glass",
    "admin",
    "edit",
    "view",
    "true",
    "false",
    "latest",
    "nginx:latest",
    "nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "2026-01-01T00:00:00Z",
    "Terminating",
    "Active",
    "ñame-ünïcode-名前",
    "\u{0}",
    "a\"b\\c",
    "\u{202e}rtl",
    "😀",
];

#[derive(Arbitrary, Debug)]
pub enum Word {
    Known(u8),
    Any(String),
}

impl ToJson for Word {
    fn to_json(&self) -> Value {
        Value::String(self.text())
    }
    fn empty() -> Value {
        Value::String(String::new())
    }
}

impl Word {
    fn text(&self) -> String {
        match self {
            Word::Known(i) => WORDS[usize::from(*i) % WORDS.len()].to_string(),
            Word::Any(s) => s.clone(),
        }
    }
}

/// Label and annotation keys: prefixed, dotted, slashed, malformed.
const LABEL_KEYS: &[&str] = &[
    "safety-gate.dev/protected",
    "safety-gate.dev/last-change",
    "kubernetes.io/metadata.name",
    "kubernetes.io/bootstrapping",
    "kubesphere.io/workspace",
    "app.kubernetes.io/name",
    "app",
    "a.b.c/d.e",
    "a/b/c",
    "/",
    ".",
    "..",
    "a.",
    "-a",
    "",
];

#[derive(Arbitrary, Debug)]
pub enum LabelKey {
    Known(u8),
    Any(String),
}

impl LabelKey {
    fn text(&self) -> String {
        match self {
            LabelKey::Known(i) => LABEL_KEYS[usize::from(*i) % LABEL_KEYS.len()].to_string(),
            LabelKey::Any(s) => s.clone(),
        }
    }
}

/// Object field names the shipped policies read, so nested objects reach them.
const FIELD_NAMES: &[&str] = &[
    "spec",
    "status",
    "metadata",
    "labels",
    "annotations",
    "name",
    "namespace",
    "replicas",
    "selector",
    "matchLabels",
    "matchExpressions",
    "template",
    "containers",
    "initContainers",
    "image",
    "resources",
    "limits",
    "requests",
    "securityContext",
    "privileged",
    "hostNetwork",
    "rules",
    "subjects",
    "roleRef",
    "kind",
    "apiGroup",
    "verbs",
    "finalizers",
    "deletionTimestamp",
    "ownerReferences",
    "clusterIP",
    "type",
    "ports",
    "data",
    "immutable",
    "minAvailable",
    "maxUnavailable",
    "placement",
    "clusters",
    "provisioner",
    "parameters",
    "suspend",
    "parallelism",
    "strategy",
    "phase",
    "conditions",
];

/// Any JSON value, nested at most [`MAX_DEPTH`] deep.
#[derive(Debug)]
pub struct Json(pub Value);

impl<'a> Arbitrary<'a> for Json {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        json(u, 0).map(Json)
    }
}

impl ToJson for Json {
    fn to_json(&self) -> Value {
        self.0.clone()
    }
    fn empty() -> Value {
        json!({})
    }
}

fn json(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let leaf_only = depth >= MAX_DEPTH || u.is_empty();
    let choice = u.int_in_range(0..=if leaf_only { 9 } else { 11 })?;
    Ok(match choice {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.int_in_range(-3i64..=100)?),
        3 => json!(u.arbitrary::<i64>()?),
        // Past i64: CEL's uint, and what JSON numbers cannot be as int.
        4 => json!(u.arbitrary::<u64>()?),
        5 => json!(*u.choose(&[i64::MIN, i64::MAX, -1, 0, 1 << 53, (1 << 53) + 1])?),
        // serde_json writes non-finite floats as null.
        6 => json!(u.arbitrary::<f64>()?),
        7 => Value::String(u.arbitrary::<Word>()?.text()),
        8 => Value::String(u.arbitrary::<String>()?),
        9 => json!(*u.choose(&["1Gi", "500m", "0.5", "1e3", "-1", "100%", "50%", "", "1Ei"])?),
        10 => {
            let len = u.int_in_range(0..=4)?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(json(u, depth + 1)?);
            }
            Value::Array(items)
        }
        _ => {
            let len = u.int_in_range(0..=5)?;
            let mut map = Map::new();
            for _ in 0..len {
                let key = if u.arbitrary()? {
                    (*u.choose(FIELD_NAMES)?).to_string()
                } else {
                    u.arbitrary::<LabelKey>()?.text()
                };
                map.insert(key, json(u, depth + 1)?);
            }
            Value::Object(map)
        }
    })
}

/// Group, version, kind and resource: the ones the shipped policies match,
/// or any four strings.
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Namespace", "namespaces"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("", "v1", "Pod", "pods"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("autoscaling", "v1", "Scale", "deployments"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
    ),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
    ),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses"),
    (
        "types.kubefed.io",
        "v1beta1",
        "FederatedNamespace",
        "federatednamespaces",
    ),
    (
        "tenant.kubesphere.io",
        "v1alpha2",
        "WorkSpace",
        "workspaces",
    ),
    ("coordination.k8s.io", "v1", "Lease", "leases"),
];

#[derive(Arbitrary, Debug)]
pub enum Kind {
    Known(u8),
    Any {
        group: String,
        version: String,
        kind: String,
        resource: String,
    },
}

impl Kind {
    fn parts(&self) -> (String, String, String, String) {
        match self {
            Kind::Known(i) => {
                let (g, v, k, r) = KINDS[usize::from(*i) % KINDS.len()];
                (g.into(), v.into(), k.into(), r.into())
            }
            Kind::Any {
                group,
                version,
                kind,
                resource,
            } => (
                group.clone(),
                version.clone(),
                kind.clone(),
                resource.clone(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
    Any(String),
}

impl ToJson for Operation {
    fn to_json(&self) -> Value {
        Value::String(match self {
            Operation::Create => "CREATE".into(),
            Operation::Update => "UPDATE".into(),
            Operation::Delete => "DELETE".into(),
            Operation::Connect => "CONNECT".into(),
            Operation::Any(s) => s.clone(),
        })
    }
    fn empty() -> Value {
        Value::String(String::new())
    }
}

/// `metadata.labels` / `annotations`: keys with `.` and `/`, any values
/// (kube-apiserver only sends strings; a forged body may not).
#[derive(Arbitrary, Debug)]
pub struct StringMap(Vec<(LabelKey, Field<Word>)>, Vec<(LabelKey, Json)>);

impl ToJson for StringMap {
    fn to_json(&self) -> Value {
        let mut map = Map::new();
        for (key, value) in &self.0 {
            value.put(&mut map, &key.text());
        }
        for (key, value) in &self.1 {
            map.insert(key.text(), value.0.clone());
        }
        Value::Object(map)
    }
    fn empty() -> Value {
        json!({})
    }
}

#[derive(Arbitrary, Debug)]
pub struct Metadata {
    name: Field<Word>,
    generate_name: Field<Word>,
    namespace: Field<Word>,
    labels: Field<StringMap>,
    annotations: Field<StringMap>,
    deletion_timestamp: Field<Word>,
    finalizers: Field<Json>,
    owner_references: Field<Json>,
    resource_version: Field<Word>,
    extra: Option<(Word, Json)>,
}

impl ToJson for Metadata {
    fn to_json(&self) -> Value {
        let mut map = Map::new();
        self.name.put(&mut map, "name");
        self.generate_name.put(&mut map, "generateName");
        self.namespace.put(&mut map, "namespace");
        self.labels.put(&mut map, "labels");
        self.annotations.put(&mut map, "annotations");
        self.deletion_timestamp.put(&mut map, "deletionTimestamp");
        self.finalizers.put(&mut map, "finalizers");
        self.owner_references.put(&mut map, "ownerReferences");
        self.resource_version.put(&mut map, "resourceVersion");
        if let Some((key, value)) = &self.extra {
            map.insert(key.text(), value.0.clone());
        }
        Value::Object(map)
    }
    fn empty() -> Value {
        json!({})
    }
}

/// `object` / `oldObject`: apiVersion and kind those of the request unless
/// overridden, metadata, and spec/status/data of any shape.
#[derive(Arbitrary, Debug)]
pub struct Object {
    type_meta: TypeMeta,
    metadata: Field<Metadata>,
    spec: Field<Json>,
    status: Field<Json>,
    data: Field<Json>,
    rules: Field<Json>,
    subjects: Field<Json>,
    role_ref: Field<Json>,
}

#[derive(Arbitrary, Debug)]
pub enum TypeMeta {
    OfRequest,
    Absent,
    Other(Field<Word>, Field<Word>),
}

impl Object {
    fn to_json(&self, api_version: &str, kind: &str) -> Value {
        let mut map = Map::new();
        match &self.type_meta {
            TypeMeta::OfRequest => {
                map.insert("apiVersion".into(), json!(api_version));
                map.insert("kind".into(), json!(kind));
            }
            TypeMeta::Absent => {}
            TypeMeta::Other(v, k) => {
                v.put(&mut map, "apiVersion");
                k.put(&mut map, "kind");
            }
        }
        self.metadata.put(&mut map, "metadata");
        self.spec.put(&mut map, "spec");
        self.status.put(&mut map, "status");
        self.data.put(&mut map, "data");
        self.rules.put(&mut map, "rules");
        self.subjects.put(&mut map, "subjects");
        self.role_ref.put(&mut map, "roleRef");
        Value::Object(map)
    }
}

#[derive(Arbitrary, Debug)]
pub struct UserInfo {
    username: Field<Word>,
    uid: Field<Word>,
    groups: Field<Vec<Word>>,
    extra: Field<Json>,
}

impl ToJson for Vec<Word> {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(ToJson::to_json).collect())
    }
    fn empty() -> Value {
        json!([])
    }
}

impl ToJson for UserInfo {
    fn to_json(&self) -> Value {
        let mut map = Map::new();
        self.username.put(&mut map, "username");
        self.uid.put(&mut map, "uid");
        self.groups.put(&mut map, "groups");
        self.extra.put(&mut map, "extra");
        Value::Object(map)
    }
    fn empty() -> Value {
        json!({})
    }
}

#[derive(Arbitrary, Debug)]
pub enum Envelope {
    V1,
    V1beta1,
    Other(Field<Word>, Field<Word>),
}

/// The whole request body.
#[derive(Arbitrary, Debug)]
pub struct AdmissionReviewShape {
    envelope: Envelope,
    /// No `request` at all (a malformed review), or one.
    request: Option<RequestShape>,
}

#[derive(Arbitrary, Debug)]
pub struct RequestShape {
    uid: Field<Word>,
    operation: Field<Operation>,
    kind: Kind,
    /// requestKind/requestResource differ (an equivalent-resource request).
    request_kind: Option<Kind>,
    sub_resource: Field<Word>,
    name: Field<Word>,
    namespace: Field<Word>,
    object: Option<Field<Object>>,
    old_object: Option<Field<Object>>,
    user_info: Field<UserInfo>,
    dry_run: Field<bool>,
    options: Field<Json>,
    /// A field kube-apiserver does not send.
    unknown: Option<(Word, Json)>,
}

impl AdmissionReviewShape {
    /// The AdmissionReview JSON a caller of `/validate` would send.
    pub fn to_json(&self) -> Value {
        let mut review = Map::new();
        match &self.envelope {
            Envelope::V1 => {
                review.insert("apiVersion".into(), json!("admission.k8s.io/v1"));
                review.insert("kind".into(), json!("AdmissionReview"));
            }
            Envelope::V1beta1 => {
                review.insert("apiVersion".into(), json!("admission.k8s.io/v1beta1"));
                review.insert("kind".into(), json!("AdmissionReview"));
            }
            Envelope::Other(v, k) => {
                v.put(&mut review, "apiVersion");
                k.put(&mut review, "kind");
            }
        }
        if let Some(request) = &self.request {
            review.insert("request".into(), request.to_json());
        }
        Value::Object(review)
    }
}

fn gvk(kind: &Kind) -> (Value, Value, String, String) {
    let (group, version, kind, resource) = kind.parts();
    let api_version = if group.is_empty() {
        version.clone()
    } else {
        format!("{group}/{version}")
    };
    (
        json!({"group": group, "version": version, "kind": kind}),
        json!({"group": group, "version": version, "resource": resource}),
        api_version,
        kind,
    )
}

impl RequestShape {
    fn to_json(&self) -> Value {
        let mut map = Map::new();
        self.uid.put(&mut map, "uid");
        let (kind, resource, api_version, kind_name) = gvk(&self.kind);
        map.insert("kind".into(), kind.clone());
        map.insert("resource".into(), resource.clone());
        let (request_kind, request_resource) = match &self.request_kind {
            Some(k) => {
                let (k, r, _, _) = gvk(k);
                (k, r)
            }
            None => (kind, resource),
        };
        map.insert("requestKind".into(), request_kind);
        map.insert("requestResource".into(), request_resource);
        self.sub_resource.put(&mut map, "subResource");
        self.name.put(&mut map, "name");
        self.namespace.put(&mut map, "namespace");
        self.operation.put(&mut map, "operation");
        for (key, object) in [("object", &self.object), ("oldObject", &self.old_object)] {
            match object {
                None | Some(Field::Absent) => {}
                Some(Field::Null) => {
                    map.insert(key.into(), Value::Null);
                }
                Some(Field::Empty) => {
                    map.insert(key.into(), json!({}));
                }
                Some(Field::Set(o)) => {
                    map.insert(key.into(), o.to_json(&api_version, &kind_name));
                }
            }
        }
        self.user_info.put(&mut map, "userInfo");
        self.dry_run.put(&mut map, "dryRun");
        self.options.put(&mut map, "options");
        if let Some((key, value)) = &self.unknown {
            map.insert(key.text(), value.0.clone());
        }
        Value::Object(map)
    }
}
