//! Arbitrary bytes as the body of `POST /validate` and `POST /mutate`: the
//! AdmissionReview decoder, then (for what decodes) the shipped policies'
//! matching, CEL evaluation and response encoding, in process.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safety_gate::policy::Mode;
use safety_gate_fuzz::{review_body, shipped_policies};

fuzz_target!(|body: &[u8]| {
    review_body(shipped_policies(), body, Mode::Enforce);
});
