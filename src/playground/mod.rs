//! `safety-gate playground`: a local web page on the same engine as `serve`.
//!
//! Data flows one way: HTTP ([`api`], [`assets`]) → the PolicyTest case model
//! (`cli::policytest`) → the policy engine. A request typed into the page is
//! turned into a PolicyTest case, the case into the AdmissionRequest `safety-gate
//! test` builds, and that request is decided by [`PolicySet::evaluate`] and
//! encoded by [`encode_response`](crate::admission::encode_response), as `serve`
//! decides and encodes it; the page shows that answer, never one of its own.

pub mod api;
pub mod assets;
pub mod examples;
pub mod guard;

use crate::cli::policytest::spec::InlineSource;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post};
use std::sync::Arc;

/// What the routes share: the policy library the page offers.
#[derive(Debug, Clone)]
pub struct Playground {
    /// The policies `GET /api/library` offers (file name, text), in name order.
    pub library: Arc<Vec<InlineSource>>,
    /// The `Host` values accepted ([`guard::loopback_hosts`]); `None` accepts
    /// any (`--allow-remote`).
    pub allowed_hosts: Option<Arc<Vec<String>>>,
    /// How long one evaluation (or export) may run before it is stopped and
    /// answered `503 {"error"}` (`--evaluation-timeout`, default
    /// [`DEFAULT_EVALUATION_TIMEOUT`]).
    pub evaluation_timeout: std::time::Duration,
}

/// The default `--evaluation-timeout`: 10 s, far above what the shipped
/// policies take (about 12 ms per evaluation, README) and short enough that a
/// runaway policy typed into the page does not hold a core for long.
pub const DEFAULT_EVALUATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The page and its JSON API (see the README's "Playground" section):
/// `GET /`, `GET /assets/*`, `GET /api/library`, `GET /api/examples`,
/// `POST /api/evaluate`, `POST /api/test/export`, `POST /api/test/import`.
/// Every request passes [`guard::check_host`]; another method is `405`, a body
/// over [`guard::MAX_BODY_BYTES`] `413`, all as JSON.
pub fn router(state: Playground) -> Router {
    fn only_get(route: MethodRouter<Playground>) -> MethodRouter<Playground> {
        route.fallback(|| async { guard::method_not_allowed("GET, HEAD") })
    }
    fn only_post(route: MethodRouter<Playground>) -> MethodRouter<Playground> {
        route.fallback(|| async { guard::method_not_allowed("POST") })
    }
    Router::new()
        .route("/", only_get(get(assets::index)))
        .route("/assets/{name}", only_get(get(assets::asset)))
        .route("/api/library", only_get(get(api::library)))
        .route("/api/examples", only_get(get(api::examples)))
        .route("/api/evaluate", only_post(post(api::evaluate)))
        .route("/api/test/export", only_post(post(api::export_test)))
        .route("/api/test/import", only_post(post(api::import_test)))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(guard::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check_host,
        ))
        .with_state(state)
}

/// The shipped policies (`policies/*.yaml`), built into the binary so that the
/// page offers them from any working directory.
pub fn shipped_library() -> Vec<InlineSource> {
    [
        (
            "audit-trail.yaml",
            include_str!("../../policies/audit-trail.yaml"),
        ),
        (
            "immutable-fields.yaml",
            include_str!("../../policies/immutable-fields.yaml"),
        ),
        (
            "kubefed-host-conflict.yaml",
            include_str!("../../policies/kubefed-host-conflict.yaml"),
        ),
        (
            "protect-namespaces.yaml",
            include_str!("../../policies/protect-namespaces.yaml"),
        ),
        (
            "protect-rbac-defaults.yaml",
            include_str!("../../policies/protect-rbac-defaults.yaml"),
        ),
        (
            "selector-change-warning.yaml",
            include_str!("../../policies/selector-change-warning.yaml"),
        ),
    ]
    .into_iter()
    .map(|(name, text)| InlineSource {
        name: name.to_string(),
        text: text.to_string(),
    })
    .collect()
}
