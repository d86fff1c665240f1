//! MutatingAdmissionPolicy: the same policy served by the gate (through the
//! MutatingWebhookConfiguration `safety-gate manifests` renders for it) and
//! applied natively by kube-apiserver produce the same stored object.

use super::{Env, Scenario};
use serde_json::Value;
use std::time::Duration;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![(
        "a_mutating_admission_policy_served_by_the_gate_stores_what_kube_apiserver_stores",
        same_object_as_native,
    )]
}

/// The policy, and a binding limited to one namespace.
fn policy(binding: &str, namespace: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicy
metadata:
  name: team-defaults
spec:
  failurePolicy: Fail
  reinvocationPolicy: IfNeeded
  matchConstraints:
    resourceRules:
    - {{apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}}
  matchConditions:
  - name: labelled-app
    expression: "has(object.metadata.labels) && 'app' in object.metadata.labels"
  variables:
  - name: team
    expression: "object.metadata.namespace.split('-')[0]"
  mutations:
  - patchType: JSONPatch
    jsonPatch:
      expression: >-
        [JSONPatch{{op: "add", path: "/metadata/labels/" + jsonpatch.escapeKey("example.com/team"), value: variables.team}},
         JSONPatch{{op: "replace", path: "/spec/revisionHistoryLimit", value: 4}}]
  - patchType: ApplyConfiguration
    applyConfiguration:
      expression: >-
        Object{{spec: Object.spec{{template: Object.spec.template{{spec: Object.spec.template.spec{{
          containers: [
            Object.spec.template.spec.containers{{name: "app",
              env: [Object.spec.template.spec.containers.env{{name: "TEAM", value: variables.team}}]}},
            Object.spec.template.spec.containers{{name: "log-shipper", image: "registry.example/shipper:1"}}
          ]}}}}}}}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicyBinding
metadata:
  name: {binding}
spec:
  policyName: team-defaults
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {namespace}}}
"#
    )
}

fn deployment(namespace: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {namespace}\n  labels: {{app: web}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: app\n        image: registry.example/web:1\n        env: [{{name: MODE, value: prod}}]\n"
    )
}

/// What a user compares: the stored object without identity, bookkeeping or status.
fn comparable(mut object: Value) -> Value {
    if let Some(meta) = object["metadata"].as_object_mut() {
        for k in [
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
            "annotations",
        ] {
            meta.remove(k);
        }
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    object
}

fn same_object_as_native(env: &Env) {
    let (native_ns, gate_ns) = ("shop-native", "shop-gate");
    for ns in [native_ns, gate_ns] {
        env.admin
            .run(&["create", "namespace", ns])
            .expect_ok("create the namespace");
    }
    // Natively: kube-apiserver's own plugin, bound to the first namespace.
    env.admin
        .apply_stdin(
            &["apply", "-f", "-"],
            &policy("team-defaults-native", native_ns),
        )
        .expect_ok("create the MutatingAdmissionPolicy in kube-apiserver");

    // Through the gate: a second gate serving the same policy, bound to the
    // second namespace, registered with the configuration it renders.
    let dir = env.dir.join("map-gate");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(
        policies.join("map.yaml"),
        policy("team-defaults-gate", gate_ns),
    )
    .expect("write policy");
    let mut gate = super::gate::Gate::start(&dir, &policies, &env.admin_kubeconfig, &env.pidfile);
    gate.wait_ready(Duration::from_secs(30));
    let rendered = gate.render_webhooks();
    let mutating = rendered
        .split("\n---")
        .find(|doc| doc.contains("kind: MutatingWebhookConfiguration"))
        .expect("a MutatingWebhookConfiguration for the MAP's rules");
    assert!(
        mutating.contains("/mutate") && mutating.contains("deployments"),
        "{mutating}"
    );
    // Its own name, beside the main gate's registration.
    let mutating = mutating.replacen("name: safety-gate\n", "name: safety-gate-map-e2e\n", 1);
    env.admin
        .apply_stdin(&["apply", "-f", "-"], &mutating)
        .expect_ok("register the MAP gate");

    let stored = |ns: &str| -> Result<Value, String> {
        let _ = env
            .admin
            .run(&["delete", "deployment", "web", "-n", ns, "--wait=true"]);
        let out = env
            .admin
            .apply_stdin(&["create", "-f", "-"], &deployment(ns));
        if !out.ok() {
            return Err(format!("create in {ns}: {}", out.stderr));
        }
        let object = env
            .admin
            .get_json(&["deployment", "web", "-n", ns])
            .ok_or("not stored")?;
        if object["metadata"]["labels"]["example.com/team"] != "shop" {
            return Err(format!("{ns}: not mutated yet: {}", object["metadata"]));
        }
        Ok(object)
    };
    // Registrations and policies take effect asynchronously.
    let native = env.eventually(
        "kube-apiserver applies the MAP",
        Duration::from_secs(30),
        || stored(native_ns),
    );
    let through_gate = env.eventually("the gate applies the MAP", Duration::from_secs(30), || {
        stored(gate_ns)
    });
    let containers = &through_gate["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["env"][1]["name"], "TEAM", "{through_gate:#}");
    assert_eq!(containers[1]["name"], "log-shipper", "{through_gate:#}");
    assert_eq!(
        comparable(through_gate),
        comparable(native),
        "the gate's result differs from kube-apiserver's"
    );

    let _ = env.admin.run(&[
        "delete",
        "mutatingwebhookconfiguration",
        "safety-gate-map-e2e",
    ]);
    let _ = env.admin.run(&[
        "delete",
        "mutatingadmissionpolicybinding",
        "team-defaults-native",
    ]);
    let _ = env
        .admin
        .run(&["delete", "mutatingadmissionpolicy", "team-defaults"]);
    gate.stop();
}
