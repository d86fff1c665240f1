//! Compiling one CEL expression: parse, reject at load what can be known then
//! (`analysis.rs`: what it reads, names it may not use; `type_check.rs`),
//! lower it to what the engine evaluates (`rewrite.rs`) and mark where its
//! runtime cost is charged (`runtime_cost.rs`).

use super::analysis::{self, Origin, Reads, Scope};
use super::rewrite;
use kube_cel::cel::parser::{Expression, Parser};

#[derive(Debug)]
pub struct CompiledExpression {
    pub source: String,
    pub ast: Expression,
    pub reads: Reads,
    /// What the value of the expression aliases (used for variables).
    pub origins: Vec<Origin>,
}

/// A compile error with the position inside the expression (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct CompileError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

/// The longest expression accepted at load.
const MAX_SOURCE_BYTES: usize = 10 * 1024;

/// Parses and checks `source`. `consume_result` is false for variable definitions,
/// whose value is read by the expressions that use them.
pub fn compile(
    source: &str,
    scope: &Scope,
    consume_result: bool,
) -> Result<CompiledExpression, CompileError> {
    compile_lowered(source, scope, consume_result, &|_| Ok(()))
}

/// [`compile`], with `lower` run on the parsed expression before it is checked:
/// MutatingAdmissionPolicy mutations turn `JSONPatch{…}` / `Object{…}` into calls
/// the engine can evaluate (see `mutating/cel.rs`). `lower` errors are compile errors.
pub fn compile_lowered(
    source: &str,
    scope: &Scope,
    consume_result: bool,
    lower: &dyn Fn(&mut Expression) -> Result<(), String>,
) -> Result<CompiledExpression, CompileError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(CompileError {
            message: format!(
                "expression is {} bytes; the limit is {MAX_SOURCE_BYTES}",
                source.len()
            ),
            line: 1,
            column: 1,
        });
    }
    let ast = Parser::new()
        .enable_optional_syntax(true)
        .parse(&super::unary_runs::normalize(source))
        .map_err(|errors| {
            let first = errors.errors.first();
            CompileError {
                message: first
                    .map(|e| e.msg.clone())
                    .unwrap_or_else(|| "syntax error".to_string()),
                line: first.map(|e| e.pos.0.max(1) as usize).unwrap_or(1),
                column: first.map(|e| e.pos.1.max(1) as usize).unwrap_or(1),
            }
        })?;
    let mut ast = ast;
    lower(&mut ast).map_err(|message| {
        CompileError {
            message,
            line: 1,
            column: 1,
        }
        .located_in(source)
    })?;
    super::semantics::expand_two_variable_macros(&mut ast);
    super::macros::expand(&mut ast);
    // What kube-apiserver's type check refuses when the policy is created.
    super::type_check::check(&ast).map_err(|message| CompileError {
        message,
        line: 1,
        column: 1,
    })?;
    let (reads, origins) = analysis::analyze(&ast, scope, consume_result).map_err(|errors| {
        // A feature that is not supported yet explains the errors it causes (the
        // authorizer's functions are undeclared because `authorizer` is): say that first.
        let unsupported = errors
            .iter()
            .position(|e| e.contains("not supported by safety-gate yet"))
            .unwrap_or(0);
        CompileError {
            message: errors.into_iter().nth(unsupported).unwrap_or_default(),
            line: 1,
            column: 1,
        }
        .located_in(source)
    })?;
    rewrite::lower(&mut ast, scope.variables);
    super::semantics::rewrite(&mut ast);
    super::runtime_cost::annotate(&mut ast);
    Ok(CompiledExpression {
        source: source.to_string(),
        ast,
        reads,
        origins: if consume_result { Vec::new() } else { origins },
    })
}

impl CompileError {
    /// Points an analysis error at the first occurrence of the offending name.
    fn located_in(mut self, source: &str) -> Self {
        if let Some(name) = self.message.split('\'').nth(1)
            && let Some(offset) = source.find(name)
        {
            let before = &source[..offset];
            self.line = before.matches('\n').count() + 1;
            self.column = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        }
        self
    }
}
