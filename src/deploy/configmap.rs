//! The policies ConfigMap: every policy file the loader reads, one key per
//! file, as a `k8s-openapi` ConfigMap in the gate's namespace.

use super::objects::metadata;
use super::{POLICIES_CONFIGMAP, RenderError, Target};
use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::BTreeMap;
use std::path::Path;

/// Largest ConfigMap kube-apiserver stores (etcd's default request limit).
const CONFIGMAP_MAX_BYTES: usize = 1024 * 1024;

/// The policy files as `(ConfigMap key, contents)`: every file the loader
/// reads, keyed by file name. ConfigMap keys cannot hold `/`, so two files
/// of the same name in different subdirectories are an error, not a silent
/// overwrite. `dir` may also be a single file.
///
/// # Errors
/// [`RenderError::PolicyFiles`] when a file or the directory cannot be read,
/// [`RenderError::ConfigMapKey`] when a file name cannot be a key.
pub fn policy_files(dir: &Path) -> Result<BTreeMap<String, String>, RenderError> {
    let files = if dir.is_file() {
        vec![dir.to_path_buf()]
    } else {
        crate::documents::files_in(dir).map_err(|source| RenderError::PolicyFiles {
            path: dir.to_path_buf(),
            source,
        })?
    };
    let mut out = BTreeMap::new();
    for path in files {
        let key = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(RenderError::ConfigMapKey {
                path,
                reason: "a ConfigMap key may only hold letters, digits, '-', '_' and '.'"
                    .to_string(),
            });
        }
        if out.contains_key(&key) {
            return Err(RenderError::ConfigMapKey {
                path,
                reason: format!(
                    "another policy file is also named {key}; ConfigMap keys are file names"
                ),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| RenderError::PolicyFiles {
            path: path.clone(),
            source,
        })?;
        out.insert(key, text);
    }
    Ok(out)
}

/// The ConfigMap the Deployment mounts as its policy directory, holding
/// `data` from [`policy_files`]. Mounted as a directory (not `subPath`), so
/// kubelet swaps in new contents and the server's reload picks them up
/// without a restart.
///
/// # Errors
/// [`RenderError::ConfigMapTooLarge`] when keys and contents add up to more
/// than 1 MiB.
pub fn policies_config_map(
    data: BTreeMap<String, String>,
    target: &Target,
) -> Result<ConfigMap, RenderError> {
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > CONFIGMAP_MAX_BYTES {
        return Err(RenderError::ConfigMapTooLarge(size));
    }
    Ok(ConfigMap {
        metadata: metadata(POLICIES_CONFIGMAP, Some(&target.namespace)),
        data: Some(data),
        ..ConfigMap::default()
    })
}
