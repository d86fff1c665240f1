//! From documents to evaluation units: each document by its kind (lists
//! unpacked), and each ValidatingAdmissionPolicy paired with its bindings.

use super::policy::{Unit, build_policy};
use super::{GATE_API_VERSION, LoadError, LoadNote, VAP_API_VERSION};
use crate::documents::Document;
use crate::policy::Policy;
use crate::policy::model::{
    DocumentHeader, ObjectMeta, ValidatingPolicyDocument, VapBindingDocument,
};
use crate::policy::mutating;
use crate::policy::validation;
use std::collections::{HashMap, HashSet};

/// Kinds that wrap other objects in `items`, as `kubectl get -o yaml` writes them.
fn is_list(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_version, kind),
        ("v1", "List")
            | (
                VAP_API_VERSION,
                "ValidatingAdmissionPolicyList" | "ValidatingAdmissionPolicyBindingList"
            )
    ) || (api_version == VAP_API_VERSION && mutating::load::LIST_KINDS.contains(&kind))
}

#[derive(Default)]
pub(super) struct Loader {
    pub(super) policies: Vec<Policy>,
    /// VAPs wait for their bindings: one evaluation unit per binding, as in Kubernetes.
    vaps: Vec<(Document, ValidatingPolicyDocument)>,
    bindings: Vec<(Document, VapBindingDocument)>,
    pub(super) notes: Vec<LoadNote>,
    /// MutatingAdmissionPolicies and their bindings (see `mutating/load.rs`).
    pub(super) mutating: mutating::load::Pending,
}

impl Loader {
    pub(super) fn add_document(&mut self, doc: &Document) -> Result<(), Vec<LoadError>> {
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
    pub(super) fn bind_vaps(&mut self) -> Vec<LoadError> {
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
    docs: impl Iterator<Item = (&'a Document, &'a ObjectMeta)>,
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
