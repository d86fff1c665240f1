//! PolicyTest files through the `test` command's loader and runner: the
//! suite document, the policies, cluster state, params and objects it names
//! (relative to the suite, resolved through the links of
//! [`safety_gate_fuzz::scratch_dir`]), each case's request, evaluation and
//! expectations.
//!
//! Inputs naming a path outside the scratch directory (absolute, or more
//! `..` than it is deep) are skipped: the runner would read whatever the
//! path names, which for `/` is the whole file system — a slow input that
//! says nothing about the runner.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safety_gate::cli::policytest::{TestArgs, run};
use safety_gate::documents::split_documents;
use safety_gate_fuzz::write_input;
use serde_json::Value;
use std::path::{Component, Path};

/// The file is written two levels below the scratch directory.
const DEPTH: i32 = 2;

fn stays_inside(path: &str) -> bool {
    let mut depth = DEPTH;
    for component in Path::new(path).components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth -= 1,
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Every path a PolicyTest document names, where it names one.
fn paths(doc: &Value) -> Vec<&Value> {
    let spec = &doc["spec"];
    let mut out = Vec::new();
    for list in ["policies", "clusterState", "params"] {
        if let Some(items) = spec[list].as_array() {
            out.extend(items);
        }
    }
    if let Some(cases) = spec["cases"].as_array() {
        for case in cases {
            out.push(&case["object"]["file"]);
            out.push(&case["oldObject"]["file"]);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz-suite.yaml");
    for doc in split_documents(file, text) {
        if let Ok(value) = doc.decode::<Value>()
            && paths(&value)
                .iter()
                .any(|p| p.as_str().is_some_and(|p| !stays_inside(p)))
        {
            return;
        }
    }
    let suite = write_input("a/b/suite.yaml", text);
    run(&TestArgs { paths: vec![suite] });
});
