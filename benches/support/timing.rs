//! The quick timing loop the engine and scale benches print their ratios
//! with (next to criterion's estimates): both sides of a ratio are timed the
//! same way, in the same run.

use std::time::{Duration, Instant};

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
