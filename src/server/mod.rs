//! The HTTPS admission webhook server (`safety-gate serve`).
//!
//! - [`tls`]: rustls with a swappable certificate, polled from the files.
//! - [`reload`]: the serving [`PolicySet`](crate::policy::PolicySet), polled
//!   from `--policies DIR` and swapped only when it loads completely.
//! - [`router`]: `/validate`, `/mutate`, `/healthz`, `/readyz`, `/metrics`.
//! - [`metrics`]: Prometheus instruments.
//!
//! Connections: a TLS handshake bounded by the read timeout (plain HTTP or a
//! wrong ALPN ends here, counted), then hyper's HTTP/1.1-or-h2 connection with
//! keep-alive and a header read timeout. Shutdown stops accepting, lets
//! in-flight requests finish for at most `shutdown_timeout`, then aborts the
//! rest.

mod admin;
pub mod body;
mod error;
pub mod metrics;
mod poll;
pub mod reload;
pub mod router;
pub mod tls;

use crate::policy::{ClusterState, NoCluster};
use crate::policy::{LoadErrors, Mode};
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics::{ConnectionErrorLabels, Metrics};
use poll::{DistinctError, poll_every};
use reload::{PolicyStore, ReloadOutcome};
use router::{AppState, Limits, TlsStatus};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tls::{CertResolver, CertSource, ClientCaPoll, ClientCaSource, Poll};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use tls::TlsSource;

/// Everything `serve` needs; [`ServerConfig::new`] fills in the defaults.
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Plain-HTTP port for `/healthz`, `/readyz`, `/metrics` (also served on the TLS port).
    pub admin_listen: Option<SocketAddr>,
    pub tls: TlsSource,
    /// `--client-ca-file`: when set, only clients with a certificate signed by
    /// one of these CAs complete the handshake. Polled like the serving
    /// certificate; a changed bundle applies to the next handshake.
    pub client_ca: Option<PathBuf>,
    pub policies_dir: PathBuf,
    pub mode: Mode,
    pub cluster: Arc<dyn ClusterState>,
    /// The watch caches behind `cluster`, when it is the live cluster: started
    /// for the loaded policies' needs and re-aimed after every reload.
    pub live: Option<crate::cluster::LiveCluster>,
    /// Shown in `/readyz`: where lookups and namespace labels come from.
    pub cluster_description: String,
    pub max_body_bytes: usize,
    /// Request-body bytes all webhook requests together may hold; past it, 429.
    pub max_inflight_body_bytes: usize,
    pub max_concurrency: usize,
    /// Budget for the TLS handshake, the request headers and the request body.
    pub read_timeout: Duration,
    /// Deadline for requests that carry no `?timeout=`.
    pub default_timeout: Duration,
    /// How often the policy directory and the certificate files are polled.
    pub reload_interval: Duration,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub shutdown_timeout: Duration,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("tls", &self.tls)
            .field("client_ca", &self.client_ca)
            .field("policies_dir", &self.policies_dir)
            .field("mode", &self.mode)
            .field("cluster", &self.cluster_description)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_inflight_body_bytes", &self.max_inflight_body_bytes)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Sized for the Deployment's 256 MiB memory limit (deploy/base/deployment.yaml):
/// a request holds up to about 2.8× its body while it is read, decoded and
/// evaluated (1 MB bodies at 64 connections peaked at 179 MiB), and the idle
/// process needs some 40 MiB, so 48 MiB of bodies (≈ 135 MiB held) leaves
/// headroom for the allocator and the cluster caches. 128 slow 1 MB senders
/// peaked at 109 MiB with it and 185 MiB without (README, "Limits under load").
pub const DEFAULT_MAX_INFLIGHT_BODY_BYTES: usize = 48 * 1024 * 1024;

impl ServerConfig {
    pub fn new(listen: SocketAddr, tls: TlsSource, policies_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            admin_listen: None,
            tls,
            client_ca: None,
            policies_dir,
            mode: Mode::Enforce,
            cluster: Arc::new(NoCluster),
            live: None,
            cluster_description:
                "none (no --cluster-state): lookups and namespace labels are unavailable"
                    .to_string(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_inflight_body_bytes: DEFAULT_MAX_INFLIGHT_BODY_BYTES,
            max_concurrency: default_concurrency(),
            read_timeout: Duration::from_secs(10),
            default_timeout: router::DEFAULT_TIMEOUT,
            reload_interval: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

/// Evaluations are CPU-bound: a couple per core keeps cores busy without
/// letting a burst queue unbounded work on the blocking pool.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the policies in {dir} do not load:\n{errors}")]
    Policies { dir: PathBuf, errors: LoadErrors },
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Startup(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound server, ready to [`serve`](Server::serve).
pub struct Server {
    config: ServerConfig,
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: Arc<AppState>,
    resolver: Arc<CertResolver>,
    cert_source: CertSource,
    client_ca: Option<ClientCaSource>,
    /// The webhook port's TLS configuration; replaced whole when the client
    /// CA changes (the serving certificate changes inside its resolver).
    tls_config: Arc<ArcSwap<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Loads policies and the certificate, then binds: a server that cannot
    /// serve correctly fails here, before it accepts anything.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let dir = config.policies_dir.clone();
        let store = tokio::task::spawn_blocking(move || PolicyStore::load(&dir))
            .await
            .map_err(|e| ServerError::Startup(format!("the policy loading task failed: {e}")))?
            .map_err(|errors| ServerError::Policies {
                dir: config.policies_dir.clone(),
                errors,
            })?;
        let store = Arc::new(store);

        let mut cert_source = CertSource::new(config.tls.clone());
        let cert = cert_source.load_initial()?;
        let resolver = Arc::new(CertResolver::new(Arc::clone(&cert.key)));
        let mut client_ca = config.client_ca.clone().map(ClientCaSource::new);
        let client_roots = match &mut client_ca {
            Some(source) => Some(source.load_initial()?),
            None => None,
        };
        let tls_config = tls::server_config(Arc::clone(&resolver), client_roots)?;
        let tls_config = Arc::new(ArcSwap::from_pointee(tls_config));

        let (metrics, registry) = Metrics::new();
        let serving = store.current();
        if let Some(live) = &config.live {
            live.reconcile(&serving.set.cluster_needs()).await;
        }
        metrics.policy_generation.set(serving.generation as i64);
        metrics.policies_loaded.set(serving.set.len() as i64);
        metrics.tls_not_after.set(cert.not_after as f64);
        let mut tls_status = TlsStatus {
            source: cert_source.describe(),
            ..TlsStatus::default()
        };
        tls_status.loaded(&cert);

        let listener = bind(config.listen).await?;
        let admin = match config.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let state = Arc::new(AppState {
            policies: store,
            cluster: Arc::clone(&config.cluster),
            live: config.live.clone(),
            cluster_description: config.cluster_description.clone(),
            mode: config.mode,
            limits: Limits {
                max_body_bytes: config.max_body_bytes,
                max_inflight_body_bytes: config.max_inflight_body_bytes,
                read_timeout: config.read_timeout,
                default_timeout: config.default_timeout,
            },
            semaphore: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
            body_budget: Arc::new(Semaphore::new(
                config
                    .max_inflight_body_bytes
                    .clamp(1, Semaphore::MAX_PERMITS),
            )),
            metrics,
            registry,
            tls: Mutex::new(tls_status),
            draining: Default::default(),
            aborting: Default::default(),
            served: Default::default(),
        });
        Ok(Server {
            config,
            listener,
            admin,
            state,
            resolver,
            cert_source,
            client_ca,
            tls_config,
        })
    }

    /// The webhook port's address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn serve<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        let Server {
            config,
            listener,
            admin,
            state,
            resolver,
            cert_source,
            client_ca,
            tls_config,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut background = JoinSet::new();
        background.spawn(poll_policies(
            Arc::clone(&state),
            config.reload_interval,
            stop_rx.clone(),
        ));
        if let Some(client_ca) = client_ca {
            background.spawn(poll_client_ca(
                Arc::clone(&state),
                Arc::clone(&resolver),
                client_ca,
                Arc::clone(&tls_config),
                config.reload_interval,
                stop_rx.clone(),
            ));
        }
        if cert_source.is_files() {
            background.spawn(poll_certificate(
                Arc::clone(&state),
                resolver,
                cert_source,
                config.reload_interval,
                stop_rx.clone(),
            ));
        }

        // With an admin port, operational detail (/metrics, /readyz's detail)
        // stays off the port the API server (and anyone reaching the Service) calls.
        let webhook = router::webhook_router(Arc::clone(&state), admin.is_none());
        let admin_routes = router::admin_router(Arc::clone(&state));
        let builder = http_builder(config.read_timeout);
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);

        tracing::info!(
            listen = %listener.local_addr().unwrap_or(config.listen),
            admin = %admin
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .map_or_else(|| "off".to_string(), |a| a.to_string()),
            policies = state.policies.current().set.len(),
            mode = %config.mode.as_str(),
            "listening"
        );
        loop {
            while connections.try_join_next().is_some() {}
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        state.metrics.connections.inc();
                        connections.spawn(serve_tls_connection(
                            stream,
                            peer,
                            tokio_rustls::TlsAcceptor::from(tls_config.load_full()),
                            builder.clone(),
                            webhook.clone(),
                            graceful.watcher(),
                            state.metrics.clone(),
                            config.read_timeout,
                        ));
                    }
                    Err(e) => accept_error(e).await,
                },
                accepted = accept_optional(admin.as_ref()) => match accepted {
                    Ok((stream, _peer)) => {
                        let conn = builder.serve_connection(
                            TokioIo::new(stream),
                            TowerToHyperService::new(admin_routes.clone()),
                        );
                        let watched = graceful.watcher().watch(conn.into_owned());
                        connections.spawn(async move {
                            if let Err(e) = watched.await {
                                tracing::debug!(error = %e, "admin connection ended");
                            }
                        });
                    }
                    Err(e) => accept_error(e).await,
                },
            }
        }

        tracing::info!(
            timeout_s = config.shutdown_timeout.as_secs_f64(),
            "shutting down: no new connections; draining in-flight requests"
        );
        state.draining.store(true, Ordering::Relaxed);
        drop(listener);
        drop(admin);
        let _ = stop_tx.send(true);
        if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = connections.len(),
                "drain timeout reached; closing the remaining connections"
            );
        }
        // Evaluations of the connections closed now are cancelled for `shutdown`.
        state.aborting.store(true, Ordering::Relaxed);
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        background.abort_all();
        while background.join_next().await.is_some() {}
        tracing::info!(
            served = state.served.load(Ordering::Relaxed),
            "shutdown complete"
        );
        Ok(())
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

async fn accept_optional(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Accept errors are mostly "too many open files": back off briefly instead
/// of spinning, and keep serving the connections already open.
async fn accept_error(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Largest request head (HTTP/1.1 read buffer, HTTP/2 header list): an
/// AdmissionReview POST from kube-apiserver has a few hundred bytes of headers.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Streams one HTTP/2 connection may have open at once. kube-apiserver
/// multiplexes every webhook call to a host over one connection, so this is
/// also the per-connection share of `--max-concurrency` waiting room.
pub const MAX_CONCURRENT_STREAMS: u32 = 64;

/// Per-connection limits against slow or greedy senders. The body's own
/// limits (size, read timeout, the global byte budget) are in `router`.
fn http_builder(read_timeout: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Slow-loris: the whole head must arrive within the read timeout; this
        // also bounds how long an idle keep-alive connection is kept open.
        .header_read_timeout(read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(read_timeout)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        // The protocol's minimum frame size: no peer needs bigger ones to send us a body.
        .max_frame_size(16 * 1024)
        // Response bytes buffered per stream before back-pressure.
        .max_send_buf_size(256 * 1024)
        // Rapid-reset (CVE-2023-44487) and error-storm bounds.
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256));
    builder
}

#[allow(clippy::too_many_arguments)]
async fn serve_tls_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    builder: Builder<TokioExecutor>,
    routes: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
    metrics: Metrics,
    handshake_timeout: Duration,
) {
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = handshake_failure_reason(&e);
            metrics
                .connection_errors
                .get_or_create(&ConnectionErrorLabels { reason })
                .inc();
            tracing::debug!(%peer, error = %e, reason, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics
                .connection_errors
                .get_or_create(&ConnectionErrorLabels {
                    reason: "handshake_timeout",
                })
                .inc();
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(routes));
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

fn handshake_failure_reason(e: &std::io::Error) -> &'static str {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::NoApplicationProtocol) => "no_application_protocol",
        Some(rustls::Error::InvalidMessage(_)) => "not_tls",
        Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)) => {
            "client_certificate"
        }
        Some(_) => "handshake_failed",
        None => "io",
    }
}

/// Polls the policy directory; a failed reload keeps the serving set.
async fn poll_policies(state: Arc<AppState>, every: Duration, stop: watch::Receiver<bool>) {
    let store = Arc::clone(&state.policies);
    poll_every(
        "policy",
        every,
        stop,
        store,
        |store| store.poll(),
        |outcome| {
            let state = Arc::clone(&state);
            async move { policies_polled(&state, outcome).await }
        },
    )
    .await;
}

async fn policies_polled(state: &AppState, outcome: ReloadOutcome) {
    match outcome {
        ReloadOutcome::Unchanged => {}
        ReloadOutcome::Reloaded {
            generation,
            policies,
        } => {
            state.metrics.policy_generation.set(generation as i64);
            state.metrics.policies_loaded.set(policies as i64);
            state.metrics.policy_reloads.inc();
            if let Some(live) = &state.live {
                // A reload may add or drop looked-up kinds: start or stop their caches.
                live.reconcile(&state.policies.current().set.cluster_needs())
                    .await;
            }
            tracing::info!(
                generation,
                policies,
                dir = %state.policies.dir().display(),
                "policies reloaded"
            );
        }
        ReloadOutcome::Failed(errors) => {
            state.metrics.policy_reload_failures.inc();
            tracing::error!(
                dir = %state.policies.dir().display(),
                errors = %errors,
                "policy reload failed; the previous policy set keeps serving"
            );
        }
    }
}

/// Polls the certificate files; a failed load keeps the serving certificate.
async fn poll_certificate(
    state: Arc<AppState>,
    resolver: Arc<CertResolver>,
    source: CertSource,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    let mut reported = DistinctError::default();
    poll_every("certificate", every, stop, source, CertSource::poll, |polled| {
        match polled {
            Poll::Unchanged => {}
            Poll::Changed(cert) => {
                resolver.replace(Arc::clone(&cert.key));
                state.metrics.tls_not_after.set(cert.not_after as f64);
                state.metrics.tls_reloads.inc();
                if let Ok(mut status) = state.tls.lock() {
                    status.loaded(&cert);
                }
                reported.clear();
                tracing::info!(subject = %cert.subject, not_after = %cert.not_after_text, "serving certificate reloaded");
            }
            Poll::Failed(e) => {
                let message = e.to_string();
                if reported.is_new(&message) {
                    state.metrics.tls_reload_failures.inc();
                    tracing::error!(error = %message, "certificate reload failed; the previous certificate keeps serving");
                    if let Ok(mut status) = state.tls.lock() {
                        status.last_error = Some((SystemTime::now(), message));
                    }
                }
            }
        }
        std::future::ready(())
    })
    .await;
}

/// Polls `--client-ca-file`; a changed bundle replaces the TLS configuration
/// for the next handshakes (open connections keep the session they have), a
/// bundle that does not load keeps the previous CAs.
async fn poll_client_ca(
    state: Arc<AppState>,
    resolver: Arc<CertResolver>,
    source: ClientCaSource,
    tls_config: Arc<ArcSwap<rustls::ServerConfig>>,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    let mut reported = DistinctError::default();
    let poll = |s: &mut ClientCaSource| (s.path().to_path_buf(), s.poll());
    poll_every("client CA", every, stop, source, poll, |(path, polled)| {
        let failure = match polled {
            ClientCaPoll::Unchanged => None,
            ClientCaPoll::Changed(roots) => {
                match tls::server_config(Arc::clone(&resolver), Some(roots)) {
                    Ok(config) => {
                        tls_config.store(Arc::new(config));
                        state.metrics.tls_client_ca_reloads.inc();
                        reported.clear();
                        tracing::info!(file = %path.display(), "client CA reloaded");
                        None
                    }
                    Err(e) => Some(e.to_string()),
                }
            }
            ClientCaPoll::Failed(e) => Some(e.to_string()),
        };
        if let Some(message) = failure
            && reported.is_new(&message)
        {
            state.metrics.tls_client_ca_reload_failures.inc();
            tracing::error!(error = %message, "client CA reload failed; the previous client CAs keep being required");
        }
        std::future::ready(())
    })
    .await;
}
