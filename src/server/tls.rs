//! TLS for the webhook port.
//!
//! The `ServerConfig` never changes; its certificate resolver hands out the
//! current key pair from an [`ArcSwap`], so a rotated Secret takes effect on
//! the next handshake while open connections keep the session they have.
//! Kubernetes updates Secret volumes by swapping a `..data` symlink, which
//! file watchers often miss, so [`CertSource::poll`] compares file contents.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN: HTTP/2 for clients that want it (kube-apiserver uses it for
/// `localhost` URLs), HTTP/1.1 for kube-apiserver's service calls.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found ({detail})")]
    NoCertificate { path: PathBuf, detail: String },
    #[error("{path}: no PEM private key found ({detail})")]
    NoKey { path: PathBuf, detail: String },
    #[error("{cert} / {key}: {detail}")]
    Invalid {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("cannot generate the development certificate: {0}")]
    Generate(String),
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider used everywhere in the server: ring, passed explicitly
/// so the process-wide default never matters.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A key pair plus what readiness and metrics report about it.
#[derive(Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// notAfter of the leaf certificate, Unix seconds.
    pub not_after: i64,
    /// Human-readable notAfter.
    pub not_after_text: String,
    pub subject: String,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after_text)
            .finish_non_exhaustive()
    }
}

impl LoadedCert {
    /// Builds a key pair from PEM bytes; checks that the key matches the leaf.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<LoadedCert, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::NoCertificate {
                path: cert_path.to_path_buf(),
                detail: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert_path.to_path_buf(),
                detail: "the file holds no CERTIFICATE block".to_string(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
            path: key_path.to_path_buf(),
            detail: e.to_string(),
        })?;
        LoadedCert::from_der(chain, key).map_err(|detail| TlsError::Invalid {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            detail,
        })
    }

    fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<LoadedCert, String> {
        let (not_after, not_after_text, subject) = {
            let leaf = chain
                .first()
                .ok_or_else(|| "empty certificate chain".to_string())?;
            let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
                .map_err(|e| format!("the certificate does not parse: {e}"))?;
            let validity = parsed.validity();
            (
                validity.not_after.timestamp(),
                validity.not_after.to_string(),
                parsed.subject().to_string(),
            )
        };
        let key = CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
        Ok(LoadedCert {
            key: Arc::new(key),
            not_after,
            not_after_text,
            subject,
        })
    }

    /// An in-memory self-signed certificate for `localhost` and the loopback
    /// addresses, valid for 30 days: for `serve --dev-cert` only.
    pub fn dev_cert() -> Result<LoadedCert, TlsError> {
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let mut params =
            rcgen::CertificateParams::new(names).map_err(|e| TlsError::Generate(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "safety-gate dev certificate");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(30);
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        LoadedCert::from_der(vec![cert.der().clone()], key_der).map_err(TlsError::Generate)
    }
}

/// Serves whatever key pair was stored last.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(initial: Arc<CertifiedKey>) -> CertResolver {
        CertResolver {
            current: ArcSwap::new(initial),
        }
    }

    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Reads the CA bundle that client certificates must chain to (`--client-ca-file`).
pub fn client_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    client_roots_from_pem(&pem, path)
}

/// Parses a PEM CA bundle; `path` only names the file in errors.
fn client_roots_from_pem(pem: &[u8], path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
            detail: "the file holds no CERTIFICATE block".to_string(),
        });
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            cert: path.to_path_buf(),
            key: path.to_path_buf(),
            detail: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The rustls configuration of the webhook port.
///
/// Reviewed against rustls' defaults: TLS 1.3 and 1.2 only (1.2 is what the
/// oldest supported kube-apiserver's Go client still offers; rustls has no
/// 1.1/1.0), ring's default cipher suites (AEAD only, forward-secret key
/// exchange: X25519, P-256, P-384), no session resumption across restarts, ALPN
/// `h2`/`http/1.1` required. With `client_roots`, a client must present a
/// certificate chaining to them (`WebPkiClientVerifier`: signature, validity,
/// clientAuth usage) or the handshake fails before any HTTP is read.
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_roots: Option<rustls::RootCertStore>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files, re-read when their contents change.
    Files { cert: PathBuf, key: PathBuf },
    /// `--dev-cert`: generated in memory at startup, never reloaded.
    DevCert,
}

/// Remembers what was loaded last so polling only reloads on a change.
#[derive(Debug)]
pub struct CertSource {
    source: TlsSource,
    last: Option<(Vec<u8>, Vec<u8>)>,
}

/// The outcome of one poll.
pub enum Poll {
    Unchanged,
    Changed(LoadedCert),
    Failed(TlsError),
}

impl CertSource {
    pub fn new(source: TlsSource) -> CertSource {
        CertSource { source, last: None }
    }

    pub fn is_files(&self) -> bool {
        matches!(self.source, TlsSource::Files { .. })
    }

    pub fn describe(&self) -> String {
        match &self.source {
            TlsSource::Files { cert, key } => {
                format!("files {} and {}", cert.display(), key.display())
            }
            TlsSource::DevCert => "in-memory development certificate (--dev-cert)".to_string(),
        }
    }

    /// Loads the certificate for startup; errors here stop the server.
    pub fn load_initial(&mut self) -> Result<LoadedCert, TlsError> {
        match self.poll() {
            Poll::Changed(cert) => Ok(cert),
            Poll::Failed(e) => Err(e),
            // `last` starts empty, so the first poll always reports a change.
            Poll::Unchanged => Err(TlsError::Config("no certificate loaded".to_string())),
        }
    }

    /// Reads the files and loads them if their bytes differ from the last
    /// successful load. A failed load is retried on the next poll, which also
    /// covers a copy that caught the certificate and key mid-update.
    pub fn poll(&mut self) -> Poll {
        let (cert_path, key_path) = match &self.source {
            TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
            TlsSource::DevCert => {
                if self.last.is_some() {
                    return Poll::Unchanged;
                }
                return match LoadedCert::dev_cert() {
                    Ok(cert) => {
                        self.last = Some((Vec::new(), Vec::new()));
                        Poll::Changed(cert)
                    }
                    Err(e) => Poll::Failed(e),
                };
            }
        };
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let (cert_pem, key_pem) = match (read(&cert_path), read(&key_path)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => return Poll::Failed(e),
        };
        if let Some((c, k)) = &self.last
            && *c == cert_pem
            && *k == key_pem
        {
            return Poll::Unchanged;
        }
        match LoadedCert::from_pem(&cert_pem, &key_pem, &cert_path, &key_path) {
            Ok(cert) => {
                self.last = Some((cert_pem, key_pem));
                Poll::Changed(cert)
            }
            Err(e) => Poll::Failed(e),
        }
    }
}

/// `--client-ca-file`, re-read on every poll and reloaded when its bytes
/// change, as the serving certificate is: a rotated kube-apiserver client CA
/// takes effect on the next handshake without a restart.
#[derive(Debug)]
pub struct ClientCaSource {
    path: PathBuf,
    last: Option<Vec<u8>>,
}

/// The outcome of one poll of the client CA file.
pub enum ClientCaPoll {
    Unchanged,
    Changed(rustls::RootCertStore),
    Failed(TlsError),
}

impl ClientCaSource {
    pub fn new(path: PathBuf) -> ClientCaSource {
        ClientCaSource { path, last: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the bundle for startup; errors here stop the server.
    pub fn load_initial(&mut self) -> Result<rustls::RootCertStore, TlsError> {
        match self.poll() {
            ClientCaPoll::Changed(roots) => Ok(roots),
            ClientCaPoll::Failed(e) => Err(e),
            // `last` starts empty, so the first poll always reports a change.
            ClientCaPoll::Unchanged => Err(TlsError::Config("no client CA loaded".to_string())),
        }
    }

    /// Reads the file and parses it if its bytes differ from the last
    /// successful load; a failed load keeps nothing and is retried next poll.
    pub fn poll(&mut self) -> ClientCaPoll {
        let pem = match std::fs::read(&self.path) {
            Ok(pem) => pem,
            Err(source) => {
                return ClientCaPoll::Failed(TlsError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        if self.last.as_deref() == Some(pem.as_slice()) {
            return ClientCaPoll::Unchanged;
        }
        match client_roots_from_pem(&pem, &self.path) {
            Ok(roots) => {
                self.last = Some(pem);
                ClientCaPoll::Changed(roots)
            }
            Err(e) => ClientCaPoll::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_cert_covers_localhost_and_loopback() {
        let cert = LoadedCert::dev_cert().expect("dev cert");
        let leaf = &cert.key.cert[0];
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("parse");
        let san = parsed
            .subject_alternative_name()
            .expect("extension")
            .expect("present");
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("7f:00:00:01")), "{names:?}");
        assert!(cert.not_after > time::OffsetDateTime::now_utc().unix_timestamp());
    }

    #[test]
    fn mismatched_key_is_rejected_and_unchanged_files_are_not_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).expect("a");
        let b = rcgen::generate_simple_self_signed(vec!["b.example".to_string()]).expect("b");
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, a.cert.pem()).expect("write");
        std::fs::write(&key, b.signing_key.serialize_pem()).expect("write");
        let mut source = CertSource::new(TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        });
        assert!(matches!(
            source.poll(),
            Poll::Failed(TlsError::Invalid { .. })
        ));
        std::fs::write(&key, a.signing_key.serialize_pem()).expect("write");
        assert!(matches!(source.poll(), Poll::Changed(_)));
        assert!(matches!(source.poll(), Poll::Unchanged));
        std::fs::write(&key, "garbage").expect("write");
        assert!(matches!(
            source.poll(),
            Poll::Failed(TlsError::NoKey { .. })
        ));
    }
}
