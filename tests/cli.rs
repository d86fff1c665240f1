//! The command line end to end: the real binary on real files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_safety-gate"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env("NO_COLOR", "1");
    c
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out: Output = bin().args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(p: &str) -> String {
    Path::new("tests/fixtures").join(p).display().to_string()
}

#[test]
fn incident_3_review_names_the_selector_change_before_anything_is_applied() {
    let (code, out, err) = run(&[
        "review",
        &fixture("incident-3/manifests"),
        "--live",
        &fixture("incident-3/live"),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let results: serde_json::Value = serde_json::from_str(&out).expect("json");
    let deployment = results
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["kind"] == "Deployment")
        .expect("deployment reviewed");
    assert_eq!(
        deployment["operation"], "UPDATE",
        "the live object exists: an UPDATE over it"
    );
    assert_eq!(
        deployment["deniedBy"],
        serde_json::json!(["immutable-fields"])
    );
    let message = deployment["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["policy"] == "immutable-fields")
        .expect("policy")["messages"][0]
        .as_str()
        .expect("message")
        .to_string();
    for needle in [
        "spec.selector",
        "release=pre",
        "release=qa",
        "kubectl delete deployment english-grammar-web -n english",
    ] {
        assert!(message.contains(needle), "{needle:?} missing in {message}");
    }
    let service = results
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["kind"] == "Service")
        .expect("service reviewed");
    assert_eq!(service["operation"], "CREATE");
    assert_eq!(service["allowed"], true);
}

#[test]
fn review_table_and_exit_codes() {
    let (code, out, _) = run(&[
        "review",
        &fixture("incident-3/manifests"),
        "--live",
        &fixture("incident-3/live"),
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("immutable-fields")
            && out.contains("DENY")
            && out.contains("deployment.json:1"),
        "{out}"
    );
    assert!(out.contains("2 objects: 1 would be denied"), "{out}");
    // Without the live object the Deployment is a CREATE, and nothing is denied.
    let (code, out, _) = run(&["review", &fixture("incident-3/manifests")]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn review_reads_stdin_and_reports_sarif_and_junit() {
    let manifest =
        std::fs::read_to_string(fixture("audit/snapshot/workloads.yaml")).expect("fixture");
    let mut child = bin()
        .args([
            "review",
            "-",
            "--policies",
            &fixture("audit/policies"),
            "--format",
            "sarif",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), manifest.as_bytes())
        .expect("writes");
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.code(), Some(1));
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sarif is json");
    assert_eq!(sarif["version"], "2.1.0");
    let result = &sarif["runs"][0]["results"][0];
    assert_eq!(result["ruleId"], "no-latest-tag");
    assert_eq!(result["level"], "error");
    assert_eq!(
        result["locations"][0]["physicalLocation"]["region"]["startLine"], 5,
        "the List item's own line, not the List's"
    );
    assert_eq!(
        sarif["runs"][0]["tool"]["driver"]["rules"][0]["id"],
        "no-latest-tag"
    );

    let (code, out, _) = run(&[
        "review",
        &fixture("audit/snapshot/workloads.yaml"),
        "--policies",
        &fixture("audit/policies"),
        "--format",
        "junit",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("<testsuite")
            && out.contains("failures=\"1\"")
            && out.contains("unpinned image: nginx:latest"),
        "{out}"
    );
}

#[test]
fn review_input_errors_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [unclosed\n",
    )
    .expect("write");
    let (code, _, err) = run(&["review", &bad.display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.yaml:5"), "{err}");
    let (code, _, err) = run(&["review", "does-not-exist.yaml"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run(&["review", "--bogus-flag", "x"]);
    assert_eq!(code, 2);
}

#[test]
fn review_generate_name_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("gen.yaml");
    std::fs::write(&m, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  generateName: web-\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: 'nginx:latest'}]\n").expect("write");
    let (code, out, _) = run(&[
        "review",
        &m.display().to_string(),
        "--policies",
        &fixture("audit/policies"),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1);
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(r[0]["operation"], "CREATE");
    let (code, out, _) = run(&[
        "review",
        &m.display().to_string(),
        "--policies",
        &fixture("audit/policies"),
        "--operation",
        "delete",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "no-latest-tag does not match DELETE: {out}");
}

#[test]
fn audit_reports_existing_violations_in_every_format() {
    let snapshot = fixture("audit/snapshot");
    let policies = fixture("audit/policies");
    let (code, out, _) = run(&["audit", "--snapshot", &snapshot, "--policies", &policies]);
    assert_eq!(code, 1);
    assert!(
        out.contains("Deployment/shop/web") && out.contains("no-latest-tag: 1 failed, 1 passed"),
        "{out}"
    );
    let (_, out, _) = run(&[
        "audit",
        "--snapshot",
        &snapshot,
        "--policies",
        &policies,
        "--format",
        "json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        r.as_array().expect("array").len(),
        2,
        "only objects a policy evaluated"
    );
    let (_, out, _) = run(&[
        "audit",
        "--snapshot",
        &snapshot,
        "--policies",
        &policies,
        "--format",
        "policyreport",
    ]);
    let reports: Vec<serde_json::Value> = out
        .split("---\n")
        .map(|d| serde_saphyr::from_str(d).expect("yaml"))
        .collect();
    assert_eq!(reports.len(), 2, "one PolicyReport per namespace");
    let shop = reports
        .iter()
        .find(|r| r["metadata"]["namespace"] == "shop")
        .expect("shop report");
    assert_eq!(shop["kind"], "PolicyReport");
    assert_eq!(shop["summary"]["fail"], 1);
    assert_eq!(shop["results"][0]["resources"][0]["name"], "web");
}

#[test]
fn audit_of_delete_only_policies_reports_nothing() {
    let (code, out, _) = run(&[
        "audit",
        "--snapshot",
        &fixture("audit/snapshot"),
        "--policies",
        "policies/protect-rbac-defaults.yaml",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 matched by a policy"), "{out}");
}

#[test]
fn check_reports_file_and_line_and_exits_1() {
    let (code, out, _) = run(&["check", "--policies", "policies"]);
    assert_eq!(code, 0, "the shipped policies load: {out}");
    let dir = tempfile::tempdir().expect("tempdir");
    let p: PathBuf = dir.path().join("broken.yaml");
    std::fs::write(&p, "apiVersion: safety-gate.dev/v1alpha1\nkind: GatePolicy\nmetadata:\n  name: broken\nspec:\n  matchConstraints:\n    resourceRules:\n    - {apiGroups: [''], apiVersions: ['*'], operations: ['*'], resources: [pods]}\n  validations:\n  - expression: \"object.spec.containers.all(c, c.image.startsWith('x')\"\n").expect("write");
    let (code, _, err) = run(&["check", "--policies", &dir.path().display().to_string()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("broken.yaml:10: policy broken: spec.validations[0].expression:"),
        "{err}"
    );
    let (code, _, _) = run(&["check", "--policies", "no/such/dir"]);
    assert_eq!(code, 2);
}

#[test]
fn check_loads_an_unbound_vap_and_says_it_does_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("vap.yaml"),
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: unbound\nspec:\n  matchConstraints:\n    resourceRules:\n    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [pods]}\n  validations:\n  - expression: \"false\"\n",
    )
    .expect("write");
    let (code, out, err) = run(&["check", "--policies", &dir.path().display().to_string()]);
    assert_eq!(code, 0, "kube-apiserver accepts an unbound policy: {err}");
    assert!(
        out.contains(
            "vap.yaml:4: note: unbound: no ValidatingAdmissionPolicyBinding names this policy"
        ),
        "{out}"
    );
    assert!(out.contains("0 policies loaded"), "{out}");
    assert!(err.is_empty(), "a note is not an error: {err}");
}

#[test]
fn check_prints_the_rbac_the_lookups_need() {
    let (code, out, _) = run(&["check", "--policies", "policies", "--print-rbac"]);
    assert_eq!(code, 0);
    let role: serde_json::Value = serde_saphyr::from_str(&out).expect("yaml");
    assert_eq!(role["kind"], "ClusterRole");
    let rules = role["rules"].as_array().expect("rules");
    let kubefed = rules
        .iter()
        .find(|r| r["apiGroups"][0] == "core.kubefed.io")
        .expect("the KubeFedCluster lookup");
    assert_eq!(kubefed["resources"], serde_json::json!(["kubefedclusters"]));
    assert_eq!(
        kubefed["verbs"],
        serde_json::json!(["get", "list", "watch"])
    );
    assert!(
        rules
            .iter()
            .all(|r| r["verbs"] == serde_json::json!(["get", "list", "watch"])),
        "read-only: {out}"
    );
}

/// A VAP that denies ConfigMaps in namespaces named `prod` only.
const PROD_ONLY_VAP: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: prod-configmaps}
spec:
  failurePolicy: Fail
  matchConstraints:
    namespaceSelector:
      matchLabels: {kubernetes.io/metadata.name: prod}
    resourceRules:
    - {apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  validations:
  - {expression: \"false\", message: no ConfigMaps in prod}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: prod-configmaps}
spec: {policyName: prod-configmaps, validationActions: [Deny]}
";

#[test]
fn review_without_cluster_state_knows_the_namespace_name_label_and_input_namespaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(policies.join("vap.yaml"), PROD_ONLY_VAP).expect("write");
    let p = policies.display().to_string();
    let cm = |ns: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: {ns}}}\n")
    };
    let m = dir.path().join("m.yaml");

    // kube-apiserver labels every namespace kubernetes.io/metadata.name=<name>:
    // no cluster state is needed to know that `dev` is not `prod`.
    std::fs::write(&m, cm("dev")).expect("write");
    let (code, out, err) = run(&["review", &m.display().to_string(), "--policies", &p]);
    assert_eq!(code, 0, "a ConfigMap in dev is not denied: {out}{err}");
    std::fs::write(&m, cm("prod")).expect("write");
    let (code, out, _) = run(&["review", &m.display().to_string(), "--policies", &p]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no ConfigMaps in prod"), "{out}");

    // kube-apiserver sets kubernetes.io/metadata.name to the name, whatever a
    // manifest says: a Namespace `dev` claiming to be `prod` is still `dev`.
    std::fs::write(
        &m,
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: dev, labels: {{kubernetes.io/metadata.name: prod}}}}\n---\n{}",
            cm("dev")
        ),
    )
    .expect("write");
    let (code, out, err) = run(&["review", &m.display().to_string(), "--policies", &p]);
    assert_eq!(code, 0, "dev is not prod: {out}{err}");

    // A selector on another label: the Namespace in the same input is used.
    std::fs::write(
        policies.join("vap.yaml"),
        PROD_ONLY_VAP.replace("kubernetes.io/metadata.name: prod", "stage: prod"),
    )
    .expect("write");
    std::fs::write(
        &m,
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team, labels: {{stage: dev}}}}\n---\n{}",
            cm("team")
        ),
    )
    .expect("write");
    let (code, out, err) = run(&["review", &m.display().to_string(), "--policies", &p]);
    assert_eq!(code, 0, "the input's Namespace says stage=dev: {out}{err}");

    // A namespace nobody knows: neither allowed nor denied, exit 3 with a hint.
    std::fs::write(&m, cm("elsewhere")).expect("write");
    let (code, out, err) = run(&[
        "review",
        &m.display().to_string(),
        "--policies",
        &p,
        "--format",
        "json",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("--live") && err.contains("--cluster"), "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(r[0]["decision"], "undecided", "{out}");
    assert_eq!(r[0]["deniedBy"], serde_json::json!([]), "{out}");
    assert_eq!(
        r[0]["undecidedBy"],
        serde_json::json!(["prod-configmaps"]),
        "{out}"
    );
}

#[test]
fn review_and_audit_refuse_empty_input_and_an_update_without_the_live_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty_dir = dir.path().join("empty");
    std::fs::create_dir_all(&empty_dir).expect("mkdir");
    let only_separator = dir.path().join("sep.yaml");
    std::fs::write(&only_separator, "---\n").expect("write");
    for path in [&empty_dir, &only_separator] {
        let (code, out, err) = run(&["review", &path.display().to_string()]);
        assert_eq!(code, 2, "{path:?}: {out}{err}");
        assert!(err.contains("no objects"), "{err}");
    }
    let out = bin()
        .args(["review", "-"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let (code, _, err) = run(&["audit", "--snapshot", &empty_dir.display().to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no objects"), "{err}");

    let m = dir.path().join("cm.yaml");
    std::fs::write(&m, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n").expect("write");
    let (code, _, err) = run(&["review", &m.display().to_string(), "--operation", "update"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--live") && err.contains("--cluster"), "{err}");
    let (code, _, err) = run(&[
        "review",
        &m.display().to_string(),
        "--operation",
        "update",
        "--live",
        &empty_dir.display().to_string(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn review_applies_mutating_admission_policies_before_validating() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("d.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: app, image: nginx}]\n",
    )
    .unwrap();
    // A validation that only the mutated object passes: the team label comes from a MAP.
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::copy(
        "tests/policies/map/policies.yaml",
        policies.join("map.yaml"),
    )
    .unwrap();
    std::fs::write(
        policies.join("team.yaml"),
        "apiVersion: safety-gate.dev/v1alpha1\nkind: GatePolicy\nmetadata: {name: team-label-required}\nspec:\n  matchConstraints:\n    resourceRules:\n    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}\n  validations:\n  - expression: \"has(object.metadata.labels) && 'team' in object.metadata.labels\"\n    message: a team label is required\n",
    )
    .unwrap();
    let (code, out, err) = run(&[
        "review",
        &manifest.display().to_string(),
        "--policies",
        &policies.display().to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let results: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(results[0]["allowed"], true, "{out}");
    assert_eq!(
        results[0]["mutatedBy"],
        serde_json::json!(["default-team-label", "owner-annotation"]),
        "{out}"
    );
    assert!(out.contains("\"team\": \"shop\""), "{out}");
}

/// A `kind: List` with the violating Deployment as its second item, after a
/// ConfigMap document.
const LIST_WITH_DENIED_SECOND_ITEM: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: first}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web, namespace: shop}
  spec:
    selector: {matchLabels: {app: web}}
    template:
      metadata: {labels: {app: web}}
      spec:
        containers: [{name: web, image: 'nginx:latest'}]
";

#[test]
fn list_items_and_later_documents_report_their_own_line_in_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("list.yaml");
    std::fs::write(&m, LIST_WITH_DENIED_SECOND_ITEM).expect("write");
    let m = m.display().to_string();
    let policies = fixture("audit/policies");
    let review = |format: &str| {
        let (code, out, err) = run(&["review", &m, "--policies", &policies, "--format", format]);
        assert_eq!(code, 1, "{out}{err}");
        out
    };
    let json: serde_json::Value = serde_json::from_str(&review("json")).expect("json");
    let lines: Vec<_> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["line"].clone(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            ("first".to_string(), serde_json::json!(1)),
            ("c".to_string(), serde_json::json!(8)),
            ("web".to_string(), serde_json::json!(11)),
        ]
    );
    let sarif: serde_json::Value = serde_json::from_str(&review("sarif")).expect("sarif");
    assert_eq!(
        sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"],
        11
    );
    assert!(review("table").contains("list.yaml:11"));
    let (code, out, _) = run(&[
        "audit",
        "--snapshot",
        &m,
        "--policies",
        &policies,
        "--format",
        "json",
    ]);
    assert_eq!(code, 1);
    let audit: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(audit[0]["line"], 11, "{out}");

    // An error in a later document: one line number, the file's.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  x: [unclosed\n",
    )
    .expect("write");
    let (code, _, err) = run(&["review", &bad.display().to_string()]);
    assert_eq!(code, 2);
    let line = err
        .lines()
        .find(|l| l.contains("bad.yaml"))
        .expect("names the file");
    assert!(line.contains("bad.yaml:10: "), "{err}");
    assert!(
        !line.contains("line 6"),
        "a second, document-relative line: {err}"
    );
}

#[test]
fn messages_say_how_to_fix_and_count_in_plain_words() {
    // Outside the repository the default `--policies policies` does not
    // exist: say which flag or environment variable sets it.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let m = elsewhere.path().join("cm.yaml");
    std::fs::write(&m, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n").expect("write");
    for args in [
        vec!["review", "cm.yaml"],
        vec!["audit", "--snapshot", "cm.yaml"],
        vec!["check"],
    ] {
        let out = bin()
            .args(&args)
            .current_dir(elsewhere.path())
            .env_remove("SAFETY_GATE_POLICIES")
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--policies")
                && err.contains("SAFETY_GATE_POLICIES")
                && !err.contains(":0:"),
            "{args:?}: {err}"
        );
    }

    // A duplicate key: no advice about options of a YAML library.
    let dup = elsewhere.path().join("dup.yaml");
    std::fs::write(
        &dup,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n",
    )
    .expect("write");
    let (code, _, err) = run(&["review", &dup.display().to_string()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("dup.yaml:5: duplicate mapping key: name"),
        "{err}"
    );
    assert!(
        !err.contains("Options") && !err.contains("DuplicateKeyPolicy"),
        "{err}"
    );

    // A failed PolicyTest expectation in plain words, not Rust's `Some(…)`/`None`.
    let suite = format!(
        "apiVersion: safety-gate.dev/v1alpha1\nkind: PolicyTest\nmetadata: {{name: wrong-code}}\nspec:\n  policies: [{}]\n  cases:\n  - name: expects a denial\n    object: {{file: tests/fixtures/incident-3/manifests/deployment.json}}\n    expect: {{code: 403}}\n",
        fixture("audit/policies")
    );
    let (code, out, _) = run_stdin(&["test", "-"], &suite);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("expected code 403, got none (allowed)"),
        "{out}"
    );
    assert!(!out.contains("Some(") && !out.contains("None"), "{out}");

    // Counts: "1 policy", and audit's numbers all count objects.
    let (_, out, _) = run(&["check", "--policies", &fixture("audit/policies")]);
    assert!(out.contains("1 policy loaded from"), "{out}");
    let (_, out, _) = run(&[
        "audit",
        "--snapshot",
        &fixture("audit/snapshot"),
        "--policies",
        &fixture("audit/policies"),
    ]);
    assert!(out.contains("4 objects scanned in "), "{out}");
    assert!(out.contains("; 2 matched by a policy"), "{out}");
    assert!(
        out.contains("2 objects: 1 would be denied, 0 warned, 1 clean"),
        "{out}"
    );
}

#[test]
fn serve_logs_plain_text_off_a_terminal() {
    let mut child = bin()
        .env_remove("NO_COLOR")
        .args([
            "serve",
            "--dev-cert",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("stderr");
    let mut log = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.expect("utf-8 log");
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening") {
            break;
        }
    }
    child.kill().expect("kill");
    let _ = child.wait();
    let listening = log
        .lines()
        .find(|l| l.contains("listening"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        !log.contains('\x1b'),
        "colour codes off a terminal: {log:?}"
    );
    assert!(listening.contains("mode=enforce"), "{listening}");
    assert!(listening.contains("admin=127.0.0.1:"), "{listening}");
    assert!(!log.contains("Some("), "Rust debug formatting: {log}");
}

/// The incident-3 review (one denial with a long message) from its fixture
/// folder, so locations are short as in a repository; `env` adds variables.
fn incident_3_table(format: &str, env: &[(&str, &str)]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = bin();
    cmd.current_dir(root.join("tests/fixtures/incident-3"))
        .env_remove("NO_COLOR")
        .env_remove("COLUMNS")
        .env_remove("CLICOLOR_FORCE")
        .args(["review", "manifests", "--live", "live", "--format", format])
        .arg("--policies")
        .arg(root.join("policies"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn strip_ansi(text: &str) -> String {
    regex::Regex::new("\x1b\\[[0-9;]*m")
        .expect("regex")
        .replace_all(text, "")
        .into_owned()
}

#[test]
fn table_fits_the_terminal_and_colour_does_not_shift_columns() {
    let message_start = "Deployment english/english-grammar-web: spec.selector is immutable";
    let coloured = incident_3_table("table", &[("COLUMNS", "120"), ("CLICOLOR_FORCE", "1")]);
    assert!(coloured.contains('\x1b'), "colour is on: {coloured}");
    let plain = strip_ansi(&coloured);
    let lines: Vec<&str> = plain.lines().collect();
    let table: Vec<&&str> = lines.iter().take_while(|l| !l.is_empty()).collect();
    assert!(table.iter().all(|l| l.chars().count() <= 120), "{plain}");
    let header = lines[0];
    let row = lines[1];
    assert!(
        header.starts_with("LOCATION") && row.starts_with("manifests/deployment.json:1"),
        "{plain}"
    );
    for (column, cell) in [
        ("DECISION", "DENY"),
        ("POLICIES", "immutable-fields"),
        ("OBJECT", "Deployment/"),
    ] {
        assert_eq!(
            header.find(column),
            row.find(cell),
            "{column} and {cell} line up:\n{plain}"
        );
    }
    assert_eq!(
        lines[2], "",
        "one line per object, then the messages: {plain}"
    );
    // The full message, unbroken, below the table.
    let message_line = lines
        .iter()
        .find(|l| l.contains(message_start))
        .unwrap_or_else(|| panic!("{plain}"));
    assert!(
        message_line.contains("immutable-fields")
            && message_line.contains("(its Pods are replaced)."),
        "{plain}"
    );

    // Off a terminal: still short rows, messages below.
    let piped = incident_3_table("table", &[]);
    assert!(!piped.contains('\x1b'));
    let table_rows: Vec<&str> = piped.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(table_rows.len(), 2, "{piped}");
    assert!(table_rows.iter().all(|l| l.len() < 150), "{piped}");

    // -o wide: the message in its own column, fitted to the width.
    let wide = strip_ansi(&incident_3_table(
        "wide",
        &[("COLUMNS", "120"), ("CLICOLOR_FORCE", "1")],
    ));
    assert!(wide.lines().all(|l| l.chars().count() <= 120), "{wide}");
    let header = wide.lines().next().expect("header");
    assert!(header.contains("MESSAGE"), "{wide}");
    assert!(wide.contains("spec.selector is immutable"), "{wide}");
}

/// Every subcommand of the real command line.
fn subcommands() -> Vec<clap::Command> {
    use clap::CommandFactory;
    safety_gate::cli::Cli::command()
        .get_subcommands()
        .cloned()
        .collect()
}

#[test]
fn every_flag_has_help_and_every_help_lists_the_exit_codes() {
    use clap::CommandFactory;
    let mut missing = Vec::new();
    for sub in subcommands() {
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{} --{id}", sub.get_name()));
            }
        }
        let (code, out, _) = run(&[sub.get_name(), "--help"]);
        assert_eq!(code, 0);
        assert!(
            out.contains("Exit codes: 0"),
            "{} --help: {out}",
            sub.get_name()
        );
    }
    assert!(missing.is_empty(), "flags without help text: {missing:?}");
    let top = safety_gate::cli::Cli::command()
        .render_long_help()
        .to_string();
    assert!(
        top.contains("Exit codes") && top.contains("3 review/audit undecided"),
        "{top}"
    );
}

#[test]
fn each_subcommand_offers_only_the_output_formats_it_writes() {
    let policies = fixture("audit/policies");
    let snapshot = fixture("audit/snapshot");
    let mut checked = 0;
    for sub in subcommands() {
        let Some(output) = sub.get_arguments().find(|a| a.get_id() == "format") else {
            continue;
        };
        assert_eq!(output.get_short(), Some('o'), "{} -o", sub.get_name());
        for value in output.get_possible_values() {
            let value = value.get_name();
            let args: Vec<&str> = match sub.get_name() {
                "review" => vec![
                    "review",
                    "-f",
                    &snapshot,
                    "--policies",
                    &policies,
                    "-o",
                    value,
                ],
                "audit" => vec![
                    "audit",
                    "-f",
                    &snapshot,
                    "--policies",
                    &policies,
                    "-o",
                    value,
                ],
                other => panic!("{other} has -o: add it here"),
            };
            let (code, out, err) = run(&args);
            assert_eq!(code, 1, "{args:?} is listed, so it must work: {err}");
            assert!(!out.trim().is_empty(), "{args:?}");
            checked += 1;
        }
        // The old flag name still works.
        let (code, _, err) = run(&[
            sub.get_name(),
            "-f",
            &snapshot,
            "--policies",
            &policies,
            "--format",
            "json",
        ]);
        assert_eq!(code, 1, "{err}");
    }
    assert_eq!(
        checked, 11,
        "review: table wide json yaml sarif junit; audit: table wide json yaml policyreport"
    );
    let (_, review_help, _) = run(&["review", "--help"]);
    assert!(!review_help.contains("policyreport"), "{review_help}");
    let (_, audit_help, _) = run(&["audit", "--help"]);
    assert!(
        !audit_help.contains("sarif") && !audit_help.contains("junit"),
        "{audit_help}"
    );
    // yaml is the json, as YAML.
    let (_, y, _) = run(&[
        "review",
        "-f",
        &snapshot,
        "--policies",
        &policies,
        "-o",
        "yaml",
    ]);
    let y: serde_json::Value = serde_saphyr::from_str(&y).expect("yaml");
    let (_, j, _) = run(&[
        "review",
        "-f",
        &snapshot,
        "--policies",
        &policies,
        "-o",
        "json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&j).expect("json");
    assert_eq!(y, j);
}

/// Runs the binary with `input` on stdin.
fn run_stdin(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = bin()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), input.as_bytes())
        .expect("writes");
    let out = child.wait_with_output().expect("waits");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kubectl_habits_dash_f_and_dash_for_stdin_everywhere() {
    let policies = fixture("audit/policies");
    let workloads =
        std::fs::read_to_string(fixture("audit/snapshot/workloads.yaml")).expect("fixture");
    // review -f FILE (repeatable) and -f -.
    let (code, out, err) = run(&[
        "review",
        "-f",
        &fixture("audit/snapshot/workloads.yaml"),
        "-f",
        &fixture("audit/snapshot/configmap.json"),
        "--policies",
        &policies,
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)
            .expect("json")
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let (code, out, _) = run_stdin(&["review", "-f", "-", "--policies", &policies], &workloads);
    assert_eq!(code, 1);
    assert!(out.contains("-:5"), "stdin is named '-': {out}");
    // audit --snapshot - and audit -f FILE.
    let (code, out, err) = run_stdin(
        &[
            "audit",
            "--snapshot",
            "-",
            "--policies",
            &policies,
            "-o",
            "json",
        ],
        &workloads,
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("json")[0]["file"],
        "-"
    );
    // check FILE and check -.
    let (code, out, _) = run(&["check", &policies]);
    assert_eq!(code, 0);
    assert!(
        out.contains("1 policy loaded from tests/fixtures/audit/policies"),
        "{out}"
    );
    let policy =
        std::fs::read_to_string(fixture("audit/policies/no-latest-tag.yaml")).expect("fixture");
    let (code, out, err) = run_stdin(&["check", "-"], &policy);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 policy loaded from -"), "{out}");
    let (code, _, err) = run_stdin(
        &["check", "-"],
        "apiVersion: safety-gate.dev/v1alpha1\nkind: GatePolicy\nmetadata: {name: x}\nspec:\n  bogus: 1\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("-:5"), "{err}");
    // review --live - : the live objects on stdin make the Deployment an UPDATE.
    let live =
        std::fs::read_to_string(fixture("incident-3/live/deployments.json")).expect("fixture");
    let (code, out, err) = run_stdin(
        &[
            "review",
            "-f",
            &fixture("incident-3/manifests/deployment.json"),
            "--live",
            "-",
            "-o",
            "json",
        ],
        &live,
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("json")[0]["operation"],
        "UPDATE"
    );
    // test - : a suite on stdin; its paths are relative to the working directory.
    let suite = format!(
        "apiVersion: safety-gate.dev/v1alpha1\nkind: PolicyTest\nmetadata: {{name: stdin-suite}}\nspec:\n  policies: [{policies}]\n  cases:\n  - name: a pinned image is allowed\n    operation: CREATE\n    object: {{file: tests/fixtures/incident-3/manifests/deployment.json}}\n    expect: {{allowed: true}}\n"
    );
    let (code, out, err) = run_stdin(&["test", "-"], &suite);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("stdin-suite (-)") && out.contains("1 passed, 0 failed"),
        "{out}"
    );
}

/// `kubectl safety-gate …`: kubectl runs `kubectl-safety_gate` from PATH
/// (dashes in the command become underscores in the file name).
#[test]
fn runs_as_a_kubectl_plugin() {
    let kubectl = Path::new("/usr/bin/kubectl");
    assert!(
        kubectl.exists(),
        "kubectl is needed: apt-get install -y kubectl"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_safety-gate"),
        dir.path().join("kubectl-safety_gate"),
    )
    .expect("symlink");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(kubectl)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", &path)
        .env("NO_COLOR", "1")
        .args([
            "safety-gate",
            "review",
            "-f",
            &fixture("audit/snapshot/workloads.yaml"),
            "--policies",
            &fixture("audit/policies"),
        ])
        .output()
        .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the plugin's exit code: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("no-latest-tag") && stdout.contains("1 would be denied"),
        "{stdout}"
    );
    let listed = Command::new(kubectl)
        .env("PATH", &path)
        .args(["plugin", "list"])
        .output()
        .expect("kubectl plugin list");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("kubectl-safety_gate"),
        "{listed:?}"
    );
}

#[test]
fn policytest_params_files_feed_param_references() {
    let (code, out, err) = run(&["test", &fixture("params")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");
    // A params glob that matches nothing is a mistake in the suite, named.
    let dir = tempfile::tempdir().expect("tempdir");
    let suite = dir.path().join("s.test.yaml");
    std::fs::write(
        &suite,
        format!(
            "apiVersion: safety-gate.dev/v1alpha1\nkind: PolicyTest\nmetadata: {{name: s}}\nspec:\n  policies: [{}]\n  params: [nothing-here/*.yaml]\n  cases: []\n",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(fixture("params/policies/replica-limit.yaml"))
                .display()
        ),
    )
    .expect("write");
    let (code, out, err) = run(&["test", &suite.display().to_string()]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("params 'nothing-here/*.yaml' matches no file"),
        "{out}{err}"
    );
}

#[test]
fn print_rbac_grants_param_kinds_and_subjectaccessreviews() {
    let (code, out, err) = run(&[
        "check",
        "--policies",
        &fixture("params/policies"),
        "--print-rbac",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let role: serde_json::Value = serde_saphyr::from_str(&out).expect("yaml");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        ])
    );
}

#[test]
fn review_reads_params_from_the_live_snapshot() {
    let (code, out, err) = run(&[
        "review",
        &fixture("params/manifests"),
        "--live",
        &fixture("params/params"),
        "--policies",
        &fixture("params/policies"),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let results: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(results[0]["deniedBy"], serde_json::json!(["replica-limit"]));
    assert!(out.contains("at most 3 replicas in team-a"), "{out}");
    // Without the snapshot the cluster is empty: no param, and the binding's
    // parameterNotFoundAction (Deny) decides.
    let (code, out, err) = run(&[
        "review",
        &fixture("params/manifests"),
        "--policies",
        &fixture("params/policies"),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("no params found for policy binding"), "{out}");
}

/// The dry-run mode's name is `dry-run`; `audit`, its name before, still
/// selects it (for a release), and `manifests --native` renders the same
/// documents under both: a Deny becomes `[Warn, Audit]`.
#[test]
fn mode_dry_run_and_its_old_name_audit_render_the_same() {
    let render = |mode: &str| {
        let (code, out, err) = run(&[
            "manifests",
            "--native",
            "--policies",
            "policies",
            "--mode",
            mode,
        ]);
        assert_eq!(code, 0, "--mode {mode}: {err}");
        out
    };
    let dry_run = render("dry-run");
    assert!(dry_run.contains("- Warn"), "{dry_run}");
    assert_eq!(render("audit"), dry_run);
    assert_ne!(render("enforce"), dry_run);
    let (code, _, err) = run(&["manifests", "--native", "--mode", "monitor"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("dry-run"), "{err}");
}

/// A suite may carry its policies and cluster state inline (`{name, text}`,
/// what the playground's Save as test writes): they load as files would, a
/// broken one is named with its line in the text, and the suite runs alone.
#[test]
fn test_reads_inline_policies_and_cluster_state_and_names_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let suite = |policy_line: &str| {
        format!(
            r#"apiVersion: safety-gate.dev/v1alpha1
kind: PolicyTest
metadata: {{name: inline}}
spec:
  policies:
    - name: only-labelled.yaml
      text: |
        apiVersion: safety-gate.dev/v1alpha1
        kind: GatePolicy
        metadata:
          name: only-labelled
        spec:
          matchConstraints:
            namespaceSelector: {{matchLabels: {{open: "yes"}}}}
            resourceRules:
            - apiGroups: [""]
              apiVersions: ["v1"]
              operations: ["CREATE"]
              resources: ["configmaps"]
          validations:
          - expression: "{policy_line}"
            message: closed
  clusterState:
    - name: namespaces.yaml
      text: |
        apiVersion: v1
        kind: Namespace
        metadata: {{name: shop, labels: {{open: "yes"}}}}
  cases:
    - name: the namespace's labels come from the inline cluster state
      object: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: c, namespace: shop}}}}
      expect: {{allowed: false, deniedBy: [only-labelled], messageContains: closed}}
"#
        )
    };
    let file = dir.path().join("inline.test.yaml");
    std::fs::write(&file, suite("false")).unwrap();
    let (code, out, err) = run(&["test", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 passed, 0 failed"), "{out}");

    std::fs::write(&file, suite("object.metadata.name ==")).unwrap();
    let (code, out, err) = run(&["test", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    // Line 14 of the policy's text: its validation's expression.
    assert!(err.contains("only-labelled.yaml:14:"), "{err}");
}
