//! Certificate rotation: the files change under a running server, the way a
//! Kubernetes Secret volume changes (a `..data` symlink swap), while clients
//! keep sending requests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod server_support;

use safety_gate::cli::certs::{GeneratedCerts, generate_with_validity};
use safety_gate::server::TlsSource;
use serde_json::{Value, json};
use server_support::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn certs(days: i64) -> GeneratedCerts {
    let names: Vec<String> = LOCAL_NAMES.iter().map(|s| s.to_string()).collect();
    generate_with_validity(&names, time::Duration::days(days)).expect("certs")
}

/// Lays out `mount` like kubelet does: `..<version>/` with the files,
/// `..data -> ..<version>`, and `tls.crt -> ..data/tls.crt` (same for the key).
fn publish(mount: &Path, version: &str, cert_pem: &str, key_pem: &str) {
    let versioned = mount.join(format!("..{version}"));
    std::fs::create_dir_all(&versioned).expect("mkdir");
    std::fs::write(versioned.join("tls.crt"), cert_pem).expect("write");
    std::fs::write(versioned.join("tls.key"), key_pem).expect("write");
    let tmp = mount.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
    // rename(2) replaces the symlink atomically, as kubelet's AtomicWriter does.
    std::fs::rename(&tmp, mount.join("..data")).expect("swap");
    for file in ["tls.crt", "tls.key"] {
        let link = mount.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).expect("symlink");
        }
    }
}

async fn wait_for_not_after(server: &TestServer, ca: &str, want: i64) {
    let client = client_with(&[ca], Http::One, server.addr, false);
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(server.url("/readyz")).send().await
            && let Ok(body) = r.json::<Value>().await
            && body["tls"]["notAfterUnix"].as_i64() == Some(want)
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "certificate not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn not_after(certs: &GeneratedCerts) -> i64 {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(certs.cert_pem.as_bytes()).expect("pem");
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("parse");
    cert.validity().not_after.timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_concurrent_requests_fails_none() {
    let mount_dir = tempfile::tempdir().expect("tempdir");
    let mount = mount_dir.path().to_path_buf();
    let first = certs(30);
    let second = certs(90);
    publish(&mount, "v1", &first.cert_pem, &first.key_pem);
    let tls = TlsSource::Files {
        cert: mount.join("tls.crt"),
        key: mount.join("tls.key"),
    };
    let policies = test_policies();
    let server = TestServer::start(&as_refs(&policies), move |c| c.tls = tls).await;
    let both = [first.ca_pem.as_str(), second.ca_pem.as_str()];

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for (i, (http, pooled)) in [
        (Http::One, true),
        (Http::One, true),
        (Http::Two, true),
        (Http::Two, true),
        (Http::One, false),
        (Http::One, false),
    ]
    .into_iter()
    .enumerate()
    {
        let client = client_with(&both, http, server.addr, pooled);
        let url = server.url("/validate");
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let uid = format!("w{i}-{n}");
                let body = configmap_create(&uid, "fine", json!({"k": "v"}))
                    .to_string()
                    .into_bytes();
                match post_review(&client, &url, body).await {
                    Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                        Ok(v) if v["response"]["uid"] == uid.as_str() => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures
                            .lock()
                            .expect("lock")
                            .push(format!("{uid}: {other:?}")),
                    },
                    other => failures
                        .lock()
                        .expect("lock")
                        .push(format!("{uid}: {other:?}")),
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::Relaxed);
    publish(&mount, "v2", &second.cert_pem, &second.key_pem);
    wait_for_not_after(&server, &second.ca_pem, not_after(&second)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let total = ok.load(Ordering::Relaxed);
    assert!(
        before > 10 && total > before + 10,
        "requests flowed before ({before}) and after ({total})"
    );

    // New handshakes get the new certificate: only its CA verifies them.
    let only_new = client_with(&[&second.ca_pem], Http::One, server.addr, false);
    assert_eq!(
        only_new
            .get(server.url("/healthz"))
            .send()
            .await
            .expect("new CA")
            .status(),
        200
    );
    let only_old = client_with(&[&first.ca_pem], Http::One, server.addr, false);
    assert!(
        only_old.get(server.url("/healthz")).send().await.is_err(),
        "old cert still served"
    );

    let metrics = reqwest_text(&only_new, &server.url("/metrics")).await;
    assert!(
        metric(&metrics, "safety_gate_tls_cert_reloads_total") >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "safety_gate_tls_cert_not_after_timestamp_seconds"),
        not_after(&second) as f64
    );
    server.stop().await;
}

async fn reqwest_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_update_keeps_the_old_certificate() {
    let mount_dir = tempfile::tempdir().expect("tempdir");
    let mount = mount_dir.path().to_path_buf();
    let first = certs(30);
    let other = certs(30);
    publish(&mount, "v1", &first.cert_pem, &first.key_pem);
    let tls = TlsSource::Files {
        cert: mount.join("tls.crt"),
        key: mount.join("tls.key"),
    };
    let policies = test_policies();
    let server = TestServer::start(&as_refs(&policies), move |c| c.tls = tls).await;
    // A key that belongs to another certificate.
    publish(&mount, "v2", &first.cert_pem, &other.key_pem);
    let client = client_with(&[&first.ca_pem], Http::One, server.addr, false);
    let started = Instant::now();
    let ready = loop {
        let ready: Value = client
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        if !ready["tls"]["lastReloadError"].is_null() {
            break ready;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        ready["ready"], true,
        "still serving the previous certificate"
    );
    let error = ready["tls"]["lastReloadError"]["error"]
        .as_str()
        .expect("error");
    assert!(error.contains("tls.key"), "{error}");
    let response = post_review(
        &client,
        &server.url("/validate"),
        configmap_create("after-broken", "fine", json!({}))
            .to_string()
            .into_bytes(),
    )
    .await
    .expect("request");
    assert_eq!(response.status(), 200);
    let metrics = reqwest_text(&client, &server.url("/metrics")).await;
    assert!(
        metric(&metrics, "safety_gate_tls_cert_reload_failures_total") >= 1.0,
        "{metrics}"
    );
    server.stop().await;
}

/// Handshakes with a rustls client that offers only `version`; the negotiated version.
async fn handshake_offering(
    server: &TestServer,
    version: &'static rustls::SupportedProtocolVersion,
) -> Option<rustls::ProtocolVersion> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server.certs.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .ok()?;
    tls.get_ref().1.protocol_version()
}

/// A TLS 1.1 ClientHello (legacy_version 3.2, no supported_versions
/// extension, one TLS 1.1 cipher suite), as an old client would send.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x02, 0xc0, 0x13]); // TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&u16::try_from(hello.len()).unwrap().to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_is_the_minimum_and_1_3_is_preferred() {
    let policies = test_policies();
    let server = TestServer::start(&as_refs(&policies), |_| {}).await;
    assert_eq!(
        handshake_offering(&server, &rustls::version::TLS12).await,
        Some(rustls::ProtocolVersion::TLSv1_2),
        "a TLS 1.2 client (an older kube-apiserver) gets a session"
    );
    assert_eq!(
        handshake_offering(&server, &rustls::version::TLS13).await,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // TLS 1.1 and older: an alert, then the connection closes; no session.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    write_all(&mut tcp, &tls11_client_hello()).await;
    let (bytes, closed) = read_to_end_within(&mut tcp, Duration::from_secs(5)).await;
    assert!(closed, "the server closes the connection");
    assert_eq!(
        bytes.first(),
        Some(&0x15),
        "an alert record, not a ServerHello: {bytes:02x?}"
    );
    assert!(bytes.len() <= 7, "only the alert: {bytes:02x?}");
    // The failed handshake's stream is dropped (the client sees the close)
    // before the server counts it, so the count may trail the close briefly.
    let waited = Instant::now();
    loop {
        let metrics = server.metrics().await;
        let failed = metric(
            &metrics,
            "safety_gate_connection_errors_total{reason=\"handshake_failed\"}",
        );
        if failed >= 1.0 {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(5), "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
