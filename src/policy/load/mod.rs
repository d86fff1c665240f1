//! Loading a directory of policy files into a [`PolicySet`]: all or nothing.

use super::analysis::{Origin, Scope};
use super::compile::{CompileError, CompiledExpression, compile};
use super::matching::Matcher;
use super::model::{
    Action, AuditAnnotationSpec, DocumentHeader, FailurePolicy, MatchResources, MutationSpec,
    NamedExpression, ObjectMeta, ParamKind, PolicySpec, Reason, ValidatingPolicyDocument,
    ValidationSpec, VapBindingDocument,
};
use super::validation::{self, FieldError};
use super::{Actions, CompiledValidation, Named, Policy, PolicySet};
use crate::documents::{Document, Located, files_in, split_documents};
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

pub const GATE_API_VERSION: &str = "safety-gate.dev/v1alpha1";
const VAP_API_VERSION: &str = "admissionregistration.k8s.io/v1";

/// One problem found while loading: where, which policy, which field, what.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: usize,
    pub policy: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: the whole file (it cannot be read), no meaningful line.
        if self.line == 0 {
            write!(f, "{}: ", self.file.display())?;
        } else {
            write!(f, "{}:{}: ", self.file.display(), self.line)?;
        }
        if let Some(p) = &self.policy {
            write!(f, "policy {p}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl From<Located> for LoadError {
    fn from(l: Located) -> Self {
        LoadError {
            file: l.file,
            line: l.line,
            policy: None,
            field: None,
            message: l.message,
        }
    }
}

/// Every problem of a policy directory; the set is rejected if there is any.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Loads every policy document from `path` (a directory, searched recursively, or one file).
pub fn load_path(path: &Path) -> Result<PolicySet, LoadErrors> {
    let files = if path.is_dir() {
        files_in(path).map_err(|e| io_error(path, &e))?
    } else {
        vec![path.to_path_buf()]
    };
    load_files(&files)
}

fn io_error(path: &Path, e: &std::io::Error) -> LoadErrors {
    LoadErrors(vec![LoadError {
        file: path.to_path_buf(),
        line: 0,
        policy: None,
        field: None,
        message: format!("cannot read: {e}"),
    }])
}

/// Something worth knowing about a loaded set that is not a problem: kube-apiserver
/// accepts the same documents and does the same (nothing) with them.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadNote {
    pub file: PathBuf,
    pub line: usize,
    pub policy: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: note: ", self.file.display(), self.line)?;
        if let Some(p) = &self.policy {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)
    }
}

pub fn load_files(files: &[PathBuf]) -> Result<PolicySet, LoadErrors> {
    let mut errors = Vec::new();
    let mut documents = Vec::new();
    for file in files {
        match crate::documents::read_text(file) {
            Ok(text) => documents.extend(split_documents(file, &text)),
            Err(e) => errors.extend(io_error(file, &e).0),
        }
    }
    load_documents(&documents, errors)
}

/// Loads policy documents from `(file name, text)` pairs already in memory,
/// exactly as [`load_files`] loads files (the names only label errors). For
/// the fuzz targets, which must not touch the disk for every input.
pub fn load_texts(sources: &[(PathBuf, String)]) -> Result<PolicySet, LoadErrors> {
    let documents: Vec<_> = sources
        .iter()
        .flat_map(|(file, text)| split_documents(file, text))
        .collect();
    load_documents(&documents, Vec::new())
}

fn load_documents(
    documents: &[crate::documents::Document],
    mut errors: Vec<LoadError>,
) -> Result<PolicySet, LoadErrors> {
    let mut loader = Loader::default();
    for doc in documents {
        if let Err(e) = loader.add_document(doc) {
            errors.extend(e);
        }
    }
    errors.extend(loader.bind_vaps());
    let (mutating, mutating_errors) = std::mem::take(&mut loader.mutating).bind(&mut loader.notes);
    errors.extend(mutating_errors);
    if errors.is_empty() {
        errors.extend(check_set(&loader.policies));
    }
    if errors.is_empty() {
        let mut set = PolicySet::new(loader.policies);
        set.notes = loader.notes;
        set.mutating = mutating;
        Ok(set)
    } else {
        Err(LoadErrors(errors))
    }
}

/// Kinds that wrap other objects in `items`, as `kubectl get -o yaml` writes them.
fn is_list(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_version, kind),
        ("v1", "List")
            | (
                VAP_API_VERSION,
                "ValidatingAdmissionPolicyList" | "ValidatingAdmissionPolicyBindingList"
            )
    ) || (api_version == VAP_API_VERSION && super::mutating::load::LIST_KINDS.contains(&kind))
}

#[derive(Default)]
struct Loader {
    policies: Vec<Policy>,
    /// VAPs wait for their bindings: one evaluation unit per binding, as in Kubernetes.
    vaps: Vec<(Document, ValidatingPolicyDocument)>,
    bindings: Vec<(Document, VapBindingDocument)>,
    notes: Vec<LoadNote>,
    /// MutatingAdmissionPolicies and their bindings (see `mutating/load.rs`).
    mutating: super::mutating::load::Pending,
}

impl Loader {
    fn add_document(&mut self, doc: &Document) -> Result<(), Vec<LoadError>> {
        let header: DocumentHeader = doc.decode().map_err(|e| vec![LoadError::from(e)])?;
        let api_version = header.api_version.unwrap_or_default();
        let kind = header.kind.unwrap_or_default();
        if is_list(&api_version, &kind) {
            let mut errors = Vec::new();
            for item in doc.list_items().map_err(|e| vec![LoadError::from(e)])? {
                if let Err(e) = self.add_document(&item) {
                    errors.extend(e);
                }
            }
            return if errors.is_empty() {
                Ok(())
            } else {
                Err(errors)
            };
        }
        match (api_version.as_str(), kind.as_str()) {
            (GATE_API_VERSION, "GatePolicy") => {
                let parsed: ValidatingPolicyDocument =
                    doc.decode().map_err(|e| vec![LoadError::from(e)])?;
                let policy = build_policy(doc, parsed, Unit::Gate)?;
                self.policies.push(policy);
                Ok(())
            }
            (VAP_API_VERSION, "ValidatingAdmissionPolicy") => {
                let parsed: ValidatingPolicyDocument =
                    doc.decode().map_err(|e| vec![LoadError::from(e)])?;
                self.vaps.push((doc.clone(), parsed));
                Ok(())
            }
            (VAP_API_VERSION, "ValidatingAdmissionPolicyBinding") => {
                let parsed: VapBindingDocument =
                    doc.decode().map_err(|e| vec![LoadError::from(e)])?;
                self.bindings.push((doc.clone(), parsed));
                Ok(())
            }
            (VAP_API_VERSION, "MutatingAdmissionPolicy" | "MutatingAdmissionPolicyBinding") => {
                self.mutating.add(doc, &kind)
            }
            _ => Err(vec![LoadError {
                file: doc.file.clone(),
                line: doc.first_line,
                policy: None,
                field: Some("kind".to_string()),
                message: format!(
                    "unknown document kind '{kind}' (apiVersion '{api_version}'); expected GatePolicy ({GATE_API_VERSION}) or ValidatingAdmissionPolicy / ValidatingAdmissionPolicyBinding / MutatingAdmissionPolicy / MutatingAdmissionPolicyBinding ({VAP_API_VERSION})"
                ),
            }]),
        }
    }

    /// Checks every VAP and binding as kube-apiserver checks them before storing, then
    /// makes one evaluation unit per (policy, binding) pair. What kube-apiserver
    /// stores but never evaluates — a policy nobody binds, a binding to a policy that
    /// is not there — loads, does nothing, and is reported as a note.
    fn bind_vaps(&mut self) -> Vec<LoadError> {
        let vaps = std::mem::take(&mut self.vaps);
        let bindings = std::mem::take(&mut self.bindings);
        let mut errors = duplicate_names(
            vaps.iter().map(|(d, v)| (d, &v.metadata)),
            "ValidatingAdmissionPolicy",
        );
        errors.extend(duplicate_names(
            bindings.iter().map(|(d, b)| (d, &b.metadata)),
            "ValidatingAdmissionPolicyBinding",
        ));
        let valid = check_vaps(&vaps, &mut errors);
        let mut bound: HashSet<&str> = HashSet::new();
        for (bdoc, binding) in &bindings {
            if let Some(name) = self.bind(&vaps, &valid, bdoc, binding, &mut errors) {
                bound.insert(name);
            }
        }
        self.note_unbound(&vaps, &bound);
        errors
    }

    /// Checks one binding and, if it and the VAP it names are valid, adds their
    /// evaluation unit. Returns the name of that VAP if it is loaded at all; a
    /// binding to a VAP that is not loaded gets a note instead.
    fn bind<'v>(
        &mut self,
        vaps: &'v [(Document, ValidatingPolicyDocument)],
        valid: &HashSet<String>,
        bdoc: &Document,
        binding: &VapBindingDocument,
        errors: &mut Vec<LoadError>,
    ) -> Option<&'v str> {
        let binding_errors = check_binding(bdoc, binding);
        let binding_ok = binding_errors.is_empty();
        errors.extend(binding_errors);
        let Some((vdoc, vap)) = vaps
            .iter()
            .find(|(_, v)| v.metadata.name.value == binding.spec.policy_name)
        else {
            self.notes.push(LoadNote {
                file: bdoc.file.clone(),
                line: bdoc.line(binding.metadata.name.referenced.line()),
                policy: Some(binding.metadata.name.value.clone()),
                message: format!(
                    "binds ValidatingAdmissionPolicy '{}', which is not loaded; the binding does nothing until it is",
                    binding.spec.policy_name
                ),
            });
            return None;
        };
        if binding_ok && valid.contains(&vap.metadata.name.value) {
            match reparse_vap(vdoc)
                .and_then(|v| build_policy(vdoc, v, Unit::Vap(Some((bdoc, binding)))))
            {
                Ok(p) => self.policies.push(p),
                Err(e) => errors.extend(e),
            }
        }
        Some(vap.metadata.name.value.as_str())
    }

    /// A note for every VAP that no binding names (`bound` holds those that one does).
    fn note_unbound(
        &mut self,
        vaps: &[(Document, ValidatingPolicyDocument)],
        bound: &HashSet<&str>,
    ) {
        for (vdoc, vap) in vaps {
            if !bound.contains(vap.metadata.name.value.as_str()) {
                self.notes.push(LoadNote {
                    file: vdoc.file.clone(),
                    line: vdoc.line(vap.metadata.name.referenced.line()),
                    policy: Some(vap.metadata.name.value.clone()),
                    message: "no ValidatingAdmissionPolicyBinding names this policy; like kube-apiserver, safety-gate loads it and evaluates nothing until one does".to_string(),
                });
            }
        }
    }
}

/// Checks every VAP on its own, as kube-apiserver does before storing it (no
/// binding yet), adding its problems to `errors`; returns the names of the valid ones.
fn check_vaps(
    vaps: &[(Document, ValidatingPolicyDocument)],
    errors: &mut Vec<LoadError>,
) -> HashSet<String> {
    let mut valid = HashSet::new();
    for (vdoc, _) in vaps {
        match reparse_vap(vdoc).and_then(|v| build_policy(vdoc, v, Unit::Vap(None))) {
            Ok(p) => {
                valid.insert(p.name);
            }
            Err(e) => errors.extend(e),
        }
    }
    valid
}

/// Two documents of one kind with one name: applied to a cluster, the second would
/// silently replace the first, so a directory holding both is almost surely a mistake.
fn duplicate_names<'a>(
    docs: impl Iterator<Item = (&'a Document, &'a super::model::ObjectMeta)>,
    kind: &str,
) -> Vec<LoadError> {
    let mut seen: HashMap<&str, (&Document, usize)> = HashMap::new();
    let mut errors = Vec::new();
    for (doc, meta) in docs {
        let line = doc.line(meta.name.referenced.line());
        if let Some((first, first_line)) = seen.insert(&meta.name.value, (doc, line)) {
            errors.push(LoadError {
                file: doc.file.clone(),
                line,
                policy: Some(meta.name.value.clone()),
                field: Some("metadata.name".to_string()),
                message: format!(
                    "duplicate {kind} name; also defined at {}:{first_line}",
                    first.file.display()
                ),
            });
        }
    }
    errors
}

/// kube-apiserver's validation of a ValidatingAdmissionPolicyBinding.
fn check_binding(doc: &Document, b: &VapBindingDocument) -> Vec<LoadError> {
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
    if let Some(param_ref) = &b.spec.param_ref {
        validation::param_ref(param_ref, "spec.paramRef", &mut out);
    }
    if let Some(m) = &b.spec.match_resources {
        validation::match_resources(m, "spec.matchResources", &mut out);
    }
    validation::validation_actions(
        &b.spec.validation_actions,
        "spec.validationActions",
        &mut out,
    );
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

fn reparse_vap(doc: &Document) -> Result<ValidatingPolicyDocument, Vec<LoadError>> {
    doc.decode().map_err(|e| vec![LoadError::from(e)])
}

/// Collects errors of one policy with its file and name.
struct Problems<'a> {
    doc: &'a Document,
    policy: String,
    errors: Vec<LoadError>,
}

impl Problems<'_> {
    fn push(&mut self, line_in_doc: u64, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(LoadError {
            file: self.doc.file.clone(),
            line: self.doc.line(line_in_doc),
            policy: Some(self.policy.clone()),
            field: Some(field.into()),
            message: message.into(),
        });
    }

    /// Adds kube-apiserver-style field errors, all reported at `line_in_doc`.
    fn push_all(&mut self, line_in_doc: u64, errors: Vec<FieldError>) {
        for e in errors {
            self.push(line_in_doc, e.field, e.message);
        }
    }

    fn compile(
        &mut self,
        expr: &Spanned<String>,
        field: String,
        scope: &Scope,
        consume: bool,
    ) -> Option<CompiledExpression> {
        match compile(&expr.value, scope, consume) {
            Ok(c) => Some(c),
            Err(CompileError {
                message,
                line,
                column,
            }) => {
                let at_line = expr.referenced.line();
                // Block scalars (`>-`, `|`) start on the line after the key.
                let source_line = at_line
                    + (line as u64).saturating_sub(1)
                    + u64::from(is_block_scalar(self.doc, at_line));
                self.push(
                    source_line,
                    field,
                    format!("{message} (expression line {line}, column {column})"),
                );
                None
            }
        }
    }
}

pub(super) fn is_block_scalar(doc: &Document, line_in_doc: u64) -> bool {
    doc.text
        .lines()
        .nth(line_in_doc.saturating_sub(1) as usize)
        .map(|l| {
            let t = l.trim_end();
            t.ends_with('|')
                || t.ends_with('>')
                || t.ends_with("|-")
                || t.ends_with(">-")
                || t.ends_with("|+")
                || t.ends_with(">+")
        })
        .unwrap_or(false)
}

/// What a policy document becomes: a GatePolicy, or a VAP checked on its own (no
/// binding: validated, then dropped) or with one of its bindings (an evaluation unit).
#[derive(Clone, Copy)]
enum Unit<'a> {
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
fn build_policy(
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
    Ok(Policy::new(super::PolicyParts {
        name,
        kind: if is_vap {
            super::PolicyKind::ValidatingAdmissionPolicy
        } else {
            super::PolicyKind::GatePolicy
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

/// What a policy's fields other than metadata and expressions give the engine.
struct Header {
    actions: Actions,
    /// The actions as the policy's outcomes show them (`Deny`, `Warn,Audit`, ...).
    action_label: String,
    matcher: Matcher,
}

/// Checks the fields around the expressions, in field order: the actions (or, in
/// a VAP, the GatePolicy-only fields), paramKind, matchConstraints.
fn check_header(
    p: &mut Problems,
    spec: &PolicySpec,
    binding: Option<&VapBindingDocument>,
    is_vap: bool,
    name_line: u64,
) -> Header {
    let (actions, action_label) = if is_vap {
        reject_gate_extensions(p, spec, name_line);
        vap_actions(binding)
    } else {
        gate_actions(spec.action.unwrap_or_default())
    };
    check_param_kind(p, spec.param_kind.as_ref(), is_vap, name_line);
    let matcher = build_matcher(
        p,
        spec.match_constraints.as_ref(),
        binding,
        is_vap,
        name_line,
    );
    Header {
        actions,
        action_label,
        matcher,
    }
}

/// kube-apiserver's checks of `metadata`: the name for every policy, labels and
/// annotations for a VAP only (a GatePolicy's were never checked, and still are not).
fn check_metadata(p: &mut Problems, meta: &ObjectMeta, name_line: u64, is_vap: bool) {
    let mut field_errors = Vec::new();
    validation::object_name("metadata.name", &meta.name.value, &mut field_errors);
    if is_vap {
        validation::labels_and_annotations(&meta.labels, &meta.annotations, &mut field_errors);
    }
    p.push_all(name_line, field_errors);
}

/// A GatePolicy's single `action` (default Deny) as the engine's action set and
/// the label its outcomes show.
fn gate_actions(action: Action) -> (Actions, String) {
    let label = match action {
        Action::Deny => "Deny",
        Action::Warn => "Warn",
        Action::Audit => "Audit",
    };
    (
        Actions {
            deny: action == Action::Deny,
            warn: action == Action::Warn,
            audit: action == Action::Audit,
        },
        label.to_string(),
    )
}

/// A VAP's actions come from its binding's `validationActions` (none without a
/// binding); the label is that list joined with commas, as written.
fn vap_actions(binding: Option<&VapBindingDocument>) -> (Actions, String) {
    // The binding itself was checked by `check_binding`.
    let list = binding
        .map(|b| b.spec.validation_actions.clone())
        .unwrap_or_default();
    let actions = Actions {
        deny: list.iter().any(|a| a == "Deny"),
        warn: list.iter().any(|a| a == "Warn"),
        audit: list.iter().any(|a| a == "Audit"),
    };
    (actions, list.join(","))
}

/// A VAP may not use the fields only a GatePolicy has: one error per field used.
fn reject_gate_extensions(p: &mut Problems, spec: &PolicySpec, name_line: u64) {
    for (field, present) in [
        ("spec.action", spec.action.is_some()),
        ("spec.lookups", !spec.lookups.is_empty()),
        ("spec.exemptions", !spec.exemptions.is_empty()),
        ("spec.annotate", !spec.annotate.is_empty()),
        ("spec.mutations", !spec.mutations.is_empty()),
        (
            "spec.denyBeforeObjectValidation",
            spec.deny_before_object_validation,
        ),
    ] {
        if present {
            p.push(name_line, field, "is a GatePolicy extension; a ValidatingAdmissionPolicy cannot use it (write a GatePolicy instead)");
        }
    }
}

/// `spec.paramKind`: checked as kube-apiserver checks it in a VAP; refused in a
/// GatePolicy, which has no binding to select parameters.
fn check_param_kind(p: &mut Problems, kind: Option<&ParamKind>, is_vap: bool, name_line: u64) {
    match (kind, is_vap) {
        (Some(kind), true) => {
            let mut field_errors = Vec::new();
            validation::param_kind(kind, "spec.paramKind", &mut field_errors);
            p.push_all(name_line, field_errors);
        }
        (Some(_), false) => p.push(
            name_line,
            "spec.paramKind",
            "parameters are for a ValidatingAdmissionPolicy, whose binding's paramRef selects them (a GatePolicy reads cluster objects with `lookups`)",
        ),
        (None, _) => {}
    }
}

/// `spec.matchConstraints` (narrowed by the binding's `matchResources`) as a
/// [`Matcher`]; one that matches nothing if they are invalid, which is then reported.
fn build_matcher(
    p: &mut Problems,
    constraints: Option<&MatchResources>,
    binding: Option<&VapBindingDocument>,
    is_vap: bool,
    name_line: u64,
) -> Matcher {
    // kube-apiserver's checks of the match constraints (for a GatePolicy too: the
    // fields mean the same), then the gate's own compilation of them.
    let mut field_errors = Vec::new();
    let match_resources = constraints.cloned().unwrap_or_default();
    if is_vap && constraints.is_none() {
        field_errors.push(validation::required("spec.matchConstraints", ""));
    } else {
        validation::match_resources(&match_resources, "spec.matchConstraints", &mut field_errors);
        if match_resources.resource_rules.is_empty() {
            field_errors.push(validation::required(
                "spec.matchConstraints.resourceRules",
                "at least one rule is required (it gives the expressions their types; a policy that matches nothing protects nothing)",
            ));
        }
    }
    let binding_resources = binding.and_then(|b| b.spec.match_resources.clone());
    let matcher_ok = field_errors.is_empty();
    p.push_all(name_line, field_errors);
    match Matcher::new(&match_resources, binding_resources.as_ref()) {
        Ok(m) => m,
        Err(message) => {
            if matcher_ok {
                p.push(name_line, "spec.matchConstraints", message);
            }
            Matcher::never()
        }
    }
}

/// A policy's compiled expressions, as [`super::PolicyParts`] takes them.
struct Expressions {
    match_conditions: Vec<Named>,
    exemptions: Vec<Named>,
    variables: Vec<Named>,
    validations: Vec<CompiledValidation>,
    audit_annotations: Vec<Named>,
    annotate: Vec<(String, Option<CompiledExpression>)>,
    mutations: Vec<CompiledExpression>,
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

impl Expressions {
    /// Nothing that yields a verdict, an annotation or a patch.
    fn checks_nothing(&self) -> bool {
        self.validations.is_empty()
            && self.audit_annotations.is_empty()
            && self.annotate.is_empty()
            && self.mutations.is_empty()
    }
}

/// `spec.matchConditions`: kube-apiserver's limit on their number and its rule
/// for their names, then compiled without variables.
fn compile_match_conditions(
    p: &mut Problems,
    conditions: &[NamedExpression],
    scope: &Scope,
    name_line: u64,
) -> Vec<Named> {
    if conditions.len() > validation::MAX_MATCH_CONDITIONS {
        p.push(
            name_line,
            "spec.matchConditions",
            format!(
                "Too many: {}: must have at most {} items",
                conditions.len(),
                validation::MAX_MATCH_CONDITIONS
            ),
        );
    }
    for (i, c) in conditions.iter().enumerate() {
        let field = format!("spec.matchConditions[{i}].name");
        if c.name.is_empty() {
            p.push(c.expression.referenced.line(), field, "Required value");
            continue;
        }
        for m in validation::qualified_name_errors(&c.name) {
            p.push(
                c.expression.referenced.line(),
                field.clone(),
                validation::invalid("", &c.name, &m).message,
            );
        }
    }
    compile_named(p, conditions, "spec.matchConditions", scope, name_line)
}

/// `spec.variables` as compiled: the names and origins later expressions see,
/// and the variables that compiled.
struct Variables {
    /// Every variable's name, in order, compiled or not.
    names: Vec<String>,
    /// What each variable aliases, parallel to `names` (empty if it did not compile).
    origins: Vec<Vec<Origin>>,
    compiled: Vec<Named>,
}

/// Compiles `spec.variables` in order, each in a scope holding the ones before it.
fn compile_variables(
    p: &mut Problems,
    list: &[NamedExpression],
    lookups: &[String],
    params: bool,
    is_vap: bool,
) -> Variables {
    let mut vars = Variables {
        names: Vec::new(),
        origins: Vec::new(),
        compiled: Vec::new(),
    };
    for (i, v) in list.iter().enumerate() {
        check_variable_name(p, i, v, &vars.names, is_vap);
        let field = format!("spec.variables[{i}].expression");
        let scope = Scope {
            variables: &vars.names,
            variable_origins: &vars.origins,
            lookups,
            allow_variables: true,
            params,
            authorizer: true,
        };
        let compiled = if v.expression.value.trim().is_empty() {
            p.push(
                v.expression.referenced.line(),
                field,
                "Required value: expression is not specified",
            );
            None
        } else {
            p.compile(&v.expression, field, &scope, false)
        };
        vars.origins.push(
            compiled
                .as_ref()
                .map(|c| c.origins.clone())
                .unwrap_or_default(),
        );
        vars.names.push(v.name.clone());
        if let Some(c) = compiled {
            vars.compiled.push(Named {
                name: v.name.clone(),
                expression: c,
            });
        }
    }
    vars
}

/// The name of `spec.variables[i]`: a CEL identifier in a VAP, and not one of
/// the `earlier` names.
fn check_variable_name(
    p: &mut Problems,
    i: usize,
    v: &NamedExpression,
    earlier: &[String],
    is_vap: bool,
) {
    // kube-apiserver's rule (its reserved words include `namespace`); a
    // GatePolicy keeps accepting what the gate's CEL accepts.
    if is_vap && !validation::is_cel_identifier(&v.name) {
        p.push(
            v.expression.referenced.line(),
            format!("spec.variables[{i}].name"),
            validation::invalid("", &v.name, "must be a valid CEL identifier").message,
        );
    }
    if earlier.contains(&v.name) {
        p.push(
            v.expression.referenced.line(),
            format!("spec.variables[{i}].name"),
            format!("duplicate variable '{}'", v.name),
        );
    }
}

/// Compiles `spec.validations`; one that does not compile is left out (its
/// message and reason are still checked).
fn compile_validations(
    p: &mut Problems,
    list: &[ValidationSpec],
    scope: &Scope,
    is_vap: bool,
) -> Vec<CompiledValidation> {
    // kube-apiserver declares neither `authorizer` nor (oddly, even with paramKind)
    // `params` for messageExpression: it compiles them with the matchConditions
    // options, which allow params only when paramKind is set. Keep `params` as is.
    let message_scope = Scope {
        authorizer: false,
        ..*scope
    };
    let mut validations = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let line = v.expression.referenced.line();
        let expression = if v.expression.value.trim().is_empty() {
            p.push(
                line,
                format!("spec.validations[{i}].expression"),
                "Required value: expression is not specified",
            );
            None
        } else {
            p.compile(
                &v.expression,
                format!("spec.validations[{i}].expression"),
                scope,
                true,
            )
        };
        let message_expression = v
            .message_expression
            .as_ref()
            .and_then(|m| compile_message_expression(p, i, m, &message_scope));
        if let Some(m) = &v.message {
            let mut out = Vec::new();
            validation::validation_message(m, &format!("spec.validations[{i}].message"), &mut out);
            p.push_all(line, out);
        }
        let reason = validation_reason(p, i, v.reason, line, is_vap);
        if let Some(expression) = expression {
            validations.push(CompiledValidation {
                expression,
                // kube-apiserver trims the message before it uses it.
                message: v.message.as_deref().map(str::trim).map(str::to_string),
                message_expression,
                reason,
            });
        }
    }
    validations
}

/// `spec.validations[i].messageExpression`: blank (but not empty) is an error,
/// either means "none".
fn compile_message_expression(
    p: &mut Problems,
    i: usize,
    m: &Spanned<String>,
    scope: &Scope,
) -> Option<CompiledExpression> {
    let field = format!("spec.validations[{i}].messageExpression");
    if m.value.trim().is_empty() {
        if !m.value.is_empty() {
            p.push(
                m.referenced.line(),
                field,
                validation::invalid("", &m.value, "must be non-empty if specified").message,
            );
        }
        return None;
    }
    p.compile(m, field, scope, true)
}

/// The reason a failed `spec.validations[i]` answers with.
fn validation_reason(
    p: &mut Problems,
    i: usize,
    reason: Option<Reason>,
    line: u64,
    is_vap: bool,
) -> Reason {
    match reason {
        Some(Reason::Unauthorized) if is_vap => {
            p.push(
                line,
                format!("spec.validations[{i}].reason"),
                validation::not_supported("", "Unauthorized", validation::VAP_REASONS).message,
            );
            Reason::Unauthorized
        }
        Some(r) => r,
        // kube-apiserver answers a failed VAP validation without a reason with 422
        // Invalid; a GatePolicy keeps its documented default, 403 Forbidden.
        None if is_vap => Reason::Invalid,
        None => Reason::Forbidden,
    }
}

/// `spec.auditAnnotations`: unique keys (at most 20 in a VAP), each key checked
/// as its kind's rules require, each value expression compiled.
fn compile_audit_annotations(
    p: &mut Problems,
    list: &[AuditAnnotationSpec],
    scope: &Scope,
    is_vap: bool,
    name_line: u64,
) -> Vec<Named> {
    let keys: Vec<String> = list.iter().map(|a| a.key.clone()).collect();
    check_unique(p, name_line, "spec.auditAnnotations", &keys);
    if is_vap && keys.len() > validation::MAX_AUDIT_ANNOTATIONS {
        p.push(
            name_line,
            "spec.auditAnnotations",
            format!(
                "must not have more than {} auditAnnotations",
                validation::MAX_AUDIT_ANNOTATIONS
            ),
        );
    }
    let mut audit_annotations = Vec::new();
    for (i, a) in list.iter().enumerate() {
        check_audit_annotation_key(p, i, a, is_vap);
        if let Some(c) = compile_audit_annotation_value(p, i, a, scope) {
            audit_annotations.push(Named {
                name: a.key.clone(),
                expression: c,
            });
        }
    }
    audit_annotations
}

/// The key of `spec.auditAnnotations[i]`: kube-apiserver's rule for a VAP, the
/// gate's (see [`check_annotation_key`]) for a GatePolicy.
fn check_audit_annotation_key(p: &mut Problems, i: usize, a: &AuditAnnotationSpec, is_vap: bool) {
    let line = a.value_expression.referenced.line();
    let key_field = format!("spec.auditAnnotations[{i}].key");
    if is_vap {
        // kube-apiserver publishes the value as `<policy name>/<key>`, and checks
        // that whole string as a qualified name.
        for m in validation::qualified_name_errors(&format!("{}/{}", p.policy, a.key)) {
            p.push(
                line,
                key_field.clone(),
                validation::invalid("", &a.key, &m).message,
            );
        }
        if super::decision::RESERVED_ANNOTATION_KEYS.contains(&a.key.as_str()) {
            p.push(
                line,
                key_field,
                format!("'{}' is reserved for safety-gate's own audit annotations (a limitation of safety-gate: kube-apiserver accepts it)", a.key),
            );
        }
    } else if let Err(m) = check_annotation_key(&a.key) {
        p.push(line, key_field, m);
    }
}

/// The value expression of `spec.auditAnnotations[i]`: required, at most 5 KiB
/// once trimmed, then compiled.
fn compile_audit_annotation_value(
    p: &mut Problems,
    i: usize,
    a: &AuditAnnotationSpec,
    scope: &Scope,
) -> Option<CompiledExpression> {
    let line = a.value_expression.referenced.line();
    let trimmed = a.value_expression.value.trim();
    let value_field = format!("spec.auditAnnotations[{i}].valueExpression");
    if trimmed.is_empty() {
        p.push(
            line,
            value_field,
            "Required value: valueExpression is not specified",
        );
        return None;
    }
    if trimmed.len() > validation::MAX_VALUE_EXPRESSION_BYTES {
        p.push(
            line,
            value_field,
            format!(
                "Required value: must not exceed {} bytes in length",
                validation::MAX_VALUE_EXPRESSION_BYTES
            ),
        );
        return None;
    }
    p.compile(&a.value_expression, value_field, scope, true)
}

/// `spec.annotate` (GatePolicy only): each key a qualified name, each value an
/// expression or null (remove the annotation). An entry whose expression does
/// not compile is left out.
fn compile_annotate(
    p: &mut Problems,
    annotate: &BTreeMap<String, Spanned<Option<String>>>,
    scope: &Scope,
) -> Vec<(String, Option<CompiledExpression>)> {
    let mut out = Vec::new();
    for (key, value) in annotate {
        let field = format!("spec.annotate[{key}]");
        if let Err(m) = check_qualified_name(key, true) {
            p.push(
                value.referenced.line(),
                field.clone(),
                format!("invalid annotation key: {m}"),
            );
        }
        let compiled = match &value.value {
            None => None,
            Some(src) => {
                let spanned = Spanned {
                    value: src.clone(),
                    referenced: value.referenced,
                    defined: value.defined,
                };
                match p.compile(&spanned, field, scope, true) {
                    Some(c) => Some(c),
                    None => continue,
                }
            }
        };
        out.push((key.clone(), compiled));
    }
    out
}

/// `spec.mutations` (GatePolicy only): JSONPatch expressions, compiled.
fn compile_mutations(
    p: &mut Problems,
    list: &[MutationSpec],
    scope: &Scope,
) -> Vec<CompiledExpression> {
    let mut mutations = Vec::new();
    for (i, m) in list.iter().enumerate() {
        if m.patch_type != "JSONPatch" {
            p.push(
                m.expression.referenced.line(),
                format!("spec.mutations[{i}].patchType"),
                "only JSONPatch is supported",
            );
        }
        if let Some(c) = p.compile(
            &m.expression,
            format!("spec.mutations[{i}].expression"),
            scope,
            true,
        ) {
            mutations.push(c);
        }
    }
    mutations
}

fn compile_named(
    p: &mut Problems,
    list: &[NamedExpression],
    field: &str,
    scope: &Scope,
    name_line: u64,
) -> Vec<Named> {
    let names: Vec<String> = list.iter().map(|n| n.name.clone()).collect();
    check_unique(p, name_line, field, &names);
    list.iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let at = format!("{field}[{i}].expression");
            if n.expression.value.trim().is_empty() {
                p.push(n.expression.referenced.line(), at, "Required value");
                return None;
            }
            p.compile(&n.expression, at, scope, true)
                .map(|expression| Named {
                    name: n.name.clone(),
                    expression,
                })
        })
        .collect()
}

fn check_unique(p: &mut Problems, line: u64, field: &str, names: &[String]) {
    let mut seen = HashSet::new();
    for (i, n) in names.iter().enumerate() {
        if !seen.insert(n) {
            p.push(
                line,
                format!("{field}[{i}].name"),
                format!("duplicate name '{n}'"),
            );
        }
    }
}

/// Checks across the whole set: policy names and audit annotation keys are unique.
fn check_set(policies: &[Policy]) -> Vec<LoadError> {
    let mut errors = Vec::new();
    let mut names: HashMap<&str, &Policy> = HashMap::new();
    let mut keys: BTreeMap<&str, &Policy> = BTreeMap::new();
    for p in policies {
        if let Some(first) = names.insert(p.name.as_str(), p)
            && (first.binding.is_none() || p.binding.is_none())
        {
            errors.push(LoadError {
                file: p.file.clone(),
                line: p.line,
                policy: Some(p.name.clone()),
                field: Some("metadata.name".to_string()),
                message: format!(
                    "duplicate policy name; also defined at {}:{}",
                    first.file.display(),
                    first.line
                ),
            });
        }
        for a in &p.audit_annotations {
            if let Some(first) = keys.insert(a.name.as_str(), p)
                && first.name != p.name
            {
                errors.push(LoadError {
                        file: p.file.clone(),
                        line: p.line,
                        policy: Some(p.name.clone()),
                        field: Some("spec.auditAnnotations".to_string()),
                        message: format!(
                            "audit annotation key '{}' is also used by policy {}; keys must be unique across the loaded policies",
                            a.name, first.name
                        ),
                    });
            }
        }
    }
    errors
}

/// Audit annotation keys become `<webhook name>/<key>`: a qualified name with no `/` of its own.
pub fn check_annotation_key(key: &str) -> Result<(), String> {
    if key.contains('/') {
        return Err(format!(
            "'{key}' must not contain '/': kube-apiserver stores it as <webhook name>/{key}"
        ));
    }
    if super::decision::RESERVED_ANNOTATION_KEYS.contains(&key) {
        return Err(format!(
            "'{key}' is reserved for safety-gate's own audit annotations"
        ));
    }
    check_qualified_name(key, false)
}

/// A Kubernetes qualified name: optional DNS-subdomain prefix and `/`, then ≤ 63 chars.
pub fn check_qualified_name(key: &str, allow_prefix: bool) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) if allow_prefix => (Some(p), n),
        _ => (None, key),
    };
    if let Some(prefix) = prefix
        && !validation::dns1123_subdomain_errors(prefix).is_empty()
    {
        return Err(format!(
            "prefix '{prefix}' of '{key}' must be a DNS subdomain"
        ));
    }
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "'{key}' must have a name part of 1 to 63 characters"
        ));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_ends = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !(ok_chars && ok_ends) {
        return Err(format!(
            "'{key}' must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_keys_follow_kube_apiserver_rules() {
        assert!(check_annotation_key("protected-object").is_ok());
        assert!(check_annotation_key("a/b").is_err());
        assert!(check_annotation_key(&"x".repeat(64)).is_err());
        assert!(check_annotation_key(&"x".repeat(63)).is_ok());
        assert!(check_annotation_key("-bad").is_err());
        assert!(check_annotation_key("validation_failure").is_err());
        assert!(check_qualified_name("safety-gate.dev/last-changed-by", true).is_ok());
        assert!(check_qualified_name("Bad_Prefix/x", true).is_err());
    }
}
