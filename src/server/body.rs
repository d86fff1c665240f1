//! Reading a review request: its `?timeout=`, and its body under a size
//! limit, a read deadline and the global budget of request bytes in flight.

use super::error::WebhookError;
use super::router::Limits;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The largest `timeoutSeconds` Kubernetes accepts.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

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
) -> Result<(), WebhookError> {
    if bytes == 0 {
        return Ok(());
    }
    let over = || WebhookError::OverBudget {
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
pub(super) async fn read_body(
    mut body: Body,
    headers: &HeaderMap,
    limits: &Limits,
    budget: &Arc<Semaphore>,
    answer_by: Instant,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), WebhookError> {
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
        return Err(WebhookError::TooLarge { limit });
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
            Err(_) => return Err(WebhookError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(WebhookError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drain(body, deadline, limit as u64 + DRAIN_CAP - buf.len() as u64).await;
                return Err(WebhookError::TooLarge { limit });
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
pub(super) async fn drain(mut body: Body, deadline: Instant, cap: u64) {
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

/// Go duration syntax (`10s`, `1m30s`, `500ms`), as kube-apiserver writes
/// it, read by kube-core's [`kube::core::Duration`]; `None` when unreadable
/// or negative.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    // Go refuses an empty duration; kube-core reads it as zero.
    if text.is_empty() {
        return None;
    }
    let parsed: kube::core::Duration = text.parse().ok()?;
    (!parsed.is_negative()).then(|| parsed.into())
}

/// When to answer, given the caller's timeout. kube-apiserver rounds the time
/// it will wait *up* to whole seconds, so keep a tenth of it (at least 250 ms,
/// at most 1 s) in hand for the network and the rounding.
pub fn answer_budget(timeout: Duration) -> Duration {
    let margin = (timeout / 10).clamp(Duration::from_millis(250), Duration::from_secs(1));
    timeout.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

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
