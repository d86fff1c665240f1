//! Bounded memory against the real server: the global budget for request
//! bytes in flight (429 with a metav1.Status and Retry-After), the per-
//! connection header limits of HTTP/1.1 and HTTP/2, and the admin port
//! staying outside the budget.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod server_support;

use serde_json::{Value, json};
use server_support::*;
use std::time::{Duration, Instant};

const BUDGET: usize = 64 * 1024;

async fn start() -> TestServer {
    let policies = test_policies();
    TestServer::start(&as_refs(&policies), |c| {
        c.max_body_bytes = 48 * 1024;
        c.max_inflight_body_bytes = BUDGET;
        c.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await
}

/// A ConfigMap review of about `bytes` bytes.
fn review_of(bytes: usize) -> Vec<u8> {
    configmap_create("budget", "fill", json!({"pad": "x".repeat(bytes)}))
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_byte_budget_answers_429_and_the_admin_port_is_unaffected() {
    let server = start().await;
    // A slow sender declares 40 KB and sends 10 bytes: its reservation holds.
    let mut holder = server.raw_tls().await;
    write_all(
        &mut holder,
        b"POST /validate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 40000\r\n\r\n{\"apiVers",
    )
    .await;

    // 30 KB more does not fit in 64 KiB: 429 at once, as a metav1.Status.
    let client = server.client(Http::One);
    let url = server.url("/validate");
    let refused = loop {
        // The holder's head may still be in flight: wait until it is counted.
        let response = post_review(&client, &url, review_of(30_000))
            .await
            .expect("answered");
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let status: Value = refused.json().await.expect("json");
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["reason"], "TooManyRequests", "{status}");
    assert_eq!(status["code"], 429, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("--max-inflight-body-bytes")),
        "{status}"
    );

    // A chunked body (no Content-Length) is reserved frame by frame: refused too.
    let mut chunked = server.raw_tls().await;
    let chunk = "y".repeat(30_000);
    let request = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    write_all(&mut chunked, request.as_bytes()).await;
    let (bytes, _) = read_to_end_within(&mut chunked, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");

    // The admin port shares nothing with the webhook port's budget.
    let admin_addr = server.admin.expect("admin port");
    let admin = client_with(&[&server.certs.ca_pem], Http::One, admin_addr, true);
    let admin_url = format!("http://{admin_addr}");
    let metrics = admin
        .get(format!("{admin_url}/metrics"))
        .send()
        .await
        .expect("admin metrics");
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.expect("text");
    assert!(
        metric(
            &metrics,
            "safety_gate_admission_rejections_total{endpoint=\"validate\",reason=\"over_budget\"}"
        ) >= 2.0,
        "{metrics}"
    );

    // The holder leaves: its reservation returns and 30 KB fits again.
    drop(holder);
    let waited = Instant::now();
    loop {
        let response = post_review(&client, &url, review_of(30_000))
            .await
            .expect("answered");
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the departed sender's bytes were never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_refused_on_http1_and_h2() {
    let server = start().await;
    let huge = "h".repeat(100 * 1024);
    for http in [Http::One, Http::Two] {
        let client = server.client(http);
        let refused = client
            .post(format!("{}?timeout=10s", server.url("/validate")))
            .header("X-Padding", huge.as_str())
            .body(review_of(10))
            .send()
            .await;
        match refused {
            // HTTP/1.1: 431; HTTP/2: 431 or the stream refused.
            Ok(response) => assert_eq!(response.status(), 431, "{http:?}"),
            Err(e) => assert!(!e.is_timeout(), "{http:?}: {e}"),
        }
        // The server is fine and answers the next ordinary request.
        let ok = post_review(
            &server.client(http),
            &server.url("/validate"),
            review_of(10),
        )
        .await
        .expect("answered");
        assert_eq!(ok.status(), 200, "{http:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_settings_bound_streams_per_connection() {
    let server = start().await;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_tls(
        &[&server.certs.ca_pem],
        &[b"h2"],
    )));
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("handshake");
    let (mut client, mut connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    let request = axum::http::Request::get("https://localhost/healthz")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    // Drive the connection until the answer arrives: by then the server's
    // SETTINGS frame has been received and acknowledged.
    let response = tokio::select! {
        r = response => r.expect("response"),
        e = &mut connection => panic!("the connection ended first: {e:?}"),
    };
    assert_eq!(response.status(), 200);
    assert_eq!(
        connection.max_concurrent_send_streams(),
        safety_gate::server::MAX_CONCURRENT_STREAMS as usize,
        "the server's SETTINGS_MAX_CONCURRENT_STREAMS"
    );
    drop(client);
    drop(connection);
    server.stop().await;
}
