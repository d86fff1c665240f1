//! The real kubectl, run as a user would run it, and the audit log
//! kube-apiserver writes.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the user sees: exit code, stdout and stderr.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Panics with the whole outcome unless kubectl succeeded.
    #[track_caller]
    pub fn expect_ok(&self, what: &str) -> &Self {
        assert!(self.ok(), "{what}: kubectl failed: {self:#?}");
        self
    }

    /// Panics unless kubectl failed.
    #[track_caller]
    pub fn expect_fail(&self, what: &str) -> &Self {
        assert!(!self.ok(), "{what}: kubectl succeeded: {self:#?}");
        self
    }

    /// `Ok(self)` when kubectl succeeded, `Err(stderr)` otherwise: for
    /// [`crate::Env::eventually`].
    pub fn result(self) -> Result<Outcome, String> {
        if self.ok() {
            Ok(self)
        } else {
            Err(self.stderr)
        }
    }

    /// The `Warning: ...` lines kubectl printed.
    pub fn warnings(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("Warning: "))
            .collect()
    }
}

/// kubectl bound to one kubeconfig.
#[derive(Clone)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(bin_dir: &Path, kubeconfig: &Path) -> Self {
        Kubectl {
            bin: bin_dir.join("kubectl"),
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_with_stdin(args, None)
    }

    /// `kubectl ... -f -` with `stdin` as the manifest.
    pub fn apply_stdin(&self, args: &[&str], stdin: &str) -> Outcome {
        self.run_with_stdin(args, Some(stdin))
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Outcome {
        let mut child = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).expect("kubectl stdin");
        }
        let out = child.wait_with_output().expect("kubectl output");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `kubectl get ... -o json`, parsed; `None` when it does not exist.
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.run(&all);
        if !out.ok() {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }
}

/// The audit events (one JSON object a line) written so far.
pub fn audit_events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Audit events at stage ResponseComplete whose verb and object match.
pub fn audit_find<'a>(
    events: &'a [Value],
    verb: &str,
    resource: &str,
    name: &str,
) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["verb"] == verb
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["name"] == name
        })
        .collect()
}
