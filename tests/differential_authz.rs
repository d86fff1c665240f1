//! Differential test: policies that use `authorizer` and
//! `authorizer.requestResource`, decided by the gate and by the oracle
//! (kube-apiserver's own admission plugin, `e2e/oracle`) with the same RBAC
//! objects. The oracle's `authorizer` is Kubernetes' RBAC authorizer
//! (`k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac`) over those objects;
//! the gate's is an [`Authorizer`] that asks that same RBAC authorizer (the
//! oracle's `authorize` case) each question the gate's CEL library builds —
//! what a SubjectAccessReview to a cluster holding exactly those objects
//! answers. So the comparison covers the library (paths, groups, resources,
//! subresources, names, namespaces, service accounts, `allowed`, `reason`,
//! `errored`, `error`, argument errors) and the attributes it sends; RBAC
//! itself is Kubernetes' code on both sides. Every answer must be the same.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use safety_gate::admission::synthetic::{RequestSpec, build_request};
use safety_gate::cluster::Snapshot;
use safety_gate::policy::authz::{
    Authorizer, AuthzAttributes, AuthzDecision, AuthzTarget, AuthzVerdict,
};
use safety_gate::policy::{ClusterState, LookupError, NamespaceInfo};
use safety_gate::policy::{EvalOptions, ParamScope, ParamSource, PolicySet, Request};
use serde_json::{Value as Json, json};
use std::sync::{Arc, Mutex};

mod differential_support;
use differential_support::{
    OracleProcess, audit_difference, compare_answers, oracle_binary, request_json,
};

fn rbac() -> Vec<Json> {
    let role = |kind: &str, ns: Option<&str>, name: &str, rules: Json| {
        let mut r = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "rules": rules});
        if let Some(ns) = ns {
            r["metadata"]["namespace"] = json!(ns);
        }
        r
    };
    let binding = |kind: &str,
                   ns: Option<&str>,
                   name: &str,
                   role_kind: &str,
                   role: &str,
                   subject: Json| {
        let mut b = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [subject]});
        if let Some(ns) = ns {
            b["metadata"]["namespace"] = json!(ns);
        }
        b
    };
    let group =
        |g: &str| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g});
    let sa = |ns: &str, n: &str| json!({"kind": "ServiceAccount", "namespace": ns, "name": n});
    vec![
        role(
            "Role",
            Some("team-a"),
            "pod-maker",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]),
        ),
        binding(
            "RoleBinding",
            Some("team-a"),
            "devs-make-pods",
            "Role",
            "pod-maker",
            group("dev"),
        ),
        role(
            "ClusterRole",
            None,
            "health",
            json!([{"nonResourceURLs": ["/healthz", "/livez"], "verbs": ["get"]}]),
        ),
        binding(
            "ClusterRoleBinding",
            None,
            "devs-health",
            "ClusterRole",
            "health",
            group("dev"),
        ),
        role(
            "Role",
            Some("team-a"),
            "deployer",
            json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["update", "patch"]}]),
        ),
        binding(
            "RoleBinding",
            Some("team-a"),
            "builder-deploys",
            "Role",
            "deployer",
            sa("team-a", "builder"),
        ),
        role(
            "ClusterRole",
            None,
            "cm-admin",
            json!([
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete"]},
                {"apiGroups": [""], "resources": ["configmaps/status"], "verbs": ["update"]},
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["shared"], "verbs": ["get"]}
            ]),
        ),
        binding(
            "RoleBinding",
            Some("team-a"),
            "alice-cm-admin",
            "ClusterRole",
            "cm-admin",
            json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}),
        ),
    ]
}

/// Both deny for the same evaluation error of the authz library, worded
/// around it as each engine words errors ("error-text" in
/// tests/differential/known-generated.yaml): the gate names the failing
/// audit annotation and function, kube-apiserver the expression and the
/// composited variable.
fn same_error(d: &safety_gate::policy::Decision, kube: &Json) -> bool {
    const ERRORS: &[&str] = &[
        "no such attribute(s): authorizer.requestResource",
        "no such attribute(s): authorizer",
        "path must not be empty",
        "resource must not be empty",
        "Invalid service account name",
        "Invalid service account namespace",
    ];
    let g = d.status.as_ref().map(|s| s.message.as_str()).unwrap_or("");
    let k = kube["message"].as_str().unwrap_or("");
    g.contains("resulted in error")
        && k.contains("resulted in error")
        && ERRORS.iter().find(|e| g.contains(*e)) == ERRORS.iter().find(|e| k.contains(*e))
        && ERRORS.iter().any(|e| g.contains(e))
}

/// `text` without the cel crate's "Error executing function '<f>': " prefixes.
fn without_function_prefix(text: &str) -> String {
    let mut out = text.to_string();
    while let Some(start) = out.find("Error executing function '") {
        let rest = &out[start + "Error executing function '".len()..];
        let Some(end) = rest.find("': ") else { break };
        let cut = start + "Error executing function '".len() + end + 3;
        out.replace_range(start..cut, "");
    }
    out
}

/// (validation expression, messageExpression or null) per policy; variables
/// `d` (a decision) and `rr` (the request resource's decision) are defined.
const CHECKS: &[(&str, &str)] = &[
    (
        "authorizer.group('').resource('pods').namespace(request.namespace).check('create').allowed()",
        "",
    ),
    (
        "authorizer.requestResource.check('delete').allowed()",
        "'cannot delete: ' + variables.rr.reason()",
    ),
    ("authorizer.path('/healthz').check('get').allowed()", ""),
    (
        "authorizer.path('/metrics').check('get').allowed() || request.name == 'free'",
        "",
    ),
    (
        "authorizer.serviceAccount('team-a', 'builder').group('apps').resource('deployments').namespace(request.namespace).check('update').allowed()",
        "",
    ),
    (
        "authorizer.serviceAccount('team-a', 'builder').group('apps').resource('deployments').namespace('team-a').check('delete').allowed()",
        "",
    ),
    (
        "authorizer.group('').resource('configmaps').subresource('status').namespace('team-a').name(request.name).check('update').allowed()",
        "",
    ),
    (
        "authorizer.group('').resource('secrets').namespace(request.namespace).name('shared').check('get').allowed()",
        "",
    ),
    (
        "authorizer.group('').resource('secrets').namespace('team-a').check('get').allowed()",
        "",
    ),
    (
        "!variables.d.errored() && variables.d.error() == ''",
        "'reason: ' + variables.d.reason()",
    ),
    (
        "variables.d.allowed()",
        "variables.d.reason() == '' ? 'no reason' : variables.d.reason()",
    ),
    ("authorizer.path('').check('get').allowed()", ""),
    (
        "authorizer.group('').resource(' ').check('get').allowed()",
        "",
    ),
    (
        "authorizer.serviceAccount('Team_A', 'builder').path('/healthz').check('get').allowed()",
        "",
    ),
    (
        "authorizer.serviceAccount('team-a', 'Bad Name').path('/healthz').check('get').allowed()",
        "",
    ),
    (
        "authorizer.group('').resource('pods').labelSelector('app=web').fieldSelector('spec.nodeName=n1').namespace('team-a').check('create').allowed()",
        "",
    ),
];

fn policy(index: usize, expression: &str, message_expression: &str, failure_policy: &str) -> Json {
    let mut validation = json!({"expression": expression});
    if !message_expression.is_empty() {
        validation["messageExpression"] = json!(message_expression);
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": format!("authz-{index}")},
    "spec": {
        "failurePolicy": failure_policy,
        "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "DELETE"], "resources": ["configmaps"]}]},
        "matchConditions": [{"name": "not-kube-system", "expression": "authorizer.path('/livez').check('get').allowed() || request.userInfo.username != 'skip-me'"}],
        "variables": [
            {"name": "d", "expression": "authorizer.group('').resource('configmaps').namespace(request.namespace).check('delete')"},
            {"name": "rr", "expression": "authorizer.requestResource.check('delete')"}
        ],
        "validations": [validation],
        // kube-apiserver evaluates audit annotations without the authorizer:
        // a variable that uses it fails there (kept to the first policy).
        "auditAnnotations": [{"key": "rr", "valueExpression": if index == 0 {
            "variables.rr.allowed() ? 'may delete' : 'may not delete'"
        } else {
            "'checked ' + request.name"
        }}],
    }})
}

fn requests() -> Vec<Request> {
    let users = [
        json!({"username": "alice", "groups": ["dev", "system:authenticated"]}),
        json!({"username": "bob", "groups": ["system:authenticated"]}),
        json!({"username": "system:serviceaccount:team-a:builder", "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a"]}),
        json!({"username": "skip-me"}),
    ];
    let mut out = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for ns in ["team-a", "team-b"] {
            for name in ["web", "free"] {
                let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}});
                for delete in [false, true] {
                    out.push(
                        build_request(RequestSpec {
                            uid: format!("authz-{u}-{ns}-{name}-{delete}"),
                            operation: Some(if delete {
                                kube::core::admission::Operation::Delete
                            } else {
                                kube::core::admission::Operation::Create
                            }),
                            object: (!delete).then(|| object.clone()),
                            old_object: delete.then(|| object.clone()),
                            name: Some(name.to_string()),
                            namespace: Some(ns.to_string()),
                            user_info: serde_json::from_value(user.clone()).expect("userInfo"),
                            ..Default::default()
                        })
                        .expect("request"),
                    );
                }
            }
        }
    }
    out
}

/// Asks Kubernetes' RBAC authorizer (through the oracle) every question.
struct OracleRbac {
    oracle: Mutex<OracleProcess>,
    rbac: Vec<Json>,
    questions: Mutex<usize>,
}

impl Authorizer for OracleRbac {
    fn authorize(&self, a: &AuthzAttributes) -> Result<AuthzDecision, String> {
        let mut q = json!({"user": a.user.name, "uid": a.user.uid, "groups": a.user.groups, "extra": a.user.extra, "verb": a.verb});
        match &a.target {
            AuthzTarget::Path(p) => q["path"] = json!(p),
            AuthzTarget::Resource {
                group,
                resource,
                subresource,
                namespace,
                name,
                ..
            } => {
                q["resourceRequest"] = json!(true);
                q["apiGroup"] = json!(group);
                q["resource"] = json!(resource);
                q["subresource"] = json!(subresource);
                q["namespace"] = json!(namespace);
                q["name"] = json!(name);
            }
        }
        *self.questions.lock().map_err(|e| e.to_string())? += 1;
        let answer = self
            .oracle
            .lock()
            .map_err(|e| e.to_string())?
            .ask(&[json!({"authorize": q, "rbac": self.rbac})])
            .remove(0);
        assert!(answer["error"].is_null(), "oracle: {answer}");
        Ok(AuthzDecision {
            verdict: match answer["decision"].as_str() {
                Some("Allow") => AuthzVerdict::Allow,
                Some("Deny") => AuthzVerdict::Deny,
                _ => AuthzVerdict::NoOpinion,
            },
            reason: answer["reason"].as_str().unwrap_or_default().to_string(),
            error: answer["evaluationError"].as_str().map(str::to_string),
        })
    }
}

/// An empty snapshot whose authorizer is [`OracleRbac`].
struct WithRbac {
    snapshot: Snapshot,
    authorizer: Arc<OracleRbac>,
}

impl ParamSource for WithRbac {
    fn param_scope(&self, a: &str, k: &str) -> Result<Option<ParamScope>, LookupError> {
        self.snapshot.param_scope(a, k)
    }
}

impl ClusterState for WithRbac {
    fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, LookupError> {
        self.snapshot.namespace(name)
    }
    fn list(
        &self,
        a: &str,
        k: &str,
        ns: Option<&str>,
    ) -> Result<kube_cel::cel::Value, LookupError> {
        self.snapshot.list(a, k, ns)
    }
    fn authorizer(&self) -> Result<Arc<dyn Authorizer>, String> {
        Ok(self.authorizer.clone())
    }
}

#[test]
fn authorizer_decides_as_kube_apiserver() {
    let Some(oracle) = oracle_binary() else {
        return;
    };
    let rbac = rbac();
    let authorizer = Arc::new(OracleRbac {
        oracle: Mutex::new(OracleProcess::start(&oracle)),
        rbac: rbac.clone(),
        questions: Mutex::new(0),
    });
    let cluster = WithRbac {
        snapshot: Snapshot::empty(),
        authorizer: authorizer.clone(),
    };
    let requests = requests();
    let mut inputs = Vec::new();
    let mut gate = Vec::new();
    for (index, (expression, message)) in CHECKS.iter().enumerate() {
        for failure_policy in ["Fail", "Ignore"] {
            let p = policy(index, expression, message, failure_policy);
            let b = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": format!("authz-{index}-binding")},
                "spec": {"policyName": format!("authz-{index}"), "validationActions": ["Deny", "Audit"]}});
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("p.yaml"), format!("{p}\n---\n{b}\n")).expect("write");
            let set = PolicySet::load_dir(dir.path())
                .unwrap_or_else(|e| panic!("{expression} does not load: {e}"));
            for r in &requests {
                let d = set
                    .evaluate(r, &cluster, &EvalOptions::default())
                    .expect("evaluates");
                inputs.push(json!({"policies": [p], "bindings": [b], "params": [], "namespaces": [], "rbac": rbac, "request": request_json(r)}));
                gate.push((
                    format!("authz-{index} {failure_policy} {expression} / {}", r.uid),
                    d,
                ));
            }
        }
    }
    let mut process = OracleProcess::start(&oracle);
    let answers = process.ask(&inputs);
    process.finish();
    let mut differences = Vec::new();
    let mut error_wording = 0;
    let mut audit_error_wording = 0;
    let (mut denied, mut allowed) = (0, 0);
    for ((what, d), kube) in gate.iter().zip(&answers) {
        assert!(kube["error"].is_null(), "oracle error for {what}: {kube}");
        if d.allowed {
            allowed += 1;
        } else {
            denied += 1;
        }
        for (class, detail) in compare_answers(d, kube) {
            // The documented wrapping of every denial, and the keys of a
            // webhook's audit annotations (compared below under kube-apiserver's).
            if class == "message-framing" || class == "audit-annotations" {
                continue;
            }
            if class == "message" && same_error(d, kube) {
                error_wording += 1;
                continue;
            }
            differences.push(format!("{class} {what}:\n          {detail}"));
        }
        let policy = what.split(' ').next().unwrap_or_default();
        if let Some(detail) = audit_difference(policy, d, kube) {
            // The same evaluation error in a recorded Audit failure, where the
            // gate's interpreter names the failing function first.
            let mut unwrapped = d.clone();
            for v in unwrapped.audit_annotations.values_mut() {
                *v = without_function_prefix(v);
            }
            if audit_difference(policy, &unwrapped, kube).is_none() {
                audit_error_wording += 1;
            } else {
                differences.push(format!("audit-annotations {what}:\n          {detail}"));
            }
        }
    }
    let questions = *authorizer.questions.lock().expect("count");
    println!(
        "differential (authorizer): {} cases compared ({denied} denied, {allowed} allowed by the gate), {questions} RBAC questions, {error_wording} denials and {audit_error_wording} recorded Audit failures for the same evaluation error worded otherwise, {} differences",
        gate.len(),
        differences.len()
    );
    assert!(denied > 0 && allowed > 0 && questions > 0);
    assert!(
        differences.is_empty(),
        "{} difference(s) from kube-apiserver:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
