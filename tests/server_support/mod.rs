//! Shared by the server integration tests: a real server on 127.0.0.1:0 with
//! a generated CA, HTTPS clients that verify it, raw TLS sockets, samples.
#![allow(dead_code)]

use safety_gate::cli::certs::{GeneratedCerts, generate};
use safety_gate::server::{Server, ServerConfig, TlsSource};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const LOCAL_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

pub fn local_certs() -> GeneratedCerts {
    let names: Vec<String> = LOCAL_NAMES.iter().map(|s| s.to_string()).collect();
    generate(&names).expect("certificates")
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client config trusting exactly `ca_pems`, offering `alpn`.
pub fn client_tls(ca_pems: &[&str], alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.expect("ca pem")).expect("root");
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    /// ALPN http/1.1 only, as kube-apiserver uses for Service targets.
    One,
    /// ALPN h2.
    Two,
}

/// A reqwest client that verifies the server certificate against `ca_pems`.
pub fn client_with(
    ca_pems: &[&str],
    http: Http,
    addr: SocketAddr,
    pooled: bool,
) -> reqwest::Client {
    let alpn: &[&[u8]] = match http {
        Http::One => &[b"http/1.1"],
        Http::Two => &[b"h2"],
    };
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(ca_pems, alpn))
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(20));
    builder = match http {
        Http::One => builder.http1_only(),
        Http::Two => builder,
    };
    if !pooled {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().expect("client")
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub certs: GeneratedCerts,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Writes `policies` (file name, YAML) and the certificate into a temp
    /// dir and starts a server on 127.0.0.1:0 with TLS from those files.
    pub async fn start(
        policies: &[(&str, &str)],
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy_dir = dir.path().join("policies");
        std::fs::create_dir_all(&policy_dir).expect("mkdir");
        for (name, yaml) in policies {
            std::fs::write(policy_dir.join(name), yaml).expect("write policy");
        }
        let certs = local_certs();
        safety_gate::cli::certs::write_files(&dir.path().join("tls"), &certs).expect("write certs");
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            TlsSource::Files {
                cert: dir.path().join("tls/tls.crt"),
                key: dir.path().join("tls/tls.key"),
            },
            policy_dir,
        );
        config.reload_interval = Duration::from_millis(100);
        config.read_timeout = Duration::from_secs(5);
        config.shutdown_timeout = Duration::from_secs(5);
        tweak(&mut config);
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addr();
        let admin = server.admin_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            admin,
            certs,
            dir,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub fn client(&self, http: Http) -> reqwest::Client {
        client_with(&[&self.certs.ca_pem], http, self.addr, true)
    }

    /// Triggers shutdown; returns what `serve` returned.
    pub fn begin_stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.handle.take().expect("not stopped yet")
    }

    pub async fn stop(mut self) {
        let handle = self.begin_stop();
        let result = tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("shutdown in time")
            .expect("serve task");
        result.expect("serve returns Ok");
    }

    /// GET /metrics over TLS.
    pub async fn metrics(&self) -> String {
        self.client(Http::One)
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub async fn readyz(&self) -> Value {
        self.client(Http::One)
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json")
    }

    /// Raw TLS connection offering http/1.1, for byte-level tests.
    pub async fn raw_tls(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(
            &[&self.certs.ca_pem],
            &[b"http/1.1"],
        )));
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        connector
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").expect("name"),
                tcp,
            )
            .await
            .expect("handshake")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Sum of a metric's samples whose line starts with `prefix` (name + labels).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// Reads until EOF or `limit`, whichever first; never fails.
pub async fn read_to_end_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

pub async fn write_all<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    s.write_all(bytes).await.expect("write");
    s.flush().await.expect("flush");
}

/// `../shared/data/admission-samples` relative to the crate root, if present.
pub fn samples_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/admission-samples");
    if dir.is_dir() {
        Some(dir)
    } else {
        panic!(
            "{} is absent: the sample-based checks need ../shared beside the clone",
            dir.display()
        );
    }
}

/// A sample as a full AdmissionReview (the kyverno sample holds only `request`).
pub fn sample_review(dir: &Path, file: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(file)).expect("sample");
    let value: Value = serde_json::from_str(&text).expect("sample json");
    if value.get("request").is_some() {
        value
    } else {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": value})
    }
}

pub fn review(request: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// A ConfigMap CREATE as kube-apiserver sends it.
pub fn configmap_create(uid: &str, name: &str, data: Value) -> Value {
    review(json!({
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "resource": {"group": "", "version": "v1", "resource": "configmaps"},
        "requestKind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "requestResource": {"group": "", "version": "v1", "resource": "configmaps"},
        "name": name,
        "namespace": "team-a",
        "operation": "CREATE",
        "userInfo": {"username": "alice@example.com", "uid": "1234", "groups": ["system:authenticated"]},
        "object": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "team-a", "labels": {"app": "web"}},
            "data": data
        },
        "oldObject": null,
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
    }))
}

/// POSTs like kube-apiserver: JSON, its Accept and User-Agent, `?timeout=10s`.
pub async fn post_review(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{url}?timeout=10s"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, */*")
        .header("User-Agent", "kube-apiserver-admission")
        .body(body)
        .send()
        .await
}

pub const CM_RULES: &str = r#"  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["*"]
      operations: ["CREATE", "UPDATE"]
      resources: ["configmaps"]
"#;

/// Denies ConfigMaps named `forbidden`, with `message`.
pub fn deny_forbidden(name: &str, message: &str) -> String {
    format!(
        "apiVersion: safety-gate.dev/v1alpha1\nkind: GatePolicy\nmetadata:\n  name: {name}\nspec:\n  failurePolicy: Fail\n{CM_RULES}  validations:\n  - expression: \"object.metadata.name != 'forbidden'\"\n    message: \"{message}\"\n"
    )
}

/// Annotates ConfigMaps on /mutate.
pub const STAMP_POLICY: &str = r#"apiVersion: safety-gate.dev/v1alpha1
kind: GatePolicy
metadata:
  name: stamp-configmaps
spec:
  failurePolicy: Ignore
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["*"]
      operations: ["CREATE", "UPDATE"]
      resources: ["configmaps"]
  annotate:
    safety-gate.dev/stamped-by: "request.userInfo.username"
"#;

/// Warns on Pods whose containers set no resource limits.
pub const POD_LIMITS_POLICY: &str = r#"apiVersion: safety-gate.dev/v1alpha1
kind: GatePolicy
metadata:
  name: pod-limits
spec:
  action: Warn
  failurePolicy: Ignore
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["pods"]
  validations:
  - expression: "object.spec.containers.all(c, has(c.resources) && has(c.resources.limits))"
    message: "every container should set resource limits"
"#;

pub fn test_policies() -> Vec<(&'static str, String)> {
    vec![
        (
            "deny.yaml",
            deny_forbidden(
                "no-forbidden-configmaps",
                "configmaps named forbidden are not allowed",
            ),
        ),
        ("stamp.yaml", STAMP_POLICY.to_string()),
        ("pods.yaml", POD_LIMITS_POLICY.to_string()),
    ]
}

pub fn as_refs<'a>(list: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    list.iter().map(|(n, y)| (*n, y.as_str())).collect()
}
