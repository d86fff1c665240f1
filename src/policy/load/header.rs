//! The fields of a policy around its expressions: its actions (or, in a VAP,
//! the GatePolicy-only fields it must not use), `paramKind` and
//! `matchConstraints`.

use super::problems::Problems;
use crate::policy::Actions;
use crate::policy::matching::Matcher;
use crate::policy::model::{Action, MatchResources, ParamKind, PolicySpec, VapBindingDocument};
use crate::policy::validation;

/// What a policy's fields other than metadata and expressions give the engine.
pub(super) struct Header {
    pub(super) actions: Actions,
    /// The actions as the policy's outcomes show them (`Deny`, `Warn,Audit`, ...).
    pub(super) action_label: String,
    pub(super) matcher: Matcher,
}

/// Checks the fields around the expressions, in field order: the actions (or, in
/// a VAP, the GatePolicy-only fields), paramKind, matchConstraints.
pub(super) fn check_header(
    p: &mut Problems,
    spec: &PolicySpec,
    binding: Option<&VapBindingDocument>,
    is_vap: bool,
    name_line: u64,
) -> Header {
    let (actions, action_label) = if is_vap {
        reject_gate_extensions(p, spec, name_line);
        vap_actions(binding)
    } else {
        gate_actions(spec.action.unwrap_or_default())
    };
    check_param_kind(p, spec.param_kind.as_ref(), is_vap, name_line);
    let matcher = build_matcher(
        p,
        spec.match_constraints.as_ref(),
        binding,
        is_vap,
        name_line,
    );
    Header {
        actions,
        action_label,
        matcher,
    }
}

/// A GatePolicy's single `action` (default Deny) as the engine's action set and
/// the label its outcomes show.
fn gate_actions(action: Action) -> (Actions, String) {
    let label = match action {
        Action::Deny => "Deny",
        Action::Warn => "Warn",
        Action::Audit => "Audit",
    };
    (
        Actions {
            deny: action == Action::Deny,
            warn: action == Action::Warn,
            audit: action == Action::Audit,
        },
        label.to_string(),
    )
}

/// A VAP's actions come from its binding's `validationActions` (none without a
/// binding); the label is that list joined with commas, as written.
fn vap_actions(binding: Option<&VapBindingDocument>) -> (Actions, String) {
    // The binding itself was checked by `check_binding`.
    let list = binding
        .map(|b| b.spec.validation_actions.clone())
        .unwrap_or_default();
    let actions = Actions {
        deny: list.iter().any(|a| a == "Deny"),
        warn: list.iter().any(|a| a == "Warn"),
        audit: list.iter().any(|a| a == "Audit"),
    };
    (actions, list.join(","))
}

/// A VAP may not use the fields only a GatePolicy has: one error per field used.
fn reject_gate_extensions(p: &mut Problems, spec: &PolicySpec, name_line: u64) {
    for (field, present) in [
        ("spec.action", spec.action.is_some()),
        ("spec.lookups", !spec.lookups.is_empty()),
        ("spec.exemptions", !spec.exemptions.is_empty()),
        ("spec.annotate", !spec.annotate.is_empty()),
        ("spec.mutations", !spec.mutations.is_empty()),
        (
            "spec.denyBeforeObjectValidation",
            spec.deny_before_object_validation,
        ),
    ] {
        if present {
            p.push(name_line, field, "is a GatePolicy extension; a ValidatingAdmissionPolicy cannot use it (write a GatePolicy instead)");
        }
    }
}

/// `spec.paramKind`: checked as kube-apiserver checks it in a VAP; refused in a
/// GatePolicy, which has no binding to select parameters.
fn check_param_kind(p: &mut Problems, kind: Option<&ParamKind>, is_vap: bool, name_line: u64) {
    match (kind, is_vap) {
        (Some(kind), true) => {
            let mut field_errors = Vec::new();
            validation::param_kind(kind, "spec.paramKind", &mut field_errors);
            p.push_all(name_line, field_errors);
        }
        (Some(_), false) => p.push(
            name_line,
            "spec.paramKind",
            "parameters are for a ValidatingAdmissionPolicy, whose binding's paramRef selects them (a GatePolicy reads cluster objects with `lookups`)",
        ),
        (None, _) => {}
    }
}

/// `spec.matchConstraints` (narrowed by the binding's `matchResources`) as a
/// [`Matcher`]; one that matches nothing if they are invalid, which is then reported.
fn build_matcher(
    p: &mut Problems,
    constraints: Option<&MatchResources>,
    binding: Option<&VapBindingDocument>,
    is_vap: bool,
    name_line: u64,
) -> Matcher {
    // kube-apiserver's checks of the match constraints (for a GatePolicy too: the
    // fields mean the same), then the gate's own compilation of them.
    let mut field_errors = Vec::new();
    let match_resources = constraints.cloned().unwrap_or_default();
    if is_vap && constraints.is_none() {
        field_errors.push(validation::required("spec.matchConstraints", ""));
    } else {
        validation::match_resources(&match_resources, "spec.matchConstraints", &mut field_errors);
        if match_resources.resource_rules.is_empty() {
            field_errors.push(validation::required(
                "spec.matchConstraints.resourceRules",
                "at least one rule is required (it gives the expressions their types; a policy that matches nothing protects nothing)",
            ));
        }
    }
    let binding_resources = binding.and_then(|b| b.spec.match_resources.clone());
    let matcher_ok = field_errors.is_empty();
    p.push_all(name_line, field_errors);
    match Matcher::new(&match_resources, binding_resources.as_ref()) {
        Ok(m) => m,
        Err(message) => {
            if matcher_ok {
                p.push(name_line, "spec.matchConstraints", message);
            }
            Matcher::never()
        }
    }
}
