//! Evaluating the MutatingAdmissionPolicy units on `/mutate`, as kube-apiserver's
//! mutating policy dispatcher (`policy/mutating/dispatcher.go`) and its admission
//! chain's reinvocation (`admission/reinvocation.go`) do, v1.37.2.

use super::cel::{PatchStruct, check_type_names, to_json};
use super::jsonpatch::{self, Operation, PatchError};
use super::{MutatingPolicy, PatchType};
use crate::policy::ClusterState;
use crate::policy::cel_env;
use crate::policy::compile::CompiledExpression;
use crate::policy::decision::{Decision, DenyStatus, PolicyOutcome, PolicyVerdict, Verdict};
use crate::policy::evaluate::request_attributes;
use crate::policy::lazy::LazyValue;
use crate::policy::matching::{Attributes, Selector};
use crate::policy::model::FailurePolicy;
use crate::policy::paths::{DATA_BINDING, DataRoots};
use crate::policy::runtime_cost;
use crate::policy::values::json_to_cel;
use crate::policy::variables::{TABLE_BINDING, VariableTable};
use crate::policy::{EvalOptions, InputError, Mode, PolicySet, Request, Stage, effective_name};
use kube_cel::cel::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// The label kube-apiserver sets on every Namespace, equal to its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl PolicySet {
    /// Evaluates every matching policy and combines their results; on `/mutate`
    /// the MutatingAdmissionPolicies then apply to the object as the
    /// GatePolicies' patch leaves it, and the response's patch covers both.
    ///
    /// `Err` only for a request kube-apiserver would never send.
    pub fn evaluate(
        &self,
        request: &Request,
        cluster: &dyn ClusterState,
        options: &EvalOptions,
    ) -> Result<Decision, InputError> {
        let decision = self.evaluate_policies(request, cluster, options)?;
        if options.stage != Stage::Mutate || self.mutating.is_empty() || !decision.allowed {
            return Ok(decision);
        }
        self.apply_mutating_policies(request, cluster, options, decision)
    }

    /// The decision for a request whose evaluation did not finish before the
    /// caller's deadline: each matching policy's failurePolicy decides, as if
    /// every one of them had failed to evaluate — the MutatingAdmissionPolicies
    /// too, on `/mutate`.
    pub fn deadline_decision(&self, request: &Request, options: &EvalOptions) -> Decision {
        let mut decision = self.deadline_decision_policies(request, options);
        if options.stage != Stage::Mutate
            || !decision.allowed
            || !matches!(request.operation_str(), "CREATE" | "UPDATE" | "CONNECT")
        {
            return decision;
        }
        let name = effective_name(request);
        let attrs = request_attributes(request, &name);
        let failing = self
            .mutating
            .iter()
            .find(|u| u.failure_policy == FailurePolicy::Fail && u.matcher.matches_rules(&attrs));
        if let Some(unit) = failing
            && options.mode == Mode::Enforce
        {
            decision.allowed = false;
            decision.patch = None;
            decision.verdict = Verdict::Denied;
            decision.status = Some(DenyStatus {
                code: 403,
                reason: "Invalid".to_string(),
                message: format!(
                    "policy '{}' with binding '{}' denied request: evaluation did not finish before the request deadline",
                    unit.name, unit.binding
                ),
            });
        }
        decision
    }

    /// Only the MutatingAdmissionPolicies (as `evaluate` on `/mutate` applies
    /// them after the GatePolicies): for `review`, which shows what they change
    /// before it validates. `options.stage` is ignored.
    pub fn apply_mutating_admission_policies(
        &self,
        request: &Request,
        cluster: &dyn ClusterState,
        options: &EvalOptions,
    ) -> Result<Decision, InputError> {
        let options = EvalOptions {
            stage: Stage::Mutate,
            ..*options
        };
        self.apply_mutating_policies(
            request,
            cluster,
            &options,
            Decision::allow(request, Instant::now()),
        )
    }

    fn apply_mutating_policies(
        &self,
        request: &Request,
        cluster: &dyn ClusterState,
        options: &EvalOptions,
        mut decision: Decision,
    ) -> Result<Decision, InputError> {
        // kube-apiserver's plugin handles CREATE, UPDATE and CONNECT only.
        if !matches!(request.operation_str(), "CREATE" | "UPDATE" | "CONNECT") {
            return Ok(decision);
        }
        let Some(raw) = request.object.as_ref() else {
            return Ok(decision);
        };
        let original: serde_json::Value = serde_json::from_str(raw.get())
            .map_err(|e| InputError(format!("request.object: {e}")))?;
        if !original.is_object() {
            return Ok(decision);
        }
        let name = effective_name(request);
        let attrs = request_attributes(request, &name);
        let old_object: Option<serde_json::Value> = match request.old_object.as_ref() {
            Some(raw) => Some(
                serde_json::from_str(raw.get())
                    .map_err(|e| InputError(format!("request.oldObject: {e}")))?,
            ),
            None => None,
        };
        let candidates: Vec<&MutatingPolicy> = self
            .mutating
            .iter()
            .filter(|u| u.matcher.matches_rules(&attrs))
            .collect();
        if candidates.is_empty() {
            return Ok(decision);
        }
        let started = Instant::now();

        // The namespace, when a selector or `namespaceObject` needs it.
        let wants_namespace = candidates
            .iter()
            .any(|u| u.reads_namespace_object || u.matcher.namespace_selectors().next().is_some());
        let namespace = if wants_namespace && !attrs.is_cluster_scoped() {
            Some(cluster.namespace(attrs.namespace))
        } else {
            None
        };

        let mut current = original.clone();
        if let Some(patch) = &decision.patch
            && json_patch::patch(&mut current, patch).is_err()
        {
            // The GatePolicies' own patch applies to the object it was made from.
            return Ok(decision);
        }

        let mut run = Run {
            request,
            request_cel: request.to_cel(),
            old_object: old_object.as_ref().map(json_to_cel).unwrap_or(Value::Null),
            namespace_object: match &namespace {
                Some(Ok(Some(ns))) => ns.object.clone(),
                _ => Value::Null,
            },
            deadline: options.deadline,
            errors: Vec::new(),
            verdicts: Vec::new(),
        };
        // Selectors decide at the start of each call of the plugin, on the
        // object as that call receives it (kube-apiserver's dispatcher).
        let select = |run: &mut Run, current: &serde_json::Value| -> Vec<bool> {
            candidates
                .iter()
                .map(|unit| {
                    match selectors_match(unit, &attrs, current, old_object.as_ref(), &namespace) {
                        Ok(selected) => selected,
                        Err(e) => {
                            run.error(unit, format!("failed to configure binding: {e}"));
                            false
                        }
                    }
                })
                .collect()
        };

        // The first pass, then (as the admission chain does) one reinvocation
        // when anything was applied.
        let mut reinvoke: HashSet<usize> = HashSet::new();
        let mut previously_invoked: Vec<usize> = Vec::new();
        let selected = select(&mut run, &current);
        let mut dirty = run.pass(
            &candidates,
            &selected,
            &mut current,
            None,
            &mut reinvoke,
            &mut previously_invoked,
        );
        if dirty {
            reinvoke.extend(previously_invoked.drain(..));
        }
        if dirty && !run.denies(options.mode) {
            let selected = select(&mut run, &current);
            dirty = run.pass(
                &candidates,
                &selected,
                &mut current,
                Some(&reinvoke.clone()),
                &mut reinvoke,
                &mut previously_invoked,
            );
        }
        let _ = dirty;
        let deny = run.denies(options.mode);
        let first_error = run.errors.iter().find(|(fp, _)| *fp == FailurePolicy::Fail);
        if let Some((_, message)) = first_error {
            match options.mode {
                Mode::Enforce => {
                    decision.allowed = false;
                    decision.patch = None;
                    decision.verdict = Verdict::Denied;
                    // kube-apiserver: a Forbidden status whose reason is the
                    // policy error's (Invalid) and whose message is the first error.
                    decision.status = Some(DenyStatus {
                        code: 403,
                        reason: "Invalid".to_string(),
                        message: message.clone(),
                    });
                }
                Mode::DryRun => {
                    decision.warnings.push(format!("[dry-run] {message}"));
                    decision.verdict = Verdict::WouldDeny;
                }
            }
        }
        if !deny || options.mode == Mode::DryRun {
            let patch = json_patch::diff(&original, &current);
            decision.patch = (!patch.0.is_empty()).then_some(patch);
        }
        // A reinvoked unit reports once: its first outcome, or its error.
        let mut seen: HashSet<(String, &'static str)> = HashSet::new();
        for v in run.verdicts {
            if seen.insert((v.policy.clone(), v.outcome.as_str())) {
                decision.policies.push(v);
            }
        }
        decision.elapsed += started.elapsed();
        Ok(decision)
    }
}

struct Run<'a> {
    request: &'a Request,
    request_cel: Value,
    old_object: Value,
    namespace_object: Value,
    deadline: Option<Instant>,
    /// Each unit error, with the failurePolicy that decides it, worded as kube-apiserver words it.
    errors: Vec<(FailurePolicy, String)>,
    verdicts: Vec<PolicyVerdict>,
}

impl Run<'_> {
    fn denies(&self, _mode: Mode) -> bool {
        self.errors.iter().any(|(fp, _)| *fp == FailurePolicy::Fail)
    }

    fn error(&mut self, unit: &MutatingPolicy, message: String) {
        let text = format!(
            "policy '{}' with binding '{}' denied request: {message}",
            unit.name, unit.binding
        );
        self.errors.push((unit.failure_policy, text.clone()));
        let fail = unit.failure_policy == FailurePolicy::Fail;
        self.verdicts.push(PolicyVerdict {
            policy: unit.name.clone(),
            outcome: PolicyOutcome::Errored,
            messages: if fail { vec![text.clone()] } else { Vec::new() },
            exempted_by: None,
            errors: if fail { Vec::new() } else { vec![text] },
            denies: fail,
            undecided: false,
            trace: Vec::new(),
        });
    }

    /// One call of kube-apiserver's dispatcher: every selected unit in order
    /// (on a reinvocation only those in `only`). Returns whether any mutation
    /// applied (kube-apiserver's `Dirty`), which makes the chain reinvoke.
    fn pass(
        &mut self,
        units: &[&MutatingPolicy],
        selected: &[bool],
        current: &mut serde_json::Value,
        only: Option<&HashSet<usize>>,
        reinvoke: &mut HashSet<usize>,
        previously_invoked: &mut Vec<usize>,
    ) -> bool {
        let mut dirty = false;
        for (index, unit) in units.iter().enumerate() {
            if !selected.get(index).copied().unwrap_or(false) {
                continue;
            }
            match self.conditions(unit, current) {
                Ok(true) => {}
                Ok(false) => {
                    self.verdict(unit, PolicyOutcome::Skipped);
                    continue;
                }
                Err(e) => {
                    self.error(unit, e);
                    continue;
                }
            }
            if only.is_some_and(|set| !set.contains(&index)) {
                continue;
            }
            let before = current.clone();
            let mut failed = false;
            for (i, mutation) in unit.mutations.iter().enumerate() {
                match self.mutate(unit, mutation, current) {
                    Ok(next) => {
                        *current = next;
                        dirty = true;
                    }
                    Err(e) => {
                        failed = true;
                        self.error(unit, format!("mutations[{i}]: {e}"));
                    }
                }
            }
            if !failed {
                self.verdict(unit, PolicyOutcome::Passed);
            }
            if *current != before {
                reinvoke.extend(previously_invoked.drain(..));
            }
            if unit.reinvoke_if_needed {
                previously_invoked.push(index);
            }
        }
        dirty
    }

    fn verdict(&mut self, unit: &MutatingPolicy, outcome: PolicyOutcome) {
        self.verdicts.push(PolicyVerdict {
            policy: unit.name.clone(),
            outcome,
            messages: Vec::new(),
            exempted_by: None,
            errors: Vec::new(),
            denies: false,
            undecided: false,
            trace: Vec::new(),
        });
    }

    /// matchConditions: any false skips; otherwise the first error decides
    /// (kube-apiserver's matcher evaluates all of them).
    fn conditions(
        &self,
        unit: &MutatingPolicy,
        current: &serde_json::Value,
    ) -> Result<bool, String> {
        if unit.match_conditions.is_empty() {
            return Ok(true);
        }
        let scope_data = self.data(current);
        let mut first_error = None;
        for condition in &unit.match_conditions {
            match self.eval(unit, &condition.expression, &scope_data) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => return Ok(false),
                Ok(other) => {
                    first_error.get_or_insert(format!(
                        "matchCondition '{}' must return a bool, got {:?}",
                        condition.name,
                        other.type_of()
                    ));
                }
                Err(e) => {
                    first_error.get_or_insert(format!(
                        "failed to evaluate matchCondition '{}': {e}",
                        condition.name
                    ));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    fn data(&self, current: &serde_json::Value) -> Arc<DataRoots> {
        Arc::new(DataRoots {
            roots: [
                LazyValue::from_value(json_to_cel(current)),
                lazy(&self.old_object),
                lazy(&self.namespace_object),
            ],
        })
    }

    /// One mutation on `current`: the new object, or why there is none.
    fn mutate(
        &self,
        unit: &MutatingPolicy,
        mutation: &super::Mutation,
        current: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let data = self.data(current);
        let value = self.eval(unit, &mutation.expression, &data)?;
        match mutation.patch_type {
            PatchType::JsonPatch => apply_json_patch(&value, current),
            PatchType::ApplyConfiguration => super::apply::apply_configuration(&value, current),
        }
    }

    fn eval(
        &self,
        unit: &MutatingPolicy,
        expression: &CompiledExpression,
        data: &Arc<DataRoots>,
    ) -> Result<Value, String> {
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return Err("the request deadline passed before this expression ran".to_string());
        }
        let mut scope = cel_env::root().new_inner_scope();
        scope.add_variable_from_value(DATA_BINDING, Value::Opaque(data.clone()));
        scope.add_variable_from_value("request", self.request_cel.clone());
        if !unit.variables.is_empty() {
            let table = VariableTable::new(unit.variables.clone(), self.deadline);
            scope.add_variable_from_value(TABLE_BINDING, Value::Opaque(Arc::new(table)));
        }
        let _ = self.request;
        // The `cel` crate still has panicking paths: a panic is an evaluation error.
        let measured = runtime_cost::measure(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Value::resolve(&expression.ast, &scope)
            }))
        });
        // Variables count against the per-expression limit of their own only.
        runtime_cost::take_composition_cost();
        if measured.exceeded {
            return Err(runtime_cost::LIMIT_EXCEEDED.to_string());
        }
        match measured.value {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the CEL interpreter failed on this input".to_string()),
        }
    }
}

fn lazy(value: &Value) -> LazyValue {
    match value {
        Value::Null => LazyValue::null(),
        v => LazyValue::from_value(v.clone()),
    }
}

/// A `list(JSONPatch)` result applied to `current`, all or nothing. A failed
/// `test` operation leaves the object as it is, without error, as in kube-apiserver.
fn apply_json_patch(
    value: &Value,
    current: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let Value::List(items) = value else {
        return Err(format!(
            "type mismatch: JSONPatchType.expression should evaluate to array, got {:?}",
            value.type_of()
        ));
    };
    let mut operations = Vec::with_capacity(items.len());
    for item in items.iter() {
        let patch = match item {
            Value::Opaque(o) => o.downcast_ref::<PatchStruct>(),
            _ => None,
        };
        let Some(patch) = patch.filter(|p| p.type_name == "JSONPatch") else {
            return Err(
                "type mismatch: JSONPatchType.expression should evaluate to array of JSONPatch"
                    .to_string(),
            );
        };
        let text = |field: &str| -> Result<String, String> {
            match patch.field(field) {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.to_string()),
                Some(other) => Err(format!(
                    "type mismatch: JSONPatch.{field} must be a string, got {:?}",
                    other.type_of()
                )),
            }
        };
        let from = text("from")?;
        let mut value = None;
        if let Some(v) = patch.field("value") {
            if let Value::Opaque(o) = v
                && let Some(s) = o.downcast_ref::<PatchStruct>()
            {
                let mut errors = Vec::new();
                check_type_names(v, &mut vec![s.type_name.clone()], &mut errors);
                if !errors.is_empty() {
                    return Err(format!("type mismatch: {}", errors.join("\n")));
                }
            }
            value = Some(to_json(v).map_err(|e| {
                format!("JSONPath valueExpression evaluated to a type that could not marshal to JSON: {e}")
            })?);
        }
        operations.push(Operation {
            op: text("op")?,
            path: text("path")?,
            from: (!from.is_empty()).then_some(from),
            value,
        });
    }
    match jsonpatch::apply(current, &operations) {
        Ok(next) => Ok(next),
        // kube-apiserver: "If a json patch fails a test operation, the patch must not be applied".
        Err(PatchError::TestFailed(_)) => Ok(current.clone()),
        Err(PatchError::Invalid(e)) => Err(format!("JSON Patch: {e}")),
    }
}

fn labels_of(object: Option<&serde_json::Value>) -> Option<BTreeMap<String, String>> {
    let object = object.filter(|o| !o.is_null())?;
    let mut out = BTreeMap::new();
    if let Some(labels) = object
        .pointer("/metadata/labels")
        .and_then(|l| l.as_object())
    {
        for (k, v) in labels {
            if let Some(v) = v.as_str() {
                out.insert(k.clone(), v.to_string());
            }
        }
    }
    Some(out)
}

/// Object and namespace selectors, as for the validating policies.
fn selectors_match(
    unit: &MutatingPolicy,
    attrs: &Attributes,
    object: &serde_json::Value,
    old_object: Option<&serde_json::Value>,
    namespace: &Option<Result<Option<crate::policy::NamespaceInfo>, crate::policy::LookupError>>,
) -> Result<bool, String> {
    let matches = |s: &Selector, labels: &Option<BTreeMap<String, String>>| {
        labels.as_ref().is_some_and(|l| s.matches(l))
    };
    for selector in unit.matcher.object_selectors() {
        let new = labels_of(Some(object));
        let old = labels_of(old_object);
        if !matches(selector, &new) && !matches(selector, &old) {
            return Ok(false);
        }
    }
    for selector in unit.matcher.namespace_selectors() {
        let labels = if attrs.is_namespace_object() {
            labels_of(Some(object)).unwrap_or_default()
        } else if attrs.is_cluster_scoped() {
            continue;
        } else {
            match namespace {
                Some(Ok(Some(ns))) => ns.labels.clone(),
                _ if selector.reads_only(NAMESPACE_NAME_LABEL) => BTreeMap::from([(
                    NAMESPACE_NAME_LABEL.to_string(),
                    attrs.namespace.to_string(),
                )]),
                Some(Ok(None)) => {
                    return Err(format!(
                        "namespace '{}' is not known to the cluster state",
                        attrs.namespace
                    ));
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("namespace labels were not loaded".to_string()),
            }
        };
        if !selector.matches(&labels) {
            return Ok(false);
        }
    }
    Ok(true)
}
