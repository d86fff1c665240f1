//! The playground's JSON API: the types the page sends and receives, and the
//! handlers. Every decision is the engine's ([`PolicySet::evaluate`] with the
//! options `serve` uses, plus the trace), encoded by
//! [`encode_response`](crate::admission::encode_response) as `serve` encodes it.
//!
//! Bad input is an answer, not a failure: a body that is not the JSON asked for
//! is `400` with `{"error": "..."}`; policies that do not load, an object that
//! is not YAML, a request that cannot be built are `200` with `loadErrors` or
//! `requestErrors` naming the pane, file and line, so the page can mark them.

use super::Playground;
use super::guard::JsonObjectBody;
use crate::admission::encode_response;
use crate::cli::policytest::runner::{case_request, case_stage};
use crate::cli::policytest::spec::{
    Case, Expect, InlineSource, ObjectSource, PolicyTestDocument, Source, TestMode,
};
use crate::cluster::Snapshot;
use crate::documents::split_documents;
use crate::policy::cancel::{self, CancelReason, CancelToken};
use crate::policy::{Decision, EvalOptions, Mode, PolicySet, Stage};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The webhook names of `deploy/` (kube-apiserver names them in a denial).
const VALIDATING_WEBHOOK: &str = "validate.safety-gate.dev";
const MUTATING_WEBHOOK: &str = "mutate.safety-gate.dev";

/// An error answer: `{"error": message}` with a 4xx status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// Unknown paths: `404 {"error": ...}`.
pub async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such page or API".to_string())
}

/// Decodes a JSON body (already checked to be an object by
/// [`JsonObjectBody`]); anything else is `400` naming what is wrong.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("malformed request body: {e}"),
        )
    })
}

/// One policy document set of the page: a file name and its text.
pub type PolicyText = InlineSource;

/// A request as the page edits it: the fields of a PolicyTest case (README
/// "PolicyTest reference"), with `object` and `oldObject` as YAML or JSON text.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlaygroundRequest {
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT`; default from the objects given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// YAML or JSON text of `request.object` (blank: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// YAML or JSON text of `request.oldObject` (blank: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info: Option<UserInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<GroupVersionKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<GroupVersionResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    /// `validate` (default) or `mutate`: which webhook path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `Enforce` (default) or `DryRun`: the gate's `--mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// `POST /api/evaluate` and `POST /api/test/export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EvaluateBody {
    pub policies: Vec<PolicyText>,
    pub request: PlaygroundRequest,
    /// YAML/JSON documents of cluster state (Namespaces, looked-up objects,
    /// params); blank or absent: the empty cluster state `safety-gate test`
    /// uses for a case without `clusterState`.
    #[serde(default)]
    pub cluster_state: Option<String>,
    /// A PolicyTest `expect` to check the decision against (stepping through
    /// an imported suite).
    #[serde(default)]
    pub expect: Option<Value>,
    /// The case's name (export only).
    #[serde(default)]
    pub name: Option<String>,
    /// What the imported suite names for this case but the body does not hold
    /// (entries of `/api/test/import`'s `unresolved`, like `policies:
    /// policies.yaml`); when any is given, `expect` is not checked and the
    /// expectation says the case cannot be decided.
    #[serde(default)]
    pub unresolved: Vec<String>,
}

/// A problem tied to a pane of the page and a line in it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// `policies`, `object`, `oldObject`, `clusterState`, `request` or `expect`.
    pub pane: &'static str,
    /// The policy file name (pane `policies`), else the pane's name.
    pub file: String,
    /// 1-based line in that text; 0 when the problem has no line.
    pub line: usize,
    /// 1-based column, where the YAML parser names one (`(column N)` in its message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

/// The case the page describes, as PolicyTest parts, or the problems that
/// stop it from being one.
struct Prepared {
    policies: PolicySet,
    /// The cluster state pane's documents; a blank pane is the empty state
    /// `safety-gate test` gives a case without `clusterState` (no namespaces,
    /// no objects to look up, no params), so a saved test decides the same.
    cluster: Snapshot,
    case: Case,
    object: Option<Value>,
    old_object: Option<Value>,
}

/// `GET /api/library`: `{"policies": [{name, text}]}`, the shipped policies
/// (or those of `--policies DIR`).
pub async fn library(State(state): State<Playground>) -> Json<Value> {
    Json(json!({ "policies": *state.library }))
}

/// `GET /api/examples`: `{"examples": [{id, title, incident, description,
/// policies, request, clusterState, expect}]}`, the five incidents.
pub async fn examples() -> Result<Json<Value>, ApiError> {
    let list = super::examples::all(&super::shipped_library())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(json!({ "examples": list })))
}

/// `POST /api/evaluate`: `{policies, request, clusterState?, expect?}` →
/// `{loadErrors, requestErrors, notes, decision?, expectation?}`.
pub async fn evaluate(
    State(state): State<Playground>,
    JsonObjectBody(bytes): JsonObjectBody,
) -> Result<Json<Value>, ApiError> {
    let input: EvaluateBody = body(&bytes)?;
    cancellable(state.evaluation_timeout, move || evaluate_body(&input)).await
}

/// Cancels the evaluation when the handler's future is dropped before it
/// finished: hyper drops it when the client closes the connection (the page
/// aborts a stale evaluation, a `curl -m` gives up). After the answer the
/// token is spent and cancelling changes nothing.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel(CancelReason::ClientGone);
    }
}

/// Runs `work` (CPU work: off the async workers, as `serve` does) under a
/// [`CancelToken`] that trips after `timeout` or when the client goes away;
/// the engine's check points then stop the evaluation. A stopped evaluation
/// is not a decision (failurePolicy would have answered for the stop), so it
/// is answered `503 {"error"}` naming the timeout.
async fn cancellable(
    timeout: Duration,
    work: impl FnOnce() -> Value + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let token = CancelToken::new(Some(Instant::now() + timeout));
    let _cancel_on_drop = CancelOnDrop(token.clone());
    let current = token.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let _entered = current.enter();
        work()
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if token.stopped_evaluation() {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the evaluation took longer than the playground's limit of {} ms per evaluation (--evaluation-timeout) and was stopped: {}",
                timeout.as_millis(),
                cancel::message(token.reason().unwrap_or(CancelReason::Deadline))
            ),
        ));
    }
    Ok(Json(answer))
}

/// The answer of `POST /api/evaluate` for `input`.
pub fn evaluate_body(input: &EvaluateBody) -> Value {
    let prepared = match prepare(input) {
        Ok(p) => p,
        Err((load, request)) => {
            return json!({"loadErrors": load, "requestErrors": request, "notes": []});
        }
    };
    let notes: Vec<String> = prepared
        .policies
        .notes()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let (decision, stage, request) = match decide_request(&prepared, true) {
        Ok(d) => d,
        Err(e) => {
            return json!({"loadErrors": [], "notes": notes, "requestErrors": [request_problem(e)]});
        }
    };
    let mut answer = json!({
        "loadErrors": [],
        "requestErrors": [],
        "notes": notes,
        "decision": decision_json(&decision, stage, prepared.object.as_ref()),
        // The AdmissionReview kube-apiserver would send for this case.
        "review": {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": review_request(&request)},
    });
    if input.expect.is_some() && !input.unresolved.is_empty() {
        // The decision lacks what the suite names (a missing policy decides
        // nothing, so "allowed" would be a FAIL that says nothing about the
        // test): not checked.
        let problems: Vec<String> = input
            .unresolved
            .iter()
            .map(|u| format!("cannot be decided: {u} is not loaded (the suite names it by path; add it to the page)"))
            .collect();
        answer["expectation"] = json!({"passed": null, "decided": false, "problems": problems});
    } else if let Some(expect) = &input.expect {
        answer["expectation"] = match serde_json::from_value::<Expect>(expect.clone()) {
            Ok(expect) => match expect.check(&decision, prepared.object.as_ref()) {
                Ok(()) => json!({"passed": true, "problems": []}),
                Err(problems) => json!({"passed": false, "problems": problems}),
            },
            Err(e) => json!({"passed": false, "problems": [format!("expect: {e}")]}),
        };
    }
    answer
}

/// `request` as kube-apiserver's AdmissionRequest JSON: `resource` and
/// `requestResource` are `{group, version, resource}` (kube's
/// `GroupVersionResource` also serialises its own `api_version`, which is no
/// field of the Kubernetes type).
fn review_request(request: &crate::policy::Request) -> Value {
    let mut value = serde_json::to_value(request).unwrap_or(Value::Null);
    for field in ["resource", "requestResource"] {
        if let Some(Value::Object(gvr)) = value.get_mut(field) {
            gvr.remove("api_version");
        }
    }
    value
}

/// Loads the policies and cluster state and builds the case, or says every
/// problem found: `(load errors, request errors)`.
fn prepare(input: &EvaluateBody) -> Result<Prepared, (Vec<Problem>, Vec<Problem>)> {
    let sources: Vec<(PathBuf, String)> = input
        .policies
        .iter()
        .map(|p| (PathBuf::from(&p.name), p.text.clone()))
        .collect();
    let mut load_errors = Vec::new();
    let policies = match PolicySet::load_texts(&sources) {
        Ok(set) => Some(set),
        Err(errors) => {
            load_errors.extend(errors.0.into_iter().map(|e| Problem {
                pane: "policies",
                file: e.file.display().to_string(),
                line: e.line,
                column: column_of(&e.message),
                policy: e.policy,
                field: e.field,
                message: without_column(&e.message),
            }));
            None
        }
    };
    let mut request_errors = Vec::new();
    let sources: Vec<(PathBuf, String)> = input
        .cluster_state
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| (PathBuf::from("clusterState"), t.clone()))
        .collect();
    let cluster = match Snapshot::load_texts(&sources) {
        Ok(s) => Some(s),
        Err(e) => {
            request_errors.extend(e.0.into_iter().map(|l| Problem {
                pane: "clusterState",
                file: "clusterState".into(),
                line: l.line,
                column: column_of(&l.message),
                policy: None,
                field: None,
                message: without_column(&l.message),
            }));
            None
        }
    };
    let object = parse_object(
        "object",
        input.request.object.as_deref(),
        &mut request_errors,
    );
    let old_object = parse_object(
        "oldObject",
        input.request.old_object.as_deref(),
        &mut request_errors,
    );
    let case = to_case(
        input.name.as_deref().unwrap_or("playground"),
        &input.request,
    );
    let case = match case {
        Ok(c) => Some(c),
        Err(e) => {
            request_errors.push(request_problem(e));
            None
        }
    };
    match (policies, case, cluster) {
        (Some(policies), Some(case), Some(cluster)) if request_errors.is_empty() => Ok(Prepared {
            policies,
            cluster,
            case,
            object,
            old_object,
        }),
        _ => Err((load_errors, request_errors)),
    }
}

/// The column a YAML error names (`... (column 8)`), if any.
fn column_of(message: &str) -> Option<usize> {
    let (_, rest) = message.rsplit_once("(column ")?;
    rest.split(')').next()?.trim().parse().ok()
}

/// The message without the ` (column N)` that [`column_of`] reads: the
/// problem's `column` says it, and the page prints `file:line:column: message`.
fn without_column(message: &str) -> String {
    match message.rsplit_once(" (column ") {
        Some((head, rest)) if column_of(message).is_some() => {
            let tail = rest.split_once(')').map_or("", |(_, t)| t);
            format!("{head}{tail}")
        }
        _ => message.to_string(),
    }
}

fn request_problem(message: String) -> Problem {
    Problem {
        pane: "request",
        file: "request".into(),
        line: 0,
        column: None,
        policy: None,
        field: None,
        message,
    }
}

/// The one object of a pane's YAML/JSON text; blank text is no object.
fn parse_object(
    pane: &'static str,
    text: Option<&str>,
    problems: &mut Vec<Problem>,
) -> Option<Value> {
    let text = text.filter(|t| !t.trim().is_empty())?;
    let docs = split_documents(&PathBuf::from(pane), text);
    let problem = |line: usize, message: String| Problem {
        pane,
        file: pane.into(),
        line,
        column: column_of(&message),
        policy: None,
        field: None,
        message: without_column(&message),
    };
    match docs.as_slice() {
        [one] => match one.decode_data::<Value>() {
            Ok(v) if v.is_object() => Some(v),
            Ok(_) => {
                problems.push(problem(
                    one.first_line,
                    "must be a mapping (an object)".into(),
                ));
                None
            }
            Err(e) => {
                problems.push(problem(e.line, e.message));
                None
            }
        },
        [] => None,
        more => {
            problems.push(problem(
                more[1].first_line,
                format!("expected one object, found {} documents", more.len()),
            ));
            None
        }
    }
}

/// The PolicyTest case the page's request describes (objects inline).
fn to_case(name: &str, r: &PlaygroundRequest) -> Result<Case, String> {
    let mode = match r.mode.as_deref() {
        None | Some("") | Some("Enforce") => None,
        Some("DryRun") => Some(TestMode::DryRun),
        Some(other) => return Err(format!("mode '{other}' must be Enforce or DryRun")),
    };
    Ok(Case {
        name: name.to_string(),
        operation: r.operation.clone(),
        user_info: r.user_info.clone(),
        object: None,
        old_object: None,
        request_name: r.request_name.clone(),
        namespace: r.namespace.clone().filter(|n| !n.is_empty()),
        kind: r.kind.clone(),
        resource: r.resource.clone(),
        sub_resource: r.sub_resource.clone().filter(|s| !s.is_empty()),
        dry_run: r.dry_run,
        options: r.options.clone(),
        uid: Some("playground".to_string()),
        lookups_unavailable: Vec::new(),
        endpoint: r.endpoint.clone().filter(|e| !e.is_empty()),
        mode,
        expect: Expect::default(),
    })
}

/// The decision `serve` would make: the request `safety-gate test` builds for
/// this case, evaluated with serve's options (`trace` only adds the record).
fn decide(p: &Prepared, trace: bool) -> Result<(Decision, Stage), String> {
    decide_request(p, trace).map(|(d, s, _)| (d, s))
}

/// [`decide`], with the request it decided.
fn decide_request(
    p: &Prepared,
    trace: bool,
) -> Result<(Decision, Stage, crate::policy::Request), String> {
    let request = case_request(0, &p.case, p.object.clone(), p.old_object.clone())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let stage = case_stage(&p.case)?;
    let mode = match p.case.mode {
        Some(TestMode::DryRun) => Mode::DryRun,
        _ => Mode::Enforce,
    };
    let decision = p
        .policies
        .evaluate(
            &request,
            &p.cluster,
            &EvalOptions {
                mode,
                stage,
                deadline: None,
                trace,
            },
        )
        .map_err(|e| format!("input error: {e}"))?;
    Ok((decision, stage, request))
}

/// kubectl's lines for this answer: `Warning: ...` for each warning, then for
/// a denial kube-apiserver's webhook error (`webhook/errors/statuserror.go`:
/// `admission webhook "NAME" denied the request: MESSAGE`) as kubectl 1.37
/// prints it (`cmd/util/helpers.go`): reason `Invalid` (422) as `The request is
/// invalid: ...` (the gate's status has no details), another reason as
/// `Error from server (Reason): ...`, none as `Error from server: ...`.
/// `kubectl delete` and `create` print exactly this; `apply` puts `error when
/// creating "FILE": ` before the webhook's words.
pub fn kubectl_lines(decision: &Decision, stage: Stage) -> Vec<String> {
    let mut lines: Vec<String> = decision
        .warnings
        .iter()
        .map(|w| format!("Warning: {w}"))
        .collect();
    if let Some(status) = decision.status.as_ref().filter(|_| !decision.allowed) {
        let webhook = match stage {
            Stage::Validate => VALIDATING_WEBHOOK,
            Stage::Mutate => MUTATING_WEBHOOK,
        };
        let denied = format!("admission webhook \"{webhook}\" denied the request");
        let message = if status.message.is_empty() {
            if status.reason.is_empty() {
                format!("{denied} without explanation")
            } else {
                format!("{denied}: {}", status.reason)
            }
        } else {
            format!("{denied}: {}", status.message)
        };
        lines.push(match status.reason.as_str() {
            "" => format!("Error from server: {message}"),
            "Invalid" => format!("The request is invalid: {message}"),
            reason => format!("Error from server ({reason}): {message}"),
        });
    }
    lines
}

fn decision_json(decision: &Decision, stage: Stage, object: Option<&Value>) -> Value {
    let response: Value = serde_json::from_slice(&encode_response(decision)).unwrap_or(Value::Null);
    let patch = decision
        .patch
        .as_ref()
        .and_then(|p| serde_json::to_value(p).ok());
    let patched_object = match (decision.patch.as_ref(), object) {
        (Some(p), Some(o)) => {
            let mut patched = o.clone();
            match json_patch::patch(&mut patched, p) {
                Ok(()) => patched,
                Err(e) => json!({"error": format!("the patch does not apply: {e}")}),
            }
        }
        _ => Value::Null,
    };
    let policies: Vec<Value> = decision
        .policies
        .iter()
        .map(|p| {
            json!({
                "policy": p.policy,
                "outcome": p.outcome.as_str(),
                "denies": p.denies,
                "messages": p.messages,
                "errors": p.errors,
                "exemptedBy": p.exempted_by,
                "trace": p.trace,
            })
        })
        .collect();
    json!({
        "allowed": decision.allowed,
        "code": decision.status.as_ref().map(|s| s.code),
        "reason": decision.status.as_ref().map(|s| s.reason.clone()),
        "message": decision.status.as_ref().map(|s| s.message.clone()),
        "verdict": decision.verdict.as_str(),
        "kubectl": kubectl_lines(decision, stage),
        "warnings": decision.warnings,
        "auditAnnotations": decision.audit_annotations,
        "patch": patch,
        "object": object,
        "patchedObject": patched_object,
        "policies": policies,
        "elapsedMicros": u64::try_from(decision.elapsed.as_micros()).unwrap_or(u64::MAX),
        "path": stage.path(),
        "response": response,
    })
}

/// `POST /api/test/export`: the body of `/api/evaluate` plus `name` →
/// `{fileName, text}`, a PolicyTest suite with the policies and cluster state
/// written inline and one case whose `expect` is today's decision; `safety-gate
/// test FILE` runs it unchanged. A case that cannot be decided is `200` with
/// `loadErrors`/`requestErrors`, as `/api/evaluate` answers.
pub async fn export_test(
    State(state): State<Playground>,
    JsonObjectBody(bytes): JsonObjectBody,
) -> Result<Json<Value>, ApiError> {
    let input: EvaluateBody = body(&bytes)?;
    cancellable(state.evaluation_timeout, move || export_body(&input)).await
}

fn export_body(input: &EvaluateBody) -> Value {
    let prepared = match prepare(input) {
        Ok(p) => p,
        Err((load, request)) => return json!({"loadErrors": load, "requestErrors": request}),
    };
    let (decision, stage) = match decide(&prepared, false) {
        Ok(d) => d,
        Err(e) => return json!({"loadErrors": [], "requestErrors": [request_problem(e)]}),
    };
    let name = slug(input.name.as_deref().unwrap_or("playground-case"));
    match suite_text(input, &prepared, &decision, stage, &name) {
        Ok(text) => json!({"fileName": format!("{name}.test.yaml"), "text": text}),
        Err(e) => json!({"loadErrors": [], "requestErrors": [request_problem(e)]}),
    }
}

/// A name usable as `metadata.name` and a file name: lower case letters,
/// digits and `-`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "playground-case".to_string()
    } else {
        out
    }
}

/// The `expect` that holds for `decision`: allowed, code, deniedBy, the
/// message, the exact warning count and, on `/mutate`, the patched object.
fn expect_of(decision: &Decision, stage: Stage, object: Option<&Value>) -> Value {
    let mut expect = serde_json::Map::new();
    expect.insert("allowed".into(), json!(decision.allowed));
    if let Some(status) = decision.status.as_ref().filter(|_| !decision.allowed) {
        expect.insert("code".into(), json!(status.code));
        expect.insert("deniedBy".into(), json!(decision.denied_by()));
        if !status.message.is_empty() {
            expect.insert("messageContains".into(), json!(status.message));
        }
    }
    expect.insert("warnings".into(), json!(decision.warnings.len()));
    if stage == Stage::Mutate && decision.allowed {
        expect.insert("patched".into(), json!(decision.patch.is_some()));
        if let (Some(p), Some(o)) = (decision.patch.as_ref(), object) {
            let mut patched = o.clone();
            if json_patch::patch(&mut patched, p).is_ok() {
                expect.insert("patchedObject".into(), patched);
            }
        }
    }
    Value::Object(expect)
}

/// The suite as YAML: texts as literal blocks (so they keep their lines),
/// everything else as YAML's own serialisation.
fn suite_text(
    input: &EvaluateBody,
    p: &Prepared,
    decision: &Decision,
    stage: Stage,
    name: &str,
) -> Result<String, String> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Suite<'a> {
        api_version: &'static str,
        kind: &'static str,
        metadata: BTreeMap<&'static str, &'a str>,
        spec: Spec<'a>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec<'a> {
        policies: Vec<Inline>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        cluster_state: Vec<Inline>,
        cases: Vec<ExportCase<'a>>,
    }
    #[derive(Serialize)]
    struct Inline {
        name: String,
        text: serde_saphyr::LitString,
    }
    let inline = |name: &str, text: &str| Inline {
        name: name.to_string(),
        text: serde_saphyr::LitString(text.to_string()),
    };
    /// A case in reading order: its name and request fields, then the
    /// objects, then what it expects.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ExportCase<'a> {
        name: &'a str,
        uid: &'a str,
        #[serde(flatten)]
        fields: serde_json::Map<String, Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        object: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        old_object: Option<&'a Value>,
        expect: Value,
    }
    let mut fields = match serde_json::to_value(&input.request).map_err(|e| e.to_string())? {
        Value::Object(map) => map,
        _ => return Err("the request is not an object".to_string()),
    };
    fields.remove("object");
    fields.remove("oldObject");
    // Blank optional fields the page sends mean "not given".
    fields.retain(|_, v| !matches!(v, Value::String(s) if s.is_empty()));
    let case = ExportCase {
        name,
        // The uid the playground evaluated with: policies may read request.uid.
        uid: p.case.uid.as_deref().unwrap_or_default(),
        fields,
        object: p.object.as_ref(),
        old_object: p.old_object.as_ref(),
        expect: expect_of(decision, stage, p.object.as_ref()),
    };
    let suite = Suite {
        api_version: crate::policy::GATE_API_VERSION,
        kind: "PolicyTest",
        metadata: BTreeMap::from([("name", name)]),
        spec: Spec {
            policies: input
                .policies
                .iter()
                .map(|s| inline(&s.name, &s.text))
                .collect(),
            cluster_state: input
                .cluster_state
                .iter()
                .filter(|t| !t.trim().is_empty())
                .map(|t| inline("cluster-state.yaml", t))
                .collect(),
            cases: vec![case],
        },
    };
    let text = serde_saphyr::to_string(&suite).map_err(|e| e.to_string())?;
    let header = format!(
        "# PolicyTest saved by `safety-gate playground`: safety-gate test {name}.test.yaml\n"
    );
    let text = header + &text;
    // The file must read back as the suite it describes, texts to the byte.
    let back = split_documents(&PathBuf::from("export"), &text);
    let doc = back
        .first()
        .ok_or_else(|| "the saved suite is empty".to_string())?
        .decode::<PolicyTestDocument>()
        .map_err(|e| format!("the saved suite does not read back: {e}"))?;
    let same = doc
        .spec
        .policies
        .iter()
        .zip(&input.policies)
        .all(|(a, b)| matches!(a, Source::Inline(a) if a.text == b.text && a.name == b.name));
    if !same || doc.spec.policies.len() != input.policies.len() {
        return Err("the saved suite does not keep the policy texts".to_string());
    }
    Ok(text)
}

/// `POST /api/test/import`: `{text}` (a PolicyTest file) → `{suites: [{name,
/// policies, clusterState, unresolved, cases: [{name, request, expect}]}]}`.
/// Paths in the suite cannot be read from the page's side: a policy path whose
/// file name is a library policy's takes the library's text, others are listed
/// in `unresolved`.
pub async fn import_test(
    State(state): State<Playground>,
    JsonObjectBody(bytes): JsonObjectBody,
) -> Result<Json<Value>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ImportBody {
        text: String,
        #[serde(default)]
        name: Option<String>,
    }
    let input: ImportBody = body(&bytes)?;
    let file = PathBuf::from(input.name.as_deref().unwrap_or("imported.test.yaml"));
    import_suites(&file, &input.text, &state.library)
        .map(Json)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))
}

/// The suites of a PolicyTest file as the page steps through them.
///
/// # Errors
/// The text holds no PolicyTest, or one that does not decode (file and line).
pub fn import_suites(
    file: &std::path::Path,
    text: &str,
    library: &[InlineSource],
) -> Result<Value, String> {
    let mut suites = Vec::new();
    for doc in split_documents(file, text) {
        let raw = doc.decode::<Value>().map_err(|e| e.to_string())?;
        if raw.get("kind").and_then(Value::as_str) != Some("PolicyTest") {
            continue;
        }
        let suite: PolicyTestDocument = doc.decode().map_err(|e| e.to_string())?;
        suites.push(import_suite(&suite, &raw, library)?);
    }
    if suites.is_empty() {
        return Err(format!("{}: no PolicyTest document found", file.display()));
    }
    Ok(json!({ "suites": suites }))
}

/// One suite; `raw` is its document as JSON (for each case's `expect` as written).
fn import_suite(
    suite: &PolicyTestDocument,
    raw: &Value,
    library: &[InlineSource],
) -> Result<Value, String> {
    let mut unresolved = Vec::new();
    let mut policies = Vec::new();
    for entry in &suite.spec.policies {
        match entry {
            Source::Inline(i) => policies.push(i.clone()),
            Source::Path(path) => {
                let base = std::path::Path::new(path)
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                match library.iter().find(|l| l.name == base) {
                    Some(l) => policies.push(l.clone()),
                    None => unresolved.push(format!("policies: {path}")),
                }
            }
        }
    }
    let mut cluster_state = Vec::new();
    for (field, entry) in (suite.spec.cluster_state.iter().map(|e| ("clusterState", e)))
        .chain(suite.spec.params.iter().map(|e| ("params", e)))
    {
        match entry {
            Source::Inline(i) => cluster_state.push(i.text.trim_end().to_string()),
            Source::Path(path) => unresolved.push(format!("{field}: {path}")),
        }
    }
    let suite_unresolved = unresolved.clone();
    let mut cases = Vec::new();
    for (index, case) in suite.spec.cases.iter().enumerate() {
        let mut case_unresolved = suite_unresolved.clone();
        let expect = raw
            .pointer(&format!("/spec/cases/{index}/expect"))
            .cloned()
            .unwrap_or(Value::Null);
        let mut object_text = |field: &str, source: &Option<ObjectSource>| match source {
            None => None,
            Some(ObjectSource::Inline(v)) => Some(yaml_text(v)),
            Some(ObjectSource::File { file }) => {
                let entry = format!("cases[{}].{field}: {file}", case.name);
                unresolved.push(entry.clone());
                case_unresolved.push(entry);
                None
            }
        };
        let request = PlaygroundRequest {
            operation: case.operation.clone(),
            object: object_text("object", &case.object),
            old_object: object_text("oldObject", &case.old_object),
            user_info: case.user_info.clone(),
            request_name: case.request_name.clone(),
            namespace: case.namespace.clone(),
            kind: case.kind.clone(),
            resource: case.resource.clone(),
            sub_resource: case.sub_resource.clone(),
            dry_run: case.dry_run,
            options: case.options.clone(),
            endpoint: case.endpoint.clone(),
            mode: case.mode.or(suite.spec.mode).map(|m| match m {
                TestMode::Enforce => "Enforce".to_string(),
                TestMode::DryRun => "DryRun".to_string(),
            }),
        };
        cases.push(json!({
            "name": case.name,
            "request": request,
            "expect": expect,
            "unresolved": case_unresolved,
        }));
    }
    Ok(json!({
        "name": suite.metadata.name,
        "policies": policies,
        "clusterState": cluster_state.join("\n---\n"),
        "unresolved": unresolved,
        "cases": cases,
    }))
}

/// An object as YAML text for the editor (JSON text if YAML cannot write it).
pub fn yaml_text(value: &Value) -> String {
    serde_saphyr::to_string(value)
        .unwrap_or_else(|_| serde_json::to_string_pretty(value).unwrap_or_default())
}
