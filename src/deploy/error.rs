//! Why a policy set cannot be rendered into deploy objects.

use std::path::PathBuf;

/// Why [`render_all`](super::render_all) and its parts refuse or fail.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A fail-closed policy matches more than a fail-closed webhook may.
    #[error(
        "policy {policy} ({file}): failurePolicy Fail on {what}: {why}. A fail-closed webhook must stay narrow; \
         name the resources and operations, or set failurePolicy: Ignore"
    )]
    BroadFailClosed {
        /// The policy's name.
        policy: String,
        /// `file:line` of its definition.
        file: String,
        /// The atom refused: `OPERATION group/version resource`.
        what: String,
        /// Why such an atom must not fail closed.
        why: &'static str,
    },
    /// A policy file or directory that cannot be read.
    #[error("cannot read the policy files in {}: {source}", path.display())]
    PolicyFiles {
        /// The file or directory.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A policy file whose name cannot be a ConfigMap key.
    #[error("{}: {reason}", path.display())]
    ConfigMapKey {
        /// The policy file.
        path: PathBuf,
        /// What is wrong with its name.
        reason: String,
    },
    /// The policy files (keys and contents, in bytes) exceed a ConfigMap.
    #[error("the policy files add up to {0} bytes; a ConfigMap holds at most 1 MiB")]
    ConfigMapTooLarge(usize),
    /// [`Target::ca_bundle`](super::Target::ca_bundle) is not standard base64.
    #[error("the CA bundle is not base64: {0}")]
    CaBundle(#[from] base64::DecodeError),
    /// An object could not be turned into JSON (k8s-openapi types always can).
    #[error("cannot serialise an object: {0}")]
    Json(#[from] serde_json::Error),
    /// The YAML writer failed.
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_saphyr::ser::Error),
}
