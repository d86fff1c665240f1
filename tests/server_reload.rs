//! Policy hot reload under load: each decision comes from exactly one policy
//! set, no request fails, and a broken edit keeps the previous set serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod server_support;

use serde_json::{Value, json};
use server_support::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Two policies in one file, both denying with messages tagged `tag`.
fn generation(tag: &str) -> String {
    format!(
        "{}---\n{}",
        deny_forbidden("p-one", &format!("one-{tag}")),
        deny_forbidden("p-two", &format!("two-{tag}"))
    )
}

/// Replaces the file in one rename, as an editor or a ConfigMap update would.
fn replace(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

async fn wait_for(server: &TestServer, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let ready = server.readyz().await;
        if check(&ready) {
            return ready;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_nothing_and_never_mixes_sets() {
    let server = TestServer::start(&[("set.yaml", &generation("A"))], |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new((
        0usize,
        0usize,
        Vec::<String>::new(),
    )));
    let mut workers = Vec::new();
    for (i, http) in [Http::One, Http::One, Http::Two, Http::Two]
        .into_iter()
        .enumerate()
    {
        let client = server.client(http);
        let url = server.url("/validate");
        let (stop, seen) = (stop.clone(), seen.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let uid = format!("r{i}-{n}");
                let body = configmap_create(&uid, "forbidden", json!({}))
                    .to_string()
                    .into_bytes();
                let outcome = match post_review(&client, &url, body).await {
                    Ok(r) if r.status() == 200 => {
                        r.json::<Value>().await.map_err(|e| e.to_string())
                    }
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                let mut seen = seen.lock().expect("lock");
                match outcome {
                    Ok(v) => {
                        let message = v["response"]["status"]["message"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        let a = message.contains("one-A") && message.contains("two-A");
                        let b = message.contains("one-B") && message.contains("two-B");
                        if v["response"]["uid"] != uid.as_str() || v["response"]["allowed"] != false
                        {
                            seen.2.push(format!("{uid}: {v}"));
                        } else if a && !b {
                            seen.0 += 1;
                        } else if b && !a {
                            seen.1 += 1;
                        } else {
                            seen.2.push(format!("{uid}: mixed or unknown: {message}"));
                        }
                    }
                    Err(e) => seen.2.push(format!("{uid}: {e}")),
                }
            }
        }));
    }

    let dir = server.policy_dir();
    for (want, tag) in (2..).zip(["B", "A", "B", "A", "B"]) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        replace(&dir, "set.yaml", &generation(tag));
        wait_for(&server, "the new generation", |r| {
            r["policies"]["generation"] == want
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let (a, b, failures) = seen.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} bad: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(a > 0 && b > 0, "both sets served: A={a} B={b}");
    let metrics = server.metrics().await;
    assert_eq!(
        metric(&metrics, "safety_gate_policy_set_generation "),
        6.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "safety_gate_policy_reloads_total") >= 5.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_keeps_the_previous_set_and_is_reported() {
    let server = TestServer::start(&[("set.yaml", &generation("A"))], |_| {}).await;
    let dir = server.policy_dir();
    let broken = generation("B").replace(
        "object.metadata.name != 'forbidden'",
        "object.metadata.name != ",
    );
    replace(&dir, "set.yaml", &broken);
    let ready = wait_for(&server, "the reload error", |r| {
        !r["policies"]["lastReloadError"].is_null()
    })
    .await;
    assert_eq!(
        ready["ready"], true,
        "the previous set keeps serving: {ready}"
    );
    assert_eq!(ready["policies"]["generation"], 1);
    let errors = ready["policies"]["lastReloadError"]["errors"]
        .as_array()
        .expect("errors");
    assert!(
        errors
            .iter()
            .filter_map(Value::as_str)
            .any(|e| e.contains("set.yaml:") && e.contains("expression")),
        "file:line and field named: {errors:?}"
    );

    let client = server.client(Http::One);
    let body: Value = post_review(
        &client,
        &server.url("/validate"),
        configmap_create("during-broken", "forbidden", json!({}))
            .to_string()
            .into_bytes(),
    )
    .await
    .expect("request")
    .json()
    .await
    .expect("json");
    let message = body["response"]["status"]["message"].as_str().unwrap_or("");
    assert!(message.contains("one-A"), "{body}");
    let metrics = server.metrics().await;
    assert!(
        metric(&metrics, "safety_gate_policy_reload_failures_total") >= 1.0,
        "{metrics}"
    );

    // Fixing the file clears the error and serves the new set.
    replace(&dir, "set.yaml", &generation("B"));
    let ready = wait_for(&server, "the fixed set", |r| {
        r["policies"]["generation"] == 2
    })
    .await;
    assert!(ready["policies"]["lastReloadError"].is_null(), "{ready}");
    server.stop().await;
}
