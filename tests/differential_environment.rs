//! Differential test of the CEL environment per Kubernetes release (issue 11,
//! item 6): for every release the gate supports (`--kubernetes-version`
//! 1.30–1.37), the functions, call styles and macros the gate accepts in a new
//! policy against what kube-apiserver of that release declares for new
//! expressions — read from Kubernetes' own code by the oracle (`e2e/oracle`,
//! `{"environment": "NewExpressions", "compatibilityVersion": "1.N"}`:
//! `environment.MustBaseEnvSet` of the pinned k8s.io/apiserver at the release's
//! compatibility version, one minor below the release).
//!
//! A difference fails the test unless
//! `tests/differential/environment-known-differences.yaml` lists it with a
//! reason; a listed entry that no longer differs fails too (remove it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod differential_support;

use differential_support::{assert_reason, manifest_dir, oracle_binary, read_known};
use safety_gate::policy::kubernetes_version::{
    self, CallStyle, FUNCTIONS, KubernetesVersion, SORT_BY, TWO_VARIABLE_COMPREHENSIONS,
};
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};

#[derive(serde::Deserialize)]
struct Known {
    reason: String,
    differences: Vec<String>,
}

/// One example call per macro Kubernetes declares, to ask the gate whether it
/// evaluates that macro at all.
fn macro_example(name: &str) -> Option<&'static str> {
    Some(match name {
        "all/member:2" => "[1].all(x, x > 0)",
        "all/member:3" => "[1].all(i, x, x > 0)",
        "exists/member:2" => "[1].exists(x, x > 0)",
        "exists/member:3" => "[1].exists(i, x, x > 0)",
        "existsOne/member:3" => "[1].existsOne(i, x, x > 0)",
        "exists_one/member:2" => "[1].exists_one(x, x > 0)",
        "exists_one/member:3" => "[1].exists_one(i, x, x > 0)",
        "filter/member:2" => "[1].filter(x, x > 0)",
        "has/global:1" => "has({'a': 1}.a)",
        "map/member:2" => "[1].map(x, x)",
        "map/member:3" => "[1].map(x, x > 0, x)",
        "optFlatMap/member:2" => "optional.of(1).optFlatMap(x, optional.of(x))",
        "optMap/member:2" => "optional.of(1).optMap(x, x)",
        "sortBy/member:2" => "[2, 1].sortBy(x, x)",
        "transformList/member:3" => "[1].transformList(i, x, x)",
        "transformList/member:4" => "[1].transformList(i, x, x > 0, x)",
        "transformMap/member:3" => "{'a': 1}.transformMap(k, v, v)",
        "transformMap/member:4" => "{'a': 1}.transformMap(k, v, v > 0, v)",
        "transformMapEntry/member:3" => "{'a': 1}.transformMapEntry(k, v, {k: v})",
        "transformMapEntry/member:4" => "{'a': 1}.transformMapEntry(k, v, v > 0, {k: v})",
        _ => return None,
    })
}

fn two_variable(macro_name: &str) -> bool {
    macro_name.ends_with(":3") && !macro_name.starts_with("map/")
        || macro_name.ends_with(":4")
        || macro_name.starts_with("existsOne/")
}

fn style_of(d: &Json) -> CallStyle {
    match (d["member"].as_bool(), d["global"].as_bool()) {
        (Some(true), Some(true)) => CallStyle::Both,
        (Some(true), _) => CallStyle::Member,
        _ => CallStyle::Global,
    }
}

/// Operators and internal helpers: not names a policy author writes.
fn is_operator(name: &str) -> bool {
    name.starts_with(['_', '@', '!', '-']) || name.contains(".@") || name == "in"
}

#[test]
fn the_cel_environment_of_each_release_matches_kube_apiserver() {
    let oracle = oracle_binary().expect("oracle");
    let releases: Vec<KubernetesVersion> = (30..=37).filter_map(KubernetesVersion::new).collect();
    let inputs = releases
        .iter()
        .map(|r| {
            json!({
                "environment": "NewExpressions",
                "compatibilityVersion": format!("1.{}", r.compatibility_minor()),
            })
        })
        .collect();
    let answers = differential_support::ask_oracle(&oracle, inputs);

    // What differs -> the releases it differs in.
    let mut by_kind: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut note = |what: String, release: &KubernetesVersion| {
        by_kind.entry(what).or_default().push(release.minor());
    };
    let mut compared = 0;
    for (release, kube) in releases.iter().zip(&answers) {
        assert!(
            kube["error"].is_null(),
            "oracle: {}",
            kube["error"].as_str().unwrap_or_default()
        );
        let functions = kube["functions"].as_object().expect("functions");
        // Every function the gate knows: present in the release iff kube declares it,
        // with Kubernetes' call style.
        for d in FUNCTIONS {
            compared += 1;
            let gate_has = d.since_compatibility <= release.compatibility_minor();
            match (gate_has, functions.get(d.name)) {
                (true, None) => {
                    note(
                        format!("gate accepts '{}', kube does not declare it", d.name),
                        release,
                    );
                }
                (false, Some(_)) => {
                    note(
                        format!("kube declares '{}', gate refuses it", d.name),
                        release,
                    );
                }
                (true, Some(k)) if style_of(k) != d.style => {
                    note(
                        format!(
                            "'{}' is {:?} in kube, {:?} in the gate",
                            d.name,
                            style_of(k),
                            d.style
                        ),
                        release,
                    );
                }
                _ => {}
            }
        }
        // Every function kube declares that the gate does not know at all.
        for name in functions.keys() {
            if !is_operator(name) && kubernetes_version::declared(name).is_none() {
                compared += 1;
                note(
                    format!("kube declares '{name}', gate does not know it"),
                    release,
                );
            }
        }
        // Macros: the two-variable ones follow the release; the others must evaluate.
        for m in kube["macros"].as_array().expect("macros") {
            let m = m.as_str().expect("macro name");
            compared += 1;
            let example = macro_example(m).unwrap_or_else(|| {
                panic!("kube {release} declares macro {m}: add an example to macro_example")
            });
            let gate_evaluates =
                safety_gate::policy::cel_env::evaluate(example, Vec::new()).is_ok();
            let gate_accepts = gate_evaluates
                && (!two_variable(m)
                    || kubernetes_version::check_declared(
                        &TWO_VARIABLE_COMPREHENSIONS,
                        true,
                        *release,
                    )
                    .is_ok());
            let gate_accepts = gate_accepts
                && (!m.starts_with("sortBy/")
                    || kubernetes_version::check_declared(&SORT_BY, true, *release).is_ok());
            if !gate_accepts {
                note(format!("kube declares macro {m}, gate refuses it"), release);
            }
        }
        let declares_two_variable = kube["macros"]
            .as_array()
            .expect("macros")
            .iter()
            .any(|m| m.as_str().is_some_and(two_variable));
        if !declares_two_variable
            && kubernetes_version::check_declared(&TWO_VARIABLE_COMPREHENSIONS, true, *release)
                .is_ok()
        {
            note(
                "gate accepts two-variable comprehensions, kube does not".to_string(),
                release,
            );
        }
    }

    for release in &releases {
        let index = (release.minor() - 30) as usize;
        let declares_sort_by = answers[index]["macros"]
            .as_array()
            .expect("macros")
            .iter()
            .any(|m| m.as_str().is_some_and(|m| m.starts_with("sortBy/")));
        if !declares_sort_by && kubernetes_version::check_declared(&SORT_BY, true, *release).is_ok()
        {
            by_kind
                .entry("gate accepts sortBy, kube does not".to_string())
                .or_default()
                .push(release.minor());
        }
    }
    let differences: BTreeSet<String> = by_kind
        .into_iter()
        .map(|(what, minors)| format!("{what} ({})", releases_text(&minors)))
        .collect();
    let path = manifest_dir().join("tests/differential/environment-known-differences.yaml");
    let known: Vec<Known> = read_known(&path);
    let mut listed = BTreeSet::new();
    for k in &known {
        assert_reason(&path, &k.reason, &k.differences.join(", "));
        listed.extend(k.differences.iter().cloned());
    }
    let unlisted: Vec<_> = differences.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&differences).collect();
    println!(
        "differential environment: {} releases, {compared} comparisons, {} differences ({} listed)",
        releases.len(),
        differences.len(),
        listed.len()
    );
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "unlisted differences (fix the gate or list them with a reason in {}):\n  {}\n\
         listed entries that no longer differ (remove them):\n  {}",
        path.display(),
        unlisted
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        stale
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// `1.30-1.37` for a run of releases, `1.31, 1.33` otherwise.
fn releases_text(minors: &[u32]) -> String {
    let contiguous = minors.windows(2).all(|w| w[1] == w[0] + 1);
    match (minors.first(), minors.last()) {
        (Some(a), Some(b)) if contiguous && a != b => format!("Kubernetes 1.{a}-1.{b}"),
        _ => format!(
            "Kubernetes {}",
            minors
                .iter()
                .map(|m| format!("1.{m}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
