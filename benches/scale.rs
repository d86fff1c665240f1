//! Issue 15's scale target: per-request cost with 1,000 loaded policies of
//! which 5 match, next to the same 5 loaded alone (target: within 10 %).
//!
//! The request is `benches/fixtures/deployment-update.json` (a Deployment
//! UPDATE, apps/v1). Both sets hold the same 5 policies that match it
//! (`operations: [UPDATE]` on apps/deployments, one validation each). The
//! large set adds 995 that do not match: a third on apps/deployments for
//! another operation (CREATE, DELETE, CONNECT), a third on other resources
//! for UPDATE, a third on every group and resource (`*`) for CREATE or
//! DELETE. Every policy has a validation, so the sets also cost what
//! compiling them costs.
//!
//! Run: `cargo bench --bench scale` (interleaved rounds of the timing loop,
//! medians, and the ratio). For instructions, which do not move with the
//! machine's load: `target/release/deps/scale-* --instr SET N` loads SET (5
//! or 1000) and reviews N times; run it under `valgrind --tool=callgrind`
//! for two N and divide the difference (`benches/scale-instr.sh` does).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark code: a panic is the run failing"
)]

use safety_gate::admission;
use safety_gate::cluster::Snapshot;
use safety_gate::policy::PolicySet;
use std::hint::black_box;
use std::path::PathBuf;
use support::quick_time;

#[path = "support/mod.rs"]
mod support;

/// Policies that match a Deployment UPDATE: five different reads.
const MATCHING: &[&str] = &[
    "object.spec.replicas >= 0",
    "object.metadata.name.size() < 254",
    "object.spec.template.spec.containers.all(c, c.name != '')",
    "!has(object.metadata.labels) || object.metadata.labels.size() < 64",
    "oldObject.spec.selector == object.spec.selector",
];

/// Resources the other-resource third is filed under: (group, resource).
const OTHER_RESOURCES: &[(&str, &str)] = &[
    ("", "configmaps"),
    ("", "secrets"),
    ("", "pods"),
    ("", "services"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("batch", "jobs"),
    ("rbac.authorization.k8s.io", "roles"),
    ("networking.k8s.io", "ingresses"),
    ("apps", "deployments/scale"),
];

fn policy(
    name: &str,
    operations: &[&str],
    group: &str,
    resource: &str,
    expression: &str,
) -> String {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "apiVersion: safety-gate.dev/v1alpha1
kind: GatePolicy
metadata:
  name: {name}
spec:
  matchConstraints:
    resourceRules:
      - apiGroups: [\"{group}\"]
        apiVersions: [\"*\"]
        operations: [{ops}]
        resources: [\"{resource}\"]
  validations:
    - expression: {expression:?}
",
        ops = list(operations)
    )
}

/// The 5 matching policies and, when `total` is larger, `total - 5` that do not match.
fn policy_texts(total: usize) -> Vec<(PathBuf, String)> {
    let mut docs: Vec<String> = MATCHING
        .iter()
        .enumerate()
        .map(|(i, e)| policy(&format!("match-{i}"), &["UPDATE"], "apps", "deployments", e))
        .collect();
    for i in 0..total.saturating_sub(MATCHING.len()) {
        let expression = format!("object.metadata.name != 'reserved-{i}'");
        let name = format!("other-{i}");
        let doc = match i % 3 {
            0 => {
                let op = ["CREATE", "DELETE", "CONNECT"][(i / 3) % 3];
                policy(&name, &[op], "apps", "deployments", &expression)
            }
            1 => {
                let (g, r) = OTHER_RESOURCES[(i / 3) % OTHER_RESOURCES.len()];
                policy(&name, &["UPDATE"], g, r, &expression)
            }
            _ => {
                let op = ["CREATE", "DELETE"][(i / 3) % 2];
                policy(&name, &[op], "*", "*", &expression)
            }
        };
        docs.push(doc);
    }
    vec![(PathBuf::from("scale.yaml"), docs.join("---\n"))]
}

fn body() -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/deployment-update.json");
    let text = std::fs::read(&path).expect("read the fixture");
    let value: serde_json::Value = serde_json::from_slice(&text).expect("fixture is JSON");
    serde_json::to_vec(&value).expect("compact JSON")
}

fn review(policies: &PolicySet, cluster: &Snapshot, body: &[u8]) -> admission::ReviewOutcome {
    support::review(policies, cluster, body).expect("the fixture reviews")
}

fn load(total: usize) -> PolicySet {
    let set = PolicySet::load_texts(&policy_texts(total)).expect("generated policies load");
    assert_eq!(set.len(), total);
    set
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cluster = Snapshot::empty();
    let body = body();
    if let Some(i) = args.iter().position(|a| a == "--instr") {
        let total: usize = args[i + 1].parse().expect("SET: 5 or 1000");
        let n: usize = args[i + 2].parse().expect("N: reviews");
        let set = load(total);
        for _ in 0..n {
            black_box(review(&set, &cluster, black_box(&body)));
        }
        return;
    }
    // `cargo test --benches` runs this binary without `--bench`: check only.
    let timing = args.iter().any(|a| a == "--bench");
    let small = load(MATCHING.len());
    let large = load(1000);
    for (label, set) in [("5 loaded", &small), ("1000 loaded", &large)] {
        let outcome = review(set, &cluster, &body);
        let evaluated = outcome.summary.policies.len();
        println!(
            "{label}: {evaluated} policies evaluated, allowed={}",
            outcome.summary.allowed
        );
        assert_eq!(evaluated, MATCHING.len(), "exactly the 5 match");
    }
    if !timing {
        return;
    }
    let rounds = 5;
    let (mut t_small, mut t_large) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        t_small.push(quick_time(|| {
            black_box(review(&small, &cluster, black_box(&body)));
        }));
        t_large.push(quick_time(|| {
            black_box(review(&large, &cluster, black_box(&body)));
        }));
    }
    t_small.sort();
    t_large.sort();
    let (s, l) = (t_small[rounds / 2], t_large[rounds / 2]);
    println!(
        "review of the Deployment UPDATE, median of {rounds} interleaved rounds: \
         5 loaded {:.1} µs, 1000 loaded {:.1} µs, 1000 ÷ 5 = {:.3}",
        s.as_secs_f64() * 1e6,
        l.as_secs_f64() * 1e6,
        l.as_secs_f64() / s.as_secs_f64()
    );
}
