//! `safety-gate serve`: the HTTPS admission webhook.

use crate::cluster::{LiveCluster, Snapshot, client_from};
use crate::policy::{ClusterState, NoCluster};
use crate::server::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INFLIGHT_BODY_BYTES, Server, ServerConfig, TlsSource,
};
use anyhow::{Context, bail};
use std::io::{BufWriter, Stderr, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Directory of policy files (searched recursively); reloaded when it changes.
    #[arg(long, env = "SAFETY_GATE_POLICIES", default_value = "policies")]
    pub policies: PathBuf,

    /// Address of the HTTPS webhook port.
    #[arg(long, env = "SAFETY_GATE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// PEM certificate chain for the webhook port; re-read when it changes.
    #[arg(
        long,
        env = "SAFETY_GATE_TLS_CERT",
        requires = "tls_key",
        required_unless_present = "dev_cert"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching --tls-cert.
    #[arg(long, env = "SAFETY_GATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: only clients presenting a certificate signed by it get a
    /// TLS session (mutual TLS; kube-apiserver presents one through an
    /// AdmissionConfiguration kubeConfigFile, see the README). Re-read when it
    /// changes (polled every --reload-interval), like the serving certificate.
    #[arg(long, env = "SAFETY_GATE_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// Serve an in-memory self-signed certificate for localhost/127.0.0.1 (local use only).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub dev_cert: bool,

    /// enforce: deny what policies deny; dry-run (alias: audit): deny nothing, report
    /// would-be denials as warnings.
    #[arg(long, env = "SAFETY_GATE_MODE", value_enum, default_value = "enforce")]
    pub mode: super::mode::ModeArg,

    /// Directory of YAML/JSON objects that lookups and namespace labels read.
    #[arg(long, env = "SAFETY_GATE_CLUSTER_STATE", conflicts_with = "kubeconfig")]
    pub cluster_state: Option<PathBuf>,

    /// Kubeconfig for live lookups (watch caches). Inside a Pod the in-cluster
    /// configuration is used without this flag.
    #[arg(long, env = "SAFETY_GATE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Largest request body accepted; larger ones get HTTP 413.
    #[arg(long, env = "SAFETY_GATE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Request-body bytes all webhook requests together may hold while they are
    /// read and evaluated; a request that does not fit gets HTTP 429 with
    /// Retry-After. The default suits the Deployment's 256 MiB memory limit
    /// (scale it with the limit; see the README).
    #[arg(long, env = "SAFETY_GATE_MAX_INFLIGHT_BODY_BYTES", default_value_t = DEFAULT_MAX_INFLIGHT_BODY_BYTES)]
    pub max_inflight_body_bytes: usize,

    /// Evaluations running at once (default: twice the number of cores).
    #[arg(long, env = "SAFETY_GATE_MAX_CONCURRENCY")]
    pub max_concurrency: Option<usize>,

    /// Log lines as text for people, or one JSON object per line for log pipelines.
    #[arg(
        long,
        env = "SAFETY_GATE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Plain-HTTP address for /healthz, /readyz and /metrics (they are also on the TLS port).
    #[arg(long, env = "SAFETY_GATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// How often the policy directory and certificate files are checked for changes.
    #[arg(long, env = "SAFETY_GATE_RELOAD_INTERVAL", default_value = "5s", value_parser = duration)]
    pub reload_interval: Duration,

    /// Time a client has for the TLS handshake, the headers and the body (then 408 or close).
    #[arg(long, env = "SAFETY_GATE_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub read_timeout: Duration,

    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, env = "SAFETY_GATE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub shutdown_timeout: Duration,
}

pub(super) fn duration(text: &str) -> Result<Duration, String> {
    crate::server::body::parse_go_duration(text)
        .ok_or_else(|| format!("'{text}' is not a duration like 5s, 500ms or 1m30s"))
}

/// Installs the log subscriber: text for people, JSON for log pipelines.
/// `RUST_LOG` overrides the default level; hyper and rustls stay quiet.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,h2=warn,rustls=warn"));
    // Colour only on a terminal: in a Pod's log or a file the escape codes
    // are noise.
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let ansi = terminal && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(LogWriter::new(!terminal));
    // A subscriber installed earlier (tests, an embedding program) wins.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Log lines bound for a file or a pipe (a Pod's log) go through a buffer:
/// the decision log writes one line per request, and a write(2) per line was
/// a measurable share of a small request's CPU. A background thread flushes
/// the buffer every 100 ms, a full buffer flushes itself, WARN and ERROR
/// lines are written at once, and [`flush_logs`] empties it before `serve`
/// returns. On a terminal, or when the thread cannot start, lines go straight
/// to stderr.
#[derive(Clone)]
struct LogWriter {
    buffer: Option<Arc<Mutex<BufWriter<Stderr>>>>,
}

static LOG_BUFFER: OnceLock<Arc<Mutex<BufWriter<Stderr>>>> = OnceLock::new();
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
const LOG_BUFFER_BYTES: usize = 64 * 1024;

impl LogWriter {
    fn new(buffered: bool) -> LogWriter {
        let buffer = buffered
            .then(|| {
                let buffer = LOG_BUFFER
                    .get_or_init(|| {
                        Arc::new(Mutex::new(BufWriter::with_capacity(
                            LOG_BUFFER_BYTES,
                            std::io::stderr(),
                        )))
                    })
                    .clone();
                let flushed = Arc::clone(&buffer);
                std::thread::Builder::new()
                    .name("log-flush".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(LOG_FLUSH_INTERVAL);
                            let _ = lock(&flushed).flush();
                        }
                    })
                    .ok()
                    .map(|_| buffer)
            })
            .flatten();
        LogWriter { buffer }
    }
}

/// The buffer even after a panic while it was held (a log line is not worth
/// losing the log for).
fn lock(buffer: &Mutex<BufWriter<Stderr>>) -> std::sync::MutexGuard<'_, BufWriter<Stderr>> {
    buffer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes the buffered log lines out (before `serve` returns).
pub fn flush_logs() {
    if let Some(buffer) = LOG_BUFFER.get() {
        let _ = lock(buffer).flush();
    }
}

/// One log line's writer: buffered, flushed at once when `urgent`.
struct LogLine<'a> {
    writer: &'a LogWriter,
    urgent: bool,
}

impl Write for LogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match &self.writer.buffer {
            None => std::io::stderr().write_all(buf),
            Some(buffer) => {
                let mut out = lock(buffer);
                out.write_all(buf)?;
                if self.urgent { out.flush() } else { Ok(()) }
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &self.writer.buffer {
            None => std::io::stderr().flush(),
            Some(buffer) => lock(buffer).flush(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> LogLine<'a> {
        LogLine {
            writer: self,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogLine<'a> {
        LogLine {
            writer: self,
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

/// Builds the server configuration from the flags.
pub fn config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let tls = match (&args.tls_cert, &args.tls_key, args.dev_cert) {
        (_, _, true) => TlsSource::DevCert,
        (Some(cert), Some(key), false) => TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => bail!("TLS is required: pass --tls-cert and --tls-key, or --dev-cert for local use"),
    };
    if !args.policies.exists() {
        bail!("{}", super::missing_policies(&args.policies));
    }
    let mut config = ServerConfig::new(args.listen, tls, args.policies.clone());
    config.admin_listen = args.admin_listen;
    config.client_ca = args.client_ca_file.clone();
    config.mode = args.mode.into();
    config.max_body_bytes = args.max_body_bytes;
    if args.max_inflight_body_bytes < args.max_body_bytes {
        bail!(
            "--max-inflight-body-bytes ({}) must be at least --max-body-bytes ({}): otherwise a body the size limit allows could never fit",
            args.max_inflight_body_bytes,
            args.max_body_bytes
        );
    }
    config.max_inflight_body_bytes = args.max_inflight_body_bytes;
    if let Some(n) = args.max_concurrency {
        if n == 0 {
            bail!("--max-concurrency must be at least 1");
        }
        config.max_concurrency = n;
    }
    config.read_timeout = args.read_timeout;
    config.reload_interval = args.reload_interval.max(Duration::from_millis(100));
    config.shutdown_timeout = args.shutdown_timeout;
    let (cluster, description): (Arc<dyn ClusterState>, String) =
        match (&args.cluster_state, &args.kubeconfig) {
            (Some(dir), _) => {
                let snapshot = Snapshot::load_dir(dir).map_err(|e| {
                    anyhow::anyhow!("the cluster state in {} does not load:\n{e}", dir.display())
                })?;
                (
                    Arc::new(snapshot),
                    format!("snapshot {} (--cluster-state)", dir.display()),
                )
            }
            (None, Some(kubeconfig)) => (
                Arc::new(NoCluster),
                format!("live cluster (--kubeconfig {})", kubeconfig.display()),
            ),
            (None, None) if in_cluster() => (
                Arc::new(NoCluster),
                "live cluster (in-cluster configuration)".to_string(),
            ),
            (None, None) => (
                Arc::new(NoCluster),
                "none (no --cluster-state): lookups and namespace labels are unavailable"
                    .to_string(),
            ),
        };
    config.cluster = cluster;
    config.cluster_description = description;
    Ok(config)
}

/// Running in a Pod: the service-account credentials are mounted and the
/// API server's address is in the environment.
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// Runs the webhook until SIGTERM or Ctrl-C, then drains and returns `Ok`.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let shutdown = shutdown_signal();
    let mut config = config(&args)?;
    if args.cluster_state.is_none() && (args.kubeconfig.is_some() || in_cluster()) {
        // Watch caches for exactly the kinds the policies look up (and
        // Namespaces when selectors need them); /readyz waits for them.
        let client = client_from(args.kubeconfig.as_deref(), None)
            .await
            .context("cannot build the Kubernetes client for lookups")?;
        let live = LiveCluster::new(client);
        config.cluster = Arc::new(live.clone());
        config.live = Some(live);
    }
    let server = Server::bind(config)
        .await
        .context("safety-gate serve cannot start")?;
    server.serve(shutdown).await?;
    Ok(())
}

/// For a synchronous `main`: builds the runtime and runs [`run`].
pub fn run_blocking(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("safety-gate")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run(args));
    flush_logs();
    result
}

/// Registers the SIGTERM handler now and returns the future that completes
/// on SIGTERM or Ctrl-C. Registering before the listener binds matters: a
/// SIGTERM that arrives between "listening" and the first poll would
/// otherwise kill the process without draining.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        #[cfg(unix)]
        {
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received"),
                        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
