//! Shared by the fuzz targets (`fuzz_targets/`): the shipped policies and a
//! cluster state loaded once per process, the in-process review path the
//! HTTP handler calls, and a structure-aware AdmissionReview shape.
//!
//! Every target drives the library through the same public functions the
//! server and the CLI call, so a crash here is a crash there.

pub mod shape;

use safety_gate::admission;
use safety_gate::cluster::Snapshot;
use safety_gate::policy::{Mode, PolicySet, Stage};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository this fuzz crate lives in (compile-time path: the targets
/// are built and run in the same clone).
pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `policies/` as the Deployment ships it, loaded once. A set that does not
/// load is a broken checkout, not a finding: the process stops with the
/// loader's message.
pub fn shipped_policies() -> &'static PolicySet {
    static POLICIES: OnceLock<PolicySet> = OnceLock::new();
    POLICIES.get_or_init(|| match PolicySet::load_dir(&repo().join("policies")) {
        Ok(set) => set,
        Err(e) => panic!("the shipped policies do not load: {e}"),
    })
}

/// Namespaces, workloads, RBAC objects and the rest of the PolicyTest
/// fixtures: the cluster state the shipped policies' namespace selectors and
/// lookups read, so reviews get past them into the validations.
pub fn cluster_state() -> &'static Snapshot {
    static STATE: OnceLock<Snapshot> = OnceLock::new();
    STATE.get_or_init(
        || match Snapshot::load_dir(&repo().join("tests/policies/fixtures")) {
            Ok(state) => state,
            Err(e) => panic!("the PolicyTest fixtures do not load as cluster state: {e}"),
        },
    )
}

/// One AdmissionReview body through `/validate` and `/mutate` as the HTTP
/// handler runs it ([`admission::review`], no deadline: a slow input must
/// show as a libFuzzer timeout, not end quietly at the deadline), then the
/// deadline fallback. A body the decoder refuses is a 400 there; here it just
/// ends the input. Whatever the engine answers must be a JSON AdmissionReview.
pub fn review_body(policies: &PolicySet, body: &[u8], mode: Mode) {
    for endpoint in [Stage::Validate, Stage::Mutate] {
        let Ok(outcome) = admission::review(policies, cluster_state(), mode, endpoint, body, None)
        else {
            return;
        };
        check_response(&outcome.response);
    }
    if let Ok(outcome) =
        admission::deadline_exceeded_response(body, policies, mode, Stage::Validate)
    {
        check_response(&outcome.response);
    }
}

/// kube-apiserver rejects a webhook answer that is not an AdmissionReview
/// with a `response`: that would be a failed call for every request.
fn check_response(response: &[u8]) {
    let parsed: serde_json::Value = match serde_json::from_slice(response) {
        Ok(v) => v,
        Err(e) => panic!("the response is not JSON: {e}"),
    };
    assert_eq!(parsed["kind"], "AdmissionReview", "response: {parsed}");
    assert!(
        parsed["response"]["allowed"].is_boolean(),
        "response without allowed: {parsed}"
    );
}

/// A scratch directory for the targets whose code under test reads files
/// (the `review` and `test` commands): one per process, below `fuzz/scratch/`
/// (git-ignored; `fuzz/run.sh` removes it). Links in it make the relative
/// references of the seeds resolve for an input written to
/// `<scratch>/a/b/`: `../../policies` (the repository's PolicyTest suites),
/// `fixtures/` (their cluster state), `policies/` and `params/` (the
/// examples'), and, when `../shared/vap-corpus` is there, `../docs`,
/// `../bindings`, `../params`, `objects/` and `cluster/` (its suites). The
/// links are read at run time; nothing is copied.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo()
            .join("fuzz/scratch")
            .join(std::process::id().to_string());
        for sub in ["inputs", "a/b"] {
            if let Err(e) = std::fs::create_dir_all(dir.join(sub)) {
                panic!("cannot create {}: {e}", dir.join(sub).display());
            }
        }
        let vap_corpus = repo().join("../shared/vap-corpus");
        let links = [
            ("policies", repo().join("policies")),
            ("a/b/fixtures", repo().join("tests/policies/fixtures")),
            ("a/b/policies", repo().join("examples/policies")),
            ("a/b/params", repo().join("tests/fixtures/params/params")),
            ("a/docs", vap_corpus.join("docs")),
            ("a/bindings", vap_corpus.join("bindings")),
            ("a/params", vap_corpus.join("params")),
            ("a/b/objects", vap_corpus.join("cases/objects")),
            ("a/b/cluster", vap_corpus.join("cases/cluster")),
        ];
        for (name, target) in links {
            let link = dir.join(name);
            if target.exists()
                && !link.exists()
                && let Err(e) = std::os::unix::fs::symlink(&target, &link)
            {
                panic!("cannot link {}: {e}", link.display());
            }
        }
        dir
    })
}

/// Writes `text` to `scratch_dir()/<name>` and returns that path.
pub fn write_input(name: &str, text: &str) -> PathBuf {
    let path = scratch_dir().join(name);
    if let Err(e) = std::fs::write(&path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
    path
}

/// A cheap, stable hash of the input: the targets that read repository
/// fixtures as seeds pick their options (output format, operation) from it,
/// so a seed file stays a well-formed document.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
