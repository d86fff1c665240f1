//! Prometheus metrics (`GET /metrics`), encoded by `prometheus-client`.
//!
//! Label values are bounded: endpoints and verdicts are fixed sets, `policy`
//! is the name of a loaded policy, and rejection reasons are a fixed set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Buckets from 50 µs to 10 s: most reviews take well under a millisecond, and
/// kube-apiserver gives up after at most 30 s.
const LATENCY_BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub endpoint: &'static str,
    /// `bad_request`, `body_too_large`, `body_timeout`, `body_error`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CancelLabels {
    pub endpoint: &'static str,
    /// `deadline`, `client_gone`, `shutdown`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `<kind>.<apiVersion>` of a watched kind, e.g. `KubeFedCluster.core.kubefed.io/v1beta1`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionErrorLabels {
    /// `handshake_timeout`, `not_tls`, `no_application_protocol`, `handshake_failed`.
    pub reason: &'static str,
}

/// Every instrument the server updates. Cheap to clone (all `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub rejections: Family<RejectionLabels, Counter>,
    pub deadline_exceeded: Family<EndpointLabels, Counter>,
    pub evaluations_cancelled: Family<CancelLabels, Counter>,
    pub duration: Family<EndpointLabels, Histogram>,
    pub in_flight: Gauge,
    pub policy_evaluations: Family<PolicyLabels, Counter>,
    pub policy_generation: Gauge,
    pub policies_loaded: Gauge,
    pub policy_reloads: Counter,
    pub policy_reload_failures: Counter,
    pub tls_not_after: Gauge<f64, AtomicU64>,
    pub tls_reloads: Counter,
    pub tls_reload_failures: Counter,
    pub tls_client_ca_reloads: Counter,
    pub tls_client_ca_reload_failures: Counter,
    pub connection_errors: Family<ConnectionErrorLabels, Counter>,
    pub connections: Counter,
    /// Tasks alive on the tokio runtime; set by [`Metrics::observe_runtime`].
    pub runtime_alive_tasks: Gauge,
    pub cluster_sync_age: Family<KindLabels, Gauge<f64, AtomicU64>>,
    pub cluster_objects: Family<KindLabels, Gauge>,
    pub cluster_watch_errors: Family<KindLabels, Gauge>,
    pub cluster_synced: Family<KindLabels, Gauge>,
}

impl Metrics {
    /// Creates the instruments and registers them in a fresh registry.
    pub fn new() -> (Metrics, Registry) {
        let metrics = Metrics {
            requests: Family::default(),
            rejections: Family::default(),
            deadline_exceeded: Family::default(),
            evaluations_cancelled: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            policy_evaluations: Family::default(),
            policy_generation: Gauge::default(),
            policies_loaded: Gauge::default(),
            policy_reloads: Counter::default(),
            policy_reload_failures: Counter::default(),
            tls_not_after: Gauge::default(),
            tls_reloads: Counter::default(),
            tls_reload_failures: Counter::default(),
            tls_client_ca_reloads: Counter::default(),
            tls_client_ca_reload_failures: Counter::default(),
            connection_errors: Family::default(),
            connections: Counter::default(),
            runtime_alive_tasks: Gauge::default(),
            cluster_sync_age: Family::default(),
            cluster_objects: Family::default(),
            cluster_watch_errors: Family::default(),
            cluster_synced: Family::default(),
        };
        let mut registry = Registry::with_prefix("safety_gate");
        registry.register(
            "cluster_cache_last_sync_age_seconds",
            "Seconds since a lookup cache last completed a list or received a watch event, by kind",
            metrics.cluster_sync_age.clone(),
        );
        registry.register(
            "cluster_cache_objects",
            "Objects held by a lookup cache, by kind",
            metrics.cluster_objects.clone(),
        );
        registry.register(
            "cluster_cache_watch_errors",
            "Watch or list errors a lookup cache has seen, by kind",
            metrics.cluster_watch_errors.clone(),
        );
        registry.register(
            "cluster_cache_synced",
            "1 when a lookup cache is synced and usable, by kind",
            metrics.cluster_synced.clone(),
        );
        registry.register(
            "admission_requests",
            "AdmissionReviews answered, by endpoint and verdict (allowed, denied, warned, would_deny, error)",
            metrics.requests.clone(),
        );
        registry.register(
            "admission_rejections",
            "Requests refused before evaluation (HTTP 400/408/413), by endpoint and reason",
            metrics.rejections.clone(),
        );
        registry.register(
            "admission_deadline_exceeded",
            "Reviews answered by failurePolicy because the ?timeout deadline was reached",
            metrics.deadline_exceeded.clone(),
        );
        registry.register(
            "admission_evaluations_cancelled",
            "Evaluations stopped before they finished because nobody waited for the answer any more, by endpoint and reason (deadline, client_gone, shutdown)",
            metrics.evaluations_cancelled.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time from request headers to response, by endpoint",
            metrics.duration.clone(),
        );
        registry.register(
            "admission_in_flight",
            "Admission requests being read, evaluated or answered",
            metrics.in_flight.clone(),
        );
        registry.register(
            "policy_evaluations",
            "Evaluations of matching policies, by policy and outcome (passed, failed, errored, exempted, skipped)",
            metrics.policy_evaluations.clone(),
        );
        registry.register(
            "policy_set_generation",
            "Generation of the serving policy set; +1 on every successful reload",
            metrics.policy_generation.clone(),
        );
        registry.register(
            "policies_loaded",
            "Policies in the serving policy set",
            metrics.policies_loaded.clone(),
        );
        registry.register(
            "policy_reloads",
            "Successful policy reloads",
            metrics.policy_reloads.clone(),
        );
        registry.register(
            "policy_reload_failures",
            "Policy reloads rejected because the new files did not load; the previous set kept serving",
            metrics.policy_reload_failures.clone(),
        );
        registry.register(
            "tls_cert_not_after_timestamp_seconds",
            "notAfter of the serving certificate, as a Unix timestamp",
            metrics.tls_not_after.clone(),
        );
        registry.register(
            "tls_cert_reloads",
            "Serving certificate replaced after the files changed",
            metrics.tls_reloads.clone(),
        );
        registry.register(
            "tls_cert_reload_failures",
            "Changed certificate files that could not be loaded; the previous certificate kept serving",
            metrics.tls_reload_failures.clone(),
        );
        registry.register(
            "tls_client_ca_reloads",
            "--client-ca-file replaced after the file changed (applies to new handshakes)",
            metrics.tls_client_ca_reloads.clone(),
        );
        registry.register(
            "tls_client_ca_reload_failures",
            "Changed --client-ca-file contents that could not be loaded; the previous client CAs kept being required",
            metrics.tls_client_ca_reload_failures.clone(),
        );
        registry.register(
            "connection_errors",
            "Connections closed before HTTP (TLS handshake failures, plain HTTP, wrong ALPN), by reason",
            metrics.connection_errors.clone(),
        );
        registry.register(
            "connections",
            "TCP connections accepted on the webhook port",
            metrics.connections.clone(),
        );
        registry.register(
            "runtime_alive_tasks",
            "Tasks alive on the server's tokio runtime (one per open connection and per request being read or awaiting its evaluation, plus the pollers), read at each scrape; it returns to its idle value when the load stops unless something leaks",
            metrics.runtime_alive_tasks.clone(),
        );
        (metrics, registry)
    }

    /// Reads the current tokio runtime's task count into `runtime_alive_tasks`
    /// (tokio's stable `RuntimeMetrics::num_alive_tasks`: tasks spawned with
    /// `tokio::spawn` that have not finished; blocking-pool work is not a task).
    /// Outside a runtime it leaves the gauge as it is.
    pub fn observe_runtime(&self) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let alive = handle.metrics().num_alive_tasks();
            self.runtime_alive_tasks
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Prometheus text exposition of the registry.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoding error would only come from
    // a label encoder, and ours are plain strings.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive_tasks(registry: &Registry) -> Option<String> {
        encode(registry)
            .lines()
            .find(|l| l.starts_with("safety_gate_runtime_alive_tasks "))
            .map(str::to_string)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_task_gauge_follows_spawned_tasks_up_and_back_down() {
        let (metrics, registry) = Metrics::new();
        metrics.observe_runtime();
        // The test body runs in block_on, which is not a spawned task.
        assert_eq!(
            alive_tasks(&registry).as_deref(),
            Some("safety_gate_runtime_alive_tasks 0")
        );
        let (release, _) = tokio::sync::broadcast::channel::<()>(1);
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let mut wait = release.subscribe();
                tokio::spawn(async move {
                    let _ = wait.recv().await;
                })
            })
            .collect();
        metrics.observe_runtime();
        assert_eq!(
            alive_tasks(&registry).as_deref(),
            Some("safety_gate_runtime_alive_tasks 3")
        );
        let _ = release.send(());
        for handle in handles {
            handle.await.expect("task finished");
        }
        metrics.observe_runtime();
        assert_eq!(
            alive_tasks(&registry).as_deref(),
            Some("safety_gate_runtime_alive_tasks 0"),
            "finished tasks are no longer counted"
        );
    }
}
