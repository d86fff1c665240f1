//! A per-expression record of one evaluation, kept only when
//! [`EvalOptions::trace`](super::EvalOptions) asks for it (the playground):
//! which expression ran, in which phase, what it returned or which error it
//! raised, its runtime cost in Kubernetes' units and its wall time. With the
//! option off nothing is recorded and nothing is measured beyond what the
//! evaluation measures anyway (the cost).

use kube_cel::cel::Value;
use serde::Serialize;

/// Where in a policy an expression sits, in kube-apiserver's field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TracePhase {
    MatchCondition,
    Exemption,
    Validation,
    MessageExpression,
    AuditAnnotation,
    Annotate,
    Mutation,
}

/// One expression's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpressionTrace {
    pub phase: TracePhase,
    /// Index within its list (`validations[index]`, `matchConditions[index]`, …).
    pub index: usize,
    /// The entry's name where it has one (matchConditions, exemptions, audit
    /// annotation keys, annotate keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The CEL source.
    pub expression: String,
    /// The value as JSON where it has a JSON form (CEL's debug form otherwise);
    /// `None` when the expression raised an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// The evaluation error, as the decision reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Runtime cost in Kubernetes' cost units (variables it evaluated included).
    pub cost: u64,
    /// Wall time of the evaluation, in microseconds.
    pub micros: u64,
}

/// The JSON form of a CEL value for display.
pub(super) fn display_value(value: &Value) -> serde_json::Value {
    super::values::cel_to_json(value)
        .unwrap_or_else(|_| serde_json::Value::String(format!("{value:?}")))
}
