//! `--mode` of `serve` and `manifests --native`: the engine's global mode as
//! a command-line value.

use crate::policy::Mode;

/// `enforce` (deny what policies deny) or `dry-run` (deny nothing; report
/// would-be denials as warnings and audit records). `audit`, this mode's
/// name until 0.1, is still accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Enforce,
    #[value(alias = "audit")]
    DryRun,
}

impl From<ModeArg> for Mode {
    fn from(arg: ModeArg) -> Self {
        match arg {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::DryRun => Mode::DryRun,
        }
    }
}
