//! What the engine and scale benches share: the admission step they time,
//! and the quick timing loop they print their ratios with (next to
//! criterion's estimates), so both sides of a ratio are timed the same way.

use safety_gate::admission;
use safety_gate::cluster::Snapshot;
use safety_gate::policy::{Mode, PolicySet, Stage};
use std::time::{Duration, Instant};

/// The whole `/validate` admission step as `serve` runs it in enforce mode:
/// decode the AdmissionReview `body`, evaluate, encode the response.
pub fn review(
    policies: &PolicySet,
    cluster: &Snapshot,
    body: &[u8],
) -> Result<admission::ReviewOutcome, admission::ReviewError> {
    admission::review(
        policies,
        cluster,
        Mode::Enforce,
        Stage::Validate,
        body,
        None,
    )
}

/// Median time per call of `f` over 15 batches, each sized from a 300 ms
/// warm-up so that a batch takes about 20 ms.
pub fn quick_time(mut f: impl FnMut()) -> Duration {
    let warm = Instant::now();
    let mut calls = 0u32;
    while warm.elapsed() < Duration::from_millis(300) {
        f();
        calls += 1;
    }
    let per_batch = (calls / 15).max(1);
    let mut batches: Vec<Duration> = (0..15)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed() / per_batch
        })
        .collect();
    batches.sort();
    batches[batches.len() / 2]
}
