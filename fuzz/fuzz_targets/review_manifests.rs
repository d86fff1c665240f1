//! The manifest reader of `review` and `audit` (multi-document YAML and
//! JSON, `kind: List`) and the rest of `review`: each object becomes a CREATE,
//! an UPDATE over the live object (the same file read as the live snapshot)
//! or a DELETE, goes through the shipped policies, and the report is
//! rendered in one of the output formats.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safety_gate::cli::review::{ReviewArgs, ReviewFormat, ReviewOperation, run_with_policies};
use safety_gate_fuzz::{fnv1a, shipped_policies, write_input};
use std::path::PathBuf;

const FORMATS: [ReviewFormat; 6] = [
    ReviewFormat::Table,
    ReviewFormat::Wide,
    ReviewFormat::Json,
    ReviewFormat::Yaml,
    ReviewFormat::Sarif,
    ReviewFormat::Junit,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = write_input("inputs/manifests.yaml", text);
    // Options from a hash, so a seed file stays a well-formed manifest.
    let hash = fnv1a(data);
    let (operation, live) = match hash % 4 {
        0 => (ReviewOperation::Apply, None),
        1 => (ReviewOperation::Apply, Some(file.clone())),
        2 => (ReviewOperation::Update, Some(file.clone())),
        _ => (ReviewOperation::Delete, Some(file.clone())),
    };
    let args = ReviewArgs {
        manifests: vec![file],
        filename: Vec::new(),
        live,
        cluster: false,
        kubeconfig: None,
        context: None,
        operation,
        policies: PathBuf::from("policies"),
        format: FORMATS[(hash / 4 % 6) as usize],
        user: "fuzz".to_string(),
        groups: vec!["system:authenticated".to_string()],
        namespace: "default".to_string(),
        show_passing: (hash / 24).is_multiple_of(2),
    };
    run_with_policies(&args, shipped_policies());
});
