//! `safety-gate certs`: a CA and a serving certificate for the webhook Service.
//!
//! kube-apiserver connects to `<service>.<namespace>.svc` and checks the name
//! against the certificate's SANs, and verifies the chain against the
//! webhook configuration's `caBundle`, which this command prints. The CA key
//! is never written: to rotate, run the command again and update caBundle.

use anyhow::Context;
use base64::Engine as _;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into (created if missing).
    #[arg(long)]
    pub out: PathBuf,

    /// Name of the webhook's Service.
    #[arg(long, default_value = "safety-gate")]
    pub service: String,

    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "safety-gate")]
    pub namespace: String,

    /// A further DNS name or IP address for the serving certificate (repeatable), for
    /// a gate that kube-apiserver calls by URL (`safety-gate manifests --url`), e.g.
    /// `--host 127.0.0.1`.
    #[arg(long = "host", value_name = "NAME_OR_IP")]
    pub hosts: Vec<String>,

    /// Replace an existing ca.crt. Every run makes a new CA: a webhook
    /// configuration whose caBundle still holds the old one rejects the new
    /// certificate (and a fail-closed webhook then denies). See certs/README.md
    /// for rotating without that window.
    #[arg(long)]
    pub force: bool,
}

/// PEM-encoded output of [`generate`].
#[derive(Debug, Clone)]
pub struct GeneratedCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl GeneratedCerts {
    /// The webhook configuration's `caBundle`: base64 of the CA PEM.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }
}

/// The names kube-apiserver may use for a Service.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A fresh CA (valid 5 years) and a serving certificate (valid 1 year) for
/// `names` (DNS names or IP addresses), signed by it. ECDSA P-256.
pub fn generate(names: &[String]) -> anyhow::Result<GeneratedCerts> {
    generate_with_validity(names, time::Duration::days(365))
}

/// As [`generate`], with the serving certificate valid for `validity`.
pub fn generate_with_validity(
    names: &[String],
    validity: time::Duration,
) -> anyhow::Result<GeneratedCerts> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    // Tolerate clocks a little behind ours.
    let not_before = now - time::Duration::minutes(5);

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "safety-gate webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = now + time::Duration::days(5 * 365);
    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("cannot sign the CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(names.to_vec())
        .with_context(|| format!("invalid certificate names {names:?}"))?;
    let common_name = names.get(2).or(names.first()).cloned().unwrap_or_default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = now + validity;
    let key = KeyPair::generate().context("cannot generate the serving key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the serving certificate")?;
    Ok(GeneratedCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`.
pub fn write_files(dir: &Path, certs: &GeneratedCerts) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomically(&dir.join("ca.crt"), certs.ca_pem.as_bytes(), false)?;
    write_atomically(&dir.join("tls.crt"), certs.cert_pem.as_bytes(), false)?;
    write_atomically(&dir.join("tls.key"), certs.key_pem.as_bytes(), true)?;
    Ok(())
}

/// Writes next to the target and renames, so a server polling the files never
/// reads half a file; a private file is created 0600, never readable by others.
fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        // `mode` only applies when the file is created; a stale temp file keeps its mode.
        use std::os::unix::fs::PermissionsExt;
        let mode = if private { 0o600 } else { 0o644 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set permissions on {}", tmp.display()))?;
    }
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// A `--host` must be a DNS name or an IP address: a scheme, a port or a
/// space would give a certificate name no client ever matches.
fn check_host(host: &str) -> anyhow::Result<()> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let valid_dns = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if valid_dns {
        return Ok(());
    }
    anyhow::bail!(
        "--host {host:?} is neither an IP address nor a DNS name (give the host alone: no https://, no :port)"
    )
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let existing = args.out.join("ca.crt");
    if existing.exists() && !args.force {
        anyhow::bail!(
            "{} exists: a new run makes a new CA, and webhooks whose caBundle holds the old one would \
             reject the gate. Rotate as certs/README.md describes, then pass --force to replace it",
            existing.display()
        );
    }
    for host in &args.hosts {
        check_host(host)?;
    }
    let mut names = service_names(&args.service, &args.namespace);
    names.extend(args.hosts.iter().cloned());
    let certs = generate(&names)?;
    write_files(&args.out, &certs)?;
    let dir = args.out.display();
    eprintln!("wrote {dir}/ca.crt, {dir}/tls.crt and {dir}/tls.key (0600)");
    eprintln!("serving certificate names: {}", names.join(", "));
    eprintln!("serve with: safety-gate serve --tls-cert {dir}/tls.crt --tls-key {dir}/tls.key");
    eprintln!("caBundle for the webhook configurations (clientConfig.caBundle):");
    println!("{}", certs.ca_bundle());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_chain_kube_apiserver_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = CertsArgs {
            out: dir.path().join("out"),
            service: "gate".to_string(),
            namespace: "infra".to_string(),
            hosts: vec!["127.0.0.1".to_string()],
            force: false,
        };
        run(args.clone()).expect("certs");
        let out = dir.path().join("out");
        // A second run would replace the CA that webhooks trust: only with --force.
        let first_ca = std::fs::read(out.join("ca.crt")).expect("ca");
        let err = run(args.clone()).expect_err("refuses to replace the CA");
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read(out.join("ca.crt")).expect("ca"), first_ca);
        run(CertsArgs {
            force: true,
            ..args.clone()
        })
        .expect("--force replaces it");
        for bad in ["https://10.0.0.5", "10.0.0.5:8443", "foo bar", ""] {
            let err = run(CertsArgs {
                force: true,
                hosts: vec![bad.to_string()],
                ..args.clone()
            })
            .expect_err(bad);
            assert!(err.to_string().contains("--host"), "{bad}: {err}");
        }
        assert_ne!(std::fs::read(out.join("ca.crt")).expect("ca"), first_ca);
        let ca = std::fs::read(out.join("ca.crt")).expect("ca");
        let cert = std::fs::read(out.join("tls.crt")).expect("cert");
        let key = std::fs::read(out.join("tls.key")).expect("key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join("tls.key"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = crate::server::tls::LoadedCert::from_pem(
            &cert,
            &key,
            &out.join("tls.crt"),
            &out.join("tls.key"),
        )
        .expect("the key matches the certificate");
        let (_, leaf) =
            x509_parser::parse_x509_certificate(loaded.key.cert[0].as_ref()).expect("parse");
        let san = leaf
            .subject_alternative_name()
            .expect("ext")
            .expect("present");
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        for want in [
            "gate",
            "gate.infra",
            "gate.infra.svc",
            "gate.infra.svc.cluster.local",
        ] {
            assert!(
                names.iter().any(|n| n == &format!("DNSName({want})")),
                "{want} missing in {names:?}"
            );
        }
        // The chain verifies against the CA as kube-apiserver would check it.
        use rustls::pki_types::pem::PemObject;
        let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(&ca).expect("ca pem");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).expect("root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            crate::server::tls::provider(),
        )
        .build()
        .expect("verifier");
        use rustls::client::danger::ServerCertVerifier;
        let name = rustls::pki_types::ServerName::try_from("gate.infra.svc").expect("name");
        verifier
            .verify_server_cert(
                &loaded.key.cert[0],
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .expect("verifies");
        // --host 127.0.0.1: a gate called by URL on loopback verifies too.
        let ip = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("ip");
        verifier
            .verify_server_cert(
                &loaded.key.cert[0],
                &[],
                &ip,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .expect("the IP SAN verifies");
    }
}
