//! Cluster state that policies read, behind the engine's port
//! ([`crate::policy::ClusterState`]): a snapshot of YAML/JSON files (CI, audit,
//! tests) and, in the cluster, watch caches.

pub mod live;
mod reader;
pub mod sar;
mod snapshot;

pub use live::{ClientError, KindStats, LiveCluster, Readiness, client_from};
pub use reader::ClusterReader;
pub use snapshot::{Snapshot, SnapshotError};
