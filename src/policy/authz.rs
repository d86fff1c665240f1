//! `authorizer` and `authorizer.requestResource` in ValidatingAdmissionPolicy
//! expressions: kube-apiserver's CEL authz library (`k8s.io/apiserver/pkg/cel/
//! library/authz.go`, v0.37.2) — `path`, `group`, `resource`, `subresource`,
//! `namespace`, `name`, `fieldSelector`, `labelSelector`, `check`, `allowed`,
//! `reason`, `errored`, `error`, `serviceAccount` — over an engine-defined
//! [`Authorizer`].
//!
//! Who answers: the cluster state's authorizer ([`crate::policy::ClusterState::
//! authorizer`]): SubjectAccessReviews through the API server in `serve` and
//! `--cluster`. Without one (offline `review`, `audit --snapshot`, PolicyTest)
//! `check()` is an evaluation error that the policy's failurePolicy handles,
//! never an allow.

use super::validation;
use kube_cel::cel::objects::Opaque;
use kube_cel::cel::{ExecutionError, FunctionContext, ResolveResult, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// What `authorizer` is bound to in a policy's scope.
pub const AUTHORIZER_BINDING: &str = "authorizer";
/// What `authorizer.requestResource` is rewritten to at compile time.
pub const REQUEST_RESOURCE_BINDING: &str = "@gate_authorizer_request_resource";

/// The member functions of the library (all dispatched by [`authz_function`]).
pub const FUNCTIONS: &[&str] = &[
    "path",
    "group",
    "serviceAccount",
    "resource",
    "subresource",
    "namespace",
    "name",
    "fieldSelector",
    "labelSelector",
    "check",
    "allowed",
    "reason",
    "errored",
    "error",
];

/// The user a check is made for: the request's, or a service account's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AuthzUser {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What is checked: a non-resource path, or a resource (all fields as given;
/// empty means "any" as in a SubjectAccessReview).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AuthzTarget {
    Path(String),
    Resource {
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
        field_selector: String,
        label_selector: String,
    },
}

/// One authorization question (kube-apiserver's `authorizer.AttributesRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthzAttributes {
    pub user: AuthzUser,
    pub verb: String,
    pub target: AuthzTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzVerdict {
    Allow,
    Deny,
    NoOpinion,
}

/// The answer: `allowed()` is `verdict == Allow`; `error` is the authorizer's
/// own evaluation error (`errored()`), which is not an evaluation error of the
/// expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzDecision {
    pub verdict: AuthzVerdict,
    pub reason: String,
    pub error: Option<String>,
}

/// Answers authorization questions.
pub trait Authorizer: Send + Sync {
    /// `Err` when the question could not be asked (API server unreachable, no
    /// permission to create SubjectAccessReviews): an evaluation error that
    /// failurePolicy decides.
    fn authorize(&self, attributes: &AuthzAttributes) -> Result<AuthzDecision, String>;
}

/// The values of the library's types in CEL.
#[derive(Clone)]
enum AuthzValue {
    Authorizer(AuthorizerVal),
    PathCheck(AuthorizerVal, String),
    GroupCheck(AuthorizerVal, String),
    ResourceCheck(AuthorizerVal, ResourceCheck),
    Decision(AuthzDecision),
    /// Where kube-apiserver does not bind the name (messageExpression, audit
    /// annotations): any use is an evaluation error.
    Absent(&'static str),
}

#[derive(Clone)]
struct AuthorizerVal {
    user: AuthzUser,
    /// `Err`: why there is no authorizer here.
    authorizer: Result<Arc<dyn Authorizer>, String>,
}

#[derive(Clone, Default, PartialEq)]
struct ResourceCheck {
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    field_selector: String,
    label_selector: String,
}

impl fmt::Debug for AuthzValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

impl AuthzValue {
    fn type_name(&self) -> &'static str {
        match self {
            AuthzValue::Authorizer(_) => "kubernetes.authorization.Authorizer",
            AuthzValue::PathCheck(..) => "kubernetes.authorization.PathCheck",
            AuthzValue::GroupCheck(..) => "kubernetes.authorization.GroupCheck",
            AuthzValue::ResourceCheck(..) => "kubernetes.authorization.ResourceCheck",
            AuthzValue::Decision(_) => "kubernetes.authorization.Decision",
            AuthzValue::Absent(_) => "safety-gate.dev/absent",
        }
    }
}

// kube-apiserver compares these values by identity of their contents; nothing
// in a policy compares them, but CEL values must be comparable.
impl PartialEq for AuthzValue {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for AuthzValue {}

impl Opaque for AuthzValue {
    fn runtime_type_name(&self) -> &str {
        self.type_name()
    }
}

/// The values bound for one request: `authorizer` (the request's user) and
/// `authorizer.requestResource` (the request's resource, subresource,
/// namespace and name, as kube-apiserver's `NewResourceAuthorizerVal`).
pub fn bindings(
    user: AuthzUser,
    authorizer: Result<Arc<dyn Authorizer>, String>,
    request_resource: (&str, &str, &str, &str, &str),
) -> (Value, Value) {
    let base = AuthorizerVal { user, authorizer };
    let (group, resource, subresource, namespace, name) = request_resource;
    let check = ResourceCheck {
        group: group.to_string(),
        resource: resource.to_string(),
        subresource: subresource.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        ..Default::default()
    };
    (
        Value::Opaque(Arc::new(AuthzValue::Authorizer(base.clone()))),
        Value::Opaque(Arc::new(AuthzValue::ResourceCheck(base, check))),
    )
}

/// The values bound where kube-apiserver binds neither name.
pub fn absent_bindings() -> (Value, Value) {
    (
        Value::Opaque(Arc::new(AuthzValue::Absent("authorizer"))),
        Value::Opaque(Arc::new(AuthzValue::Absent("authorizer.requestResource"))),
    )
}

fn wrap(v: AuthzValue) -> ResolveResult {
    Ok(Value::Opaque(Arc::new(v)))
}

fn no_overload(ftx: &FunctionContext) -> ExecutionError {
    ftx.error(format!("no such overload: {}", ftx.name))
}

fn string_arg(ftx: &FunctionContext, index: usize) -> Result<String, ExecutionError> {
    let expr = ftx.args.get(index).ok_or_else(|| no_overload(ftx))?;
    match Value::resolve(expr, ftx.ptx)? {
        Value::String(s) => Ok(s.to_string()),
        _ => Err(no_overload(ftx)),
    }
}

/// Every member function of the library, dispatched on its name and receiver.
pub fn authz_function(ftx: &FunctionContext) -> ResolveResult {
    let this = match &ftx.this {
        Some(Value::Opaque(o)) => match o.downcast_ref::<AuthzValue>() {
            Some(v) => v.clone(),
            None => return Err(no_overload(ftx)),
        },
        _ => return Err(no_overload(ftx)),
    };
    match (ftx.name, this) {
        (_, AuthzValue::Absent(name)) => Err(ftx.error(format!("no such attribute(s): {name}"))),
        ("path", AuthzValue::Authorizer(a)) => {
            let path = string_arg(ftx, 0)?;
            if path.trim().is_empty() {
                return Err(ftx.error("path must not be empty"));
            }
            wrap(AuthzValue::PathCheck(a, path))
        }
        ("group", AuthzValue::Authorizer(a)) => {
            wrap(AuthzValue::GroupCheck(a, string_arg(ftx, 0)?))
        }
        ("serviceAccount", AuthzValue::Authorizer(a)) => {
            let namespace = string_arg(ftx, 0)?;
            let name = string_arg(ftx, 1)?;
            if !validation::dns1123_subdomain_errors(&name).is_empty() {
                return Err(ftx.error("Invalid service account name"));
            }
            if !validation::dns1123_label_errors(&namespace).is_empty() {
                return Err(ftx.error("Invalid service account namespace"));
            }
            // kube-apiserver's serviceaccount.ServiceAccountInfo.UserInfo().
            wrap(AuthzValue::Authorizer(AuthorizerVal {
                user: AuthzUser {
                    name: format!("system:serviceaccount:{namespace}:{name}"),
                    uid: String::new(),
                    groups: vec![
                        "system:serviceaccounts".to_string(),
                        format!("system:serviceaccounts:{namespace}"),
                    ],
                    extra: BTreeMap::new(),
                },
                authorizer: a.authorizer,
            }))
        }
        ("resource", AuthzValue::GroupCheck(a, group)) => {
            let resource = string_arg(ftx, 0)?;
            if resource.trim().is_empty() {
                return Err(ftx.error("resource must not be empty"));
            }
            wrap(AuthzValue::ResourceCheck(
                a,
                ResourceCheck {
                    group,
                    resource,
                    ..Default::default()
                },
            ))
        }
        (
            field @ ("subresource" | "namespace" | "name" | "fieldSelector" | "labelSelector"),
            AuthzValue::ResourceCheck(a, mut r),
        ) => {
            let value = string_arg(ftx, 0)?;
            match field {
                "subresource" => r.subresource = value,
                "namespace" => r.namespace = value,
                "name" => r.name = value,
                "fieldSelector" => r.field_selector = value,
                _ => r.label_selector = value,
            }
            wrap(AuthzValue::ResourceCheck(a, r))
        }
        ("check", AuthzValue::PathCheck(a, path)) => {
            let verb = string_arg(ftx, 0)?;
            check(ftx, &a, verb, AuthzTarget::Path(path))
        }
        ("check", AuthzValue::ResourceCheck(a, r)) => {
            let verb = string_arg(ftx, 0)?;
            let target = AuthzTarget::Resource {
                group: r.group,
                resource: r.resource,
                subresource: r.subresource,
                namespace: r.namespace,
                name: r.name,
                field_selector: r.field_selector,
                label_selector: r.label_selector,
            };
            check(ftx, &a, verb, target)
        }
        ("allowed", AuthzValue::Decision(d)) => Ok(Value::Bool(d.verdict == AuthzVerdict::Allow)),
        ("reason", AuthzValue::Decision(d)) => Ok(Value::String(Arc::new(d.reason))),
        ("errored", AuthzValue::Decision(d)) => Ok(Value::Bool(d.error.is_some())),
        ("error", AuthzValue::Decision(d)) => {
            Ok(Value::String(Arc::new(d.error.unwrap_or_default())))
        }
        _ => Err(no_overload(ftx)),
    }
}

fn check(
    ftx: &FunctionContext,
    a: &AuthorizerVal,
    verb: String,
    target: AuthzTarget,
) -> ResolveResult {
    let authorizer = a
        .authorizer
        .as_ref()
        .map_err(|why| ftx.error(format!("authorizer unavailable: {why}")))?;
    let attributes = AuthzAttributes {
        user: a.user.clone(),
        verb,
        target,
    };
    let decision = authorizer
        .authorize(&attributes)
        .map_err(|e| ftx.error(format!("authorizer unavailable: {e}")))?;
    wrap(AuthzValue::Decision(decision))
}
