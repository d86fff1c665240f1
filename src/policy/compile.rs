//! Compiling one CEL expression: parse, reject at load what can be known then,
//! and work out what the expression reads so that evaluation decodes only that
//! and can bound its own cost before it starts.

use super::cel_env;
use super::kubernetes_version;
use super::values::Shape;
use kube_cel::cel::common::ast::{EntryExpr, Expr, LiteralValue, operators};
use kube_cel::cel::parser::{Expression, Parser};
use std::collections::HashMap;

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
    /// What each variable's value is as a range (see [`CompiledExpression::range`]),
    /// parallel to `variables`; may be shorter (then unknown).
    pub variable_ranges: &'a [Option<RangeDesc>],
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

/// A bound on the size of something a comprehension iterates over.
#[derive(Debug, Clone, PartialEq)]
enum SizeBound {
    Const(u64),
    /// Length of the list/map/string at this path of the input.
    Length(Origin),
    /// Number of values in the subtree at this path.
    Nodes(Origin),
    /// Any container reachable from a loop variable: the widest container in the input.
    Widest,
    /// Any container reachable from a loop variable whose values come from these
    /// input subtrees: the widest container among them.
    WidestIn(Vec<Origin>),
    /// Any container reachable from a loop variable bound to values strictly
    /// inside these input subtrees (their elements, or values within those):
    /// the widest container below them, not counting the subtrees themselves.
    WidestBelow(Vec<Origin>),
    /// The largest of these (a range that is one of several values).
    Max(Vec<SizeBound>),
    /// A computed value: no larger than all the input together.
    Total,
}

impl SizeBound {
    fn evaluate(&self, input: &dyn SizeOracle) -> u64 {
        let widest = |origins: &[Origin], pick: fn(Shape) -> u64| {
            origins
                .iter()
                .filter_map(|o| input.shape_at(o.root, &o.path))
                .map(pick)
                .max()
                .unwrap_or(0)
        };
        match self {
            SizeBound::Const(n) => *n,
            SizeBound::Length(origin) => input
                .shape_at(origin.root, &origin.path)
                .map_or(0, |s| s.length),
            SizeBound::Nodes(origin) => input
                .shape_at(origin.root, &origin.path)
                .map_or(0, |s| s.nodes),
            SizeBound::Widest => input.widest(),
            SizeBound::WidestIn(origins) => widest(origins, |s| s.widest),
            SizeBound::WidestBelow(origins) => widest(origins, |s| s.widest_below),
            SizeBound::Max(bounds) => bounds.iter().map(|b| b.evaluate(input)).max().unwrap_or(0),
            SizeBound::Total => input.total(),
        }
    }
}

/// What a value is, as the range of a comprehension: a bound on its length,
/// the input subtrees its elements come from, and whether those elements lie
/// strictly inside the subtrees (so anything a loop variable bound to them can
/// iterate over is narrower than the widest container below the subtrees).
#[derive(Debug, Clone, PartialEq)]
pub struct RangeDesc {
    len: SizeBound,
    sources: Vec<Origin>,
    inside: bool,
    /// The value is exactly the input subtree at this path.
    exact: Option<Origin>,
}

/// How a comprehension builds its result, when it is a list that grows by at
/// most one element per iteration (the `filter` and `map` macros).
enum Builder {
    /// Appends the loop variable itself: the result holds elements of the range.
    Filter,
    /// Appends a computed value.
    Map,
}

/// What evaluation needs to know about the input to bound an expression's work.
pub trait SizeOracle {
    /// The shape of the input value at `path` under `root`, if present.
    fn shape_at(&self, root: DataRoot, path: &[String]) -> Option<Shape>;
    fn widest(&self) -> u64;
    fn total(&self) -> u64;
}

#[derive(Debug)]
pub struct CompiledExpression {
    pub source: String,
    pub ast: Expression,
    pub reads: Reads,
    /// What the value of the expression aliases (used for variables).
    pub origins: Vec<Origin>,
    /// What the value is when iterated over, if known (used for variables).
    pub range: Option<RangeDesc>,
    cost_terms: Vec<Vec<SizeBound>>,
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

/// Limits checked at load, before any request: Kubernetes bounds expressions by
/// estimated cost; without types we bound the shape instead.
const MAX_SOURCE_BYTES: usize = 10 * 1024;
const MAX_COMPREHENSION_NESTING: usize = 3;

impl CompiledExpression {
    /// Upper bound of the work this expression will do on the given input,
    /// in comprehension iterations and values touched.
    pub fn estimated_cost(&self, input: &dyn SizeOracle) -> u64 {
        let mut total: u64 = 0;
        for term in &self.cost_terms {
            let mut product: u64 = 1;
            for factor in term {
                product = product.saturating_mul(factor.evaluate(input).max(1));
            }
            total = total.saturating_add(product);
        }
        total
    }

    pub fn has_comprehension_cost(&self) -> bool {
        !self.cost_terms.is_empty()
    }
}

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
        .parse(source)
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
    let mut analysis = Analysis {
        scope,
        reads: Reads::default(),
        locals: Vec::new(),
        local_sources: Vec::new(),
        local_inside: Vec::new(),
        built: HashMap::new(),
        consumed: Vec::new(),
        errors: Vec::new(),
        cost_terms: Vec::new(),
    };
    let origins = analysis.walk(&ast, &[], 0);
    if consume_result {
        analysis.consume(&origins);
    }
    let range = if consume_result {
        None
    } else {
        analysis.describe(&ast)
    };
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
        range,
        cost_terms: analysis.cost_terms,
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
    /// Per local (parallel to `locals`): the input subtrees its values can come from.
    local_sources: Vec<Vec<Origin>>,
    /// Per local: its values lie strictly inside those subtrees.
    local_inside: Vec<bool>,
    /// What each list-building comprehension (by expression id) yields as a range.
    built: HashMap<u64, RangeDesc>,
    /// Every origin consumed so far, in order (to see what one range read).
    consumed: Vec<Origin>,
    errors: Vec<String>,
    cost_terms: Vec<Vec<SizeBound>>,
}

impl Analysis<'_> {
    fn consume(&mut self, origins: &[Origin]) {
        for o in origins {
            self.reads.mark(o);
            self.consumed.push(o.clone());
        }
    }

    /// The input subtrees the loop variable at the root of `range` draws from.
    fn sources_of(&self, range: &Expression) -> Option<Vec<Origin>> {
        let name = local_root(range, &self.locals)?;
        let index = self.locals.iter().rposition(|l| l == name)?;
        self.local_sources.get(index).cloned()
    }

    fn is_local(&self, name: &str) -> bool {
        self.locals.iter().any(|l| l == name)
    }

    /// Returns the origins of `expr`'s value; records reads, errors and cost terms.
    /// `loops` holds the bounds of the enclosing comprehensions.
    fn walk(&mut self, expr: &Expression, loops: &[SizeBound], nesting: usize) -> Vec<Origin> {
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
                let origins = self.walk(&select.operand, loops, nesting);
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
            Expr::Call(call) => self.call(call, loops, nesting),
            Expr::List(list) => {
                for element in &list.elements {
                    let o = self.walk(element, loops, nesting);
                    self.consume(&o);
                }
                Vec::new()
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(e) => {
                            let k = self.walk(&e.key, loops, nesting);
                            self.consume(&k);
                            let v = self.walk(&e.value, loops, nesting);
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
                if nesting + 1 > MAX_COMPREHENSION_NESTING {
                    self.errors.push(format!(
                        "comprehensions nested {} deep; at most {MAX_COMPREHENSION_NESTING} are allowed",
                        nesting + 1
                    ));
                }
                let mark = self.consumed.len();
                let range = self.walk(&c.iter_range, loops, nesting);
                self.consume(&range);
                let desc = self.describe(&c.iter_range).unwrap_or_else(|| RangeDesc {
                    len: self.range_bound(&c.iter_range),
                    // What the loop variable can hold: the data the range read, or,
                    // for a range drawn from another loop variable, that one's sources.
                    sources: match self.sources_of(&c.iter_range) {
                        Some(s) => s,
                        None => self.consumed[mark..].to_vec(),
                    },
                    inside: false,
                    exact: None,
                });
                let bound = desc.len.clone();
                let init = self.walk(&c.accu_init, loops, nesting);
                self.consume(&init);
                let mut inner = loops.to_vec();
                inner.push(bound);
                self.cost_terms.push(inner.clone());
                for var in std::iter::once(&c.iter_var).chain(c.iter_var2.as_ref()) {
                    if RESERVED.contains(&var.as_str()) {
                        self.errors.push(format!(
                            "'{var}' cannot name a loop variable: it is a policy variable"
                        ));
                    }
                }
                let before = self.locals.len();
                self.locals.push(c.iter_var.clone());
                self.local_sources.push(desc.sources.clone());
                self.local_inside.push(desc.inside);
                if let Some(v2) = &c.iter_var2 {
                    self.locals.push(v2.clone());
                    self.local_sources.push(desc.sources.clone());
                    self.local_inside.push(desc.inside);
                }
                self.locals.push(c.accu_var.clone());
                self.local_sources.push(Vec::new());
                self.local_inside.push(false);
                for part in [&c.loop_cond, &c.loop_step] {
                    let o = self.walk(part, &inner, nesting + 1);
                    self.consume(&o);
                }
                // The result runs once, after the loop, with the accumulator in scope.
                let o = self.walk(&c.result, loops, nesting);
                self.consume(&o);
                self.locals.truncate(before);
                self.local_sources.truncate(before);
                self.local_inside.truncate(before);
                // At most one element per iteration: no longer than the range.
                let built = match list_builder(c) {
                    Some(Builder::Filter) => Some(RangeDesc {
                        exact: None,
                        ..desc
                    }),
                    Some(Builder::Map) => Some(RangeDesc {
                        len: desc.len,
                        sources: self.consumed[mark..].to_vec(),
                        inside: false,
                        exact: None,
                    }),
                    None => None,
                };
                if let Some(built) = built {
                    self.built.insert(expr.id, built);
                }
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

    fn call(
        &mut self,
        call: &kube_cel::cel::common::ast::CallExpr,
        loops: &[SizeBound],
        nesting: usize,
    ) -> Vec<Origin> {
        let name = call.func_name.as_str();
        match name {
            operators::OPT_SELECT if call.args.len() == 2 => {
                if let Expr::Literal(LiteralValue::String(field)) = &call.args[1].expr {
                    let origins = self.walk(&call.args[0], loops, nesting);
                    return extend(&origins, field.inner());
                }
            }
            operators::INDEX | operators::OPT_INDEX if call.args.len() == 2 => {
                if let Expr::Literal(LiteralValue::String(key)) = &call.args[1].expr {
                    let origins = self.walk(&call.args[0], loops, nesting);
                    return extend(&origins, key.inner());
                }
            }
            operators::CONDITIONAL if call.args.len() == 3 => {
                let cond = self.walk(&call.args[0], loops, nesting);
                self.consume(&cond);
                let mut origins = self.walk(&call.args[1], loops, nesting);
                origins.extend(self.walk(&call.args[2], loops, nesting));
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
            && let Err(e) = regex::Regex::new(p.inner())
        {
            self.errors
                .push(format!("invalid regular expression '{}': {e}", p.inner()));
        }
        if qualified.is_none()
            && let Some(target) = &call.target
        {
            let o = self.walk(target, loops, nesting);
            self.charge_inside_loop(&o, loops);
            self.consume(&o);
        }
        for arg in &call.args {
            let o = self.walk(arg, loops, nesting);
            self.charge_inside_loop(&o, loops);
            self.consume(&o);
        }
        Vec::new()
    }

    /// Inside a loop, an operation over a whole input subtree costs its size on every iteration.
    fn charge_inside_loop(&mut self, origins: &[Origin], loops: &[SizeBound]) {
        if loops.is_empty() {
            return;
        }
        for o in origins {
            let mut term = loops.to_vec();
            term.push(SizeBound::Nodes(o.clone()));
            self.cost_terms.push(term);
        }
    }

    /// A range that [`Self::describe`] cannot place: a literal list, a constant
    /// `lists.range`, a path from a loop variable whose values are not known to
    /// lie inside the input, or a computed value.
    fn range_bound(&self, range: &Expression) -> SizeBound {
        match &range.expr {
            Expr::List(list) => SizeBound::Const(list.elements.len() as u64),
            Expr::Call(call) if call.func_name == "range" && call.args.len() == 1 => match &call
                .args[0]
                .expr
            {
                Expr::Literal(LiteralValue::Int(n)) => SizeBound::Const((*n.inner()).max(0) as u64),
                _ => SizeBound::Total,
            },
            _ => match self.sources_of(range) {
                Some(sources) if !sources.is_empty() => SizeBound::WidestIn(sources),
                _ if local_root(range, &self.locals).is_some() => SizeBound::Widest,
                _ => SizeBound::Total,
            },
        }
    }
}

impl Analysis<'_> {
    /// The input subtree `expr` is exactly, if it is a constant path from
    /// `object`, `oldObject`, `namespaceObject`, `lookups.<name>` or a variable
    /// that is itself such a path.
    fn exact_origin(&self, expr: &Expression) -> Option<Origin> {
        match &expr.expr {
            Expr::Ident(name) if !self.is_local(name) => {
                let root = match name.as_str() {
                    "object" => DataRoot::Object,
                    "oldObject" => DataRoot::OldObject,
                    "namespaceObject" => DataRoot::NamespaceObject,
                    "params" if self.scope.params => DataRoot::Params,
                    _ => return None,
                };
                Some(Origin {
                    root,
                    path: Vec::new(),
                })
            }
            Expr::Select(select) if !select.test => {
                if let Expr::Ident(root) = &select.operand.expr
                    && !self.is_local(root)
                {
                    match root.as_str() {
                        "lookups" => {
                            let index =
                                self.scope.lookups.iter().position(|l| *l == select.field)?;
                            return Some(Origin {
                                root: DataRoot::Lookup(index),
                                path: Vec::new(),
                            });
                        }
                        "variables" => return self.variable_range(&select.field)?.exact,
                        _ => {}
                    }
                }
                let mut origin = self.exact_origin(&select.operand)?;
                origin.path.push(select.field.clone());
                Some(origin)
            }
            Expr::Call(call)
                if call.target.is_none()
                    && call.args.len() == 2
                    && matches!(
                        call.func_name.as_str(),
                        operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT
                    ) =>
            {
                let Expr::Literal(LiteralValue::String(key)) = &call.args[1].expr else {
                    return None;
                };
                let mut origin = self.exact_origin(&call.args[0])?;
                origin.path.push(key.inner().to_string());
                Some(origin)
            }
            _ => None,
        }
    }

    fn variable_range(&self, name: &str) -> Option<RangeDesc> {
        if !self.scope.allow_variables {
            return None;
        }
        let index = self.scope.variables.iter().position(|v| v == name)?;
        self.scope.variable_ranges.get(index).cloned().flatten()
    }

    /// What `expr` is as a range, when that can be shown: its length bound,
    /// where its elements come from and whether they lie strictly inside the
    /// input subtrees they come from. `None` leaves it to [`Self::range_bound`].
    fn describe(&self, expr: &Expression) -> Option<RangeDesc> {
        if let Some(origin) = self.exact_origin(expr) {
            // The elements of an input subtree lie strictly inside it.
            return Some(RangeDesc {
                len: SizeBound::Length(origin.clone()),
                sources: vec![origin.clone()],
                inside: true,
                exact: Some(origin),
            });
        }
        if let Some(name) = local_root(expr, &self.locals) {
            // A path from a loop variable bound strictly inside some subtrees is
            // a value strictly inside them, and so are its elements.
            let index = self.locals.iter().rposition(|l| l == name)?;
            let sources = self.local_sources.get(index)?;
            let inside = self.local_inside.get(index).copied().unwrap_or(false);
            return (inside && !sources.is_empty()).then(|| RangeDesc {
                len: SizeBound::WidestBelow(sources.clone()),
                sources: sources.clone(),
                inside: true,
                exact: None,
            });
        }
        match &expr.expr {
            Expr::Select(select) if !select.test => match &select.operand.expr {
                Expr::Ident(root) if root == "variables" && !self.is_local(root) => {
                    self.variable_range(&select.field)
                }
                _ => None,
            },
            Expr::Comprehension(_) => self.built.get(&expr.id).cloned(),
            Expr::List(list) => {
                // Elements that are input subtrees themselves (not inside them), or scalars.
                let mut sources = Vec::new();
                for element in &list.elements {
                    match &element.expr {
                        Expr::Literal(_) => {}
                        _ => sources.push(self.exact_origin(element)?),
                    }
                }
                Some(RangeDesc {
                    len: SizeBound::Const(list.elements.len() as u64),
                    inside: sources.is_empty(),
                    sources,
                    exact: None,
                })
            }
            Expr::Call(call)
                if call.func_name == operators::CONDITIONAL && call.args.len() == 3 =>
            {
                let a = self.describe(&call.args[1])?;
                let b = self.describe(&call.args[2])?;
                let mut sources = a.sources;
                for o in b.sources {
                    if !sources.contains(&o) {
                        sources.push(o);
                    }
                }
                Some(RangeDesc {
                    len: SizeBound::Max(vec![a.len, b.len]),
                    sources,
                    inside: a.inside && b.inside,
                    exact: None,
                })
            }
            _ => None,
        }
    }
}

/// Whether comprehension `c` builds a list by appending at most one element
/// per iteration to an empty one, and returns it: `filter` and `map` (with or
/// without their filter argument) expand to exactly this.
fn list_builder(c: &kube_cel::cel::common::ast::ComprehensionExpr) -> Option<Builder> {
    let is_accu = |e: &Expression| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
    let empty = matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty());
    if !empty || !is_accu(&c.result) {
        return None;
    }
    let element = match &c.loop_step.expr {
        Expr::Call(call)
            if call.func_name == operators::CONDITIONAL
                && call.args.len() == 3
                && is_accu(&call.args[2]) =>
        {
            appended(&call.args[1], &c.accu_var)?
        }
        _ => appended(&c.loop_step, &c.accu_var)?,
    };
    let value_var = c.iter_var2.as_ref().unwrap_or(&c.iter_var);
    Some(match &element.expr {
        Expr::Ident(n) if n == value_var => Builder::Filter,
        _ => Builder::Map,
    })
}

/// `element` when `step` is `accu + [element]`.
fn appended<'e>(step: &'e Expression, accu: &str) -> Option<&'e Expression> {
    match &step.expr {
        Expr::Call(call)
            if call.func_name == operators::ADD
                && call.target.is_none()
                && call.args.len() == 2
                && matches!(&call.args[0].expr, Expr::Ident(n) if n == accu) =>
        {
            match &call.args[1].expr {
                Expr::List(l) if l.elements.len() == 1 => Some(&l.elements[0]),
                _ => None,
            }
        }
        _ => None,
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

fn local_root<'e>(expr: &'e Expression, locals: &[String]) -> Option<&'e str> {
    match &expr.expr {
        Expr::Ident(name) => locals.contains(name).then_some(name.as_str()),
        Expr::Select(s) => local_root(&s.operand, locals),
        Expr::Call(c)
            if matches!(
                c.func_name.as_str(),
                operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT
            ) =>
        {
            c.args.first().and_then(|a| local_root(a, locals))
        }
        _ => None,
    }
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
