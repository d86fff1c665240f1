//! The end-to-end tier: a real kube-apiserver, etcd and
//! kube-controller-manager built from Go modules at the pinned release
//! (`e2e/build.sh`), the real kubectl, and `safety-gate serve` registered as
//! kube-apiserver sees it. Every scenario asserts what a user sees (kubectl's
//! exit code, stdout and stderr) and what kube-apiserver's audit log records.
//!
//! `cargo test --test e2e` runs this tier alone. One control plane serves
//! all scenarios, which run one at a time in the order listed (some stop
//! and restart the gate or kube-apiserver). Without Go or a successful build
//! the scenarios are reported as ignored, with the reason; under `CI=true`
//! they fail instead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod cel_environment;
mod cluster_commands;
mod control_plane;
mod deploy_overlays;
mod failure_modes;
mod gate;
mod incidents;
mod kubectl;
mod mtls;
mod mutating_policies;
mod params_authz;
mod procs;

use control_plane::ControlPlane;
use gate::Gate;
use kubectl::Kubectl;
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Everything the scenarios share.
pub struct Env {
    pub repo: PathBuf,
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub admin: Kubectl,
    pub alice: Kubectl,
    pub audit_log: PathBuf,
    pub admin_kubeconfig: PathBuf,
    /// Where every process this run starts is recorded (see `procs::reap_stale`).
    pub pidfile: PathBuf,
    cp: Mutex<ControlPlane>,
    gate: Mutex<Gate>,
}

impl Env {
    pub fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn control_plane(&self) -> MutexGuard<'_, ControlPlane> {
        self.cp.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the webhook configurations the gate renders for itself.
    pub fn register_gate(&self) {
        let text = self.gate().render_webhooks();
        self.admin
            .apply_stdin(&["apply", "-f", "-"], &text)
            .expect_ok("register the gate's webhook configurations");
    }

    /// Retries `f` until it returns `Ok` or `timeout` passes (the webhook
    /// configuration and watch caches take effect asynchronously).
    pub fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Result<T, String>,
    ) -> T {
        let until = Instant::now() + timeout;
        loop {
            match f() {
                Ok(v) => return v,
                Err(e) if Instant::now() >= until => {
                    panic!("{what}: not true within {timeout:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

type Scenario = fn(&Env);

/// A CustomResourceDefinition that serves `kind` (namespaced, any fields):
/// enough for kube-apiserver to store objects of a kind whose controller and
/// schema are not part of these tests (KubeFed, cert-manager).
pub fn bare_crd(group: &str, version: &str, kind: &str, plural: &str) -> String {
    let singular = kind.to_lowercase();
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {singular}}}\n  versions:\n  - name: {version}\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
    )
}

fn scenarios() -> Vec<(&'static str, Scenario)> {
    let mut all = Vec::new();
    all.extend(incidents::scenarios());
    all.extend(params_authz::scenarios());
    all.extend(cluster_commands::scenarios());
    all.extend(cel_environment::scenarios());
    all.extend(mutating_policies::scenarios());
    all.extend(failure_modes::scenarios());
    // Late: applying deploy/base replaces the gate's registration for a while.
    all.extend(deploy_overlays::scenarios());
    // Restarts kube-apiserver with an AdmissionConfiguration of its own (the
    // static-policy scenario's replaces it afterwards).
    all.push((
        "mtls_only_kube_apiserver_client_certificate_is_answered",
        mtls::mtls,
    ));
    // Last: kube-apiserver keeps its static policies from here on.
    all.push((
        "static_policies_protect_the_gates_own_webhook_configuration",
        failure_modes::static_policies,
    ));
    all
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `e2e/build.sh`; `Ok(folder of the binaries)`.
fn build(repo: &Path) -> Result<PathBuf, String> {
    let started = Instant::now();
    let out = std::process::Command::new("bash")
        .arg(repo.join("e2e/build.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run e2e/build.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("e2e/build.sh failed ({})", out.status));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    eprintln!(
        "e2e: binaries in {} ({:.1} s to build or reuse)",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

fn main() {
    let mut args = Arguments::from_args();
    // One control plane, shared: scenarios run in order, one at a time.
    args.test_threads = Some(1);
    let repo = repo();
    let list = scenarios();

    if args.list {
        let trials = list
            .iter()
            .map(|(name, _)| Trial::test(*name, || Ok(())))
            .collect();
        libtest_mimic::run(&args, trials).exit();
    }

    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let bin = match build(&repo) {
        Ok(bin) => bin,
        Err(why) => {
            let why = format!(
                "{why}: the end-to-end tier needs Go 1.26 and the Go module proxy (see e2e/build.sh)"
            );
            eprintln!("e2e: {why}");
            let trials = list
                .iter()
                .map(|(name, _)| {
                    let why = why.clone();
                    if ci {
                        Trial::test(*name, move || Err(Failed::from(why)))
                    } else {
                        Trial::test(*name, || Ok(())).with_ignored_flag(true)
                    }
                })
                .collect();
            libtest_mimic::run(&args, trials).exit();
        }
    };

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    let pidfile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e.pids");
    procs::reap_stale(&pidfile, &["/e2e/.bin/", "safety-gate serve"]);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the e2e folder");

    let cp = ControlPlane::start(&bin, &dir, &pidfile);
    eprintln!(
        "e2e: control plane ready in {:.1} s at {} (logs and audit log in {})",
        cp.start_seconds,
        cp.url,
        dir.display()
    );
    let admin = Kubectl::new(&bin, &cp.admin.kubeconfig);
    let alice = Kubectl::new(&bin, &cp.alice.kubeconfig);
    let gate = Gate::start(&dir, &repo.join("policies"), &cp.admin.kubeconfig, &pidfile);
    let env = Arc::new(Env {
        repo: repo.clone(),
        dir: dir.clone(),
        bin: bin.clone(),
        audit_log: cp.audit_log.clone(),
        admin_kubeconfig: cp.admin.kubeconfig.clone(),
        pidfile: pidfile.clone(),
        admin,
        alice,
        cp: Mutex::new(cp),
        gate: Mutex::new(gate),
    });
    env.register_gate();

    let trials =
        list.into_iter()
            .map(|(name, scenario)| {
                let env = Arc::clone(&env);
                Trial::test(name, move || {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&env)))
                        .map_err(|panic| {
                            let text = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "panicked".to_string());
                            Failed::from(text)
                        })
                })
            })
            .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Tear down by PID before exiting, pass or fail.
    if let Ok(env) = Arc::try_unwrap(env) {
        drop(env);
    } else {
        eprintln!("e2e: a scenario still holds the environment; stopping by PID file");
    }
    procs::reap_stale(&pidfile, &["/e2e/.bin/", "safety-gate serve"]);
    conclusion.exit();
}
