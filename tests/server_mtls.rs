//! `--client-ca-file`: only a client certificate signed by that CA gets a TLS
//! session (and so reviews answered); anyone else fails in the handshake. A
//! rotated CA file applies without a restart; a broken one keeps the last.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod server_support;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use server_support::*;

/// A CA and a client certificate it signed (PEM): (ca, client cert, client key).
fn client_pki(common_name: &str) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{common_name} CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name.to_string());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn client(server: &TestServer, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server.certs.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .resolve("localhost", server.addr)
        .http1_only()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_with_a_certificate_from_the_client_ca_are_answered() {
    let (ca, cert, key) = client_pki("kube-apiserver");
    let (_, stranger_cert, stranger_key) = client_pki("kube-apiserver");
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &ca).unwrap();
    let policies = test_policies();
    let server = TestServer::start(&as_refs(&policies), |c| {
        c.client_ca = Some(ca_file.clone());
        c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let body = || {
        configmap_create("mtls", "fine", json!({}))
            .to_string()
            .into_bytes()
    };

    let response = post_review(
        &client(&server, Some((&cert, &key))),
        &server.url("/validate"),
        body(),
    )
    .await
    .expect("a client with the CA's certificate is answered");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    for (who, identity) in [
        ("no certificate", None),
        (
            "a certificate from another CA with the same name",
            Some((stranger_cert.as_str(), stranger_key.as_str())),
        ),
    ] {
        let refused =
            post_review(&client(&server, identity), &server.url("/validate"), body()).await;
        let error = refused.expect_err(who);
        assert!(error.is_connect() || error.is_request(), "{who}: {error:?}");
    }

    let admin = client_with(
        &[&server.certs.ca_pem],
        Http::One,
        server.admin.unwrap(),
        true,
    );
    let metrics = admin
        .get(format!("http://{}/metrics", server.admin.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(
            &metrics,
            "safety_gate_connection_errors_total{reason=\"client_certificate\"}"
        ) >= 2.0,
        "{metrics}"
    );
    server.stop().await;
}

/// Posts one review with `identity`; `Ok(status)` or the transport error.
async fn review_with(server: &TestServer, identity: (&str, &str)) -> Result<u16, reqwest::Error> {
    let body = configmap_create("mtls", "fine", json!({}))
        .to_string()
        .into_bytes();
    post_review(
        &client(server, Some(identity)),
        &server.url("/validate"),
        body,
    )
    .await
    .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_ca_file_applies_without_a_restart_and_a_broken_one_keeps_the_last() {
    let (old_ca, old_cert, old_key) = client_pki("kube-apiserver");
    let (new_ca, new_cert, new_key) = client_pki("kube-apiserver");
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &old_ca).unwrap();
    let policies = test_policies();
    let server = TestServer::start(&as_refs(&policies), |c| {
        c.client_ca = Some(ca_file.clone());
        c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = client_with(
        &[&server.certs.ca_pem],
        Http::One,
        server.admin.unwrap(),
        true,
    );
    let admin_metrics = || async {
        admin
            .get(format!("http://{}/metrics", server.admin.unwrap()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert_eq!(
        review_with(&server, (&old_cert, &old_key)).await.unwrap(),
        200
    );
    assert!(review_with(&server, (&new_cert, &new_key)).await.is_err());

    // The CA is rotated as a Secret update would: the new bundle replaces the file.
    std::fs::write(&ca_file, &new_ca).unwrap();
    let waited = std::time::Instant::now();
    while review_with(&server, (&new_cert, &new_key)).await.is_err() {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(10),
            "the rotated client CA was never taken: {}",
            admin_metrics().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        review_with(&server, (&old_cert, &old_key)).await.is_err(),
        "the replaced CA's clients are refused"
    );
    let metrics = admin_metrics().await;
    assert_eq!(
        metric(&metrics, "safety_gate_tls_client_ca_reloads_total"),
        1.0,
        "{metrics}"
    );

    // A broken bundle is reported and the last good CA keeps being required.
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let waited = std::time::Instant::now();
    loop {
        let metrics = admin_metrics().await;
        if metric(&metrics, "safety_gate_tls_client_ca_reload_failures_total") >= 1.0 {
            break;
        }
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(10),
            "the broken client CA was never reported: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        review_with(&server, (&new_cert, &new_key)).await.unwrap(),
        200
    );
    assert!(review_with(&server, (&old_cert, &old_key)).await.is_err());
    server.stop().await;
}

#[test]
fn a_client_ca_file_without_certificates_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.crt");
    std::fs::write(&file, "not a certificate").unwrap();
    let error = safety_gate::server::tls::client_roots(&file).expect_err("refused");
    assert!(error.to_string().contains("empty.crt"), "{error}");
}
