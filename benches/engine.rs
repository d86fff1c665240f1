//! What the engine adds to an admission request, next to the cost of just
//! parsing the same body into kube's typed `AdmissionReview<DynamicObject>`.
//!
//! Groups (each for both fixtures in `benches/fixtures/`):
//! - `typed_parse`: `serde_json::from_slice::<AdmissionReview<DynamicObject>>`
//! - `review_shipped`: `admission::review` against the shipped `policies/`
//! - `review_empty`: `admission::review` with no policies (decode + encode only)
//!
//! Target: `review_shipped` (decode and evaluate the whole shipped library, and
//! encode the response) costs no more than `typed_parse` alone.
//!
//! Run: `cargo bench --bench engine`. After criterion, a plain timing loop
//! prints the ratios in one short table.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use criterion::{BenchmarkId, Criterion};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use safety_gate::cluster::Snapshot;
use safety_gate::policy::PolicySet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{quick_time, review};

#[path = "support/mod.rs"]
mod support;

/// The request bodies, as kube-apiserver sends them (compact JSON).
struct Fixture {
    id: &'static str,
    body: Vec<u8>,
}

const FIXTURES: &[(&str, &str)] = &[
    ("deployment_update", "deployment-update.json"),
    ("clusterrole_delete", "clusterrole-delete.json"),
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_fixtures() -> Vec<Fixture> {
    FIXTURES
        .iter()
        .map(|(id, file)| {
            let path = manifest_dir().join("benches/fixtures").join(file);
            let text = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
            // The files are indented for review; the apiserver sends compact JSON.
            let value: serde_json::Value = serde_json::from_slice(&text)
                .unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", path.display()));
            let body = serde_json::to_vec(&value).expect("re-encode a JSON value");
            Fixture { id, body }
        })
        .collect()
}

/// The shipped policy library, or why it cannot be measured right now.
fn load_shipped() -> Result<PolicySet, String> {
    let dir = manifest_dir().join("policies");
    if !dir.exists() {
        return Err(format!("{} does not exist", dir.display()));
    }
    PolicySet::load_dir(Path::new(&dir)).map_err(|e| e.to_string())
}

fn typed_parse(body: &[u8]) -> AdmissionReview<DynamicObject> {
    serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
        .expect("fixture parses as AdmissionReview<DynamicObject>")
}

/// One review per fixture before measuring: shows what is measured and keeps
/// a failing combination out of the benchmark instead of panicking in it.
fn usable(label: &str, policies: &PolicySet, cluster: &Snapshot, fixture: &Fixture) -> bool {
    match review(policies, cluster, &fixture.body) {
        Ok(outcome) => {
            let s = &outcome.summary;
            let matched: Vec<String> = s
                .policies
                .iter()
                .map(|p| format!("{}={:?}", p.policy, p.outcome))
                .collect();
            println!(
                "{label}/{}: {} bytes, allowed={} verdict={:?}, {} matched [{}]",
                fixture.id,
                fixture.body.len(),
                s.allowed,
                s.verdict,
                matched.len(),
                matched.join(", ")
            );
            true
        }
        Err(e) => {
            println!("{label}/{}: skipped, review failed: {e}", fixture.id);
            false
        }
    }
}

struct Setup {
    fixtures: Vec<Fixture>,
    shipped: Option<PolicySet>,
    empty: PolicySet,
    cluster: Snapshot,
}

fn setup() -> Setup {
    let fixtures = load_fixtures();
    for f in &fixtures {
        black_box(typed_parse(&f.body));
    }
    let shipped = match load_shipped() {
        Ok(set) => {
            println!("shipped policies: {} loaded from policies/", set.len());
            Some(set)
        }
        Err(e) => {
            println!("review_shipped skipped: cannot load policies/:\n{e}");
            None
        }
    };
    Setup {
        fixtures,
        shipped,
        empty: PolicySet::empty(),
        cluster: Snapshot::empty(),
    }
}

fn benches(c: &mut Criterion, s: &Setup) {
    let mut group = c.benchmark_group("typed_parse");
    for f in &s.fixtures {
        group.bench_with_input(BenchmarkId::from_parameter(f.id), &f.body, |b, body| {
            b.iter(|| typed_parse(black_box(body)))
        });
    }
    group.finish();

    for (name, policies) in [
        ("review_shipped", s.shipped.as_ref()),
        ("review_empty", Some(&s.empty)),
    ] {
        let Some(policies) = policies else { continue };
        let mut group = c.benchmark_group(name);
        for f in &s.fixtures {
            if !usable(name, policies, &s.cluster, f) {
                continue;
            }
            group.bench_with_input(BenchmarkId::from_parameter(f.id), &f.body, |b, body| {
                b.iter(|| review(policies, &s.cluster, black_box(body)))
            });
        }
        group.finish();
    }
}

fn ratio_summary(s: &Setup) {
    println!();
    println!("Ratio summary (quick timing loop, median of 15 batches; not criterion's estimates):");
    println!(
        "  {:<20} {:>12} {:>14} {:>12} {:>16} {:>14}",
        "fixture", "typed_parse", "review_shipped", "review_empty", "shipped/parse", "empty/parse"
    );
    for f in &s.fixtures {
        let parse = quick_time(|| {
            black_box(typed_parse(black_box(&f.body)));
        });
        let time_review = |policies: &PolicySet| {
            review(policies, &s.cluster, &f.body).is_ok().then(|| {
                quick_time(|| {
                    let _ = black_box(review(policies, &s.cluster, black_box(&f.body)));
                })
            })
        };
        let shipped = s.shipped.as_ref().and_then(time_review);
        let empty = time_review(&s.empty);
        let us = |d: Option<Duration>| {
            d.map_or("n/a".to_string(), |d| {
                format!("{:.1} µs", d.as_secs_f64() * 1e6)
            })
        };
        let ratio = |d: Option<Duration>| {
            d.map_or("n/a".to_string(), |d| {
                format!("{:.2}x", d.as_secs_f64() / parse.as_secs_f64())
            })
        };
        println!(
            "  {:<20} {:>12} {:>14} {:>12} {:>16} {:>14}",
            f.id,
            us(Some(parse)),
            us(shipped),
            us(empty),
            ratio(shipped),
            ratio(empty)
        );
    }
    if s.shipped.is_none() {
        println!("  (review_shipped n/a: the shipped policies did not load, see above)");
        return;
    }
    per_file_summary(s);
}

/// Where the shipped library's time goes: each policy file alone.
fn per_file_summary(s: &Setup) {
    let dir = manifest_dir().join("policies");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    println!("  review with one policy file at a time (same loop):");
    for file in files {
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let set = match PolicySet::load_files(std::slice::from_ref(&file)) {
            Ok(set) => set,
            Err(e) => {
                println!("    {name}: does not load alone: {e}");
                continue;
            }
        };
        let cells: Vec<String> = s
            .fixtures
            .iter()
            .map(|f| match review(&set, &s.cluster, &f.body) {
                Ok(_) => {
                    let t = quick_time(|| {
                        let _ = black_box(review(&set, &s.cluster, black_box(&f.body)));
                    });
                    format!("{} {:.1} µs", f.id, t.as_secs_f64() * 1e6)
                }
                Err(e) => format!("{} error: {e}", f.id),
            })
            .collect();
        println!("    {name:<32} {}", cells.join(", "));
    }
}

fn main() {
    let setup = setup();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();
    benches(&mut c, &setup);
    c.final_summary();

    // Only when benchmarking (`cargo bench`), not in `cargo test --benches`
    // or `--list`.
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--bench") && !has("--test") && !has("--list") && !has("--profile-time") {
        ratio_summary(&setup);
    }
}
