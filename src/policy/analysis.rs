//! What a compiled expression reads: which roots (`object`, `oldObject`,
//! params, variables, …) and which paths under them, so that evaluation
//! decodes only that; and what can be refused at load without types (unknown
//! names and functions, rebinding reserved names, invalid regex literals).

use super::cel_env;
use super::kubernetes_version;
use kube_cel::cel::common::ast::{EntryExpr, Expr, LiteralValue, operators};
use kube_cel::cel::parser::Expression;

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

/// What `ast` reads under `scope` and what its value aliases (nothing when
/// `consume_result`: the result is used up, not bound as a variable).
///
/// # Errors
/// Every problem found at load, in the order met.
pub(super) fn analyze(
    ast: &Expression,
    scope: &Scope,
    consume_result: bool,
) -> Result<(Reads, Vec<Origin>), Vec<String>> {
    let mut analysis = Analysis {
        scope,
        reads: Reads::default(),
        locals: Vec::new(),
        errors: Vec::new(),
    };
    let origins = analysis.walk(ast);
    if consume_result {
        analysis.consume(&origins);
    }
    if analysis.errors.is_empty() {
        Ok((analysis.reads, origins))
    } else {
        Err(analysis.errors)
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
