//! What happens when the gate is down, frozen or restarted, and when
//! kube-apiserver restarts while the gate is down.

use super::{Env, Scenario};
use std::time::{Duration, Instant};

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "gate_stopped_only_the_narrow_fail_closed_rules_deny",
            gate_stopped,
        ),
        (
            "gate_stopped_kube_apiserver_restart_completes",
            apiserver_restart_with_gate_down,
        ),
        (
            "gate_restarted_recovers_without_intervention",
            gate_restarted,
        ),
        (
            "gate_frozen_each_webhook_is_decided_by_its_failure_policy_within_timeout_seconds",
            gate_frozen,
        ),
        (
            "gate_slow_policy_is_answered_by_its_failure_policy_before_timeout_seconds",
            gate_slow_policy,
        ),
        (
            "native_policies_protect_while_the_gate_is_down",
            native_policies,
        ),
    ]
}

const LEASE: &str = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: e2e-lease\n  namespace: NS\nspec:\n  holderIdentity: e2e\n  leaseDurationSeconds: 15\n";

fn gate_stopped(env: &Env) {
    for ns in ["outage", "safety-gate"] {
        env.admin.run(&["create", "namespace", ns]);
    }
    env.admin
        .run(&[
            "create",
            "deployment",
            "app",
            "--image=nginx",
            "-n",
            "outage",
        ])
        .expect_ok("a workload before the outage");
    env.eventually(
        "the default ServiceAccount exists",
        Duration::from_secs(30),
        || {
            let out = env.admin.run(&["get", "sa", "default", "-n", "outage"]);
            out.result().map(drop)
        },
    );
    env.gate().stop();

    // The fail-closed rules deny: namespaces, RBAC, ServiceAccounts.
    let out = env.admin.run(&["create", "namespace", "during-outage"]);
    out.expect_fail("namespace create with the gate down");
    assert!(
        out.stderr
            .contains("failed calling webhook \"validate.safety-gate.dev\""),
        "{out:#?}"
    );
    env.admin
        .run(&["create", "serviceaccount", "robot", "-n", "outage"])
        .expect_fail("ServiceAccount create with the gate down");
    apiserver_counts_what_the_fail_closed_alert_reads(env);

    // Everything else keeps working.
    for (what, ns) in [
        ("outage", "outage"),
        ("kube-system", "kube-system"),
        ("the gate's namespace", "safety-gate"),
    ] {
        let started = Instant::now();
        env.admin
            .run(&["create", "configmap", "during-outage", "-n", ns])
            .expect_ok(&format!("ConfigMap in {what}"));
        env.admin
            .apply_stdin(&["apply", "-f", "-"], &LEASE.replace("NS", ns))
            .expect_ok(&format!("Lease in {what}"));
        env.admin
            .run(&[
                "run",
                "during-outage",
                "--image=nginx",
                "--restart=Never",
                "-n",
                ns,
            ])
            .expect_ok(&format!("Pod in {what}"));
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}: {:?}",
            started.elapsed()
        );
    }
    let out = env
        .admin
        .run(&["scale", "deployment", "app", "--replicas=2", "-n", "outage"]);
    out.expect_ok("workload update with the gate down (fail-open)");
    let out = env.admin.run(&[
        "set",
        "image",
        "deployment/app",
        "nginx=nginx:1.27",
        "-n",
        "outage",
    ]);
    out.expect_ok("workload update with the gate down (fail-open)");
}

fn apiserver_restart_with_gate_down(env: &Env) {
    assert!(
        !env.gate().running(),
        "the previous scenario stopped the gate"
    );
    let (stopped, ready) = {
        let mut cp = env.control_plane();
        let started = Instant::now();
        cp.stop_apiserver();
        let stopped = started.elapsed();
        let started = Instant::now();
        // Panics with kube-apiserver's log if /readyz is not ok within 60 s:
        // its post-start hooks (bootstrap RBAC, system namespaces, priority
        // classes) must not depend on the gate.
        cp.start_apiserver();
        (stopped, started.elapsed())
    };
    eprintln!(
        "kube-apiserver with the gate down: stopped in {:.1} s, ready again in {:.1} s",
        stopped.as_secs_f64(),
        ready.as_secs_f64()
    );
    let out = env.admin.run(&["get", "--raw", "/readyz?verbose"]);
    out.expect_ok("readyz");
    assert!(
        out.stdout
            .contains("[+]poststarthook/rbac/bootstrap-roles ok"),
        "{}",
        out.stdout
    );
}

fn gate_restarted(env: &Env) {
    env.gate().start_again();
    let out = env.eventually(
        "namespaces can be created again",
        Duration::from_secs(20),
        || {
            let out = env.admin.run(&["create", "namespace", "after-outage"]);
            out.result()
        },
    );
    assert!(out.warnings().is_empty(), "{out:#?}");
    // And it enforces again.
    let out = env
        .admin
        .run(&["delete", "clusterrole", "system:kube-controller-manager"]);
    out.expect_fail("enforcing again");
    assert!(out.stderr.contains("validate.safety-gate.dev"), "{out:#?}");
}

fn gate_frozen(env: &Env) {
    env.gate().signal("STOP");
    let resume = Resume(env);

    // Fail-closed: denied when kube-apiserver's timeoutSeconds (5 s) ends.
    let started = Instant::now();
    let out = env.admin.run(&["create", "namespace", "while-frozen"]);
    let closed = started.elapsed();
    out.expect_fail("fail-closed while frozen");
    assert!(
        out.stderr
            .contains("failed calling webhook \"validate.safety-gate.dev\""),
        "{out:#?}"
    );
    assert!(
        closed >= Duration::from_secs(4) && closed < Duration::from_secs(9),
        "fail-closed decided after {closed:?}"
    );

    // Fail-open: the workload update goes through after the fail-open
    // validating (3 s) and mutating (2 s, maybe twice) timeouts at most.
    let started = Instant::now();
    env.admin
        .run(&["label", "deployment", "app", "frozen=yes", "-n", "outage"])
        .expect_ok("fail-open while frozen");
    let open = started.elapsed();
    assert!(open < Duration::from_secs(10), "fail-open took {open:?}");
    eprintln!("frozen gate: fail-closed denied after {closed:?}, fail-open allowed after {open:?}");
    drop(resume);
    env.eventually("the gate answers again", Duration::from_secs(20), || {
        let out = env.admin.run(&["create", "namespace", "after-freeze"]);
        out.result().map(drop)
    });
}

/// Lets a frozen gate run again when the scenario ends, pass or fail.
struct Resume<'a>(&'a Env);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.gate().signal("CONT");
    }
}

/// A policy slower than the webhook's timeout: four validations, each
/// splitting the 20 KB value 200 times, at a runtime cost of about 802,000
/// each (3.2 million in all), under Kubernetes' limits (1,000,000 an
/// expression, 10,000,000 a policy), so kube-apiserver would run it to its end;
/// in the gate's debug build each takes about 2 s, and every step of the loop
/// is a cancellation check point. failurePolicy Fail on the policy, Ignore on
/// the webhook: if kube-apiserver's timeout decided, the ConfigMap would be
/// created; the gate's own deadline denies it first.
const SLOW_POLICY: &str = r#"apiVersion: safety-gate.dev/v1alpha1
kind: GatePolicy
metadata:
  name: slow-check
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  variables:
  - name: big
    expression: "has(object.data) && 'big' in object.data"
  validations:
  - expression: "!variables.big || lists.range(200).all(i, object.data.big.split('').size() >= -0)"
  - expression: "!variables.big || lists.range(200).all(i, object.data.big.split('').size() >= -1)"
  - expression: "!variables.big || lists.range(200).all(i, object.data.big.split('').size() >= -2)"
  - expression: "!variables.big || lists.range(200).all(i, object.data.big.split('').size() >= -3)"
"#;

fn slow_webhook(url: &str, ca_bundle: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: e2e-slow-gate\nwebhooks:\n- name: slow.safety-gate.dev\n  failurePolicy: Ignore\n  timeoutSeconds: 3\n  sideEffects: None\n  admissionReviewVersions: [v1]\n  namespaceSelector:\n    matchLabels: {{kubernetes.io/metadata.name: slow}}\n  rules:\n  - {{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}\n  clientConfig:\n    url: {url}/validate\n    caBundle: {ca_bundle}\n"
    )
}

fn gate_slow_policy(env: &Env) {
    let dir = env.dir.join("slow-gate");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(policies.join("slow.yaml"), SLOW_POLICY).expect("write policy");
    let slow = super::gate::Gate::start(&dir, &policies, &env.admin_kubeconfig, &env.pidfile);
    use base64::Engine as _;
    let ca = std::fs::read(slow.certs.join("ca.crt")).expect("ca");
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    env.admin
        .run(&["create", "namespace", "slow"])
        .expect_ok("create slow");
    env.admin
        .apply_stdin(&["apply", "-f", "-"], &slow_webhook(&slow.url(), &ca))
        .expect_ok("register the slow gate");
    let cleanup = Unregister(env);

    let big = format!("--from-literal=big={}", "a".repeat(20_000));
    let started = Instant::now();
    let out = env
        .admin
        .run(&["create", "configmap", "big", "-n", "slow", &big]);
    let took = started.elapsed();
    out.expect_fail("the slow policy's failurePolicy Fail");
    assert!(
        out.stderr
            .contains("admission webhook \"slow.safety-gate.dev\" denied the request: slow-check")
            && out.stderr.contains("deadline"),
        "the gate answered, not kube-apiserver's timeout: {out:#?}"
    );
    // The denial itself proves the gate answered: at kube-apiserver's timeout
    // the webhook's Ignore would have let the ConfigMap through. The time,
    // which includes kubectl's own start, only has to be near the 3 s.
    assert!(
        took < Duration::from_secs(5),
        "answered after {took:?}, long past timeoutSeconds 3"
    );
    let (_, metrics) = super::gate::http_get(slow.admin_port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("safety_gate_admission_deadline_exceeded_total{endpoint=\"validate\"} 1"),
        "{metrics}"
    );
    // The answer is sent and the abandoned evaluation stops at its next check
    // point: counted, and the process burns no CPU for it afterwards.
    env.eventually("the slow evaluation is cancelled", Duration::from_secs(10), || {
        let (_, metrics) = super::gate::http_get(slow.admin_port, "/metrics")?;
        if metrics.contains(
            "safety_gate_admission_evaluations_cancelled_total{endpoint=\"validate\",reason=\"deadline\"} 1",
        ) {
            Ok(())
        } else {
            Err(metrics)
        }
    });
    let before = slow.cpu_seconds().expect("cpu");
    std::thread::sleep(Duration::from_secs(2));
    let burnt = slow.cpu_seconds().expect("cpu") - before;
    assert!(
        burnt < 0.5,
        "the cancelled evaluation still used {burnt:.2} s of CPU in 2 s"
    );
    drop(cleanup);
    slow.signal("KILL");
    drop(slow);
}

/// Removes the slow gate's webhook configuration, pass or fail.
struct Unregister<'a>(&'a Env);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.admin.run(&[
            "delete",
            "validatingwebhookconfiguration",
            "e2e-slow-gate",
            "--ignore-not-found",
        ]);
    }
}

/// `safety-gate manifests --native --out DIR` of the shipped policies, with
/// `--static DIR` for the manifest-based form.
fn render_native(env: &Env, dir: &std::path::Path, static_form: bool) {
    let mut cmd = std::process::Command::new(super::gate::gate_binary());
    cmd.args(["manifests", "--native", "--out"]).arg(dir);
    if static_form {
        cmd.arg("--static").arg(dir);
    }
    let out = cmd
        .arg("--policies")
        .arg(env.repo.join("policies"))
        .output()
        .expect("run manifests --native");
    assert!(out.status.success(), "{out:?}");
}

/// Issue 14: the policies `safety-gate manifests --native` renders, applied to
/// kube-apiserver, keep protecting while the gate is down.
pub fn native_policies(env: &Env) {
    let dir = env.dir.join("native");
    render_native(env, &dir, false);
    let dir_arg = dir.display().to_string();
    env.admin
        .run(&["apply", "-f", &dir_arg])
        .expect_ok("apply the native policies");
    let cleanup = RemoveNative(env, dir_arg.clone());
    env.admin
        .run(&["create", "namespace", "native-protected"])
        .expect_ok("create");
    env.admin
        .run(&[
            "label",
            "namespace",
            "native-protected",
            "safety-gate.dev/protected=true",
        ])
        .expect_ok("protect");
    // The oldest bypass: the gate is down and its webhook configurations are
    // deleted (webhooks are never called for them).
    env.gate().stop();
    let restart = StartAgain(env);
    env.admin
        .run(&[
            "delete",
            "validatingwebhookconfiguration,mutatingwebhookconfiguration",
            "safety-gate",
        ])
        .expect_ok("delete the gate's webhook configurations");

    // kube-apiserver loads policies asynchronously: wait until it enforces.
    let out = env.eventually(
        "the native policy denies without the webhook",
        Duration::from_secs(30),
        || {
            let out = env.admin.run(&[
                "delete",
                "clusterrole",
                "system:kube-controller-manager",
                "--dry-run=server",
            ]);
            if out.stderr.contains("ValidatingAdmissionPolicy") {
                Ok(out)
            } else {
                Err(format!("{out:?}"))
            }
        },
    );
    assert!(
        out.stderr.contains(
            "ValidatingAdmissionPolicy 'protect-rbac-defaults.safety-gate.dev' with binding 'protect-rbac-defaults.safety-gate.dev' denied request: ClusterRole system:kube-controller-manager is a bootstrap RBAC object"
        ),
        "{out:#?}"
    );
    let out = env
        .admin
        .run(&["delete", "namespace", "native-protected", "--wait=false"]);
    out.expect_fail("protected namespace with the gate down");
    assert!(
        out.stderr.contains(
            "Namespace native-protected is protected (label safety-gate.dev/protected=true)"
        ),
        "{out:#?}"
    );
    // Break-glass passes natively too, with the gate's warning (the group's
    // RBAC binding, e2e-break-glass, is made here if incident 1 did not run).
    env.admin.run(&[
        "create",
        "clusterrolebinding",
        "e2e-break-glass",
        "--clusterrole=cluster-admin",
        "--group=safety-gate:break-glass",
    ]);
    let out = env.admin.run(&[
        "--as=oncall-bob",
        "--as-group=safety-gate:break-glass",
        "delete",
        "namespace",
        "native-protected",
        "--dry-run=server",
    ]);
    out.expect_ok("break-glass deletes the protected namespace");
    assert!(
        out.warnings().iter().any(|w| w.contains(
            "ValidatingAdmissionPolicy 'protect-namespaces.break-glass.safety-gate.dev'"
        )),
        "the native break-glass warning: {out:#?}"
    );
    drop(restart);
    drop(cleanup);
}

/// Starts the gate again and registers it when the scenario ends, pass or fail.
struct StartAgain<'a>(&'a Env);

impl Drop for StartAgain<'_> {
    fn drop(&mut self) {
        self.0.gate().start_again();
        self.0.register_gate();
    }
}

/// Deletes the native policies when the scenario ends, pass or fail.
struct RemoveNative<'a>(&'a Env, String);

impl Drop for RemoveNative<'_> {
    fn drop(&mut self) {
        self.0
            .admin
            .run(&["delete", "-f", &self.1, "--ignore-not-found"]);
    }
}

/// Issue 14: the manifest-based form (`manifests --native --static`), loaded
/// by kube-apiserver from files, protects the gate's own webhook
/// configurations, which no webhook and no API-created policy can. Must stay
/// the last scenario: kube-apiserver keeps the static policies afterwards.
pub fn static_policies(env: &Env) {
    let dir = env.dir.join("static");
    render_native(env, &dir, true);
    let started = Instant::now();
    env.control_plane().restart_apiserver_with(&[format!(
        "--admission-control-config-file={}",
        dir.join("admission-configuration.yaml").display()
    )]);
    eprintln!(
        "kube-apiserver restarted with the static policies in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The classic bypass is refused: the webhook configuration cannot be
    // deleted or weakened; a new caBundle is still accepted.
    let out = env
        .admin
        .run(&["delete", "validatingwebhookconfiguration", "safety-gate"]);
    out.expect_fail("delete the gate's webhook configuration");
    assert!(
        out.stderr.contains(
            "ValidatingAdmissionPolicy 'protect-safety-gate-admission.safety-gate.static.k8s.io'"
        ) && out.stderr.contains("safety-gate:break-glass"),
        "{out:#?}"
    );
    let out = env.admin.run(&[
        "patch",
        "validatingwebhookconfiguration",
        "safety-gate",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]"#,
    ]);
    out.expect_fail("weaken the fail-closed webhook");
    // Redirecting it to a server that allows everything is as much a bypass.
    let out = env.admin.run(&[
        "patch",
        "validatingwebhookconfiguration",
        "safety-gate",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/webhooks/0/clientConfig/url","value":"https://127.0.0.1:1/allow-everything"}]"#,
    ]);
    out.expect_fail("redirect the fail-closed webhook");
    // The static policies are not API objects: nothing to list or delete.
    let listed = env
        .admin
        .run(&["get", "validatingadmissionpolicies", "-o", "name"]);
    assert!(!listed.stdout.contains("static.k8s.io"), "{listed:#?}");

    // The break-glass group's RBAC (made by incident 1 in a full run; with
    // the gate up, since it is a fail-closed ClusterRoleBinding create).
    env.admin.run(&[
        "create",
        "clusterrolebinding",
        "e2e-break-glass",
        "--clusterrole=cluster-admin",
        "--group=safety-gate:break-glass",
    ]);
    // With the gate down, the static form of the shipped policies denies.
    env.gate().stop();
    let restart = StartAgain(env);
    let out = env.admin.run(&[
        "delete",
        "clusterrole",
        "system:kube-controller-manager",
        "--dry-run=server",
    ]);
    out.expect_fail("bootstrap role with the gate down");
    assert!(
        out.stderr.contains(
            "ValidatingAdmissionPolicy 'protect-rbac-defaults.safety-gate.static.k8s.io'"
        ),
        "{out:#?}"
    );

    // Break-glass may, and the audit log says who.
    let out = env.admin.run(&[
        "--as=oncall-bob",
        "--as-group=safety-gate:break-glass",
        "delete",
        "validatingwebhookconfiguration",
        "safety-gate",
        "--dry-run=server",
    ]);
    out.expect_ok("break-glass");
    let events = super::kubectl::audit_events(&env.audit_log);
    let recorded = events.iter().any(|e| {
        e["impersonatedUser"]["username"] == "oncall-bob"
            && e["annotations"]
                ["protect-safety-gate-admission.safety-gate.static.k8s.io/break-glass"]
                .as_str()
                .is_some_and(|v| v.contains("oncall-bob"))
    });
    assert!(recorded, "no break-glass audit annotation");
    drop(restart);
}

/// deploy/monitoring's `SafetyGateDownWhileFailClosed` reads kube-apiserver's
/// webhook rejection counter: with the gate stopped, the real kube-apiserver
/// must have a sample with the metric name and label values the alert selects.
fn apiserver_counts_what_the_fail_closed_alert_reads(env: &Env) {
    let rule = std::fs::read_to_string(env.repo.join("deploy/monitoring/prometheusrule.yaml"))
        .expect("deploy/monitoring/prometheusrule.yaml");
    let expr = rule
        .lines()
        .skip_while(|l| !l.contains("alert: SafetyGateDownWhileFailClosed"))
        .find_map(|l| l.trim().strip_prefix("expr: "))
        .expect("the alert's expr")
        .to_string();
    let selector =
        regex::Regex::new(r#"(apiserver_[a-z_]+)\{[^}]*error_type="([a-z_]+)""#).expect("regex");
    let found = selector
        .captures(&expr)
        .expect("a kube-apiserver metric with error_type");
    let (metric, error_type) = (found[1].to_string(), found[2].to_string());
    let metrics = env.admin.run(&["get", "--raw", "/metrics"]);
    metrics.expect_ok("kube-apiserver /metrics");
    let sample = metrics.stdout.lines().find(|l| {
        l.starts_with(&format!("{metric}{{"))
            && l.contains("name=\"validate.safety-gate.dev\"")
            && l.contains(&format!("error_type=\"{error_type}\""))
    });
    assert!(
        sample.is_some(),
        "no {metric}{{name=validate.safety-gate.dev,error_type={error_type}}} in kube-apiserver's /metrics: {}",
        metrics
            .stdout
            .lines()
            .filter(|l| l.contains("webhook_rejection"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
