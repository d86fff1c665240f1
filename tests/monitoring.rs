//! deploy/monitoring (Grafana dashboard, PrometheusRule) against the metric
//! names the gate really exports: a server with the shipped policies and live
//! lookups answers reviews, then its /metrics is read. kube-apiserver's own
//! metric in the rules is checked against a real kube-apiserver in tests/e2e
//! (failure_modes.rs, gate stopped).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod server_support;

use serde_json::{Value, json};
use server_support::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The metric names (sample names: `_total`, `_bucket`, … included) in an exposition.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every `safety_gate_*` name a PromQL expression reads.
fn gate_names(expr: &str) -> Vec<String> {
    regex::Regex::new(r"\bsafety_gate_[a-z0-9_]+")
        .expect("regex")
        .find_iter(expr)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// /metrics of a gate that has answered reviews on both endpoints, refused a
/// malformed one, and watches the kinds the shipped policies look up (against
/// a cluster that does not answer, so the caches exist and are not synced).
async fn real_metrics() -> String {
    let policies: Vec<(String, String)> = std::fs::read_dir(repo().join("policies"))
        .expect("policies/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).expect("read policy"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = policies
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: down\n  cluster: {server: 'http://127.0.0.1:1'}\ncontexts:\n- name: down\n  context: {cluster: down, user: u}\ncurrent-context: down\nusers:\n- name: u\n  user: {token: not-a-real-token}\n",
    )
    .expect("write kubeconfig");
    let client = safety_gate::cluster::client_from(Some(&kubeconfig), None)
        .await
        .expect("client");
    let live = safety_gate::cluster::LiveCluster::new(client);
    let server = TestServer::start(&refs, |c| {
        c.cluster = std::sync::Arc::new(live.clone());
        c.live = Some(live.clone());
    })
    .await;
    let http = server.client(Http::One);
    for endpoint in ["/validate", "/mutate"] {
        let body = serde_json::to_vec(&configmap_create("uid-1", "settings", json!({"a": "b"})))
            .expect("json");
        let answer = post_review(&http, &server.url(endpoint), body)
            .await
            .expect("review answered");
        assert!(answer.status().is_success(), "{endpoint}");
    }
    // A policy evaluation: protect-namespaces denies deleting kube-system.
    let delete = review(json!({
        "uid": "uid-2",
        "kind": {"group": "", "version": "v1", "kind": "Namespace"},
        "resource": {"group": "", "version": "v1", "resource": "namespaces"},
        "name": "kube-system",
        "operation": "DELETE",
        "userInfo": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "oldObject": {"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "kube-system", "labels": {"kubernetes.io/metadata.name": "kube-system"}}},
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions"}
    }));
    let answer = post_review(
        &http,
        &server.url("/validate"),
        serde_json::to_vec(&delete).expect("json"),
    )
    .await
    .expect("answered");
    let answer: Value = answer.json().await.expect("review");
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let refused = post_review(&http, &server.url("/validate"), b"{not json".to_vec())
        .await
        .expect("answered");
    assert_eq!(refused.status().as_u16(), 400);
    let metrics = server.metrics().await;
    server.stop().await;
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_read_only_metrics_the_gate_exports() {
    let exported = exported_names(&real_metrics().await);
    for must in [
        "safety_gate_admission_requests_total",
        "safety_gate_admission_duration_seconds_bucket",
        "safety_gate_cluster_cache_synced",
    ] {
        assert!(
            exported.contains(must),
            "{must} not in /metrics: {exported:?}"
        );
    }

    // Grafana: every panel queries, and every gate metric it reads is real.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/monitoring/grafana-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut read = BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            for name in gate_names(expr) {
                assert!(
                    exported.contains(&name),
                    "dashboard {}: {name} is not exported",
                    panel["title"]
                );
                read.insert(name);
            }
        }
    }
    let exported_gate: BTreeSet<_> = exported
        .iter()
        .filter(|n| n.starts_with("safety_gate_"))
        .filter(|n| !n.ends_with("_sum") && !n.ends_with("_count"))
        .filter(|n| {
            !n.starts_with("safety_gate_policy_set_generation")
                && !n.contains("tls_cert_reload")
                && !n.contains("tls_client_ca_reload")
                && !n.contains("connection")
        })
        .cloned()
        .collect();
    let unread: Vec<_> = exported_gate.difference(&read).collect();
    assert!(unread.is_empty(), "exported but on no panel: {unread:?}");

    // PrometheusRule: the five conditions, each on real metrics.
    let rule: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("deploy/monitoring/prometheusrule.yaml"))
            .expect("rule"),
    )
    .expect("rule is YAML");
    assert_eq!(rule["kind"], "PrometheusRule");
    let alerts = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules");
    let names: Vec<&str> = alerts.iter().filter_map(|a| a["alert"].as_str()).collect();
    assert_eq!(
        names,
        [
            "SafetyGateDownWhileFailClosed",
            "SafetyGateCertificateExpiresSoon",
            "SafetyGatePolicyReloadFailing",
            "SafetyGateLookupCacheNotSynced",
            "SafetyGateLatencyNearWebhookTimeout",
        ]
    );
    for alert in alerts {
        let expr = alert["expr"].as_str().expect("expr");
        for name in gate_names(expr) {
            assert!(
                exported.contains(&name),
                "{}: {name} is not exported",
                alert["alert"]
            );
        }
        assert!(
            alert["labels"]["severity"].is_string(),
            "{}",
            alert["alert"]
        );
        assert!(
            alert["annotations"]["summary"].is_string(),
            "{}",
            alert["alert"]
        );
    }
    let expr_of = |name: &str| {
        alerts
            .iter()
            .find(|a| a["alert"] == name)
            .and_then(|a| a["expr"].as_str())
            .expect("alert")
            .to_string()
    };
    assert!(expr_of("SafetyGateCertificateExpiresSoon").ends_with("< 14 * 24 * 3600"));
    // "Near the timeout" is below the shortest timeoutSeconds the gate's webhooks have.
    let webhooks =
        std::fs::read_to_string(repo().join("deploy/base/webhooks.yaml")).expect("webhooks");
    let shortest = regex::Regex::new(r"timeoutSeconds: (\d+)")
        .expect("regex")
        .captures_iter(&webhooks)
        .filter_map(|c| c[1].parse::<f64>().ok())
        .fold(f64::INFINITY, f64::min);
    let latency = expr_of("SafetyGateLatencyNearWebhookTimeout");
    let threshold: f64 = latency
        .rsplit("> ")
        .next()
        .and_then(|t| t.trim().parse().ok())
        .expect("a > threshold");
    assert!(
        threshold < shortest && threshold >= shortest / 2.0,
        "p99 threshold {threshold} s vs shortest timeoutSeconds {shortest} s"
    );
}

#[test]
fn monitoring_kustomization_builds_with_the_dashboard_in_a_configmap() {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", "deploy/monitoring"])
        .current_dir(repo())
        .output()
        .expect("kubectl is on PATH (apt-get install -y kubectl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = text
        .split("\n---\n")
        .map(|d| serde_saphyr::from_str(d).expect("yaml"))
        .collect();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap", "PrometheusRule", "ServiceMonitor"])
    );
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value =
        serde_json::from_str(cm["data"]["safety-gate.json"].as_str().expect("dashboard"))
            .expect("json");
    assert_eq!(embedded["uid"], "safety-gate");
    assert!(
        docs.iter()
            .all(|d| d["metadata"]["namespace"] == "safety-gate")
    );
}
