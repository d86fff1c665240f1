//! The shipped policy library passes its PolicyTest suites through the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use std::process::Command;

#[test]
fn shipped_policy_suites_pass() {
    let out = Command::new(env!("CARGO_BIN_EXE_safety-gate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .args(["test", "tests/policies"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let closing = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed"))
        .expect("closing line");
    let (passed, failed) = closing.split_once(" passed, ").expect("N passed, M failed");
    assert_eq!(failed, "0 failed");
    let passed: usize = passed.trim().parse().expect("a count");
    // Every suite and case counts: a suite that silently stopped loading would lower this.
    assert!(passed >= 542, "only {passed} cases ran");
}

#[test]
fn a_failing_case_shows_expected_and_actual_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies/protect-rbac-defaults.yaml");
    let suite = format!(
        "apiVersion: safety-gate.dev/v1alpha1\nkind: PolicyTest\nmetadata: {{name: wrong-expectation}}\nspec:\n  policies: [{}]\n  cases:\n  - name: a user ClusterRole deletion expected (wrongly) to be denied\n    operation: DELETE\n    oldObject: {{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, metadata: {{name: team-reader}}, rules: []}}\n    expect: {{allowed: false}}\n",
        policies.display()
    );
    std::fs::write(dir.path().join("suite.yaml"), suite).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_safety-gate"))
        .env("NO_COLOR", "1")
        .arg("test")
        .arg(dir.path())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL") && stdout.contains("expected allowed=false, got allowed=true"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("0 passed, 1 failed"),
        "{stdout}"
    );
}
