//! The incidents of `../shared/docs/incidents.md`, replayed with the real
//! kubectl against the real kube-apiserver with the gate registered.

use super::kubectl::{audit_events, audit_find};
use super::{Env, Scenario};
use serde_json::Value;
use std::time::Duration;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "incident1_delete_of_a_bootstrap_clusterrole_is_denied_with_the_gates_message",
            incident1_delete_denied,
        ),
        (
            "incident1_delete_by_label_selector_and_deletecollection_remove_none",
            incident1_delete_by_selector,
        ),
        (
            "incident1_label_strip_rules_removed_autoupdate_false_and_apply_are_denied",
            incident1_bypasses,
        ),
        (
            "incident1_break_glass_passes_with_a_warning_and_an_audit_annotation",
            incident1_break_glass,
        ),
        (
            "incident2_protected_namespaces_are_not_deleted",
            incident2_protected_namespaces,
        ),
        (
            "incident2_an_ordinary_namespace_is_emptied_by_the_namespace_controller_untouched_by_the_gate",
            incident2_ordinary_namespace,
        ),
        (
            "incident3_immutable_selector_change_what_kubectl_apply_shows",
            incident3_apply,
        ),
        (
            "incident4_kubefed_conflict_denies_attaching_until_the_stale_registration_is_gone",
            incident4_kubefed,
        ),
        (
            "audit_mode_warns_and_denies_nothing_and_dry_run_server_changes_nothing",
            audit_mode,
        ),
    ]
}

const GATE_DENIAL: &str = "admission webhook \"validate.safety-gate.dev\" denied the request: ";

fn bootstrap_count(env: &Env, kind: &str) -> usize {
    env.admin
        .get_json(&[kind, "-l", "kubernetes.io/bootstrapping=rbac-defaults"])
        .and_then(|v| v["items"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn incident1_delete_denied(env: &Env) {
    let out = env
        .admin
        .run(&["delete", "clusterrole", "system:kube-controller-manager"]);
    out.expect_fail("delete system:kube-controller-manager");
    assert!(
        out.stderr.contains(&format!(
            "Error from server (Forbidden): {GATE_DENIAL}protect-rbac-defaults: ClusterRole system:kube-controller-manager is a bootstrap RBAC object"
        )),
        "{out:#?}"
    );
    assert!(
        out.stderr.contains("safety-gate:break-glass"),
        "the message names the way forward: {out:#?}"
    );
    assert!(
        env.admin
            .get_json(&["clusterrole", "system:kube-controller-manager"])
            .is_some()
    );
    // The audit log records the refusal with the webhook's status.
    let events = audit_events(&env.audit_log);
    let found = audit_find(
        &events,
        "delete",
        "clusterroles",
        "system:kube-controller-manager",
    );
    assert!(
        found.iter().any(|e| e["responseStatus"]["code"] == 403
            && e["responseStatus"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("validate.safety-gate.dev"))),
        "no audit event of the denial: {found:#?}"
    );
}

fn incident1_delete_by_selector(env: &Env) {
    let roles = bootstrap_count(env, "clusterroles");
    let bindings = bootstrap_count(env, "clusterrolebindings");
    assert!(
        roles > 30 && bindings > 10,
        "{roles} roles, {bindings} bindings"
    );

    // kubectl lists the matches and deletes them one by one.
    let out = env.admin.run(&[
        "delete",
        "clusterroles,clusterrolebindings",
        "-l",
        "kubernetes.io/bootstrapping=rbac-defaults",
    ]);
    out.expect_fail("delete by selector");
    assert!(out.stderr.contains(GATE_DENIAL), "{out:#?}");
    assert!(
        !out.stdout.contains("deleted"),
        "kubectl reported a deletion: {out:#?}"
    );

    // A DeleteCollection reaches admission once per item, with no name.
    let out = env.admin.run(&[
        "delete",
        "--raw",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles?labelSelector=kubernetes.io%2Fbootstrapping%3Drbac-defaults",
    ]);
    out.expect_fail("DeleteCollection");
    assert!(
        out.stderr
            .contains("reached here through a delete by label selector (DeleteCollection)"),
        "{out:#?}"
    );
    assert_eq!(bootstrap_count(env, "clusterroles"), roles);
    assert_eq!(bootstrap_count(env, "clusterrolebindings"), bindings);
}

fn incident1_bypasses(env: &Env) {
    let role = "system:kube-controller-manager";
    let before = env
        .admin
        .get_json(&["clusterrole", role])
        .expect("role exists");

    let out = env
        .admin
        .run(&["label", "clusterrole", role, "kubernetes.io/bootstrapping-"]);
    out.expect_fail("label strip");
    assert!(
        out.stderr
            .contains("label kubernetes.io/bootstrapping must stay rbac-defaults"),
        "{out:#?}"
    );

    let out = env.admin.run(&[
        "patch",
        "clusterrole",
        role,
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/rules","value":[]}]"#,
    ]);
    out.expect_fail("rules removed");
    assert!(out.stderr.contains("this update removes"), "{out:#?}");

    let out = env.admin.run(&[
        "annotate",
        "--overwrite",
        "clusterrole",
        role,
        "rbac.authorization.kubernetes.io/autoupdate=false",
    ]);
    out.expect_fail("autoupdate=false");
    assert!(
        out.stderr
            .contains("annotation rbac.authorization.kubernetes.io/autoupdate must not change"),
        "{out:#?}"
    );

    // Server-side apply that takes over the (atomic) rules list with one rule.
    let manifest = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {role}\n  labels:\n    kubernetes.io/bootstrapping: rbac-defaults\nrules:\n- apiGroups: [\"\"]\n  resources: [\"configmaps\"]\n  verbs: [\"get\"]\n"
    );
    let out = env.admin.apply_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=e2e",
            "-f",
            "-",
        ],
        &manifest,
    );
    out.expect_fail("apply that drops rules");
    assert!(out.stderr.contains(GATE_DENIAL), "{out:#?}");

    let after = env
        .admin
        .get_json(&["clusterrole", role])
        .expect("role exists");
    assert_eq!(before["rules"], after["rules"]);
    assert_eq!(before["metadata"]["labels"], after["metadata"]["labels"]);
    assert_eq!(
        before["metadata"]["annotations"],
        after["metadata"]["annotations"]
    );
}

fn incident1_break_glass(env: &Env) {
    // The break-glass group needs the RBAC permission itself; the gate only
    // lets its members through and records that it did.
    env.admin
        .run(&[
            "create",
            "clusterrolebinding",
            "e2e-break-glass",
            "--clusterrole=cluster-admin",
            "--group=safety-gate:break-glass",
        ])
        .expect_ok("bind the break-glass group");
    // An ordinary user cannot claim the group: impersonation needs RBAC.
    let out = env.alice.run(&[
        "--as=alice",
        "--as-group=safety-gate:break-glass",
        "delete",
        "clusterrole",
        "system:heapster",
    ]);
    out.expect_fail("alice claiming break-glass");
    assert!(out.stderr.contains("cannot impersonate"), "{out:#?}");
    let out = env.admin.run(&[
        "--as=oncall-bob",
        "--as-group=safety-gate:break-glass",
        "annotate",
        "--overwrite",
        "clusterrole",
        "system:heapster",
        "rbac.authorization.kubernetes.io/autoupdate=false",
    ]);
    out.expect_ok("break-glass annotate");
    let warnings = out.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("[break-glass]") && w.contains("protect-rbac-defaults")),
        "kubectl printed no break-glass warning: {out:#?}"
    );
    let events = audit_events(&env.audit_log);
    let found = audit_find(&events, "patch", "clusterroles", "system:heapster");
    let annotated = found.iter().any(|e| {
        e["impersonatedUser"]["username"] == "oncall-bob"
            && e["annotations"].as_object().is_some_and(|a| {
                a.iter().any(|(k, v)| {
                    k.starts_with("validate.safety-gate.dev/")
                        && k.contains("break_glass")
                        && v.as_str().is_some_and(|v| v.contains("oncall-bob"))
                })
            })
    });
    assert!(annotated, "no break_glass audit annotation: {found:#?}");
}

fn incident2_protected_namespaces(env: &Env) {
    for ns in ["kube-system", "default"] {
        let out = env.admin.run(&["delete", "namespace", ns, "--wait=false"]);
        out.expect_fail(ns);
        assert!(
            env.admin.get_json(&["namespace", ns]).is_some(),
            "{ns} is gone"
        );
        // kube-apiserver itself refuses these (NamespaceLifecycle runs before
        // webhooks); kube-system is excluded from the gate's webhooks anyway.
        assert!(out.stderr.contains("may not be deleted"), "{ns}: {out:#?}");
    }

    env.admin
        .run(&["create", "namespace", "prod-data"])
        .expect_ok("create prod-data");
    env.admin
        .run(&[
            "label",
            "namespace",
            "prod-data",
            "safety-gate.dev/protected=true",
        ])
        .expect_ok("protect prod-data");
    let out = env
        .admin
        .run(&["delete", "namespace", "prod-data", "--wait=false"]);
    out.expect_fail("delete prod-data");
    assert!(
        out.stderr.contains(&format!(
            "{GATE_DENIAL}protect-namespaces: Namespace prod-data is protected (label safety-gate.dev/protected=true)"
        )),
        "{out:#?}"
    );
    let ns = env.admin.get_json(&["namespace", "prod-data"]).expect("ns");
    assert_eq!(ns["status"]["phase"], "Active");
}

fn incident2_ordinary_namespace(env: &Env) {
    let ns = "scratch";
    env.admin
        .run(&["create", "namespace", ns])
        .expect_ok("create");
    for args in [
        vec!["create", "configmap", "c1", "--from-literal=a=b"],
        vec!["create", "secret", "generic", "s1", "--from-literal=a=b"],
        vec!["create", "serviceaccount", "robot"],
        vec!["create", "role", "r1", "--verb=get", "--resource=pods"],
        vec!["create", "deployment", "web", "--image=nginx"],
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&["-n", ns]);
        env.admin.run(&all).expect_ok(&format!("{args:?}"));
    }
    let out = env.admin.run(&["delete", "namespace", ns, "--wait=false"]);
    out.expect_ok("delete scratch");
    assert!(out.warnings().is_empty(), "{out:#?}");
    // The real namespace controller empties it, item by item, then removes it.
    env.eventually(
        "namespace scratch is gone",
        Duration::from_secs(90),
        || match env.admin.get_json(&["namespace", ns]) {
            None => Ok(()),
            Some(v) => Err(format!("{}", v["status"])),
        },
    );
    // Not one denial or warning from the gate for anything in it.
    let log = std::fs::read_to_string(&env.gate().log).unwrap_or_default();
    let ours: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "decision" && (v["namespace"] == ns || v["name"] == ns))
        .collect();
    assert!(
        ours.iter().any(|v| v["operation"] == "DELETE"),
        "the gate saw none of the deletions: {ours:#?}"
    );
    let refused: Vec<&Value> = ours.iter().filter(|v| v["verdict"] != "allowed").collect();
    assert!(refused.is_empty(), "{refused:#?}");
}

const INCIDENT3_PRE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: english-grammar-web
  namespace: shop
spec:
  selector: {app: english-grammar-web, release: pre}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: english-grammar-web
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels: {app: english-grammar-web, release: pre}
  template:
    metadata:
      labels: {app: english-grammar-web, release: pre}
    spec:
      containers: [{name: web, image: "nginx:1.27"}]
"#;

fn incident3_apply(env: &Env) {
    env.admin
        .run(&["create", "namespace", "shop"])
        .expect_ok("create shop");
    env.admin
        .apply_stdin(&["apply", "-f", "-"], INCIDENT3_PRE)
        .expect_ok("first apply");
    let qa = INCIDENT3_PRE.replace("release: pre", "release: qa");

    // What a user learns before changing anything: review against the
    // cluster, and kubectl's server-side dry run.
    let file = env.dir.join("incident3-qa.yaml");
    std::fs::write(&file, &qa).expect("write manifest");
    let review = std::process::Command::new(super::gate::gate_binary())
        .arg("review")
        .arg(&file)
        .arg("--cluster")
        .arg("--kubeconfig")
        .arg(&env.admin_kubeconfig)
        .arg("--policies")
        .arg(env.repo.join("policies"))
        .output()
        .expect("run review");
    let text = String::from_utf8_lossy(&review.stdout);
    assert_eq!(review.status.code(), Some(1), "{review:?}");
    assert!(
        text.contains("spec.selector") && text.contains("pre") && text.contains("qa"),
        "{text}"
    );

    let dry = env
        .admin
        .apply_stdin(&["apply", "--dry-run=server", "-f", "-"], &qa);
    dry.expect_fail("dry run of the changed set");
    assert!(
        dry.stderr.contains("immutable-fields") && dry.stderr.contains("spec.selector"),
        "{dry:#?}"
    );
    let svc = env
        .admin
        .get_json(&["service", "english-grammar-web", "-n", "shop"])
        .expect("service");
    assert_eq!(
        svc["spec"]["selector"]["release"], "pre",
        "the dry run changed nothing"
    );
    let dep = env
        .admin
        .get_json(&["deployment", "english-grammar-web", "-n", "shop"])
        .expect("deployment");
    assert_eq!(dep["spec"]["selector"]["matchLabels"]["release"], "pre");

    // The apply itself. kube-apiserver validates the object before it calls
    // validating webhooks, so without the mutating-stage evaluation
    // (`denyBeforeObjectValidation`) the user would see only kube-apiserver's
    // "spec.selector: Invalid value: ...: field is immutable".
    let out = env.admin.apply_stdin(&["apply", "-f", "-"], &qa);
    out.expect_fail("apply of the changed selector");
    assert!(
        out.stderr.contains(
            "admission webhook \"mutate.safety-gate.dev\" denied the request: immutable-fields: Deployment shop/english-grammar-web: spec.selector is immutable"
        ) && out.stderr.contains("release=pre")
            && out.stderr.contains("release=qa")
            && out.stderr.contains("under a new name"),
        "the guidance does not reach the user: {out:#?}"
    );
    // kubectl apply is not transactional: the Service, first in the file,
    // was changed (with the gate's warning) before the Deployment was
    // refused. Only the checks above, before applying, avoid that.
    assert!(
        out.stderr
            .contains("Warning: selector-change-warning: Service shop/english-grammar-web"),
        "{out:#?}"
    );
    let dep = env
        .admin
        .get_json(&["deployment", "english-grammar-web", "-n", "shop"])
        .expect("deployment");
    assert_eq!(dep["spec"]["selector"]["matchLabels"]["release"], "pre");
}

fn kubefed_cluster(name: &str, endpoint: &str) -> String {
    format!(
        "apiVersion: core.kubefed.io/v1beta1\nkind: KubeFedCluster\nmetadata:\n  name: {name}\n  namespace: kube-federation-system\nspec:\n  apiEndpoint: {endpoint}\n  secretRef:\n    name: {name}-secret\n"
    )
}

fn incident4_kubefed(env: &Env) {
    env.admin
        .apply_stdin(
            &["apply", "-f", "-"],
            &super::bare_crd(
                "core.kubefed.io",
                "v1beta1",
                "KubeFedCluster",
                "kubefedclusters",
            ),
        )
        .expect_ok("install the KubeFedCluster CRD");
    env.eventually("the CRD is established", Duration::from_secs(30), || {
        let out = env.admin.run(&["get", "kubefedclusters", "-A"]);
        out.result().map(drop)
    });
    env.admin
        .run(&["create", "namespace", "kube-federation-system"])
        .expect_ok("create kube-federation-system");
    env.admin
        .apply_stdin(
            &["apply", "-f", "-"],
            &kubefed_cluster("host", "https://10.1.2.3:6443"),
        )
        .expect_ok("the live registration");
    env.admin
        .apply_stdin(
            &["apply", "-f", "-"],
            &kubefed_cluster("host-old", "https://10.1.2.3:6443/"),
        )
        .expect_ok("the stale registration");
    env.admin
        .run(&["create", "namespace", "orders"])
        .expect_ok("create orders");

    // The gate's watch cache sees both registrations and refuses the attach.
    // The gate started before the CRD existed: its cache finds the kind at
    // its next discovery attempt (at most 10 s later).
    let denial = env.eventually(
        "attaching is denied while the registrations conflict",
        Duration::from_secs(40),
        || {
            let out = env
                .admin
                .run(&["label", "namespace", "orders", "kubefed.io/managed=true"]);
            if out.ok() {
                // Undo, then try again once the cache has caught up.
                env.admin
                    .run(&["label", "namespace", "orders", "kubefed.io/managed-"]);
                return Err("allowed".into());
            }
            Ok(out)
        },
    );
    assert!(
        denial
            .stderr
            .contains(&format!("{GATE_DENIAL}kubefed-host-conflict:"))
            && denial.stderr.contains("host")
            && denial.stderr.contains("host-old"),
        "{denial:#?}"
    );

    env.admin
        .run(&[
            "delete",
            "kubefedcluster",
            "host-old",
            "-n",
            "kube-federation-system",
        ])
        .expect_ok("delete the stale registration");
    let out = env.eventually(
        "attaching passes once the stale registration is gone",
        Duration::from_secs(10),
        || {
            let out = env
                .admin
                .run(&["label", "namespace", "orders", "kubefed.io/managed=true"]);
            out.result()
        },
    );
    assert!(out.warnings().is_empty(), "{out:#?}");
}

fn audit_mode(env: &Env) {
    env.gate().restart("dry-run");
    let restore = Restore(env);
    let out = env.admin.run(&[
        "delete",
        "clusterrole",
        "system:kube-controller-manager",
        "--dry-run=server",
    ]);
    out.expect_ok("audit-mode dry run");
    assert!(
        out.warnings()
            .iter()
            .any(|w| w.starts_with("Warning: [dry-run] protect-rbac-defaults:")),
        "{out:#?}"
    );
    assert!(out.stdout.contains("(server dry run)"), "{out:#?}");
    assert!(
        env.admin
            .get_json(&["clusterrole", "system:kube-controller-manager"])
            .is_some()
    );

    // In dry-run mode nothing is denied: a protected namespace's label can be
    // lifted... but not with a dry run, which changes nothing.
    env.admin
        .run(&["create", "namespace", "audit-probe"])
        .expect_ok("create");
    env.admin
        .run(&[
            "label",
            "namespace",
            "audit-probe",
            "safety-gate.dev/protected=true",
        ])
        .expect_ok("protect");
    let out = env
        .admin
        .run(&["delete", "namespace", "audit-probe", "--wait=false"]);
    out.expect_ok("dry-run mode lets the delete through");
    assert!(
        out.warnings()
            .iter()
            .any(|w| w.contains("[dry-run] protect-namespaces")),
        "{out:#?}"
    );
    drop(restore);
}

/// Puts the gate back into enforce mode when the scenario ends, pass or fail.
struct Restore<'a>(&'a Env);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        self.0.gate().restart("enforce");
    }
}
