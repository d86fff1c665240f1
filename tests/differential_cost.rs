//! Differential test of runtime cost (issue 11, item 5): every expression of
//! [`CASES`] is evaluated on each binding set of [`bindings`] by the gate
//! (`safety_gate::policy::cel_env::evaluate_with_cost`) and by the oracle
//! (`e2e/oracle`, CEL mode: kube-apiserver's environment and program options,
//! whose `ActualCost` is cel-go's cost tracker with Kubernetes'
//! `library.CostEstimator`). The two costs must be equal, except for the
//! expressions listed in `tests/differential/cost-known-differences.yaml` with
//! a reason; an unlisted difference fails, and so does a listed one that no
//! longer differs (the list only shrinks).
//!
//! The oracle is found as `differential.rs` finds it; without it the test is
//! skipped, except under `CI=true`. `DIFFERENTIAL_COST_VERBOSE=1` prints every case.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod differential_support;

use differential_support::{ask_oracle, in_ci, manifest_dir, oracle_binary, read_known};
use safety_gate::policy::cel_env::evaluate_with_cost;
use safety_gate::policy::values::json_to_cel;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};

const KNOWN: &str = "tests/differential/cost-known-differences.yaml";

/// Expressions over the bindings `x` (an object), `l` (ints), `names`
/// (strings), `s` (a string), `k` (a key of `x`), `n` (an int): each cost rule
/// of cel-go and Kubernetes' libraries at least once, inside and outside loops.
const CASES: &[&str] = &[
    "1",
    "x",
    "x.a",
    "x.b.c",
    "x.missing",
    "has(x.a)",
    "has(x.b.c)",
    "x.?a",
    "x.?b.?c",
    "x.?a.orValue(1)",
    "x['a']",
    "x[k]",
    "l[0]",
    "[1, 2, 3]",
    "[1, 2, n]",
    "{'a': 1}",
    "{'a': x}",
    "['a', s]",
    "'abc' == 'abc'",
    "x == x",
    "s == s",
    "l == l",
    "names != names",
    "1 + 2",
    "n + 1",
    "s + s",
    "s + 'x'",
    "s.size()",
    "size(l)",
    "s.contains('a')",
    "s.contains(s)",
    "s.startsWith('ab')",
    "s.endsWith(s)",
    "s.matches('^a.*z$')",
    "s.lowerAscii()",
    "s.upperAscii()",
    "s.split(',')",
    "s.replace('a', 'b')",
    "s.substring(1)",
    "s.trim()",
    "names.join(',')",
    "s.indexOf('c')",
    "l.sum()",
    "l.max()",
    "l.min()",
    "l.isSorted()",
    "l.indexOf(2)",
    "'%s-%d'.format([s, n])",
    "quantity('1Gi').isGreaterThan(quantity('1Mi'))",
    "isQuantity(s)",
    "quantity('12k').asInteger() > 0 && quantity('0.5Gi').isInteger() == false",
    "url('https://example.com/a').getHost()",
    "!true",
    "-n",
    "n < 2",
    "s < 'b'",
    "n * 2 - 1",
    "2 in l",
    "'a' in names",
    "'a' in x",
    "k in x",
    "true && x.a == 1",
    "false && x.a == 1",
    "x.a == 1 || x.b.c == 2",
    "x.a == 2 || x.b.c == 2",
    "n > 1 ? 'a' : 'b'",
    "n > 1 ? x.a : x.b.c",
    "n > 1 ? s.size() : l.size()",
    "l.map(e, e + 1)",
    "l.map(e, e > 1, e * 2)",
    "l.filter(e, e > 1)",
    "names.filter(e, e.startsWith('a'))",
    "l.all(e, e > 0)",
    "l.all(e, e > 1)",
    "l.exists(e, e > 1)",
    "l.exists(e, e > 10)",
    "l.exists_one(e, e > 1)",
    "l.all(i, e, e > i)",
    "l.exists(i, e, e == 3)",
    "l.transformList(i, e, e + i)",
    "x.transformMap(k, v, k)",
    "l.map(e, e * 2).filter(e, e > 2)",
    "l.all(a, l.exists(b, b == a))",
    "names.map(e, e.size()).sum()",
    "lists.range(10)",
    "lists.range(n).map(e, e)",
    "l.sort()",
    "x.?b.c.orValue(0)",
    "optional.of(1).hasValue()",
    "string(n)",
    "int('12')",
    "dyn(x).a",
    "type(n) == int",
    "x.b.all(k, k != '')",
    "[x, x].exists(e, has(e.a))",
    "l.all(e, [1, 2, 3, 4].exists(f, f == e))",
];

/// Binding sets: small values, and a larger one where size-dependent costs grow.
fn bindings() -> Vec<Json> {
    let long = "abcdefghijklmnopqrstuvwxyz,".repeat(20);
    vec![
        json!({"x": {"a": 1, "b": {"c": 2}}, "l": [1, 2, 3], "names": ["a", "bc"], "s": "abc,xyz", "k": "a", "n": 3}),
        json!({"x": {"a": 2, "b": {"c": 3, "d": 4}}, "l": (0..40).collect::<Vec<i64>>(),
               "names": (0..30).map(|i| format!("name-{i}")).collect::<Vec<_>>(),
               "s": long, "k": "b", "n": 12}),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownGroup {
    reason: String,
    expressions: Vec<String>,
}

#[test]
fn runtime_cost_matches_kube_apiserver() {
    let Some(oracle) = oracle_binary() else {
        assert!(!in_ci(), "the oracle is required under CI=true");
        eprintln!("differential_cost: oracle not built; skipped");
        return;
    };
    let known: Vec<KnownGroup> = read_known(&manifest_dir().join(KNOWN));
    let listed: BTreeMap<&str, &str> = known
        .iter()
        .flat_map(|g| {
            g.expressions
                .iter()
                .map(|e| (e.as_str(), g.reason.as_str()))
        })
        .collect();
    let verbose = std::env::var_os("DIFFERENTIAL_COST_VERBOSE").is_some();
    let sets = bindings();
    let inputs: Vec<Json> = sets
        .iter()
        .flat_map(|b| {
            CASES
                .iter()
                .map(move |e| json!({"expression": e, "bindings": b}))
        })
        .collect();
    let answers = ask_oracle(&oracle, inputs.clone());
    let (mut equal, mut compared, mut no_cost) = (0, 0, 0);
    let mut differing: BTreeSet<&str> = BTreeSet::new();
    let mut unlisted = Vec::new();
    for (input, kube) in inputs.iter().zip(&answers) {
        let expression = input["expression"].as_str().unwrap_or_default();
        let Some(kube_cost) = kube.get("cost").and_then(Json::as_u64) else {
            // Compile errors have no cost; the CEL differential compares them.
            no_cost += 1;
            continue;
        };
        let vars = input["bindings"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), json_to_cel(v)))
            .collect();
        let (_, gate_cost) = evaluate_with_cost(expression, vars);
        compared += 1;
        if verbose {
            eprintln!("{kube_cost:>6} {gate_cost:>6}  {expression}");
        }
        if gate_cost == kube_cost {
            equal += 1;
            continue;
        }
        differing.insert(expression);
        if !listed.contains_key(expression) {
            unlisted.push(format!(
                "{expression}: kube-apiserver {kube_cost}, gate {gate_cost} (bindings {})",
                input["bindings"]
            ));
        }
    }
    let stale: Vec<&&str> = listed.keys().filter(|e| !differing.contains(**e)).collect();
    eprintln!(
        "differential_cost: {compared} compared, {equal} equal, {} expressions listed as differing, {no_cost} without a cost (compile errors)",
        differing.len()
    );
    assert!(
        unlisted.is_empty(),
        "unlisted cost differences:\n{}",
        unlisted.join("\n")
    );
    assert!(
        stale.is_empty(),
        "listed in {KNOWN} but equal now: {stale:?}"
    );
}

/// At the per-expression limit (1,000,000) the gate stops where kube-apiserver
/// does. With `s` 10,000 characters long, `lists.range(n).all(x,
/// !s.contains('z'))` costs `1006n + 12` (the range 11 + n, the result 1, per
/// element the loop 3, `!` 1, `s` 1 and `contains` 1,000), so 994 elements run
/// (999,976) and 995 do not (1,000,982); `lists.range(n).map(x, s.size())`
/// costs `15n + 12`: 66,665 run (999,987), 66,666 do not (1,000,002).
#[test]
fn the_cost_limit_falls_where_kube_apiservers_does() {
    let Some(oracle) = oracle_binary() else {
        assert!(!in_ci(), "the oracle is required under CI=true");
        eprintln!("differential_cost: oracle not built; skipped");
        return;
    };
    let s = "a".repeat(10_000);
    let cases = [
        ("lists.range(994).all(x, !s.contains('z'))", false),
        ("lists.range(995).all(x, !s.contains('z'))", true),
        ("lists.range(66665).map(x, s.size()).size() > 0", false),
        ("lists.range(66666).map(x, s.size()).size() > 0", true),
    ];
    let inputs: Vec<Json> = cases
        .iter()
        .map(|(e, _)| json!({"expression": e, "bindings": {"s": s}}))
        .collect();
    let answers = ask_oracle(&oracle, inputs);
    for ((expression, stops), kube) in cases.iter().zip(&answers) {
        let kube_error = kube.get("error").and_then(Json::as_str);
        assert_eq!(
            kube_error
                .is_some_and(|e| e.contains(safety_gate::policy::runtime_cost::LIMIT_EXCEEDED)),
            *stops,
            "{expression}: kube-apiserver answered {kube}"
        );
        let (gate, cost) =
            evaluate_with_cost(expression, vec![("s".to_string(), json_to_cel(&json!(s)))]);
        match gate {
            Ok(v) => assert!(
                !*stops,
                "{expression}: the gate ran it ({v:?}, cost {cost})"
            ),
            Err(e) => {
                assert!(
                    *stops,
                    "{expression}: the gate stopped it: {e} (cost {cost})"
                );
                assert_eq!(e, safety_gate::policy::runtime_cost::LIMIT_EXCEEDED);
            }
        }
    }
}

/// The budget of a policy evaluation, through the whole admission path of both
/// (the gate's `PolicySet` and the oracle's validating admission policy plugin):
/// validations of about 998,000 each on a ConfigMap with a 10,000-character
/// value; ten fit in the 10,000,000 budget, eleven do not, and then the policy's
/// one decision is kube-apiserver's "running out of cost budget" error, for
/// failurePolicy; a variable of that cost read by eleven validations is charged
/// once; one expression over the per-expression limit is an evaluation error.
#[test]
fn the_policy_budget_is_spent_as_kube_apiserver_spends_it() {
    use differential_support::{OracleProcess, compare_answers, request_json};
    use safety_gate::admission::synthetic::{RequestSpec, build_request};
    use safety_gate::cluster::Snapshot;
    use safety_gate::policy::{EvalOptions, PolicySet};
    let Some(oracle) = oracle_binary() else {
        assert!(!in_ci(), "the oracle is required under CI=true");
        eprintln!("differential_cost: oracle not built; skipped");
        return;
    };
    // 990 elements: the range 1,001, per element the loop 3, `!` 1, the path 3
    // and `contains` 1,000: 997,932 with the result.
    let heavy = |k: usize| format!("lists.range(990).all(x, !object.data.s.contains('z{k}'))");
    let validations =
        |n: usize| -> Vec<Json> { (0..n).map(|k| json!({"expression": heavy(k)})).collect() };
    let cases: Vec<(&str, Json)> = vec![
        (
            "ten heavy validations",
            json!({"validations": validations(10)}),
        ),
        (
            "eleven heavy validations",
            json!({"validations": validations(11)}),
        ),
        (
            "a heavy variable read by eleven validations",
            json!({"variables": [{"name": "heavy", "expression": heavy(0)}],
                   "validations": (0..11).map(|k| json!({"expression": format!("variables.heavy && {k} >= 0")})).collect::<Vec<_>>()}),
        ),
        (
            "one expression over the limit",
            json!({"validations": [{"expression": "lists.range(1000).all(x, !object.data.s.contains('z'))"}]}),
        ),
    ];
    let request = build_request(RequestSpec {
        uid: "budget".into(),
        object: Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "big", "namespace": "default"},
            "data": {"s": "a".repeat(10_000)}})),
        namespace: Some("default".into()),
        ..Default::default()
    })
    .expect("request");
    let mut inputs = Vec::new();
    let mut gate = Vec::new();
    for (what, body) in &cases {
        for failure_policy in ["Fail", "Ignore"] {
            let mut spec = body.clone();
            spec["failurePolicy"] = json!(failure_policy);
            spec["matchConstraints"] = json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["configmaps"]}]});
            let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": "budget"}, "spec": spec});
            let binding = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": "budget"}, "spec": {"policyName": "budget", "validationActions": ["Deny"]}});
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(
                dir.path().join("p.yaml"),
                format!("{policy}\n---\n{binding}\n"),
            )
            .expect("write");
            let set = PolicySet::load_dir(dir.path()).expect("loads");
            let d = set
                .evaluate(&request, &Snapshot::empty(), &EvalOptions::default())
                .expect("evaluates");
            inputs.push(
                json!({"policies": [policy], "bindings": [binding], "params": [],
                "namespaces": [], "request": request_json(&request)}),
            );
            gate.push((format!("{what} ({failure_policy})"), d));
        }
    }
    let mut process = OracleProcess::start(&oracle);
    let answers = process.ask(&inputs);
    process.finish();
    let mut differences = Vec::new();
    for ((what, d), kube) in gate.iter().zip(&answers) {
        assert!(kube["error"].is_null(), "oracle error for {what}: {kube}");
        eprintln!(
            "{what}: gate {} {:?}; kube-apiserver {} {}",
            d.allowed,
            d.status.as_ref().map(|s| &s.message),
            kube["allowed"],
            kube["message"]
        );
        for (class, detail) in compare_answers(d, kube) {
            // The documented wrapping of every denial, and the gate's own
            // `evaluation_error` annotation for an error that Ignore let
            // through (tests/differential/known-differences.yaml).
            if class != "message-framing" && class != "audit-annotations" {
                differences.push(format!("{class} {what}: {detail}"));
            }
        }
    }
    let denied_for_budget = gate.iter().filter(|(_, d)| {
        d.status.as_ref().is_some_and(|s| {
            s.message
                .contains(safety_gate::policy::runtime_cost::OUT_OF_BUDGET)
        })
    });
    assert_eq!(
        denied_for_budget.count(),
        1,
        "eleven heavy validations under Fail"
    );
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
