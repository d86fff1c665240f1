//! Where `review` and `audit` read the cluster: a snapshot of files, or the
//! live cluster (read-only) through a kube client.

use crate::cluster::{ClusterReader, LiveCluster, Snapshot};
use crate::policy::ClusterNeeds;
use crate::policy::ClusterState;
use std::path::Path;
use std::time::Duration;

/// How long `--cluster` waits for the lookup caches before giving up.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// The cluster `review` and `audit` read: a snapshot of files, or the live
/// cluster through a kube client.
pub enum ClusterSource {
    Snapshot(Snapshot),
    Cluster(Connection),
}

pub struct Connection {
    // The watch tasks of `live` run on this runtime while commands evaluate
    // on the main thread.
    runtime: tokio::runtime::Runtime,
    reader: ClusterReader,
    live: LiveCluster,
}

impl ClusterSource {
    /// Connects, starts the lookup caches the policies need and waits for them.
    pub fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        needs: &ClusterNeeds,
    ) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let reader = runtime
            .block_on(ClusterReader::connect(kubeconfig, context))
            .map_err(|e| e.to_string())?;
        let live = runtime.block_on(async {
            let live = LiveCluster::new(reader.client());
            live.reconcile(needs).await;
            live
        });
        runtime
            .block_on(live.wait_until_ready(SYNC_TIMEOUT))
            .map_err(|readiness| {
                format!("the lookup caches did not sync within {SYNC_TIMEOUT:?}: {readiness}")
            })?;
        Ok(ClusterSource::Cluster(Connection {
            runtime,
            reader,
            live,
        }))
    }

    pub fn state(&self) -> &dyn ClusterState {
        match self {
            ClusterSource::Snapshot(s) => s,
            ClusterSource::Cluster(c) => &c.live,
        }
    }

    /// The live object with this identity, if any.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, String> {
        match self {
            ClusterSource::Snapshot(s) => Ok(s.get(api_version, kind, namespace, name).cloned()),
            ClusterSource::Cluster(c) => {
                let ns = (!namespace.is_empty()).then_some(namespace);
                c.runtime
                    .block_on(c.reader.get(api_version, kind, ns, name))
            }
        }
    }

    pub fn reader(&self) -> Option<(&tokio::runtime::Runtime, &ClusterReader)> {
        match self {
            ClusterSource::Snapshot(_) => None,
            ClusterSource::Cluster(c) => Some((&c.runtime, &c.reader)),
        }
    }
}
