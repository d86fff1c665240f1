//! One looked-up kind: a kube-runtime reflector store fed by watch events,
//! plus the CEL lists that evaluations read.
//!
//! Objects are converted to CEL once, when their event arrives, and the store
//! keeps only that CEL value (not the `DynamicObject` too): the request path
//! then clones `Arc`s instead of converting JSON, and memory holds one copy
//! of each object. The store's key type is `()`-typed because a store holds a
//! single kind, which keeps every key small and cheap to hash.

use crate::policy::LookupError;
use crate::policy::values::json_to_cel;
use kube::api::DynamicObject;
use kube::runtime::reflector::store::{Store, Writer};
use kube::runtime::reflector::{Lookup, ObjectRef};
use kube::runtime::watcher;
use kube_cel::cel::Value;
use kube_cel::cel::objects::{Key, Map};
use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, TryLockError};
use std::time::Instant;

/// Written by `kubectl apply`: a full copy of the object, never read by policies.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object as the cache keeps it: its identity and its CEL value.
#[derive(Debug, Clone)]
pub(crate) struct CachedObject {
    name: String,
    namespace: Option<String>,
    /// Only filled for Namespaces, whose labels `namespaceSelector` reads.
    labels: BTreeMap<String, String>,
    value: Value,
}

impl CachedObject {
    pub(crate) fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    pub(crate) fn value(&self) -> &Value {
        &self.value
    }
}

impl Lookup for CachedObject {
    type DynamicType = ();

    // The store never reads the type names (one store is one kind); they are
    // only part of the trait for display.
    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Cow::Borrowed)
    }

    // Not kept: keys stay smaller, and nothing here compares versions.
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// Per-kind numbers for `/readyz` detail and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct KindStats {
    pub api_version: String,
    pub kind: String,
    /// The resource as discovery resolved it (`widgets.example.dev`), once known.
    pub resource: Option<String>,
    /// The initial list completed at least once.
    pub synced: bool,
    /// Lookups are answered (synced and not forbidden by RBAC).
    pub usable: bool,
    /// No error since the last successful list or event.
    pub healthy: bool,
    /// Seconds since the last complete list or watch event; `None` before the first sync.
    /// A quiet kind's age grows while its watch is healthy: read it with `healthy`.
    pub last_sync_age_seconds: Option<f64>,
    pub objects: usize,
    /// Errors from discovery, list and watch since the cache started.
    pub watch_errors: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Status {
    synced: bool,
    forbidden: bool,
    failing: bool,
    last_sync: Option<Instant>,
    last_error: Option<String>,
    watch_errors: u64,
    resource: Option<String>,
    /// How discovery says the kind is served (for param lookup).
    scope: Option<crate::policy::ParamScope>,
    /// Discovery says the API server does not serve the kind.
    not_served: bool,
}

/// Converted lists, each tagged with the store generation it was built from.
#[derive(Debug, Default)]
struct Lists {
    all: Option<(u64, Value)>,
    by_namespace: HashMap<String, (u64, Value)>,
}

impl Lists {
    fn get(&self, namespace: Option<&str>) -> Option<&(u64, Value)> {
        match namespace {
            None => self.all.as_ref(),
            Some(ns) => self.by_namespace.get(ns),
        }
    }

    fn put(&mut self, namespace: Option<&str>, entry: (u64, Value)) {
        match namespace {
            None => self.all = Some(entry),
            Some(ns) => {
                self.by_namespace.insert(ns.to_string(), entry);
            }
        }
    }
}

/// The read side of one kind's cache, shared by evaluations and the watch task.
#[derive(Debug)]
pub(crate) struct KindCache {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    store: Store<CachedObject>,
    /// Bumped after every change to the store; lists built from an older one are rebuilt.
    generation: AtomicU64,
    /// Synced and not forbidden: the only flag the request path reads.
    usable: AtomicBool,
    status: Mutex<Status>,
    lists: RwLock<Lists>,
    rebuilding: Mutex<()>,
}

// A poisoned lock only means another thread panicked mid-update of plain
// data; the data is still the last consistent state we wrote.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KindCache {
    pub(crate) fn is(&self, api_version: &str, kind: &str) -> bool {
        self.api_version == api_version && self.kind == kind
    }

    pub(crate) fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// Every object, or those in `namespace` ("" for cluster-scoped ones), as a CEL list.
    pub(crate) fn list(&self, namespace: Option<&str>) -> Result<Value, LookupError> {
        if !self.is_usable() {
            return Err(self.unavailable());
        }
        // Read the generation before the store: a change racing with the
        // rebuild leaves the list tagged older than its content, so the next
        // read rebuilds again instead of serving stale objects as fresh.
        let generation = self.generation.load(Ordering::Acquire);
        let previous = match self.cached(namespace, generation) {
            Ok(current) => return Ok(current),
            Err(previous) => previous,
        };
        // One rebuild at a time (10,000 objects take a few ms): requests that
        // arrive meanwhile get the list from one change before, rather than
        // all rebuilding the same list at once.
        let _rebuilding = match self.rebuilding.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => match previous {
                Some(previous) => return Ok(previous),
                None => lock(&self.rebuilding),
            },
        };
        if let Ok(current) = self.cached(namespace, generation) {
            return Ok(current);
        }
        let value = self.build(namespace);
        self.lists
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .put(namespace, (generation, value.clone()));
        Ok(value)
    }

    /// Stands in for a rebuild running on another thread.
    #[cfg(test)]
    pub(crate) fn hold_rebuild(&self) -> MutexGuard<'_, ()> {
        lock(&self.rebuilding)
    }

    /// `Ok` with the list built from `generation`, else `Err` with any older one.
    fn cached(&self, namespace: Option<&str>, generation: u64) -> Result<Value, Option<Value>> {
        let lists = self.lists.read().unwrap_or_else(PoisonError::into_inner);
        match lists.get(namespace) {
            Some((built, value)) if *built == generation => Ok(value.clone()),
            Some((_, value)) => Err(Some(value.clone())),
            None => Err(None),
        }
    }

    fn build(&self, namespace: Option<&str>) -> Value {
        let mut objects = match namespace {
            None => self.store.state(),
            Some(ns) => self
                .store
                .state_filter(|o| o.namespace.as_deref().unwrap_or_default() == ns),
        };
        // The store is a hash map; sort so messages and audits are reproducible.
        objects.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Value::List(Arc::new(objects.iter().map(|o| o.value.clone()).collect()))
    }

    /// How the kind is served, for param lookup: `Ok(None)` when discovery
    /// found it not served; an error until the cache can answer.
    pub(crate) fn param_scope(&self) -> Result<Option<crate::policy::ParamScope>, LookupError> {
        if !self.is_usable() {
            return Err(self.unavailable());
        }
        let status = lock(&self.status);
        match (status.scope, status.not_served) {
            (Some(scope), _) => Ok(Some(scope)),
            (None, true) => Ok(None),
            (None, false) => Err(self.unavailable()),
        }
    }

    /// The object named `name` (cluster-scoped kinds).
    pub(crate) fn get(&self, name: &str) -> Result<Option<Arc<CachedObject>>, LookupError> {
        if !self.is_usable() {
            return Err(self.unavailable());
        }
        Ok(self.store.get(&ObjectRef::new(name)))
    }

    /// Why lookups fail, for the evaluation error the policy's failurePolicy handles.
    pub(crate) fn unavailable(&self) -> LookupError {
        LookupError::Unavailable(format!(
            "lookup of {} ({}) is unavailable: {}",
            self.kind,
            self.api_version,
            self.reason()
        ))
    }

    pub(crate) fn reason(&self) -> String {
        let status = lock(&self.status);
        let resource = status.resource.clone().unwrap_or_else(|| self.kind.clone());
        match (&status.last_error, status.forbidden, status.synced) {
            (Some(e), true, _) => format!(
                "RBAC forbids listing or watching it; grant get, list and watch on {resource}: {e}"
            ),
            (_, false, true) => "its cache is synced".to_string(),
            (Some(e), false, false) => format!("its cache has not synced yet (last error: {e})"),
            (None, _, _) => "its cache has not synced yet".to_string(),
        }
    }

    pub(crate) fn stats(&self) -> KindStats {
        let status = lock(&self.status);
        KindStats {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            resource: status.resource.clone(),
            synced: status.synced,
            usable: self.is_usable(),
            healthy: !status.failing,
            last_sync_age_seconds: status.last_sync.map(|t| t.elapsed().as_secs_f64()),
            objects: self.store.len(),
            watch_errors: status.watch_errors,
            last_error: status.last_error.clone(),
        }
    }
}

/// What went wrong talking to the API server, as the cache reports it.
#[derive(Debug, Clone)]
pub(crate) struct WatchFailure {
    pub(crate) message: String,
    pub(crate) forbidden: bool,
    /// Discovery says the API server does not serve the kind at all.
    pub(crate) not_served: bool,
}

impl WatchFailure {
    pub(crate) fn from_watcher(err: &watcher::Error) -> Self {
        let (stage, client) = match err {
            watcher::Error::InitialListFailed(e) => ("list", Some(e)),
            watcher::Error::WatchStartFailed(e) => ("watch", Some(e)),
            watcher::Error::WatchFailed(e) => ("watch stream", Some(e)),
            watcher::Error::WatchError(status) => {
                return WatchFailure {
                    message: format!("watch: {}", describe_status(status)),
                    forbidden: status.is_forbidden(),
                    not_served: false,
                };
            }
            watcher::Error::NoResourceVersion => ("list", None),
        };
        match client {
            Some(kube::Error::Api(status)) => WatchFailure {
                message: format!("{stage}: {}", describe_status(status)),
                forbidden: status.is_forbidden(),
                not_served: false,
            },
            Some(e) => WatchFailure {
                message: format!("{stage}: {e}"),
                forbidden: false,
                not_served: false,
            },
            None => WatchFailure {
                message: format!("{stage}: {err}"),
                forbidden: false,
                not_served: false,
            },
        }
    }
}

pub(crate) fn describe_status(status: &kube::core::Status) -> String {
    if status.message.is_empty() {
        format!("HTTP {} {}", status.code, status.reason)
    } else {
        format!("{} (HTTP {})", status.message, status.code)
    }
}

/// The write side: owned by the watch task (and by tests, which feed it the
/// same events the watcher produces).
pub(crate) struct KindWriter {
    writer: Writer<CachedObject>,
    cache: Arc<KindCache>,
    keep_labels: bool,
    keys: Keys,
}

impl KindWriter {
    pub(crate) fn new(api_version: &str, kind: &str) -> (Arc<KindCache>, KindWriter) {
        let writer = Writer::new(());
        let cache = Arc::new(KindCache {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            store: writer.as_reader(),
            generation: AtomicU64::new(0),
            usable: AtomicBool::new(false),
            status: Mutex::new(Status::default()),
            lists: RwLock::new(Lists::default()),
            rebuilding: Mutex::new(()),
        });
        let keep_labels = api_version == "v1" && kind == "Namespace";
        (
            cache.clone(),
            KindWriter {
                writer,
                cache,
                keep_labels,
                keys: Keys::default(),
            },
        )
    }

    pub(crate) fn cache(&self) -> &Arc<KindCache> {
        &self.cache
    }

    pub(crate) fn set_resource(&self, resource: String, scope: crate::policy::ParamScope) {
        let mut status = lock(&self.cache.status);
        status.resource = Some(resource);
        status.scope = Some(scope);
        status.not_served = false;
    }

    /// Applies one watcher event: strip, convert, store, then publish.
    pub(crate) fn apply(&mut self, event: watcher::Event<DynamicObject>) {
        let event = match event {
            watcher::Event::Apply(o) => self.convert(o).map(watcher::Event::Apply),
            watcher::Event::InitApply(o) => self.convert(o).map(watcher::Event::InitApply),
            // Deletes need only the key: skip the conversion.
            watcher::Event::Delete(o) => key_only(o).map(watcher::Event::Delete),
            watcher::Event::Init => Some(watcher::Event::Init),
            watcher::Event::InitDone => Some(watcher::Event::InitDone),
        };
        let Some(event) = event else {
            tracing::warn!(kind = %self.cache.kind, api_version = %self.cache.api_version,
                "ignoring a watch event for an object without metadata.name");
            return;
        };
        self.writer.apply_watcher_event(&event);
        match event {
            // Buffered by the writer until InitDone: what lookups see is unchanged.
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
            watcher::Event::InitDone => {
                self.cache.generation.fetch_add(1, Ordering::Release);
                let first = {
                    let mut status = lock(&self.cache.status);
                    let first = !status.synced;
                    status.synced = true;
                    status.forbidden = false;
                    status.failing = false;
                    status.last_sync = Some(Instant::now());
                    first
                };
                self.cache.usable.store(true, Ordering::Release);
                let objects = self.cache.store.len();
                if first {
                    tracing::info!(kind = %self.cache.kind, api_version = %self.cache.api_version, objects,
                        "lookup cache synced");
                } else {
                    tracing::debug!(kind = %self.cache.kind, api_version = %self.cache.api_version, objects,
                        "lookup cache re-listed");
                }
            }
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
                self.cache.generation.fetch_add(1, Ordering::Release);
                let mut status = lock(&self.cache.status);
                status.forbidden = false;
                status.failing = false;
                status.last_sync = Some(Instant::now());
                self.cache.usable.store(status.synced, Ordering::Release);
            }
        }
    }

    /// The API server does not serve the kind (its CRD is not installed): no
    /// object of it can exist, so lookups answer an empty list instead of an
    /// error — a cluster without KubeFed must not fail every fail-closed
    /// policy that looks KubeFed up. Discovery keeps retrying; once the kind is
    /// served, the watch lists it and replaces this empty state.
    pub(crate) fn not_served(&mut self, failure: WatchFailure) {
        if !lock(&self.cache.status).synced {
            self.apply(watcher::Event::Init);
            self.apply(watcher::Event::InitDone);
        }
        let mut status = lock(&self.cache.status);
        status.last_error = Some(failure.message.clone());
        status.not_served = true;
        drop(status);
        tracing::info!(kind = %self.cache.kind, api_version = %self.cache.api_version,
            note = %failure.message, "kind not served by the API server; lookups answer an empty list");
    }

    /// Counts and logs a failure. The store keeps its last state; only an RBAC
    /// denial makes lookups fail, because serving objects the gate may no
    /// longer read would decide on data nobody can refresh.
    pub(crate) fn record(&mut self, failure: WatchFailure) {
        let mut status = lock(&self.cache.status);
        status.watch_errors += 1;
        status.failing = true;
        // Only a successful list or event lifts a denial: a later network
        // error says nothing about whether RBAC was granted.
        status.forbidden |= failure.forbidden;
        let usable = status.synced && !status.forbidden;
        status.last_error = Some(failure.message.clone());
        drop(status);
        self.cache.usable.store(usable, Ordering::Release);
        if failure.forbidden {
            tracing::error!(kind = %self.cache.kind, api_version = %self.cache.api_version,
                error = %failure.message, "lookup cache forbidden by RBAC; lookups of this kind fail until it is granted");
        } else {
            tracing::warn!(kind = %self.cache.kind, api_version = %self.cache.api_version, usable,
                error = %failure.message, "lookup cache lost its watch; serving its last state and retrying");
        }
    }

    fn convert(&mut self, obj: DynamicObject) -> Option<CachedObject> {
        let DynamicObject {
            types,
            mut metadata,
            data,
        } = obj;
        let name = metadata.name.clone()?;
        strip_meta(&mut metadata);
        let labels = if self.keep_labels {
            metadata.labels.clone().unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        let mut fields = match data {
            serde_json::Value::Object(fields) => fields,
            _ => serde_json::Map::new(),
        };
        // List responses omit apiVersion/kind on items of built-in kinds;
        // policies (and snapshots) always see them.
        let (api_version, kind) = match types {
            Some(t) if !t.api_version.is_empty() && !t.kind.is_empty() => (t.api_version, t.kind),
            _ => (self.cache.api_version.clone(), self.cache.kind.clone()),
        };
        fields.insert("apiVersion".into(), api_version.into());
        fields.insert("kind".into(), kind.into());
        let namespace = metadata.namespace.clone();
        match serde_json::to_value(&metadata) {
            Ok(meta) => {
                fields.insert("metadata".into(), meta);
            }
            // ObjectMeta serialises to JSON by construction; keep the object
            // rather than drop it if that ever changes.
            Err(e) => tracing::error!(error = %e, "cannot serialise ObjectMeta"),
        }
        Some(CachedObject {
            name,
            namespace,
            labels,
            value: self.keys.convert(serde_json::Value::Object(fields)),
        })
    }
}

/// Map keys shared across the objects of a kind. Every object repeats the
/// same field names ("metadata", "name", "labels", ...); one `Arc<String>`
/// each instead of one per occurrence is most of the saving over
/// `json_to_cel` (see the memory tests). Values stay per object.
#[derive(Debug, Default)]
struct Keys {
    set: HashSet<SharedKey>,
    /// Size at which keys only the set still holds are dropped, so keys of
    /// deleted objects do not pile up.
    prune_at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SharedKey(Arc<String>);

// Hash as `str` does, so the set can be searched with a borrowed `&str`.
impl Hash for SharedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl Borrow<str> for SharedKey {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl Keys {
    fn key(&mut self, name: &str) -> Arc<String> {
        if let Some(shared) = self.set.get(name) {
            return shared.0.clone();
        }
        if self.set.len() >= self.prune_at {
            self.set.retain(|k| Arc::strong_count(&k.0) > 1);
            self.prune_at = (self.set.len() * 2).max(1024);
        }
        let shared = Arc::new(name.to_string());
        self.set.insert(SharedKey(shared.clone()));
        shared
    }

    /// The same values as `json_to_cel` (scalars go through it), with shared
    /// keys, taking strings by value instead of copying them.
    fn convert(&mut self, value: serde_json::Value) -> Value {
        match value {
            serde_json::Value::Object(fields) => {
                let map: HashMap<Key, Value> = fields
                    .into_iter()
                    .map(|(k, v)| (Key::String(self.key(&k)), self.convert(v)))
                    .collect();
                Value::Map(Map { map: Arc::new(map) })
            }
            serde_json::Value::Array(items) => Value::List(Arc::new(
                items.into_iter().map(|v| self.convert(v)).collect(),
            )),
            serde_json::Value::String(s) => Value::String(Arc::new(s)),
            scalar => json_to_cel(&scalar),
        }
    }
}

fn key_only(obj: DynamicObject) -> Option<CachedObject> {
    Some(CachedObject {
        name: obj.metadata.name?,
        namespace: obj.metadata.namespace,
        labels: BTreeMap::new(),
        value: Value::Null,
    })
}

/// Drops what no policy reads and what costs the most memory: managedFields
/// are often half of an object's metadata, last-applied a full second copy.
pub(crate) fn strip_meta(meta: &mut kube::core::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}
