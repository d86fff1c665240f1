//! Policy hot reload: poll `--policies DIR`, and swap in a new [`PolicySet`]
//! only when every file loads and compiles.
//!
//! Polling compares file contents (not mtimes) because ConfigMap volumes are
//! updated through a `..data` symlink swap that keeps mtimes of the visible
//! names, and because two edits within one second must not be missed.

use crate::policy::{LoadErrors, PolicySet};
use arc_swap::ArcSwap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The set requests are evaluated against. A request takes one `Arc` of it
/// for its whole evaluation, so a reload never mixes two sets in one decision.
#[derive(Debug)]
pub struct ServingPolicies {
    pub set: PolicySet,
    /// 1 for the set loaded at startup, +1 for each successful reload.
    pub generation: u64,
    pub loaded_at: SystemTime,
}

/// The last reload that failed, kept until a later reload succeeds.
#[derive(Debug, Clone)]
pub struct ReloadFailure {
    pub at: SystemTime,
    /// One line per problem: `file:line: policy X: field: message`.
    pub errors: Vec<String>,
}

/// What changed on a poll.
#[derive(Debug)]
pub enum ReloadOutcome {
    Unchanged,
    Reloaded { generation: u64, policies: usize },
    Failed(LoadErrors),
}

pub struct PolicyStore {
    dir: PathBuf,
    current: ArcSwap<ServingPolicies>,
    last_failure: Mutex<Option<ReloadFailure>>,
    fingerprint: Mutex<Option<u64>>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl PolicyStore {
    /// Loads the directory once; startup fails if it does not load.
    pub fn load(dir: &Path) -> Result<PolicyStore, LoadErrors> {
        let before = fingerprint(dir);
        let set = PolicySet::load_dir(dir)?;
        let after = fingerprint(dir);
        Ok(PolicyStore {
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(ServingPolicies {
                set,
                generation: 1,
                loaded_at: SystemTime::now(),
            }),
            last_failure: Mutex::new(None),
            // An edit during the load makes the two differ: reload on the first poll.
            fingerprint: Mutex::new((before == after).then_some(after)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn current(&self) -> Arc<ServingPolicies> {
        self.current.load_full()
    }

    pub fn last_failure(&self) -> Option<ReloadFailure> {
        self.last_failure
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Reloads if the files changed since the last attempt. Blocking: reads
    /// and compiles the policies, so call it off the async reactor.
    pub fn poll(&self) -> ReloadOutcome {
        let before = fingerprint(&self.dir);
        {
            let last = lock(&self.fingerprint);
            if *last == Some(before) {
                return ReloadOutcome::Unchanged;
            }
        }
        let result = PolicySet::load_dir(&self.dir);
        let after = fingerprint(&self.dir);
        // Remember the files only if they did not move under the load; if they
        // did, the next poll sees a difference and loads again.
        *lock(&self.fingerprint) = (before == after).then_some(after);
        match result {
            Ok(set) => {
                let generation = self.current.load().generation + 1;
                let policies = set.len();
                self.current.store(Arc::new(ServingPolicies {
                    set,
                    generation,
                    loaded_at: SystemTime::now(),
                }));
                *lock(&self.last_failure) = None;
                ReloadOutcome::Reloaded {
                    generation,
                    policies,
                }
            }
            Err(errors) => {
                *lock(&self.last_failure) = Some(ReloadFailure {
                    at: SystemTime::now(),
                    errors: errors.to_string().lines().map(str::to_string).collect(),
                });
                ReloadOutcome::Failed(errors)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are plain data that stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A hash of every file the loader would read (names and contents), or of the
/// error that prevented reading them.
fn fingerprint(path: &Path) -> u64 {
    let mut hasher = DefaultHasher::new();
    let files = if path.is_dir() {
        crate::documents::files_in(path)
    } else {
        Ok(vec![path.to_path_buf()])
    };
    match files {
        Ok(files) => {
            for file in files {
                file.hash(&mut hasher);
                match std::fs::read(&file) {
                    Ok(bytes) => bytes.hash(&mut hasher),
                    Err(e) => e.kind().to_string().hash(&mut hasher),
                }
            }
        }
        Err(e) => e.kind().to_string().hash(&mut hasher),
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_sees_same_size_edits_and_new_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, "x: 1\n").expect("write");
        let f1 = fingerprint(dir.path());
        std::fs::write(&a, "x: 2\n").expect("write");
        let f2 = fingerprint(dir.path());
        assert_ne!(f1, f2);
        std::fs::write(dir.path().join("b.yml"), "y: 1\n").expect("write");
        assert_ne!(f2, fingerprint(dir.path()));
        let f3 = fingerprint(dir.path());
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        assert_eq!(
            f3,
            fingerprint(dir.path()),
            "files the loader skips do not count"
        );
    }
}
