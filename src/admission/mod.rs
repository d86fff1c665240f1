//! The admission layer: AdmissionReview bytes in, AdmissionReview bytes out.
//!
//! Data flows one way: the HTTP server and every CLI command hand a request to
//! [`review`], which decodes only what the matching policies read, asks the
//! policy engine for a [`Decision`](crate::policy::Decision) and encodes the
//! response exactly as kube-apiserver verifies it.

mod request;
mod response;
pub mod synthetic;

pub use request::{ReviewError, decode_review};
pub use response::{
    DecisionSummary, PolicyVerdictSummary, ReviewOutcome, deadline_exceeded_response,
    encode_response, review, review_request, summarize,
};
