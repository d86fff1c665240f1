//! HTTP routes: the two admission endpoints, health, readiness and metrics.
//!
//! Transport only: read the body under a size limit and a deadline, hand the
//! bytes to [`crate::admission::review`] (on the async worker when the body is
//! small and the evaluation short, on the blocking pool otherwise), and answer
//! with its bytes. Every refusal is a JSON `{"error": "..."}` body.

use super::admin::{healthz, metrics, readyz, readyz_brief};
use super::body::{answer_budget, read_body, timeout_param};
use super::error::{WebhookError, json_response, not_found};
use super::metrics::{
    CancelLabels, EndpointLabels, Metrics, PolicyLabels, RejectionLabels, RequestLabels,
};
use super::reload::{PolicyStore, ServingPolicies};
use super::tls::LoadedCert;
use crate::admission::{self, ReviewError, ReviewOutcome};
use crate::policy::ClusterState;
use crate::policy::Mode;
use crate::policy::Stage;
use crate::policy::cancel::{CancelReason, CancelToken};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;
use tracing::Instrument;

/// kube-apiserver's default `timeoutSeconds` in admissionregistration/v1; used
/// when a request carries no `?timeout=`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies up to this size are decoded on the async worker (as a webhook
/// without policies would), so that a request no policy matches never
/// reaches the blocking pool; ~16 instructions per byte, a fraction of a
/// millisecond at the limit.
const INLINE_DECODE_MAX_BYTES: usize = 64 * 1024;
/// How long a matched request's evaluation may run on the async worker before
/// it is stopped and started again on the blocking pool. The shipped policies
/// take ~0.1 ms on a 22 KB Deployment UPDATE, so they finish inline and save
/// the pool's two thread hand-offs; a slow policy holds the worker (and the
/// other connections it serves) for at most this long plus one step between
/// cancellation check points.
const INLINE_EVALUATION_SLICE: Duration = Duration::from_millis(1);
/// Time kept in hand to encode and send the answer; the engine itself stops a
/// little earlier so that it, not the fallback, usually writes the answer.
const ENGINE_HEADROOM: Duration = Duration::from_millis(20);

/// Limits applied to every admission request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Request-body bytes all webhook requests together may hold at once
    /// (see [`AppState::body_budget`]); past it, HTTP 429.
    pub max_inflight_body_bytes: usize,
    /// How long a client may take to send its body.
    pub read_timeout: Duration,
    /// Deadline for requests without `?timeout=`.
    pub default_timeout: Duration,
}

/// What `/readyz` reports about the serving certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsStatus {
    pub source: String,
    pub subject: String,
    pub not_after: i64,
    pub not_after_text: String,
    pub loaded_at: Option<SystemTime>,
    pub last_error: Option<(SystemTime, String)>,
}

impl TlsStatus {
    pub fn loaded(&mut self, cert: &LoadedCert) {
        self.subject = cert.subject.clone();
        self.not_after = cert.not_after;
        self.not_after_text = cert.not_after_text.clone();
        self.loaded_at = Some(SystemTime::now());
        self.last_error = None;
    }
}

/// Shared by every request.
pub struct AppState {
    pub policies: Arc<PolicyStore>,
    pub cluster: Arc<dyn ClusterState>,
    pub live: Option<crate::cluster::LiveCluster>,
    pub cluster_description: String,
    pub mode: Mode,
    pub limits: Limits,
    pub semaphore: Arc<Semaphore>,
    /// One permit per request-body byte held by a webhook request, from its
    /// first byte until it is answered: bodies are read before the concurrency
    /// limit, so this is what bounds memory under many or slow senders. The
    /// admin port never touches it.
    pub body_budget: Arc<Semaphore>,
    pub metrics: Metrics,
    pub registry: Registry,
    pub tls: Mutex<TlsStatus>,
    pub draining: AtomicBool,
    /// Set when the drain timeout ran out and the remaining connections are
    /// being closed: their evaluations are then cancelled for `shutdown`.
    pub aborting: AtomicBool,
    /// Requests to /validate and /mutate (any outcome), logged at shutdown as
    /// `served=N` so load tests can compute CPU per request.
    pub served: AtomicU64,
}

/// The webhook port's routes. With `operational` (no admin port configured),
/// `/readyz` with its detail and `/metrics` are here too; otherwise only
/// `/healthz` and a detail-free `/readyz` (`{"ready": bool}`), so policy
/// names, file paths and certificate data stay off the port every caller of
/// the Service can reach.
pub fn webhook_router(state: Arc<AppState>, operational: bool) -> Router {
    let routes = Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate));
    let routes = if operational {
        routes.merge(admin_router_inner())
    } else {
        routes
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz_brief))
    };
    routes.fallback(not_found).with_state(state)
}

/// The plain-HTTP admin port's routes: health, readiness, metrics.
pub fn admin_router(state: Arc<AppState>) -> Router {
    admin_router_inner().fallback(not_found).with_state(state)
}

fn admin_router_inner() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn validate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    admit(state, Stage::Validate, request).await
}

async fn mutate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    admit(state, Stage::Mutate, request).await
}

fn endpoint_label(stage: Stage) -> &'static str {
    match stage {
        Stage::Validate => "validate",
        Stage::Mutate => "mutate",
    }
}

/// Counts a request as in flight until it is answered or dropped, so a
/// client that goes away is visible as the gauge falling back.
struct InFlight(Metrics);

impl InFlight {
    fn new(metrics: &Metrics) -> InFlight {
        metrics.in_flight.inc();
        InFlight(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

async fn admit(state: Arc<AppState>, endpoint: Stage, request: Request) -> Response {
    let started = Instant::now();
    let label = endpoint_label(endpoint);
    let _in_flight = InFlight::new(&state.metrics);
    state.served.fetch_add(1, Ordering::Relaxed);
    let timeout = timeout_param(request.uri().query()).unwrap_or(state.limits.default_timeout);
    let answer_by = started + answer_budget(timeout);
    let span = tracing::info_span!("admission", endpoint = label);

    let (parts, body) = request.into_parts();
    // Held until the answer is sent (or the request is dropped).
    let (body, _reserved) = match read_body(
        body,
        &parts.headers,
        &state.limits,
        &state.body_budget,
        answer_by,
    )
    .instrument(span.clone())
    .await
    {
        Ok(read) => read,
        Err(e) => return reject(&state, label, started, e),
    };

    let serving = state.policies.current();
    let result = evaluate(&state, &serving, endpoint, body, answer_by, span.clone()).await;
    let _entered = span.enter();
    match result {
        Ok(Evaluated { outcome, timed_out }) => {
            let elapsed = started.elapsed();
            record_decision(
                &state,
                label,
                &outcome,
                serving.generation,
                elapsed,
                timed_out,
            );
            json_response(StatusCode::OK, outcome.response)
        }
        Err(EvalError::Review(e)) => reject(&state, label, started, WebhookError::BadRequest(e)),
        Err(EvalError::Internal(message)) => {
            tracing::error!(error = %message, "evaluation failed");
            state
                .metrics
                .requests
                .get_or_create(&RequestLabels {
                    endpoint: label,
                    verdict: "error",
                })
                .inc();
            WebhookError::Internal.into_response()
        }
    }
}

struct Evaluated {
    outcome: ReviewOutcome,
    /// Answered by failurePolicy because the deadline came first.
    timed_out: bool,
}

enum EvalError {
    Review(ReviewError),
    Internal(String),
}

/// Cancels the request's evaluation when the request's future is dropped
/// before it finished: hyper drops it when the client closes the connection
/// (HTTP/1.1) or resets the stream (HTTP/2), and the server drops it when the
/// drain timeout runs out. After a normal answer the token is spent and
/// cancelling it changes nothing.
struct CancelOnDrop<'a> {
    token: CancelToken,
    state: &'a AppState,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        let reason = if self.state.aborting.load(Ordering::Relaxed) {
            CancelReason::Shutdown
        } else {
            CancelReason::ClientGone
        };
        self.token.cancel(reason);
    }
}

/// Runs the review on the blocking pool under the concurrency limit. If the
/// deadline comes first (waiting for a permit counts), answers with the
/// failurePolicy outcome instead. The evaluation carries a [`CancelToken`]
/// that trips at its own deadline (slightly earlier than the answer's), when
/// the client goes away or when shutdown gives up on it; it then stops at its
/// next check point, releases its permit and memory, and is counted in
/// `admission_evaluations_cancelled`.
async fn evaluate(
    state: &Arc<AppState>,
    serving: &Arc<ServingPolicies>,
    endpoint: Stage,
    body: Bytes,
    answer_by: Instant,
    span: tracing::Span,
) -> Result<Evaluated, EvalError> {
    let engine_deadline = answer_by
        .checked_sub(ENGINE_HEADROOM)
        .unwrap_or(answer_by)
        .max(Instant::now());
    let token = CancelToken::new(Some(engine_deadline));
    let _cancel_on_drop = CancelOnDrop {
        token: token.clone(),
        state,
    };
    let work = {
        let state = Arc::clone(state);
        let serving = Arc::clone(serving);
        let body = body.clone();
        let span = span.clone();
        let token = token.clone();
        async move {
            let permit = Arc::clone(&state.semaphore)
                .acquire_owned()
                .await
                .map_err(|e| EvalError::Internal(e.to_string()))?;
            // A body of modest size is decoded here; a request no policy
            // matches is then answered here too (nothing to evaluate), and a
            // matched one is evaluated here within a time slice, which saves
            // the two thread hand-offs of the blocking pool.
            let decoded = if body.len() <= INLINE_DECODE_MAX_BYTES {
                let _entered = span.enter();
                let request = {
                    let _current = token.enter();
                    admission::decode_review(&body).map_err(EvalError::Review)?
                };
                if serving.set.matches_nothing(&request, endpoint) {
                    let _current = token.enter();
                    return admission::review_request(
                        &serving.set,
                        state.cluster.as_ref(),
                        state.mode,
                        endpoint,
                        &request,
                        Some(engine_deadline),
                    )
                    .map_err(EvalError::Review);
                }
                if let Some(answered) = evaluate_inline(
                    &state,
                    &serving,
                    endpoint,
                    &request,
                    engine_deadline,
                    &token,
                ) {
                    return answered;
                }
                Some(request)
            } else {
                None
            };
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let _entered = span.enter();
                let _current = token.enter();
                let result = match &decoded {
                    Some(request) => admission::review_request(
                        &serving.set,
                        state.cluster.as_ref(),
                        state.mode,
                        endpoint,
                        request,
                        Some(engine_deadline),
                    ),
                    None => admission::review(
                        &serving.set,
                        state.cluster.as_ref(),
                        state.mode,
                        endpoint,
                        &body,
                        Some(engine_deadline),
                    ),
                };
                if token.stopped_evaluation()
                    && let Some(reason) = token.reason()
                {
                    state
                        .metrics
                        .evaluations_cancelled
                        .get_or_create(&CancelLabels {
                            endpoint: endpoint_label(endpoint),
                            reason: reason.as_str(),
                        })
                        .inc();
                    tracing::info!(reason = reason.as_str(), "evaluation cancelled");
                }
                result
            })
            .await
            .map_err(|e| EvalError::Internal(format!("the evaluation task failed: {e}")))?
            .map_err(EvalError::Review)
        }
    };
    match tokio::time::timeout_at(answer_by.into(), work).await {
        // An evaluation its own deadline stopped was answered by failurePolicy
        // for the deadline too, just without the fallback.
        Ok(result) => result.map(|outcome| Evaluated {
            outcome,
            timed_out: token.stopped_evaluation() && token.reason() == Some(CancelReason::Deadline),
        }),
        Err(_elapsed) => {
            token.cancel(CancelReason::Deadline);
            let serving = Arc::clone(serving);
            let mode = state.mode;
            let outcome = tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                admission::deadline_exceeded_response(&body, &serving.set, mode, endpoint)
            })
            .await
            .map_err(|e| EvalError::Internal(format!("the fallback task failed: {e}")))?
            .map_err(EvalError::Review)?;
            Ok(Evaluated {
                outcome,
                timed_out: true,
            })
        }
    }
}

/// Evaluates a decoded request on the async worker under a token of its own
/// that trips [`INLINE_EVALUATION_SLICE`] from now, or before the evaluation
/// would wait for kube-apiserver (a SubjectAccessReview not in the cache, see
/// [`crate::policy::cancel::before_blocking`]). `None` when that token
/// stopped the evaluation, or when the request's own `token` tripped meanwhile
/// (deadline passed): the caller then evaluates from the start on the blocking
/// pool under `token`, so a slow policy is cancelled, counted and answered
/// exactly as if it had gone there first. Evaluation only reads the request,
/// the policies and cluster state, so a discarded attempt leaves nothing
/// behind. A panic is the same internal error as on the blocking pool.
fn evaluate_inline(
    state: &AppState,
    serving: &ServingPolicies,
    endpoint: Stage,
    request: &crate::policy::Request,
    engine_deadline: Instant,
    token: &CancelToken,
) -> Option<Result<ReviewOutcome, EvalError>> {
    let slice = CancelToken::inline_slice(Instant::now() + INLINE_EVALUATION_SLICE);
    let result = {
        let _current = slice.enter();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            admission::review_request(
                &serving.set,
                state.cluster.as_ref(),
                state.mode,
                endpoint,
                request,
                Some(engine_deadline),
            )
        }))
    };
    if slice.stopped_evaluation() || token.reason().is_some() {
        return None;
    }
    Some(match result {
        Ok(reviewed) => reviewed.map_err(EvalError::Review),
        Err(_panic) => Err(EvalError::Internal(
            "the evaluation task failed: it panicked".to_string(),
        )),
    })
}

fn record_decision(
    state: &AppState,
    label: &'static str,
    outcome: &ReviewOutcome,
    generation: u64,
    elapsed: Duration,
    timed_out: bool,
) {
    let s = &outcome.summary;
    let m = &state.metrics;
    m.requests
        .get_or_create(&RequestLabels {
            endpoint: label,
            verdict: s.verdict.as_str(),
        })
        .inc();
    for p in &s.policies {
        m.policy_evaluations
            .get_or_create(&PolicyLabels {
                policy: p.policy.clone(),
                outcome: p.outcome.as_str(),
            })
            .inc();
    }
    if timed_out {
        m.deadline_exceeded
            .get_or_create(&EndpointLabels { endpoint: label })
            .inc();
    }
    m.duration
        .get_or_create(&EndpointLabels { endpoint: label })
        .observe(elapsed.as_secs_f64());
    let policies = s
        .policies
        .iter()
        .map(|p| format!("{}={}", p.policy, p.outcome.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        target: "safety_gate::decision",
        uid = %s.uid,
        kind = %s.kind,
        namespace = %s.namespace,
        name = %s.name,
        operation = %s.operation,
        user = %s.user,
        allowed = s.allowed,
        verdict = s.verdict.as_str(),
        policies = %policies,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        deadline_exceeded = timed_out,
        generation,
        "decision"
    );
}

fn reject(state: &AppState, label: &'static str, started: Instant, e: WebhookError) -> Response {
    let status = e.status();
    let reason = e.reason();
    state
        .metrics
        .rejections
        .get_or_create(&RejectionLabels {
            endpoint: label,
            reason,
        })
        .inc();
    tracing::warn!(
        endpoint = label,
        status = status.as_u16(),
        reason,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        error = %e,
        "request refused"
    );
    e.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use serde_json::Value;
    use serde_json::json;

    fn state_without_permits(dir: &std::path::Path) -> Arc<AppState> {
        let (metrics, registry) = Metrics::new();
        Arc::new(AppState {
            policies: Arc::new(PolicyStore::load(dir).expect("policies load")),
            cluster: Arc::new(crate::policy::NoCluster),
            live: None,
            cluster_description: String::new(),
            mode: Mode::Enforce,
            limits: Limits {
                max_body_bytes: 1 << 20,
                max_inflight_body_bytes: 4 << 20,
                read_timeout: Duration::from_secs(5),
                default_timeout: DEFAULT_TIMEOUT,
            },
            // No permits: evaluation can never start, as under a saturated limit.
            semaphore: Arc::new(Semaphore::new(0)),
            body_budget: Arc::new(Semaphore::new(4 << 20)),
            metrics,
            registry,
            tls: Mutex::new(TlsStatus::default()),
            draining: AtomicBool::new(false),
            served: AtomicU64::new(0),
            aborting: AtomicBool::new(false),
        })
    }

    fn configmap_review(uid: &str) -> String {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "name": "c", "namespace": "team-a", "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team-a"}},
                "oldObject": null
            }
        })
        .to_string()
    }

    async fn answer_within_deadline(failure_policy: &str) -> (Value, Duration) {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = format!(
            "apiVersion: safety-gate.dev/v1alpha1\nkind: GatePolicy\nmetadata:\n  name: cm-check\nspec:\n  failurePolicy: {failure_policy}\n  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [\"*\"]\n      operations: [\"CREATE\"]\n      resources: [\"configmaps\"]\n  validations:\n  - expression: \"object.metadata.name != 'x'\"\n"
        );
        std::fs::write(dir.path().join("p.yaml"), policy).expect("write");
        let state = state_without_permits(dir.path());
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/validate?timeout=1s")
            .body(Body::from(configmap_review("late")))
            .expect("request");
        let started = Instant::now();
        let response = admit(Arc::clone(&state), Stage::Validate, request).await;
        let elapsed = started.elapsed();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let metrics = super::super::metrics::encode(&state.registry);
        assert!(
            metrics
                .contains("safety_gate_admission_deadline_exceeded_total{endpoint=\"validate\"} 1"),
            "{metrics}"
        );
        (serde_json::from_slice(&bytes).expect("json"), elapsed)
    }

    #[tokio::test]
    async fn past_the_deadline_failure_policy_fail_denies_in_time() {
        let (body, elapsed) = answer_within_deadline("Fail").await;
        assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
        assert!(
            elapsed < Duration::from_millis(950),
            "answered before the caller's 1s: {elapsed:?}"
        );
        assert_eq!(body["response"]["uid"], "late");
        assert_eq!(body["response"]["allowed"], false, "{body}");
    }

    #[tokio::test]
    async fn past_the_deadline_failure_policy_ignore_allows() {
        let (body, elapsed) = answer_within_deadline("Ignore").await;
        assert!(elapsed < Duration::from_millis(950), "{elapsed:?}");
        assert_eq!(body["response"]["allowed"], true, "{body}");
    }
}
