//! The playground's JSON API (README "Playground"), against the real
//! `safety-gate playground` process over HTTP: the library, the five incident
//! examples, evaluation (load errors at their line, the decision `serve` makes
//! for the same AdmissionReview, the trace), export to a PolicyTest that
//! `safety-gate test` passes, import, and 4xx JSON for malformed bodies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod server_support;

use serde_json::{Value, json};
use server_support::{Http, TestServer, client_tls, post_review};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `safety-gate playground`, killed when dropped.
struct Playground {
    child: Child,
    url: String,
    client: reqwest::Client,
}

impl Drop for Playground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Playground {
    fn start(args: &[&str]) -> Playground {
        Playground::start_on("127.0.0.1:0", args)
    }

    fn start_on(listen: &str, args: &[&str]) -> Playground {
        let mut child = Command::new(env!("CARGO_BIN_EXE_safety-gate"))
            .args(["playground", "--listen", listen])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start safety-gate playground");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the URL line");
        let url = line
            .trim()
            .strip_prefix("playground: ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim_end_matches('/')
            .to_string();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(client_tls(&[], &[b"http/1.1"]))
            .build()
            .expect("client");
        Playground { child, url, client }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        (r.status().as_u16(), r.json().await.expect("JSON answer"))
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        let (status, answer) = self.post_raw(path, body.to_string()).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }

    async fn post_raw(&self, path: &str, body: String) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        (r.status().as_u16(), r.json().await.expect("JSON answer"))
    }

    async fn examples(&self) -> Vec<Value> {
        let (status, answer) = self.get("/api/examples").await;
        assert_eq!(status, 200);
        answer["examples"].as_array().expect("examples").clone()
    }
}

fn evaluate_body(example: &Value) -> Value {
    json!({
        "policies": example["policies"],
        "request": example["request"],
        "clusterState": example["clusterState"],
    })
}

#[tokio::test]
async fn the_library_is_the_shipped_policies() {
    let pg = Playground::start(&[]);
    let (status, answer) = pg.get("/api/library").await;
    assert_eq!(status, 200);
    let list = answer["policies"].as_array().unwrap();
    let mut on_disk: Vec<String> = std::fs::read_dir("policies")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, on_disk);
    for p in list {
        let name = p["name"].as_str().unwrap();
        let text = std::fs::read_to_string(format!("policies/{name}")).unwrap();
        assert_eq!(p["text"].as_str().unwrap(), text, "{name}");
    }
    // --policies DIR offers that directory instead.
    let pg = Playground::start(&["--policies", "examples/policies"]);
    let (_, answer) = pg.get("/api/library").await;
    assert_eq!(answer["policies"][0]["name"], "require-pinned-images.yaml");
}

#[tokio::test]
async fn the_five_incident_examples_decide_as_they_expect() {
    let pg = Playground::start(&[]);
    let examples = pg.examples().await;
    let incidents: Vec<u64> = examples
        .iter()
        .map(|e| e["incident"].as_u64().unwrap())
        .collect();
    assert_eq!(incidents, vec![1, 2, 3, 4, 5]);
    for example in &examples {
        let mut body = evaluate_body(example);
        body["expect"] = example["expect"].clone();
        let answer = pg.post("/api/evaluate", &body).await;
        assert_eq!(
            answer["expectation"],
            json!({"passed": true, "problems": []}),
            "{}: {answer:#}",
            example["id"]
        );
    }
    // Incident 1 is a denial, printed as kubectl prints a webhook's denial.
    let answer = pg.post("/api/evaluate", &evaluate_body(&examples[0])).await;
    let d = &answer["decision"];
    assert_eq!(d["allowed"], false);
    assert_eq!(d["code"], 403);
    let kubectl = d["kubectl"][0].as_str().unwrap();
    assert!(
        kubectl.starts_with(
            "Error from server (Forbidden): admission webhook \"validate.safety-gate.dev\" denied the request: protect-rbac-defaults: ClusterRole system:kube-controller-manager is a bootstrap RBAC object"
        ),
        "{kubectl}"
    );
    // The trace: the validation that failed, with its cost.
    let trace = d["policies"][0]["trace"].as_array().unwrap();
    let failed: Vec<&Value> = trace
        .iter()
        .filter(|t| t["phase"] == "validation" && t["value"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{trace:#?}");
    assert!(failed[0]["cost"].as_u64().unwrap() > 0);
    // Incident 3 is 422 Invalid, which kubectl prints in its own words.
    let answer = pg.post("/api/evaluate", &evaluate_body(&examples[2])).await;
    assert_eq!(answer["decision"]["code"], 422);
    let kubectl = answer["decision"]["kubectl"][0].as_str().unwrap();
    assert!(
        kubectl.starts_with(
            "The request is invalid: admission webhook \"validate.safety-gate.dev\" denied the request: immutable-fields: Deployment english/english-grammar-web: spec.selector"
        ),
        "{kubectl}"
    );
    // Incident 5 on /mutate: a JSON Patch and the patched object.
    let answer = pg.post("/api/evaluate", &evaluate_body(&examples[4])).await;
    let d = &answer["decision"];
    assert_eq!(d["path"], "/mutate");
    assert_eq!(
        d["patchedObject"]["metadata"]["annotations"]["safety-gate.dev/last-changed-by"],
        "system:apiserver"
    );
    assert!(d["patch"].as_array().is_some_and(|p| !p.is_empty()));
}

/// What the page shows is what `serve` answers: the AdmissionReview the
/// playground evaluated, sent to a real server with the same policies, gets
/// the same response.
#[tokio::test]
async fn the_decision_is_the_one_serve_sends() {
    let pg = Playground::start(&[]);
    let examples = pg.examples().await;
    for index in [0, 2, 4] {
        let example = &examples[index];
        let answer = pg.post("/api/evaluate", &evaluate_body(example)).await;
        let policies: Vec<(String, String)> = example["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["text"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = policies
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let server = TestServer::start(&refs, |_| {}).await;
        let path = answer["decision"]["path"].as_str().unwrap();
        let served: Value = post_review(
            &server.client(Http::One),
            &server.url(path),
            serde_json::to_vec(&answer["review"]).unwrap(),
        )
        .await
        .expect("serve answers")
        .json()
        .await
        .expect("JSON");
        assert_eq!(
            served, answer["decision"]["response"],
            "{}: serve and the playground differ",
            example["id"]
        );
        server.stop().await;
    }
}

/// A CEL syntax error on line 13.
const BROKEN: &str = r#"apiVersion: safety-gate.dev/v1alpha1
kind: GatePolicy
metadata:
  name: p
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  validations:
  - expression: "object.metadata.name =="
"#;

#[tokio::test]
async fn load_and_request_errors_name_their_pane_and_line() {
    let pg = Playground::start(&[]);
    let request = json!({"object": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"});
    // A CEL syntax error: the policy's file name and the expression's line.
    let answer = pg
        .post(
            "/api/evaluate",
            &json!({"policies": [{"name": "mine.yaml", "text": BROKEN}], "request": request}),
        )
        .await;
    let e = &answer["loadErrors"][0];
    assert_eq!(e["pane"], "policies");
    assert_eq!(e["file"], "mine.yaml");
    assert_eq!(e["line"], 13, "{answer:#}");
    assert_eq!(
        answer["loadErrors"].as_array().unwrap().len(),
        1,
        "{answer:#}"
    );
    assert!(answer.get("decision").is_none());
    // A YAML error: line and column.
    let text = "apiVersion: v1\nkind: GatePolicy\nmetadata:\n  name: p\n   bad: [\n";
    let answer = pg
        .post(
            "/api/evaluate",
            &json!({"policies": [{"name": "y.yaml", "text": text}], "request": request}),
        )
        .await;
    let e = &answer["loadErrors"][0];
    assert_eq!(
        (e["file"].as_str(), e["line"].as_u64()),
        (Some("y.yaml"), Some(5)),
        "{answer:#}"
    );
    // The column is given once, in `column`, not repeated in the message.
    assert_eq!(e["column"], 7, "{answer:#}");
    assert!(!e["message"].as_str().unwrap().contains("column"), "{e}");
    // An object that is not YAML: the object pane and its line.
    let answer = pg
        .post(
            "/api/evaluate",
            &json!({"policies": [], "request": {"object": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n"}}),
        )
        .await;
    let e = &answer["requestErrors"][0];
    assert_eq!(e["pane"], "object", "{answer:#}");
    assert!(e["line"].as_u64().unwrap() >= 4, "{answer:#}");
}

#[tokio::test]
async fn malformed_bodies_are_4xx_with_a_json_message() {
    let pg = Playground::start(&[]);
    for (path, body) in [
        ("/api/evaluate", "{not json"),
        ("/api/evaluate", "{\"policies\": []}"),
        (
            "/api/evaluate",
            "{\"policies\": [], \"request\": {}, \"surprise\": 1}",
        ),
        ("/api/test/export", "[]"),
        ("/api/test/import", "{\"txt\": \"\"}"),
    ] {
        let (status, answer) = pg.post_raw(path, body.to_string()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("malformed request body")),
            "{answer}"
        );
    }
    let (status, answer) = pg
        .post_raw(
            "/api/test/import",
            json!({"text": "kind: Nothing\n"}).to_string(),
        )
        .await;
    assert_eq!(status, 422);
    assert!(answer["error"].as_str().unwrap().contains("no PolicyTest"));
    let (status, answer) = pg.get("/api/nothing").await;
    assert_eq!(status, 404);
    assert!(answer["error"].is_string());
}

/// Save as test, then `safety-gate test` on the saved file alone (from an
/// empty directory), then Load test on the same text.
#[tokio::test]
async fn an_exported_case_passes_safety_gate_test_and_imports_back() {
    let pg = Playground::start(&[]);
    let examples = pg.examples().await;
    let dir = tempfile::tempdir().unwrap();
    for example in &examples {
        let mut body = evaluate_body(example);
        body["name"] = example["name"].clone();
        let saved = pg.post("/api/test/export", &body).await;
        let file = dir.path().join(saved["fileName"].as_str().unwrap());
        std::fs::write(&file, saved["text"].as_str().unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_safety-gate"))
            .arg("test")
            .arg(&file)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed, 0 failed"),
            "{}: {stdout}{}",
            example["id"],
            String::from_utf8_lossy(&out.stderr)
        );

        let imported = pg
            .post(
                "/api/test/import",
                &json!({"text": saved["text"], "name": saved["fileName"]}),
            )
            .await;
        let suite = &imported["suites"][0];
        assert_eq!(suite["policies"], example["policies"]);
        assert_eq!(suite["unresolved"], json!([]));
        let case = &suite["cases"][0];
        // The imported case decides as the example did, and its expect holds.
        let mut again = json!({
            "policies": suite["policies"],
            "request": case["request"],
            "clusterState": suite["clusterState"],
            "expect": case["expect"],
        });
        let answer = pg.post("/api/evaluate", &again).await;
        assert_eq!(answer["expectation"]["passed"], true, "{answer:#}");
        // And an expectation that does not hold says so.
        again["expect"] = json!({"allowed": !answer["decision"]["allowed"].as_bool().unwrap()});
        let answer = pg.post("/api/evaluate", &again).await;
        assert_eq!(answer["expectation"]["passed"], false);
    }
}

#[tokio::test]
async fn a_suite_with_paths_imports_its_library_policies_and_lists_the_rest() {
    let pg = Playground::start(&[]);
    let text = std::fs::read_to_string("tests/policies/protect-namespaces.yaml").unwrap();
    let imported = pg.post("/api/test/import", &json!({"text": text})).await;
    let suite = &imported["suites"][0];
    assert_eq!(suite["policies"][0]["name"], "protect-namespaces.yaml");
    let cases = suite["cases"].as_array().unwrap();
    assert!(cases.len() > 5);
    // Objects given as {file: ...} cannot be read from the page's side: listed.
    assert!(
        suite["unresolved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u.as_str().unwrap().contains("fixtures/")),
        "{suite:#}"
    );
}

#[test]
fn a_non_loopback_address_needs_allow_remote() {
    let out = Command::new(env!("CARGO_BIN_EXE_safety-gate"))
        .args(["playground", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
}

/// Saves `body` as a PolicyTest (`/api/test/export`) and runs it with the real
/// `safety-gate test` from an empty directory: `(passed, stdout + stderr)`.
async fn export_and_run(pg: &Playground, body: &Value) -> (bool, String) {
    let saved = pg.post("/api/test/export", body).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(
        saved["fileName"]
            .as_str()
            .unwrap_or_else(|| panic!("no file: {saved:#}")),
    );
    std::fs::write(&file, saved["text"].as_str().unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_safety-gate"))
        .arg("test")
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && text.contains("1 passed, 0 failed"),
        text,
    )
}

/// A binding that selects namespaces by label: the namespace of the request
/// must be looked up.
const NAMESPACE_SELECTOR_VAP: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: replicas-limit
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: ["apps"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["deployments"]
  validations:
  - expression: "object.spec.replicas <= 5"
    message: "replicas must be at most 5"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: replicas-limit-binding
spec:
  policyName: replicas-limit
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {env: prod}
"#;

/// A policy with a `paramKind`: its binding's param must be looked up.
const PARAM_KIND_VAP: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: max-replicas}
spec:
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
    - {apiGroups: ["apps"], apiVersions: ["v1"], operations: ["CREATE"], resources: ["deployments"]}
  validations:
  - expression: "object.spec.replicas <= int(params.data.max)"
    messageExpression: "'replicas must be <= ' + params.data.max"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: max-replicas-b}
spec:
  policyName: max-replicas
  validationActions: [Deny]
  paramRef: {name: limits, namespace: config, parameterNotFoundAction: Deny}
"#;

const SHOP_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 10
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
";

/// A blank cluster-state pane is the empty cluster state of a PolicyTest case
/// without `clusterState`: a lookup finds nothing, a namespace is unknown, a
/// param is not found. So the saved case passes `safety-gate test`, for a
/// lookup (incident 4), a namespaceSelector and a paramKind.
#[tokio::test]
async fn a_blank_cluster_state_decides_as_safety_gate_test_does() {
    let pg = Playground::start(&[]);
    let examples = pg.examples().await;
    let incident4 = examples
        .iter()
        .find(|e| e["incident"] == 4)
        .expect("incident 4");
    let mut lookups = evaluate_body(incident4);
    lookups["clusterState"] = json!("");
    let deployment = json!({"operation": "CREATE", "object": SHOP_DEPLOYMENT});
    let cases = [
        ("lookups", lookups),
        (
            "namespaceSelector",
            json!({"policies": [{"name": "ns.yaml", "text": NAMESPACE_SELECTOR_VAP}],
                   "request": deployment, "clusterState": ""}),
        ),
        (
            "paramKind",
            json!({"policies": [{"name": "params.yaml", "text": PARAM_KIND_VAP}],
                   "request": deployment}),
        ),
    ];
    for (what, mut body) in cases {
        let answer = pg.post("/api/evaluate", &body).await;
        let decision = &answer["decision"];
        assert!(decision.is_object(), "{what}: {answer:#}");
        assert!(
            !decision
                .to_string()
                .contains("no cluster state is configured")
                && !decision.to_string().contains("not yet synced"),
            "{what}: decided as serve without cluster state: {decision:#}"
        );
        body["name"] = json!(format!("blank state {what}"));
        let (passed, output) = export_and_run(&pg, &body).await;
        assert!(passed, "{what}: the saved test fails:\n{output}");
    }
}

/// What a request with `method`, `Host`, `Content-Type` and body gets:
/// `(status, Allow header, JSON answer)`; the answer must be JSON.
async fn raw(
    pg: &Playground,
    method: reqwest::Method,
    path: &str,
    host: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Option<String>, Value) {
    let mut request = pg
        .client
        .request(method.clone(), format!("{}{path}", pg.url))
        .body(body);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let r = request.send().await.expect("send");
    let status = r.status().as_u16();
    let allow = r
        .headers()
        .get("allow")
        .map(|a| a.to_str().unwrap().to_string());
    let kind = r
        .headers()
        .get("content-type")
        .map(|c| c.to_str().unwrap().to_string());
    assert_eq!(
        kind.as_deref(),
        Some("application/json"),
        "{method} {path}: status {status}"
    );
    (status, allow, r.json().await.expect("JSON answer"))
}

/// An UPDATE with a 1.1 MB object and oldObject (each under etcd's 1.5 MiB) is
/// evaluated; a body over the documented 32 MiB limit is a JSON 413 naming it.
#[tokio::test]
async fn large_bodies_are_evaluated_up_to_a_documented_limit() {
    let pg = Playground::start(&[]);
    let big = "x".repeat(1_100_000);
    let object = |replicas: u32| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "annotations": {"big": big}},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}})
        .to_string()
    };
    let body = json!({
        "policies": [{"name": "ns.yaml", "text": NAMESPACE_SELECTOR_VAP}],
        "request": {"operation": "UPDATE", "object": object(3), "oldObject": object(2)},
    });
    assert!(body.to_string().len() > 2_200_000);
    let answer = pg.post("/api/evaluate", &body).await;
    assert!(answer["decision"].is_object(), "{answer:#}");

    let over = format!(
        "{{\"policies\": [], \"request\": {{\"object\": \"{}\"}}}}",
        "y".repeat(32 * 1024 * 1024)
    );
    let (status, _, answer) = raw(
        &pg,
        reqwest::Method::POST,
        "/api/evaluate",
        None,
        Some("application/json"),
        over.into_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("limit of 33554432 bytes"), "{error}");
}

/// Every refusal is JSON: a method a path does not take (405 with Allow), a
/// body that is not a JSON object (400), another media type (415), a Host that
/// is not the playground's own (403, against DNS rebinding; any with
/// --allow-remote). `--listen localhost:PORT` listens on 127.0.0.1.
#[tokio::test]
async fn refusals_are_json_and_other_hosts_are_refused() {
    use reqwest::Method;
    let pg = Playground::start(&[]);
    for (method, path, allow) in [
        (Method::GET, "/api/evaluate", "POST"),
        (Method::OPTIONS, "/api/evaluate", "POST"),
        (Method::PUT, "/api/library", "GET, HEAD"),
        (Method::DELETE, "/", "GET, HEAD"),
    ] {
        let (status, allowed, answer) = raw(&pg, method.clone(), path, None, None, vec![]).await;
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
        assert!(
            answer["error"].as_str().unwrap().contains(allow),
            "{answer}"
        );
    }
    let json = Some("application/json");
    for body in [
        "[]",
        "[[], {\"object\": \"\"}, null, null, null]",
        "null",
        "\"x\"",
    ] {
        let (status, _, answer) =
            raw(&pg, Method::POST, "/api/evaluate", None, json, body.into()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains("must be a JSON object") && !error.contains("EvaluateBody"),
            "{error}"
        );
    }
    let body = json!({"policies": [], "request": {}}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (status, _, answer) = raw(
            &pg,
            Method::POST,
            "/api/evaluate",
            None,
            content_type,
            body.clone().into(),
        )
        .await;
        assert_eq!(status, 415, "{content_type:?}: {answer}");
    }
    let (status, _, _) = raw(
        &pg,
        Method::POST,
        "/api/evaluate",
        None,
        Some("application/json; charset=utf-8"),
        body.clone().into(),
    )
    .await;
    assert_eq!(status, 200);

    let port = pg.url.rsplit(':').next().unwrap().to_string();
    for host in [
        "evil.example.com",
        "evil.example.com:80",
        &format!("evil.example.com:{port}"),
        "127.0.0.2",
    ] {
        let (status, _, answer) =
            raw(&pg, Method::GET, "/api/library", Some(host), None, vec![]).await;
        assert_eq!(status, 403, "{host}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains("--allow-remote"));
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let (status, _, _) = raw(&pg, Method::GET, "/api/library", Some(&host), None, vec![]).await;
        assert_eq!(status, 200, "{host}");
    }

    let remote = Playground::start(&["--allow-remote"]);
    let (status, _, _) = raw(
        &remote,
        Method::GET,
        "/api/library",
        Some("playground.example.com"),
        None,
        vec![],
    )
    .await;
    assert_eq!(status, 200);

    let local = Playground::start_on("localhost:0", &[]);
    assert!(local.url.starts_with("http://127.0.0.1:"), "{}", local.url);
    let (status, _) = local.get("/api/library").await;
    assert_eq!(status, 200);
}

/// Four validations that each split a 20,000-character value 200 times
/// (within Kubernetes' cost limits): seconds of CPU in a debug build; every
/// step of `all` is one of the engine's cancellation check points.
const SLOW_POLICY: &str = r#"apiVersion: safety-gate.dev/v1alpha1
kind: GatePolicy
metadata:
  name: slow
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  validations:
  - expression: "lists.range(200).all(i, object.data.s.split('').size() >= -0)"
  - expression: "lists.range(200).all(i, object.data.s.split('').size() >= -1)"
  - expression: "lists.range(200).all(i, object.data.s.split('').size() >= -2)"
  - expression: "lists.range(200).all(i, object.data.s.split('').size() >= -3)"
"#;

fn slow_body() -> Value {
    let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "default"},
        "data": {"s": "b".repeat(20_000)}});
    json!({"policies": [{"name": "slow.yaml", "text": SLOW_POLICY}],
           "request": {"operation": "CREATE", "object": object.to_string()}})
}

/// utime + stime of process `pid`, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// An evaluation past `--evaluation-timeout` is stopped and answered 503 with
/// a JSON error that names the limit, instead of a failurePolicy decision.
#[tokio::test]
async fn an_evaluation_past_its_deadline_is_stopped_and_says_so() {
    let pg = Playground::start(&["--evaluation-timeout", "1s"]);
    let started = std::time::Instant::now();
    for path in ["/api/evaluate", "/api/test/export"] {
        let (status, answer) = pg.post_raw(path, slow_body().to_string()).await;
        assert_eq!(status, 503, "{path}: {answer:#}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains("limit of 1000 ms per evaluation") && error.contains("deadline"),
            "{error}"
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// A client that gives up stops the work done for it: the playground's CPU
/// time stays flat once the client is gone (it would otherwise keep a core
/// busy for seconds).
#[tokio::test]
async fn a_client_that_goes_away_stops_its_evaluation() {
    let pg = Playground::start(&[]);
    let pid = pg.child.id();
    let gave_up = pg
        .client
        .post(format!("{}/api/evaluate", pg.url))
        .header("content-type", "application/json")
        .body(slow_body().to_string())
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(
        gave_up.is_err_and(|e| e.is_timeout()),
        "the evaluation must outlast 300 ms"
    );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let before = cpu_seconds(pid);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let spent = cpu_seconds(pid) - before;
    assert!(spent < 0.25, "{spent} CPU-s spent after the client left");
    // And it still answers.
    let (status, _) = pg.get("/api/library").await;
    assert_eq!(status, 200);
}

/// A suite whose policy file is not in the import (map-test.yaml names
/// `policies.yaml`, which is no library policy): each case's `unresolved`
/// says so, and evaluating it with its `expect` says it cannot be decided,
/// never FAIL. The review is Kubernetes' AdmissionRequest: `resource` is `{group, version, resource}`.
#[tokio::test]
async fn unresolved_cases_cannot_be_decided_and_answers_use_kubernetes_shapes() {
    let pg = Playground::start(&[]);
    let text = std::fs::read_to_string("tests/policies/map/map-test.yaml").unwrap();
    let imported = pg.post("/api/test/import", &json!({"text": text})).await;
    let suite = &imported["suites"][0];
    assert_eq!(suite["unresolved"], json!(["policies: policies.yaml"]));
    for case in suite["cases"].as_array().unwrap() {
        assert_eq!(case["unresolved"], suite["unresolved"], "{case:#}");
        let answer = pg
            .post(
                "/api/evaluate",
                &json!({
                    "policies": suite["policies"],
                    "request": case["request"],
                    "expect": case["expect"],
                    "unresolved": case["unresolved"],
                }),
            )
            .await;
        let expectation = &answer["expectation"];
        assert_eq!(expectation["passed"], Value::Null, "{answer:#}");
        assert_eq!(expectation["decided"], false);
        let problem = expectation["problems"][0].as_str().unwrap();
        assert!(
            problem.starts_with("cannot be decided: policies: policies.yaml is not loaded"),
            "{problem}"
        );
    }

    let request = json!({"object": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"});
    let answer = pg
        .post(
            "/api/evaluate",
            &json!({"policies": [], "request": request}),
        )
        .await;
    assert_eq!(
        answer["review"]["request"]["resource"],
        json!({"group": "", "version": "v1", "resource": "configmaps"})
    );
}
