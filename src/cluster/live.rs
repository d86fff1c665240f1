//! Cluster state from the API server: one watch-backed cache per kind that a
//! loaded policy looks up, plus Namespaces when a policy reads namespace
//! labels or `namespaceObject`; nothing else is watched.
//!
//! Each cache is a kube-runtime reflector store fed by `watcher` with the
//! default backoff. A cache that loses its watch keeps serving its last state
//! while it retries; a cache that has not synced yet, or that RBAC forbids,
//! answers every lookup with an error naming the kind and the reason, so the
//! policy's failurePolicy decides instead of an empty list silently allowing.
//!
//! Memory: objects are stored as CEL values with `metadata.managedFields`
//! and the `kubectl.kubernetes.io/last-applied-configuration` annotation
//! stripped, and map keys shared across the objects of a kind. Measured with
//! realistic Deployments (3.2 KB of JSON each as the API server sends them):
//! about 12 MiB RSS per 1,000 cached objects (11.5 MiB per 1,000 at 10,000),
//! against 17 MiB per 1,000 with plain `json_to_cel` conversion. Run
//! `cargo test --release --lib -- --ignored --exact
//! cluster::live::tests::memory::memory_1000 --nocapture` (and `memory_10000`).
//! Reads clone an `Arc`; the first read after a change rebuilds that list
//! (about 0.4 ms per 1,000 objects).
//!
//! What this module does not know: the server wires [`LiveCluster::ready`]
//! into `/readyz` and [`LiveCluster::stats`] into metrics, and calls
//! [`LiveCluster::reconcile`] after each policy (re)load.

mod cache;
#[cfg(test)]
mod tests;

pub use cache::KindStats;

use crate::policy::{ClusterNeeds, ParamScope, ParamSource};
use crate::policy::{ClusterState, LookupError, NamespaceInfo};
use arc_swap::ArcSwap;
use cache::{KindCache, KindWriter, WatchFailure, describe_status};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, DefaultBackoff};
use kube::{Client, Config};
use kube_cel::cel::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a Kubernetes client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `--kubeconfig` file is missing or unreadable.
    #[error("cannot read kubeconfig {}: {source}", path.display())]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig was read but names no usable cluster, user or context.
    #[error("invalid kubeconfig {}: {source}", path.display())]
    InvalidKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// `certificate-authority(-data)` holds no PEM certificate: kube would
    /// build a client that trusts nothing and fail on every request.
    #[error("invalid kubeconfig {}: its certificate-authority holds no PEM CERTIFICATE", path.display())]
    NoCaCertificate { path: PathBuf },
    /// No `--kubeconfig`, no usable `$KUBECONFIG` or `~/.kube/config`, and
    /// no in-cluster service account.
    #[error(
        "no cluster configuration: {source}; pass --kubeconfig FILE, set KUBECONFIG, write ~/.kube/config, or run in a pod with a service account"
    )]
    Infer {
        #[source]
        source: kube::config::InferConfigError,
    },
    /// `--context` without `--kubeconfig`: `$KUBECONFIG` / `~/.kube/config`
    /// is missing or has no such context.
    #[error("--context: {source} (read from $KUBECONFIG, else ~/.kube/config)")]
    Context {
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The configuration could not become a client (TLS material, proxy).
    #[error("cannot build a Kubernetes client: {source}")]
    Build {
        #[source]
        source: kube::Error,
    },
    /// The client was built but the API server did not answer its version.
    #[error("cannot reach the cluster's API server: {source}")]
    Unreachable {
        #[source]
        source: kube::Error,
    },
}

/// A client for `kubeconfig` when given; otherwise found as kubectl finds
/// one: `$KUBECONFIG`, `~/.kube/config`, then the in-cluster service account.
/// `context` picks a kubeconfig context (default: its current context); with
/// a context there is no in-cluster fallback, as with `kubectl --context`.
/// Nothing is sent to the API server here.
pub async fn client_from(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Client, ClientError> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ClientError::ReadKubeconfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            let config = Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|source| ClientError::InvalidKubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?;
            if config.root_cert.as_ref().is_some_and(Vec::is_empty) {
                return Err(ClientError::NoCaCertificate {
                    path: path.to_path_buf(),
                });
            }
            config
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|source| ClientError::Context { source })?,
        // As kubectl: $KUBECONFIG, then ~/.kube/config, then the Pod's
        // service account.
        (None, None) => Config::infer()
            .await
            .map_err(|source| ClientError::Infer { source })?,
    };
    Client::try_from(config).map_err(|source| ClientError::Build { source })
}

/// Whether every cache can answer lookups, with per-kind detail for `/readyz`.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// Every watched kind has synced and is not forbidden (true when nothing is watched).
    pub ready: bool,
    pub kinds: Vec<KindStats>,
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kinds.is_empty() {
            return f.write_str("no lookup caches (no loaded policy reads cluster state)");
        }
        let waiting: Vec<&KindStats> = self.kinds.iter().filter(|k| !k.usable).collect();
        if waiting.is_empty() {
            return write!(f, "{} lookup cache(s) synced", self.kinds.len());
        }
        write!(f, "lookup caches not ready:")?;
        for k in waiting {
            write!(f, " {} ({})", k.kind, k.api_version)?;
            match &k.last_error {
                Some(e) => write!(f, ": {e};")?,
                None => write!(f, ": not synced yet;")?,
            }
        }
        Ok(())
    }
}

/// Live cluster state. Cheap to clone: clones share the caches, and the
/// caches stop when the last clone is dropped.
#[derive(Clone)]
pub struct LiveCluster {
    inner: Arc<Inner>,
}

impl fmt::Debug for LiveCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveCluster")
            .field("kinds", &self.watched())
            .finish()
    }
}

struct Inner {
    client: Client,
    /// Answers `authorizer` checks (None outside a tokio runtime).
    reviewer: Option<Arc<super::sar::SubjectAccessReviewer>>,
    /// Swapped whole by `reconcile`, so lookups never wait for a reload.
    caches: ArcSwap<Vec<Arc<Entry>>>,
    reconcile: tokio::sync::Mutex<()>,
}

struct Entry {
    cache: Arc<KindCache>,
    _task: Option<AbortOnDrop>,
}

/// Stops a cache's watch task when its entry leaves the set (or the set is dropped).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LiveCluster {
    /// No cache runs until [`LiveCluster::reconcile`].
    pub fn new(client: Client) -> Self {
        LiveCluster {
            inner: Arc::new(Inner {
                reviewer: tokio::runtime::Handle::try_current().ok().map(|runtime| {
                    Arc::new(super::sar::SubjectAccessReviewer::new(
                        client.clone(),
                        runtime,
                    ))
                }),
                client,
                caches: ArcSwap::from_pointee(Vec::new()),
                reconcile: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Starts a cache for each needed kind not yet watched and stops the
    /// caches no longer needed. Call it at start and after each policy
    /// reload; caches of kinds still needed keep their state. Returns at once:
    /// new caches resolve and sync in the background (see [`LiveCluster::ready`]).
    pub async fn reconcile(&self, needs: &ClusterNeeds) {
        let _one_at_a_time = self.inner.reconcile.lock().await;
        let current = self.inner.caches.load_full();
        let mut next = Vec::new();
        for (api_version, kind) in wanted(needs) {
            if let Some(entry) = current.iter().find(|e| e.cache.is(&api_version, &kind)) {
                next.push(entry.clone());
                continue;
            }
            tracing::info!(%kind, %api_version, "starting lookup cache");
            let (cache, writer) = KindWriter::new(&api_version, &kind);
            let task = tokio::spawn(run(self.inner.client.clone(), writer));
            next.push(Arc::new(Entry {
                cache,
                _task: Some(AbortOnDrop(task.abort_handle())),
            }));
        }
        for gone in current
            .iter()
            .filter(|e| !next.iter().any(|n| Arc::ptr_eq(n, e)))
        {
            tracing::info!(kind = %gone.cache.kind, api_version = %gone.cache.api_version,
                "stopping lookup cache: no loaded policy reads it");
        }
        self.inner.caches.store(Arc::new(next));
    }

    /// The (apiVersion, kind) of every running cache.
    pub fn watched(&self) -> Vec<(String, String)> {
        self.inner
            .caches
            .load()
            .iter()
            .map(|e| (e.cache.api_version.clone(), e.cache.kind.clone()))
            .collect()
    }

    pub fn ready(&self) -> Readiness {
        let kinds = self.stats();
        // Ready once every cache has settled: synced, or answered with an
        // error (RBAC, unreachable API server). An unready gate behind a
        // fail-closed webhook denies everything it matches; a serving gate
        // whose lookup fails denies only what needs that lookup, through the
        // policy's own failurePolicy. /readyz still names each unsynced kind.
        Readiness {
            ready: kinds.iter().all(|k| k.usable || k.last_error.is_some()),
            kinds,
        }
    }

    /// Per-kind numbers for metrics: last sync age, objects, errors.
    pub fn stats(&self) -> Vec<KindStats> {
        self.inner
            .caches
            .load()
            .iter()
            .map(|e| e.cache.stats())
            .collect()
    }

    /// Waits until every cache is ready (for one-shot commands such as
    /// `audit --cluster`); on timeout returns the readiness that was missing.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), Readiness> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let readiness = self.ready();
            if readiness.ready {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(readiness);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn find(&self, api_version: &str, kind: &str) -> Option<Arc<KindCache>> {
        self.inner
            .caches
            .load()
            .iter()
            .find(|e| e.cache.is(api_version, kind))
            .map(|e| e.cache.clone())
    }

    /// Registers a cache without a watch task, for tests that feed events.
    #[cfg(test)]
    fn attach(&self, api_version: &str, kind: &str) -> KindWriter {
        let (cache, writer) = KindWriter::new(api_version, kind);
        let mut next: Vec<Arc<Entry>> = self.inner.caches.load().iter().cloned().collect();
        next.push(Arc::new(Entry { cache, _task: None }));
        self.inner.caches.store(Arc::new(next));
        writer
    }
}

/// Namespaces count once even when a policy also looks them up by kind.
fn wanted(needs: &ClusterNeeds) -> Vec<(String, String)> {
    let mut kinds = needs.kinds.clone();
    if needs.namespaces {
        kinds.push(("v1".to_string(), "Namespace".to_string()));
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

impl ParamSource for LiveCluster {
    fn param_scope(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<ParamScope>, LookupError> {
        match self.find(api_version, kind) {
            Some(cache) => cache.param_scope(),
            None => Err(not_watched(api_version, kind)),
        }
    }
}

fn not_watched(api_version: &str, kind: &str) -> LookupError {
    LookupError::Unavailable(format!(
        "lookup of {kind} ({api_version}) is unavailable: it is not watched (caches follow the loaded policies; a reload may still be starting it)"
    ))
}

impl ClusterState for LiveCluster {
    fn authorizer(&self) -> Result<Arc<dyn crate::policy::authz::Authorizer>, String> {
        match &self.inner.reviewer {
            Some(r) => Ok(r.clone()),
            None => Err("the live cluster state was made outside an async runtime".to_string()),
        }
    }

    fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, LookupError> {
        let Some(cache) = self.find("v1", "Namespace") else {
            return Err(LookupError::Unavailable(format!(
                "the labels of namespace '{name}' are unavailable: Namespaces are not watched (no loaded policy uses namespaceSelector or namespaceObject)"
            )));
        };
        let found = cache.get(name).map_err(|_| {
            LookupError::Unavailable(format!(
                "the labels of namespace '{name}' are unavailable: {}",
                cache.reason()
            ))
        })?;
        Ok(found.map(|o| NamespaceInfo {
            labels: o.labels().clone(),
            object: o.value().clone(),
        }))
    }

    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Value, LookupError> {
        match self.find(api_version, kind) {
            Some(cache) => cache.list(namespace),
            None => Err(not_watched(api_version, kind)),
        }
    }
}

/// One cache's life: resolve the kind, then list and watch until aborted.
async fn run(client: Client, mut writer: KindWriter) {
    let (resource, scope) = resolve_until_served(&client, &mut writer).await;
    writer.set_resource(
        if resource.group.is_empty() {
            resource.plural.clone()
        } else {
            format!("{}.{}", resource.plural, resource.group)
        },
        scope,
    );
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut events =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => writer.apply(event),
            Err(e) => writer.record(WatchFailure::from_watcher(&e)),
        }
    }
    // DefaultBackoff never gives up, so the stream only ends if kube-runtime changes that.
    writer.record(WatchFailure {
        message: "the watch stream ended; lookups serve the last state".to_string(),
        forbidden: false,
        not_served: false,
    });
}

/// Longest wait between discovery attempts for a kind that is not served.
const NOT_SERVED_RECHECK: Duration = Duration::from_secs(10);

/// Discovery, retried with the watcher's backoff: a CRD installed after the
/// gate starts is picked up without a restart.
async fn resolve_until_served(
    client: &Client,
    writer: &mut KindWriter,
) -> (ApiResource, crate::policy::ParamScope) {
    let (api_version, kind) = (
        writer.cache().api_version.clone(),
        writer.cache().kind.clone(),
    );
    let mut backoff = DefaultBackoff::default();
    loop {
        match resolve(client, &api_version, &kind).await {
            Ok(resource) => return resource,
            Err(failure) if failure.not_served => {
                writer.not_served(failure);
                // Poll for the CRD, never more often than every 10 s (and
                // never in a tight loop against kube-apiserver).
                let wait = backoff
                    .next()
                    .unwrap_or(Duration::from_secs(10))
                    .min(NOT_SERVED_RECHECK);
                tokio::time::sleep(wait).await;
            }
            Err(failure) => {
                writer.record(failure);
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn resolve(
    client: &Client,
    api_version: &str,
    kind: &str,
) -> Result<(ApiResource, crate::policy::ParamScope), WatchFailure> {
    let gvk = api_version
        .parse::<kube::core::GroupVersion>()
        .map_err(|e| WatchFailure {
            message: e.to_string(),
            forbidden: false,
            not_served: true,
        })?
        .with_kind(kind);
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, capabilities)) => Ok((
            resource,
            match capabilities.scope {
                kube::discovery::Scope::Namespaced => crate::policy::ParamScope::Namespaced,
                kube::discovery::Scope::Cluster => crate::policy::ParamScope::Cluster,
            },
        )),
        // A real kube-apiserver answers discovery of a group version it does
        // not serve with a plain-text "404 page not found", not a Status:
        // kube-core's `is_not_found` looks only at the reason, so check the
        // code as well.
        Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 404 => {
            Err(WatchFailure {
                message: format!(
                    "the API server does not serve {api_version} (is its CRD installed?): {}",
                    describe_status(&status)
                ),
                forbidden: false,
                not_served: true,
            })
        }
        Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingKind(_))) => {
            Err(WatchFailure {
                message: format!("the API server serves {api_version} but no kind {kind} in it"),
                forbidden: false,
                not_served: true,
            })
        }
        Err(kube::Error::Api(status)) => Err(WatchFailure {
            message: format!("discovery of {api_version}: {}", describe_status(&status)),
            forbidden: status.is_forbidden(),
            not_served: false,
        }),
        Err(e) => Err(WatchFailure {
            message: format!("discovery of {api_version}: {e}"),
            forbidden: false,
            not_served: false,
        }),
    }
}
