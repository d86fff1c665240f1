//! The CEL environment of the pinned release, asked of the real kube-apiserver:
//! a ValidatingAdmissionPolicy created with `kubectl apply --dry-run=server`
//! is accepted or refused exactly when `safety-gate check` (default
//! `--kubernetes-version`, the pinned release) accepts or refuses it.

use super::gate::gate_binary;
use super::{Env, Scenario};

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![(
        "new_policy_expressions_load_in_the_gate_exactly_when_kube_apiserver_accepts_them",
        new_policy_expressions,
    )]
}

/// (expression, accepted by kube-apiserver 1.37 in a new policy, why)
const EXPRESSIONS: &[(&str, bool, &str)] = &[
    (
        "[2, 1].sort() == [1, 2]",
        true,
        "lists extension v3, introduced in 1.34",
    ),
    (
        "semver('1.2.3').major() == 1",
        true,
        "semver, introduced in 1.33",
    ),
    (
        "[1].all(i, v, v > 0)",
        true,
        "two-variable comprehensions, introduced in 1.32",
    ),
    (
        "sign(quantity('1')) == 1",
        true,
        "sign is declared as a function",
    ),
    (
        "[1, 2].includes(1)",
        false,
        "introduced in 1.37: new policies from 1.38",
    ),
    (
        "quantity('1').sign() == 1",
        false,
        "sign is not declared as a method",
    ),
    (
        "max([1, 2]) == 2",
        false,
        "max is declared only as a method",
    ),
    (
        "base64.encode(b'a') == 'YQ=='",
        false,
        "base64 is not in Kubernetes' environment",
    ),
    ("isIPv4('1.2.3.4')", false, "kube-cel only"),
    (
        "math.abs(-1) == 1",
        false,
        "math is not in Kubernetes' environment",
    ),
];

fn policy(name: &str, expression: &str) -> String {
    let quoted = serde_json::to_string(expression).expect("JSON string");
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n\
         metadata:\n  name: {name}\nspec:\n  matchConstraints:\n    resourceRules:\n    \
         - {{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}\n  \
         validations:\n  - expression: {quoted}\n"
    )
}

fn new_policy_expressions(env: &Env) {
    let mut disagreements = Vec::new();
    for (i, (expression, kube_accepts, why)) in EXPRESSIONS.iter().enumerate() {
        let name = format!("cel-environment-{i}");
        let document = policy(&name, expression);
        let kube = env
            .admin
            .apply_stdin(&["apply", "--dry-run=server", "-f", "-"], &document);
        assert_eq!(
            kube.ok(),
            *kube_accepts,
            "kube-apiserver on {expression} ({why}): {kube:#?}"
        );
        let dir = env.dir.join(format!("cel-environment-{i}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("policy.yaml"), &document).expect("write");
        let gate = std::process::Command::new(gate_binary())
            .args(["check", "--policies"])
            .arg(&dir)
            .env("NO_COLOR", "1")
            .env_remove("SAFETY_GATE_KUBERNETES_VERSION")
            .output()
            .expect("run safety-gate check");
        if gate.status.success() != kube.ok() {
            disagreements.push(format!(
                "{expression}: kube-apiserver {}, safety-gate check {}: {}{}",
                if kube.ok() { "accepts" } else { "refuses" },
                if gate.status.success() {
                    "accepts"
                } else {
                    "refuses"
                },
                kube.stderr.trim(),
                String::from_utf8_lossy(&gate.stderr).trim()
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
