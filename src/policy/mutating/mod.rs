//! MutatingAdmissionPolicy (`admissionregistration.k8s.io/v1`, GA in Kubernetes
//! 1.36): loading with kube-apiserver's validation, and evaluation on `/mutate`
//! as kube-apiserver's mutating policy plugin does it
//! (`k8s.io/apiserver/pkg/admission/plugin/policy/mutating`, v1.37.2):
//!
//! - one evaluation unit per (policy, binding), applied one after another;
//!   within a unit the mutations run in order, each seeing the object the
//!   previous one produced (variables are evaluated afresh for each);
//! - `matchConditions` decide once per unit, on the object as the unit finds it;
//! - a mutation that errors (CEL error, invalid patch, wrong result type)
//!   changes nothing; under `failurePolicy: Fail` the request is refused with
//!   kube-apiserver's wording, under `Ignore` the other mutations still apply;
//! - `reinvocationPolicy: IfNeeded` as kube-apiserver's admission chain does
//!   it: when any mutation applied, the units marked IfNeeded run once more.

mod apply;
pub mod cel;
mod dispatch;
mod jsonpatch;
pub(super) mod load;
mod model;
#[cfg(test)]
mod tests;

use super::compile::CompiledExpression;
use super::matching::Matcher;
use super::model::{FailurePolicy, ResourceRule};
use super::{Named, PolicySet};
use std::path::PathBuf;
use std::sync::Arc;

/// `spec.mutations[].patchType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// The expression returns `list(JSONPatch)`, applied as RFC 6902.
    JsonPatch,
    /// The expression returns an `Object{…}`, merged into the object.
    ApplyConfiguration,
}

#[derive(Debug)]
pub struct Mutation {
    pub patch_type: PatchType,
    pub expression: CompiledExpression,
}

/// One MutatingAdmissionPolicy with one of its bindings.
#[derive(Debug)]
pub struct MutatingPolicy {
    pub name: String,
    pub binding: String,
    pub file: PathBuf,
    pub line: usize,
    pub failure_policy: FailurePolicy,
    /// `reinvocationPolicy: IfNeeded`.
    pub reinvoke_if_needed: bool,
    matcher: Matcher,
    match_conditions: Vec<Named>,
    variables: Arc<[Named]>,
    mutations: Vec<Mutation>,
    /// Some expression reads `namespaceObject`.
    reads_namespace_object: bool,
}

impl MutatingPolicy {
    /// The resource rules kube-apiserver must route to the gate's `/mutate` for this unit.
    pub fn webhook_rules(&self) -> Vec<ResourceRule> {
        self.matcher.webhook_rules()
    }

    /// Namespaces must be watched: a `namespaceSelector` or `namespaceObject`.
    pub fn needs_namespaces(&self) -> bool {
        self.reads_namespace_object || self.matcher.namespace_selectors().next().is_some()
    }
}

impl PolicySet {
    /// The MutatingAdmissionPolicy units, in the order they apply.
    pub fn mutating_policies(&self) -> &[MutatingPolicy] {
        &self.mutating
    }
}
