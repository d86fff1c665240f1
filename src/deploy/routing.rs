//! Which webhooks the gate asks kube-apiserver to call, and what each one
//! routes: the decisions behind `webhooks.yaml`, before any Kubernetes object
//! is built ([`objects`](super::objects) does that).
//!
//! - one webhook per failurePolicy: the policies that must fail closed get a
//!   narrow `Fail` webhook, everything else a fail-open one;
//! - rules are the union of the policies' own rules, nothing broader;
//! - small timeouts (see [`VALIDATE_FAIL_CLOSED_TIMEOUT_SECONDS`]).

use super::RenderError;
use super::rules::{self, Atom, Rule};
use crate::policy::model::ResourceRule;
use crate::policy::{FailurePolicy, Policy, PolicySet, Stage};
use std::collections::BTreeSet;
use std::path::Path;

/// Fail-closed validation: long enough that a healthy gate (sub-millisecond
/// evaluations, lookups from watch caches) never hits it even behind a busy
/// kube-proxy or a new TLS handshake, short enough that a write denied
/// because the gate is unreachable fails in seconds, not the API default 10.
pub const VALIDATE_FAIL_CLOSED_TIMEOUT_SECONDS: u8 = 5;
/// Fail-open validation: on timeout the write proceeds anyway, so waiting
/// longer buys nothing; 3 s bounds the delay every matching write pays while
/// the gate is unreachable.
pub const VALIDATE_FAIL_OPEN_TIMEOUT_SECONDS: u8 = 3;
/// Mutation: mutating webhooks run one after another and may be called
/// twice (`reinvocationPolicy: IfNeeded`), so theirs is the timeout that
/// adds up; the gate only adds two annotations.
pub const MUTATE_TIMEOUT_SECONDS: u8 = 2;
/// Upper bound the tests hold the rendered timeouts to: the worst-case delay
/// the gate may add to one write (mutations twice, then validations in
/// parallel). Other webhooks add their own; kube-apiserver's request
/// deadline is 60 s by default.
pub const MAX_ADDED_LATENCY_SECONDS: u32 = 10;

/// Resources a fail-closed webhook must never match: the control plane,
/// kubelets and the gate's own Pods write them to keep running or to
/// recover, so failing closed on them is how admission webhooks deadlock
/// clusters.
pub const FAIL_CLOSED_FORBIDDEN_RESOURCES: [&str; 14] = [
    "pods",
    "nodes",
    "leases",
    "events",
    "endpoints",
    "endpointslices",
    "certificatesigningrequests",
    "tokenreviews",
    "subjectaccessreviews",
    "selfsubjectaccessreviews",
    "selfsubjectreviews",
    "selfsubjectrulesreviews",
    "localsubjectaccessreviews",
    "serviceaccounts/token",
];

/// Whether the webhook of `stage` sends `p`'s requests to the gate.
fn runs(stage: Stage, p: &Policy) -> bool {
    match stage {
        Stage::Validate => p.validates(),
        Stage::Mutate => p.mutates(),
    }
}

/// The name that appears in denials (`admission webhook "<name>" denied the
/// request`) and prefixes audit annotations. Each stage's usual failurePolicy
/// (validation fails closed, mutation fails open) gets the plain name; the
/// other one is named for how it differs.
pub fn webhook_name(stage: Stage, failure_policy: FailurePolicy) -> String {
    let stem = match (stage, failure_policy) {
        (Stage::Validate, FailurePolicy::Fail) => "validate",
        (Stage::Validate, FailurePolicy::Ignore) => "validate-fail-open",
        (Stage::Mutate, FailurePolicy::Ignore) => "mutate",
        (Stage::Mutate, FailurePolicy::Fail) => "mutate-fail-closed",
    };
    format!("{stem}.safety-gate.dev")
}

/// `timeoutSeconds` of the webhook of `stage` under `failure_policy`.
pub fn timeout_seconds(stage: Stage, failure_policy: FailurePolicy) -> u8 {
    match (stage, failure_policy) {
        (Stage::Validate, FailurePolicy::Fail) => VALIDATE_FAIL_CLOSED_TIMEOUT_SECONDS,
        (Stage::Validate, FailurePolicy::Ignore) => VALIDATE_FAIL_OPEN_TIMEOUT_SECONDS,
        (Stage::Mutate, _) => MUTATE_TIMEOUT_SECONDS,
    }
}

/// `failurePolicy` as the API spells it.
pub fn failure_policy_name(fp: FailurePolicy) -> &'static str {
    match fp {
        FailurePolicy::Fail => "Fail",
        FailurePolicy::Ignore => "Ignore",
    }
}

/// One webhook as routing decided it: the stage (path) it calls, its
/// failurePolicy, what kube-apiserver sends through it and for which
/// policies. [`objects`](super::objects) turns it into an API object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The gate path kube-apiserver calls.
    pub stage: Stage,
    /// Shared by every policy routed here; decides the name and timeout.
    pub failure_policy: FailurePolicy,
    /// What kube-apiserver sends, in [`rules::compress`]'s canonical form.
    pub rules: Vec<Rule>,
    /// The policies routed through this webhook, sorted (for the file header).
    pub policies: Vec<String>,
}

impl Webhook {
    /// The webhook's `name` ([`webhook_name`]).
    pub fn name(&self) -> String {
        webhook_name(self.stage, self.failure_policy)
    }

    /// The webhook's `timeoutSeconds` ([`timeout_seconds`]).
    pub fn timeout_seconds(&self) -> u8 {
        timeout_seconds(self.stage, self.failure_policy)
    }
}

/// Is a fail-closed atom narrow enough? `Err` says why not.
fn check_fail_closed(atom: &Atom) -> Result<(), &'static str> {
    if atom.operation == "*" || atom.operation == "CONNECT" {
        return Err("wildcard and CONNECT operations include exec, port-forward and proxy");
    }
    if atom.resource.contains('*') {
        return Err("wildcard resources include the objects the control plane needs to recover");
    }
    let base = atom.resource.split('/').next().unwrap_or_default();
    if FAIL_CLOSED_FORBIDDEN_RESOURCES.contains(&atom.resource.as_str())
        || FAIL_CLOSED_FORBIDDEN_RESOURCES.contains(&base)
    {
        return Err("kubelets, controllers and the gate's own Pods write these to keep running");
    }
    if atom.group == "*" {
        return Err("wildcard API groups match the same resource name in every CRD group");
    }
    Ok(())
}

/// What one webhook routes for one policy (a GatePolicy, a VAP unit or a
/// MutatingAdmissionPolicy unit).
struct Routed {
    name: String,
    failure_policy: FailurePolicy,
    rules: Vec<ResourceRule>,
    /// Where the policy is defined, for errors.
    at: String,
}

impl Routed {
    fn new(
        name: &str,
        failure_policy: FailurePolicy,
        rules: Vec<ResourceRule>,
        file: &Path,
        line: usize,
    ) -> Self {
        Routed {
            name: name.to_string(),
            failure_policy,
            rules,
            at: format!("{}:{line}", file.display()),
        }
    }

    /// A fail-closed policy must stay narrow ([`check_fail_closed`]).
    fn check_narrow(&self) -> Result<(), RenderError> {
        if self.failure_policy != FailurePolicy::Fail {
            return Ok(());
        }
        for atom in rules::atoms(self.rules.iter()) {
            if let Err(why) = check_fail_closed(&atom) {
                let group = if atom.group.is_empty() {
                    "core"
                } else {
                    &atom.group
                };
                return Err(RenderError::BroadFailClosed {
                    policy: self.name.clone(),
                    file: self.at.clone(),
                    what: format!(
                        "{} {group}/{} {}",
                        atom.operation, atom.version, atom.resource
                    ),
                    why,
                });
            }
        }
        Ok(())
    }
}

/// The policies that run on `stage`: GatePolicies and VAP units, and on
/// `/mutate` also MutatingAdmissionPolicies, each under its own failurePolicy.
fn running(set: &PolicySet, stage: Stage) -> Vec<Routed> {
    let mut running: Vec<Routed> = set
        .policies()
        .iter()
        .filter(|p| runs(stage, p))
        .map(|p| {
            Routed::new(
                &p.name,
                p.failure_policy,
                p.webhook_rules(),
                &p.file,
                p.line,
            )
        })
        .collect();
    if stage == Stage::Mutate {
        running.extend(set.mutating_policies().iter().map(|p| {
            Routed::new(
                &p.name,
                p.failure_policy,
                p.webhook_rules(),
                &p.file,
                p.line,
            )
        }));
    }
    running
}

/// The minimal atoms and the sorted policy names of the policies under `fp`.
fn group(running: &[Routed], fp: FailurePolicy) -> (BTreeSet<Atom>, Vec<String>) {
    let members: Vec<&Routed> = running.iter().filter(|p| p.failure_policy == fp).collect();
    let atoms = rules::atoms(
        members
            .iter()
            .flat_map(|p| p.rules.iter().cloned())
            .collect::<Vec<_>>()
            .iter(),
    );
    let mut names: Vec<String> = members.iter().map(|p| p.name.clone()).collect();
    names.sort();
    names.dedup();
    (rules::minimize(&atoms), names)
}

/// The webhooks of one stage: one per failurePolicy that some policy
/// running there has, fail-closed first. A request both would match is
/// routed only through the fail-closed one: the gate evaluates every
/// matching policy on each call, and each policy's own failurePolicy still
/// decides its errors and deadlines, so a second call would only repeat
/// warnings and audit annotations.
///
/// # Errors
/// [`RenderError::BroadFailClosed`] when a fail-closed policy matches a
/// wildcard, CONNECT or a resource the control plane needs to recover.
pub fn webhooks(set: &PolicySet, stage: Stage) -> Result<Vec<Webhook>, RenderError> {
    let running = running(set, stage);
    for p in &running {
        p.check_narrow()?;
    }
    let (fail, fail_names) = group(&running, FailurePolicy::Fail);
    let (ignore, ignore_names) = group(&running, FailurePolicy::Ignore);
    let ignore = rules::subtract(&ignore, &fail);

    let mut out = Vec::new();
    for (fp, atoms, names) in [
        (FailurePolicy::Fail, fail, fail_names),
        (FailurePolicy::Ignore, ignore, ignore_names),
    ] {
        if atoms.is_empty() {
            continue;
        }
        out.push(Webhook {
            stage,
            failure_policy: fp,
            rules: rules::compress(&atoms),
            policies: names,
        });
    }
    Ok(out)
}
