//! Evaluating one request against the loaded policies.

use super::compile::CompiledExpression;
use super::decision::{Decision, PolicyEvaluation, PolicyOutcome, ValidationFailure};
use super::lazy::LazyValue;
use super::matching::{Attributes, RequestedResource};
use super::model::FailurePolicy;
use super::mutate;
use super::options::{EvalOptions, Stage};
use super::paths::{DATA_BINDING, DataRoots};
use super::trace::{ExpressionTrace, TracePhase, display_value};
use super::variables::{TABLE_BINDING, VariableTable};
use super::{ClusterState, LookupError};
use super::{Policy, PolicySet, Request};
use super::{cel_env, runtime_cost};
use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// Kubernetes caps an evaluated messageExpression at 5 KiB.
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

/// The request itself is unusable (kube-apiserver never sends such a thing).
#[derive(Debug, Clone, PartialEq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// The input one request binds: decoded lazily, shared with the CEL scope.
struct Bound {
    data: Arc<DataRoots>,
    namespace: Option<Result<Option<super::NamespaceInfo>, LookupError>>,
}

impl Bound {
    fn object(&self) -> &LazyValue {
        &self.data.roots[0]
    }

    fn old_object(&self) -> &LazyValue {
        &self.data.roots[1]
    }
}

impl PolicySet {
    /// Evaluates every matching policy and combines their results (the
    /// MutatingAdmissionPolicies are applied after, in `mutating/dispatch.rs`).
    pub(super) fn evaluate_policies(
        &self,
        request: &Request,
        cluster: &dyn ClusterState,
        options: &EvalOptions,
    ) -> Result<Decision, InputError> {
        let started = Instant::now();
        let name = effective_name(request);
        let attrs = request_attributes(request, &name);
        let candidates = self.matching(&attrs, options.stage);
        if candidates.is_empty() {
            return Ok(Decision::allow(request, started));
        }

        let mut wants_namespace = false;
        for p in &candidates {
            let ns_selector = p.matcher.namespace_selectors().next().is_some();
            wants_namespace |=
                p.reads.namespace_object || (ns_selector && !attrs.is_cluster_scoped());
        }
        let object = lazy_object(request.object.as_deref(), "object")?;
        let old_object = lazy_object(request.old_object.as_deref(), "oldObject")?;
        let namespace = (wants_namespace && !attrs.is_cluster_scoped())
            .then(|| cluster.namespace(attrs.namespace));
        let namespace_object = match &namespace {
            Some(Ok(Some(ns))) => LazyValue::from_value(ns.object.clone()),
            _ => LazyValue::null(),
        };
        let bound = Bound {
            data: Arc::new(DataRoots {
                roots: [object, old_object, namespace_object],
            }),
            namespace,
        };

        // Expressions reach the objects only through the path functions (see
        // paths.rs): the JSON is decoded where a taken branch reads it, once.
        let mut shared = cel_env::root().new_inner_scope();
        shared.add_variable_from_value(DATA_BINDING, Value::Opaque(bound.data.clone()));
        shared.add_variable_from_value("request", request.to_cel());
        if candidates.iter().any(|p| p.reads.authorizer) {
            let (authorizer, request_resource) = authz_bindings(request, cluster);
            shared.add_variable_from_value(super::authz::AUTHORIZER_BINDING, authorizer);
            shared
                .add_variable_from_value(super::authz::REQUEST_RESOURCE_BINDING, request_resource);
        }

        let mut evaluations = Vec::with_capacity(candidates.len());
        for policy in candidates {
            let selected = match selectors_match(policy, &attrs, &bound) {
                Ok(true) => true,
                Ok(false) => false,
                Err(e) => {
                    let mut unknown =
                        PolicyEvaluation::error(policy, format!("namespaceSelector: {e}"));
                    unknown.cluster_state_unknown = true;
                    evaluations.push(unknown);
                    continue;
                }
            };
            if !selected {
                continue;
            }
            // One evaluation per param object, as kube-apiserver's dispatcher
            // makes one invocation per param; none when none was found and the
            // binding says `Allow`.
            match super::params::collect(policy, attrs.namespace, cluster) {
                Ok(params) => {
                    for param in params {
                        evaluations.push(evaluate_policy(
                            policy, &shared, request, cluster, options, param,
                        ));
                    }
                }
                Err(e) => evaluations.push(PolicyEvaluation::config_error(policy, e)),
            }
        }
        let object_json = if options.stage == Stage::Mutate {
            request.object.as_ref().map(|o| o.get())
        } else {
            None
        };
        Ok(Decision::combine(
            request,
            options,
            evaluations,
            object_json,
            started,
        ))
    }
}

impl PolicySet {
    /// The decision for a request whose evaluation did not finish before the
    /// caller's deadline: each matching policy's failurePolicy decides, as if
    /// every one of them had failed to evaluate.
    pub(super) fn deadline_decision_policies(
        &self,
        request: &Request,
        options: &EvalOptions,
    ) -> Decision {
        let started = Instant::now();
        let name = effective_name(request);
        let attrs = request_attributes(request, &name);
        let evaluations = self
            .matching(&attrs, options.stage)
            .into_iter()
            .map(|p| {
                PolicyEvaluation::error(
                    p,
                    "evaluation did not finish before the request deadline".to_string(),
                )
            })
            .collect();
        Decision::combine(request, options, evaluations, None, started)
    }
}

/// `authorizer` and `authorizer.requestResource` for this request: its user,
/// and the resource the client asked for (kube-apiserver's admission
/// attributes, which `requestResource`/`requestSubResource` carry).
fn authz_bindings(request: &Request, cluster: &dyn ClusterState) -> (Value, Value) {
    let u = &request.user_info;
    let user = super::authz::AuthzUser {
        name: u.username.clone().unwrap_or_default(),
        uid: u.uid.clone().unwrap_or_default(),
        groups: u.groups.clone().unwrap_or_default(),
        extra: u.extra.clone().unwrap_or_default().into_iter().collect(),
    };
    let resource = request
        .request_resource
        .as_ref()
        .unwrap_or(&request.resource);
    let sub_resource = request
        .request_sub_resource
        .as_deref()
        .or(request.sub_resource.as_deref())
        .unwrap_or("");
    super::authz::bindings(
        user,
        cluster.authorizer(),
        (
            &resource.group,
            &resource.resource,
            sub_resource,
            request.namespace_str(),
            &request.name,
        ),
    )
}

/// `requestResource`/`requestSubResource`, when kube-apiserver sent them.
/// The request's attributes for matching (`name`: [`effective_name`]).
pub(super) fn request_attributes<'a>(request: &'a Request, name: &'a str) -> Attributes<'a> {
    Attributes {
        operation: request.operation_str(),
        group: &request.resource.group,
        version: &request.resource.version,
        resource: &request.resource.resource,
        sub_resource: request.sub_resource.as_deref().unwrap_or(""),
        namespace: request.namespace_str(),
        name,
        requested: requested_resource(request),
    }
}

pub(super) fn requested_resource(request: &Request) -> Option<RequestedResource<'_>> {
    request
        .request_resource
        .as_ref()
        .map(|r| RequestedResource {
            group: &r.group,
            version: &r.version,
            resource: &r.resource,
            sub_resource: request.request_sub_resource.as_deref().unwrap_or(""),
        })
}

/// DeleteCollection reaches admission once per item with an empty name.
pub fn effective_name(request: &Request) -> String {
    if !request.name.is_empty() {
        return request.name.clone();
    }
    request
        .old_object
        .as_ref()
        .or(request.object.as_ref())
        .and_then(|raw| {
            #[derive(serde::Deserialize)]
            struct Meta {
                metadata: Option<NameOnly>,
            }
            #[derive(serde::Deserialize)]
            struct NameOnly {
                name: Option<String>,
            }
            serde_json::from_str::<Meta>(raw.get()).ok()?.metadata?.name
        })
        .unwrap_or_default()
}

fn lazy_object(
    raw: Option<&serde_json::value::RawValue>,
    field: &str,
) -> Result<LazyValue, InputError> {
    let Some(raw) = raw else {
        return Ok(LazyValue::null());
    };
    let text = raw.get();
    if text == "null" {
        return Ok(LazyValue::null());
    }
    if !text.trim_start().starts_with('{') {
        return Err(InputError(format!("request.{field} must be a JSON object")));
    }
    Ok(LazyValue::from_text(Arc::from(text)))
}

/// The label kube-apiserver sets on every Namespace (1.22+), always equal to its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn labels_of(value: &LazyValue) -> Option<BTreeMap<String, String>> {
    if value.is_null() {
        return None;
    }
    let mut out = BTreeMap::new();
    if let Some(Value::Map(labels)) = value
        .path(&["metadata".to_string(), "labels".to_string()])
        .and_then(|l| l.value().ok())
    {
        for (k, v) in labels.map.iter() {
            if let (Key::String(k), Value::String(v)) = (k, v) {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    Some(out)
}

fn selectors_match(
    policy: &Policy,
    attrs: &Attributes,
    bound: &Bound,
) -> Result<bool, LookupError> {
    for selector in policy.matcher.object_selectors() {
        let object = labels_of(bound.object());
        let old = labels_of(bound.old_object());
        let any = object.iter().chain(old.iter()).any(|l| selector.matches(l));
        if !any {
            return Ok(false);
        }
    }
    for selector in policy.matcher.namespace_selectors() {
        let labels = if attrs.is_namespace_object() {
            labels_of(if bound.object().is_null() {
                bound.old_object()
            } else {
                bound.object()
            })
            .unwrap_or_default()
        } else if attrs.is_cluster_scoped() {
            // Other cluster-scoped objects are never filtered out by a namespace selector.
            continue;
        } else {
            match &bound.namespace {
                Some(Ok(Some(ns))) => ns.labels.clone(),
                // kube-apiserver gives every namespace the immutable label
                // kubernetes.io/metadata.name=<name>: a selector on that label
                // alone is decided without the namespace's other labels.
                _ if selector.reads_only(NAMESPACE_NAME_LABEL) => BTreeMap::from([(
                    NAMESPACE_NAME_LABEL.to_string(),
                    attrs.namespace.to_string(),
                )]),
                Some(Ok(None)) => {
                    return Err(LookupError::UnknownNamespace(attrs.namespace.to_string()));
                }
                Some(Err(e)) => return Err(e.clone()),
                None => {
                    return Err(LookupError::Unavailable(
                        "namespace labels were not loaded".into(),
                    ));
                }
            }
        };
        if !selector.matches(&labels) {
            return Ok(false);
        }
    }
    Ok(true)
}

struct Evaluator<'p, 'c> {
    policy: &'p Policy,
    scope: Context<'c>,
    /// Where messageExpressions and audit annotations run when the policy
    /// uses `authorizer` (which kube-apiserver does not bind there); other
    /// policies run them in `scope`, reusing its variables.
    without_authorizer: Option<Context<'c>>,
    /// Evaluating in `without_authorizer`.
    in_messages: bool,
    /// Cost units (Kubernetes') the current phase may still spend: matchConditions,
    /// validations and their messages, audit annotations (see `runtime_cost.rs`).
    budget: u64,
    /// Per lookup: its objects (null until fetched).
    lookups: Vec<Value>,
    /// Per lookup: read from the cluster state (only when an expression needs it).
    fetched: Vec<bool>,
    /// The first lookup that could not be read; every expression needing it
    /// fails with this one message instead of one message per expression.
    unavailable: Option<String>,
    /// The expression evaluated last failed because a lookup could not be
    /// read (its error is then [`Self::unavailable`], and the decision says
    /// the cluster state is unknown).
    failed_on_lookup: bool,
    cluster: &'c dyn ClusterState,
    deadline: Option<Instant>,
    /// Every expression's run, when [`EvalOptions::trace`] asks for it.
    trace: Option<Vec<ExpressionTrace>>,
    /// Where the next expression sits (phase, index, name), for the trace.
    at: (TracePhase, usize, Option<&'p str>),
    /// The cost the last expression spent, for the trace.
    last_cost: u64,
}

fn evaluate_policy(
    policy: &Policy,
    shared: &Context,
    request: &Request,
    cluster: &dyn ClusterState,
    options: &EvalOptions,
    params: Value,
) -> PolicyEvaluation {
    // kube-apiserver evaluates validations (and matchConditions) with the
    // authorizer, and messageExpressions and audit annotations without it, each
    // with variables of their own: for a policy that uses the authorizer, the
    // same expressions in a second scope.
    let make_scope = |with_authorizer: bool| {
        let mut scope = shared.new_inner_scope();
        if policy.param_kind.is_some() {
            scope.add_variable_from_value("params", params.clone());
        }
        if !policy.variables.is_empty() {
            let table = VariableTable::new(policy.variables.clone(), options.deadline);
            scope.add_variable_from_value(TABLE_BINDING, Value::Opaque(Arc::new(table)));
        }
        if !with_authorizer {
            let (authorizer, request_resource) = super::authz::absent_bindings();
            scope.add_variable_from_value(super::authz::AUTHORIZER_BINDING, authorizer);
            scope.add_variable_from_value(super::authz::REQUEST_RESOURCE_BINDING, request_resource);
        }
        scope
    };
    let scope = make_scope(true);
    let without_authorizer = policy.reads.authorizer.then(|| make_scope(false));
    let mut ev = Evaluator {
        policy,
        scope,
        without_authorizer,
        in_messages: false,
        budget: runtime_cost::MATCH_CONDITIONS_BUDGET,
        lookups: vec![Value::Null; policy.lookups.len()],
        fetched: vec![false; policy.lookups.len()],
        unavailable: None,
        failed_on_lookup: false,
        cluster,
        deadline: options.deadline,
        trace: options.trace.then(Vec::new),
        at: (TracePhase::Validation, 0, None),
        last_cost: 0,
    };
    let mut result = ev.run(request, options);
    if let Some(trace) = ev.trace.take() {
        result.trace = trace;
    }
    result
}

impl Evaluator<'_, '_> {
    fn run(&mut self, request: &Request, options: &EvalOptions) -> PolicyEvaluation {
        let policy = self.policy;
        let mut result = PolicyEvaluation::new(policy);

        // matchConditions: any false skips; otherwise an error goes to failurePolicy.
        let mut condition_error = None;
        self.budget = runtime_cost::MATCH_CONDITIONS_BUDGET;
        for (index, condition) in policy.match_conditions.iter().enumerate() {
            self.at = (TracePhase::MatchCondition, index, Some(&condition.name));
            match self.eval_bool(&condition.expression) {
                Ok(true) => {}
                Ok(false) => {
                    result.outcome = PolicyOutcome::Skipped;
                    return result;
                }
                Err(e) => {
                    condition_error
                        .get_or_insert(format!("matchConditions '{}': {e}", condition.name));
                }
            }
        }
        if let Some(e) = condition_error {
            return PolicyEvaluation::error(policy, e);
        }

        self.budget = runtime_cost::RUNTIME_BUDGET;
        result.exempted_by = policy
            .exemptions
            .iter()
            .enumerate()
            .find(|(index, ex)| {
                self.at = (TracePhase::Exemption, *index, Some(&ex.name));
                matches!(self.eval_bool(&ex.expression), Ok(true))
            })
            .map(|(_, ex)| ex.name.clone());

        match options.stage {
            Stage::Validate => self.validate(&mut result, true),
            Stage::Mutate => {
                // The validations only: audit annotations stay with `/validate`,
                // which kube-apiserver calls when nothing refused earlier.
                if policy.deny_before_object_validation {
                    self.validate(&mut result, false);
                }
                self.mutate(&mut result, request);
            }
        }
        result.finish();
        result
    }

    fn validate(&mut self, result: &mut PolicyEvaluation, with_audit_annotations: bool) {
        let policy = self.policy;
        self.budget = runtime_cost::RUNTIME_BUDGET;
        for (index, validation) in policy.validations.iter().enumerate() {
            self.at = (TracePhase::Validation, index, None);
            match self.eval(&validation.expression) {
                // kube-apiserver drops every decision of the policy for this one.
                Err(e) if e == runtime_cost::OUT_OF_BUDGET => {
                    result.failures.clear();
                    result.ignored_errors.clear();
                    self.error(result, None, e);
                    return;
                }
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => {
                    self.at = (TracePhase::MessageExpression, index, None);
                    let message = self.message(validation);
                    result.failures.push(ValidationFailure {
                        index: Some(index),
                        message,
                        reason: validation.reason,
                        error: false,
                        denies_regardless: false,
                    });
                }
                Ok(other) => self.error(
                    result,
                    Some(index),
                    format!(
                        "expression '{}' must return a bool, got {:?}",
                        validation.expression.source,
                        other.type_of()
                    ),
                ),
                Err(e) => self.error(
                    result,
                    Some(index),
                    format!(
                        "expression '{}' resulted in error: {e}",
                        validation.expression.source
                    ),
                ),
            }
        }
        let annotations = if with_audit_annotations {
            &policy.audit_annotations[..]
        } else {
            &[]
        };
        self.budget = runtime_cost::RUNTIME_BUDGET;
        for (index, annotation) in annotations.iter().enumerate() {
            self.at = (TracePhase::AuditAnnotation, index, Some(&annotation.name));
            let vap = policy.kind == super::PolicyKind::ValidatingAdmissionPolicy;
            self.in_messages = true;
            let value = self.eval(&annotation.expression);
            self.in_messages = false;
            match value {
                // kube-apiserver trims the value; blank means "no annotation".
                Ok(Value::String(s)) if !s.trim().is_empty() => result
                    .audit_annotations
                    .push((annotation.name.clone(), truncate_at_char_boundary(s.trim(), 10 * 1024))),
                Ok(Value::String(_)) | Ok(Value::Null) => {}
                // kube-apiserver denies on a value of the wrong type whatever the
                // failurePolicy and the binding's actions.
                Ok(other) if vap => result.failures.push(ValidationFailure {
                    index: None,
                    message: format!(
                        "valueExpression '{}' resulted in unsupported return type: {:?}. Return type must be either string or null.",
                        annotation.expression.source,
                        other.type_of()
                    ),
                    reason: super::decision::error_reason(policy.kind),
                    error: true,
                    denies_regardless: true,
                }),
                Ok(other) => self.error(
                    result,
                    None,
                    format!(
                        "auditAnnotations '{}' must return a string or null, got {:?}",
                        annotation.name,
                        other.type_of()
                    ),
                ),
                Err(e) => {
                    let before = result.failures.len();
                    self.error(
                        result,
                        None,
                        format!(
                            "auditAnnotations '{}' resulted in error: {e}",
                            annotation.name
                        ),
                    );
                    // Under Fail, kube-apiserver denies on it whatever the actions.
                    if vap && let Some(f) = result.failures.get_mut(before) {
                        f.denies_regardless = true;
                    }
                }
            }
        }
    }

    fn mutate(&mut self, result: &mut PolicyEvaluation, request: &Request) {
        if request.object.is_none() {
            // Nothing to patch on DELETE or CONNECT; kube-apiserver rejects a patch there.
            return;
        }
        let policy = self.policy;
        self.budget = runtime_cost::RUNTIME_BUDGET;
        let mut annotations = Vec::new();
        for (index, (key, expression)) in policy.annotate.iter().enumerate() {
            self.at = (TracePhase::Annotate, index, Some(key));
            let value = match expression {
                None => Ok(None),
                Some(e) => match self.eval(e) {
                    Ok(Value::String(s)) => Ok(Some(s.to_string())),
                    Ok(Value::Null) => Ok(None),
                    Ok(other) => Err(format!(
                        "annotate '{key}' must return a string or null, got {:?}",
                        other.type_of()
                    )),
                    Err(e) => Err(format!("annotate '{key}' resulted in error: {e}")),
                },
            };
            match value {
                Ok(v) => annotations.push((key.clone(), v)),
                Err(e) => self.error(result, None, e),
            }
        }
        result.annotations = annotations;
        for (index, mutation) in policy.mutations.iter().enumerate() {
            self.at = (TracePhase::Mutation, index, None);
            match self
                .eval(mutation)
                .map_err(|e| e.to_string())
                .and_then(|v| mutate::operations_from(&v))
            {
                Ok(ops) => result.patch_operations.extend(ops),
                Err(e) => self.error(result, Some(index), format!("mutations[{index}]: {e}")),
            }
        }
    }

    /// An evaluation error: enforced like a failure under Fail, ignored under Ignore.
    fn error(&mut self, result: &mut PolicyEvaluation, index: Option<usize>, message: String) {
        let message = match &self.unavailable {
            Some(u) if std::mem::take(&mut self.failed_on_lookup) => {
                result.cluster_state_unknown = true;
                u.clone()
            }
            _ => message,
        };
        match self.policy.failure_policy {
            FailurePolicy::Fail => result.failures.push(ValidationFailure {
                index,
                message,
                reason: super::decision::error_reason(self.policy.kind),
                error: true,
                denies_regardless: false,
            }),
            FailurePolicy::Ignore => result.ignored_errors.push(message),
        }
    }

    fn message(&mut self, validation: &super::CompiledValidation) -> String {
        if let Some(expression) = &validation.message_expression {
            // VAP falls back to `message` when messageExpression errors or yields an unusable string.
            // kube-apiserver trims the result before it checks it.
            self.in_messages = true;
            let value = self.eval(expression);
            self.in_messages = false;
            if let Ok(Value::String(s)) = value {
                let s = s.trim();
                if !s.is_empty() && !s.contains('\n') && s.len() <= MAX_MESSAGE_BYTES {
                    return s.to_string();
                }
            }
        }
        match &validation.message {
            Some(m) if !m.trim().is_empty() => m.trim().to_string(),
            _ => format!("failed expression: {}", validation.expression.source.trim()),
        }
    }

    fn eval_bool(&mut self, expression: &CompiledExpression) -> Result<bool, String> {
        match self.eval(expression)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!("must return a bool, got {:?}", other.type_of())),
        }
    }

    /// [`Self::evaluate`], recorded in the trace when there is one.
    #[inline]
    fn eval(&mut self, expression: &CompiledExpression) -> Result<Value, String> {
        if self.trace.is_some() {
            return self.eval_traced(expression);
        }
        self.evaluate(expression)
    }

    /// [`Self::eval`] with the trace on (the playground): kept out of line so
    /// that the untraced path is the evaluation alone.
    #[cold]
    #[inline(never)]
    fn eval_traced(&mut self, expression: &CompiledExpression) -> Result<Value, String> {
        let started = Instant::now();
        self.last_cost = 0;
        let result = self.evaluate(expression);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (phase, index, name) = self.at;
        if let Some(trace) = &mut self.trace {
            trace.push(ExpressionTrace {
                phase,
                index,
                name: name.map(str::to_string),
                expression: expression.source.clone(),
                value: result.as_ref().ok().map(display_value),
                error: result.as_ref().err().cloned(),
                cost: self.last_cost,
                micros,
            });
        }
        result
    }

    fn evaluate(&mut self, expression: &CompiledExpression) -> Result<Value, String> {
        self.failed_on_lookup = false;
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return Err("the request deadline passed before this expression ran".to_string());
        }
        super::cancel::check()?;
        // Lookups first: a bound over a lookup not read yet would see an empty list.
        self.fetch_lookups(expression)?;
        // The `cel` crate still has panicking paths for inputs it does not expect;
        // a panic must end as an evaluation error for failurePolicy, not a dead worker.
        let scope = match &self.without_authorizer {
            Some(restricted) if self.in_messages => restricted,
            _ => &self.scope,
        };
        let measured = runtime_cost::measure(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Value::resolve(&expression.ast, scope)
            }))
        });
        // As kube-apiserver: the variables this expression evaluated, then
        // the expression itself, against what the phase has left.
        let spent = measured
            .cost
            .saturating_add(runtime_cost::take_composition_cost());
        self.last_cost = spent;
        if spent > self.budget {
            self.budget = 0;
            return Err(runtime_cost::OUT_OF_BUDGET.to_string());
        }
        self.budget -= spent;
        if measured.exceeded {
            return Err(runtime_cost::LIMIT_EXCEEDED.to_string());
        }
        match measured.value {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the CEL interpreter failed on this input".to_string()),
        }
    }

    /// Reads from cluster state the lookups this expression (or a variable it
    /// reads) needs, once per policy evaluation. Unavailable state is an error
    /// of the expression, so failurePolicy decides — and expressions that do
    /// not read it (matchConditions, say) are unaffected.
    fn fetch_lookups(&mut self, expression: &CompiledExpression) -> Result<(), String> {
        let mut needed: Vec<usize> = expression.reads.lookups.clone();
        let mut pending: Vec<usize> = expression.reads.variables.clone();
        let mut seen = vec![false; self.policy.variables.len()];
        while let Some(v) = pending.pop() {
            if std::mem::replace(&mut seen[v], true) {
                continue;
            }
            if let Some(named) = self.policy.variables.get(v) {
                needed.extend(&named.expression.reads.lookups);
                pending.extend(&named.expression.reads.variables);
            }
        }
        let mut changed = false;
        for index in needed {
            if self.fetched.get(index).copied().unwrap_or(true) {
                continue;
            }
            let spec = &self.policy.lookups[index];
            let value =
                match self
                    .cluster
                    .list(&spec.api_version, &spec.kind, spec.namespace.as_deref())
                {
                    Ok(v) => v,
                    Err(e) => {
                        let message =
                            format!("cluster state unavailable: lookups.{}: {e}", spec.name);
                        self.unavailable.get_or_insert(message.clone());
                        self.failed_on_lookup = true;
                        return Err(message);
                    }
                };
            self.lookups[index] = value;
            self.fetched[index] = true;
            changed = true;
        }
        if changed {
            let map: HashMap<Key, Value> = self
                .policy
                .lookups
                .iter()
                .zip(&self.lookups)
                .zip(&self.fetched)
                .filter(|(_, fetched)| **fetched)
                .map(|((spec, value), _)| (Key::String(Arc::new(spec.name.clone())), value.clone()))
                .collect();
            let lookups = Value::Map(Map { map: Arc::new(map) });
            if let Some(restricted) = &mut self.without_authorizer {
                restricted.add_variable_from_value("lookups", lookups.clone());
            }
            self.scope.add_variable_from_value("lookups", lookups);
        }
        Ok(())
    }
}

fn truncate_at_char_boundary(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
