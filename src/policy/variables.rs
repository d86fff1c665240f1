//! `variables.<name>`, evaluated lazily and at most once per policy evaluation,
//! as in ValidatingAdmissionPolicy.
//!
//! The `cel` crate has no lazy bindings, so each `variables.x` is compiled into
//! a call of [`VARIABLE_FUNCTION`] with the variable's index; the call finds the
//! evaluation's [`VariableTable`] in the scope, evaluates the variable on first
//! use in that same scope, and caches the result. A variable that no taken
//! branch reads is never evaluated, so its errors cannot matter.

use super::Named;
use kube_cel::cel::common::ast::{Expr, LiteralValue};
use kube_cel::cel::objects::Opaque;
use kube_cel::cel::{ExecutionError, FunctionContext, ResolveResult, Value};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const VARIABLE_FUNCTION: &str = "@gate_variable";
/// The scope entry that holds the table; not a name CEL source can spell.
pub const TABLE_BINDING: &str = "@gate_variables";

pub struct VariableTable {
    variables: Arc<[Named]>,
    values: Mutex<Vec<Option<Result<Value, String>>>>,
    deadline: Option<Instant>,
}

impl VariableTable {
    pub fn new(variables: Arc<[Named]>, deadline: Option<Instant>) -> Self {
        let values = Mutex::new(vec![None; variables.len()]);
        VariableTable {
            variables,
            values,
            deadline,
        }
    }

    fn cached(&self, index: usize) -> Option<Result<Value, String>> {
        self.values.lock().ok()?.get(index).cloned().flatten()
    }

    fn store(&self, index: usize, value: Result<Value, String>) {
        if let Ok(mut values) = self.values.lock()
            && let Some(slot) = values.get_mut(index)
        {
            *slot = Some(value);
        }
    }
}

impl fmt::Debug for VariableTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VariableTable({} variables)", self.variables.len())
    }
}

/// Identity equality: two tables are the same only if they are the same evaluation's.
impl PartialEq for VariableTable {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for VariableTable {}

impl Opaque for VariableTable {
    fn runtime_type_name(&self) -> &str {
        "safety-gate.dev/variables"
    }
}

/// The registered function behind every `variables.<name>`.
pub fn variable_function(ftx: &FunctionContext) -> ResolveResult {
    let index = match ftx.args.first().map(|a| &a.expr) {
        Some(Expr::Literal(LiteralValue::Int(i))) => {
            usize::try_from(*i.inner()).map_err(|_| ftx.error("bad variable index"))?
        }
        _ => return Err(ftx.error("bad variable reference")),
    };
    let binding = ftx
        .ptx
        .get_variable(TABLE_BINDING)
        .ok_or_else(|| ftx.error("variables are not available here"))?;
    let Value::Opaque(opaque) = Value::try_from(binding.as_ref())? else {
        return Err(ftx.error("variables are not available here"));
    };
    let Some(table) = opaque.downcast_ref::<VariableTable>() else {
        return Err(ftx.error("variables are not available here"));
    };
    let Some(named) = table.variables.get(index) else {
        return Err(ftx.error("bad variable index"));
    };
    let result = match table.cached(index) {
        Some(r) => r,
        None => {
            let r = if table.deadline.is_some_and(|d| Instant::now() >= d) {
                Err("the request deadline passed before this variable was evaluated".to_string())
            } else {
                // Evaluated in the caller's scope: variables see object, request, … and
                // earlier variables exactly as the expression that reads them does.
                // With a cost count of its own, charged to the policy's budget
                // (kube-apiserver's composition context), not to the reader.
                let measured = super::runtime_cost::measure(|| {
                    Value::resolve(&named.expression.ast, ftx.ptx).map_err(|e| e.to_string())
                });
                super::runtime_cost::add_composition_cost(measured.cost);
                if measured.exceeded {
                    Err(super::runtime_cost::LIMIT_EXCEEDED.to_string())
                } else {
                    measured.value
                }
            };
            #[cfg(test)]
            EVALUATIONS.with(|c| c.set(c.get() + 1));
            table.store(index, r.clone());
            r
        }
    };
    result.map_err(|e| ExecutionError::function_error(&format!("variables.{}", named.name), e))
}

#[cfg(test)]
thread_local! {
    static EVALUATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
pub fn reset_evaluations() {
    EVALUATIONS.with(|c| c.set(0));
}

/// How many variables this thread has evaluated since the last reset (tests only).
#[cfg(test)]
pub fn evaluations() -> usize {
    EVALUATIONS.with(|c| c.get())
}
