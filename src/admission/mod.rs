//! The admission layer: AdmissionReview bytes in, AdmissionReview bytes out.
//!
//! Data flows one way: the HTTP server and every CLI command hand a request to
//! [`review`], which decodes only what the matching policies read, asks the
//! policy engine for a [`Decision`](crate::policy::Decision) and encodes the
//! response exactly as kube-apiserver verifies it.

pub mod apply;
mod request;
mod response;
pub mod synthetic;

pub use request::{AdmissionInput, ReviewError, decode_review};
pub use response::{
    DecisionSummary, PolicyVerdictSummary, ReviewOutcome, deadline_exceeded_response,
    encode_response, review, review_request, stage_of, summarize,
};

/// Which webhook path the request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /validate`: validations only; a patch is never returned.
    Validate,
    /// `POST /mutate`: `annotate` and `mutations`; validations only where a policy asks.
    Mutate,
}
