//! Encoding the AdmissionReview response exactly as kube-apiserver verifies it.
//!
//! kube 5's `AdmissionResponse` serialises `patch` as an array of numbers
//! (kube-rs#1781); the wire format is a base64 string. The envelope is ours for
//! that reason only; `Status` is kube's.

use super::request::{ReviewError, decode_review};
use crate::policy::ClusterState;
use crate::policy::{
    Decision, EvalOptions, Mode, PolicyOutcome, PolicySet, Request, Stage, Verdict,
};
use base64::Engine as _;
use kube::core::Status;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewEnvelope<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseBody<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseBody<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

/// Serialises a decision as the AdmissionReview response body.
pub fn encode_response(decision: &Decision) -> Vec<u8> {
    let status = decision
        .status
        .as_ref()
        .map(|s| Status::failure(&s.message, &s.reason).with_code(s.code));
    let patch = decision
        .patch
        .as_ref()
        .and_then(|p| serde_json::to_vec(p).ok())
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
    let envelope = ReviewEnvelope {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: ResponseBody {
            uid: &decision.uid,
            allowed: decision.allowed,
            status,
            warnings: &decision.warnings,
            audit_annotations: &decision.audit_annotations,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
        },
    };
    // Serialising plain strings, bools and maps of strings cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// What the server logs and counts for one decision.
#[derive(Debug, Clone)]
pub struct DecisionSummary {
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub user: String,
    pub allowed: bool,
    pub verdict: Verdict,
    pub policies: Vec<PolicyVerdictSummary>,
}

#[derive(Debug, Clone)]
pub struct PolicyVerdictSummary {
    pub policy: String,
    pub outcome: PolicyOutcome,
}

/// A response ready to send, with its summary.
#[derive(Debug, Clone)]
pub struct ReviewOutcome {
    pub response: Vec<u8>,
    pub summary: DecisionSummary,
    pub decision: Decision,
}

/// The whole admission step: decode, evaluate, encode.
pub fn review(
    policies: &PolicySet,
    cluster: &dyn ClusterState,
    mode: Mode,
    stage: Stage,
    body: &[u8],
    deadline: Option<Instant>,
) -> Result<ReviewOutcome, ReviewError> {
    let request = decode_review(body)?;
    review_request(policies, cluster, mode, stage, &request, deadline)
}

/// [`review`] of a request already decoded with [`decode_review`].
pub fn review_request(
    policies: &PolicySet,
    cluster: &dyn ClusterState,
    mode: Mode,
    stage: Stage,
    request: &Request,
    deadline: Option<Instant>,
) -> Result<ReviewOutcome, ReviewError> {
    let decision = policies
        .evaluate(
            request,
            cluster,
            &EvalOptions {
                mode,
                stage,
                deadline,
                trace: false,
            },
        )
        .map_err(|e| ReviewError::InvalidRequest(e.0))?;
    Ok(ReviewOutcome {
        response: encode_response(&decision),
        summary: summarize(request, &decision),
        decision,
    })
}

/// The response for a request that ran out of time: each matching policy's
/// failurePolicy decides (Fail denies, Ignore allows with an audit annotation).
pub fn deadline_exceeded_response(
    body: &[u8],
    policies: &PolicySet,
    mode: Mode,
    stage: Stage,
) -> Result<ReviewOutcome, ReviewError> {
    let request = decode_review(body)?;
    let decision = policies.deadline_decision(
        &request,
        &EvalOptions {
            mode,
            stage,
            deadline: None,
            trace: false,
        },
    );
    Ok(ReviewOutcome {
        response: encode_response(&decision),
        summary: summarize(&request, &decision),
        decision,
    })
}

pub fn summarize(request: &Request, decision: &Decision) -> DecisionSummary {
    DecisionSummary {
        uid: request.uid.clone(),
        kind: request.kind.kind.clone(),
        namespace: request.namespace_str().to_string(),
        name: crate::policy::effective_name(request),
        operation: request.operation_str().to_string(),
        user: request.username().to_string(),
        allowed: decision.allowed,
        verdict: decision.verdict,
        policies: decision
            .policies
            .iter()
            .map(|p| PolicyVerdictSummary {
                policy: p.policy.clone(),
                outcome: p.outcome,
            })
            .collect(),
    }
}
