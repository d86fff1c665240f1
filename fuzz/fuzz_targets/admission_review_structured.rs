//! Structure-aware AdmissionReviews (absent/null/empty fields, the kinds and
//! label keys the shipped policies read, unicode, numbers at the edges)
//! through `/validate` and `/mutate` with the shipped policies, in enforce
//! and audit mode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safety_gate::policy::Mode;
use safety_gate_fuzz::shape::AdmissionReviewShape;
use safety_gate_fuzz::{review_body, shipped_policies};

fuzz_target!(|input: (AdmissionReviewShape, bool)| {
    let (review, audit) = input;
    let body = match serde_json::to_vec(&review.to_json()) {
        Ok(body) => body,
        Err(e) => panic!("a serde_json::Value always serialises: {e}"),
    };
    let mode = if audit { Mode::DryRun } else { Mode::Enforce };
    review_body(shipped_policies(), &body, mode);
});
