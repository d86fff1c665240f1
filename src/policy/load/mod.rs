//! Loading a directory of policy files into a [`PolicySet`]: all or nothing.
//!
//! One file per step: `loader.rs` reads each document and pairs
//! ValidatingAdmissionPolicies with their bindings; `policy.rs` checks and
//! compiles one GatePolicy or VAP, with `header.rs` (actions, paramKind,
//! matchConstraints), `variables.rs` (matchConditions, exemptions, variables),
//! `validations.rs` (expressions, messages, reasons), `annotations.rs` (audit
//! annotations) and `extensions.rs` (annotate, mutations); `problems.rs` collects
//! what is wrong with file, line, policy and field. Here: the entry points, the
//! error types, and the checks across the whole set.

mod annotations;
mod extensions;
mod header;
mod loader;
mod policy;
mod problems;
mod validations;
mod variables;

use super::{Policy, PolicySet};
use crate::documents::{Located, files_in, split_documents};
use loader::Loader;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub(super) use problems::is_block_scalar;

/// The apiVersion of a GatePolicy document.
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

/// Loads every policy document of `files`, all or nothing.
///
/// # Errors
/// Every problem found, with file and line: unreadable files first, then each
/// document in order, then the policy/binding pairs; the checks across the set
/// (unique names and audit annotation keys) only when nothing else is wrong.
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
