//! Every way the webhook refuses a request, and the one place that maps a
//! refusal to its HTTP status and JSON body.

use crate::admission::ReviewError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A request the webhook answers with an error instead of an AdmissionReview.
/// Every body is JSON with an `error` field; a 429 is a `metav1.Status` too.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The body is larger than `--max-body-bytes` (413).
    #[error("the request body is larger than the limit of {limit} bytes (--max-body-bytes)")]
    TooLarge { limit: usize },
    /// The global budget for request bytes in flight has no room for this
    /// body (429, with `Retry-After`).
    #[error(
        "too many request bytes in flight: the bodies being read and evaluated already fill the budget of {budget} bytes (--max-inflight-body-bytes); retry shortly"
    )]
    OverBudget { budget: usize },
    /// The body did not arrive within the read timeout (408).
    #[error("the request body did not arrive in time")]
    Timeout,
    /// The connection failed while the body was read (400).
    #[error("the request body could not be read: {0}")]
    Read(String),
    /// The body is not an AdmissionReview the gate can answer (400).
    #[error("{0}")]
    BadRequest(ReviewError),
    /// Evaluation failed inside the gate (500): kube-apiserver then applies
    /// the webhook's failurePolicy.
    #[error("internal error while evaluating the request; the webhook's failurePolicy applies")]
    Internal,
    /// No such route (404).
    #[error("not found: POST /validate, POST /mutate, GET /healthz, GET /readyz, GET /metrics")]
    NotFound,
}

impl WebhookError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::OverBudget { .. } => StatusCode::TOO_MANY_REQUESTS,
            WebhookError::Timeout => StatusCode::REQUEST_TIMEOUT,
            WebhookError::Read(_) | WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebhookError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            WebhookError::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// The `reason` label of `safety_gate_rejections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            WebhookError::TooLarge { .. } => "body_too_large",
            WebhookError::OverBudget { .. } => "over_budget",
            WebhookError::Timeout => "body_timeout",
            WebhookError::Read(_) => "body_error",
            WebhookError::BadRequest(_) => "bad_request",
            WebhookError::Internal => "internal",
            WebhookError::NotFound => "not_found",
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
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
            let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
            json_response(status, body)
        };
        if matches!(
            self,
            WebhookError::TooLarge { .. } | WebhookError::Timeout | WebhookError::OverBudget { .. }
        ) {
            // The rest of the body is not worth reading: free the connection.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The fallback of both routers.
pub(super) async fn not_found() -> Response {
    WebhookError::NotFound.into_response()
}

pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
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
