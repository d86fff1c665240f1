//! `--kubernetes-version`: the real binary refuses what kube-apiserver of the
//! chosen release refuses in a new policy, and says from which release it works.
//! (Which release declares what is proven against Kubernetes' own code in
//! `differential_environment.rs`; this is what a user sees.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use std::process::Command;

const SEMVER_POLICY: &str = "\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: minimum-version
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  validations:
  - expression: \"!has(object.data) || !('version' in object.data) || semver(object.data.version).isGreaterThan(semver('1.0.0'))\"
";

fn check(dir: &std::path::Path, args: &[&str], env: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_safety-gate"));
    c.env("NO_COLOR", "1")
        .env_remove("SAFETY_GATE_KUBERNETES_VERSION")
        .arg("check")
        .arg("--policies")
        .arg(dir)
        .args(args);
    if let Some(v) = env {
        c.env("SAFETY_GATE_KUBERNETES_VERSION", v);
    }
    let out = c.output().expect("runs");
    // Problems go to stderr; the test reads both streams as a user's terminal shows them.
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code().unwrap_or(-1),
        format!("{stdout}{stderr}"),
        stderr,
    )
}

fn policy_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("policy.yaml"), text).expect("write");
    dir
}

#[test]
fn a_library_newer_than_the_chosen_release_is_refused_with_the_release_that_has_it() {
    let dir = policy_dir(SEMVER_POLICY);
    // The pinned release (the default) has semver.
    let (code, out, err) = check(dir.path(), &[], None);
    assert_eq!(code, 0, "{out}{err}");
    // Kubernetes introduced semver in 1.33; kube-apiserver 1.33 checks new policies at
    // compatibility version 1.32, so it refuses it, and 1.34 accepts it.
    let (code, out, _) = check(dir.path(), &["--kubernetes-version", "1.33"], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("policy.yaml:10: policy minimum-version: spec.validations[0].expression: function 'semver' is not available in Kubernetes 1.33")
            && out.contains("from Kubernetes 1.34"),
        "{out}"
    );
    let (code, out, err) = check(dir.path(), &["--kubernetes-version", "v1.34.2"], None);
    assert_eq!(code, 0, "{out}{err}");
    // The environment variable sets it too, for serve in a Deployment.
    let (code, out, _) = check(dir.path(), &[], Some("1.32"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not available in Kubernetes 1.32"), "{out}");
}

#[test]
fn a_method_call_of_a_function_kubernetes_declares_as_global_is_refused() {
    // Kubernetes' docs write `quantity.sign()`, but kube-apiserver declares only
    // sign(quantity) and refuses the method form ("found no matching overload").
    let dir = policy_dir(&SEMVER_POLICY.replace(
        "semver(object.data.version).isGreaterThan(semver('1.0.0'))",
        "quantity(object.data.version).sign() == 1",
    ));
    let (code, out, _) = check(dir.path(), &[], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Kubernetes declares 'sign' only as a function: write sign(x)"),
        "{out}"
    );
}

#[test]
fn an_unknown_or_unsupported_release_is_a_usage_error() {
    let dir = policy_dir(SEMVER_POLICY);
    for (value, says) in [
        ("1.29", "ValidatingAdmissionPolicy is GA from 1.30"),
        ("1.38", "knows releases up to 1.37"),
        ("latest", "write it as 1.MINOR"),
    ] {
        let (code, _, err) = check(dir.path(), &["--kubernetes-version", value], None);
        assert_eq!(code, 2, "{value}: {err}");
        assert!(err.contains(says), "{value}: {err}");
    }
}

#[test]
fn the_shipped_library_needs_the_lists_extension_of_kubernetes_1_35() {
    // The shipped policies sort lists for stable messages (`sort()`, new policies
    // from 1.35): they load for 1.35 and later and say why not for 1.34.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let (code, out, err) = check(&shipped, &["--kubernetes-version", "1.35"], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = check(&shipped, &["--kubernetes-version", "1.34"], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("function 'sort' is not available in Kubernetes 1.34"),
        "{out}"
    );
}
