//! The command line: one module per subcommand; `main` only parses and calls [`run`].
//!
//! Commands: `serve` ([`serve`]), `certs` ([`certs`]), `check` ([`check`]),
//! `manifests` ([`deploy_manifests`]), `test` ([`policytest`]), `review`
//! ([`review`]), `audit` ([`audit`]), `playground` ([`playground`]). Shared by
//! some of them: [`manifest_reader`] (the user's manifests, for review and
//! audit), [`cluster_source`] (where live objects come from), [`report`] (the
//! output formats of review and audit), [`mode`] (`--mode` of serve and
//! manifests) and `apply_merge` (a manifest over its live object, for review).

mod apply_merge;
pub mod audit;
pub mod certs;
pub mod check;
pub mod cluster_source;
pub mod deploy_manifests;
pub mod manifest_reader;
pub mod mode;
pub mod playground;
pub mod policytest;
pub mod report;
pub mod review;
pub mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

const EXITS_REVIEW: &str = "Exit codes: 0 nothing would be denied; 1 something would be denied; \
2 usage or input error (file and line named, or no objects at all); 3 nothing denied, but some \
object needs cluster state that was not given (undecided: pass --live DIR or --cluster).";
const EXITS_AUDIT: &str = "Exit codes: 0 nothing would be denied; 1 something would be denied; \
2 usage or input error (or an empty snapshot); 3 nothing denied, but some object needs cluster \
state the snapshot lacks (undecided).";
const EXITS_TEST: &str =
    "Exit codes: 0 every case passed; 1 a case failed; 2 usage error or a suite that cannot run.";
const EXITS_CHECK: &str = "Exit codes: 0 the policies load; 1 problems found (each with file:line); \
2 usage error (no such path).";
const EXITS_OTHER: &str = "Exit codes: 0 success; 2 usage or input error.";

#[derive(Debug, Parser)]
#[command(
    name = "safety-gate",
    version,
    about = "Admission guardrails for the changes that take Kubernetes clusters down",
    after_help = "Exit codes (every command): 0 clean; 1 violations or failed cases; 2 usage or \
input error; 3 review/audit undecided (cluster state needed). \
As a kubectl plugin: put `kubectl-safety_gate` (a link to this binary) on PATH, then \
`kubectl safety-gate review -f FILE`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// The Kubernetes release (1.30 or later) whose CEL environment policies are checked
    /// against: a function, call style or macro that kube-apiserver of that release
    /// refuses in a new policy is refused at load.
    #[arg(
        long,
        global = true,
        env = "SAFETY_GATE_KUBERNETES_VERSION",
        value_name = "1.MINOR",
        default_value_t = crate::policy::kubernetes_version::KubernetesVersion::PINNED
    )]
    pub kubernetes_version: crate::policy::kubernetes_version::KubernetesVersion,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render the webhook configurations, ClusterRole and policies ConfigMap for deploy/.
    #[command(
        after_help = "Exit codes: 0 success; 1 --check: the files in --out are stale; 2 usage or input error."
    )]
    Manifests(deploy_manifests::ManifestsArgs),
    /// Run the admission webhook over HTTPS.
    #[command(after_help = "Exit codes: 0 stopped cleanly (SIGTERM, Ctrl-C); 2 cannot start.")]
    Serve(serve::ServeArgs),
    /// Write a CA and a serving certificate for <service>.<namespace>.svc; print the caBundle.
    #[command(after_help = EXITS_OTHER)]
    Certs(certs::CertsArgs),
    /// Parse, compile and lint policy files; print every problem with file:line.
    #[command(after_help = EXITS_CHECK)]
    Check(check::CheckArgs),
    /// Run PolicyTest suites (default: tests/policies).
    #[command(after_help = EXITS_TEST)]
    Test(policytest::TestArgs),
    /// Would these manifests be denied, and why? (before kubectl apply)
    #[command(after_help = EXITS_REVIEW)]
    Review(review::ReviewArgs),
    /// Which existing objects would the policies deny? (dry-run audit of a snapshot)
    #[command(after_help = EXITS_AUDIT)]
    Audit(audit::AuditArgs),
    /// A local web page: write policies and a request, see the decision, save it as a PolicyTest.
    #[command(after_help = "Exit codes: 0 stopped cleanly (Ctrl-C, SIGTERM); 2 cannot start.")]
    Playground(playground::PlaygroundArgs),
}

/// Exit codes shared by every command: 0 clean, 1 violations or failures, 2 usage or
/// input errors, 3 (review, audit) undecided: no violation, but some object's decision
/// needs cluster state that was not given.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FINDINGS: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNDECIDED: u8 = 3;

pub fn run(cli: Cli) -> ExitCode {
    crate::policy::kubernetes_version::select(cli.kubernetes_version);
    let code = match cli.command {
        Command::Serve(args) => match serve::run_blocking(args) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                EXIT_USAGE
            }
        },
        Command::Certs(args) => match certs::run(args) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                EXIT_USAGE
            }
        },
        Command::Check(args) => check::run(&args),
        Command::Manifests(args) => deploy_manifests::run(&args),
        Command::Test(args) => policytest::run(&args),
        Command::Review(args) => review::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Playground(args) => match playground::run_blocking(args) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                EXIT_USAGE
            }
        },
    };
    ExitCode::from(code)
}

/// Colour only where [`stdout_is_color_terminal`] says so.
pub(crate) fn paint(text: &str, ansi: &str, enabled: bool) -> String {
    if enabled {
        format!("\x1b[{ansi}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Colour on a terminal, or wherever `CLICOLOR_FORCE` is set to anything but
/// `0` (CI logs that render colour); never when `NO_COLOR` is set.
pub(crate) fn stdout_is_color_terminal() -> bool {
    use std::io::IsTerminal;
    let forced = std::env::var_os("CLICOLOR_FORCE").is_some_and(|v| !v.is_empty() && v != "0");
    (forced || std::io::stdout().is_terminal()) && std::env::var_os("NO_COLOR").is_none()
}

/// The error for a policy path that does not exist: the default `policies`
/// is relative to the working directory, so say how to point elsewhere.
pub(crate) fn missing_policies(dir: &std::path::Path) -> String {
    format!(
        "no policies at {}: no such file or directory (set the policy directory or file with \
         --policies PATH or the SAFETY_GATE_POLICIES environment variable)",
        dir.display()
    )
}

/// `1 policy`, `2 policies`: a count with its noun.
pub(crate) fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Loads the policy set for `review` and `audit`, printing every problem.
pub(crate) fn load_policies(dir: &std::path::Path) -> Option<crate::policy::PolicySet> {
    if !dir.exists() && dir.as_os_str() != crate::documents::STDIN {
        eprintln!("error: {}", missing_policies(dir));
        return None;
    }
    match crate::policy::PolicySet::load_dir(dir) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("{e}\nerror: the policies in {} do not load", dir.display());
            None
        }
    }
}
