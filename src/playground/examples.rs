//! The preloaded examples: the five incidents of the project's history, each
//! a PolicyTest suite in `examples/playground/` (so `safety-gate test
//! examples/playground` proves each still decides as its `expect` says),
//! built into the binary and opened as the page opens an imported suite.

use crate::cli::policytest::spec::InlineSource;
use serde_json::{Value, json};
use std::path::Path;

/// (id, incident, title, file name, text).
const EXAMPLES: &[(&str, u8, &str, &str, &str)] = &[
    (
        "incident-1",
        1,
        "1. Deleting a bootstrap ClusterRole",
        "incident-1-bootstrap-clusterrole.test.yaml",
        include_str!("../../examples/playground/incident-1-bootstrap-clusterrole.test.yaml"),
    ),
    (
        "incident-2",
        2,
        "2. Deleting a protected namespace",
        "incident-2-protected-namespace.test.yaml",
        include_str!("../../examples/playground/incident-2-protected-namespace.test.yaml"),
    ),
    (
        "incident-3",
        3,
        "3. Changing an immutable Deployment selector",
        "incident-3-immutable-selector.test.yaml",
        include_str!("../../examples/playground/incident-3-immutable-selector.test.yaml"),
    ),
    (
        "incident-4",
        4,
        "4. Joining a federation whose registrations conflict",
        "incident-4-kubefed-conflict.test.yaml",
        include_str!("../../examples/playground/incident-4-kubefed-conflict.test.yaml"),
    ),
    (
        "incident-5",
        5,
        "5. The control plane recovering (allowed, annotated on /mutate)",
        "incident-5-control-plane-recovery.test.yaml",
        include_str!("../../examples/playground/incident-5-control-plane-recovery.test.yaml"),
    ),
];

/// Every example as `{id, incident, title, description, policies, request,
/// clusterState, expect}`; its policies by path are taken from `library` by
/// file name.
///
/// # Errors
/// An example does not read as a suite, or names a policy the library lacks
/// (then the page would show a different policy set than the file has).
pub fn all(library: &[InlineSource]) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (id, incident, title, file, text) in EXAMPLES {
        let imported = super::api::import_suites(Path::new(file), text, library)?;
        let suite = &imported["suites"][0];
        if suite["unresolved"]
            .as_array()
            .is_some_and(|u| !u.is_empty())
        {
            return Err(format!(
                "example {file}: not in the policy library: {}",
                suite["unresolved"]
            ));
        }
        let case = &suite["cases"][0];
        out.push(json!({
            "id": id,
            "incident": incident,
            "title": title,
            "description": description(text),
            "name": case["name"],
            "policies": suite["policies"],
            "request": case["request"],
            "clusterState": suite["clusterState"],
            "expect": case["expect"],
        }));
    }
    Ok(out)
}

/// The example's leading comment, without its last sentence (the `safety-gate
/// test` hint) and the `#` marks.
fn description(text: &str) -> String {
    let comment: Vec<&str> = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect();
    let joined = comment.join(" ");
    let joined = joined
        .split_once(": ")
        .map_or(joined.as_str(), |(_, rest)| rest)
        .to_string();
    joined
        .split(" Also a PolicyTest")
        .next()
        .unwrap_or_default()
        .to_string()
}
