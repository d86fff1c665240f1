//! `deploy/` against the real kube-apiserver: every overlay passes a
//! server-side dry run (schemas, defaulting, admission of the manifests
//! themselves, including the gate's own webhooks), and `deploy/base` is
//! applied for real. There is no kubelet or scheduler here, so the gate's
//! Pods are created but stay Pending.

use super::gate::gate_binary;
use super::{Env, Scenario};
use std::path::Path;
use std::time::Duration;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![(
        "deploy_every_overlay_passes_a_server_dry_run_and_base_applies_for_real",
        deploy_overlays,
    )]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn deploy_overlays(env: &Env) {
    let deploy = env.dir.join("deploy");
    let _ = std::fs::remove_dir_all(&deploy);
    copy_dir(&env.repo.join("deploy"), &deploy);
    let out = std::process::Command::new(gate_binary())
        .args(["certs", "--out"])
        .arg(deploy.join("self-signed/tls"))
        .output()
        .expect("safety-gate certs");
    assert!(out.status.success(), "{out:?}");

    // The two cert-manager kinds the cert-manager overlays use, as bare CRDs:
    // enough for kube-apiserver to accept the objects (cert-manager's own
    // schemas are not checked here).
    for (kind, plural) in [("Issuer", "issuers"), ("Certificate", "certificates")] {
        env.admin
            .apply_stdin(
                &["apply", "-f", "-"],
                &super::bare_crd("cert-manager.io", "v1", kind, plural),
            )
            .expect_ok("cert-manager CRDs");
    }
    env.eventually("the CRDs are served", Duration::from_secs(30), || {
        let out = env
            .admin
            .run(&["get", "certificates.cert-manager.io", "-A"]);
        out.result().map(drop)
    });
    // A dry run creates nothing, so the namespaced objects need their
    // namespace to exist; it is created by the manifest itself.
    env.admin
        .run(&[
            "apply",
            "-f",
            &deploy.join("base/namespace.yaml").display().to_string(),
        ])
        .expect_ok("the safety-gate namespace");

    for overlay in [
        "cert-manager-audit",
        "cert-manager",
        "self-signed-audit",
        "self-signed",
        "native",
    ] {
        let dir = deploy.join(overlay).display().to_string();
        let out = env.admin.run(&["apply", "--dry-run=server", "-k", &dir]);
        out.expect_ok(overlay);
        assert!(
            out.stdout.contains("(server dry run)")
                && out.stdout.contains(
                    "validatingwebhookconfiguration.admissionregistration.k8s.io/safety-gate"
                ),
            "{overlay}: {out:#?}"
        );
        assert!(out.warnings().is_empty(), "{overlay}: {out:#?}");
    }

    // deploy/base for real. It replaces the test's own registration of the
    // gate (same configuration names, Service instead of URL): put that
    // back afterwards, pass or fail.
    let restore = Reregister(env);
    let base = deploy.join("base").display().to_string();
    let out = env.admin.run(&["apply", "-k", &base]);
    out.expect_ok("apply deploy/base");
    let dep = env
        .admin
        .get_json(&["deployment", "safety-gate", "-n", "safety-gate"])
        .expect("the gate's Deployment exists");
    assert_eq!(dep["spec"]["replicas"], 3);
    // The real ReplicaSet controller creates the Pods; with no scheduler or
    // kubelet here they stay Pending.
    let pods = env.eventually(
        "the gate's Pods are created",
        Duration::from_secs(60),
        || {
            let pods = env
                .admin
                .get_json(&[
                    "pods",
                    "-n",
                    "safety-gate",
                    "-l",
                    "app.kubernetes.io/name=safety-gate",
                ])
                .ok_or("no pod list")?;
            let n = pods["items"].as_array().map(Vec::len).unwrap_or(0);
            if n == 3 {
                Ok(pods)
            } else {
                Err(format!("{n} pods"))
            }
        },
    );
    for pod in pods["items"].as_array().expect("items") {
        assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
        assert_eq!(
            pod["spec"]["priorityClassName"], "system-cluster-critical",
            "the ResourceQuota admits the priority class outside kube-system"
        );
    }
    drop(restore);
}

/// Removes what `deploy/base` registered and registers the test's gate again.
struct Reregister<'a>(&'a Env);

impl Drop for Reregister<'_> {
    fn drop(&mut self) {
        let env = self.0;
        env.admin.run(&[
            "delete",
            "validatingwebhookconfiguration,mutatingwebhookconfiguration",
            "safety-gate",
            "--ignore-not-found",
        ]);
        env.register_gate();
    }
}
