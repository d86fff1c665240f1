//! Compiling one CEL expression: parse, reject at load what can be known then,
//! work out what the expression reads so that evaluation decodes only that, and
//! mark where its runtime cost is charged (`runtime_cost.rs`).

use super::cel_env;
use super::kubernetes_version;
use kube_cel::cel::common::ast::{EntryExpr, Expr, LiteralValue, operators};
use kube_cel::cel::parser::{Expression, Parser};

/// Roots of the data a policy can read, other than `request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataRoot {
    Object,
    OldObject,
    NamespaceObject,
    /// `lookups.<name>`, by index into the policy's lookups.
    Lookup(usize),
    /// `params`: the param object of this evaluation (null without one).
    Params,
}

/// Which top-level names an expression may use, depending on the field it sits in.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Variables defined before this expression (VAP: a variable sees earlier ones only).
    pub variables: &'a [String],
    /// Variable origins, parallel to `variables`.
    pub variable_origins: &'a [Vec<Origin>],
    pub lookups: &'a [String],
    pub allow_variables: bool,
    /// The policy declares `paramKind`: kube-apiserver declares `params` then, and
    /// only then (elsewhere it is an undeclared reference there too).
    pub params: bool,
    /// kube-apiserver declares `authorizer` here (not in messageExpression).
    pub authorizer: bool,
}

/// A value that aliases a subtree of input data.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub root: DataRoot,
    pub path: Vec<String>,
}

/// What one expression reads besides `object`, `oldObject` and `request`
/// (those are decoded lazily, at first access, whatever the analysis says).
#[derive(Debug, Clone, Default)]
pub struct Reads {
    /// `namespaceObject` is read: its Namespace must be fetched from cluster state.
    pub namespace_object: bool,
    /// `authorizer` is used: the gate needs to create SubjectAccessReviews.
    pub authorizer: bool,
    pub variables: Vec<usize>,
    pub lookups: Vec<usize>,
}

impl Reads {
    fn mark(&mut self, origin: &Origin) {
        match origin.root {
            DataRoot::Object | DataRoot::OldObject | DataRoot::Params => {}
            DataRoot::NamespaceObject => self.namespace_object = true,
            DataRoot::Lookup(i) => {
                if !self.lookups.contains(&i) {
                    self.lookups.push(i);
                }
            }
        }
    }

    pub fn merge(&mut self, other: &Reads) {
        self.namespace_object |= other.namespace_object;
        self.authorizer |= other.authorizer;
        for v in &other.variables {
            if !self.variables.contains(v) {
                self.variables.push(*v);
            }
        }
        for l in &other.lookups {
            if !self.lookups.contains(l) {
                self.lookups.push(*l);
            }
        }
    }
}

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

/// Names a comprehension may not rebind: expressions and variables must see the real ones.
const RESERVED: &[&str] = &[
    "object",
    "oldObject",
    "request",
    "namespaceObject",
    "variables",
    "lookups",
    "params",
    "authorizer",
];

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
    let mut analysis = Analysis {
        scope,
        reads: Reads::default(),
        locals: Vec::new(),
        errors: Vec::new(),
    };
    let origins = analysis.walk(&ast);
    if consume_result {
        analysis.consume(&origins);
    }
    // A feature that is not supported yet explains the errors it causes (the
    // authorizer's functions are undeclared because `authorizer` is): say that first.
    let unsupported = analysis
        .errors
        .iter()
        .position(|e| e.contains("not supported by safety-gate yet"))
        .unwrap_or(0);
    if let Some(message) = analysis.errors.into_iter().nth(unsupported) {
        return Err(CompileError {
            message,
            line: 1,
            column: 1,
        }
        .located_in(source));
    }
    rewrite_data_paths(&mut ast);
    rewrite_request_resource(&mut ast);
    rewrite_optional_selects(&mut ast);
    rewrite_variables(&mut ast, scope.variables);
    super::semantics::rewrite(&mut ast);
    super::runtime_cost::annotate(&mut ast);
    Ok(CompiledExpression {
        source: source.to_string(),
        ast,
        reads: analysis.reads,
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

struct Analysis<'a> {
    scope: &'a Scope<'a>,
    reads: Reads,
    locals: Vec<String>,
    errors: Vec<String>,
}

impl Analysis<'_> {
    fn consume(&mut self, origins: &[Origin]) {
        for o in origins {
            self.reads.mark(o);
        }
    }

    fn is_local(&self, name: &str) -> bool {
        self.locals.iter().any(|l| l == name)
    }

    /// Returns the origins of `expr`'s value; records reads and errors.
    fn walk(&mut self, expr: &Expression) -> Vec<Origin> {
        match &expr.expr {
            Expr::Literal(_) => Vec::new(),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => {
                if let Expr::Ident(root) = &select.operand.expr
                    && !self.is_local(root)
                    && (root == "variables" || root == "lookups")
                {
                    return self.named_member(root, &select.field, select.test);
                }
                let origins = self.walk(&select.operand);
                let extended = extend(&origins, &select.field);
                if select.test {
                    for o in &extended {
                        self.reads.mark(o);
                    }
                    Vec::new()
                } else {
                    extended
                }
            }
            Expr::Call(call) => self.call(call),
            Expr::List(list) => {
                for element in &list.elements {
                    let o = self.walk(element);
                    self.consume(&o);
                }
                Vec::new()
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(e) => {
                            let k = self.walk(&e.key);
                            self.consume(&k);
                            let v = self.walk(&e.value);
                            self.consume(&v);
                        }
                        EntryExpr::StructField(_) => self.errors.push(
                            "message construction ('Type{field: ...}') is not supported"
                                .to_string(),
                        ),
                    }
                }
                Vec::new()
            }
            Expr::Comprehension(c) => {
                let range = self.walk(&c.iter_range);
                self.consume(&range);
                let init = self.walk(&c.accu_init);
                self.consume(&init);
                for var in std::iter::once(&c.iter_var).chain(c.iter_var2.as_ref()) {
                    if RESERVED.contains(&var.as_str()) {
                        self.errors.push(format!(
                            "'{var}' cannot name a loop variable: it is a policy variable"
                        ));
                    }
                }
                let before = self.locals.len();
                self.locals.push(c.iter_var.clone());
                if let Some(v2) = &c.iter_var2 {
                    self.locals.push(v2.clone());
                }
                self.locals.push(c.accu_var.clone());
                for part in [&c.loop_cond, &c.loop_step] {
                    let o = self.walk(part);
                    self.consume(&o);
                }
                // The result runs once, after the loop, with the accumulator in scope.
                let o = self.walk(&c.result);
                self.consume(&o);
                self.locals.truncate(before);
                Vec::new()
            }
            Expr::Struct(_) => {
                self.errors
                    .push("message construction ('Type{field: ...}') is not supported".to_string());
                Vec::new()
            }
            Expr::Unspecified => {
                self.errors.push("incomplete expression".to_string());
                Vec::new()
            }
        }
    }

    fn ident(&mut self, name: &str) -> Vec<Origin> {
        if self.is_local(name) {
            return Vec::new();
        }
        let root = match name {
            "object" => DataRoot::Object,
            "oldObject" => DataRoot::OldObject,
            "namespaceObject" => DataRoot::NamespaceObject,
            "request" => return Vec::new(),
            "variables" if self.scope.allow_variables => {
                self.errors
                    .push("'variables' must be used as variables.<name>".to_string());
                return Vec::new();
            }
            "lookups" => {
                self.errors
                    .push("'lookups' must be used as lookups.<name>".to_string());
                return Vec::new();
            }
            "params" if self.scope.params => DataRoot::Params,
            // A type used as a value (`type(x) == int`).
            n if super::type_values::NAMES.contains(&n) => return Vec::new(),
            // Not data: checks answered by the authorizer (authz.rs).
            "authorizer" if self.scope.authorizer => {
                self.reads.authorizer = true;
                return Vec::new();
            }
            _ => {
                self.errors
                    .push(format!("undeclared reference to '{name}'"));
                return Vec::new();
            }
        };
        vec![Origin {
            root,
            path: Vec::new(),
        }]
    }

    fn named_member(&mut self, root: &str, field: &str, test: bool) -> Vec<Origin> {
        if root == "variables" {
            if !self.scope.allow_variables {
                self.errors.push(format!("'variables.{field}' is not available here (matchConditions and exemptions run before variables)"));
                return Vec::new();
            }
            match self.scope.variables.iter().position(|v| v == field) {
                Some(index) => {
                    if !self.reads.variables.contains(&index) {
                        self.reads.variables.push(index);
                    }
                    if test {
                        return Vec::new();
                    }
                    self.scope
                        .variable_origins
                        .get(index)
                        .cloned()
                        .unwrap_or_default()
                }
                None => {
                    self.errors.push(format!("undeclared reference to 'variables.{field}' (variables may use only variables defined before them)"));
                    Vec::new()
                }
            }
        } else {
            match self.scope.lookups.iter().position(|l| l == field) {
                Some(index) => {
                    if !self.reads.lookups.contains(&index) {
                        self.reads.lookups.push(index);
                    }
                    vec![Origin {
                        root: DataRoot::Lookup(index),
                        path: Vec::new(),
                    }]
                }
                None => {
                    self.errors.push(format!(
                        "undeclared reference to 'lookups.{field}' (declare it under spec.lookups)"
                    ));
                    Vec::new()
                }
            }
        }
    }

    fn call(&mut self, call: &kube_cel::cel::common::ast::CallExpr) -> Vec<Origin> {
        let name = call.func_name.as_str();
        match name {
            operators::OPT_SELECT if call.args.len() == 2 => {
                if let Expr::Literal(LiteralValue::String(field)) = &call.args[1].expr {
                    let origins = self.walk(&call.args[0]);
                    return extend(&origins, field.inner());
                }
            }
            operators::INDEX | operators::OPT_INDEX if call.args.len() == 2 => {
                if let Expr::Literal(LiteralValue::String(key)) = &call.args[1].expr {
                    let origins = self.walk(&call.args[0]);
                    return extend(&origins, key.inner());
                }
            }
            operators::CONDITIONAL if call.args.len() == 3 => {
                let cond = self.walk(&call.args[0]);
                self.consume(&cond);
                let mut origins = self.walk(&call.args[1]);
                origins.extend(self.walk(&call.args[2]));
                return origins;
            }
            _ => {}
        }
        let qualified = match call.target.as_deref().map(|t| &t.expr) {
            Some(Expr::Ident(prefix))
                if !self.is_local(prefix) && cel_env::is_namespace(prefix) =>
            {
                Some(format!("{prefix}.{name}"))
            }
            _ => None,
        };
        let is_operator = name.starts_with('_')
            || name.starts_with('@')
            || name.starts_with('!')
            || name.starts_with('-');
        let version = kubernetes_version::selected();
        match &qualified {
            Some(q) if !cel_env::is_function(q) => self
                .errors
                .push(format!("undeclared reference to function '{q}'")),
            None if !is_operator && !cel_env::is_function(name) => self
                .errors
                .push(format!("undeclared reference to function '{name}'")),
            // The release's environment: when the library arrived, and whether
            // Kubernetes declares `x.f()`, `f(x)` or both.
            Some(q) => {
                if let Err(e) = kubernetes_version::check_call(q, false, version) {
                    self.errors.push(e);
                }
            }
            None if name == super::macros::SORT_BY => {
                if let Err(e) =
                    kubernetes_version::check_declared(&kubernetes_version::SORT_BY, true, version)
                {
                    self.errors.push(e);
                }
            }
            None if name == super::semantics::COMPREHENSION2 => {
                let two = &kubernetes_version::TWO_VARIABLE_COMPREHENSIONS;
                if let Err(e) = kubernetes_version::check_declared(two, true, version) {
                    self.errors.push(e);
                }
            }
            None if !is_operator => {
                if let Err(e) = kubernetes_version::check_call(name, call.target.is_some(), version)
                {
                    self.errors.push(e);
                }
            }
            None => {}
        }
        if matches!(name, "matches" | "find" | "findAll")
            && let Some(pattern) = call.args.first()
            && let Expr::Literal(LiteralValue::String(p)) = &pattern.expr
            && let Err(e) = super::re2::compiled(p.inner())
        {
            self.errors
                .push(format!("invalid regular expression '{}': {e}", p.inner()));
        }
        if qualified.is_none()
            && let Some(target) = &call.target
        {
            let o = self.walk(target);
            self.consume(&o);
        }
        for arg in &call.args {
            let o = self.walk(arg);
            self.consume(&o);
        }
        Vec::new()
    }
}

fn extend(origins: &[Origin], field: &str) -> Vec<Origin> {
    origins
        .iter()
        .map(|o| {
            let mut path = o.path.clone();
            path.push(field.to_string());
            Origin { root: o.root, path }
        })
        .collect()
}

/// Replaces `x.?f` with the engine's own optional selection (see
/// [`cel_env::OPTIONAL_SELECT`]); run after analysis, which knows `_?._`.
pub fn rewrite_optional_selects(expr: &mut Expression) {
    if let Expr::Call(call) = &mut expr.expr
        && call.func_name == operators::OPT_SELECT
        && call.args.len() == 2
        && call.target.is_none()
    {
        call.func_name = cel_env::OPTIONAL_SELECT.to_string();
    }
    for child in children_mut(expr) {
        rewrite_optional_selects(child);
    }
}

/// Replaces `authorizer.requestResource` (a variable of its own in
/// kube-apiserver's environment) with the engine's binding for it.
fn rewrite_request_resource(expr: &mut Expression) {
    if let Expr::Select(select) = &expr.expr
        && !select.test
        && select.field == "requestResource"
        && matches!(&select.operand.expr, Expr::Ident(root) if root == super::authz::AUTHORIZER_BINDING)
    {
        expr.expr = Expr::Ident(super::authz::REQUEST_RESOURCE_BINDING.to_string());
        return;
    }
    for child in children_mut(expr) {
        rewrite_request_resource(child);
    }
}

/// Replaces `variables.<name>` with a lazy, cached lookup by index (see
/// `variables.rs`); `has(variables.<name>)` is always true for a declared name.
fn rewrite_variables(expr: &mut Expression, names: &[String]) {
    if let Expr::Select(select) = &expr.expr
        && let Expr::Ident(root) = &select.operand.expr
        && root == "variables"
        && let Some(index) = names.iter().position(|n| *n == select.field)
    {
        let id = expr.id;
        expr.expr = if select.test {
            Expr::Literal(LiteralValue::Boolean(true.into()))
        } else {
            Expr::Call(kube_cel::cel::common::ast::CallExpr {
                func_name: super::variables::VARIABLE_FUNCTION.to_string(),
                target: None,
                args: vec![Expression {
                    id,
                    expr: Expr::Literal(LiteralValue::Int((index as i64).into())),
                }],
            })
        };
        return;
    }
    for child in children_mut(expr) {
        rewrite_variables(child, names);
    }
}

/// A constant access path rooted at `object`, `oldObject` or `namespaceObject`:
/// the root's code and the steps (see `paths.rs` for their encoding).
fn data_chain(expr: &Expression) -> Option<(usize, Vec<String>)> {
    use super::paths::{OPTIONAL_STEP, REQUIRED_STEP, ROOTS};
    match &expr.expr {
        Expr::Ident(name) => ROOTS
            .iter()
            .position(|r| r == name)
            .map(|i| (i, Vec::new())),
        Expr::Select(s) if !s.test => {
            let (root, mut steps) = data_chain(&s.operand)?;
            steps.push(format!("{REQUIRED_STEP}{}", s.field));
            Some((root, steps))
        }
        Expr::Call(call) if call.target.is_none() && call.args.len() == 2 => {
            let optional = match call.func_name.as_str() {
                operators::OPT_SELECT | operators::OPT_INDEX => true,
                operators::INDEX => false,
                _ => return None,
            };
            let Expr::Literal(LiteralValue::String(key)) = &call.args[1].expr else {
                return None;
            };
            let (root, mut steps) = data_chain(&call.args[0])?;
            steps.push(format!(
                "{}{}",
                if optional {
                    OPTIONAL_STEP
                } else {
                    REQUIRED_STEP
                },
                key.inner()
            ));
            Some((root, steps))
        }
        _ => None,
    }
}

fn path_call(id: u64, function: &str, root: usize, steps: Vec<String>) -> Expr {
    let mut args = Vec::with_capacity(steps.len() + 1);
    args.push(Expression {
        id,
        expr: Expr::Literal(LiteralValue::Int((root as i64).into())),
    });
    args.extend(steps.into_iter().map(|s| Expression {
        id,
        expr: Expr::Literal(LiteralValue::String(s.into())),
    }));
    Expr::Call(kube_cel::cel::common::ast::CallExpr {
        func_name: function.to_string(),
        target: None,
        args,
    })
}

/// Replaces access paths into the request's objects with calls that walk the
/// shared tree without copying it (see `paths.rs`).
fn rewrite_data_paths(expr: &mut Expression) {
    use super::paths::{HAS_FUNCTION, PATH_FUNCTION, REQUIRED_STEP};
    if let Some((root, steps)) = data_chain(expr) {
        expr.expr = path_call(expr.id, PATH_FUNCTION, root, steps);
        return;
    }
    if let Expr::Select(s) = &expr.expr
        && s.test
        && let Some((root, mut steps)) = data_chain(&s.operand)
    {
        steps.push(format!("{REQUIRED_STEP}{}", s.field));
        expr.expr = path_call(expr.id, HAS_FUNCTION, root, steps);
        return;
    }
    for child in children_mut(expr) {
        rewrite_data_paths(child);
    }
}

/// The direct sub-expressions of `expr`, for the compile-time rewrites.
pub(super) fn children_mut(expr: &mut Expression) -> Vec<&mut Expression> {
    match &mut expr.expr {
        Expr::Call(call) => call
            .target
            .as_deref_mut()
            .into_iter()
            .chain(call.args.iter_mut())
            .collect(),
        Expr::Select(select) => vec![&mut *select.operand],
        Expr::List(list) => list.elements.iter_mut().collect(),
        Expr::Map(map) => map
            .entries
            .iter_mut()
            .filter_map(|entry| match &mut entry.expr {
                EntryExpr::MapEntry(e) => Some([&mut e.key, &mut e.value]),
                EntryExpr::StructField(_) => None,
            })
            .flatten()
            .collect(),
        Expr::Comprehension(c) => vec![
            &mut c.iter_range,
            &mut c.accu_init,
            &mut c.loop_cond,
            &mut c.loop_step,
            &mut c.result,
        ],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Struct(_) | Expr::Unspecified => Vec::new(),
    }
}
