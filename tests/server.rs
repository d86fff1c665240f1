//! The webhook over real sockets: HTTPS with a verified certificate, HTTP/1.1
//! and h2, kube-apiserver-shaped requests, bad input, limits, shutdown.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod server_support;

use base64::Engine as _;
use serde_json::{Value, json};
use server_support::*;
use std::time::{Duration, Instant};

async fn start_default() -> TestServer {
    let policies = test_policies();
    TestServer::start(&as_refs(&policies), |_| {}).await
}

fn response_of(body: &Value) -> &Value {
    body.get("response").expect("an AdmissionReview response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_get_verified_answers_over_http1_and_h2() {
    let Some(dir) = samples_dir() else { return };
    let server = start_default().await;
    for http in [Http::One, Http::Two] {
        let client = server.client(http);
        for (file, name) in [
            ("01-create-pod.kube-rs.json", "create_pod"),
            ("02-delete-pod.openyurt.json", "delete_pod"),
            (
                "03-update-pod-status-subresource.kyverno.request.json",
                "update_pod_status",
            ),
        ] {
            let review = sample_review(&dir, file);
            let uid = review["request"]["uid"].as_str().expect("uid").to_string();
            let response = post_review(
                &client,
                &server.url("/validate"),
                review.to_string().into_bytes(),
            )
            .await
            .expect("request");
            let want = match http {
                Http::One => reqwest::Version::HTTP_11,
                Http::Two => reqwest::Version::HTTP_2,
            };
            assert_eq!(response.version(), want, "{file}");
            assert_eq!(response.status(), 200, "{file}");
            assert_eq!(
                response.headers()["content-type"],
                "application/json",
                "{file}"
            );
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(body["kind"], "AdmissionReview");
            assert_eq!(response_of(&body)["uid"], uid.as_str(), "uid round-trips");
            if http == Http::One {
                insta::assert_json_snapshot!(format!("validate_{name}"), body);
            }
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_names_the_policy_with_status_code() {
    let server = start_default().await;
    let client = server.client(Http::One);
    let body = configmap_create("deny-1", "forbidden", json!({"k": "v"}));
    let response = post_review(
        &client,
        &server.url("/validate"),
        body.to_string().into_bytes(),
    )
    .await
    .expect("request");
    assert_eq!(
        response.status(),
        200,
        "a denial is an answer, not an HTTP error"
    );
    let body: Value = response.json().await.expect("json");
    let r = response_of(&body);
    assert_eq!(r["allowed"], false);
    assert_eq!(r["uid"], "deny-1");
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-forbidden-configmaps")),
        "{r}"
    );
    insta::assert_json_snapshot!("validate_configmap_denied", body);

    let allowed = configmap_create("allow-1", "fine", json!({"k": "v"}));
    let body: Value = post_review(
        &client,
        &server.url("/validate"),
        allowed.to_string().into_bytes(),
    )
    .await
    .expect("request")
    .json()
    .await
    .expect("json");
    assert_eq!(response_of(&body)["allowed"], true);
    assert!(
        response_of(&body).get("patch").is_none(),
        "/validate never patches"
    );
    insta::assert_json_snapshot!("validate_configmap_allowed", body);

    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "safety_gate_admission_requests_total{endpoint=\"validate\",verdict=\"denied\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "safety_gate_admission_requests_total{endpoint=\"validate\",verdict=\"allowed\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "safety_gate_policy_evaluations_total{policy=\"no-forbidden-configmaps\",outcome=\"failed\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "safety_gate_admission_duration_seconds_count{endpoint=\"validate\"}"
        ) >= 2.0
    );
    server.stop().await;
}

/// Plain ValidatingAdmissionPolicy documents get kube-apiserver's answer: 422
/// Invalid by default, its wording, the first denial only, one warning per failed
/// validation of a Warn binding, `validation_failure` only for Audit bindings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vap_denial_is_answered_as_kube_apiserver_answers() {
    let vap = |name: &str, message: &str, actions: &str| {
        format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: {name}\nspec:\n{CM_RULES}  validations:\n  - expression: \"object.metadata.name != 'forbidden'\"\n    message: {message}\n  - expression: \"object.metadata.name.size() < 5\"\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: {name}-binding\nspec:\n  policyName: {name}\n  validationActions: {actions}\n"
        )
    };
    let deny = vap("deny-forbidden", "no forbidden configmaps", "[Deny, Audit]");
    let warn = vap("warn-forbidden", "forbidden is a bad name", "[Warn]");
    let also = vap("also-deny", "also no", "[Deny]");
    let server = TestServer::start(
        &[("a.yaml", &deny), ("b.yaml", &warn), ("c.yaml", &also)],
        |_| {},
    )
    .await;
    let client = server.client(Http::One);
    let body = configmap_create("vap-1", "forbidden", json!({"k": "v"}));
    let body: Value = post_review(
        &client,
        &server.url("/validate"),
        body.to_string().into_bytes(),
    )
    .await
    .expect("request")
    .json()
    .await
    .expect("json");
    let r = response_of(&body);
    assert_eq!(r["status"]["code"], 422, "{r}");
    insta::assert_json_snapshot!("validate_vap_denied", body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_answers_one_base64_json_patch_and_is_idempotent() {
    let server = start_default().await;
    let client = server.client(Http::Two);
    let review = configmap_create("mutate-1", "web-config", json!({"k": "v"}));
    let body: Value = post_review(
        &client,
        &server.url("/mutate"),
        review.to_string().into_bytes(),
    )
    .await
    .expect("request")
    .json()
    .await
    .expect("json");
    let r = response_of(&body);
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let patch = r["patch"].as_str().expect("patch is a base64 string");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("base64");
    let ops: json_patch::Patch = serde_json::from_slice(&decoded).expect("RFC 6902 patch");
    insta::assert_json_snapshot!("mutate_configmap_patch_ops", ops);
    insta::assert_json_snapshot!("mutate_configmap", body);

    // Send the patched object back: nothing left to change.
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &ops).expect("patch applies");
    let mut again = review.clone();
    again["request"]["object"] = object;
    again["request"]["uid"] = json!("mutate-2");
    let body: Value = post_review(
        &client,
        &server.url("/mutate"),
        again.to_string().into_bytes(),
    )
    .await
    .expect("request")
    .json()
    .await
    .expect("json");
    assert_eq!(response_of(&body)["uid"], "mutate-2");
    assert!(response_of(&body).get("patch").is_none(), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_400_and_is_counted() {
    let server = start_default().await;
    let client = server.client(Http::One);
    let cases: [(&str, Vec<u8>); 5] = [
        ("not_json", b"this is not json".to_vec()),
        ("not_admission_review", br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec()),
        (
            "wrong_api_version",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#.to_vec(),
        ),
        ("missing_request", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec()),
        ("empty_body", Vec::new()),
    ];
    for (name, body) in cases {
        for path in ["/validate", "/mutate"] {
            let response = post_review(&client, &server.url(path), body.clone())
                .await
                .expect("request");
            assert_eq!(response.status(), 400, "{name} {path}");
            assert_eq!(response.headers()["content-type"], "application/json");
            let body: Value = response.json().await.expect("a JSON error body");
            assert!(body["error"].is_string(), "{name}: {body}");
            if path == "/validate" {
                insta::assert_json_snapshot!(format!("bad_input_{name}"), body);
            }
        }
    }
    let wrong = post_review(
        &client,
        &server.url("/validate"),
        br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#.to_vec(),
    )
    .await
    .expect("request");
    let text = wrong.text().await.expect("text");
    assert!(
        text.contains("admission.k8s.io/v1"),
        "names the supported version: {text}"
    );

    // The server keeps answering good requests.
    let ok = post_review(
        &client,
        &server.url("/validate"),
        configmap_create("after-bad", "fine", json!({}))
            .to_string()
            .into_bytes(),
    )
    .await
    .expect("request");
    assert_eq!(ok.status(), 200);
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "safety_gate_admission_rejections_total{endpoint=\"validate\",reason=\"bad_request\"}"
        ) >= 5.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "safety_gate_admission_rejections_total{endpoint=\"mutate\",reason=\"bad_request\"}"
        ) >= 5.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_are_refused() {
    let server = start_default().await;
    let client = server.client(Http::One);
    let response = client
        .get(server.url("/nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert!(body["error"].is_string());
    let response = client
        .get(server.url("/validate"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    let server = start_default_with(|c| c.max_body_bytes = 64 * 1024).await;
    let client = server.client(Http::One);
    let big = configmap_create("big", "big", json!({"blob": "x".repeat(100 * 1024)}));
    let response = post_review(
        &client,
        &server.url("/validate"),
        big.to_string().into_bytes(),
    )
    .await
    .expect("request");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("65536")),
        "{body}"
    );
    insta::assert_json_snapshot!("body_too_large", body);

    // Without Content-Length (chunked), the limit applies while reading.
    let mut tls = server.raw_tls().await;
    let head = "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    write_all(&mut tls, head.as_bytes()).await;
    let chunk = vec![b' '; 32 * 1024];
    let mut answered = Vec::new();
    for _ in 0..4 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if tokio::io::AsyncWriteExt::write_all(&mut tls, &frame)
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = tokio::io::AsyncWriteExt::write_all(&mut tls, b"0\r\n\r\n").await;
    let (bytes, _) = read_to_end_within(&mut tls, Duration::from_secs(5)).await;
    answered.extend_from_slice(&bytes);
    let text = String::from_utf8_lossy(&answered);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    // Small requests still pass.
    let ok = post_review(
        &client,
        &server.url("/validate"),
        configmap_create("small", "small", json!({}))
            .to_string()
            .into_bytes(),
    )
    .await
    .expect("request");
    assert_eq!(ok.status(), 200);
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "safety_gate_admission_rejections_total{endpoint=\"validate\",reason=\"body_too_large\"}"
        ) >= 2.0,
        "{metrics}"
    );
    server.stop().await;
}

async fn start_default_with(
    tweak: impl FnOnce(&mut safety_gate::server::ServerConfig),
) -> TestServer {
    let policies = test_policies();
    TestServer::start(&as_refs(&policies), tweak).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_and_does_not_block_others() {
    let server = start_default_with(|c| c.read_timeout = Duration::from_millis(700)).await;
    let mut tls = server.raw_tls().await;
    let head = "POST /validate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\":";
    write_all(&mut tls, head.as_bytes()).await;

    // Meanwhile, a normal request is answered at once.
    let client = server.client(Http::One);
    let started = Instant::now();
    let ok = post_review(
        &client,
        &server.url("/validate"),
        configmap_create("meanwhile", "fine", json!({}))
            .to_string()
            .into_bytes(),
    )
    .await
    .expect("request");
    assert_eq!(ok.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(600));

    let (bytes, closed) = read_to_end_within(&mut tls, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\""), "{text}");
    assert!(closed, "the connection is closed after a 408");
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "safety_gate_admission_rejections_total{endpoint=\"validate\",reason=\"body_timeout\"}"
        ) >= 1.0,
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_close_the_connection() {
    let server = start_default_with(|c| c.read_timeout = Duration::from_millis(500)).await;
    let mut tls = server.raw_tls().await;
    write_all(&mut tls, b"POST /validate HTTP/1.1\r\nHost: loc").await;
    let started = Instant::now();
    let (_bytes, closed) = read_to_end_within(&mut tls, Duration::from_secs(5)).await;
    assert!(closed, "closed by the header read timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_closed_and_counted() {
    let server = start_default().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    write_all(
        &mut tcp,
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    let (bytes, closed) = read_to_end_within(&mut tcp, Duration::from_secs(5)).await;
    assert!(closed, "connection closed");
    assert!(
        !String::from_utf8_lossy(&bytes).contains("HTTP/1.1"),
        "no HTTP answer on the TLS port"
    );
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "safety_gate_connection_errors_total{reason=\"not_tls\"}"
        ) >= 1.0,
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_with_a_wrong_alpn_is_refused_and_counted() {
    let server = start_default().await;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_tls(
        &[&server.certs.ca_pem],
        &[b"spdy/3.1"],
    )));
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let result = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await;
    let Err(error) = result else {
        panic!("the handshake with an unknown ALPN succeeded")
    };
    assert!(
        error.to_string().to_lowercase().contains("protocol"),
        "{error}"
    );

    // A client without ALPN at all still gets HTTP/1.1.
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_tls(
        &[&server.certs.ca_pem],
        &[],
    )));
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("handshake without ALPN");
    write_all(
        &mut tls,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (bytes, _) = read_to_end_within(&mut tls, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200"));

    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "safety_gate_connection_errors_total{reason=\"no_application_protocol\"}"
        ) >= 1.0,
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_nothing_in_flight() {
    // A long read timeout: only the disconnect can end the request early.
    let server = start_default_with(|c| c.read_timeout = Duration::from_secs(30)).await;
    for _ in 0..5 {
        let mut tls = server.raw_tls().await;
        write_all(
            &mut tls,
            b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n{\"apiVersion\":",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(tls);
    }
    let started = Instant::now();
    loop {
        let metrics = server.metrics().await;
        if metric(&metrics, "safety_gate_admission_in_flight ") == 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still in flight: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_also_on_the_admin_port() {
    let server =
        start_default_with(|c| c.admin_listen = Some("127.0.0.1:0".parse().expect("addr"))).await;
    let admin = server.admin.expect("admin port");
    let plain = reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(&[&server.certs.ca_pem], &[b"http/1.1"]))
        .build()
        .expect("client");
    let health: Value = plain
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    let ready = plain
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let mut ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["policies"]["generation"], 1);
    assert_eq!(ready["policies"]["count"], 3);
    for (section, field) in [
        ("policies", "loadedAt"),
        ("policies", "dir"),
        ("tls", "source"),
        ("tls", "notAfter"),
        ("tls", "notAfterUnix"),
        ("tls", "loadedAt"),
    ] {
        ready[section][field] = json!("[volatile]");
    }
    insta::assert_json_snapshot!("readyz", ready);
    let metrics = plain
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "safety_gate_policy_set_generation 1",
        "safety_gate_policies_loaded 3",
        "safety_gate_tls_cert_not_after_timestamp_seconds",
        "safety_gate_policy_reload_failures_total 0",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    // With an admin port, the webhook port keeps operational detail to itself.
    let tls = server.client(Http::One);
    let response = tls
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let brief: Value = tls
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(brief, json!({"ready": true}));
    // The webhook routes are not on the admin port.
    let response = plain
        .post(format!("http://{admin}/validate"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_honoured() {
    let server = start_default().await;
    let client = server.client(Http::One);
    let started = Instant::now();
    let response = client
        .post(server.url("/validate?timeout=1s"))
        .header("Content-Type", "application/json")
        .body(configmap_create("t1", "forbidden", json!({})).to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    let body: Value = response.json().await.expect("json");
    assert_eq!(response_of(&body)["allowed"], false);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_then_refuses_connections() {
    let mut server = start_default_with(|c| c.read_timeout = Duration::from_secs(10)).await;
    let review = configmap_create("in-flight", "forbidden", json!({})).to_string();
    let (first, rest) = review.as_bytes().split_at(20);
    let mut tls = server.raw_tls().await;
    let head = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        review.len()
    );
    write_all(&mut tls, head.as_bytes()).await;
    write_all(&mut tls, first).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let serve = server.begin_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Not accepting any more.
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(server.addr),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "new connections are refused while draining"
    );

    // The request in flight completes.
    write_all(&mut tls, rest).await;
    let (bytes, _) = read_to_end_within(&mut tls, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"uid\":\"in-flight\""), "{text}");
    let result = tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .expect("drains in time")
        .expect("task");
    assert!(result.is_ok());
}

#[test]
fn sigterm_drains_and_exits_zero() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_safety-gate");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--dev-cert",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--policies",
        ])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut listening = None;
    for line in lines.by_ref() {
        let line = line.expect("line");
        if line.contains("listening") {
            listening = Some(line);
            break;
        }
    }
    let line = listening.expect("the server logs that it listens");
    let log: Value = serde_json::from_str(&line).expect("JSON log line");
    assert!(
        log["listen"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{line}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(exit.success(), "exit status {exit:?}; log: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("shutdown complete")),
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutating_admission_policy_is_served_on_mutate() {
    const MAP: &str = "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicy\nmetadata: {name: label-configmaps}\nspec:\n  reinvocationPolicy: Never\n  matchConstraints:\n    resourceRules:\n    - {apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}\n  mutations:\n  - patchType: ApplyConfiguration\n    applyConfiguration:\n      expression: 'Object{metadata: Object.metadata{labels: {\"owner\": request.userInfo.username}}}'\n  - patchType: JSONPatch\n    jsonPatch:\n      expression: '[JSONPatch{op: \"remove\", path: \"/data/\" + jsonpatch.escapeKey(\"secret/key\")}]'\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicyBinding\nmetadata: {name: label-configmaps}\nspec: {policyName: label-configmaps}\n";
    let server = TestServer::start(&[("map.yaml", MAP)], |_| {}).await;
    let client = server.client(Http::One);
    let post = |review: Value| {
        let client = client.clone();
        let url = server.url("/mutate");
        async move {
            post_review(&client, &url, review.to_string().into_bytes())
                .await
                .expect("request")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let review = configmap_create("map-1", "web", json!({"secret/key": "x", "k": "v"}));
    let body = post(review.clone()).await;
    let r = response_of(&body);
    assert_eq!(r["allowed"], true, "{body}");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().expect("a patch"))
        .expect("base64");
    let ops: json_patch::Patch = serde_json::from_slice(&decoded).expect("RFC 6902 patch");
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &ops).expect("patch applies");
    assert_eq!(object["metadata"]["labels"]["owner"], "alice@example.com");
    assert_eq!(object["data"], json!({"k": "v"}));

    // The key is gone now: the remove is an invalid patch, failurePolicy Fail refuses.
    let body = post(configmap_create("map-2", "web", json!({"k": "v"}))).await;
    let r = response_of(&body);
    assert_eq!(r["allowed"], false, "{body}");
    assert_eq!(r["status"]["code"], 403);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with(
                "policy 'label-configmaps' with binding 'label-configmaps' denied request: "
            ),
        "{body}"
    );
    assert!(r.get("patch").is_none(), "{body}");
    server.stop().await;
}

/// A matched request is evaluated on the async worker only for a short slice;
/// a slow policy is stopped there and evaluated again on the blocking pool.
/// With a single async worker (the server and the clients share it), a second
/// connection is answered while the slow evaluation still runs, and the slow
/// one still gets its real answer, not a deadline or cancellation fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_slow_evaluation_does_not_stall_other_connections() {
    // About 2 s of CPU in a debug build on a 20,000-character value (see
    // tests/server_cancel.rs); instant when `data.s` is absent.
    let policy = format!(
        "apiVersion: safety-gate.dev/v1alpha1\nkind: GatePolicy\nmetadata:\n  name: slow\nspec:\n  failurePolicy: Fail\n{CM_RULES}  validations:\n  - expression: \"!has(object.data.s) || lists.range(200).all(i, object.data.s.split('').size() >= 0)\"\n"
    );
    let server = TestServer::start(&[("slow.yaml", &policy)], |_| {}).await;
    let slow_body = serde_json::to_vec(&configmap_create(
        "slow",
        "big",
        json!({"s": "b".repeat(20_000)}),
    ))
    .unwrap();
    let slow_client = server.client(Http::One);
    let url = server.url("/validate");
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let response = post_review(&slow_client, &url, slow_body)
            .await
            .expect("slow review");
        (
            response.status(),
            response.json::<Value>().await.expect("json"),
        )
    });
    // Let the slow review reach its evaluation.
    tokio::time::sleep(Duration::from_millis(200)).await;

    for http in [Http::One, Http::Two] {
        let asked = Instant::now();
        let quick = post_review(
            &server.client(http),
            &server.url("/validate"),
            serde_json::to_vec(&configmap_create("quick", "small", json!({}))).unwrap(),
        )
        .await
        .expect("quick review");
        assert_eq!(quick.status(), 200);
        let answer: Value = quick.json().await.expect("json");
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "{http:?}: a quick review waited {:?} behind the slow one",
            asked.elapsed()
        );
        assert!(
            !slow.is_finished(),
            "the slow review was answered ({:?}) before a quick one sent after it: \
             the slow evaluation held the only async worker (or was too fast to prove anything)",
            started.elapsed()
        );
    }

    let (status, answer) = slow.await.expect("slow task");
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let metrics = server.metrics().await;
    assert_eq!(
        metric(&metrics, "safety_gate_admission_deadline_exceeded_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "safety_gate_admission_evaluations_cancelled_total"
        ),
        0.0,
        "{metrics}"
    );
    server.stop().await;
}
