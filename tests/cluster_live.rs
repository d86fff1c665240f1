//! Live cluster state without a real cluster: client configuration paths, and
//! the real discovery + watcher + reflector path against a small fake API
//! server on 127.0.0.1 that answers discovery, list and watch the way
//! kube-apiserver does (JSON lines for watch events, Status bodies for errors).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use safety_gate::cluster::{LiveCluster, client_from};
use safety_gate::policy::ClusterNeeds;
use safety_gate::policy::ClusterState;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;

fn kubeconfig(dir: &Path, server: &str, ca_pem: Option<&str>) -> PathBuf {
    let ca = ca_pem
        .map(|pem| {
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}{ca}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: gate\n    namespace: gate-system\ncurrent-context: test\nusers:\n- name: gate\n  user:\n    token: not-a-real-token\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn kubeconfig_with_a_ca_builds_a_client_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let ca =
        rcgen::generate_simple_self_signed(vec!["kubernetes.default.svc".to_string()]).unwrap();
    let path = kubeconfig(dir.path(), "https://127.0.0.1:1", Some(&ca.cert.pem()));
    let client = client_from(Some(&path), None).await.unwrap();
    // The context's namespace proves the file, not a default, was read.
    assert_eq!(client.default_namespace(), "gate-system");
}

#[tokio::test]
async fn missing_kubeconfig_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let err = client_from(Some(&path), None)
        .await
        .err()
        .expect("an error")
        .to_string();
    assert!(err.contains("cannot read kubeconfig"), "{err}");
    assert!(err.contains("nope.yaml"), "{err}");
}

#[tokio::test]
async fn kubeconfig_without_a_current_context_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters: []\n").unwrap();
    let err = client_from(Some(&path), None)
        .await
        .err()
        .expect("an error")
        .to_string();
    assert!(err.contains("invalid kubeconfig"), "{err}");
    assert!(err.contains("kubeconfig"), "{err}");
}

#[tokio::test]
async fn a_ca_that_is_not_pem_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), "https://127.0.0.1:1", Some("not a certificate"));
    let err = client_from(Some(&path), None)
        .await
        .err()
        .expect("an error")
        .to_string();
    assert!(err.contains("no PEM CERTIFICATE"), "{err}");
}

#[test]
fn without_any_cluster_configuration_the_cluster_commands_say_where_they_looked() {
    // As kubectl: --kubeconfig, $KUBECONFIG, ~/.kube/config, in-cluster. A
    // fresh HOME and no KUBECONFIG or service-account environment leaves none.
    let home = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_safety-gate"))
        .args(["audit", "--cluster", "--policies"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("run safety-gate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no cluster configuration"), "{err}");
    assert!(
        err.contains("--kubeconfig") && err.contains("KUBECONFIG"),
        "{err}"
    );
}

// ---- fake API server -------------------------------------------------------

#[derive(Clone)]
struct Fake {
    widgets: Arc<std::sync::Mutex<Vec<Value>>>,
    widget_events: broadcast::Sender<Option<String>>,
    /// Lists and watches of widgets answer 500 (the API server is in trouble).
    failing: Arc<AtomicBool>,
    widget_watches: Arc<AtomicUsize>,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

fn resource_list(group_version: &str, resources: Value) -> Response {
    Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
        .into_response()
}

async fn core_v1() -> Response {
    resource_list(
        "v1",
        json!([{"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]),
    )
}

async fn group(UrlPath((group, version)): UrlPath<(String, String)>) -> Response {
    if group == "example.dev" && version == "v1" {
        resource_list(
            "example.dev/v1",
            json!([
                {"name": "widgets", "singularName": "widget", "namespaced": true, "kind": "Widget", "verbs": ["get", "list", "watch"]},
                {"name": "gadgets", "singularName": "gadget", "namespaced": true, "kind": "Gadget", "verbs": ["get", "list", "watch"]},
            ]),
        )
    } else {
        // What a real kube-apiserver 1.37 answers for a group version it does
        // not serve (seen in the end-to-end tier): plain text, no Status.
        (
            StatusCode::NOT_FOUND,
            [("content-type", "text/plain; charset=utf-8")],
            "404 page not found\n",
        )
            .into_response()
    }
}

fn watch_body(events: broadcast::Receiver<Option<String>>) -> Response {
    let stream = futures::stream::unfold(events, |mut events| async move {
        match events.recv().await {
            Ok(Some(line)) => Some((Ok::<_, Infallible>(Bytes::from(line + "\n")), events)),
            _ => None,
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(500, "InternalError", "cannot build response"))
}

async fn namespaces(Query(q): Query<HashMap<String, String>>) -> Response {
    if q.get("watch").is_some_and(|w| w == "true") {
        // Never sends an event; idle until the test ends.
        let (tx, rx) = broadcast::channel(1);
        std::mem::forget(tx);
        return watch_body(rx);
    }
    // Items of built-in kinds come without apiVersion/kind in a list response.
    Json(json!({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": "5"}, "items": [
        {"metadata": {"name": "team-a", "resourceVersion": "3", "labels": {"safety-gate.dev/protected": "true"}}},
        {"metadata": {"name": "team-b", "resourceVersion": "4"}},
    ]}))
    .into_response()
}

async fn resources(
    State(fake): State<Fake>,
    UrlPath((group, version, resource)): UrlPath<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if group != "example.dev" || version != "v1" {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    if resource == "gadgets" {
        return status(
            403,
            "Forbidden",
            "gadgets.example.dev is forbidden: User \"system:serviceaccount:gate-system:safety-gate\" cannot list resource \"gadgets\" in API group \"example.dev\" at the cluster scope",
        );
    }
    if resource != "widgets" {
        return status(404, "NotFound", "not found");
    }
    if fake.failing.load(Ordering::SeqCst) {
        return status(500, "InternalError", "etcdserver: request timed out");
    }
    if q.get("watch").is_some_and(|w| w == "true") {
        fake.widget_watches.fetch_add(1, Ordering::SeqCst);
        return watch_body(fake.widget_events.subscribe());
    }
    let items = fake.widgets.lock().map(|w| w.clone()).unwrap_or_default();
    Json(json!({"kind": "WidgetList", "apiVersion": "example.dev/v1", "metadata": {"resourceVersion": "10"}, "items": items}))
        .into_response()
}

fn widget(name: &str, size: i64, rv: &str) -> Value {
    json!({"apiVersion": "example.dev/v1", "kind": "Widget",
        "metadata": {"name": name, "namespace": "prod", "resourceVersion": rv,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\":1}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"size": size}})
}

async fn start_fake() -> (Fake, String) {
    let (widget_events, _) = broadcast::channel(16);
    let fake = Fake {
        widgets: Arc::new(std::sync::Mutex::new(vec![widget("w1", 1, "8")])),
        widget_events,
        failing: Arc::new(AtomicBool::new(false)),
        widget_watches: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route("/api/v1", get(core_v1))
        .route("/api/v1/namespaces", get(namespaces))
        .route("/apis/{group}/{version}", get(group))
        .route("/apis/{group}/{version}/{resource}", get(resources))
        .fallback(|| async { status(404, "NotFound", "not found") })
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, format!("http://{addr}"))
}

/// Polls `check` for up to 20 s: the watcher runs in the background, and
/// retries after errors with the default backoff (0.8 s, then doubling).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn names(cluster: &LiveCluster) -> Vec<String> {
    match cluster.list("example.dev/v1", "Widget", Some("prod")) {
        Ok(kube_cel::cel::Value::List(items)) => items
            .iter()
            .filter_map(|o| {
                let json = safety_gate::policy::values::cel_to_json(o).ok()?;
                Some(json["metadata"]["name"].as_str()?.to_string())
            })
            .collect(),
        other => panic!("not a list: {other:?}"),
    }
}

fn widget_stats(cluster: &LiveCluster) -> safety_gate::cluster::KindStats {
    cluster
        .stats()
        .into_iter()
        .find(|k| k.kind == "Widget")
        .expect("a Widget cache")
}

#[tokio::test]
async fn real_watcher_against_a_fake_api_server() {
    let (fake, url) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_from(Some(&kubeconfig(dir.path(), &url, None)), None)
        .await
        .unwrap();
    let cluster = LiveCluster::new(client);
    cluster
        .reconcile(&ClusterNeeds {
            kinds: vec![
                ("example.dev/v1".into(), "Gadget".into()),
                ("example.dev/v1".into(), "Widget".into()),
                ("missing.dev/v1".into(), "Thing".into()),
            ],
            namespaces: true,
            authorizer: false,
        })
        .await;

    eventually("Widget and Namespace caches synced", || {
        cluster
            .stats()
            .iter()
            .filter(|k| k.kind == "Widget" || k.kind == "Namespace")
            .all(|k| k.usable)
    })
    .await;
    assert_eq!(names(&cluster), ["w1"]);
    let Ok(kube_cel::cel::Value::List(listed)) = cluster.list("example.dev/v1", "Widget", None)
    else {
        panic!("not a list")
    };
    let w1 = safety_gate::policy::values::cel_to_json(&listed[0]).unwrap();
    assert!(w1["metadata"].get("managedFields").is_none(), "{w1}");
    assert!(w1["metadata"].get("annotations").is_none(), "{w1}");
    assert_eq!(w1["spec"]["size"], 1);
    assert_eq!(
        widget_stats(&cluster).resource.as_deref(),
        Some("widgets.example.dev")
    );

    let ns = cluster.namespace("team-a").unwrap().unwrap();
    assert_eq!(
        ns.labels
            .get("safety-gate.dev/protected")
            .map(String::as_str),
        Some("true")
    );
    assert!(
        cluster
            .namespace("team-b")
            .unwrap()
            .unwrap()
            .labels
            .is_empty()
    );
    assert!(cluster.namespace("team-c").unwrap().is_none());

    // RBAC denial: an error naming the kind and why.
    eventually("Gadget and Thing report their errors", || {
        cluster
            .stats()
            .iter()
            .filter(|k| k.kind == "Gadget" || k.kind == "Thing")
            .all(|k| k.last_error.is_some())
    })
    .await;
    let err = cluster
        .list("example.dev/v1", "Gadget", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("RBAC") && err.contains("gadgets.example.dev"),
        "{err}"
    );
    // A kind the API server does not serve (no CRD) has no objects: an empty
    // list, not an error, so a cluster without KubeFed is not failed closed.
    let things = cluster
        .list("missing.dev/v1", "Thing", None)
        .expect("an empty list");
    assert!(
        matches!(things, kube_cel::cel::Value::List(ref l) if l.is_empty()),
        "{things:?}"
    );
    let thing = cluster
        .stats()
        .into_iter()
        .find(|k| k.kind == "Thing")
        .expect("Thing stats");
    assert!(
        thing.usable
            && thing
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("does not serve missing.dev/v1"))
    );
    let readiness = cluster.ready();
    assert!(
        readiness.ready,
        "settled caches (denied or unserved) do not hold readiness: {readiness}"
    );
    assert!(
        readiness.to_string().contains("Gadget"),
        "the denied kind is named: {readiness}"
    );

    // Watch events: add, modify, delete.
    eventually("a widget watch is open", || {
        fake.widget_watches.load(Ordering::SeqCst) > 0 && fake.widget_events.receiver_count() > 0
    })
    .await;
    let send = |t: &str, o: Value| {
        fake.widget_events
            .send(Some(json!({"type": t, "object": o}).to_string()))
            .unwrap();
    };
    send("ADDED", widget("w2", 2, "11"));
    eventually("w2 added", || names(&cluster) == ["w1", "w2"]).await;
    send("MODIFIED", widget("w2", 5, "12"));
    eventually("w2 modified", || {
        let Ok(kube_cel::cel::Value::List(items)) =
            cluster.list("example.dev/v1", "Widget", Some("prod"))
        else {
            return false;
        };
        items.iter().any(|o| {
            safety_gate::policy::values::cel_to_json(o).is_ok_and(|j| j["spec"]["size"] == 5)
        })
    })
    .await;
    send("DELETED", widget("w1", 1, "13"));
    eventually("w1 deleted", || names(&cluster) == ["w2"]).await;

    // The API server fails and the watch drops: last state served, errors counted.
    fake.failing.store(true, Ordering::SeqCst);
    let watches_before = fake.widget_watches.load(Ordering::SeqCst);
    fake.widget_events.send(None).unwrap();
    eventually("the lost watch is counted", || {
        widget_stats(&cluster).watch_errors > 0
    })
    .await;
    let stats = widget_stats(&cluster);
    assert!(stats.usable && !stats.healthy, "{stats:?}");
    assert!(
        stats
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("etcdserver"),
        "{stats:?}"
    );
    assert_eq!(names(&cluster), ["w2"]);

    // Recovery: the watch resumes and events flow again.
    fake.failing.store(false, Ordering::SeqCst);
    eventually("the watch is back", || {
        fake.widget_watches.load(Ordering::SeqCst) > watches_before
            && fake.widget_events.receiver_count() > 0
    })
    .await;
    send("ADDED", widget("w3", 3, "14"));
    eventually("w3 added after recovery", || {
        names(&cluster) == ["w2", "w3"]
    })
    .await;
    assert!(widget_stats(&cluster).healthy);

    // 410 Gone: the watcher lists again and the new list replaces the state.
    *fake.widgets.lock().unwrap() = vec![widget("w9", 9, "20")];
    let errors_before = widget_stats(&cluster).watch_errors;
    send(
        "ERROR",
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 14 (20)", "reason": "Expired", "code": 410}),
    );
    eventually("re-listed after 410 Gone", || names(&cluster) == ["w9"]).await;
    let stats = widget_stats(&cluster);
    assert!(
        stats.watch_errors > errors_before && stats.healthy,
        "{stats:?}"
    );

    // A reload that no longer reads Widgets stops its cache and its watch.
    cluster
        .reconcile(&ClusterNeeds {
            kinds: vec![],
            namespaces: true,
            authorizer: false,
        })
        .await;
    assert!(
        cluster
            .list("example.dev/v1", "Widget", None)
            .unwrap_err()
            .to_string()
            .contains("not watched")
    );
    eventually("the widget watch is closed", || {
        fake.widget_events.receiver_count() == 0
    })
    .await;
    assert!(cluster.ready().ready, "{}", cluster.ready());
}
