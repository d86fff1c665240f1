//! `review --cluster` and `audit --cluster` through the real binary against a
//! small fake API server on 127.0.0.1 (version, discovery, get, paged list),
//! answering the way kube-apiserver does: the cheap, fast tier for paging and
//! errors that are hard to provoke on a real server. The same commands run
//! against a real kube-apiserver in `tests/e2e` (cluster_commands.rs there).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use axum::extract::{Path as UrlPath, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;

fn status(code: u16, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": "NotFound", "code": code});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND),
        Json(body),
    )
        .into_response()
}

fn live_deployment() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/incident-3/live/deployments.json"
    ))
    .expect("fixture");
    let list: Value = serde_json::from_str(&text).expect("json");
    list["items"][0].clone()
}

fn latest_deployment() -> Value {
    json!({"metadata": {"name": "web", "namespace": "shop", "uid": "uid-web"},
           "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:latest"}]}}}})
}

async fn list_deployments(Query(q): Query<HashMap<String, String>>) -> Response {
    // Two pages, to exercise the continue token. Items of built-in kinds come
    // without apiVersion/kind in list responses.
    let mut first = live_deployment();
    first.as_object_mut().map(|o| {
        o.remove("apiVersion");
        o.remove("kind")
    });
    match q.get("continue").map(String::as_str) {
        None => Json(json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"continue": "page-2"}, "items": [first]})).into_response(),
        Some("page-2") => Json(json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {}, "items": [latest_deployment()]})).into_response(),
        Some(_) => status(410, "continue token expired"),
    }
}

async fn get_deployment(UrlPath((ns, name)): UrlPath<(String, String)>) -> Response {
    if ns == "english" && name == "english-grammar-web" {
        Json(live_deployment()).into_response()
    } else {
        status(404, &format!("deployments.apps \"{name}\" not found"))
    }
}

async fn start() -> String {
    let app = Router::new()
        .route("/version", get(|| async { Json(json!({"major": "1", "minor": "30", "gitVersion": "v1.30.0", "gitCommit": "x", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64"})) }))
        .route("/api", get(|| async { Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})) }))
        .route("/api/v1", get(|| async { Json(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace", "verbs": ["get", "list", "watch"]}]})) }))
        .route("/apis", get(|| async { Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]})) }))
        .route("/apis/apps/v1", get(|| async { Json(json!({"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
            {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["create", "get", "list", "watch"]}]})) }))
        .route("/apis/apps/v1/deployments", get(list_deployments))
        .route("/apis/apps/v1/namespaces/{ns}/deployments/{name}", get(get_deployment))
        .fallback(|| async { status(404, "the server could not find the requested resource") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn kubeconfig(dir: &std::path::Path, server: &str) -> String {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {server}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\ncurrent-context: t\nusers:\n- name: u\n  user:\n    token: not-a-real-token\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

async fn run(args: Vec<String>) -> (i32, String, String) {
    let out = tokio::process::Command::from(Command::new(env!("CARGO_BIN_EXE_safety-gate")))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .await
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_cluster_reads_the_live_object_and_catches_incident_3() {
    let server = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), &server);
    let (code, out, err) = run(vec![
        "review".into(),
        "tests/fixtures/incident-3/manifests".into(),
        "--cluster".into(),
        "--kubeconfig".into(),
        kc,
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 1, "{out}\n{err}");
    let results: Value = serde_json::from_str(&out).expect("json");
    let deployment = results
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["kind"] == "Deployment")
        .expect("reviewed");
    assert_eq!(
        deployment["operation"], "UPDATE",
        "the live object was read from the cluster"
    );
    assert_eq!(deployment["deniedBy"], json!(["immutable-fields"]));
    let service = results
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["kind"] == "Service")
        .expect("reviewed");
    assert_eq!(
        service["operation"], "CREATE",
        "a 404 from the cluster means the apply creates it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_cluster_lists_every_page_of_the_matched_kinds() {
    let server = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), &server);
    let (code, out, err) = run(vec![
        "audit".into(),
        "--cluster".into(),
        "--kubeconfig".into(),
        kc,
        "--policies".into(),
        "tests/fixtures/audit/policies".into(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 1, "{out}\n{err}");
    let results: Value = serde_json::from_str(&out).expect("json");
    let names: Vec<&str> = results
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["english-grammar-web", "web"],
        "both pages, apiVersion/kind filled in"
    );
    assert_eq!(results[0]["kind"], "Deployment");
    assert_eq!(results[1]["deniedBy"], json!(["no-latest-tag"]));
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_error_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), "http://127.0.0.1:1");
    let (code, _, err) = run(vec![
        "audit".into(),
        "--cluster".into(),
        "--kubeconfig".into(),
        kc.clone(),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach the cluster"), "{err}");
    let (code, _, err) = run(vec![
        "review".into(),
        "tests/fixtures/incident-3/manifests".into(),
        "--cluster".into(),
        "--kubeconfig".into(),
        kc,
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach the cluster"), "{err}");
}

/// As kubectl: without --kubeconfig, `--cluster` reads $KUBECONFIG, else
/// ~/.kube/config, and `--context` picks one of its contexts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_finds_the_kubeconfig_as_kubectl_does_and_context_picks_one() {
    let server = start().await;
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(home.path().join(".kube")).expect("mkdir");
    // The current context is a cluster that does not answer; `fake` does.
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: down\n  cluster:\n    server: http://127.0.0.1:1\n- name: fake\n  cluster:\n    server: {server}\ncontexts:\n- name: down\n  context: {{cluster: down, user: u}}\n- name: fake\n  context: {{cluster: fake, user: u}}\ncurrent-context: down\nusers:\n- name: u\n  user:\n    token: not-a-real-token\n"
    );
    std::fs::write(home.path().join(".kube/config"), &text).expect("write");
    let review = |extra: &[&str], kubeconfig_env: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_safety-gate"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("NO_COLOR", "1")
            .env("HOME", home.path())
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args([
                "review",
                "-f",
                "tests/fixtures/incident-3/manifests",
                "--cluster",
                "-o",
                "json",
            ])
            .args(extra);
        if let Some(path) = kubeconfig_env {
            cmd.env("KUBECONFIG", path);
        }
        let out = tokio::process::Command::from(cmd).output();
        async move {
            let out = out.await.expect("runs");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    // ~/.kube/config, context `fake`: the live Deployment is read and incident 3 is caught.
    let (code, out, err) = review(&["--context", "fake"], None).await;
    assert_eq!(code, 1, "{out}{err}");
    let results: Value = serde_json::from_str(&out).expect("json");
    assert!(
        results
            .as_array()
            .expect("array")
            .iter()
            .any(|r| r["kind"] == "Deployment" && r["operation"] == "UPDATE"),
        "{out}"
    );
    // Its current context is the one that does not answer.
    let (code, _, err) = review(&[], None).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach the cluster"), "{err}");
    // A context that does not exist is named.
    let (code, _, err) = review(&["--context", "nope"], None).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope"), "{err}");
    // $KUBECONFIG wins over ~/.kube/config.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(elsewhere.path(), &server);
    let (code, out, err) = review(&[], Some(std::path::Path::new(&kc))).await;
    assert_eq!(code, 1, "{out}{err}");
}
