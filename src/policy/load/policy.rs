//! One GatePolicy or ValidatingAdmissionPolicy document (with its binding, if
//! any) checked and compiled into the engine's [`Policy`].

use super::LoadError;
use super::annotations::compile_audit_annotations;
use super::extensions::{compile_annotate, compile_mutations};
use super::header::check_header;
use super::problems::{Problems, check_unique, compile_named};
use super::validations::compile_validations;
use super::variables::{compile_match_conditions, compile_variables};
use crate::documents::Document;
use crate::policy::analysis::Scope;
use crate::policy::compile::CompiledExpression;
use crate::policy::model::{
    FailurePolicy, ObjectMeta, PolicySpec, ValidatingPolicyDocument, VapBindingDocument,
};
use crate::policy::validation;
use crate::policy::{CompiledValidation, Named, Policy, PolicyKind, PolicyParts};

/// What a policy document becomes: a GatePolicy, or a VAP checked on its own (no
/// binding: validated, then dropped) or with one of its bindings (an evaluation unit).
#[derive(Clone, Copy)]
pub(super) enum Unit<'a> {
    Gate,
    Vap(Option<(&'a Document, &'a VapBindingDocument)>),
}

/// Checks one GatePolicy or ValidatingAdmissionPolicy document (with its binding,
/// if any) and compiles it into a [`Policy`].
///
/// # Errors
/// Every problem of the document, each with its file, line, policy name and field,
/// in this order: metadata, actions (or GatePolicy-only fields in a VAP), paramKind,
/// matchConstraints, then the expressions (see [`compile_expressions`]).
pub(super) fn build_policy(
    doc: &Document,
    parsed: ValidatingPolicyDocument,
    unit: Unit,
) -> Result<Policy, Vec<LoadError>> {
    let name = parsed.metadata.name.value.clone();
    let name_line = parsed.metadata.name.referenced.line();
    let (is_vap, binding) = match unit {
        Unit::Vap(b) => (true, b.map(|(_, b)| b)),
        Unit::Gate => (false, None),
    };
    let mut p = Problems {
        doc,
        policy: name.clone(),
        errors: Vec::new(),
    };
    check_metadata(&mut p, &parsed.metadata, name_line, is_vap);
    let spec: PolicySpec = parsed.spec;
    let header = check_header(&mut p, &spec, binding, is_vap, name_line);
    let e = compile_expressions(&mut p, &spec, is_vap, name_line);
    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    let description = parsed
        .metadata
        .annotations
        .get("safety-gate.dev/description")
        .cloned();
    Ok(Policy::new(PolicyParts {
        name,
        kind: if is_vap {
            PolicyKind::ValidatingAdmissionPolicy
        } else {
            PolicyKind::GatePolicy
        },
        binding: binding.map(|b| b.metadata.name.value.clone()),
        file: doc.file.clone(),
        line: doc.line(name_line),
        description,
        actions: header.actions,
        action_label: header.action_label,
        failure_policy: spec.failure_policy.unwrap_or(FailurePolicy::Fail),
        matcher: header.matcher,
        match_conditions: e.match_conditions,
        variables: e.variables,
        lookups: spec.lookups.clone(),
        param_kind: spec.param_kind.clone(),
        param_ref: binding.and_then(|b| b.spec.param_ref.clone()),
        exemptions: e.exemptions,
        validations: e.validations,
        audit_annotations: e.audit_annotations,
        annotate: e.annotate,
        mutations: e.mutations,
        deny_before_object_validation: spec.deny_before_object_validation,
    }))
}

/// kube-apiserver's checks of `metadata`: the name for every policy, labels and
/// annotations only for a VAP.
fn check_metadata(p: &mut Problems, meta: &ObjectMeta, name_line: u64, is_vap: bool) {
    let mut field_errors = Vec::new();
    validation::object_name("metadata.name", &meta.name.value, &mut field_errors);
    if is_vap {
        validation::labels_and_annotations(&meta.labels, &meta.annotations, &mut field_errors);
    }
    p.push_all(name_line, field_errors);
}

/// A policy's compiled expressions, as [`PolicyParts`] takes them.
struct Expressions {
    match_conditions: Vec<Named>,
    exemptions: Vec<Named>,
    variables: Vec<Named>,
    validations: Vec<CompiledValidation>,
    audit_annotations: Vec<Named>,
    annotate: Vec<(String, Option<CompiledExpression>)>,
    mutations: Vec<CompiledExpression>,
}

impl Expressions {
    /// Nothing that yields a verdict, an annotation or a patch.
    fn checks_nothing(&self) -> bool {
        self.validations.is_empty()
            && self.audit_annotations.is_empty()
            && self.annotate.is_empty()
            && self.mutations.is_empty()
    }
}

/// Checks and compiles every expression of a policy in field order: lookups'
/// names, matchConditions and exemptions (which see no variables), variables
/// (each sees those before it), validations, auditAnnotations, annotate,
/// mutations. What does not compile is left out; its problem is in `p`.
fn compile_expressions(
    p: &mut Problems,
    spec: &PolicySpec,
    is_vap: bool,
    name_line: u64,
) -> Expressions {
    let lookup_names: Vec<String> = spec.lookups.iter().map(|l| l.name.clone()).collect();
    check_unique(p, name_line, "spec.lookups", &lookup_names);

    let params = spec.param_kind.is_some();
    let early_scope = Scope {
        variables: &[],
        variable_origins: &[],
        lookups: &lookup_names,
        allow_variables: false,
        params,
        authorizer: true,
    };
    let match_conditions =
        compile_match_conditions(p, &spec.match_conditions, &early_scope, name_line);
    let exemptions = compile_named(
        p,
        &spec.exemptions,
        "spec.exemptions",
        &early_scope,
        name_line,
    );

    let vars = compile_variables(p, &spec.variables, &lookup_names, params, is_vap);
    let scope = Scope {
        variables: &vars.names,
        variable_origins: &vars.origins,
        lookups: &lookup_names,
        allow_variables: true,
        params,
        authorizer: true,
    };
    let validations = compile_validations(p, &spec.validations, &scope, is_vap);
    if is_vap {
        require_validations_or_audit(p, spec, name_line);
    }
    let audit_annotations =
        compile_audit_annotations(p, &spec.audit_annotations, &scope, is_vap, name_line);
    let annotate = compile_annotate(p, &spec.annotate, &scope);
    let mutations = compile_mutations(p, &spec.mutations, &scope);
    let compiled = Expressions {
        match_conditions,
        exemptions,
        variables: vars.compiled,
        validations,
        audit_annotations,
        annotate,
        mutations,
    };
    if !is_vap && compiled.checks_nothing() && p.errors.is_empty() {
        p.push(
            name_line,
            "spec",
            "a policy needs validations, auditAnnotations, annotate or mutations",
        );
    }
    compiled
}

/// kube-apiserver requires a VAP to have validations or auditAnnotations: it
/// reports the missing pair as two errors, one per field.
fn require_validations_or_audit(p: &mut Problems, spec: &PolicySpec, name_line: u64) {
    if spec.validations.is_empty() && spec.audit_annotations.is_empty() {
        for field in ["spec.validations", "spec.auditAnnotations"] {
            p.push(
                name_line,
                field,
                "Required value: validations or auditAnnotations must contain at least one item",
            );
        }
    }
}
