//! A ValidatingAdmissionPolicy with a param (a ConfigMap in the request's
//! namespace) and an `authorizer` check, served by a gate of its own in one
//! namespace and run by kube-apiserver's native plugin in another, with the
//! same param object and the same RBAC: both must decide the same for the
//! same requests by the same users, with the same message.

use super::{Env, Scenario};
use std::time::Duration;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![(
        "params_and_authorizer_policy_served_by_the_gate_decides_as_native_vap",
        params_and_authorizer,
    )]
}

/// The policy under test; NAME and NS are replaced per side.
const POLICY: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: NAME
spec:
  failurePolicy: Fail
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  validations:
  - expression: >-
      !has(object.data) || object.data.size() <= int(params.data.maxKeys) ||
      authorizer.group('').resource('configmaps').namespace(request.namespace).check('bulk-write').allowed()
    messageExpression: "'at most ' + params.data.maxKeys + ' keys without bulk-write'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: NAME-binding
spec:
  policyName: NAME
  validationActions: [Deny]
  paramRef: {name: limits, parameterNotFoundAction: Deny}
  matchResources:
    namespaceSelector:
      matchLabels: {kubernetes.io/metadata.name: NS}
"#;

fn webhook(url: &str, ca_bundle: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: e2e-params-gate\nwebhooks:\n- name: params.safety-gate.dev\n  failurePolicy: Fail\n  timeoutSeconds: 10\n  sideEffects: None\n  admissionReviewVersions: [v1]\n  namespaceSelector:\n    matchLabels: {{kubernetes.io/metadata.name: params-gate}}\n  rules:\n  - {{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}\n  clientConfig:\n    url: {url}/validate\n    caBundle: {ca_bundle}\n"
    )
}

/// Removes what the scenario registered, pass or fail.
struct Cleanup<'a>(&'a Env);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let admin = &self.0.admin;
        admin.run(&[
            "delete",
            "validatingwebhookconfiguration",
            "e2e-params-gate",
            "--ignore-not-found",
        ]);
        admin.run(&[
            "delete",
            "validatingadmissionpolicybinding",
            "limit-native-binding",
            "--ignore-not-found",
        ]);
        admin.run(&[
            "delete",
            "validatingadmissionpolicy",
            "limit-native",
            "--ignore-not-found",
        ]);
    }
}

/// The text after "denied request: " (kube-apiserver and the gate wrap it
/// differently), or "allowed".
fn verdict(out: &super::kubectl::Outcome) -> String {
    if out.ok() {
        return "allowed".to_string();
    }
    out.stderr
        .split_once("denied request: ")
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| format!("denied without a policy message: {}", out.stderr.trim()))
}

fn params_and_authorizer(env: &Env) {
    let sides = [("params-gate", "limit"), ("params-native", "limit-native")];
    for (ns, _) in sides {
        env.admin
            .run(&["create", "namespace", ns])
            .expect_ok("create namespace");
        env.admin
            .run(&[
                "create",
                "configmap",
                "limits",
                "-n",
                ns,
                "--from-literal=maxKeys=1",
            ])
            .expect_ok("create the param");
        // alice may create ConfigMaps there, but not `bulk-write` them.
        env.admin
            .run(&[
                "create",
                "role",
                "configmap-writer",
                "--verb=create,delete",
                "--resource=configmaps",
                "-n",
                ns,
            ])
            .expect_ok("a role for alice");
        env.admin
            .run(&[
                "create",
                "rolebinding",
                "alice-writes",
                "--role=configmap-writer",
                "--user=alice",
                "-n",
                ns,
            ])
            .expect_ok("let alice write");
    }
    let cleanup = Cleanup(env);

    // The gate's side: a gate of its own serving the policy, registered for
    // its namespace only.
    let dir = env.dir.join("params-gate");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(
        policies.join("limit.yaml"),
        POLICY.replace("NAME", "limit").replace("NS", "params-gate"),
    )
    .expect("write policy");
    let mut gate = super::gate::Gate::start(&dir, &policies, &env.admin_kubeconfig, &env.pidfile);
    use base64::Engine as _;
    let ca = std::fs::read(gate.certs.join("ca.crt")).expect("ca");
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    env.admin
        .apply_stdin(&["apply", "-f", "-"], &webhook(&gate.url(), &ca))
        .expect_ok("register the params gate");
    // kube-apiserver's side: the same policy, native.
    env.admin
        .apply_stdin(
            &["apply", "-f", "-"],
            &POLICY
                .replace("NAME", "limit-native")
                .replace("NS", "params-native"),
        )
        .expect_ok("apply the native policy");

    let create = |who: &super::kubectl::Kubectl, ns: &str, name: &str, keys: usize| {
        let mut args = vec![
            "create".to_string(),
            "configmap".to_string(),
            name.to_string(),
            "-n".to_string(),
            ns.to_string(),
        ];
        for k in 0..keys {
            args.push(format!("--from-literal=k{k}=v"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        who.run(&args)
    };
    // Both policies take effect asynchronously: wait until each denies the
    // case that only the policy denies.
    for (ns, _) in sides {
        env.eventually(
            &format!("the policy denies in {ns}"),
            Duration::from_secs(60),
            || {
                let out = create(&env.alice, ns, "probe", 2);
                if out.ok() {
                    env.admin.run(&["delete", "configmap", "probe", "-n", ns]);
                }
                match verdict(&out) {
                    v if v.starts_with("at most") => Ok(()),
                    other => Err(other),
                }
            },
        );
    }

    let cases: [(&str, &super::kubectl::Kubectl, usize); 4] = [
        ("alice-one", &env.alice, 1),
        ("alice-two", &env.alice, 2),
        // The admin is system:masters: authorized for every verb.
        ("admin-two", &env.admin, 2),
        ("admin-none", &env.admin, 0),
    ];
    for (name, who, keys) in cases {
        let gate_says = verdict(&create(who, "params-gate", name, keys));
        let kube_says = verdict(&create(who, "params-native", name, keys));
        assert_eq!(
            gate_says, kube_says,
            "{name}: the gate and kube-apiserver decide differently"
        );
        eprintln!("params/authorizer {name}: both {gate_says}");
    }
    assert_eq!(
        verdict(&create(&env.alice, "params-gate", "alice-three", 3)),
        "at most 1 keys without bulk-write"
    );

    // Without the param both deny with kube-apiserver's configuration error.
    for (ns, _) in sides {
        env.admin
            .run(&["delete", "configmap", "limits", "-n", ns])
            .expect_ok("delete the param");
    }
    let expected = "failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction";
    for (ns, _) in sides {
        env.eventually(
            &format!("the missing param denies in {ns}"),
            Duration::from_secs(30),
            || {
                let said = verdict(&create(&env.admin, ns, "after", 0));
                if said == expected {
                    Ok(())
                } else {
                    if said == "allowed" {
                        env.admin.run(&["delete", "configmap", "after", "-n", ns]);
                    }
                    Err(said)
                }
            },
        );
    }
    drop(cleanup);
    gate.stop();
}
