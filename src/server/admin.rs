//! The operational endpoints: `/healthz`, `/readyz` (in full on the admin
//! port, as `{"ready": bool}` on the webhook port) and `/metrics`.

use super::error::json_response;
use super::router::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

/// `/readyz` without detail: the same status code as the admin port's.
pub(super) async fn readyz_brief(State(state): State<Arc<AppState>>) -> Response {
    let full = readyz(State(state)).await;
    let status = full.status();
    let body =
        serde_json::to_vec(&json!({ "ready": status == StatusCode::OK })).unwrap_or_default();
    json_response(status, body)
}

pub(super) async fn healthz() -> Response {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Readiness with the detail an operator needs: which policies serve, whether
/// the last reload failed and why, the certificate, the cluster state.
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let serving = state.policies.current();
    let failure = state.policies.last_failure();
    let tls = state
        .tls
        .lock()
        .map(|g| g.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
    let draining = state.draining.load(Ordering::Relaxed);
    let cluster = state.live.as_ref().map(|live| live.ready());
    let synced = cluster.as_ref().is_none_or(|r| r.ready);
    let ready = !draining && tls.loaded_at.is_some() && synced;
    let body = json!({
        "ready": ready,
        "draining": draining,
        "mode": state.mode.as_str(),
        "policies": {
            "dir": state.policies.dir().display().to_string(),
            "generation": serving.generation,
            "count": serving.set.len(),
            "names": serving.set.names(),
            "loadedAt": unix(serving.loaded_at),
            "lastReloadError": failure.map(|f| json!({
                "at": unix(f.at),
                "errors": f.errors,
                "note": "the previous policy set is still serving",
            })),
        },
        "tls": {
            "source": tls.source,
            "subject": tls.subject,
            "notAfter": tls.not_after_text,
            "notAfterUnix": tls.not_after,
            "loadedAt": tls.loaded_at.map(unix),
            "lastReloadError": tls.last_error.map(|(at, e)| json!({ "at": unix(at), "error": e })),
        },
        "cluster": {
            "source": state.cluster_description,
            "synced": synced,
            "detail": cluster.as_ref().map(|r| r.to_string()),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    json_response(status, bytes)
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    if let Some(live) = &state.live {
        for k in live.stats() {
            let labels = super::metrics::KindLabels {
                kind: format!("{}.{}", k.kind, k.api_version),
            };
            state
                .metrics
                .cluster_sync_age
                .get_or_create(&labels)
                .set(k.last_sync_age_seconds.unwrap_or(-1.0));
            state
                .metrics
                .cluster_objects
                .get_or_create(&labels)
                .set(k.objects as i64);
            state
                .metrics
                .cluster_watch_errors
                .get_or_create(&labels)
                .set(k.watch_errors as i64);
            state
                .metrics
                .cluster_synced
                .get_or_create(&labels)
                .set(i64::from(k.usable));
        }
    }
    state.metrics.observe_runtime();
    let text = super::metrics::encode(&state.registry);
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
