//! The gate's side of `benches/vs-apiserver.sh`: decode + evaluate + encode
//! of one AdmissionReview body with `admission::review`, in a plain loop,
//! next to kube-apiserver's own ValidatingAdmissionPolicy plugin timed by
//! `e2e/oracle`'s `BenchmarkValidatingPolicy` on the same body.
//!
//! Input from the environment (the script sets it):
//! - `VS_BODY`: the AdmissionReview body to time;
//! - `VS_DENIED`: optional, a body that must be denied (the policies are in force);
//! - `VS_POLICIES`: the policy directory;
//! - `VS_SECONDS`: how long to loop (default 3).
//!
//! Prints one line: `iterations=N ns/op=X cpu-ns/op=Y`, where cpu-ns/op is
//! the process's user+system CPU time over the loop (from /proc/self/stat)
//! per iteration.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark code: a panic is the run failing"
)]

use safety_gate::admission;
use safety_gate::cluster::Snapshot;
use safety_gate::policy::{Mode, PolicySet, Stage};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).map(PathBuf::from)
}

/// User + system CPU time of this process, in nanoseconds (clock ticks of
/// 10 ms on Linux: loop for seconds, not milliseconds).
fn process_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 10_000_000
}

fn main() {
    let Some(body_path) = env_path("VS_BODY") else {
        eprintln!("vs_apiserver: set VS_BODY and VS_POLICIES (benches/vs-apiserver.sh does)");
        return;
    };
    let body = std::fs::read(&body_path).expect("read VS_BODY");
    let policies_dir = env_path("VS_POLICIES").expect("VS_POLICIES");
    let seconds: f64 = std::env::var("VS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let policies = PolicySet::load_dir(&policies_dir).expect("policies load");
    let cluster = Snapshot::empty();
    let review = |body: &[u8]| {
        admission::review(
            &policies,
            &cluster,
            Mode::Enforce,
            Stage::Validate,
            body,
            None,
        )
        .expect("the body is an AdmissionReview")
    };
    if let Some(denied) = env_path("VS_DENIED") {
        let denied = std::fs::read(denied).expect("read VS_DENIED");
        assert!(
            !review(&denied).decision.allowed,
            "VS_DENIED was allowed: the policies are not in force"
        );
    }
    // Warm-up: caches, allocator, lazily compiled regexes.
    let warm_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < warm_until {
        black_box(review(black_box(&body)));
    }
    let budget = Duration::from_secs_f64(seconds);
    let cpu0 = process_cpu_ns();
    let started = Instant::now();
    let mut n: u64 = 0;
    while started.elapsed() < budget {
        for _ in 0..64 {
            black_box(review(black_box(&body)));
        }
        n += 64;
    }
    let wall = started.elapsed();
    let cpu = process_cpu_ns() - cpu0;
    println!(
        "iterations={n} ns/op={:.0} cpu-ns/op={:.0}",
        wall.as_nanos() as f64 / n as f64,
        cpu as f64 / n as f64
    );
}
