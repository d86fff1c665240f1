//! Cancellation against the real server: a client that gives up stops the
//! work done for it. One test in its own binary, so the process CPU time read
//! from /proc belongs to this server alone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod server_support;

use serde_json::json;
use server_support::*;
use std::time::{Duration, Instant};

/// Four validations that each split the 20,000-character value 200 times: a
/// runtime cost of about 802,000 each, under Kubernetes' limits (see the
/// README's Runtime cost), about 2 s of CPU each in a debug build. Every step
/// of `all` is a check point.
fn slow_policy() -> String {
    format!(
        "apiVersion: safety-gate.dev/v1alpha1\nkind: GatePolicy\nmetadata:\n  name: slow\nspec:\n  failurePolicy: Fail\n{CM_RULES}  validations:\n  - expression: \"!has(object.data.s) || lists.range(200).all(i, object.data.s.split('').size() >= -0)\"\n  - expression: \"!has(object.data.s) || lists.range(200).all(i, object.data.s.split('').size() >= -1)\"\n  - expression: \"!has(object.data.s) || lists.range(200).all(i, object.data.s.split('').size() >= -2)\"\n  - expression: \"!has(object.data.s) || lists.range(200).all(i, object.data.s.split('').size() >= -3)\"\n"
    )
}

/// utime + stime of this process, in seconds.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // USER_HZ is 100 on every Linux the tests run on.
    ticks / 100.0
}

async fn cancelled(server: &TestServer, reason: &str) -> f64 {
    metric(
        &server.metrics().await,
        &format!(
            "safety_gate_admission_evaluations_cancelled_total{{endpoint=\"validate\",reason=\"{reason}\"}}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_stops_its_evaluation() {
    let policy = slow_policy();
    // One evaluation at a time: a runaway evaluation would hold the only permit.
    let server = TestServer::start(&[("slow.yaml", &policy)], |c| c.max_concurrency = 1).await;
    let big = "b".repeat(20_000);
    for (round, http) in [Http::One, Http::Two].into_iter().enumerate() {
        // A client that gives up after 50 ms, as kube-apiserver does at its timeout.
        let impatient = client_with(&[&server.certs.ca_pem], http, server.addr, false);
        let body = serde_json::to_vec(&configmap_create("slow", "big", json!({"s": big}))).unwrap();
        let gave_up = impatient
            .post(format!("{}?timeout=30s", server.url("/validate")))
            .header("Content-Type", "application/json")
            .timeout(Duration::from_millis(50))
            .body(body)
            .send()
            .await;
        assert!(
            gave_up.is_err(),
            "{http:?}: the slow review was answered within 50 ms"
        );
        drop(impatient);

        // The event: the evaluation reports that it stopped for the departed client.
        let waited = Instant::now();
        while cancelled(&server, "client_gone").await < (round + 1) as f64 {
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "{http:?}: the evaluation was not cancelled after the client left:\n{}",
                server.metrics().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // No CPU burnt for it afterwards: an evaluation still running would use
        // about a core; an idle server uses next to nothing.
        let before = process_cpu_seconds();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let burnt = process_cpu_seconds() - before;
        assert!(
            burnt < 0.5,
            "{http:?}: {burnt:.2} s of CPU in 2 s after the cancellation"
        );

        // The only permit is free again: a second review is evaluated, not
        // answered by the deadline fallback.
        let small =
            serde_json::to_vec(&configmap_create("fine", "small", json!({"s": "ab"}))).unwrap();
        let response = post_review(&server.client(http), &server.url("/validate"), small)
            .await
            .expect("second review");
        assert_eq!(response.status(), 200);
        let answer: serde_json::Value = response.json().await.expect("json");
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        let metrics = server.metrics().await;
        assert_eq!(
            metric(&metrics, "safety_gate_admission_deadline_exceeded_total"),
            0.0,
            "{metrics}"
        );
    }
    server.stop().await;
}
