//! The cluster objects that follow from a policy set, rendered so that
//! `deploy/` can commit them and a test can prove they are current:
//! the Validating- and MutatingWebhookConfiguration (what kube-apiserver
//! sends to the gate), the ClusterRole (what the gate may read) and the
//! policies ConfigMap (what the gate evaluates).
//!
//! The webhook configurations are where a gate can take a cluster down
//! (`landscape.md` §4), so the choices are made here once, in code, and the
//! renderer refuses a policy set that would break them (see [`routing`]).
//!
//! Data flows one way, each step in its own module:
//! - rules: [`rules`] (webhook rules as sets) and [`routing`] (which
//!   webhooks exist and what each routes), with [`target`] (where
//!   kube-apiserver reaches the gate);
//! - objects, as `k8s-openapi` types: [`objects`] (webhook configurations),
//!   [`rbac`] (the one ClusterRole, also behind `check --print-rbac`) and
//!   [`configmap`] (the policy files);
//! - renderers: [`yaml`] (field order for reviewers) and [`render`] (the
//!   files with their headers).
//!
//! [`native`] and [`native_static`] render the kube-apiserver-native
//! alternative (`manifests --native`).

pub mod configmap;
mod error;
pub mod native;
pub mod native_static;
pub mod objects;
pub mod rbac;
pub mod render;
pub mod routing;
pub mod rules;
pub mod target;
pub mod yaml;

pub use configmap::{policies_config_map, policy_files};
pub use error::RenderError;
pub use render::{
    CLUSTER_ROLE_FILE, POLICIES_FILE, RenderedFile, WEBHOOKS_FILE, render_all, render_cluster_role,
    render_policies_configmap, render_webhooks,
};
pub use routing::{
    FAIL_CLOSED_FORBIDDEN_RESOURCES, MAX_ADDED_LATENCY_SECONDS, MUTATE_TIMEOUT_SECONDS,
    VALIDATE_FAIL_CLOSED_TIMEOUT_SECONDS, VALIDATE_FAIL_OPEN_TIMEOUT_SECONDS, Webhook, webhooks,
};
pub use target::{
    DEFAULT_NAMESPACE, DEFAULT_PORT, DEFAULT_SERVICE, EXCLUDED_NAMESPACES, Target, check_url,
};

/// Name of both webhook configurations, the ClusterRole and its binding.
pub const OBJECT_NAME: &str = "safety-gate";
/// The ConfigMap the Deployment mounts as `--policies`.
pub const POLICIES_CONFIGMAP: &str = "safety-gate-policies";
