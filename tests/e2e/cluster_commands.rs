//! `safety-gate audit --cluster` and `review --cluster` against the real
//! kube-apiserver, with credentials from `$KUBECONFIG` and from
//! `--kubeconfig`.

use super::gate::gate_binary;
use super::{Env, Scenario};
use std::process::{Command, Output};

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "audit_cluster_finds_an_attached_namespace_while_registrations_conflict",
            audit_cluster,
        ),
        (
            "review_cluster_reads_live_objects_from_kubeconfig_env_and_flag",
            review_cluster,
        ),
    ]
}

enum Credentials {
    Env,
    Flag,
}

fn gate_cmd(env: &Env, creds: &Credentials, args: &[&str]) -> Output {
    let mut cmd = Command::new(gate_binary());
    cmd.args(args)
        .arg("--policies")
        .arg(env.repo.join("policies"))
        .env_remove("KUBECONFIG");
    match creds {
        Credentials::Env => {
            cmd.env("KUBECONFIG", &env.admin_kubeconfig);
        }
        Credentials::Flag => {
            cmd.arg("--kubeconfig").arg(&env.admin_kubeconfig);
        }
    }
    cmd.output().expect("run safety-gate")
}

/// stdout of a command that must exit with `code` (stderr in the failure message).
#[track_caller]
fn expect_exit(out: &Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn audit_cluster(env: &Env) {
    // Incident 4's namespace `orders` is attached (kubefed.io/managed=true);
    // a duplicate registration makes that a finding.
    env.admin
        .run(&["get", "namespace", "orders"])
        .expect_ok("incident 4 left namespace orders");
    let dup = "apiVersion: core.kubefed.io/v1beta1\nkind: KubeFedCluster\nmetadata:\n  name: host-dup\n  namespace: kube-federation-system\nspec:\n  apiEndpoint: https://10.1.2.3:6443\n";
    env.admin
        .apply_stdin(&["apply", "-f", "-"], dup)
        .expect_ok("duplicate registration");
    for creds in [Credentials::Env, Credentials::Flag] {
        let out = gate_cmd(env, &creds, &["audit", "--cluster", "--format", "json"]);
        let stdout = expect_exit(&out, 1);
        let results: serde_json::Value = serde_json::from_str(&stdout).expect("json output");
        let text = results.to_string();
        assert!(
            text.contains("orders") && text.contains("kubefed-host-conflict"),
            "{stdout}"
        );
    }
    env.admin
        .run(&[
            "delete",
            "kubefedcluster",
            "host-dup",
            "-n",
            "kube-federation-system",
        ])
        .expect_ok("remove the duplicate");
    let out = gate_cmd(env, &Credentials::Flag, &["audit", "--cluster"]);
    expect_exit(&out, 0);
}

fn review_cluster(env: &Env) {
    // A bootstrap ClusterRole as a manifest that drops its rules: review
    // reads the live object and reports the weakening before any apply.
    let manifest = env.dir.join("review-clusterrole.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: system:kube-scheduler\n  labels:\n    kubernetes.io/bootstrapping: rbac-defaults\nrules: []\n",
    )
    .expect("write manifest");
    let path = manifest.display().to_string();
    for creds in [Credentials::Env, Credentials::Flag] {
        let out = gate_cmd(env, &creds, &["review", &path, "--cluster"]);
        let stdout = expect_exit(&out, 1);
        assert!(
            stdout.contains("protect-rbac-defaults") && stdout.contains("system:kube-scheduler"),
            "{stdout}"
        );
    }
    // Without cluster access the command says so and exits 2, naming no finding.
    let out = Command::new(gate_binary())
        .args(["review", &path, "--cluster", "--kubeconfig"])
        .arg(env.dir.join("no-such.kubeconfig"))
        .output()
        .expect("run review");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
