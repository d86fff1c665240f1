//! Loading MutatingAdmissionPolicy and MutatingAdmissionPolicyBinding documents:
//! kube-apiserver's validation (`pkg/apis/admissionregistration/validation`,
//! `validateMutatingAdmissionPolicySpec` and the binding's), worded as it words
//! it, then one [`MutatingPolicy`] per (policy, binding).

use super::model::{MapBindingDocument, MapDocument, MutationDocument};
use super::{MutatingPolicy, Mutation, PatchType};
use crate::documents::Document;
use crate::policy::analysis::{Origin, Scope};
use crate::policy::compile::{CompileError, compile_lowered};
use crate::policy::load::{LoadError, LoadNote};
use crate::policy::matching::Matcher;
use crate::policy::model::{FailurePolicy, NamedExpression};
use crate::policy::validation::{self, FieldError};
use crate::policy::{Named, load::is_block_scalar};
use serde_saphyr::Spanned;
use std::collections::HashSet;

pub const POLICY_KIND: &str = "MutatingAdmissionPolicy";
pub const BINDING_KIND: &str = "MutatingAdmissionPolicyBinding";
pub const LIST_KINDS: &[&str] = &[
    "MutatingAdmissionPolicyList",
    "MutatingAdmissionPolicyBindingList",
];

/// kube-apiserver's `supportedMutatingOperations`, sorted as its error lists them.
const MUTATING_OPERATIONS: &[&str] = &["*", "CONNECT", "CREATE", "UPDATE"];
const FAILURE_POLICIES: &[&str] = &["Fail", "Ignore"];
const REINVOCATION_POLICIES: &[&str] = &["IfNeeded", "Never"];
const PATCH_TYPES: &[&str] = &["ApplyConfiguration", "JSONPatch"];

/// MutatingAdmissionPolicy documents waiting for their bindings.
#[derive(Default)]
pub struct Pending {
    policies: Vec<(Document, MapDocument)>,
    bindings: Vec<(Document, MapBindingDocument)>,
}

impl Pending {
    /// Takes one MutatingAdmissionPolicy or MutatingAdmissionPolicyBinding document.
    pub fn add(&mut self, doc: &Document, kind: &str) -> Result<(), Vec<LoadError>> {
        if kind == POLICY_KIND {
            let parsed: MapDocument = doc.decode().map_err(|e| vec![LoadError::from(e)])?;
            self.policies.push((doc.clone(), parsed));
        } else {
            let parsed: MapBindingDocument = doc.decode().map_err(|e| vec![LoadError::from(e)])?;
            self.bindings.push((doc.clone(), parsed));
        }
        Ok(())
    }

    /// Validates everything, then makes the evaluation units, in the order the
    /// bindings were loaded. What kube-apiserver stores but never evaluates (an
    /// unbound policy, a binding of an absent policy) becomes a note.
    pub fn bind(self, notes: &mut Vec<LoadNote>) -> (Vec<MutatingPolicy>, Vec<LoadError>) {
        let mut errors = Vec::new();
        errors.extend(duplicates(
            self.policies.iter().map(|(d, p)| (d, &p.metadata.name)),
            POLICY_KIND,
        ));
        errors.extend(duplicates(
            self.bindings.iter().map(|(d, b)| (d, &b.metadata.name)),
            BINDING_KIND,
        ));
        let mut valid = Vec::new();
        for (doc, policy) in &self.policies {
            match compile_policy(doc, policy) {
                Ok(_) => valid.push(true),
                Err(e) => {
                    errors.extend(e);
                    valid.push(false);
                }
            }
        }
        let mut units = Vec::new();
        let mut bound: HashSet<&str> = HashSet::new();
        for (bdoc, binding) in &self.bindings {
            let binding_errors = check_binding(bdoc, binding);
            let binding_ok = binding_errors.is_empty();
            errors.extend(binding_errors);
            let Some(index) = self
                .policies
                .iter()
                .position(|(_, p)| p.metadata.name.value == binding.spec.policy_name)
            else {
                notes.push(LoadNote {
                    file: bdoc.file.clone(),
                    line: bdoc.line(binding.metadata.name.referenced.line()),
                    policy: Some(binding.metadata.name.value.clone()),
                    message: format!(
                        "binds MutatingAdmissionPolicy '{}', which is not loaded; the binding does nothing until it is",
                        binding.spec.policy_name
                    ),
                });
                continue;
            };
            let (pdoc, policy) = &self.policies[index];
            bound.insert(policy.metadata.name.value.as_str());
            if !binding_ok || !valid.get(index).copied().unwrap_or(false) {
                continue;
            }
            let matcher = match Matcher::new(
                policy
                    .spec
                    .match_constraints
                    .as_ref()
                    .unwrap_or(&Default::default()),
                binding.spec.match_resources.as_ref(),
            ) {
                Ok(m) => m,
                Err(message) => {
                    errors.push(LoadError {
                        file: bdoc.file.clone(),
                        line: bdoc.line(binding.metadata.name.referenced.line()),
                        policy: Some(binding.metadata.name.value.clone()),
                        field: Some("spec.matchResources".into()),
                        message,
                    });
                    continue;
                }
            };
            // Each unit owns its compiled expressions (they compiled above).
            let Ok(parts) = compile_policy(pdoc, policy) else {
                continue;
            };
            units.push(MutatingPolicy {
                name: policy.metadata.name.value.clone(),
                binding: binding.metadata.name.value.clone(),
                file: pdoc.file.clone(),
                line: pdoc.line(policy.metadata.name.referenced.line()),
                failure_policy: parts.failure_policy,
                reinvoke_if_needed: parts.reinvoke_if_needed,
                matcher,
                reads_namespace_object: parts
                    .match_conditions
                    .iter()
                    .chain(parts.variables.iter())
                    .map(|n| &n.expression)
                    .chain(parts.mutations.iter().map(|m| &m.expression))
                    .any(|e| e.reads.namespace_object),
                match_conditions: parts.match_conditions,
                variables: parts.variables.into(),
                mutations: parts.mutations,
            });
        }
        for (doc, policy) in &self.policies {
            if !bound.contains(policy.metadata.name.value.as_str()) {
                notes.push(LoadNote {
                    file: doc.file.clone(),
                    line: doc.line(policy.metadata.name.referenced.line()),
                    policy: Some(policy.metadata.name.value.clone()),
                    message: "no MutatingAdmissionPolicyBinding names this policy; like kube-apiserver, safety-gate loads it and mutates nothing until one does".to_string(),
                });
            }
        }
        (units, errors)
    }
}

fn duplicates<'a>(
    docs: impl Iterator<Item = (&'a Document, &'a Spanned<String>)>,
    kind: &str,
) -> Vec<LoadError> {
    let mut seen: Vec<(&str, &Document, usize)> = Vec::new();
    let mut errors = Vec::new();
    for (doc, name) in docs {
        let line = doc.line(name.referenced.line());
        if let Some((_, first, first_line)) = seen.iter().find(|(n, _, _)| *n == name.value) {
            errors.push(LoadError {
                file: doc.file.clone(),
                line,
                policy: Some(name.value.clone()),
                field: Some("metadata.name".into()),
                message: format!(
                    "duplicate {kind} name; also defined at {}:{first_line}",
                    first.file.display()
                ),
            });
        } else {
            seen.push((&name.value, doc, line));
        }
    }
    errors
}

/// What one policy document compiles to, before it is paired with a binding.
struct Parts {
    failure_policy: FailurePolicy,
    reinvoke_if_needed: bool,
    match_conditions: Vec<Named>,
    variables: Vec<Named>,
    mutations: Vec<Mutation>,
}

/// Collects one document's errors with file, line, policy and field.
struct Problems<'a> {
    doc: &'a Document,
    policy: String,
    line: u64,
    errors: Vec<LoadError>,
}

impl Problems<'_> {
    fn push_at(&mut self, line: u64, e: FieldError) {
        self.errors.push(LoadError {
            file: self.doc.file.clone(),
            line: self.doc.line(line),
            policy: Some(self.policy.clone()),
            field: Some(e.field),
            message: e.message,
        });
    }

    fn push(&mut self, e: FieldError) {
        self.push_at(self.line, e);
    }

    fn compile(
        &mut self,
        expr: &Spanned<String>,
        field: String,
        scope: &Scope,
        consume: bool,
        mutation: Option<PatchType>,
    ) -> Option<crate::policy::CompiledExpression> {
        use super::cel::{ResultType, check_result, lower};
        let checked_lower = |e: &mut kube_cel::cel::parser::Expression| -> Result<(), String> {
            if let Some(t) = mutation {
                check_result(
                    e,
                    match t {
                        PatchType::JsonPatch => ResultType::JsonPatchList,
                        PatchType::ApplyConfiguration => ResultType::Object,
                    },
                )?;
                lower(e)?;
            }
            Ok(())
        };
        let lower: &dyn Fn(&mut kube_cel::cel::parser::Expression) -> Result<(), String> =
            &checked_lower;
        match compile_lowered(expr.value.trim(), scope, consume, lower) {
            Ok(c) => Some(c),
            Err(CompileError {
                message,
                line,
                column,
            }) => {
                let at = expr.referenced.line();
                let source_line =
                    at + (line as u64).saturating_sub(1) + u64::from(is_block_scalar(self.doc, at));
                self.push_at(
                    source_line,
                    FieldError {
                        field,
                        message: format!(
                            "compilation failed: {message} (expression line {line}, column {column})"
                        ),
                    },
                );
                None
            }
        }
    }
}

fn compile_policy(doc: &Document, policy: &MapDocument) -> Result<Parts, Vec<LoadError>> {
    let name = &policy.metadata.name;
    let mut p = Problems {
        doc,
        policy: name.value.clone(),
        line: name.referenced.line(),
        errors: Vec::new(),
    };
    let mut out = Vec::new();
    validation::object_name("metadata.name", &name.value, &mut out);
    validation::labels_and_annotations(
        &policy.metadata.labels,
        &policy.metadata.annotations,
        &mut out,
    );
    let spec = &policy.spec;
    let failure_policy = match spec.failure_policy.as_deref() {
        None | Some("Fail") => FailurePolicy::Fail,
        Some("Ignore") => FailurePolicy::Ignore,
        Some(other) => {
            out.push(validation::not_supported(
                "spec.failurePolicy",
                other,
                FAILURE_POLICIES,
            ));
            FailurePolicy::Fail
        }
    };
    if spec.param_kind.is_some() {
        out.push(FieldError {
            field: "spec.paramKind".into(),
            message: "params for MutatingAdmissionPolicy are not supported by safety-gate yet"
                .into(),
        });
    }
    match &spec.match_constraints {
        None => out.push(validation::required("spec.matchConstraints", "")),
        Some(m) => {
            validation::match_resources(m, "spec.matchConstraints", &mut out);
            if m.resource_rules.is_empty() {
                out.push(validation::required(
                    "spec.matchConstraints.resourceRules",
                    "",
                ));
            }
            operations(
                m,
                "spec.matchConstraints.resourceRules.operations",
                &mut out,
            );
        }
    }
    for e in out.drain(..) {
        p.push(e);
    }

    let no_names: Vec<String> = Vec::new();
    let no_origins: Vec<Vec<Origin>> = Vec::new();
    let early = Scope {
        variables: &no_names,
        variable_origins: &no_origins,
        lookups: &[],
        allow_variables: false,
        params: false,
        authorizer: true,
    };
    let match_conditions = match_conditions(&mut p, &spec.match_conditions, &early);

    let mut names: Vec<String> = Vec::new();
    let mut origins: Vec<Vec<Origin>> = Vec::new();
    let mut variables = Vec::new();
    for (i, v) in spec.variables.iter().enumerate() {
        let line = v.expression.referenced.line();
        if v.name.is_empty() {
            p.push_at(
                line,
                validation::required(format!("spec.variables[{i}].name"), ""),
            );
        } else if !validation::is_cel_identifier(&v.name) {
            p.push_at(
                line,
                validation::invalid(
                    format!("spec.variables[{i}].name"),
                    &v.name,
                    "name is not a valid CEL identifier",
                ),
            );
        }
        let scope = Scope {
            variables: &names,
            variable_origins: &origins,
            lookups: &[],
            allow_variables: true,
            params: false,
            authorizer: true,
        };
        let compiled = if v.expression.value.trim().is_empty() {
            p.push_at(
                line,
                validation::required(format!("spec.variables[{i}].expression"), ""),
            );
            None
        } else {
            p.compile(
                &v.expression,
                format!("spec.variables[{i}].expression"),
                &scope,
                false,
                None,
            )
        };
        origins.push(
            compiled
                .as_ref()
                .map(|c| c.origins.clone())
                .unwrap_or_default(),
        );
        names.push(v.name.clone());
        if let Some(c) = compiled {
            variables.push(Named {
                name: v.name.clone(),
                expression: c,
            });
        }
    }
    let scope = Scope {
        variables: &names,
        variable_origins: &origins,
        lookups: &[],
        allow_variables: true,
        params: false,
        authorizer: true,
    };
    let mut mutations = Vec::new();
    if spec.mutations.is_empty() {
        p.push(validation::required(
            "spec.mutations",
            "mutations must contain at least one item",
        ));
    }
    for (i, m) in spec.mutations.iter().enumerate() {
        if let Some(mutation) = mutation(&mut p, i, m, &scope) {
            mutations.push(mutation);
        }
    }
    let reinvoke_if_needed = match spec.reinvocation_policy.as_deref() {
        None | Some("") => {
            p.push(validation::required("spec.reinvocationPolicy", ""));
            false
        }
        Some("IfNeeded") => true,
        Some("Never") => false,
        Some(other) => {
            p.push(validation::not_supported(
                "spec.reinvocationPolicy",
                other,
                REINVOCATION_POLICIES,
            ));
            false
        }
    };
    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    Ok(Parts {
        failure_policy,
        reinvoke_if_needed,
        match_conditions,
        variables,
        mutations,
    })
}

fn mutation(p: &mut Problems, i: usize, m: &MutationDocument, scope: &Scope) -> Option<Mutation> {
    let at = format!("spec.mutations[{i}]");
    let line = m
        .patch_type
        .as_ref()
        .map(|t| t.referenced.line())
        .unwrap_or(p.line);
    let patch_type = match m.patch_type.as_ref().map(|t| t.value.as_str()) {
        None | Some("") => {
            p.push_at(line, validation::required(format!("{at}.patchType"), ""));
            return None;
        }
        Some("JSONPatch") => PatchType::JsonPatch,
        Some("ApplyConfiguration") => PatchType::ApplyConfiguration,
        Some(other) => {
            p.push_at(
                line,
                validation::not_supported(format!("{at}.patchType"), other, PATCH_TYPES),
            );
            return None;
        }
    };
    let (holder, holder_field, other, other_field, type_text) = match patch_type {
        PatchType::JsonPatch => (
            &m.json_patch,
            "jsonPatch",
            &m.apply_configuration,
            "applyConfiguration",
            "JSONPatch",
        ),
        PatchType::ApplyConfiguration => (
            &m.apply_configuration,
            "applyConfiguration",
            &m.json_patch,
            "jsonPatch",
            "ApplyConfiguration",
        ),
    };
    if other.is_some() {
        p.push_at(
            line,
            validation::invalid(
                format!("{at}.{other_field}"),
                &format!("{{{other_field}}}"),
                &format!("must not be specified when patchType is {type_text}"),
            ),
        );
    }
    let Some(holder) = holder else {
        p.push_at(
            line,
            validation::required(
                format!("{at}.{holder_field}"),
                &format!("must be specified when patchType is {type_text}"),
            ),
        );
        return None;
    };
    let field = format!("{at}.{holder_field}.expression");
    let expression = match &holder.expression {
        Some(e) if !e.value.trim().is_empty() => e,
        Some(e) => {
            p.push_at(e.referenced.line(), validation::required(field, ""));
            return None;
        }
        None => {
            p.push_at(line, validation::required(field, ""));
            return None;
        }
    };
    let expression = p.compile(expression, field, scope, true, Some(patch_type))?;
    Some(Mutation {
        patch_type,
        expression,
    })
}

/// `validateMatchConditions`: at most 64, names qualified and unique, expressions compile.
fn match_conditions(p: &mut Problems, list: &[NamedExpression], scope: &Scope) -> Vec<Named> {
    if list.len() > validation::MAX_MATCH_CONDITIONS {
        p.push(FieldError {
            field: "spec.matchConditions".into(),
            message: format!(
                "Too many: {}: must have at most {} items",
                list.len(),
                validation::MAX_MATCH_CONDITIONS
            ),
        });
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let line = c.expression.referenced.line();
        let name_field = format!("spec.matchConditions[{i}].name");
        if c.name.is_empty() {
            p.push_at(line, validation::required(name_field, ""));
        } else {
            for m in validation::qualified_name_errors(&c.name) {
                p.push_at(line, validation::invalid(name_field.clone(), &c.name, &m));
            }
            if !seen.insert(c.name.as_str()) {
                p.push_at(line, validation::duplicate(name_field, &c.name));
            }
        }
        let field = format!("spec.matchConditions[{i}].expression");
        if c.expression.value.trim().is_empty() {
            p.push_at(line, validation::required(field, ""));
            continue;
        }
        if let Some(expression) = p.compile(&c.expression, field, scope, true, None) {
            out.push(Named {
                name: c.name.clone(),
                expression,
            });
        }
    }
    out
}

fn operations(m: &crate::policy::model::MatchResources, field: &str, out: &mut Vec<FieldError>) {
    for rule in &m.resource_rules {
        for op in &rule.operations {
            if !MUTATING_OPERATIONS.contains(&op.as_str()) {
                out.push(validation::not_supported(field, op, MUTATING_OPERATIONS));
            }
        }
    }
}

/// kube-apiserver's validation of a MutatingAdmissionPolicyBinding.
fn check_binding(doc: &Document, b: &MapBindingDocument) -> Vec<LoadError> {
    let mut out = Vec::new();
    validation::object_name("metadata.name", &b.metadata.name.value, &mut out);
    validation::labels_and_annotations(&b.metadata.labels, &b.metadata.annotations, &mut out);
    if b.spec.policy_name.is_empty() {
        out.push(validation::required("spec.policyName", ""));
    } else {
        for m in validation::dns1123_subdomain_errors(&b.spec.policy_name) {
            out.push(validation::invalid(
                "spec.policyName",
                &b.spec.policy_name,
                &m,
            ));
        }
    }
    if b.spec.param_ref.is_some() {
        out.push(FieldError {
            field: "spec.paramRef".into(),
            message: "params for MutatingAdmissionPolicy are not supported by safety-gate yet"
                .into(),
        });
    }
    if let Some(m) = &b.spec.match_resources {
        validation::match_resources(m, "spec.matchResources", &mut out);
        operations(m, "spec.matchResources.resourceRules.operations", &mut out);
    }
    let line = doc.line(b.metadata.name.referenced.line());
    out.into_iter()
        .map(|e| LoadError {
            file: doc.file.clone(),
            line,
            policy: Some(b.metadata.name.value.clone()),
            field: Some(e.field),
            message: e.message,
        })
        .collect()
}
