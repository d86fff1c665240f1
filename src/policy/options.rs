//! How one evaluation runs: the global mode, the stage (`/validate` or
//! `/mutate`) and the deadline. Read by evaluation and by the decision it
//! builds.

use std::time::Instant;

/// Global mode: enforce denials, or only report them (a dry run: every
/// would-be denial becomes a warning and an audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    DryRun,
}

impl Mode {
    /// The flag value: `enforce` or `dry-run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::DryRun => "dry-run",
        }
    }
}

/// Which admission stage is evaluated: kube-apiserver calls the gate's
/// `/validate` (validating webhook) and `/mutate` (mutating webhook) paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Validations and audit annotations (`/validate`, review, audit, test).
    Validate,
    /// `annotate` and `mutations` (`/mutate`).
    Mutate,
}

impl Stage {
    /// The gate's HTTP path for this stage: `/validate` or `/mutate`.
    pub fn path(self) -> &'static str {
        match self {
            Stage::Validate => "/validate",
            Stage::Mutate => "/mutate",
        }
    }
}

/// Options of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    pub mode: Mode,
    pub stage: Stage,
    /// Past this instant every remaining evaluation is an error for failurePolicy.
    pub deadline: Option<Instant>,
    /// Record every expression's result, cost and time in each
    /// [`PolicyVerdict::trace`](super::PolicyVerdict) (the playground). Off
    /// for the webhook and the commands: then nothing is recorded.
    pub trace: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            mode: Mode::Enforce,
            stage: Stage::Validate,
            deadline: None,
            trace: false,
        }
    }
}
