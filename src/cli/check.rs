//! `safety-gate check`: load and compile a policy directory, report every problem.

use super::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};
use crate::documents::STDIN;
use crate::policy::PolicySet;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Directory (searched recursively) or file of policies; `-` reads stdin.
    /// Overrides --policies.
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Directory (searched recursively) or file of policies.
    #[arg(long, default_value = "policies", env = "SAFETY_GATE_POLICIES")]
    pub policies: PathBuf,
    /// Print the ClusterRole the loaded policies' lookups need (get/list/watch), then exit.
    #[arg(long)]
    pub print_rbac: bool,
}

pub fn run(args: &CheckArgs) -> u8 {
    let policies = args.path.as_ref().unwrap_or(&args.policies);
    if !policies.exists() && policies.as_os_str() != STDIN {
        eprintln!("error: {}", super::missing_policies(policies));
        return EXIT_USAGE;
    }
    match PolicySet::load_dir(policies) {
        Ok(set) if args.print_rbac => {
            match crate::deploy::rbac::cluster_role_yaml(&set.cluster_needs(), "safety-gate") {
                Ok(yaml) => {
                    print!("{yaml}");
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_USAGE
                }
            }
        }
        Ok(set) => {
            for note in set.notes() {
                println!("{note}");
            }
            for p in set.policies() {
                println!(
                    "ok  {} ({}:{}, action {}, failurePolicy {:?})",
                    p.name,
                    p.file.display(),
                    p.line,
                    p.action_label,
                    p.failure_policy
                );
            }
            for p in set.mutating_policies() {
                println!(
                    "ok  {} ({}:{}, MutatingAdmissionPolicy with binding {}, failurePolicy {:?})",
                    p.name,
                    p.file.display(),
                    p.line,
                    p.binding,
                    p.failure_policy
                );
            }
            println!(
                "{} loaded from {}, no problems",
                super::count(set.len(), "policy", "policies"),
                policies.display()
            );
            EXIT_OK
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!(
                "{} problem(s); the policy set was not loaded",
                errors.0.len()
            );
            EXIT_FINDINGS
        }
    }
}
