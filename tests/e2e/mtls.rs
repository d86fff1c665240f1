//! `--client-ca-file` against the real kube-apiserver: kube-apiserver presents
//! the client certificate an AdmissionConfiguration `kubeConfigFile` names for
//! the gate's host, and its calls are answered; a client without that
//! certificate fails in the TLS handshake.

use super::Env;
use super::gate::{Gate, http_get};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

const POLICY: &str = r#"apiVersion: safety-gate.dev/v1alpha1
kind: GatePolicy
metadata:
  name: mtls-check
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  validations:
  - expression: "object.metadata.name != 'forbidden'"
    message: "configmaps named forbidden are refused (answered over mutual TLS)"
"#;

fn webhook(url: &str, ca_bundle: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: e2e-mtls-gate\nwebhooks:\n- name: mtls.safety-gate.dev\n  failurePolicy: Fail\n  timeoutSeconds: 5\n  sideEffects: None\n  admissionReviewVersions: [v1]\n  namespaceSelector:\n    matchLabels: {{kubernetes.io/metadata.name: mtls}}\n  rules:\n  - {{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}\n  clientConfig:\n    url: {url}/validate\n    caBundle: {ca_bundle}\n"
    )
}

/// A client CA (PEM) and a client certificate and key it signed.
fn client_pki(dir: &Path) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "safety-gate e2e webhook-client CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver-webhook-client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("cert");
    std::fs::create_dir_all(dir).expect("mkdir");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

struct Unregister<'a>(&'a Env);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.admin.run(&[
            "delete",
            "validatingwebhookconfiguration",
            "e2e-mtls-gate",
            "--ignore-not-found",
        ]);
    }
}

/// A TLS client that trusts the gate's CA and has no client certificate:
/// what it gets back for a plain GET.
fn without_certificate(port: u16, ca_pem: &[u8]) -> Result<String, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    Ok(answer)
}

pub fn mtls(env: &Env) {
    let dir = env.dir.join("mtls-gate");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(policies.join("mtls.yaml"), POLICY).expect("write policy");
    let (ca, cert, key) = client_pki(&dir);
    let ca_file = dir.join("client-ca.crt");
    std::fs::write(&ca_file, &ca).expect("write");
    let gate = Gate::start_with(
        &dir,
        &policies,
        &env.admin_kubeconfig,
        &env.pidfile,
        &[format!("--client-ca-file={}", ca_file.display())],
    );

    // kube-apiserver's side: a kubeconfig whose user is named after the
    // webhook's host:port, referenced by both webhook admission plugins.
    let cert_file = dir.join("webhook-client.crt");
    let key_file = dir.join("webhook-client.key");
    std::fs::write(&cert_file, &cert).expect("write");
    std::fs::write(&key_file, &key).expect("write");
    let kubeconfig = dir.join("webhook-kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: \"127.0.0.1:{port}\"\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n",
            port = gate.port,
            cert = cert_file.display(),
            key = key_file.display(),
        ),
    )
    .expect("write");
    let admission = dir.join("admission-configuration.yaml");
    let plugin = |name: &str| {
        format!(
            "- name: {name}\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            kubeconfig.display()
        )
    };
    std::fs::write(
        &admission,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
            plugin("ValidatingAdmissionWebhook"),
            plugin("MutatingAdmissionWebhook")
        ),
    )
    .expect("write");
    env.control_plane().restart_apiserver_with(&[format!(
        "--admission-control-config-file={}",
        admission.display()
    )]);

    use base64::Engine as _;
    let gate_ca = std::fs::read(gate.certs.join("ca.crt")).expect("ca");
    let bundle = base64::engine::general_purpose::STANDARD.encode(&gate_ca);
    env.admin.run(&["create", "namespace", "mtls"]);
    env.admin
        .apply_stdin(&["apply", "-f", "-"], &webhook(&gate.url(), &bundle))
        .expect_ok("register the mTLS gate");
    let _cleanup = Unregister(env);

    // (a) kube-apiserver's calls are answered: the gate's own denial and an allowed create.
    let denied = env.eventually(
        "the mTLS gate answers kube-apiserver",
        std::time::Duration::from_secs(20),
        || {
            let out = env
                .admin
                .run(&["create", "configmap", "forbidden", "-n", "mtls"]);
            if out
                .stderr
                .contains("admission webhook \"mtls.safety-gate.dev\" denied the request")
            {
                Ok(out)
            } else {
                Err(format!("{out:#?}"))
            }
        },
    );
    assert!(
        denied.stderr.contains("answered over mutual TLS"),
        "{denied:#?}"
    );
    env.admin
        .run(&["create", "configmap", "fine", "-n", "mtls"])
        .expect_ok("an allowed ConfigMap passes the mTLS gate");

    // (b) a client without the certificate fails in the TLS handshake.
    let refused = without_certificate(gate.port, &gate_ca);
    let error = refused.expect_err("a client without a certificate was answered");
    assert!(
        error.to_lowercase().contains("certificate"),
        "not a TLS certificate error: {error}"
    );
    let (_, metrics) = http_get(gate.admin_port, "/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with("safety_gate_connection_errors_total{reason=\"client_certificate\"}")),
        "{metrics}"
    );
    let answered = metrics
        .lines()
        .filter(|l| l.starts_with("safety_gate_admission_requests_total{endpoint=\"validate\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(answered >= 2.0, "{metrics}");
}
