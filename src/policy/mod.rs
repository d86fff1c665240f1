//! The policy engine: compiled policies, matching, evaluation, decisions.
//!
//! Pure: no HTTP, no Kubernetes client. The server and every CLI command use
//! the same [`PolicySet`] and get the same [`Decision`] for the same request.

mod analysis;
pub mod authz;
pub mod cancel;
pub mod cel_env;
mod cluster_state;
mod collect;
mod compile;
mod decision;
mod evaluate;
mod format_values;
pub mod kubernetes_version;
mod lazy;
mod literals;
mod load;
mod macros;
mod matching;
pub mod model;
mod mutate;
pub mod mutating;
mod options;
mod overloads;
mod params;
mod paths;
mod quantifiers;
mod quantity;
mod re2;
mod request;
mod rewrite;
pub mod runtime_cost;
mod semantics;
mod trace;
mod type_check;
pub mod type_values;
mod unary_runs;
mod validation;
pub mod values;
mod variables;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vap_tests;

pub use cluster_state::{ClusterState, LookupError, NO_AUTHORIZER, NamespaceInfo, NoCluster};
pub use compile::CompiledExpression;
pub use decision::{Decision, DenyStatus, PolicyOutcome, PolicyVerdict, Verdict};
pub use evaluate::{InputError, effective_name};
pub use literals::string_literal_end;
pub use load::{GATE_API_VERSION, LoadError, LoadErrors, LoadNote};
pub use model::{Action, FailurePolicy, LookupSpec, ParamKind, ParamRef, Reason};
pub use options::{EvalOptions, Mode, Stage};
pub use params::{ParamScope, ParamSource, guess_scope};
pub use request::Request;
pub use trace::{ExpressionTrace, TracePhase};
pub use validation::is_cel_identifier;

use analysis::Reads;
use matching::{Attributes, Matcher, RuleIndex};
use std::path::{Path, PathBuf};

/// What a failing validation of a policy does (VAP `validationActions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions {
    pub deny: bool,
    pub warn: bool,
    pub audit: bool,
}

#[derive(Debug)]
pub struct Named {
    pub name: String,
    pub expression: CompiledExpression,
}

#[derive(Debug)]
pub struct CompiledValidation {
    pub expression: CompiledExpression,
    pub message: Option<String>,
    pub message_expression: Option<CompiledExpression>,
    pub reason: Reason,
}

/// Which document a policy came from: where kube-apiserver's behaviour and the
/// gate's documented defaults differ (default reason, response wording, audit
/// annotations), a ValidatingAdmissionPolicy gets kube-apiserver's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    GatePolicy,
    ValidatingAdmissionPolicy,
}

/// One compiled policy (a GatePolicy, or a VAP with one of its bindings).
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub kind: PolicyKind,
    pub binding: Option<String>,
    pub file: PathBuf,
    pub line: usize,
    pub description: Option<String>,
    pub actions: Actions,
    pub action_label: String,
    pub failure_policy: FailurePolicy,
    matcher: Matcher,
    match_conditions: Vec<Named>,
    variables: std::sync::Arc<[Named]>,
    pub lookups: Vec<LookupSpec>,
    /// VAP `spec.paramKind` (None for a GatePolicy).
    pub param_kind: Option<ParamKind>,
    /// The binding's `spec.paramRef`: with `param_kind`, one evaluation per selected object.
    pub param_ref: Option<ParamRef>,
    exemptions: Vec<Named>,
    validations: Vec<CompiledValidation>,
    audit_annotations: Vec<Named>,
    annotate: Vec<(String, Option<CompiledExpression>)>,
    mutations: Vec<CompiledExpression>,
    /// Validations also run on `/mutate` (see `PolicySpec`).
    pub deny_before_object_validation: bool,
    /// Everything any expression of this policy reads.
    reads: Reads,
}

struct PolicyParts {
    name: String,
    kind: PolicyKind,
    binding: Option<String>,
    file: PathBuf,
    line: usize,
    description: Option<String>,
    actions: Actions,
    action_label: String,
    failure_policy: FailurePolicy,
    matcher: Matcher,
    match_conditions: Vec<Named>,
    variables: Vec<Named>,
    lookups: Vec<LookupSpec>,
    param_kind: Option<ParamKind>,
    param_ref: Option<ParamRef>,
    exemptions: Vec<Named>,
    validations: Vec<CompiledValidation>,
    audit_annotations: Vec<Named>,
    annotate: Vec<(String, Option<CompiledExpression>)>,
    mutations: Vec<CompiledExpression>,
    deny_before_object_validation: bool,
}

impl Policy {
    fn new(p: PolicyParts) -> Self {
        let mut reads = Reads::default();
        let all =
            p.match_conditions
                .iter()
                .chain(p.variables.iter())
                .chain(&p.exemptions)
                .chain(&p.audit_annotations)
                .map(|n| &n.expression)
                .chain(p.validations.iter().flat_map(|v| {
                    std::iter::once(&v.expression).chain(v.message_expression.as_ref())
                }))
                .chain(p.annotate.iter().filter_map(|(_, e)| e.as_ref()))
                .chain(&p.mutations);
        for e in all {
            reads.merge(&e.reads);
        }
        Policy {
            name: p.name,
            kind: p.kind,
            binding: p.binding,
            file: p.file,
            line: p.line,
            description: p.description,
            actions: p.actions,
            action_label: p.action_label,
            failure_policy: p.failure_policy,
            matcher: p.matcher,
            match_conditions: p.match_conditions,
            variables: p.variables.into(),
            lookups: p.lookups,
            param_kind: p.param_kind,
            param_ref: p.param_ref,
            exemptions: p.exemptions,
            validations: p.validations,
            audit_annotations: p.audit_annotations,
            annotate: p.annotate,
            mutations: p.mutations,
            deny_before_object_validation: p.deny_before_object_validation,
            reads,
        }
    }

    /// The resource rules kube-apiserver must route to the gate for this policy.
    pub fn webhook_rules(&self) -> Vec<model::ResourceRule> {
        self.matcher.webhook_rules()
    }

    /// Runs on `/validate` (and in review, audit and test).
    pub fn validates(&self) -> bool {
        !self.validations.is_empty() || !self.audit_annotations.is_empty()
    }

    /// Runs on `/mutate`: it mutates, or its validations also run there.
    pub fn mutates(&self) -> bool {
        !self.annotate.is_empty()
            || !self.mutations.is_empty()
            || (self.deny_before_object_validation && self.validates())
    }
}

/// What cluster state a policy set reads (see [`PolicySet::cluster_needs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterNeeds {
    /// (apiVersion, kind) of every looked-up kind and every `paramKind`, sorted.
    pub kinds: Vec<(String, String)>,
    /// Namespaces must be watched (namespaceSelector or namespaceObject).
    pub namespaces: bool,
    /// A policy uses `authorizer`: SubjectAccessReviews must be created.
    pub authorizer: bool,
}

/// An immutable, compiled set of policies with an index from resources to policies.
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
    index: RuleIndex,
    /// Documents that loaded but do nothing (unbound VAPs, bindings of absent policies).
    notes: Vec<LoadNote>,
    /// MutatingAdmissionPolicy units, in the order they apply (see `mutating`).
    mutating: Vec<mutating::MutatingPolicy>,
}

impl PolicySet {
    fn new(policies: Vec<Policy>) -> Self {
        let mut index = RuleIndex::default();
        for (i, p) in policies.iter().enumerate() {
            index.insert(i, &p.matcher);
        }
        PolicySet {
            policies,
            index,
            notes: Vec::new(),
            mutating: Vec::new(),
        }
    }

    pub fn empty() -> Self {
        PolicySet::default()
    }

    /// Loads a directory (recursively) or a single file. All or nothing.
    pub fn load_dir(path: &Path) -> Result<Self, LoadErrors> {
        load::load_path(path)
    }

    pub fn load_files(files: &[PathBuf]) -> Result<Self, LoadErrors> {
        load::load_files(files)
    }

    /// Loads `(file name, text)` pairs as [`PolicySet::load_files`] loads
    /// files; the names only label errors. All or nothing.
    pub fn load_texts(sources: &[(PathBuf, String)]) -> Result<Self, LoadErrors> {
        load::load_texts(sources)
    }

    /// Evaluation units: GatePolicies, (VAP, binding) and (MAP, binding) pairs.
    pub fn len(&self) -> usize {
        self.policies.len() + self.mutating.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.mutating.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.policies.iter().map(|p| p.name.clone()).collect()
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// What loaded but does nothing, as kube-apiserver would store it and do nothing.
    pub fn notes(&self) -> &[LoadNote] {
        &self.notes
    }

    /// The cluster state this set reads: the kinds its lookups name, and
    /// whether any policy needs namespace labels or `namespaceObject`.
    pub fn cluster_needs(&self) -> ClusterNeeds {
        let mut needs = ClusterNeeds::default();
        for p in &self.policies {
            // Every paramKind, as kube-apiserver starts an informer for each:
            // with a paramRef its objects are read, without one whether it is
            // served still decides (see params.rs).
            let params = p
                .param_kind
                .as_ref()
                .map(|k| (k.api_version.clone(), k.kind.clone()));
            for kind in p
                .lookups
                .iter()
                .map(|l| (l.api_version.clone(), l.kind.clone()))
                .chain(params)
            {
                if !needs.kinds.contains(&kind) {
                    needs.kinds.push(kind);
                }
            }
            needs.namespaces |=
                p.matcher.namespace_selectors().next().is_some() || p.reads.namespace_object;
            needs.authorizer |= p.reads.authorizer;
        }
        needs.namespaces |= self.mutating.iter().any(|m| m.needs_namespaces());
        needs.kinds.sort();
        needs
    }

    /// Whether evaluating `request` at `stage` runs no expression at all: no
    /// policy's resource rules match it, and on `/mutate` no
    /// MutatingAdmissionPolicy is loaded. [`PolicySet::evaluate`] then only
    /// allows it; the server answers such a request without handing it to
    /// the blocking pool.
    pub fn matches_nothing(&self, request: &Request, stage: Stage) -> bool {
        let name = effective_name(request);
        let attrs = evaluate::request_attributes(request, &name);
        self.matching(&attrs, stage).is_empty()
            && (stage != Stage::Mutate || self.mutating.is_empty())
    }

    /// Policies whose resource rules match, in load order; work grows with
    /// the policies filed under the request's operation and resource, not
    /// with the set.
    fn matching(&self, attrs: &Attributes, stage: Stage) -> Vec<&Policy> {
        self.index
            .candidates(attrs)
            .into_iter()
            .map(|i| &self.policies[i])
            .filter(|p| match stage {
                Stage::Validate => p.validates(),
                Stage::Mutate => p.mutates(),
            })
            .filter(|p| p.matcher.matches_rules(attrs))
            .collect()
    }
}
