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
    assert!(out.contains("2 object(s): 1 would be denied"), "{out}");
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
        result["locations"][0]["physicalLocation"]["region"]["startLine"],
        1
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
    assert!(out.contains("0 evaluated by a policy"), "{out}");
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
