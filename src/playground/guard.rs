//! What the playground accepts before a handler runs: the Host header (against
//! DNS rebinding), the method (405), the body's media type (415), size (413)
//! and shape (400). Every refusal is JSON `{"error": …}`, as the rest of the API.
//!
//! The page has no authentication and `GET /api/library` returns the files of
//! `--policies PATH`, so a page of another origin must not read or drive it:
//! a browser sends a cross-origin `POST` with `Content-Type: application/json`
//! only after a CORS preflight, which the playground never grants (`OPTIONS`
//! is 405), and a DNS-rebound name reaches the server with its own name in
//! `Host`, which is refused.

use super::Playground;
use super::api::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// The largest request body the API reads, in bytes: 32 MiB. That is the
/// webhook body `serve` accepts by default (`--max-body-bytes`, 16 MiB, an
/// AdmissionReview with object and oldObject) plus as much again for the
/// policies, the cluster state and the JSON escaping of the pane texts.
pub const MAX_BODY_BYTES: usize = 2 * crate::server::DEFAULT_MAX_BODY_BYTES;

/// The `Host` values a request may carry when the playground listens on
/// `address` (a loopback address): that address and `localhost`, with the
/// port (without it only when the port is 80, as browsers send it).
pub fn loopback_hosts(address: SocketAddr) -> Vec<String> {
    let ip = match address {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let port = address.port();
    let mut hosts = vec![format!("{ip}:{port}"), format!("localhost:{port}")];
    if port == 80 {
        hosts.push(ip);
        hosts.push("localhost".to_string());
    }
    hosts
}

/// Refuses a request whose `Host` (or, on HTTP/2, `:authority`) is not one of
/// the playground's own names: `403 {"error"}`. With `--allow-remote` every
/// host is accepted.
pub async fn check_host(State(state): State<Playground>, request: Request, next: Next) -> Response {
    let Some(allowed) = state.allowed_hosts.as_deref() else {
        return next.run(request).await;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if allowed.iter().any(|a| a.eq_ignore_ascii_case(&h)) => next.run(request).await,
        other => ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "Host '{}' is not this playground's address ({}): requests for another name are refused against DNS rebinding; start it with --allow-remote to accept any",
                other.unwrap_or_default(),
                allowed.join(", ")
            ),
        )
        .into_response(),
    }
}

/// The answer to a method a path does not take: `405 {"error"}` with `Allow`.
pub fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here; allowed: {allow}"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// A `POST` body: `Content-Type: application/json` (else `415`), at most
/// [`MAX_BODY_BYTES`] (else `413`), a JSON object (else `400`; the handler's
/// decoding names what else is wrong). Errors are `{"error": …}`.
#[derive(Debug)]
pub struct JsonObjectBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonObjectBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if request.method() == Method::POST && !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type must be application/json, not '{content_type}'"),
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is larger than the playground's limit of {MAX_BODY_BYTES} bytes (32 MiB)"
                    ),
                )
            } else {
                ApiError(e.status(), format!("cannot read the request body: {e}"))
            }
        })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "malformed request body: must be a JSON object ({…})".to_string(),
            ));
        }
        Ok(JsonObjectBody(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::loopback_hosts;

    #[test]
    fn the_accepted_hosts_are_the_listening_address_and_localhost() {
        assert_eq!(
            loopback_hosts("127.0.0.1:8088".parse().unwrap_or_else(|e| panic!("{e}"))),
            vec!["127.0.0.1:8088", "localhost:8088"]
        );
        // IPv6 in brackets, as browsers write it; port 80 also without a port.
        assert_eq!(
            loopback_hosts("[::1]:80".parse().unwrap_or_else(|e| panic!("{e}"))),
            vec!["[::1]:80", "localhost:80", "[::1]", "localhost"]
        );
    }
}
