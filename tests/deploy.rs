//! `deploy/` is what a cluster runs. These tests keep it equal to what the
//! policies render, validate every object against the Kubernetes OpenAPI
//! schemas (kubernetes-validate, no cluster needed), and hold it to the
//! properties that keep a fail-closed gate from deadlocking the cluster it
//! protects, so that an edit cannot silently remove them.
//!
//! External tools: `kubectl` (its built-in kustomize builds the overlays) and
//! `kubernetes-validate` (PyPI). Without them those checks are skipped with a
//! message, except under CI (`CI` set), where a missing tool fails the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use base64::Engine as _;
use safety_gate::deploy::{self, Target};
use safety_gate::documents::split_documents;
use safety_gate::policy::{FailurePolicy, PolicySet};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The oldest Kubernetes the manifests support (preStop `sleep`, webhook
/// fields used) and the newest schema set kubernetes-validate bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_policies() -> PolicySet {
    PolicySet::load_dir(&repo().join("policies"))
        .unwrap_or_else(|e| panic!("policies/ does not load:\n{e}"))
}

/// Every document of a YAML stream, skipping empty ones.
fn parse_stream(file: &Path, text: &str) -> Vec<Value> {
    split_documents(file, text)
        .iter()
        .map(|d| d.decode_data::<Value>().unwrap_or_else(|e| panic!("{e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn base_documents() -> Vec<Value> {
    let dir = repo().join("deploy/base");
    let mut docs = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        docs.extend(parse_stream(&path, &text));
    }
    docs
}

/// Is `program` runnable? Without it the test is skipped, or fails under CI.
fn tool(program: &str, probe: &[&str], install: &str) -> bool {
    let ok = Command::new(program)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    // A missing tool fails the test: a check that did not run must not read as passed.
    assert!(ok, "{program} is not installed; install it with: {install}");
    ok
}

const VALIDATE_INSTALL: &str = "python3 -m pip install kubernetes-validate==1.37.0";

/// kubernetes-validate, as its console script or, where pip put the package
/// but no script on PATH (pyenv before a rehash), as a Python module.
fn validator() -> Option<Vec<&'static str>> {
    let candidates: [&[&'static str]; 2] = [
        &["kubernetes-validate"],
        &["python3", "-m", "kubernetes_validate"],
    ];
    for c in candidates {
        let ok = Command::new(c[0])
            .args(&c[1..])
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(c.to_vec());
        }
    }
    panic!("kubernetes-validate is not installed; install it with: {VALIDATE_INSTALL}");
}

fn validate_command(validator: &[&str], version: &str, file: &Path) -> std::process::Output {
    Command::new(validator[0])
        .args(&validator[1..])
        .args(["--strict", "--quiet", "-k", version])
        .arg(file)
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------
// The committed render

#[test]
fn committed_files_are_what_the_policies_render() {
    let dir = repo().join("policies");
    let files = deploy::render_all(&dir, &shipped_policies(), &Target::default()).unwrap();
    for f in files {
        let path = repo().join("deploy/base").join(f.name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != f.contents {
            let line = committed
                .lines()
                .zip(f.contents.lines())
                .position(|(a, b)| a != b)
                .map_or_else(
                    || "length differs".to_string(),
                    |i| format!("first difference at line {}", i + 1),
                );
            panic!(
                "{} is stale ({line}): the policies changed without re-rendering. Run:\n    \
                 cargo run -- manifests --out deploy/base",
                path.display()
            );
        }
    }
}

#[test]
fn policies_configmap_round_trips_every_file_byte_for_byte() {
    let path = repo().join("deploy/base").join(deploy::POLICIES_FILE);
    let docs = parse_stream(&path, &std::fs::read_to_string(&path).unwrap());
    let data = docs[0]["data"].as_object().expect("ConfigMap data");
    let files = deploy::policy_files(&repo().join("policies")).unwrap();
    assert_eq!(data.len(), files.len());
    for (name, text) in files {
        assert_eq!(
            data[&name].as_str(),
            Some(text.as_str()),
            "{name} differs after YAML round trip"
        );
    }
}

fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_safety-gate"));
    c.current_dir(repo()).env_remove("SAFETY_GATE_POLICIES");
    c
}

#[test]
fn manifests_command_prints_the_committed_webhooks_and_checks_the_tree() {
    // Printed without a caBundle only when asked to: applied as is, such
    // webhooks cannot reach the gate and the fail-closed one denies.
    let refused = binary().arg("manifests").output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--ca-bundle"));
    let out = binary()
        .args(["manifests", "--without-ca-bundle"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed =
        std::fs::read_to_string(repo().join("deploy/base").join(deploy::WEBHOOKS_FILE)).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "`safety-gate manifests` prints something else than deploy/base/{}",
        deploy::WEBHOOKS_FILE
    );

    let check = binary()
        .args(["manifests", "--out", "deploy/base", "--check"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn manifests_check_reports_a_stale_tree() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        deploy::WEBHOOKS_FILE,
        deploy::CLUSTER_ROLE_FILE,
        deploy::POLICIES_FILE,
    ] {
        std::fs::copy(repo().join("deploy/base").join(name), tmp.path().join(name)).unwrap();
    }
    let webhooks = tmp.path().join(deploy::WEBHOOKS_FILE);
    let text = std::fs::read_to_string(&webhooks).unwrap();
    std::fs::write(
        &webhooks,
        text.replace("timeoutSeconds: 5", "timeoutSeconds: 30"),
    )
    .unwrap();
    let out = binary()
        .arg("manifests")
        .arg("--out")
        .arg(tmp.path())
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stale"));
    // --check writes nothing.
    assert!(
        std::fs::read_to_string(&webhooks)
            .unwrap()
            .contains("timeoutSeconds: 30")
    );
}

#[test]
fn manifests_ca_bundle_reaches_every_webhook() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.crt");
    let pem = "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";
    std::fs::write(&ca, pem).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(pem);

    for flag in [
        vec!["--ca-bundle".to_string(), ca.display().to_string()],
        vec!["--ca-bundle-base64".to_string(), encoded.clone()],
    ] {
        let out = binary().arg("manifests").args(&flag).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = parse_stream(Path::new("stdout"), &String::from_utf8_lossy(&out.stdout));
        let hooks: Vec<&Value> = docs
            .iter()
            .flat_map(|d| d["webhooks"].as_array().unwrap())
            .collect();
        assert!(!hooks.is_empty());
        for w in hooks {
            assert_eq!(
                w["clientConfig"]["caBundle"],
                Value::String(encoded.clone()),
                "{flag:?}"
            );
        }
    }

    // A bundle kube-apiserver could not use is refused, not rendered.
    std::fs::write(&ca, "not a certificate").unwrap();
    let out = binary()
        .arg("manifests")
        .arg("--ca-bundle")
        .arg(&ca)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = binary()
        .args(["manifests", "--ca-bundle-base64", "%%%"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn manifests_url_mode_points_every_webhook_at_the_url_and_refuses_what_kube_apiserver_refuses() {
    let out = binary()
        .args([
            "manifests",
            "--without-ca-bundle",
            "--url",
            "https://127.0.0.1:9443/",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = parse_stream(Path::new("stdout"), &String::from_utf8_lossy(&out.stdout));
    let mut paths = Vec::new();
    for doc in &docs {
        for w in doc["webhooks"].as_array().unwrap() {
            assert!(w["clientConfig"]["service"].is_null(), "{w}");
            let url = w["clientConfig"]["url"].as_str().unwrap().to_string();
            let want = if doc["kind"] == "MutatingWebhookConfiguration" {
                "https://127.0.0.1:9443/mutate"
            } else {
                "https://127.0.0.1:9443/validate"
            };
            assert_eq!(url, want);
            paths.push(url);
            // The rest is exactly the in-cluster configuration: same namespace exclusion.
            assert_eq!(
                w["namespaceSelector"]["matchExpressions"][0]["values"],
                serde_json::json!(["kube-system", "safety-gate"])
            );
        }
    }
    assert!(paths.len() >= 3, "{paths:?}");

    // A path prefix is kept, as kube-apiserver accepts one.
    let out = binary()
        .args([
            "manifests",
            "--without-ca-bundle",
            "--url",
            "https://gate.example:8443/prefix/",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("url: https://gate.example:8443/prefix/validate")
    );

    for bad in [
        "http://127.0.0.1:9443",
        "https://user@127.0.0.1:9443",
        "https://127.0.0.1:9443?a=b",
        "https://127.0.0.1:9443#f",
        "https://",
        "https://10.0.0.5:abc",
        "https://ex ample.com",
        "https://10.0.0.5:99999",
        "https://10.0.0.5:0",
    ] {
        let out = binary()
            .args(["manifests", "--without-ca-bundle", "--url", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--url"), "{bad}: {err}");
    }
}

const FAIL_CLOSED_WILDCARD: &str = r#"
apiVersion: safety-gate.dev/v1alpha1
kind: GatePolicy
metadata:
  name: everything
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: ["*"]
        apiVersions: ["*"]
        operations: ["CREATE"]
        resources: ["*"]
  validations:
    - expression: "true"
"#;

#[test]
fn a_fail_closed_policy_on_wildcard_or_control_plane_resources_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("p.yaml");
    for (resources, expect) in [
        (r#"["*"]"#, "wildcard resources"),
        (r#"["pods"]"#, "kubelets, controllers"),
        (r#"["leases"]"#, "kubelets, controllers"),
        (r#"["deployments"]"#, "wildcard API groups"),
    ] {
        let policy =
            FAIL_CLOSED_WILDCARD.replace(r#"resources: ["*"]"#, &format!("resources: {resources}"));
        std::fs::write(&file, policy).unwrap();
        let set = PolicySet::load_dir(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        let err = deploy::render_webhooks(&set, &Target::default()).unwrap_err();
        assert!(err.to_string().contains(expect), "{resources}: {err}");
        assert!(err.to_string().contains("failurePolicy: Ignore"), "{err}");
    }
    // The same rules failing open are fine.
    std::fs::write(
        &file,
        FAIL_CLOSED_WILDCARD.replace("failurePolicy: Fail", "failurePolicy: Ignore"),
    )
    .unwrap();
    let set = PolicySet::load_dir(tmp.path()).unwrap();
    assert!(deploy::render_webhooks(&set, &Target::default()).is_ok());
}

#[test]
fn no_request_is_sent_to_both_validating_webhooks() {
    let hooks =
        deploy::webhooks(&shipped_policies(), safety_gate::policy::Stage::Validate).unwrap();
    let atoms = |w: &deploy::Webhook| {
        let rules: Vec<_> = w
            .rules
            .iter()
            .map(|r| safety_gate::policy::model::ResourceRule {
                operations: r.operations.clone(),
                api_groups: r.api_groups.clone(),
                api_versions: r.api_versions.clone(),
                resources: r.resources.clone(),
                resource_names: Vec::new(),
                scope: r.scope.clone(),
            })
            .collect();
        deploy::rules::atoms(rules.iter())
    };
    let fail = hooks
        .iter()
        .find(|w| w.failure_policy == FailurePolicy::Fail)
        .expect("a fail-closed webhook");
    let open = hooks
        .iter()
        .find(|w| w.failure_policy == FailurePolicy::Ignore)
        .expect("a fail-open webhook");
    let fail_atoms = atoms(fail);
    for a in atoms(open) {
        assert!(
            !fail_atoms.iter().any(|f| deploy::rules::covers(f, &a)),
            "{a:?} is routed through both webhooks"
        );
    }
    // And nothing a policy needs was lost on the way.
    let routed: BTreeSet<_> = atoms(fail).union(&atoms(open)).cloned().collect();
    for p in shipped_policies()
        .policies()
        .iter()
        .filter(|p| p.validates())
    {
        for a in deploy::rules::atoms(p.webhook_rules().iter()) {
            assert!(
                routed.iter().any(|r| deploy::rules::covers(r, &a)),
                "{} needs {a:?}, which no webhook routes",
                p.name
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Safety properties, on the committed files and on every built variant

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    /// deploy/base: no certificate yet.
    Base,
    /// An overlay in enforce mode with a certificate.
    Enforce,
    /// An overlay with the audit-rollout component.
    Audit,
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} {name}");
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.as_object().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn assert_safe(docs: &[Value], variant: Variant) {
    let ns = deploy::DEFAULT_NAMESPACE;
    let namespace = find(docs, "Namespace", ns);
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    // Every namespaced object lives in the gate's namespace.
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        let cluster_scoped = matches!(
            kind,
            "Namespace"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "ValidatingWebhookConfiguration"
                | "MutatingWebhookConfiguration"
        );
        if !cluster_scoped {
            assert_eq!(
                d["metadata"]["namespace"], ns,
                "{kind} {}",
                d["metadata"]["name"]
            );
        }
    }

    // --- Deployment
    let deployment = find(docs, "Deployment", "safety-gate");
    let spec = &deployment["spec"];
    let replicas = spec["replicas"].as_u64().expect("explicit replicas");
    assert!(
        replicas >= 2,
        "replicas {replicas}: one replica behind a fail-closed webhook is an outage waiting for a drain"
    );
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert!(selects(&spec["selector"]["matchLabels"], pod_labels));
    // --- NetworkPolicy: selects the gate's Pods, admits the webhook port from
    // any source (kube-apiserver's address is distribution-specific; a
    // narrower rule that missed it would make the fail-closed webhook deny
    // everything), and the admin port only from selected namespaces.
    let netpol = find(docs, "NetworkPolicy", "safety-gate");
    assert!(selects(
        &netpol["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    let ingress = netpol["spec"]["ingress"].as_array().expect("ingress rules");
    let admits = |port: &str| {
        ingress
            .iter()
            .filter(|rule| {
                rule["ports"]
                    .as_array()
                    .is_some_and(|ports| ports.iter().any(|p| p["port"] == port))
            })
            .collect::<Vec<_>>()
    };
    assert!(
        admits("webhook")
            .iter()
            .any(|rule| rule.get("from").is_none()),
        "the webhook port must be open to kube-apiserver wherever it connects from"
    );
    assert!(
        admits("admin")
            .iter()
            .all(|rule| rule.get("from").is_some()),
        "the admin port must not be open to everyone"
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host], true, "{host}");
    }
    let priority = pod["priorityClassName"]
        .as_str()
        .expect("priorityClassName");
    assert!(!priority.is_empty());
    let spread = pod["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    assert!(!spread.is_empty());
    for c in spread {
        // DoNotSchedule could leave the gate unschedulable: the outage the spread is meant to avoid.
        assert_eq!(c["whenUnsatisfiable"], "ScheduleAnyway", "{c}");
        assert!(selects(&c["labelSelector"]["matchLabels"], pod_labels));
    }
    assert_eq!(pod["serviceAccountName"], "safety-gate");
    assert_eq!(
        pod["automountServiceAccountToken"], true,
        "the lookup caches need the token"
    );

    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_ne!(sc["privileged"], true);
    assert!(strings(&sc["capabilities"]["drop"]).contains(&"ALL".to_string()));
    assert!(
        sc["capabilities"]["add"].is_null(),
        "no capabilities may be added"
    );
    for r in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][r].is_string(), "requests.{r}");
    }
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "limits.memory"
    );
    assert!(
        quantity_mib(&c["resources"]["limits"]["memory"])
            >= 2 * quantity_mib(&c["resources"]["requests"]["memory"])
    );

    let ports: BTreeMap<String, u64> = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = get["port"].as_str().expect("probe port by name");
        assert!(ports.contains_key(port), "{probe} port {port}");
    }

    let args = strings(&c["args"]);
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    let flag = |name: &str| -> String {
        let prefix = format!("--{name}=");
        args.iter()
            .find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("--{name}=... missing from {args:?}"))
    };
    // Incident 5: explicit IP addresses, nothing resolved at startup.
    let listen: SocketAddr = flag("listen").parse().expect("--listen is an IP:port");
    assert_eq!(u64::from(listen.port()), ports["webhook"]);
    let admin: SocketAddr = flag("admin-listen")
        .parse()
        .expect("--admin-listen is an IP:port");
    assert_eq!(u64::from(admin.port()), ports["admin"]);

    let env: BTreeMap<String, String> = c["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_string(),
                        e["value"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mode = if variant == Variant::Audit {
        "dry-run"
    } else {
        "enforce"
    };
    assert_eq!(env.get("SAFETY_GATE_MODE").map(String::as_str), Some(mode));
    // Without it glibc's per-thread arenas fragment under 1 MB reviews and
    // RSS creeps up (benches/soak.py measured +19 % in 10 minutes).
    assert_eq!(
        env.get("MALLOC_ARENA_MAX").map(String::as_str),
        Some("2"),
        "{env:?}"
    );

    // Mounts: whole directories (kubelet never updates subPath mounts), and
    // the flags point into them.
    let volumes: BTreeMap<String, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v))
        .collect();
    let mut policies_mount = None;
    let mut tls_mount = None;
    for m in c["volumeMounts"].as_array().expect("volumeMounts") {
        assert!(m["subPath"].is_null() && m["subPathExpr"].is_null(), "{m}");
        let volume = volumes[m["name"].as_str().unwrap()];
        let path = m["mountPath"].as_str().unwrap().to_string();
        if volume["configMap"]["name"] == deploy::POLICIES_CONFIGMAP {
            policies_mount = Some(path);
        } else if volume["secret"]["secretName"] == "safety-gate-tls" {
            tls_mount = Some(path);
        }
    }
    let policies_mount = policies_mount.expect("the policies ConfigMap is mounted");
    assert!(flag("policies").starts_with(&policies_mount));
    let tls_mount = tls_mount.expect("the TLS Secret is mounted");
    assert!(flag("tls-cert").starts_with(&tls_mount) && flag("tls-key").starts_with(&tls_mount));

    // The critical priority class is usable outside kube-system.
    if priority.starts_with("system-") {
        let quota = docs
            .iter()
            .find(|d| d["kind"] == "ResourceQuota")
            .expect("a ResourceQuota for the priority class");
        let scope = &quota["spec"]["scopeSelector"]["matchExpressions"][0];
        assert_eq!(scope["scopeName"], "PriorityClass");
        assert!(strings(&scope["values"]).contains(&priority.to_string()));
    }

    // --- PodDisruptionBudget: drains take one replica at a time, never all.
    let pdb = find(docs, "PodDisruptionBudget", "safety-gate");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));
    let max_unavailable = pdb["spec"]["maxUnavailable"]
        .as_u64()
        .expect("maxUnavailable as a number");
    assert!(max_unavailable >= 1 && max_unavailable < replicas);

    // --- Service
    let service = find(docs, "Service", "safety-gate");
    assert!(selects(&service["spec"]["selector"], pod_labels));
    let webhook_port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["targetPort"] == "webhook")
        .expect("a Service port for the webhook");
    let service_port = webhook_port["port"].as_u64().unwrap();

    // --- RBAC: read-only, named kinds only.
    let role = find(docs, "ClusterRole", "safety-gate");
    for rule in role["rules"].as_array().expect("rules") {
        for v in strings(&rule["verbs"]) {
            assert!(
                ["get", "list", "watch"].contains(&v.as_str()),
                "verb {v} in {rule}"
            );
        }
        for field in ["apiGroups", "resources"] {
            assert!(
                !strings(&rule[field]).iter().any(|s| s.contains('*')),
                "{field} wildcard in {rule}"
            );
        }
        assert!(!strings(&rule["resources"]).contains(&"secrets".to_string()));
        assert!(rule["nonResourceURLs"].is_null());
    }
    let binding = find(docs, "ClusterRoleBinding", "safety-gate");
    assert_eq!(binding["roleRef"]["name"], "safety-gate");
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], "safety-gate");
    assert_eq!(binding["subjects"][0]["namespace"], ns);
    find(docs, "ServiceAccount", "safety-gate");
    find(docs, "ConfigMap", deploy::POLICIES_CONFIGMAP);

    // --- Webhooks
    let mut max_validate = 0;
    let mut sum_mutate = 0;
    let mut fail_closed = 0;
    for (kind, path) in [
        ("ValidatingWebhookConfiguration", "/validate"),
        ("MutatingWebhookConfiguration", "/mutate"),
    ] {
        let config = find(docs, kind, "safety-gate");
        let injected = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str();
        if let Some(from) = injected {
            let (cert_ns, cert_name) = from.split_once('/').expect("namespace/name");
            let cert = find(docs, "Certificate", cert_name);
            assert_eq!(cert_ns, ns);
            assert_eq!(
                cert["spec"]["secretName"], "safety-gate-tls",
                "the Deployment mounts this Secret"
            );
            let dns = strings(&cert["spec"]["dnsNames"]);
            assert!(
                dns.contains(&format!("safety-gate.{ns}.svc")),
                "kube-apiserver checks <svc>.<ns>.svc: {dns:?}"
            );
            let issuer = cert["spec"]["issuerRef"]["name"].as_str().unwrap();
            find(docs, "Issuer", issuer);
        }
        for w in config["webhooks"].as_array().expect("webhooks") {
            let name = w["name"].as_str().unwrap();
            assert!(
                name.ends_with(".safety-gate.dev"),
                "{name} is not fully qualified"
            );
            assert_eq!(strings(&w["admissionReviewVersions"]), vec!["v1"], "{name}");
            assert_eq!(
                w["sideEffects"], "None",
                "{name}: dry-run requests would be rejected"
            );
            assert_eq!(w["matchPolicy"], "Equivalent", "{name}");
            assert!(
                w["objectSelector"].is_null(),
                "{name}: users who edit labels could opt out"
            );
            let timeout = w["timeoutSeconds"]
                .as_u64()
                .expect("explicit timeoutSeconds");
            assert!(
                (1..=5).contains(&timeout),
                "{name}: timeoutSeconds {timeout}"
            );

            let selector = &w["namespaceSelector"];
            assert!(
                selector["matchLabels"].is_null(),
                "{name}: opt-in selectors exempt every unlabelled namespace"
            );
            let excluded = selector["matchExpressions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
                .map(|e| strings(&e["values"]))
                .unwrap_or_else(|| panic!("{name}: no NotIn on kubernetes.io/metadata.name"));
            for must in ["kube-system", ns] {
                assert!(
                    excluded.contains(&must.to_string()),
                    "{name} must exclude {must}"
                );
            }

            let svc = &w["clientConfig"]["service"];
            assert!(w["clientConfig"]["url"].is_null());
            assert_eq!(svc["namespace"], ns);
            assert_eq!(svc["name"], "safety-gate");
            assert_eq!(svc["path"], path);
            assert_eq!(svc["port"].as_u64(), Some(service_port));
            match variant {
                Variant::Base => assert!(w["clientConfig"]["caBundle"].is_null()),
                Variant::Enforce | Variant::Audit => assert!(
                    injected.is_some() || w["clientConfig"]["caBundle"].is_string(),
                    "{name}: no caBundle and no CA injection"
                ),
            }

            let failure = w["failurePolicy"].as_str().expect("explicit failurePolicy");
            if failure == "Fail" {
                fail_closed += 1;
                assert_narrow(name, &w["rules"]);
            } else {
                assert_eq!(failure, "Ignore");
            }
            if kind == "MutatingWebhookConfiguration" {
                assert_eq!(w["reinvocationPolicy"], "IfNeeded", "{name}");
                assert_eq!(
                    failure, "Ignore",
                    "{name}: mutation fails open; validation enforces"
                );
                sum_mutate += timeout;
            } else {
                max_validate = max_validate.max(timeout);
            }
        }
    }
    match variant {
        Variant::Audit => assert_eq!(
            fail_closed, 0,
            "the audit rollout must not fail closed anywhere"
        ),
        Variant::Base | Variant::Enforce => assert!(
            fail_closed > 0,
            "the shipped policies need a fail-closed webhook"
        ),
    }
    let worst = 2 * sum_mutate + max_validate;
    assert!(
        worst <= u64::from(deploy::MAX_ADDED_LATENCY_SECONDS),
        "the gate could add {worst}s to one write"
    );
}

/// A fail-closed webhook names its resources and operations, and none of
/// them is something the control plane or the gate needs to recover.
fn assert_narrow(name: &str, rules: &Value) {
    for rule in rules.as_array().expect("rules") {
        let resources = strings(&rule["resources"]);
        let operations = strings(&rule["operations"]);
        assert!(!resources.is_empty() && !operations.is_empty());
        for r in &resources {
            assert!(
                !r.contains('*'),
                "{name}: wildcard resource {r} in a Fail webhook"
            );
            let base = r.split('/').next().unwrap();
            assert!(
                !deploy::FAIL_CLOSED_FORBIDDEN_RESOURCES.contains(&base)
                    && !deploy::FAIL_CLOSED_FORBIDDEN_RESOURCES.contains(&r.as_str()),
                "{name}: {r} in a Fail webhook"
            );
        }
        for o in &operations {
            assert!(
                o != "*" && o != "CONNECT",
                "{name}: operation {o} in a Fail webhook"
            );
        }
        assert!(
            !strings(&rule["apiGroups"]).contains(&"*".to_string()),
            "{name}: apiGroups *"
        );
    }
}

/// `64Mi` and friends, in MiB (only the suffixes deploy/ uses).
fn quantity_mib(v: &Value) -> u64 {
    let s = v.as_str().expect("quantity");
    if let Some(n) = s.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = s.strip_suffix("Gi") {
        n.parse::<u64>().unwrap() * 1024
    } else {
        panic!("unexpected memory quantity {s}")
    }
}

#[test]
fn committed_base_files_hold_the_safety_properties() {
    assert_safe(&base_documents(), Variant::Base);
}

/// Copies deploy/ into a temporary directory with a throwaway certificate
/// in deploy/self-signed/tls, as `safety-gate certs` would leave it.
fn deploy_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("deploy"), &tmp.path().join("deploy"));
    let tls = tmp.path().join("deploy/self-signed/tls");
    std::fs::create_dir_all(&tls).unwrap();
    let cert = "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";
    std::fs::write(tls.join("ca.crt"), cert).unwrap();
    std::fs::write(tls.join("tls.crt"), cert).unwrap();
    std::fs::write(
        tls.join("tls.key"),
        "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            // A developer's real certificate never leaves the work tree.
            if entry.file_name() != "tls" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const VARIANTS: [(&str, Variant); 4] = [
    ("cert-manager", Variant::Enforce),
    ("cert-manager-audit", Variant::Audit),
    ("self-signed", Variant::Enforce),
    ("self-signed-audit", Variant::Audit),
];

#[test]
fn every_variant_builds_holds_the_safety_properties_and_passes_the_openapi_schemas() {
    if !tool(
        "kubectl",
        &["version", "--client"],
        "apt-get install -y kubectl",
    ) {
        return;
    }
    let validate = validator();
    let tmp = deploy_copy();
    for (dir, variant) in VARIANTS {
        let path = tmp.path().join("deploy").join(dir);
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize deploy/{dir}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let docs = parse_stream(&path, &text);
        assert_safe(&docs, variant);

        if dir.starts_with("self-signed") {
            // caBundle is the generated ca.crt (Secret data is base64 of the PEM, as caBundle is).
            let ca = std::fs::read(tmp.path().join("deploy/self-signed/tls/ca.crt")).unwrap();
            for kind in [
                "ValidatingWebhookConfiguration",
                "MutatingWebhookConfiguration",
            ] {
                for w in find(&docs, kind, "safety-gate")["webhooks"]
                    .as_array()
                    .unwrap()
                {
                    let bundle: String = w["clientConfig"]["caBundle"]
                        .as_str()
                        .unwrap()
                        .split_whitespace()
                        .collect();
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(bundle)
                        .unwrap();
                    assert_eq!(decoded, ca, "{dir}: {}", w["name"]);
                }
            }
        }

        if let Some(validator) = &validate {
            let file = tmp.path().join(format!("{dir}.yaml"));
            std::fs::write(&file, &text).unwrap();
            for version in KUBERNETES_VERSIONS {
                let out = validate_command(validator, version, &file);
                let report = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    out.status.success(),
                    "deploy/{dir} against Kubernetes {version}:\n{report}"
                );
                // Only the cert-manager kinds have no schema in the bundle.
                for line in report
                    .lines()
                    .filter(|l| l.contains("Couldn't find schema"))
                {
                    assert!(line.contains("cert-manager.io"), "deploy/{dir}: {line}");
                }
            }
        }
    }
}

#[test]
fn the_validator_rejects_a_broken_manifest() {
    // Proves the schema check above can fail.
    let Some(validator) = validator() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let path = repo().join("deploy/base").join(deploy::WEBHOOKS_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let broken = tmp.path().join("broken.yaml");
    std::fs::write(
        &broken,
        text.replacen("sideEffects: None", "sideEfects: None", 1),
    )
    .unwrap();
    let out = validate_command(&validator, KUBERNETES_VERSIONS[0], &broken);
    assert!(
        !out.status.success(),
        "kubernetes-validate accepted a misspelt field"
    );
}

// ---------------------------------------------------------------------------
// Hot reload from the ConfigMap volume

/// kubelet's layout of a ConfigMap volume: the files live in a timestamped
/// directory, `..data` points at it, and each key is a symlink through
/// `..data`. An update writes a new directory and swaps `..data`.
#[cfg(unix)]
fn configmap_volume(mount: &Path, files: &BTreeMap<String, String>, stamp: &str) {
    let dir = mount.join(stamp);
    std::fs::create_dir_all(&dir).unwrap();
    for (k, v) in files {
        std::fs::write(dir.join(k), v).unwrap();
    }
    let tmp_link = mount.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(stamp, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, mount.join("..data")).unwrap();
    for k in files.keys() {
        let link = mount.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{k}"), &link).unwrap();
        }
    }
}

#[cfg(unix)]
#[test]
fn the_deployment_policies_path_loads_each_policy_once_from_a_configmap_volume() {
    let docs = base_documents();
    let c = &find(&docs, "Deployment", "safety-gate")["spec"]["template"]["spec"]["containers"][0];
    let policies = strings(&c["args"])
        .iter()
        .find_map(|a| a.strip_prefix("--policies=").map(str::to_string))
        .unwrap();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "policies")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    let relative = policies
        .strip_prefix(&mount)
        .unwrap()
        .trim_start_matches('/');

    let tmp = tempfile::tempdir().unwrap();
    let files = deploy::policy_files(&repo().join("policies")).unwrap();
    configmap_volume(tmp.path(), &files, "..2026_01_01_00_00_00.000000001");
    let dir = tmp.path().join(relative);
    let set = PolicySet::load_dir(&dir)
        .unwrap_or_else(|e| panic!("--policies={policies} in a ConfigMap volume:\n{e}"));
    let mut names = set.names();
    names.sort();
    let mut expected = shipped_policies().names();
    expected.sort();
    assert_eq!(names, expected);

    // After kubelet swaps in an update, the same path shows the new contents.
    let mut updated = files.clone();
    updated.remove("selector-change-warning.yaml");
    configmap_volume(tmp.path(), &updated, "..2026_01_01_00_01_00.000000002");
    let set = PolicySet::load_dir(&dir).unwrap();
    assert_eq!(set.len(), expected.len() - 1);
}

// ---------------------------------------------------------------------------
// Image and repository hygiene

#[test]
fn dockerfile_builds_locked_and_static_and_runs_non_root_without_a_shell() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage build");
    assert!(text.contains("cargo build --release --locked"));
    assert!(
        text.contains("+crt-static") || text.contains("musl"),
        "static binary"
    );
    let runtime = &lines[*stages.last().unwrap()..];
    assert!(
        runtime[0].contains("distroless/static") || runtime[0].contains("scratch"),
        "{}",
        runtime[0]
    );
    // No RUN in the final stage: it has no shell to run it with.
    assert!(!runtime.iter().any(|l| l.starts_with("RUN ")));
    // The image runs with two malloc arenas, as the Deployment does.
    assert!(runtime.contains(&"ENV MALLOC_ARENA_MAX=2"), "{runtime:?}");
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    let docs = base_documents();
    let run_as = find(&docs, "Deployment", "safety-gate")["spec"]["template"]["spec"]
        ["securityContext"]["runAsUser"]
        .as_u64()
        .unwrap();
    assert_eq!(user.split(':').next(), Some(run_as.to_string().as_str()));
    assert!(
        runtime.contains(&r#"ENTRYPOINT ["/safety-gate"]"#),
        "exec-form ENTRYPOINT, no shell"
    );
    assert!(
        text.contains("--listen=0.0.0.0:8443"),
        "explicit bind address"
    );

    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for entry in ["target/", "*.key", "deploy/self-signed/tls/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore: {entry}"
        );
    }
}

#[test]
fn private_keys_are_never_committed() {
    let ignore = std::fs::read_to_string(repo().join(".gitignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "*.key"),
        ".gitignore must cover *.key"
    );
}

#[test]
fn manifests_native_static_writes_the_manifest_based_form_kube_apiserver_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("static");
    let run = binary()
        .args(["manifests", "--native", "--out"])
        .arg(&out)
        .arg("--static")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let config = std::fs::read_to_string(out.join("admission-configuration.yaml")).unwrap();
    assert!(config.contains("kind: ValidatingAdmissionPolicyConfiguration"));
    assert!(config.contains(&format!(
        "staticManifestsDir: {}",
        out.join("validating-policies").display()
    )));
    let policies = out.join("validating-policies");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&policies).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // kube-apiserver refuses a directory with a comment-only document.
        assert!(!text.trim_start().starts_with("---"), "{}", path.display());
        for doc in parse_stream(&path, &text) {
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            assert!(name.ends_with(".static.k8s.io"), "{name}");
            if doc["kind"] == "ValidatingAdmissionPolicyBinding" {
                assert!(
                    doc["spec"]["policyName"]
                        .as_str()
                        .unwrap()
                        .ends_with(".static.k8s.io")
                );
            }
            names.push(name);
        }
    }
    assert!(
        names.contains(&"protect-safety-gate-admission.safety-gate.static.k8s.io".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"protect-rbac-defaults.safety-gate.static.k8s.io".to_string()));
    // kube-apiserver needs an absolute staticManifestsDir.
    let run = binary()
        .args(["manifests", "--native", "--out"])
        .arg(&out)
        .args(["--static", "relative/dir"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("absolute"));
}

#[test]
fn the_native_overlay_holds_what_the_policies_render_and_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let out = binary()
        .args(["manifests", "--native", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let committed = repo().join("deploy/native/policies");
    let mut rendered: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    rendered.sort();
    let mut present: Vec<String> = std::fs::read_dir(&committed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    assert_eq!(rendered, present);
    for name in &rendered {
        assert!(
            std::fs::read_to_string(tmp.path().join(name)).unwrap()
                == std::fs::read_to_string(committed.join(name)).unwrap(),
            "deploy/native/policies/{name} is stale: run `safety-gate manifests --native --out deploy/native/policies`"
        );
    }
    let kustomization =
        std::fs::read_to_string(repo().join("deploy/native/kustomization.yaml")).unwrap();
    for name in &rendered {
        assert!(
            kustomization.contains(&format!("policies/{name}")),
            "{name} is not in deploy/native/kustomization.yaml"
        );
    }
    if !tool(
        "kubectl",
        &["version", "--client"],
        "apt-get install -y kubectl",
    ) {
        return;
    }
    let tmp = deploy_copy();
    let built = Command::new("kubectl")
        .arg("kustomize")
        .arg(tmp.path().join("deploy/native"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let docs = parse_stream(Path::new("native"), &String::from_utf8_lossy(&built.stdout));
    find(
        &docs,
        "ValidatingAdmissionPolicy",
        "protect-rbac-defaults.safety-gate.dev",
    );
    find(&docs, "ValidatingWebhookConfiguration", "safety-gate");
}

#[test]
fn mutating_admission_policy_rules_are_routed_to_mutate_under_their_failure_policy() {
    let set = PolicySet::load_files(&[repo().join("tests/policies/map/policies.yaml")])
        .unwrap_or_else(|e| panic!("{e}"));
    let validate = deploy::webhooks(&set, safety_gate::policy::Stage::Validate).unwrap();
    assert!(validate.is_empty(), "MAPs never run on /validate");
    let mutate = deploy::webhooks(&set, safety_gate::policy::Stage::Mutate).unwrap();
    let by_policy = |fp: FailurePolicy| -> Value {
        let hook = mutate
            .iter()
            .find(|h| h.failure_policy == fp)
            .unwrap_or_else(|| panic!("a {fp:?} webhook"));
        serde_json::to_value(&hook.rules).unwrap()
    };
    let config = deploy::objects::mutating_configuration(&mutate, &Target::default()).unwrap();
    for hook in config.webhooks.iter().flatten() {
        assert_eq!(
            hook.client_config
                .service
                .as_ref()
                .and_then(|s| s.path.as_deref()),
            Some("/mutate")
        );
    }
    // default-team-label (CREATE) and replicas-must-be-a-number (UPDATE) fail closed;
    // owner-annotation (CREATE, UPDATE) fails open, and the fail-closed webhook
    // already takes its CREATE and UPDATE of deployments.
    let fail = by_policy(FailurePolicy::Fail).to_string();
    assert!(
        fail.contains("deployments") && fail.contains("CREATE") && fail.contains("UPDATE"),
        "{fail}"
    );
    // So the fail-open webhook would take nothing and is not rendered.
    assert_eq!(mutate.len(), 1);
    assert_eq!(
        mutate[0].policies,
        ["default-team-label", "replicas-must-be-a-number"]
    );
}
