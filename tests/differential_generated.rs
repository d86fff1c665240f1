//! Differential test, corpus (d) of issue 11: generated cases.
//!
//! A seeded, deterministic generator makes ValidatingAdmissionPolicy +
//! binding pairs and admission requests, and every case goes to the gate
//! (in-process, the same `PolicySet::evaluate` as `safety-gate test`) and to
//! the oracle (kube-apiserver's own admission plugin, `e2e/oracle`); the
//! answers are compared as in `tests/differential.rs` (allowed, code,
//! message, warnings, audit annotations).
//!
//! What is generated:
//! - objects: a `Widget` (example.com/v1, served as `widgets`, no schema, as a
//!   CRD with `x-kubernetes-preserve-unknown-fields` would be) with absent,
//!   null and empty fields, unicode strings, large and negative numbers, int
//!   vs double values (`1` vs `1.0`), numbers past int64, label keys with `.`
//!   and `/`, nested lists and maps; CREATE, UPDATE and DELETE requests.
//! - expressions: templates in the shapes real policies use (optional chains
//!   `?.`/`[?...]`/`orValue`, `has()`, comparisons across int/double, `in`,
//!   string functions, `quantity()`, comprehensions including the
//!   two-variable forms of Kubernetes 1.33+, …), each placed as a validation,
//!   a negated validation, a matchCondition, a variable, a messageExpression or
//!   an audit annotation, under a random failurePolicy, reason, message and
//!   validationActions.
//!
//! One group = one policy (one template in one placement) and 3–10 requests;
//! the oracle builds one plugin per group and answers its requests from it.
//! Groups are numbered; group `g` of seed `s` is generated from its own random
//! stream (`Xoshiro256PlusPlus`, portable), so any group can be regenerated
//! alone (`DIFFERENTIAL_GROUP=g`).
//!
//! Differences are classified as in `tests/differential.rs` (`decision`,
//! `code`, `message-framing`, `message`, `warnings`, `audit-annotations`) plus:
//! `error-text` (both deny because an expression failed, only the CEL error
//! wording differs), `gate-rejects-valid` (the gate does not load a policy
//! kube-apiserver stores), `gate-accepts-invalid` (the reverse), `gate-error`
//! and `oracle-error`. Each difference is attributed to its template, and must
//! be listed in `tests/differential/known-generated.yaml` by template (or
//! `"*"`) and class with a reason; otherwise the test fails and prints, per
//! class and template, a reproducible case shrunk to a minimal request (seed,
//! group, policy, binding and the request JSON, i.e. the oracle's input line).
//! Listed entries that no longer occur are printed, not failed.
//!
//! Environment:
//! - `DIFFERENTIAL_CASES` (default 3000): how many cases; the long mode is
//!   `DIFFERENTIAL_CASES=100000`.
//! - `DIFFERENTIAL_SEED` (default below): the seed (decimal or 0x-hex).
//! - `DIFFERENTIAL_GROUP=g`: only group `g` (to reproduce a printed case).
//! - `DIFFERENTIAL_ORACLES` (default 2): oracle processes run side by side.
//! - `DIFFERENTIAL_VERBOSE=1`: print every difference, listed or not.
//! - `SAFETY_GATE_ORACLE`, `CI`: as in `tests/differential.rs` (the oracle is
//!   required under `CI=true`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use safety_gate::admission::synthetic::{RequestSpec, build_request};
use safety_gate::cluster::Snapshot;
use safety_gate::policy::{Decision, EvalOptions, PolicySet, Request};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

mod differential_support;
use differential_support::{
    OracleProcess, assert_reason, compare_answers, manifest_dir, oracle_binary, read_known,
    request_json, yaml_quote,
};

const DEFAULT_SEED: u64 = 0x5afe_6a7e_0011_d00d;
const DEFAULT_CASES: usize = 3000;

// ---------------------------------------------------------------------------
// Random values
// ---------------------------------------------------------------------------

/// The random stream of one group, with the pickers the templates use.
struct G {
    rng: Xoshiro256PlusPlus,
}

impl G {
    fn new(seed: u64, group: u64) -> Self {
        G {
            rng: Xoshiro256PlusPlus::seed_from_u64(
                seed ^ group.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
        }
    }
    fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

/// Strings objects carry: empty, ASCII, unicode (umlauts, CJK, emoji,
/// combining marks), whitespace, quantities, addresses, versions, separators.
const STRINGS: &[&str] = &[
    "",
    "a",
    "web",
    "Web-1",
    "UPPER lower",
    "Grüße",
    "ÄÖÜäöüß",
    "日本語テキスト",
    "🚀 rocket",
    "e\u{301}te\u{301}",
    "  padded  ",
    "a,b,,c",
    "x/y.z",
    "line1\nline2",
    "tab\there",
    "quote'and\"double",
    "back\\slash",
    "1Gi",
    "500m",
    "1.5",
    "-1",
    "0",
    "1e3",
    "2Ki",
    "0.5Gi",
    "abc",
    "true",
    "10.0.0.1",
    "::1",
    "300.1.1.1",
    "10.0.0.0/8",
    "https://example.com:8443/path?q=1",
    "not a url",
    "1.2.3",
    "v1.2.3",
    "1.2.3-rc.1+build.5",
    "registry.example.com/team/app:1.0",
    "system:serviceaccount:kube-system:default",
];

const INTS: &[i64] = &[
    0,
    1,
    -1,
    2,
    3,
    5,
    10,
    42,
    -42,
    100,
    1000,
    65535,
    65536,
    2_147_483_647,
    2_147_483_648,
    -2_147_483_649,
    9_007_199_254_740_992,
    9_007_199_254_740_993,
    i64::MAX,
    i64::MIN,
    i64::MAX - 1,
];

const DOUBLES: &[f64] = &[
    0.0, -0.0, 1.0, 2.0, 3.0, 0.5, 1.5, -2.5, 0.1, 1e3, 1e300, -1e300, 1e-300, 3.0e10, 42.0, 9.3e18,
];

/// Field names of `spec` (identifiers, so templates can select them with `.`).
/// Each has a kind of value it usually holds; any may hold anything.
const FIELDS: &[(&str, Shape)] = &[
    ("replicas", Shape::Int),
    ("count", Shape::Int),
    ("ratio", Shape::Double),
    ("name", Shape::Str),
    ("mode", Shape::Str),
    ("image", Shape::Str),
    ("version", Shape::Str),
    ("address", Shape::Str),
    ("memory", Shape::Quantity),
    ("enabled", Shape::Bool),
    ("tags", Shape::StrList),
    ("ports", Shape::IntList),
    ("items", Shape::MapList),
    ("limits", Shape::StrMap),
    ("config", Shape::Map),
];

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Int,
    Double,
    Str,
    Quantity,
    Bool,
    StrList,
    IntList,
    MapList,
    StrMap,
    Map,
}

const LABEL_KEYS: &[&str] = &[
    "app",
    "tier",
    "app.kubernetes.io/name",
    "example.com/team",
    "a.b.c/d-e_f",
    "kubernetes.io/metadata.name",
    "ünï",
];
const LABEL_VALUES: &[&str] = &["", "web", "Web", "v1.2.3", "true", "ä", "a.b_c-d"];
const NAMES: &[&str] = &["w", "web-1", "a.b", "grüße", "x-0123456789-0123456789"];
const NAMESPACES: &[&str] = &["default", "team-a", "kube-system"];
// No empty username: kube-apiserver authenticates every request (anonymous
// is `system:anonymous`), so it never sends one.
const USERS: &[&str] = &[
    "alice",
    "system:serviceaccount:kube-system:job",
    "system:admin",
    "system:anonymous",
    "ünï",
];
const GROUPS: &[&str] = &["system:authenticated", "system:masters", "devs", "ünï"];

impl G {
    fn int(&mut self) -> i64 {
        self.pick(INTS)
    }
    fn double(&mut self) -> f64 {
        self.pick(DOUBLES)
    }
    fn string(&mut self) -> String {
        self.pick(STRINGS).to_string()
    }

    /// A number as JSON: int, double, or past int64 (kube-apiserver decodes
    /// those as double).
    fn number(&mut self) -> Json {
        match self.below(10) {
            0..=5 => json!(self.int()),
            6..=8 => json!(self.double()),
            _ => json!(self.pick(&[u64::MAX, 9_223_372_036_854_775_808u64])),
        }
    }

    /// Any value, nested up to `depth`.
    fn any(&mut self, depth: u32) -> Json {
        let top = if depth == 0 { 6 } else { 9 };
        match self.below(top) {
            0 => Json::Null,
            1 => json!(self.chance(0.5)),
            2 | 3 => self.number(),
            4 | 5 => json!(self.string()),
            6 => Json::Array((0..self.below(4)).map(|_| self.any(depth - 1)).collect()),
            7 => Json::Array(
                (0..self.below(3))
                    .map(|_| self.map_value(depth - 1))
                    .collect(),
            ),
            _ => self.map_value(depth - 1),
        }
    }

    fn map_value(&mut self, depth: u32) -> Json {
        let mut m = Map::new();
        for _ in 0..self.below(4) {
            let key = if self.chance(0.7) {
                self.pick(FIELDS).0.to_string()
            } else {
                self.pick(LABEL_KEYS).to_string()
            };
            let v = self.any(depth);
            m.insert(key, v);
        }
        Json::Object(m)
    }

    fn shaped(&mut self, shape: Shape) -> Json {
        match shape {
            Shape::Int => {
                if self.chance(0.2) {
                    json!(self.double())
                } else {
                    json!(self.int())
                }
            }
            Shape::Double => {
                if self.chance(0.3) {
                    json!(self.int())
                } else {
                    json!(self.double())
                }
            }
            Shape::Str => json!(self.string()),
            Shape::Quantity => json!(self.pick(&[
                "1Gi", "500m", "1", "0", "1.5", "2Ki", "1e3", "100M", "0.5Gi", "-1", "abc", ""
            ])),
            Shape::Bool => json!(self.chance(0.5)),
            Shape::StrList => Json::Array(
                (0..self.below(4))
                    .map(|_| json!(self.pick(&["a", "b", "web", "Grüße", "", "a"])))
                    .collect(),
            ),
            Shape::IntList => Json::Array((0..self.below(4)).map(|_| self.number()).collect()),
            Shape::MapList => Json::Array(
                (0..self.below(4))
                    .map(|_| {
                        let mut m = Map::new();
                        if self.chance(0.8) {
                            m.insert("name".into(), json!(self.pick(NAMES)));
                        }
                        if self.chance(0.5) {
                            m.insert("value".into(), self.any(0));
                        }
                        if self.chance(0.4) {
                            m.insert("port".into(), self.number());
                        }
                        if self.chance(0.3) {
                            m.insert("image".into(), json!(self.string()));
                        }
                        Json::Object(m)
                    })
                    .collect(),
            ),
            Shape::StrMap => {
                let mut m = Map::new();
                for _ in 0..self.below(4) {
                    let k = self.pick(&["cpu", "memory", "app.kubernetes.io/name", "x.y", "ü"]);
                    m.insert(k.to_string(), json!(self.string()));
                }
                Json::Object(m)
            }
            Shape::Map => self.map_value(2),
        }
    }

    /// `spec` of a Widget: each field absent, null, empty, of its usual shape
    /// or anything.
    fn spec(&mut self) -> Json {
        let mut m = Map::new();
        for (name, shape) in FIELDS {
            let v = match self.below(20) {
                0..=5 => continue,
                6 => Json::Null,
                7 => match shape {
                    Shape::StrList | Shape::IntList | Shape::MapList => json!([]),
                    Shape::StrMap | Shape::Map => json!({}),
                    _ => json!(""),
                },
                8 | 9 => self.any(2),
                _ => self.shaped(*shape),
            };
            m.insert(name.to_string(), v);
        }
        Json::Object(m)
    }

    fn labels(&mut self) -> Option<Json> {
        match self.below(6) {
            0 => None,
            1 => Some(json!({})),
            _ => {
                let mut m = Map::new();
                for _ in 0..1 + self.below(4) {
                    m.insert(
                        self.pick(LABEL_KEYS).to_string(),
                        json!(self.pick(LABEL_VALUES)),
                    );
                }
                Some(Json::Object(m))
            }
        }
    }

    fn widget(&mut self, name: &str, namespace: &str) -> Json {
        let mut metadata = Map::new();
        metadata.insert("name".into(), json!(name));
        metadata.insert("namespace".into(), json!(namespace));
        if let Some(l) = self.labels() {
            metadata.insert("labels".into(), l);
        }
        if self.chance(0.3) {
            metadata.insert(
                "annotations".into(),
                json!({ self.pick(LABEL_KEYS): self.string() }),
            );
        }
        let mut obj = Map::new();
        obj.insert("apiVersion".into(), json!("example.com/v1"));
        obj.insert("kind".into(), json!("Widget"));
        obj.insert("metadata".into(), Json::Object(metadata));
        match self.below(12) {
            0 => {}
            1 => {
                obj.insert("spec".into(), Json::Null);
            }
            2 => {
                obj.insert("spec".into(), json!({}));
            }
            _ => {
                let spec = self.spec();
                obj.insert("spec".into(), spec);
            }
        }
        Json::Object(obj)
    }

    /// An UPDATE's old object: the new one with some fields changed.
    fn older(&mut self, object: &Json, name: &str, namespace: &str) -> Json {
        if self.chance(0.3) {
            return self.widget(name, namespace);
        }
        let mut old = object.clone();
        if let Some(spec) = old.get_mut("spec").and_then(Json::as_object_mut) {
            for (field, shape) in FIELDS {
                if self.chance(0.15) {
                    if self.chance(0.3) {
                        spec.remove(*field);
                    } else {
                        spec.insert(field.to_string(), self.shaped(*shape));
                    }
                }
            }
        }
        if self.chance(0.2)
            && let Some(l) = self.labels()
            && let Some(meta) = old.get_mut("metadata").and_then(Json::as_object_mut)
        {
            meta.insert("labels".into(), l);
        }
        old
    }
}

// ---------------------------------------------------------------------------
// CEL pieces
// ---------------------------------------------------------------------------

/// A CEL string literal for `s`.
fn lit(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A CEL double literal that reads back as `d`.
fn dlit(d: f64) -> String {
    let s = format!("{d:?}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

impl G {
    fn field(&mut self) -> &'static str {
        self.pick(FIELDS).0
    }
    /// A field that usually holds `shapes`, now and then any field.
    fn field_of(&mut self, shapes: &[Shape]) -> &'static str {
        if self.chance(0.2) {
            return self.field();
        }
        let fitting: Vec<&'static str> = FIELDS
            .iter()
            .filter(|(_, s)| shapes.contains(s))
            .map(|(n, _)| *n)
            .collect();
        self.pick(&fitting)
    }
    fn cmp(&mut self) -> &'static str {
        self.pick(&["==", "!=", "<", "<=", ">", ">="])
    }
    fn num_lit(&mut self) -> String {
        if self.chance(0.5) {
            let i = self.int();
            if i == i64::MIN {
                // `-9223372036854775808` is not an int literal in CEL.
                "-9223372036854775807 - 1".to_string()
            } else {
                i.to_string()
            }
        } else {
            dlit(self.double())
        }
    }
    fn str_lit(&mut self) -> String {
        lit(&self.string())
    }
    fn label_key(&mut self) -> String {
        lit(self.pick(LABEL_KEYS))
    }
    fn label_value(&mut self) -> String {
        lit(self.pick(LABEL_VALUES))
    }
    /// Where an object is read from.
    fn obj(&mut self) -> &'static str {
        if self.chance(0.85) {
            "object"
        } else {
            "oldObject"
        }
    }
}

/// What a template makes: a boolean expression, and a string-valued one when
/// the template has a natural one (for messageExpression and audit
/// annotations).
struct Expr {
    pred: String,
    text: Option<String>,
}

fn pred(p: String) -> Expr {
    Expr {
        pred: p,
        text: None,
    }
}

struct Template {
    name: &'static str,
    make: fn(&mut G) -> Expr,
}

/// Expression templates, in the shapes published policies use.
fn templates() -> Vec<Template> {
    vec![
        Template {
            name: "has-field",
            make: |g| {
                let o = g.obj();
                let f = g.field();
                pred(match g.below(4) {
                    0 => format!("has({o}.spec.{f})"),
                    1 => format!("!has({o}.spec.{f}) || {o}.spec.{f} == {}", g.num_lit()),
                    2 => format!("has({o}.spec.{f}.name)"),
                    _ => format!("has({o}.metadata.labels) && has({o}.metadata.labels.app)"),
                })
            },
        },
        Template {
            // Runs of unary operators: an even run is no operator at all to
            // cel-go; the `cel` crate negated once (`!!has(x)` was `!has(x)`).
            name: "unary-runs",
            make: |g| {
                let o = g.obj();
                let f = g.field();
                pred(match g.below(4) {
                    0 => format!("!!has({o}.spec.{f})"),
                    1 => format!(
                        "!!!({o}.?spec.?{f}.orValue({}) == {})",
                        g.num_lit(),
                        g.num_lit()
                    ),
                    2 => format!("1 - - -{} < {}", g.num_lit(), g.num_lit()),
                    _ => format!("--({o}.?metadata.?generation.orValue(0)) >= 0"),
                })
            },
        },
        Template {
            // RE2's ASCII Perl classes on Unicode names and labels ("grüße",
            // "ä"); the `regex` crate's classes are Unicode.
            name: "regex-classes",
            make: |g| {
                let o = g.obj();
                let k = g.label_key();
                Expr {
                    pred: match g.below(4) {
                        0 => format!(r"{o}.metadata.name.matches('^[\\w.-]+$')"),
                        1 => format!(
                            r"{o}.metadata.?labels[?{k}].orValue('').findAll('\\w+').size() > 0"
                        ),
                        2 => format!(r"{o}.metadata.name.find('\\W') == ''"),
                        _ => format!(r"{o}.metadata.name.matches('\\b[\\w]+\\d')"),
                    },
                    text: Some(format!(r"{o}.metadata.name.findAll('[\\w]+').join('|')")),
                }
            },
        },
        Template {
            name: "optional-field-orValue",
            make: |g| {
                let o = g.obj();
                let f = g.field();
                let default = if g.chance(0.5) {
                    g.num_lit()
                } else {
                    g.str_lit()
                };
                let other = if g.chance(0.5) {
                    g.num_lit()
                } else {
                    g.str_lit()
                };
                let text = format!("string({o}.?spec.?{f}.orValue({}))", g.str_lit());
                Expr {
                    pred: match g.below(3) {
                        0 => format!("{o}.?spec.?{f}.orValue({default}) == {other}"),
                        1 => format!("{o}.?spec.?{f}.hasValue()"),
                        _ => format!("{o}.spec.?{f}.?name.orValue({default}) != {other}"),
                    },
                    text: Some(text),
                }
            },
        },
        Template {
            name: "optional-label",
            make: |g| {
                let o = g.obj();
                let k = g.label_key();
                let v = g.label_value();
                Expr {
                    pred: match g.below(3) {
                        0 => format!("{o}.metadata.?labels[?{k}].orValue('') == {v}"),
                        1 => format!("{o}.?metadata.?labels[?{k}].hasValue()"),
                        _ => format!("{o}.metadata.?annotations[?{k}].orValue({v}).size() > 0"),
                    },
                    text: Some(format!("{o}.metadata.?labels[?{k}].orValue('none')")),
                }
            },
        },
        Template {
            name: "optional-equality",
            make: |g| {
                let f = g.field();
                pred(match g.below(3) {
                    0 => format!("object.?spec.?{f} == oldObject.?spec.?{f}"),
                    1 => format!("object.?spec.?{f} != optional.none()"),
                    _ => format!(
                        "object.?metadata.?labels[?{}] == oldObject.?metadata.?labels[?{}]",
                        g.label_key(),
                        g.label_key()
                    ),
                })
            },
        },
        Template {
            name: "optional-list-index",
            make: |g| {
                let f = g.field_of(&[Shape::StrList, Shape::IntList, Shape::MapList]);
                let i = g.pick(&[0, 1, 3]);
                pred(match g.below(2) {
                    0 => format!(
                        "object.?spec.?{f}[?{i}].orValue({}) == {}",
                        g.str_lit(),
                        g.str_lit()
                    ),
                    _ => format!("object.spec.?{f}[?{i}].?name.hasValue()"),
                })
            },
        },
        Template {
            name: "label-in",
            make: |g| {
                let o = g.obj();
                let k = g.label_key();
                pred(match g.below(3) {
                    0 => format!("{k} in {o}.metadata.labels"),
                    1 => format!("!({k} in {o}.metadata.labels) || {o}.metadata.labels[{k}] != ''"),
                    _ => format!("has({o}.metadata.labels) && {k} in {o}.metadata.labels"),
                })
            },
        },
        Template {
            name: "label-index",
            make: |g| {
                let o = g.obj();
                let k = g.label_key();
                let v = g.label_value();
                Expr {
                    pred: format!("{o}.metadata.labels[{k}] == {v}"),
                    text: Some(format!("{o}.metadata.labels[{k}]")),
                }
            },
        },
        Template {
            name: "compare-literal",
            make: |g| {
                let o = g.obj();
                let f = g.field_of(&[Shape::Int, Shape::Double]);
                let op = g.cmp();
                pred(format!("{o}.spec.{f} {op} {}", g.num_lit()))
            },
        },
        Template {
            name: "compare-fields",
            make: |g| {
                let f1 = g.field_of(&[Shape::Int, Shape::Double]);
                let f2 = g.field_of(&[Shape::Int, Shape::Double]);
                let op = g.cmp();
                pred(match g.below(2) {
                    0 => format!("object.spec.{f1} {op} object.spec.{f2}"),
                    _ => format!("oldObject == null || object.spec.{f1} {op} oldObject.spec.{f1}"),
                })
            },
        },
        Template {
            name: "equality-int-double",
            make: |g| {
                let f = g.field_of(&[Shape::Int, Shape::Double]);
                let n = g.pick(&["0", "1", "2", "0.0", "1.0", "2.0", "-0.0", "42", "42.0"]);
                pred(match g.below(4) {
                    0 => format!("object.spec.{f} == {n}"),
                    1 => format!("object.spec.{f} != {n}"),
                    2 => format!("dyn(object.spec.{f}) == dyn(object.spec.ratio)"),
                    _ => format!("{{'k': object.spec.{f}}} == {{'k': {n}}}"),
                })
            },
        },
        Template {
            name: "in-list",
            make: |g| {
                let f = g.field();
                let list = match g.below(4) {
                    0 => "[0, 1, 2, 3]",
                    1 => "[1.0, 2.5, 42.0]",
                    2 => "['a', 'web', 'Grüße', '']",
                    _ => "[true, false]",
                };
                pred(match g.below(3) {
                    0 => format!("object.spec.{f} in {list}"),
                    1 => format!("!(object.spec.{f} in {list})"),
                    _ => format!(
                        "{} in object.spec.{f}",
                        g.pick(&["1", "1.0", "'a'", "'name'"])
                    ),
                })
            },
        },
        Template {
            name: "in-map",
            make: |g| {
                let f = g.field();
                pred(match g.below(3) {
                    0 => format!("object.spec.{f} in {{1: 'one', 2: 'two'}}"),
                    1 => format!("object.spec.{f} in {{'a': 1, 'web': 2}}"),
                    _ => format!(
                        "{} in object.spec.{}",
                        g.pick(&["'cpu'", "'x.y'", "'app'", "'name'"]),
                        g.field_of(&[Shape::StrMap, Shape::Map])
                    ),
                })
            },
        },
        Template {
            name: "string-prefix",
            make: |g| {
                let o = g.obj();
                let f = g.field_of(&[Shape::Str]);
                let func = g.pick(&["startsWith", "endsWith", "contains"]);
                let s = lit(g.pick(&["", "a", "web", "Gr", "ü", "🚀", "1", "system:", "/"]));
                pred(match g.below(3) {
                    0 => format!("{o}.spec.{f}.{func}({s})"),
                    1 => format!("{o}.metadata.name.{func}({s})"),
                    _ => format!("request.userInfo.username.{func}({s})"),
                })
            },
        },
        Template {
            name: "string-matches",
            make: |g| {
                let f = g.field_of(&[Shape::Str]);
                let re = lit(g.pick(&[
                    "^[a-z0-9-]+$",
                    "^.{5}$",
                    "^.{1,6}$",
                    "\\d+",
                    "^[[:alpha:]]+$",
                    "(?i)^web",
                    "ü",
                    "^\\p{L}+$",
                    "^$",
                    ".*",
                ]));
                pred(match g.below(2) {
                    0 => format!("object.spec.{f}.matches({re})"),
                    _ => format!("matches(object.metadata.name, {re})"),
                })
            },
        },
        Template {
            name: "string-case",
            make: |g| {
                let f = g.field_of(&[Shape::Str]);
                let func = g.pick(&["lowerAscii", "upperAscii"]);
                let s = g.str_lit();
                Expr {
                    pred: format!("object.spec.{f}.{func}() == {s}"),
                    text: Some(format!("object.spec.{f}.{func}()")),
                }
            },
        },
        Template {
            name: "string-split-join",
            make: |g| {
                let f = g.field_of(&[Shape::Str]);
                let sep = lit(g.pick(&[",", "", "/", ".", "ü", " "]));
                let text = format!("object.spec.{f}.split({sep}).join('|')");
                Expr {
                    pred: match g.below(3) {
                        0 => format!("{text} == {}", g.str_lit()),
                        1 => format!("size(object.spec.{f}.split({sep})) {} 2", g.cmp()),
                        _ => format!(
                            "object.spec.{f}.split({sep}, {}).size() == 2",
                            g.pick(&[-1, 0, 1, 2])
                        ),
                    },
                    text: Some(text),
                }
            },
        },
        Template {
            name: "string-size",
            make: |g| {
                let f = g.field_of(&[Shape::Str]);
                let n = g.pick(&[0, 1, 5, 6, 7, 10, 14, 63]);
                let op = g.cmp();
                Expr {
                    pred: match g.below(3) {
                        0 => format!("size(object.spec.{f}) {op} {n}"),
                        1 => format!("object.metadata.name.size() {op} {n}"),
                        _ => format!("object.spec.{f}.size() {op} {n}"),
                    },
                    text: Some(format!(
                        "'is ' + string(size(object.spec.{f})) + ' characters'"
                    )),
                }
            },
        },
        Template {
            name: "size-of-collections",
            make: |g| {
                let f = g.field_of(&[Shape::StrList, Shape::MapList, Shape::StrMap, Shape::Map]);
                pred(match g.below(3) {
                    0 => format!("size(object.spec.{f}) {} {}", g.cmp(), g.below(4)),
                    1 => format!("object.spec.{f}.size() == 0"),
                    _ => format!("size(object.metadata.labels) > {}", g.below(3)),
                })
            },
        },
        Template {
            name: "string-ext",
            make: |g| {
                let f = g.field_of(&[Shape::Str]);
                let s = lit(g.pick(&["a", "ü", "", "b", "🚀"]));
                let text = match g.below(7) {
                    0 => format!("object.spec.{f}.replace({s}, '_')"),
                    1 => format!("object.spec.{f}.substring({})", g.pick(&[0, 1, 3, 8])),
                    2 => format!("object.spec.{f}.trim()"),
                    3 => format!("string(object.spec.{f}.indexOf({s}))"),
                    4 => format!("string(object.spec.{f}.lastIndexOf({s}))"),
                    5 => format!("object.spec.{f}.charAt({})", g.pick(&[0, 1, 2, 5])),
                    _ => format!("strings.quote(object.spec.{f})"),
                };
                Expr {
                    pred: format!("{text} == {}", g.str_lit()),
                    text: Some(text),
                }
            },
        },
        Template {
            name: "string-conversion",
            make: |g| {
                let f = g.field();
                let text = match g.below(3) {
                    0 => format!("string(object.spec.{f})"),
                    1 => format!("'value: ' + string(object.spec.{f})"),
                    _ => format!("string(has(object.spec.{f}))"),
                };
                Expr {
                    pred: format!("{text} == {}", g.str_lit()),
                    text: Some(text),
                }
            },
        },
        Template {
            name: "numeric-conversion",
            make: |g| {
                let f = g.field();
                let func = g.pick(&["int", "double", "uint"]);
                pred(format!(
                    "{func}(object.spec.{f}) {} {}",
                    g.cmp(),
                    match func {
                        "int" => g.int().max(i64::MIN + 1).to_string(),
                        "double" => dlit(g.double()),
                        _ => format!("{}u", g.pick(&[0u64, 1, 42, u64::MAX])),
                    }
                ))
            },
        },
        Template {
            name: "arithmetic",
            make: |g| {
                let f1 = g.field_of(&[Shape::Int, Shape::Double]);
                let f2 = g.field_of(&[Shape::Int, Shape::Double]);
                let op = g.pick(&["+", "-", "*", "/", "%"]);
                pred(match g.below(3) {
                    0 => format!("object.spec.{f1} {op} object.spec.{f2} > 0"),
                    1 => format!("object.spec.{f1} {op} 1 {} 10", g.cmp()),
                    _ => format!("object.spec.{f1} {op} 2.0 {} 10.0", g.cmp()),
                })
            },
        },
        Template {
            name: "quantity",
            make: |g| {
                let f = g.field_of(&[Shape::Quantity]);
                let q = lit(g.pick(&["1Gi", "500m", "1", "0", "2Ki", "1e3"]));
                let text = format!("string(quantity(object.spec.{f}).asApproximateFloat())");
                Expr {
                    pred: match g.below(6) {
                        0 => format!("isQuantity(object.spec.{f})"),
                        1 => format!("quantity(object.spec.{f}).isLessThan(quantity({q}))"),
                        2 => format!(
                            "quantity(object.spec.{f}).compareTo(quantity({q})) {} 0",
                            g.cmp()
                        ),
                        3 => format!("quantity(object.spec.{f}).asInteger() {} 1000", g.cmp()),
                        4 => format!(
                            "quantity(object.spec.{f}).add(quantity({q})).isGreaterThan(quantity('1'))"
                        ),
                        _ => format!(
                            "!isQuantity(object.spec.{f}) || quantity(object.spec.{f}).isInteger()"
                        ),
                    },
                    text: Some(text),
                }
            },
        },
        Template {
            name: "comprehension-all-exists",
            make: |g| {
                let f = g.field_of(&[Shape::MapList, Shape::StrList, Shape::IntList]);
                let body = g.pick(&[
                    "has(x.name)",
                    "x.name.startsWith('w')",
                    "x == 'a'",
                    "x.?name.orValue('') != ''",
                    "x > 1",
                    "type(x) == string",
                ]);
                let macro_ = g.pick(&["all", "exists", "exists_one"]);
                pred(match g.below(3) {
                    0 => format!("object.spec.{f}.{macro_}(x, {body})"),
                    1 => format!("!has(object.spec.{f}) || object.spec.{f}.{macro_}(x, {body})"),
                    _ => format!(
                        "object.metadata.labels.{macro_}(x, x.contains('/') || object.metadata.labels[x] != '')"
                    ),
                })
            },
        },
        Template {
            name: "comprehension-filter-map",
            make: |g| {
                let f = g.field_of(&[Shape::MapList, Shape::StrList, Shape::IntList]);
                let text = match g.below(4) {
                    0 => format!("object.spec.{f}.map(x, string(x)).join(',')"),
                    1 => format!("object.spec.{f}.filter(x, has(x.name)).map(x, x.name).join(',')"),
                    2 => format!("object.spec.{f}.map(x, has(x.name), x.name).join(',')"),
                    _ => format!("string(object.spec.{f}.filter(x, x != 'a').size())"),
                };
                Expr {
                    pred: match g.below(2) {
                        0 => format!("{text} == {}", g.str_lit()),
                        _ => format!("object.spec.{f}.filter(x, x == 1).size() {} 1", g.cmp()),
                    },
                    text: Some(text),
                }
            },
        },
        Template {
            name: "two-variable-comprehension",
            make: |g| {
                let f = g.field_of(&[Shape::MapList, Shape::StrList, Shape::StrMap]);
                pred(match g.below(6) {
                    0 => format!("object.spec.{f}.all(i, v, i == 0 || v != '')"),
                    1 => format!("object.spec.{f}.exists(k, v, k == 'cpu' && v == '500m')"),
                    2 => "object.metadata.labels.all(k, v, !k.contains('/') || v != '')".into(),
                    3 => "object.metadata.labels.existsOne(k, v, v == 'web')".into(),
                    4 => format!(
                        "object.spec.{f}.transformList(i, v, i).size() == size(object.spec.{f})"
                    ),
                    _ => {
                        "object.metadata.labels.transformMap(k, v, v + '!').all(k, k != '')".into()
                    }
                })
            },
        },
        Template {
            name: "list-library",
            make: |g| {
                let f = g.field_of(&[Shape::IntList, Shape::StrList]);
                pred(match g.below(7) {
                    0 => format!("object.spec.{f}.isSorted()"),
                    1 => format!("object.spec.{f}.sum() {} 10", g.cmp()),
                    2 => format!("object.spec.{f}.min() {} 1", g.cmp()),
                    3 => format!("object.spec.{f}.max() == 'web'"),
                    4 => format!("object.spec.{f}.indexOf('a') {} 0", g.cmp()),
                    5 => format!("object.spec.{f}.distinct().size() == size(object.spec.{f})"),
                    _ => format!("object.spec.{f}.sort() == object.spec.{f}"),
                })
            },
        },
        Template {
            name: "sets",
            make: |g| {
                let f = g.field_of(&[Shape::StrList, Shape::IntList]);
                let func = g.pick(&["contains", "intersects", "equivalent"]);
                let other = g.pick(&["['a']", "['a', 'b']", "[1, 2]", "[1.0]", "[]"]);
                pred(format!("sets.{func}(object.spec.{f}, {other})"))
            },
        },
        Template {
            name: "ternary-default",
            make: |g| {
                let f = g.field_of(&[Shape::Int, Shape::Double]);
                pred(format!(
                    "(has(object.spec.{f}) ? object.spec.{f} : {}) {} {}",
                    g.num_lit(),
                    g.cmp(),
                    g.num_lit()
                ))
            },
        },
        Template {
            name: "list-concat",
            make: |g| {
                let f1 = g.field_of(&[Shape::MapList, Shape::StrList]);
                let f2 = g.field_of(&[Shape::MapList, Shape::StrList]);
                pred(format!(
                    "(object.spec.{f1} + (has(object.spec.{f2}) ? object.spec.{f2} : [])).all(c, !has(c.image) || !c.image.endsWith(':latest'))"
                ))
            },
        },
        Template {
            name: "type-and-null",
            make: |g| {
                let f = g.field();
                let t = g.pick(&[
                    "int",
                    "uint",
                    "double",
                    "string",
                    "bool",
                    "list",
                    "map",
                    "null_type",
                ]);
                Expr {
                    pred: match g.below(4) {
                        0 => format!("type(object.spec.{f}) == {t}"),
                        1 => format!("object.spec.{f} == null"),
                        2 => "oldObject == null || oldObject.metadata.name == object.metadata.name"
                            .into(),
                        _ => format!("object.spec.{f} != null && object.spec.{f} != ''"),
                    },
                    text: Some(format!(
                        "type(object.spec.{f}) == string ? 'string' : 'other'"
                    )),
                }
            },
        },
        Template {
            name: "request-fields",
            make: |g| {
                let grp = lit(g.pick(GROUPS));
                Expr {
                    pred: match g.below(5) {
                        0 => "request.operation == 'UPDATE' || request.operation == 'CREATE'"
                            .into(),
                        1 => format!("{grp} in request.userInfo.groups"),
                        2 => "request.name == object.metadata.name".into(),
                        3 => format!("request.namespace == {}", lit(g.pick(NAMESPACES))),
                        _ => "request.userInfo.username.startsWith('system:') && request.kind.kind == 'Widget'"
                            .into(),
                    },
                    text: Some("request.userInfo.username + ' ' + request.operation".into()),
                }
            },
        },
        Template {
            name: "network",
            make: |g| {
                let f = g.field_of(&[Shape::Str]);
                pred(match g.below(6) {
                    0 => format!("isIP(object.spec.{f})"),
                    1 => format!("isIP(object.spec.{f}) && ip(object.spec.{f}).family() == 4"),
                    2 => format!("isCIDR(object.spec.{f})"),
                    3 => format!(
                        "isCIDR(object.spec.{f}) && cidr(object.spec.{f}).containsIP('10.1.2.3')"
                    ),
                    4 => format!("isURL(object.spec.{f})"),
                    _ => format!("isURL(object.spec.{f}) && url(object.spec.{f}).getHost() != ''"),
                })
            },
        },
        Template {
            name: "regex-find",
            make: |g| {
                let f = g.field_of(&[Shape::Str]);
                let text = match g.below(2) {
                    0 => format!("object.spec.{f}.find('[0-9]+')"),
                    _ => format!("object.spec.{f}.findAll('[a-zü]').join('')"),
                };
                Expr {
                    pred: format!("{text} == {}", g.str_lit()),
                    text: Some(text),
                }
            },
        },
        Template {
            name: "semver",
            make: |g| {
                let f = g.field_of(&[Shape::Str]);
                pred(match g.below(3) {
                    0 => format!("isSemver(object.spec.{f})"),
                    1 => {
                        format!("isSemver(object.spec.{f}) && semver(object.spec.{f}).major() >= 1")
                    }
                    _ => format!(
                        "isSemver(object.spec.{f}, true) && semver(object.spec.{f}, true).isLessThan(semver('2.0.0'))"
                    ),
                })
            },
        },
        Template {
            name: "format",
            make: |g| {
                let f = g.field();
                let text = match g.below(3) {
                    0 => format!("'%s'.format([object.spec.{f}])"),
                    1 => format!("'%d items'.format([size(object.spec.{f})])"),
                    _ => "'%s/%s'.format([object.metadata.namespace, object.metadata.name])".into(),
                };
                Expr {
                    pred: format!("{text} != {}", g.str_lit()),
                    text: Some(text),
                }
            },
        },
        Template {
            name: "message-text",
            make: |g| {
                let f = g.field();
                Expr {
                    pred: format!("!has(object.spec.{f})"),
                    text: Some(match g.below(7) {
                        0 => format!("object.spec.{f}"),
                        1 => "''".into(),
                        2 => "'   '".into(),
                        3 => "'first line\\nsecond line'".into(),
                        4 => format!("'{}'", "x".repeat(g.pick(&[300, 1100, 5000]))),
                        5 => "object.metadata.name + ' in ' + object.metadata.namespace".into(),
                        _ => format!("'Grüße: ' + object.spec.{f}"),
                    }),
                }
            },
        },
    ]
}

// ---------------------------------------------------------------------------
// Policies and requests
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Placement {
    Validation,
    Negated,
    MessageExpression,
    MatchCondition,
    Variable,
    AuditAnnotation,
}

impl Placement {
    fn as_str(self) -> &'static str {
        match self {
            Placement::Validation => "validation",
            Placement::Negated => "negated-validation",
            Placement::MessageExpression => "messageExpression",
            Placement::MatchCondition => "matchCondition",
            Placement::Variable => "variable",
            Placement::AuditAnnotation => "auditAnnotation",
        }
    }
}

/// One policy and the requests sent against it.
struct Group {
    index: u64,
    template: &'static str,
    placement: Placement,
    policy: Json,
    binding: Json,
    requests: Vec<RequestSpec>,
}

fn make_group(seed: u64, index: u64, templates: &[Template]) -> Group {
    let mut g = G::new(seed, index);
    let template = &templates[(index % templates.len() as u64) as usize];
    let expr = (template.make)(&mut g);
    let text = expr
        .text
        .clone()
        .unwrap_or_else(|| format!("({}) ? 'yes' : 'no'", expr.pred));
    let placement = match g.below(12) {
        0..=3 => Placement::Validation,
        4 | 5 => Placement::Negated,
        6 | 7 => Placement::MessageExpression,
        8 => Placement::MatchCondition,
        9 | 10 => Placement::Variable,
        _ => Placement::AuditAnnotation,
    };
    let placement = if template.name == "message-text" && placement != Placement::AuditAnnotation {
        Placement::MessageExpression
    } else {
        placement
    };

    let mut validation = Map::new();
    let mut spec = Map::new();
    // Now and then a document kube-apiserver rejects (a message with a line
    // break, a reason it does not know): the gate must reject it too.
    let message = match g.below(30) {
        0..=4 => Some("denied by the generated policy"),
        5..=9 => Some("  Grüße, spaces around  "),
        10 => Some("multi\nline"),
        _ => None,
    };
    match placement {
        Placement::Validation => {
            validation.insert("expression".into(), json!(expr.pred));
        }
        Placement::Negated => {
            validation.insert("expression".into(), json!(format!("!({})", expr.pred)));
        }
        Placement::MessageExpression => {
            validation.insert("expression".into(), json!(expr.pred));
            validation.insert("messageExpression".into(), json!(text));
        }
        Placement::MatchCondition => {
            spec.insert(
                "matchConditions".into(),
                json!([{"name": "generated", "expression": expr.pred}]),
            );
            validation.insert(
                "expression".into(),
                json!(g.pick(&["false", "object == null || !has(object.metadata.labels)"])),
            );
        }
        Placement::Variable => {
            spec.insert(
                "variables".into(),
                json!([{"name": "v", "expression": expr.pred}, {"name": "t", "expression": text}]),
            );
            validation.insert("expression".into(), json!("variables.v"));
            if g.chance(0.5) {
                validation.insert("messageExpression".into(), json!("variables.t"));
            }
        }
        Placement::AuditAnnotation => {
            // A null value would omit the annotation, but neither `cond ? 'text' :
            // null` nor `cond ? dyn('text') : null` type-checks in kube-apiserver
            // ("must evaluate to one of [string null_type] but got dyn"): a
            // document both engines must reject (the gate: it has no `dyn`).
            let value = if g.chance(0.1) {
                format!("({}) ? dyn({text}) : null", expr.pred)
            } else {
                text.clone()
            };
            spec.insert(
                "auditAnnotations".into(),
                json!([{"key": g.pick(&["generated", "a-b.c_d"]), "valueExpression": value}]),
            );
        }
    }
    if placement != Placement::AuditAnnotation {
        if let Some(m) = message {
            validation.insert("message".into(), json!(m));
        }
        if g.chance(0.25) {
            let reason = if g.chance(0.1) {
                "Unauthorized"
            } else {
                g.pick(&["Forbidden", "Invalid", "RequestEntityTooLarge"])
            };
            validation.insert("reason".into(), json!(reason));
        }
        spec.insert("validations".into(), json!([Json::Object(validation)]));
    }
    match g.below(3) {
        0 => {}
        1 => {
            spec.insert("failurePolicy".into(), json!("Fail"));
        }
        _ => {
            spec.insert("failurePolicy".into(), json!("Ignore"));
        }
    }
    spec.insert(
        "matchConstraints".into(),
        json!({"resourceRules": [{
            "apiGroups": ["example.com"], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["widgets"],
        }]}),
    );
    let name = format!("generated-{index}");
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": Json::Object(spec),
    });
    let actions = g.pick(&[
        &["Deny"][..],
        &["Deny"],
        &["Deny"],
        &["Warn"],
        &["Audit"],
        &["Deny", "Audit"],
        &["Warn", "Audit"],
    ]);
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": format!("{name}-binding")},
        "spec": {"policyName": name, "validationActions": actions},
    });

    let requests = (0..3 + g.below(8))
        .map(|r| {
            let name = g.pick(NAMES);
            let namespace = g.pick(NAMESPACES);
            let object = g.widget(name, namespace);
            let (operation, object, old_object) = match g.below(10) {
                0..=4 => (Operation::Create, Some(object), None),
                5..=8 => {
                    let old = g.older(&object, name, namespace);
                    (Operation::Update, Some(object), Some(old))
                }
                _ => (Operation::Delete, None, Some(object)),
            };
            // kube-apiserver puts every authenticated user in
            // system:authenticated, so `groups` is never empty.
            let mut groups = vec!["system:authenticated".to_string()];
            for _ in 0..g.below(3) {
                groups.push(g.pick(GROUPS).to_string());
            }
            RequestSpec {
                uid: format!("generated-{index}-{r}"),
                operation: Some(operation),
                object,
                old_object,
                user_info: UserInfo {
                    username: Some(g.pick(USERS).to_string()),
                    groups: Some(groups),
                    ..Default::default()
                },
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                kind: Some(GroupVersionKind::gvk("example.com", "v1", "Widget")),
                resource: Some(GroupVersionResource::gvr("example.com", "v1", "widgets")),
                sub_resource: None,
                dry_run: false,
                options: None,
            }
        })
        .collect();
    Group {
        index,
        template: template.name,
        placement,
        policy,
        binding,
        requests,
    }
}

// ---------------------------------------------------------------------------
// Running both engines
// ---------------------------------------------------------------------------

/// The gate's policy set for a group: written to a file and loaded as
/// `safety-gate test` loads it.
fn gate_load(dir: &Path, group: &Group) -> Result<PolicySet, String> {
    let path = dir.join(format!("generated-{}.yaml", group.index));
    let text = format!(
        "{}\n---\n{}\n",
        serde_json::to_string(&group.policy).expect("JSON"),
        serde_json::to_string(&group.binding).expect("JSON")
    );
    std::fs::write(&path, text).expect("a writable temporary folder");
    let loaded = PolicySet::load_files(std::slice::from_ref(&path)).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&path);
    loaded
}

fn gate_eval(set: &PolicySet, request: &Request) -> Result<Decision, String> {
    set.evaluate(request, &Snapshot::empty(), &EvalOptions::default())
        .map_err(|e| format!("input error: {e}"))
}

fn policy_name(group: &Group) -> String {
    group.policy["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn oracle_input(group: &Group, request: &Request) -> Json {
    json!({
        "policies": [group.policy],
        "bindings": [group.binding],
        "request": request_json(request),
    })
}

#[derive(Debug, Clone)]
struct Difference {
    group: u64,
    request: usize,
    template: &'static str,
    placement: Placement,
    class: &'static str,
    detail: String,
}

/// Everything both engines said about one group.
struct Outcome {
    differences: Vec<Difference>,
    compared: usize,
    /// kube-apiserver's reason when both engines reject the policy.
    both_reject: Option<String>,
}

/// A message or warning that reports an expression that failed to evaluate.
fn is_error_text(m: &str) -> bool {
    m.contains("resulted in error")
        || m.contains("could not be evaluated")
        || m.contains("fails to evaluate")
        || m.contains("failed messageExpression")
}

/// What is left of a message once its CEL error text is cut off.
fn before_error(m: &str) -> &str {
    m.find("resulted in error: ").map_or(m, |i| &m[..i])
}

/// The class of a difference between two texts (a denial message without
/// kube-apiserver's framing, or a warning) when both report an evaluation
/// error: `error-text` (only the CEL error differs), `error-message` (the
/// wording around it differs too); otherwise `None`.
fn error_class(gate: &str, kube: &str) -> Option<&'static str> {
    if !(is_error_text(gate) && is_error_text(kube)) {
        return None;
    }
    if gate.contains("resulted in error: ")
        && kube.contains("resulted in error: ")
        && before_error(gate) == before_error(kube)
    {
        Some("error-text")
    } else {
        Some("error-message")
    }
}

/// The denial message without kube-apiserver's `<resource> "<name>" is
/// forbidden: ` (or `is invalid: `) framing.
fn unframed(kube: &str) -> &str {
    for marker in ["is forbidden: ", "is invalid: "] {
        if let Some(i) = kube.find(marker) {
            return &kube[i + marker.len()..];
        }
    }
    kube
}

/// Warnings: `warning-cut` (the gate cut a warning kube-apiserver sends
/// whole), an error class, or `warnings`.
fn warnings_class(gate: &[String], kube: &[String]) -> &'static str {
    if gate.len() != kube.len() {
        return "warnings";
    }
    let mut worst = 0;
    let rank = ["warning-cut", "error-text", "error-message", "warnings"];
    for (g, k) in gate.iter().zip(kube) {
        if g == k {
            continue;
        }
        let cut = g
            .strip_suffix("...")
            .filter(|prefix| k.starts_with(prefix))
            .map(|_| "warning-cut");
        let class = cut.or_else(|| error_class(g, k)).unwrap_or("warnings");
        let r = rank.iter().position(|c| *c == class).unwrap_or(3);
        worst = worst.max(r);
    }
    rank[worst]
}

/// Audit annotations. kube-apiserver keys a policy's annotation as
/// `<policy>/<key>` and the failures of Audit bindings as
/// `validation.policy.admission.k8s.io/validation_failure`; the gate, a
/// webhook, writes `<key>` and `validation_failure` (kube-apiserver prefixes
/// a webhook's keys with the webhook's name) and adds `evaluation_error` for
/// errors ignored under failurePolicy Ignore. Classes: `audit-annotation-keys`
/// (same values under those keys, compared as JSON where they are JSON:
/// kube-apiserver writes `<` as `\\u003c`), `audit-evaluation-error` (the gate's extra
/// key), `error-text` (a recorded failure differs only in CEL error text),
/// `audit-annotations` (anything else).
fn audit_classes(
    policy: &str,
    gate: &BTreeMap<String, String>,
    kube: &BTreeMap<String, String>,
) -> Vec<&'static str> {
    let mut classes = Vec::new();
    let mut mapped = BTreeMap::new();
    for (k, v) in gate {
        let key = match k.as_str() {
            "evaluation_error" => {
                classes.push("audit-evaluation-error");
                continue;
            }
            "validation_failure" => "validation.policy.admission.k8s.io/validation_failure".into(),
            other => format!("{policy}/{other}"),
        };
        mapped.insert(key, v.clone());
    }
    // Values compared as JSON where both are JSON (kube-apiserver escapes `<`
    // as \u003c); level 1 cuts CEL error texts off recorded failures, level
    // 2 replaces every recorded evaluation error by one placeholder.
    let normal = |v: &str, level: u8| -> Json {
        let mut j: Json = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
        if level > 0
            && let Some(items) = j.as_array_mut()
        {
            for item in items {
                if let Some(m) = item.get("message").and_then(Json::as_str) {
                    let m = if level == 1 {
                        before_error(m).to_string()
                    } else if is_error_text(m) {
                        "<evaluation error>".to_string()
                    } else {
                        m.to_string()
                    };
                    item["message"] = json!(m);
                }
            }
        }
        j
    };
    let same = |level: u8| {
        mapped.len() == kube.len()
            && mapped.iter().all(|(k, v)| {
                kube.get(k)
                    .is_some_and(|kv| normal(v, level) == normal(kv, level))
            })
    };
    if same(0) {
        // Same values under kube-apiserver's keys (and JSON encoding).
        if !mapped.is_empty() {
            classes.push("audit-annotation-keys");
        }
    } else if same(1) {
        classes.push("error-text");
    } else if same(2) {
        classes.push("error-message");
    } else {
        classes.push("audit-annotations");
    }
    classes
}

/// The differences of one case, classified.
fn case_differences(
    policy: &str,
    gate: &Result<Decision, String>,
    kube: &Json,
) -> Vec<(&'static str, String)> {
    if let Some(e) = kube["error"].as_str() {
        return vec![("oracle-error", e.to_string())];
    }
    let d = match gate {
        Err(e) => return vec![("gate-error", e.clone())],
        Ok(d) => d,
    };
    let mut out = Vec::new();
    for (class, detail) in compare_answers(d, kube) {
        match class {
            "message" => {
                let g = d.status.as_ref().map(|s| s.message.as_str()).unwrap_or("");
                let k = unframed(kube["message"].as_str().unwrap_or(""));
                out.push((error_class(g, k).unwrap_or("message"), detail));
            }
            "warnings" => {
                let mut g = d.warnings.clone();
                let mut k = differential_support::strings(&kube["warnings"]);
                g.sort();
                k.sort();
                out.push((warnings_class(&g, &k), detail));
            }
            "audit-annotations" => {
                let k: BTreeMap<String, String> = kube["auditAnnotations"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                for class in audit_classes(policy, &d.audit_annotations, &k) {
                    out.push((class, detail.clone()));
                }
            }
            _ => out.push((class, detail)),
        }
    }
    out
}

fn run_group(dir: &Path, group: &Group, requests: &[Request], answers: &[Json]) -> Outcome {
    let gate_set = gate_load(dir, group);
    let rejected: Vec<String> = answers
        .first()
        .map(|a| {
            a["rejected"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["message"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut out = Outcome {
        differences: Vec::new(),
        compared: 0,
        both_reject: None,
    };
    let mut push = |request: usize, class: &'static str, detail: String| {
        out.differences.push(Difference {
            group: group.index,
            request,
            template: group.template,
            placement: group.placement,
            class,
            detail,
        })
    };
    let set = match (gate_set, rejected.is_empty()) {
        (Err(_), false) => {
            out.both_reject = Some(rejected.join("; "));
            return out;
        }
        (Err(e), true) => {
            push(
                0,
                "gate-rejects-valid",
                format!(
                    "kube-apiserver stores the policy; the gate: {}",
                    e.lines().next().unwrap_or_default()
                ),
            );
            return out;
        }
        (Ok(_), false) => {
            push(
                0,
                "gate-accepts-invalid",
                format!("kube-apiserver: {}", rejected.join("; ")),
            );
            return out;
        }
        (Ok(set), true) => set,
    };
    for (i, (request, kube)) in requests.iter().zip(answers).enumerate() {
        out.compared += 1;
        for (class, detail) in
            case_differences(&policy_name(group), &gate_eval(&set, request), kube)
        {
            push(i, class, detail);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Shrinking a case to a minimal request
// ---------------------------------------------------------------------------

/// Every way to drop one map entry or list element of `v`, or to replace a
/// string with a shorter one.
fn smaller(v: &Json) -> Vec<Json> {
    let mut out = Vec::new();
    match v {
        Json::Object(m) => {
            for (k, child) in m {
                let mut without = m.clone();
                without.remove(k);
                out.push(Json::Object(without));
                for c in smaller(child) {
                    let mut with = m.clone();
                    with.insert(k.clone(), c);
                    out.push(Json::Object(with));
                }
            }
        }
        Json::Array(items) => {
            for i in 0..items.len() {
                let mut without = items.clone();
                without.remove(i);
                out.push(Json::Array(without));
                for c in smaller(&items[i]) {
                    let mut with = items.clone();
                    with[i] = c;
                    out.push(Json::Array(with));
                }
            }
        }
        _ => {}
    }
    out
}

/// The metadata every request object keeps (names and the namespace the
/// request carries).
fn keeps_identity(candidate: &Json, original: &Json) -> bool {
    ["apiVersion", "kind"]
        .iter()
        .all(|k| candidate.get(k) == original.get(k))
        && candidate.pointer("/metadata/name") == original.pointer("/metadata/name")
        && candidate.pointer("/metadata/namespace") == original.pointer("/metadata/namespace")
}

/// Shrinks the request of a difference while the same class of difference
/// remains: greedy, one field at a time, object then oldObject.
fn shrink(
    oracle: &mut OracleProcess,
    set: &PolicySet,
    group: &Group,
    spec: &RequestSpec,
    class: &str,
) -> RequestSpec {
    let mut best = spec.clone();
    for _round in 0..60 {
        let mut candidates: Vec<RequestSpec> = Vec::new();
        for which in [0, 1] {
            let current = if which == 0 {
                &best.object
            } else {
                &best.old_object
            };
            let Some(current) = current else { continue };
            for c in smaller(current) {
                if !keeps_identity(&c, current) {
                    continue;
                }
                let mut s = best.clone();
                if which == 0 {
                    s.object = Some(c);
                } else {
                    s.old_object = Some(c);
                }
                candidates.push(s);
            }
        }
        if candidates.is_empty() {
            break;
        }
        let requests: Vec<Request> = candidates
            .iter()
            .map(|s| build_request(s.clone()).expect("a request"))
            .collect();
        let inputs: Vec<Json> = requests.iter().map(|r| oracle_input(group, r)).collect();
        let answers = oracle.ask(&inputs);
        let found = requests.iter().zip(&answers).position(|(r, k)| {
            case_differences(&policy_name(group), &gate_eval(set, r), k)
                .iter()
                .any(|(c, _)| *c == class)
        });
        match found {
            Some(i) => best = candidates.swap_remove(i),
            None => break,
        }
    }
    best
}

// ---------------------------------------------------------------------------
// Known differences
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Known {
    /// A template name, or `"*"` for every template.
    template: String,
    /// One class, or a list of classes with the same cause.
    class: Classes,
    /// Only this placement (validation, negated-validation, messageExpression,
    /// matchCondition, variable, auditAnnotation).
    #[serde(default)]
    placement: Option<String>,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Classes {
    One(String),
    Many(Vec<String>),
}

impl Classes {
    fn contains(&self, class: &str) -> bool {
        match self {
            Classes::One(c) => c == class,
            Classes::Many(cs) => cs.iter().any(|c| c == class),
        }
    }
    fn names(&self) -> String {
        match self {
            Classes::One(c) => c.clone(),
            Classes::Many(cs) => format!("[{}]", cs.join(", ")),
        }
    }
}

impl Known {
    fn covers(&self, d: &Difference) -> bool {
        (self.template == "*" || self.template == d.template)
            && self.class.contains(d.class)
            && self
                .placement
                .as_deref()
                .is_none_or(|p| p == d.placement.as_str())
    }
}

fn load_known(path: &Path, templates: &[Template]) -> Vec<Known> {
    let known: Vec<Known> = read_known(path);
    for k in &known {
        assert_reason(
            path,
            &k.reason,
            &format!("{} {}", k.template, k.class.names()),
        );
        assert!(
            k.template == "*" || templates.iter().any(|t| t.name == k.template),
            "differential-generated: {}: no template is named {:?}",
            path.display(),
            k.template
        );
    }
    known
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim().replace('_', "");
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

#[test]
fn gate_decides_as_kube_apiserver_on_generated_cases() {
    let Some(oracle) = oracle_binary() else {
        return;
    };
    let seed = env_number("DIFFERENTIAL_SEED").unwrap_or(DEFAULT_SEED);
    let target = env_number("DIFFERENTIAL_CASES").map_or(DEFAULT_CASES, |n| n as usize);
    let only = env_number("DIFFERENTIAL_GROUP");
    let processes = env_number("DIFFERENTIAL_ORACLES").map_or(2, |n| n.max(1) as usize);
    let verbose = std::env::var("DIFFERENTIAL_VERBOSE").is_ok_and(|v| v == "1");
    let templates = templates();
    let known_path = manifest_dir().join("tests/differential/known-generated.yaml");
    let known = load_known(&known_path, &templates);

    // Generate.
    let started = Instant::now();
    let mut groups = Vec::new();
    let mut n_cases = 0usize;
    if let Some(g) = only {
        let group = make_group(seed, g, &templates);
        n_cases = group.requests.len();
        groups.push(group);
    } else {
        let mut index = 0;
        while n_cases < target {
            let group = make_group(seed, index, &templates);
            n_cases += group.requests.len();
            groups.push(group);
            index += 1;
        }
    }
    let requests: Vec<Vec<Request>> = groups
        .iter()
        .map(|g| {
            g.requests
                .iter()
                .map(|s| build_request(s.clone()).expect("a generated request builds"))
                .collect()
        })
        .collect();
    let generate_time = started.elapsed();

    // The oracle: the groups split in `processes` contiguous runs, one process each.
    let started = Instant::now();
    let inputs: Vec<Vec<Json>> = groups
        .iter()
        .zip(&requests)
        .map(|(g, rs)| rs.iter().map(|r| oracle_input(g, r)).collect())
        .collect();
    let per = groups.len().div_ceil(processes);
    let answers: Vec<Vec<Json>> = std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .chunks(per.max(1))
            .map(|chunk| {
                let oracle = &oracle;
                scope.spawn(move || {
                    let mut process = OracleProcess::start(oracle);
                    let flat: Vec<Json> = chunk.iter().flatten().cloned().collect();
                    let mut answers = process.ask(&flat).into_iter();
                    process.finish();
                    chunk
                        .iter()
                        .map(|g| answers.by_ref().take(g.len()).collect())
                        .collect::<Vec<Vec<Json>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("an oracle thread"))
            .collect()
    });
    drop(inputs);
    let oracle_time = started.elapsed();

    // The gate, and the comparison.
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut differences = Vec::new();
    let mut compared = 0usize;
    let mut both_reject: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    for ((group, reqs), kube) in groups.iter().zip(&requests).zip(&answers) {
        let outcome = run_group(dir.path(), group, reqs, kube);
        compared += outcome.compared;
        if let Some(why) = outcome.both_reject {
            let e = both_reject.entry(group.template).or_insert((0, why));
            e.0 += 1;
        }
        differences.extend(outcome.differences);
    }
    let gate_time = started.elapsed();

    // Listed or new?
    let mut per_class: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut per_template: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
    let mut new: Vec<&Difference> = Vec::new();
    for d in &differences {
        let listed = known.iter().any(|k| k.covers(d));
        let c = per_class.entry(d.class).or_default();
        let t = per_template.entry((d.class, d.template)).or_default();
        if listed {
            c.0 += 1;
            t.0 += 1;
        } else {
            c.1 += 1;
            t.1 += 1;
            new.push(d);
        }
        if verbose {
            println!(
                "  [{}] {} {} ({}) group {} request {}: {}",
                if listed { "listed" } else { "NEW" },
                d.class,
                d.template,
                d.placement.as_str(),
                d.group,
                d.request,
                d.detail
            );
        }
    }
    let stale: Vec<&Known> = known
        .iter()
        .filter(|k| !differences.iter().any(|d| k.covers(d)))
        .collect();

    println!(
        "differential (generated): seed {seed:#x}, {} groups (policies) from {} templates, {n_cases} cases: {compared} compared",
        groups.len(),
        templates.len()
    );
    println!(
        "differential (generated): generate {:.2} s; oracle {:.2} s ({} process(es), {:.2} ms/case); gate load+evaluate+compare {:.2} s",
        generate_time.as_secs_f64(),
        oracle_time.as_secs_f64(),
        processes,
        oracle_time.as_secs_f64() * 1000.0 / n_cases.max(1) as f64,
        gate_time.as_secs_f64()
    );
    if !both_reject.is_empty() {
        println!(
            "differential (generated): policies both engines reject (not compared; a template to fix), by template:"
        );
        for (template, (n, why)) in &both_reject {
            println!("  {template:28} {n:6}  e.g. {why}");
        }
    }
    println!("differential (generated): differences by class (listed / new):");
    for (class, (listed, unlisted)) in &per_class {
        println!("  {class:22} {listed:6} / {unlisted}");
    }
    println!("differential (generated): differences by class and template (listed / new):");
    for ((class, template), (listed, unlisted)) in &per_template {
        println!("  {class:22} {template:28} {listed:6} / {unlisted}");
    }
    if !stale.is_empty() {
        println!(
            "differential (generated): {} listed difference(s) did not occur in this run (remove them from {} once the long mode, DIFFERENTIAL_CASES=100000, does not find them either):",
            stale.len(),
            known_path.display()
        );
        for k in &stale {
            println!(
                "  - template: {} class: {}{}",
                yaml_quote(&k.template),
                k.class.names(),
                k.placement
                    .as_deref()
                    .map(|p| format!(" placement: {p}"))
                    .unwrap_or_default()
            );
        }
    }
    if new.is_empty() {
        return;
    }

    // One reproducible case per new (class, template), shrunk.
    let mut shown: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut msg = format!(
        "{} generated case difference(s) from kube-apiserver are not listed in {}.\n\
         One shrunk case per class and template follows; each `oracle input` line can be piped to the oracle \
         (`e2e/build.sh` prints its folder), and `DIFFERENTIAL_SEED={seed:#x} DIFFERENTIAL_GROUP=<group>` \
         reruns its group alone.\n",
        new.len(),
        known_path.display()
    );
    let mut process = OracleProcess::start(&oracle);
    let shrink_budget = Instant::now();
    for d in &new {
        if !shown.insert((d.class, d.template)) {
            continue;
        }
        let group = groups
            .iter()
            .find(|g| g.index == d.group)
            .expect("the group");
        let spec = &group.requests[d.request];
        let minimal = match gate_load(dir.path(), group) {
            Ok(set) if shrink_budget.elapsed() < Duration::from_secs(120) => {
                shrink(&mut process, &set, group, spec, d.class)
            }
            _ => spec.clone(),
        };
        let request = build_request(minimal).expect("a request");
        let _ = writeln!(
            msg,
            "\n--- {} / template {} ({}), seed {seed:#x} group {} request {} ({} such difference(s))\n  {}\n  oracle input: {}",
            d.class,
            d.template,
            d.placement.as_str(),
            d.group,
            d.request,
            per_template.get(&(d.class, d.template)).map_or(0, |c| c.1),
            d.detail,
            serde_json::to_string(&oracle_input(group, &request)).expect("JSON")
        );
        if let Ok(set) = gate_load(dir.path(), group) {
            let kube = process.ask(std::slice::from_ref(&oracle_input(group, &request)));
            let _ = writeln!(
                msg,
                "  shrunk: {}",
                case_differences(&policy_name(group), &gate_eval(&set, &request), &kube[0])
                    .into_iter()
                    .map(|(c, detail)| format!("{c}: {detail}"))
                    .collect::<Vec<_>>()
                    .join("\n          ")
            );
        }
    }
    process.finish();
    msg.push_str("\nFix the gate, or list them with a reason a Kubernetes user would accept:\n");
    for (class, template) in &shown {
        let _ = writeln!(
            msg,
            "- template: {template}\n  class: {class}\n  reason: \"FILL IN\""
        );
    }
    panic!("{msg}");
}

#[test]
fn generation_is_deterministic() {
    let templates = templates();
    for index in [0u64, 1, 17, 1000] {
        let a = make_group(DEFAULT_SEED, index, &templates);
        let b = make_group(DEFAULT_SEED, index, &templates);
        assert_eq!(a.policy, b.policy);
        assert_eq!(a.binding, b.binding);
        assert_eq!(a.requests.len(), b.requests.len());
        for (x, y) in a.requests.iter().zip(&b.requests) {
            assert_eq!(x.object, y.object);
            assert_eq!(x.old_object, y.old_object);
        }
    }
    let other = make_group(DEFAULT_SEED ^ 1, 17, &templates);
    let same = make_group(DEFAULT_SEED, 17, &templates);
    assert!(other.policy != same.policy || other.requests[0].object != same.requests[0].object);
}
