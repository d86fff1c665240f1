//! Loading a directory of policy files into a [`PolicySet`]: all or nothing.

use super::compile::{CompileError, CompiledExpression, Origin, Scope, compile};
use super::documents::{Document, Located, files_in, split_documents};
use super::matching::Matcher;
use super::model::{
    Action, DocumentHeader, FailurePolicy, GatePolicyDocument, NamedExpression, PolicySpec, Reason,
    VapBindingDocument,
};
use super::{Actions, CompiledValidation, Named, Policy, PolicySet};
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
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
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

pub fn load_files(files: &[PathBuf]) -> Result<PolicySet, LoadErrors> {
    let mut errors = Vec::new();
    let mut documents = Vec::new();
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => documents.extend(split_documents(file, &text)),
            Err(e) => errors.extend(io_error(file, &e).0),
        }
    }
    let mut loader = Loader::default();
    for doc in &documents {
        if let Err(e) = loader.add_document(doc) {
            errors.extend(e);
        }
    }
    errors.extend(loader.bind_vaps());
    if errors.is_empty() {
        errors.extend(check_set(&loader.policies));
    }
    if errors.is_empty() {
        Ok(PolicySet::new(loader.policies))
    } else {
        Err(LoadErrors(errors))
    }
}

#[derive(Default)]
struct Loader {
    policies: Vec<Policy>,
    /// VAPs wait for their bindings: one evaluation unit per binding, as in Kubernetes.
    vaps: Vec<(Document, GatePolicyDocument)>,
    bindings: Vec<(Document, VapBindingDocument)>,
}

impl Loader {
    fn add_document(&mut self, doc: &Document) -> Result<(), Vec<LoadError>> {
        let header: DocumentHeader = doc.decode().map_err(|e| vec![LoadError::from(e)])?;
        let api_version = header.api_version.unwrap_or_default();
        let kind = header.kind.unwrap_or_default();
        match (api_version.as_str(), kind.as_str()) {
            (GATE_API_VERSION, "GatePolicy") => {
                let parsed: GatePolicyDocument =
                    doc.decode().map_err(|e| vec![LoadError::from(e)])?;
                let policy = build_policy(doc, parsed, None)?;
                self.policies.push(policy);
                Ok(())
            }
            (VAP_API_VERSION, "ValidatingAdmissionPolicy") => {
                let parsed: GatePolicyDocument =
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
            _ => Err(vec![LoadError {
                file: doc.file.clone(),
                line: doc.first_line,
                policy: None,
                field: Some("kind".to_string()),
                message: format!(
                    "unknown document kind '{kind}' (apiVersion '{api_version}'); expected GatePolicy ({GATE_API_VERSION}) or ValidatingAdmissionPolicy / ValidatingAdmissionPolicyBinding ({VAP_API_VERSION})"
                ),
            }]),
        }
    }

    fn bind_vaps(&mut self) -> Vec<LoadError> {
        let mut errors = Vec::new();
        let vaps = std::mem::take(&mut self.vaps);
        let mut bound: HashSet<String> = HashSet::new();
        for (bdoc, binding) in std::mem::take(&mut self.bindings) {
            let Some((vdoc, vap)) = vaps
                .iter()
                .find(|(_, v)| v.metadata.name.value == binding.spec.policy_name)
            else {
                errors.push(LoadError {
                    file: bdoc.file.clone(),
                    line: bdoc.line(binding.metadata.name.referenced.line()),
                    policy: Some(binding.metadata.name.value.clone()),
                    field: Some("spec.policyName".to_string()),
                    message: format!(
                        "no ValidatingAdmissionPolicy named '{}' is loaded",
                        binding.spec.policy_name
                    ),
                });
                continue;
            };
            bound.insert(vap.metadata.name.value.clone());
            match reparse_vap(vdoc).and_then(|v| build_policy(vdoc, v, Some((&bdoc, &binding)))) {
                Ok(p) => self.policies.push(p),
                Err(e) => errors.extend(e),
            }
        }
        for (vdoc, vap) in &vaps {
            if !bound.contains(&vap.metadata.name.value) {
                // Kubernetes evaluates a VAP only through a binding; say so rather than silently ignore it.
                errors.push(LoadError {
                    file: vdoc.file.clone(),
                    line: vdoc.line(vap.metadata.name.referenced.line()),
                    policy: Some(vap.metadata.name.value.clone()),
                    field: None,
                    message: "ValidatingAdmissionPolicy has no ValidatingAdmissionPolicyBinding; add one (policyName, validationActions)".to_string(),
                });
            }
        }
        errors
    }
}

fn reparse_vap(doc: &Document) -> Result<GatePolicyDocument, Vec<LoadError>> {
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

fn is_block_scalar(doc: &Document, line_in_doc: u64) -> bool {
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

fn build_policy(
    doc: &Document,
    parsed: GatePolicyDocument,
    binding: Option<(&Document, &VapBindingDocument)>,
) -> Result<Policy, Vec<LoadError>> {
    let name = parsed.metadata.name.value.clone();
    let name_line = parsed.metadata.name.referenced.line();
    let mut p = Problems {
        doc,
        policy: name.clone(),
        errors: Vec::new(),
    };
    if !is_dns_subdomain(&name) {
        p.push(
            name_line,
            "metadata.name",
            "must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')",
        );
    }
    let spec: PolicySpec = parsed.spec;
    let (actions, action_label) = match binding {
        None => {
            let action = spec.action.unwrap_or_default();
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
        Some((bdoc, b)) => {
            for (field, present) in [
                ("spec.action", spec.action.is_some()),
                ("spec.lookups", !spec.lookups.is_empty()),
                ("spec.exemptions", !spec.exemptions.is_empty()),
                ("spec.annotate", !spec.annotate.is_empty()),
                ("spec.mutations", !spec.mutations.is_empty()),
            ] {
                if present {
                    p.push(name_line, field, "is a GatePolicy extension; a ValidatingAdmissionPolicy cannot use it (write a GatePolicy instead)");
                }
            }
            let mut actions = Actions::default();
            for a in &b.spec.validation_actions {
                match a.as_str() {
                    "Deny" => actions.deny = true,
                    "Warn" => actions.warn = true,
                    "Audit" => actions.audit = true,
                    other => p.errors.push(LoadError {
                        file: bdoc.file.clone(),
                        line: bdoc.line(b.metadata.name.referenced.line()),
                        policy: Some(b.metadata.name.value.clone()),
                        field: Some("spec.validationActions".to_string()),
                        message: format!("unknown action '{other}' (Deny, Warn, Audit)"),
                    }),
                }
            }
            if actions.deny && actions.warn || b.spec.validation_actions.is_empty() {
                p.errors.push(LoadError {
                    file: bdoc.file.clone(),
                    line: bdoc.line(b.metadata.name.referenced.line()),
                    policy: Some(b.metadata.name.value.clone()),
                    field: Some("spec.validationActions".to_string()),
                    message:
                        "must be a non-empty set of Deny, Warn, Audit, and not both Deny and Warn"
                            .to_string(),
                });
            }
            if b.spec.param_ref.is_some() {
                p.push(
                    name_line,
                    "spec.paramRef",
                    "parameters are not supported by safety-gate",
                );
            }
            (actions, b.spec.validation_actions.join(","))
        }
    };
    if spec.param_kind.is_some() {
        p.push(
            name_line,
            "spec.paramKind",
            "parameters are not supported by safety-gate",
        );
    }

    let match_resources = spec.match_constraints.clone().unwrap_or_default();
    let binding_resources = binding.and_then(|(_, b)| b.spec.match_resources.clone());
    let matcher = match Matcher::new(&match_resources, binding_resources.as_ref()) {
        Ok(m) => m,
        Err(message) => {
            p.push(name_line, "spec.matchConstraints", message);
            Matcher::never()
        }
    };
    if match_resources.resource_rules.is_empty() {
        p.push(
            name_line,
            "spec.matchConstraints.resourceRules",
            "at least one rule is required (a policy that matches nothing protects nothing)",
        );
    }

    let lookup_names: Vec<String> = spec.lookups.iter().map(|l| l.name.clone()).collect();
    check_unique(&mut p, name_line, "spec.lookups", &lookup_names);

    let no_vars: Vec<String> = Vec::new();
    let no_origins: Vec<Vec<Origin>> = Vec::new();
    let early_scope = Scope {
        variables: &no_vars,
        variable_origins: &no_origins,
        variable_ranges: &[],
        lookups: &lookup_names,
        allow_variables: false,
    };
    let match_conditions = compile_named(
        &mut p,
        &spec.match_conditions,
        "spec.matchConditions",
        &early_scope,
        name_line,
    );
    let exemptions = compile_named(
        &mut p,
        &spec.exemptions,
        "spec.exemptions",
        &early_scope,
        name_line,
    );

    let mut variable_names = Vec::new();
    let mut variable_origins = Vec::new();
    let mut variable_ranges = Vec::new();
    let mut variables = Vec::new();
    for (i, v) in spec.variables.iter().enumerate() {
        let field = format!("spec.variables[{i}].expression");
        if variable_names.contains(&v.name) {
            p.push(
                v.expression.referenced.line(),
                format!("spec.variables[{i}].name"),
                format!("duplicate variable '{}'", v.name),
            );
        }
        let scope = Scope {
            variables: &variable_names,
            variable_origins: &variable_origins,
            variable_ranges: &variable_ranges,
            lookups: &lookup_names,
            allow_variables: true,
        };
        let compiled = p.compile(&v.expression, field, &scope, false);
        variable_origins.push(
            compiled
                .as_ref()
                .map(|c| c.origins.clone())
                .unwrap_or_default(),
        );
        variable_ranges.push(compiled.as_ref().and_then(|c| c.range.clone()));
        variable_names.push(v.name.clone());
        if let Some(c) = compiled {
            variables.push(Named {
                name: v.name.clone(),
                expression: c,
            });
        }
    }
    let scope = Scope {
        variables: &variable_names,
        variable_origins: &variable_origins,
        variable_ranges: &variable_ranges,
        lookups: &lookup_names,
        allow_variables: true,
    };

    let mut validations = Vec::new();
    for (i, v) in spec.validations.iter().enumerate() {
        let expression = p.compile(
            &v.expression,
            format!("spec.validations[{i}].expression"),
            &scope,
            true,
        );
        let message_expression = v.message_expression.as_ref().and_then(|m| {
            p.compile(
                m,
                format!("spec.validations[{i}].messageExpression"),
                &scope,
                true,
            )
        });
        if let Some(m) = &v.message {
            if m.contains('\n') {
                p.push(
                    v.expression.referenced.line(),
                    format!("spec.validations[{i}].message"),
                    "must not contain line breaks",
                );
            }
        } else if v.expression.value.trim().contains('\n') && v.message_expression.is_none() {
            p.push(
                v.expression.referenced.line(),
                format!("spec.validations[{i}].message"),
                "is required when the expression spans several lines",
            );
        }
        if let Some(expression) = expression {
            validations.push(CompiledValidation {
                expression,
                message: v.message.clone(),
                message_expression,
                reason: v.reason.unwrap_or(Reason::Forbidden),
            });
        }
    }

    let mut audit_annotations = Vec::new();
    let keys: Vec<String> = spec
        .audit_annotations
        .iter()
        .map(|a| a.key.clone())
        .collect();
    check_unique(&mut p, name_line, "spec.auditAnnotations", &keys);
    for (i, a) in spec.audit_annotations.iter().enumerate() {
        if let Err(m) = check_annotation_key(&a.key) {
            p.push(
                a.value_expression.referenced.line(),
                format!("spec.auditAnnotations[{i}].key"),
                m,
            );
        }
        if let Some(c) = p.compile(
            &a.value_expression,
            format!("spec.auditAnnotations[{i}].valueExpression"),
            &scope,
            true,
        ) {
            audit_annotations.push(Named {
                name: a.key.clone(),
                expression: c,
            });
        }
    }

    let mut annotate = Vec::new();
    for (key, value) in &spec.annotate {
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
                match p.compile(&spanned, field, &scope, true) {
                    Some(c) => Some(c),
                    None => continue,
                }
            }
        };
        annotate.push((key.clone(), compiled));
    }

    let mut mutations = Vec::new();
    for (i, m) in spec.mutations.iter().enumerate() {
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
            &scope,
            true,
        ) {
            mutations.push(c);
        }
    }
    if validations.is_empty()
        && audit_annotations.is_empty()
        && annotate.is_empty()
        && mutations.is_empty()
        && p.errors.is_empty()
    {
        p.push(
            name_line,
            "spec",
            "a policy needs validations, auditAnnotations, annotate or mutations",
        );
    }

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
        binding: binding.map(|(_, b)| b.metadata.name.value.clone()),
        file: doc.file.clone(),
        line: doc.line(name_line),
        description,
        actions,
        action_label,
        failure_policy: spec.failure_policy.unwrap_or(FailurePolicy::Fail),
        matcher,
        match_conditions,
        variables,
        lookups: spec.lookups.clone(),
        exemptions,
        validations,
        audit_annotations,
        annotate,
        mutations,
    }))
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
            p.compile(
                &n.expression,
                format!("{field}[{i}].expression"),
                scope,
                true,
            )
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
        && !is_dns_subdomain(prefix)
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

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
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
