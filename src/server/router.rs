//! HTTP routes: the two admission endpoints, health, readiness and metrics.
//!
//! Transport only: read the body under a size limit and a deadline, hand the
//! bytes to [`crate::admission::review`] on the blocking pool, and answer
//! with its bytes. Every refusal is a JSON `{"error": "..."}` body.

use super::metrics::{
    CancelLabels, EndpointLabels, Metrics, PolicyLabels, RejectionLabels, RequestLabels,
};
use super::reload::{PolicyStore, ServingPolicies};
use super::tls::LoadedCert;
use crate::admission::{self, Endpoint, ReviewError, ReviewOutcome};
use crate::cluster::ClusterState;
use crate::policy::Mode;
use crate::policy::cancel::{CancelReason, CancelToken};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// kube-apiserver's default `timeoutSeconds` in admissionregistration/v1; used
/// when a request carries no `?timeout=`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `timeoutSeconds` Kubernetes accepts.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies up to this size are decoded on the async worker (as a webhook
/// without policies would), so that a request no policy matches never
/// reaches the blocking pool; ~16 instructions per byte, a fraction of a
/// millisecond at the limit.
const INLINE_DECODE_MAX_BYTES: usize = 64 * 1024;
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

/// `/readyz` without detail: the same status code as the admin port's.
async fn readyz_brief(State(state): State<Arc<AppState>>) -> Response {
    let full = readyz(State(state)).await;
    let status = full.status();
    let body =
        serde_json::to_vec(&json!({ "ready": status == StatusCode::OK })).unwrap_or_default();
    json_response(status, body)
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
    admit(state, Endpoint::Validate, request).await
}

async fn mutate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    admit(state, Endpoint::Mutate, request).await
}

fn endpoint_label(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Validate => "validate",
        Endpoint::Mutate => "mutate",
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

async fn admit(state: Arc<AppState>, endpoint: Endpoint, request: Request) -> Response {
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
        Err(EvalError::Review(e)) => reject(&state, label, started, BodyError::BadRequest(e)),
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
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while evaluating the request; the webhook's failurePolicy applies",
            )
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
    endpoint: Endpoint,
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
            // matches is then answered here too (nothing to evaluate), which
            // saves the two thread hand-offs of the blocking pool.
            let decoded = if body.len() <= INLINE_DECODE_MAX_BYTES {
                let _entered = span.enter();
                let _current = token.enter();
                let request = admission::decode_review(&body).map_err(EvalError::Review)?;
                if serving
                    .set
                    .matches_nothing(&request, admission::stage_of(endpoint))
                {
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

/// Why a request was refused before or instead of evaluation.
#[derive(Debug)]
enum BodyError {
    TooLarge {
        limit: usize,
    },
    /// The global budget for request bytes in flight has no room for this body.
    OverBudget {
        budget: usize,
    },
    Timeout,
    Read(String),
    BadRequest(ReviewError),
}

fn reject(state: &AppState, label: &'static str, started: Instant, e: BodyError) -> Response {
    let (status, reason, message) = match &e {
        BodyError::TooLarge { limit } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body is larger than the limit of {limit} bytes (--max-body-bytes)"
            ),
        ),
        BodyError::OverBudget { budget } => (
            StatusCode::TOO_MANY_REQUESTS,
            "over_budget",
            format!(
                "too many request bytes in flight: the bodies being read and evaluated already fill the budget of {budget} bytes (--max-inflight-body-bytes); retry shortly"
            ),
        ),
        BodyError::Timeout => (
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time".to_string(),
        ),
        BodyError::Read(detail) => (
            StatusCode::BAD_REQUEST,
            "body_error",
            format!("the request body could not be read: {detail}"),
        ),
        BodyError::BadRequest(review) => {
            (StatusCode::BAD_REQUEST, "bad_request", review.to_string())
        }
    };
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
        error = %message,
        "request refused"
    );
    let mut response = if status == StatusCode::TOO_MANY_REQUESTS {
        // kube-apiserver's client decodes a refusal's body as a metav1.Status
        // (its message then appears in the failurePolicy error) and, with
        // Retry-After, retries within the webhook's timeout.
        let mut response = status_response(status, "TooManyRequests", &message);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    } else {
        error_response(status, &message)
    };
    if matches!(
        e,
        BodyError::TooLarge { .. } | BodyError::Timeout | BodyError::OverBudget { .. }
    ) {
        // The rest of the body is not worth reading: free the connection.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Bytes of an oversized (413) or over-budget (429) body read and thrown away
/// before answering, so the client sees the answer instead of a reset while
/// it is still writing.
const DRAIN_CAP: u64 = 8 * 1024 * 1024;

/// Reserves `bytes` of the body budget without waiting: a full budget is an
/// immediate 429, never a queue that would hold yet more connections open.
fn reserve(
    budget: &Arc<Semaphore>,
    limits: &Limits,
    bytes: usize,
    held: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), BodyError> {
    if bytes == 0 {
        return Ok(());
    }
    let over = || BodyError::OverBudget {
        budget: limits.max_inflight_body_bytes,
    };
    let n = u32::try_from(bytes).map_err(|_| over())?;
    let permit = Arc::clone(budget)
        .try_acquire_many_owned(n)
        .map_err(|_| over())?;
    match held {
        Some(h) => h.merge(permit),
        None => *held = Some(permit),
    }
    Ok(())
}

/// Reads the whole body, refusing it once it is known to be too large or the
/// byte budget has no room for it, and giving up when the client is too slow.
/// Returns the body and its reservation in the budget.
async fn read_body(
    mut body: Body,
    headers: &HeaderMap,
    limits: &Limits,
    budget: &Arc<Semaphore>,
    answer_by: Instant,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), BodyError> {
    let limit = limits.max_body_bytes;
    let deadline = (Instant::now() + limits.read_timeout).min(answer_by);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit as u64
    {
        if len <= limit as u64 + DRAIN_CAP {
            drain(body, deadline, len).await;
        }
        return Err(BodyError::TooLarge { limit });
    }
    let capacity = declared.map_or(0, |len| len as usize).min(limit);
    // A declared length is reserved whole before the first byte is buffered;
    // a body without one (chunked, HTTP/2 without content-length) frame by frame.
    let mut reserved = None;
    if let Err(e) = reserve(budget, limits, capacity, &mut reserved) {
        // Read and discard what the client is still sending (no memory kept),
        // so it sees the 429 and its Retry-After rather than a reset.
        drain(body, deadline, DRAIN_CAP).await;
        return Err(e);
    }
    let mut buf: Vec<u8> = Vec::with_capacity(capacity);
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drain(body, deadline, limit as u64 + DRAIN_CAP - buf.len() as u64).await;
                return Err(BodyError::TooLarge { limit });
            }
            let beyond_reserved = (buf.len() + data.len()).saturating_sub(capacity.max(buf.len()));
            if let Err(e) = reserve(budget, limits, beyond_reserved, &mut reserved) {
                drop(reserved);
                drain(body, deadline, DRAIN_CAP).await;
                return Err(e);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok((Bytes::from(buf), reserved))
}

/// Reads and discards up to `cap` more bytes, until the deadline at most.
async fn drain(mut body: Body, deadline: Instant, cap: u64) {
    let mut seen: u64 = 0;
    while seen <= cap {
        match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    seen += data.len() as u64;
                }
            }
            _ => return,
        }
    }
}

/// `?timeout=10s` as kube-apiserver sends it (Go duration syntax: `1m30s`,
/// `500ms` are accepted too); `None` when absent or unreadable.
pub fn timeout_param(query: Option<&str>) -> Option<Duration> {
    let value = query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "timeout")
        .map(|(_, v)| v)?;
    parse_go_duration(value).map(|d| d.min(MAX_TIMEOUT))
}

/// Go duration syntax (`10s`, `1m30s`, `500ms`), as kube-apiserver writes it.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(number * seconds).ok()?;
    }
    Some(total)
}

/// When to answer, given the caller's timeout. kube-apiserver rounds the time
/// it will wait *up* to whole seconds, so keep a tenth of it (at least 250 ms,
/// at most 1 s) in hand for the network and the rounding.
pub fn answer_budget(timeout: Duration) -> Duration {
    let margin = (timeout / 10).clamp(Duration::from_millis(250), Duration::from_secs(1));
    timeout.saturating_sub(margin)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A `metav1.Status` body (what Kubernetes clients decode from a refusal),
/// with the `error` field every other refusal here carries.
fn status_response(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::to_vec(&json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status.as_u16(),
        "error": message,
    }))
    .unwrap_or_default();
    json_response(status, body)
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    json_response(status, body)
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not found: POST /validate, POST /mutate, GET /healthz, GET /readyz, GET /metrics",
    )
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Readiness with the detail an operator needs: which policies serve, whether
/// the last reload failed and why, the certificate, the cluster state.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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
        "mode": match state.mode { Mode::Enforce => "enforce", Mode::Audit => "audit" },
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

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn state_without_permits(dir: &std::path::Path) -> Arc<AppState> {
        let (metrics, registry) = Metrics::new();
        Arc::new(AppState {
            policies: Arc::new(PolicyStore::load(dir).expect("policies load")),
            cluster: Arc::new(crate::cluster::NoCluster),
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
        let response = admit(Arc::clone(&state), Endpoint::Validate, request).await;
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

    #[test]
    fn reads_kube_apiserver_timeouts() {
        assert_eq!(
            timeout_param(Some("timeout=10s")),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            timeout_param(Some("a=b&timeout=1m30s")),
            Some(MAX_TIMEOUT),
            "capped at the Kubernetes maximum"
        );
        assert_eq!(
            timeout_param(Some("timeout=1500ms")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(timeout_param(Some("timeout=ten")), None);
        assert_eq!(timeout_param(Some("timeout=")), None);
        assert_eq!(timeout_param(None), None);
    }

    #[test]
    fn answers_ahead_of_the_caller() {
        assert_eq!(
            answer_budget(Duration::from_secs(1)),
            Duration::from_millis(750)
        );
        assert_eq!(
            answer_budget(Duration::from_secs(10)),
            Duration::from_secs(9)
        );
        assert_eq!(
            answer_budget(Duration::from_secs(30)),
            Duration::from_secs(29)
        );
        assert_eq!(answer_budget(Duration::ZERO), Duration::ZERO);
    }
}
