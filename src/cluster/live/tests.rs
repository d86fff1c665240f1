//! The cache layer, fed with the `watcher::Event`s kube-runtime produces,
//! through the same `KindWriter::apply` the watch task calls.

use super::cache::{KindWriter, LAST_APPLIED, WatchFailure};
use super::*;
use crate::policy::values::cel_to_json;
use kube::core::Status;
use kube::runtime::watcher::Event;
use serde_json::json;

const FED: &str = "core.kubefed.io/v1beta1";
const FED_KIND: &str = "KubeFedCluster";

fn obj(v: serde_json::Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

fn fed(name: &str, namespace: &str, endpoint: &str) -> DynamicObject {
    obj(json!({
        "apiVersion": FED, "kind": FED_KIND,
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "7"},
        "spec": {"apiEndpoint": endpoint},
    }))
}

fn offline_cluster() -> LiveCluster {
    // Never contacted: these tests attach caches without watch tasks.
    let config = Config::new("http://127.0.0.1:1".parse().unwrap());
    LiveCluster::new(Client::try_from(config).unwrap())
}

fn items(v: Result<Value, LookupError>) -> Vec<serde_json::Value> {
    match cel_to_json(&v.unwrap()).unwrap() {
        serde_json::Value::Array(items) => items,
        other => panic!("not a list: {other}"),
    }
}

fn names(v: Result<Value, LookupError>) -> Vec<String> {
    items(v)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn sync(writer: &mut KindWriter, objects: Vec<DynamicObject>) {
    writer.apply(Event::Init);
    for o in objects {
        writer.apply(Event::InitApply(o));
    }
    writer.apply(Event::InitDone);
}

fn forbidden() -> WatchFailure {
    WatchFailure::from_watcher(&watcher::Error::InitialListFailed(kube::Error::Api(
        Box::new(Status {
            code: 403,
            reason: "Forbidden".into(),
            message: "kubefedclusters.core.kubefed.io is forbidden: User \"system:serviceaccount:gate:gate\" cannot list resource \"kubefedclusters\"".into(),
            ..Status::default()
        }),
    )))
}

#[tokio::test]
async fn unsynced_kind_is_an_error_not_an_empty_list() {
    let cluster = offline_cluster();
    let mut w = cluster.attach(FED, FED_KIND);
    let err = cluster.list(FED, FED_KIND, None).unwrap_err();
    assert!(err.to_string().contains("KubeFedCluster"), "{err}");
    assert!(err.to_string().contains("not synced"), "{err}");

    // A list in progress is buffered: still not synced.
    w.apply(Event::Init);
    w.apply(Event::InitApply(fed(
        "host",
        "kube-federation-system",
        "https://10.0.0.1",
    )));
    assert!(cluster.list(FED, FED_KIND, None).is_err());
    assert!(!cluster.ready().ready);

    w.apply(Event::InitDone);
    assert_eq!(names(cluster.list(FED, FED_KIND, None)), ["host"]);
    assert!(cluster.ready().ready);
}

#[tokio::test]
async fn a_kind_no_policy_reads_is_unavailable() {
    let cluster = offline_cluster();
    let err = cluster.list("v1", "ConfigMap", Some("x")).unwrap_err();
    assert!(err.to_string().contains("ConfigMap (v1)"), "{err}");
    assert!(err.to_string().contains("not watched"), "{err}");
    let err = cluster.namespace("team-a").unwrap_err();
    assert!(
        err.to_string().contains("team-a") && err.to_string().contains("not watched"),
        "{err}"
    );
    // Nothing watched: nothing to wait for.
    assert!(cluster.ready().ready);
}

#[tokio::test]
async fn add_modify_delete_and_namespace_filter() {
    let cluster = offline_cluster();
    let mut w = cluster.attach(FED, FED_KIND);
    sync(
        &mut w,
        vec![fed("b", "fed", "https://b"), fed("a", "fed", "https://a")],
    );
    assert_eq!(names(cluster.list(FED, FED_KIND, None)), ["a", "b"]);

    w.apply(Event::Apply(fed("c", "other", "https://c")));
    assert_eq!(names(cluster.list(FED, FED_KIND, None)), ["a", "b", "c"]);
    assert_eq!(names(cluster.list(FED, FED_KIND, Some("fed"))), ["a", "b"]);
    assert_eq!(names(cluster.list(FED, FED_KIND, Some("other"))), ["c"]);
    assert!(names(cluster.list(FED, FED_KIND, Some("none"))).is_empty());

    w.apply(Event::Apply(fed("a", "fed", "https://a-moved")));
    let listed = items(cluster.list(FED, FED_KIND, Some("fed")));
    assert_eq!(listed[0]["spec"]["apiEndpoint"], "https://a-moved");

    w.apply(Event::Delete(fed("b", "fed", "")));
    assert_eq!(names(cluster.list(FED, FED_KIND, None)), ["a", "c"]);
    assert_eq!(names(cluster.list(FED, FED_KIND, Some("fed"))), ["a"]);
}

#[tokio::test]
async fn unchanged_store_serves_the_same_converted_list() {
    let cluster = offline_cluster();
    let mut w = cluster.attach(FED, FED_KIND);
    sync(&mut w, vec![fed("a", "fed", "https://a")]);
    let (Value::List(first), Value::List(second)) = (
        cluster.list(FED, FED_KIND, Some("fed")).unwrap(),
        cluster.list(FED, FED_KIND, Some("fed")).unwrap(),
    ) else {
        panic!("not lists")
    };
    assert!(Arc::ptr_eq(&first, &second), "rebuilt without a change");
    w.apply(Event::Apply(fed("b", "fed", "https://b")));
    let Value::List(third) = cluster.list(FED, FED_KIND, Some("fed")).unwrap() else {
        panic!("not a list")
    };
    assert!(!Arc::ptr_eq(&first, &third));
    assert_eq!(third.len(), 2);
}

#[tokio::test]
async fn during_a_rebuild_other_readers_get_the_previous_list() {
    let cluster = offline_cluster();
    let mut w = cluster.attach(FED, FED_KIND);
    sync(&mut w, vec![fed("a", "fed", "https://a")]);
    assert_eq!(names(cluster.list(FED, FED_KIND, None)), ["a"]);
    w.apply(Event::Apply(fed("b", "fed", "https://b")));
    let cache = cluster.find(FED, FED_KIND).unwrap();
    let rebuilding = cache.hold_rebuild();
    assert_eq!(names(cluster.list(FED, FED_KIND, None)), ["a"]);
    drop(rebuilding);
    assert_eq!(names(cluster.list(FED, FED_KIND, None)), ["a", "b"]);
}

#[tokio::test]
async fn relist_replaces_the_state_atomically() {
    let cluster = offline_cluster();
    let mut w = cluster.attach(FED, FED_KIND);
    sync(
        &mut w,
        vec![
            fed("old", "fed", "https://old"),
            fed("kept", "fed", "https://1"),
        ],
    );

    // After a 410 Gone the watcher lists again; until InitDone lookups see the old state.
    w.apply(Event::Init);
    w.apply(Event::InitApply(fed("kept", "fed", "https://2")));
    w.apply(Event::InitApply(fed("new", "fed", "https://new")));
    assert_eq!(names(cluster.list(FED, FED_KIND, None)), ["kept", "old"]);

    w.apply(Event::InitDone);
    let listed = items(cluster.list(FED, FED_KIND, None));
    let got: Vec<&str> = listed
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["kept", "new"]);
    assert_eq!(listed[0]["spec"]["apiEndpoint"], "https://2");
}

#[tokio::test]
async fn lost_watch_keeps_serving_and_is_counted() {
    let cluster = offline_cluster();
    let mut w = cluster.attach(FED, FED_KIND);
    sync(&mut w, vec![fed("a", "fed", "https://a")]);
    w.record(WatchFailure::from_watcher(&watcher::Error::WatchFailed(
        kube::Error::LinesCodecMaxLineLengthExceeded,
    )));
    assert_eq!(names(cluster.list(FED, FED_KIND, None)), ["a"]);
    let stats = cluster.stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].watch_errors, 1);
    assert!(stats[0].synced && stats[0].usable && !stats[0].healthy);
    assert!(
        stats[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("watch stream")
    );
    assert!(stats[0].last_sync_age_seconds.is_some());
    assert!(
        cluster.ready().ready,
        "a cache serving its last state stays ready"
    );

    // The next event proves the watch is back.
    w.apply(Event::Apply(fed("b", "fed", "https://b")));
    let stats = cluster.stats();
    assert!(stats[0].healthy);
    assert_eq!(stats[0].objects, 2);
}

#[tokio::test]
async fn rbac_forbidden_is_an_error_naming_the_grant() {
    let cluster = offline_cluster();
    let mut w = cluster.attach(FED, FED_KIND);
    w.set_resource(
        "kubefedclusters.core.kubefed.io".into(),
        crate::policy::ParamScope::Namespaced,
    );
    w.record(forbidden());
    let err = cluster.list(FED, FED_KIND, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("KubeFedCluster (core.kubefed.io/v1beta1)"),
        "{err}"
    );
    assert!(err.to_string().contains("RBAC"), "{err}");
    assert!(
        err.to_string().contains("kubefedclusters.core.kubefed.io"),
        "{err}"
    );
    // Settled by the denial: the gate serves, and this lookup fails (failurePolicy decides).
    let readiness = cluster.ready();
    assert!(readiness.ready, "{readiness}");
    assert!(readiness.to_string().contains("forbidden"), "{readiness}");

    // Granted later: the list succeeds and lookups work.
    sync(&mut w, vec![fed("a", "fed", "https://a")]);
    assert_eq!(names(cluster.list(FED, FED_KIND, None)), ["a"]);

    // Revoked after sync: stale objects are not served.
    w.record(forbidden());
    assert!(
        cluster
            .list(FED, FED_KIND, None)
            .unwrap_err()
            .to_string()
            .contains("RBAC")
    );
    // A network error afterwards does not lift the denial; a new list does.
    w.record(WatchFailure::from_watcher(&watcher::Error::WatchFailed(
        kube::Error::LinesCodecMaxLineLengthExceeded,
    )));
    assert!(cluster.list(FED, FED_KIND, None).is_err());
    sync(&mut w, vec![fed("a", "fed", "https://a")]);
    assert!(cluster.list(FED, FED_KIND, None).is_ok());
}

#[tokio::test]
async fn namespaces_answer_labels_and_object() {
    let cluster = offline_cluster();
    let mut w = cluster.attach("v1", "Namespace");
    assert!(
        cluster
            .namespace("team-a")
            .unwrap_err()
            .to_string()
            .contains("not synced")
    );
    // Items of a list response of a built-in kind carry no apiVersion/kind.
    sync(
        &mut w,
        vec![obj(
            json!({"metadata": {"name": "team-a", "labels": {"safety-gate.dev/protected": "true"}}}),
        )],
    );
    let ns = cluster.namespace("team-a").unwrap().unwrap();
    assert_eq!(
        ns.labels
            .get("safety-gate.dev/protected")
            .map(String::as_str),
        Some("true")
    );
    let object = cel_to_json(&ns.object).unwrap();
    assert_eq!(object["kind"], "Namespace");
    assert_eq!(object["apiVersion"], "v1");
    assert!(cluster.namespace("nope").unwrap().is_none());

    w.apply(Event::Apply(obj(
        json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {}}}),
    )));
    assert!(
        cluster
            .namespace("team-a")
            .unwrap()
            .unwrap()
            .labels
            .is_empty()
    );
    w.apply(Event::Delete(obj(json!({"metadata": {"name": "team-a"}}))));
    assert!(cluster.namespace("team-a").unwrap().is_none());
}

#[tokio::test]
async fn stored_objects_lose_managed_fields_and_last_applied_only() {
    let cluster = offline_cluster();
    let mut w = cluster.attach(FED, FED_KIND);
    sync(
        &mut w,
        vec![
            obj(json!({
                "apiVersion": FED, "kind": FED_KIND,
                "metadata": {
                    "name": "a", "namespace": "fed",
                    "annotations": {LAST_APPLIED: "{\"huge\":true}", "team": "infra"},
                    "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
                },
                "spec": {"apiEndpoint": "https://a"},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            })),
            obj(json!({
                "apiVersion": FED, "kind": FED_KIND,
                "metadata": {"name": "b", "namespace": "fed", "annotations": {LAST_APPLIED: "{}"}},
            })),
        ],
    );
    let listed = items(cluster.list(FED, FED_KIND, None));
    let a = &listed[0];
    assert!(a["metadata"].get("managedFields").is_none(), "{a}");
    assert_eq!(a["metadata"]["annotations"], json!({"team": "infra"}));
    assert_eq!(a["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(a["spec"]["apiEndpoint"], "https://a");
    assert!(listed[1]["metadata"].get("annotations").is_none());
}

#[tokio::test]
async fn reconcile_follows_the_needs_and_stops_what_is_gone() {
    let cluster = offline_cluster();
    let needs = ClusterNeeds {
        kinds: vec![
            (FED.to_string(), FED_KIND.to_string()),
            ("v1".into(), "Namespace".into()),
        ],
        namespaces: true,
        authorizer: false,
    };
    cluster.reconcile(&needs).await;
    let mut watched = cluster.watched();
    watched.sort();
    assert_eq!(
        watched,
        [
            (FED.to_string(), FED_KIND.to_string()),
            ("v1".into(), "Namespace".into())
        ]
    );
    // Caches start unsynced (nothing answers at 127.0.0.1:1).
    assert!(!cluster.ready().ready);
    assert!(cluster.list(FED, FED_KIND, None).is_err());

    cluster
        .reconcile(&ClusterNeeds {
            kinds: vec![],
            namespaces: true,
            authorizer: false,
        })
        .await;
    assert_eq!(
        cluster.watched(),
        [("v1".to_string(), "Namespace".to_string())]
    );
    assert!(
        cluster
            .list(FED, FED_KIND, None)
            .unwrap_err()
            .to_string()
            .contains("not watched")
    );

    cluster.reconcile(&ClusterNeeds::default()).await;
    assert!(cluster.watched().is_empty());
    assert!(cluster.ready().ready);
}

#[tokio::test]
async fn conversion_matches_json_to_cel() {
    let cluster = offline_cluster();
    let mut w = cluster.attach("apps/v1", "Deployment");
    sync(&mut w, vec![obj(memory::deployment(3))]);
    let mut expected = memory::deployment(3);
    let meta = expected["metadata"].as_object_mut().unwrap();
    meta.remove("managedFields");
    meta["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(LAST_APPLIED);
    let Value::List(listed) = cluster.list("apps/v1", "Deployment", None).unwrap() else {
        panic!("not a list")
    };
    assert_eq!(listed[0], crate::policy::values::json_to_cel(&expected));
}

#[test]
fn failures_are_classified() {
    assert!(forbidden().forbidden);
    assert!(forbidden().message.starts_with("list: "));
    let gone = WatchFailure::from_watcher(&watcher::Error::WatchError(Box::new(Status {
        code: 410,
        reason: "Expired".into(),
        message: "too old resource version".into(),
        ..Status::default()
    })));
    assert!(!gone.forbidden);
    assert_eq!(gone.message, "watch: too old resource version (HTTP 410)");
}

/// Memory per cached object through the real store + conversion path.
/// Run: `cargo test --release --lib -- --ignored --exact cluster::live::tests::memory_1000 --nocapture`
/// (and `memory_10000`); each in its own process so one measurement does not
/// reuse the other's freed pages.
mod memory {
    use super::*;

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// A Deployment as `kubectl get -o json` returns it from a real cluster:
    /// managedFields from two managers, last-applied, labels, status.
    pub(super) fn deployment(i: usize) -> serde_json::Value {
        let spec = json!({
            "replicas": 3,
            "selector": {"matchLabels": {"app": format!("app-{i}")}},
            "template": {
                "metadata": {"labels": {"app": format!("app-{i}"), "team": "payments", "tier": "backend"}},
                "spec": {"containers": [{
                    "name": "app", "image": format!("registry.example.com/team/app-{i}:v1.2.{i}"),
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                    "env": [{"name": "MODE", "value": "production"}, {"name": "LOG", "value": "info"}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10},
                }]},
            },
        });
        let last_applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("app-{i}"), "namespace": format!("ns-{}", i % 50)}, "spec": spec});
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": format!("app-{i}"), "namespace": format!("ns-{}", i % 50),
                "uid": format!("6b1f6f5e-1c2d-4a8b-9e3f-{i:012}"), "resourceVersion": format!("{}", 100_000 + i),
                "generation": 4, "creationTimestamp": "2026-01-12T09:30:00Z",
                "labels": {"app": format!("app-{i}"), "team": "payments", "app.kubernetes.io/managed-by": "kubectl"},
                "annotations": {"deployment.kubernetes.io/revision": "4", LAST_APPLIED: last_applied.to_string()},
                "managedFields": [
                    {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "apps/v1",
                     "time": "2026-01-12T09:30:00Z", "fieldsType": "FieldsV1", "fieldsV1": {
                        "f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                                       "f:labels": {".": {}, "f:app": {}, "f:team": {}}},
                        "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                            "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}, "f:ports": {}, "f:resources": {}}}}}}}},
                    {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                     "time": "2026-01-12T09:31:00Z", "fieldsType": "FieldsV1", "subresource": "status", "fieldsV1": {
                        "f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}},
                        "f:status": {"f:availableReplicas": {}, "f:conditions": {".": {}, "k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}, "f:updatedReplicas": {}}}},
                ],
            },
            "spec": spec,
            "status": {"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                "conditions": [
                    {"type": "Available", "status": "True", "lastUpdateTime": "2026-01-12T09:31:00Z", "lastTransitionTime": "2026-01-12T09:31:00Z", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                    {"type": "Progressing", "status": "True", "lastUpdateTime": "2026-01-12T09:31:00Z", "lastTransitionTime": "2026-01-12T09:30:00Z", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"app-{i}-7d9f8c6b5\" has successfully progressed.")},
                ]},
        })
    }

    async fn measure(n: usize) {
        let cluster = offline_cluster();
        let mut w = cluster.attach("apps/v1", "Deployment");
        let raw: usize = deployment(0).to_string().len();
        let before = rss_bytes();
        w.apply(Event::Init);
        for i in 0..n {
            // Built and dropped one at a time, as the watcher hands them over.
            w.apply(Event::InitApply(obj(deployment(i))));
        }
        w.apply(Event::InitDone);
        // The converted lists evaluations read: all objects and one namespace.
        let all = cluster.list("apps/v1", "Deployment", None).unwrap();
        let one = cluster.list("apps/v1", "Deployment", Some("ns-1")).unwrap();
        let after = rss_bytes();
        // What the first request after a change pays: rebuilding the list.
        w.apply(Event::Apply(obj(deployment(n + 1))));
        let started = std::time::Instant::now();
        let rebuilt = cluster.list("apps/v1", "Deployment", None).unwrap();
        let rebuild = started.elapsed();
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(cluster.list("apps/v1", "Deployment", None).unwrap());
        }
        let hit = started.elapsed() / 1000;
        println!("list after a change (rebuild): {rebuild:?}; unchanged (cached): {hit:?}");
        drop(rebuilt);
        let delta = after.saturating_sub(before);
        println!(
            "{n} Deployments (~{raw} bytes of JSON each, with managedFields and last-applied): \
             RSS +{:.1} MiB, {:.2} MiB per 1,000 objects ({} bytes per object)",
            delta as f64 / 1048576.0,
            delta as f64 / 1048576.0 / (n as f64 / 1000.0),
            delta / n as u64,
        );
        assert_eq!(cluster.stats()[0].objects, n + 1);
        drop((all, one));
    }

    /// The same objects stripped and converted with plain `json_to_cel`, for comparison.
    #[test]
    #[ignore = "measurement: run alone, in release, with --nocapture"]
    fn memory_1000_plain_json_to_cel() {
        let before = rss_bytes();
        let kept: Vec<Value> = (0..1000)
            .map(|i| {
                let mut o = deployment(i);
                let meta = o["metadata"].as_object_mut().unwrap();
                meta.remove("managedFields");
                meta["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove(LAST_APPLIED);
                crate::policy::values::json_to_cel(&o)
            })
            .collect();
        let delta = rss_bytes().saturating_sub(before);
        println!(
            "1000 Deployments, plain json_to_cel: RSS +{:.2} MiB ({} bytes per object)",
            delta as f64 / 1048576.0,
            delta / 1000
        );
        assert_eq!(kept.len(), 1000);
    }

    #[tokio::test]
    #[ignore = "measurement: run alone, in release, with --nocapture"]
    async fn memory_1000() {
        measure(1_000).await;
    }

    #[tokio::test]
    #[ignore = "measurement: run alone, in release, with --nocapture"]
    async fn memory_10000() {
        measure(10_000).await;
    }
}

#[tokio::test]
async fn param_scope_follows_discovery_and_waits_for_the_sync() {
    use crate::policy::{ParamScope, ParamSource};
    let cluster = offline_cluster();
    let mut w = cluster.attach(FED, FED_KIND);
    // Not synced: not known yet (kube-apiserver: "not yet synced to use for admission").
    assert!(cluster.param_scope(FED, FED_KIND).is_err());
    w.set_resource(
        "kubefedclusters.core.kubefed.io".into(),
        ParamScope::Namespaced,
    );
    sync(
        &mut w,
        vec![fed("host", "kube-federation-system", "https://a")],
    );
    assert_eq!(
        cluster.param_scope(FED, FED_KIND).unwrap(),
        Some(ParamScope::Namespaced)
    );
    assert_eq!(
        names(cluster.list(FED, FED_KIND, Some("kube-federation-system"))),
        ["host"]
    );
    // Discovery says the kind is not served (CRD removed): no scope, so the
    // policy's paramKind is reported as kube-apiserver reports it.
    let cluster = offline_cluster();
    let mut gone_writer = cluster.attach("gone.example.dev/v1", "Gone");
    gone_writer.not_served(WatchFailure {
        message: "the API server does not serve gone.example.dev/v1".into(),
        forbidden: false,
        not_served: true,
    });
    assert_eq!(
        cluster.param_scope("gone.example.dev/v1", "Gone").unwrap(),
        None
    );
    // A kind no policy reads is unavailable, never "not served".
    assert!(cluster.param_scope("v1", "ConfigMap").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_subjectaccessreview_that_cannot_be_made_is_an_error_never_an_answer() {
    use crate::policy::authz::{AuthzAttributes, AuthzTarget, AuthzUser};
    let cluster = offline_cluster();
    let authorizer = cluster.authorizer().expect("made inside a runtime");
    let attributes = AuthzAttributes {
        user: AuthzUser {
            name: "alice".into(),
            ..Default::default()
        },
        verb: "get".into(),
        target: AuthzTarget::Path("/healthz".into()),
    };
    // Evaluation runs on the blocking pool, as in `serve`.
    let answer = tokio::task::spawn_blocking(move || authorizer.authorize(&attributes))
        .await
        .expect("joins");
    let err = answer.expect_err("nothing answers at 127.0.0.1:1");
    assert!(err.starts_with("SubjectAccessReview failed"), "{err}");
}
