//! The cel-spec "simple" conformance suite, run through the exact CEL setup the
//! policy engine uses (`safety_gate::policy::cel_env::evaluate`: optional
//! syntax on, the engine's root context with the Kubernetes libraries and the
//! regex cache).
//!
//! The suite lives beside the clone in `../shared/cel-spec-tests/*.json` (format:
//! its README.md). When it is absent the test prints why and passes.
//!
//! Rules:
//! - Skipped: `needs_proto` tests (protobuf messages and enums; Kubernetes CEL
//!   never uses them), `check_only` tests (no evaluation), tests expecting
//!   `unknown` results, and tests whose bindings have no `cel::Value` form.
//! - Expected error: any error passes. Expected value: equal by type and value
//!   (no int/uint/double cross-type equality), NaN equals NaN, lists and maps
//!   structural.
//! - The pass count may only rise (`PASS_FLOOR`), and every failure must be
//!   named in `KNOWN_FAILURES`: a new failure fails the test. A known failure
//!   that passes is printed so the list can shrink; it does not fail the test.
//!
//! Set `CEL_CONFORMANCE_VERBOSE=1` to print the detail of every failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

mod cel_spec_support;

use cel_spec_support::{Outcome, Runnable, classify, run_all, str_field, suite_files};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

/// Passed tests as last measured (cel 0.13 through kube-cel 0.8, with the gate's
/// corrections in `policy/semantics.rs`). May only rise.
const PASS_FLOOR: usize = 1549;

struct Row {
    id: String,
    needs_proto: bool,
    outcome: Outcome,
}

#[derive(Default)]
struct Counts {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Counts {
    fn total(&self) -> usize {
        self.passed + self.failed + self.skipped
    }
}

#[test]
fn cel_spec_conformance() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cel-spec-tests");
    // A missing prerequisite fails: a skipped conformance run must not read as passed.
    assert!(
        dir.is_dir(),
        "{} not found: the CEL conformance suite sits in ../shared beside the clone",
        dir.display()
    );
    let verbose = std::env::var_os("CEL_CONFORMANCE_VERBOSE").is_some();

    let mut rows: Vec<Row> = Vec::new();
    let mut runnable: Vec<(usize, Runnable)> = Vec::new();
    for file in suite_files(&dir) {
        let text = std::fs::read_to_string(&file).expect("read a cel-spec test file");
        let doc: Json = serde_json::from_str(&text).expect("cel-spec test file is JSON");
        let tests = doc["tests"].as_array().expect("a `tests` array");
        for test in tests {
            let id = format!(
                "{}/{}/{}",
                str_field(test, "file"),
                str_field(test, "section"),
                str_field(test, "name")
            );
            let needs_proto = test["needs_proto"].as_bool().unwrap_or(false);
            let outcome = match classify(test) {
                Ok(run) => {
                    runnable.push((rows.len(), run));
                    Outcome::Failed("not run".into())
                }
                Err(reason) => Outcome::Skipped(reason),
            };
            rows.push(Row {
                id,
                needs_proto,
                outcome,
            });
        }
    }

    let started = Instant::now();
    let tests: Vec<&Runnable> = runnable.iter().map(|(_, r)| r).collect();
    let outcomes = run_all(&tests);
    for ((row_index, _), outcome) in runnable.iter().zip(outcomes) {
        rows[*row_index].outcome = outcome;
    }
    let elapsed = started.elapsed();

    // Tally and compare with the known-failure list.
    let known: HashMap<&str, &str> = KNOWN_FAILURES.iter().copied().collect();
    let mut all = Counts::default();
    let mut without_proto = Counts::default();
    let mut unexpected = Vec::new();
    let mut now_passing = Vec::new();
    let mut known_but_skipped = Vec::new();
    let mut seen = HashSet::new();
    let mut failed_by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &rows {
        seen.insert(row.id.as_str());
        let bump = |c: &mut Counts| match row.outcome {
            Outcome::Passed => c.passed += 1,
            Outcome::Failed(_) => c.failed += 1,
            Outcome::Skipped(_) => c.skipped += 1,
        };
        bump(&mut all);
        if !row.needs_proto {
            bump(&mut without_proto);
        }
        match (&row.outcome, known.get(row.id.as_str())) {
            (Outcome::Failed(detail), None) => {
                unexpected.push(format!("{}: {}", row.id, detail.replace('\n', " ")))
            }
            (Outcome::Failed(detail), Some(reason)) => {
                *failed_by_reason.entry(reason).or_default() += 1;
                if verbose {
                    println!("known failure {} ({reason}): {detail}", row.id);
                }
            }
            (Outcome::Passed, Some(_)) => now_passing.push(row.id.clone()),
            (Outcome::Skipped(why), Some(_)) => {
                known_but_skipped.push(format!("{} ({why})", row.id))
            }
            _ => {}
        }
    }
    let missing: Vec<&str> = KNOWN_FAILURES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !seen.contains(name))
        .collect();

    println!(
        "cel-spec conformance: {} passed, {} failed (known), {} skipped of {}",
        all.passed,
        all.failed,
        all.skipped,
        all.total()
    );
    println!(
        "cel-spec conformance without protobuf tests: {} passed, {} failed (known), {} skipped of {}",
        without_proto.passed,
        without_proto.failed,
        without_proto.skipped,
        without_proto.total()
    );
    println!(
        "  ({} tests evaluated in {:.1} s)",
        runnable.len(),
        elapsed.as_secs_f64()
    );
    let mut skipped_by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &rows {
        if let Outcome::Skipped(why) = row.outcome {
            *skipped_by_reason.entry(why).or_default() += 1;
        }
    }
    for (why, n) in &skipped_by_reason {
        println!("  skipped {n:4}: {why}");
    }
    for (reason, n) in &failed_by_reason {
        println!("  failed  {n:4}: {reason}");
    }
    if !now_passing.is_empty() {
        println!(
            "{} known failures now pass; remove them from KNOWN_FAILURES and raise PASS_FLOOR:",
            now_passing.len()
        );
        for id in &now_passing {
            println!("  {id}");
        }
    }
    if !known_but_skipped.is_empty() {
        println!("KNOWN_FAILURES entries that were skipped (remove them):");
        for id in &known_but_skipped {
            println!("  {id}");
        }
    }
    if !missing.is_empty() {
        println!("KNOWN_FAILURES entries that name no test of the suite (remove them):");
        for id in &missing {
            println!("  {id}");
        }
    }

    assert!(
        unexpected.is_empty(),
        "{} cel-spec tests failed that are not in KNOWN_FAILURES (a regression, or add them with a reason):\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(
        all.passed >= PASS_FLOOR,
        "cel-spec conformance fell below the floor: {} passed, PASS_FLOOR is {PASS_FLOOR}",
        all.passed
    );
    if all.passed > PASS_FLOOR {
        println!("PASS_FLOOR ({PASS_FLOOR}) can be raised to {}", all.passed);
    }
}

/// The list must be usable as a set: one entry per test.
#[test]
fn known_failures_are_unique_and_explained() {
    let mut seen = HashSet::new();
    for (name, reason) in KNOWN_FAILURES {
        assert!(
            seen.insert(*name),
            "{name} is listed twice in KNOWN_FAILURES"
        );
        assert_eq!(
            name.splitn(3, '/').count(),
            3,
            "{name} is not file/section/name"
        );
        assert!(!reason.is_empty(), "{name} has no reason");
    }
}

// Known failures, measured with cel 0.13 (kube-cel 0.8). Grouped by cause; the
// comment above each group gives its size. Regenerate from the test output
// (the unexpected-failure list prints `file/section/name: detail`).

const TYPE: &str = "dotted type names (google.protobuf.Timestamp, net.IP), optional_type and format of a type are not in the gate";
const BLOCK: &str = "cel.block is not registered";
const BIND: &str = "cel.bind is not registered";
const RANGE: &str = "range and validity errors not raised: int(double) overflow, timestamp/duration range, invalid UTF-8 in string(bytes)";
const LITERALS: &str = "string, bytes and hex literal parsing (escapes, triple quotes, raw strings, -0x...) differs in the cel 0.13 parser";
const BACKTICK: &str = "backtick-quoted field names are not in cel 0.13";
const CONTAINERS: &str =
    "qualified identifiers (a.b.c bound as one name) and expression containers are not in cel 0.13";
const MATH_BITS: &str = "kube-cel math.bit*: no uint overloads, shifts of 64+ error instead of 0, right shift of negatives is arithmetic";
const FORMAT: &str = "kube-cel string.format renders NaN/Infinity, bytes, timestamps, durations, lists and maps differently";
const STRING_EXT_ERRORS: &str = "kube-cel string functions accept invalid arguments or out-of-range indices instead of raising an error";
const TZ: &str = "timestamp accessors ignore the time zone argument";
const MILLIS: &str = "getMilliseconds returns total ms";
const TS_STRING: &str =
    "string(timestamp) and string(duration) formats differ (+00:00, 277h46m40s)";
const NETWORK: &str =
    "network ext: kube-cel ip() has the Kubernetes semantics and rejects IPv4-mapped IPv6";
const ERRORS: &str = "missing errors: -false, duplicate map keys in a map literal (also 0 and 0u)";
const AS_KUBERNETES: &str = "Kubernetes' cel-go (kube-apiserver 1.37.2, e2e/oracle) answers this differently from the spec, and the gate follows Kubernetes: a field of a present optional that is null or a number is none, not an error";

/// Every failing test, `file/section/name`, with the reason for its group.
const KNOWN_FAILURES: &[(&str, &str)] = &[
    // kube-cel string.format renders NaN/Infinity, bytes, timestamps, durations, lists and maps differently (19)
    ("string_ext/format/dyntype support for timestamp", FORMAT),
    ("string_ext/format/dyntype support for duration", FORMAT),
    (
        "string_ext/format/NaN support for scientific notation",
        FORMAT,
    ),
    (
        "string_ext/format/positive infinity support for scientific notation",
        FORMAT,
    ),
    (
        "string_ext/format/negative infinity support for scientific notation",
        FORMAT,
    ),
    ("string_ext/format/NaN support for decimal", FORMAT),
    (
        "string_ext/format/positive infinity support for decimal",
        FORMAT,
    ),
    (
        "string_ext/format/negative infinity support for decimal",
        FORMAT,
    ),
    (
        "string_ext/format/positive infinity support for fixed-point",
        FORMAT,
    ),
    (
        "string_ext/format/negative infinity support for fixed-point",
        FORMAT,
    ),
    ("string_ext/format/bytes support for string", FORMAT),
    ("string_ext/format/timestamp support for string", FORMAT),
    ("string_ext/format/duration support for string", FORMAT),
    ("string_ext/format/list support for string", FORMAT),
    ("string_ext/format/map support for string", FORMAT),
    ("string_ext/format/map support (all key types)", FORMAT),
    ("string_ext/format/dyntype NaN/infinity support", FORMAT),
    ("string_ext/format/dyntype support for maps", FORMAT),
    ("string_ext/format/dyntype support for lists", FORMAT),
    // dotted type names, optional_type, format of a type (7)
    ("network_ext/ip_type/ip_type", TYPE),
    ("network_ext/cidr/parse_cidr_ipv4", TYPE),
    ("network_ext/cidr/cidr_type", TYPE),
    ("optionals/optionals/type", TYPE),
    ("string_ext/format/type() support for string", TYPE),
    ("timestamps/timestamp_conversions/type_comparison", TYPE),
    ("timestamps/duration_conversions/type_comparison", TYPE),
    // all() does not absorb an error when another element is false (2)
    // cel.block is not registered (25)
    ("block_ext/basic/int_add", BLOCK),
    ("block_ext/basic/size_1", BLOCK),
    ("block_ext/basic/size_2", BLOCK),
    ("block_ext/basic/size_3", BLOCK),
    ("block_ext/basic/size_4", BLOCK),
    ("block_ext/basic/timestamp", BLOCK),
    ("block_ext/basic/map_index", BLOCK),
    ("block_ext/basic/nested_map_construction", BLOCK),
    ("block_ext/basic/nested_list_construction", BLOCK),
    ("block_ext/basic/multiple_macros_1", BLOCK),
    ("block_ext/basic/multiple_macros_2", BLOCK),
    ("block_ext/basic/multiple_macros_3", BLOCK),
    ("block_ext/basic/nested_macros_1", BLOCK),
    ("block_ext/basic/nested_macros_2", BLOCK),
    ("block_ext/basic/adjacent_macros", BLOCK),
    ("block_ext/basic/macro_shadowed_variable_1", BLOCK),
    ("block_ext/basic/macro_shadowed_variable_2", BLOCK),
    ("block_ext/basic/inclusion_list", BLOCK),
    ("block_ext/basic/inclusion_map", BLOCK),
    ("block_ext/basic/presence_test", BLOCK),
    ("block_ext/basic/presence_test_2", BLOCK),
    ("block_ext/basic/optional_list", BLOCK),
    ("block_ext/basic/optional_map", BLOCK),
    ("block_ext/basic/optional_map_chained", BLOCK),
    ("block_ext/basic/call", BLOCK),
    // cel.bind is not registered (8)
    ("bindings_ext/bind/boolean_literal", BIND),
    ("bindings_ext/bind/string_concat", BIND),
    ("bindings_ext/bind/bind_nested", BIND),
    ("bindings_ext/bind/macro_exists", BIND),
    ("bindings_ext/bind/macro_not_exists", BIND),
    ("bindings_ext/bind/shadowing", BIND),
    ("bindings_ext/bind/shadowing_namespace_resolution", BIND),
    (
        "bindings_ext/bind/shadowing_namespace_resolution_selector",
        BIND,
    ),
    // range and validity errors not raised: int(double) overflow, timestamp/duration range, invalid UTF-8 in string(bytes) (11)
    ("timestamps/timestamp_range/from_string_under", RANGE),
    ("timestamps/timestamp_range/sub_time_duration_over", RANGE),
    ("timestamps/timestamp_range/sub_time_duration_under", RANGE),
    ("timestamps/duration_range/from_string_under", RANGE),
    ("timestamps/duration_range/from_string_over", RANGE),
    ("timestamps/duration_range/add_under", RANGE),
    ("timestamps/duration_range/add_over", RANGE),
    ("timestamps/duration_range/sub_under", RANGE),
    ("timestamps/duration_range/sub_over", RANGE),
    // string, bytes and hex literal parsing (escapes, triple quotes, raw strings, -0x...) differs in the cel 0.13 parser (72)
    (
        "basic/self_eval_nonzeroish/self_eval_int_hex_negative",
        LITERALS,
    ),
    (
        "basic/self_eval_nonzeroish/self_eval_ascii_escape_seq",
        LITERALS,
    ),
    (
        "parse/string_literals/single_quoted_escaped_punctuation",
        LITERALS,
    ),
    (
        "parse/string_literals/double_quoted_escaped_punctuation",
        LITERALS,
    ),
    (
        "parse/string_literals/triple_single_quoted_escaped_punctuation",
        LITERALS,
    ),
    (
        "parse/string_literals/triple_double_quoted_escaped_punctuation",
        LITERALS,
    ),
    (
        "parse/string_literals/triple_single_quoted_unescaped_punctuation",
        LITERALS,
    ),
    (
        "parse/string_literals/triple_double_quoted_unescaped_punctuation",
        LITERALS,
    ),
    (
        "parse/string_literals/single_quoted_upper_x_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/double_quoted_upper_x_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/triple_single_quoted_upper_x_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/triple_double_quoted_upper_x_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/mixed_case_hex_single_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/mixed_case_hex_double_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/mixed_case_hex_triple_single_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/mixed_case_hex_triple_double_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/raw_triple_single_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/raw_triple_double_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/upper_raw_triple_single_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/string_literals/upper_raw_triple_double_quoted_escapes",
        LITERALS,
    ),
    ("parse/bytes_literals/triple_single_quoted", LITERALS),
    ("parse/bytes_literals/triple_double_quoted", LITERALS),
    (
        "parse/bytes_literals/single_quoted_escaped_punctuation",
        LITERALS,
    ),
    (
        "parse/bytes_literals/double_quoted_escaped_punctuation",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_escaped_punctuation",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_escaped_punctuation",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_unescaped_punctuation",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_unescaped_punctuation",
        LITERALS,
    ),
    (
        "parse/bytes_literals/single_quoted_escaped_special_control_characters",
        LITERALS,
    ),
    (
        "parse/bytes_literals/double_quoted_escaped_special_control_characters",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_escaped_special_control_characters",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_escaped_special_control_characters",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_unescaped_special_control_characters",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_unescaped_special_control_characters",
        LITERALS,
    ),
    (
        "parse/bytes_literals/single_quoted_escaped_line_feed",
        LITERALS,
    ),
    (
        "parse/bytes_literals/double_quoted_escaped_line_feed",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_escaped_line_feed",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_escaped_line_feed",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_unescaped_line_feed",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_unescaped_line_feed",
        LITERALS,
    ),
    (
        "parse/bytes_literals/single_quoted_escaped_carriage_return",
        LITERALS,
    ),
    (
        "parse/bytes_literals/double_quoted_escaped_carriage_return",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_escaped_carriage_return",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_escaped_carriage_return",
        LITERALS,
    ),
    (
        "parse/bytes_literals/single_quoted_escaped_windows_line_end",
        LITERALS,
    ),
    (
        "parse/bytes_literals/double_quoted_escaped_windows_line_end",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_escaped_windows_line_end",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_escaped_windows_line_end",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_escaped_all_control_characters",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_escaped_all_control_characters",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_unescaped_all_control_characters",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_unescaped_all_control_characters",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_octal_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_octal_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_lower_x_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_lower_x_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/single_quoted_upper_x_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/double_quoted_upper_x_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_single_quoted_upper_x_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/triple_double_quoted_upper_x_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/mixed_case_hex_single_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/mixed_case_hex_double_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/mixed_case_hex_triple_single_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/mixed_case_hex_triple_double_quoted_escapes",
        LITERALS,
    ),
    ("parse/bytes_literals/raw_single_quoted_escapes", LITERALS),
    ("parse/bytes_literals/raw_double_quoted_escapes", LITERALS),
    (
        "parse/bytes_literals/raw_triple_single_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/raw_triple_double_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/upper_raw_single_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/upper_raw_double_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/upper_raw_triple_single_quoted_escapes",
        LITERALS,
    ),
    (
        "parse/bytes_literals/upper_raw_triple_double_quoted_escapes",
        LITERALS,
    ),
    // repeated unary operators (!!..., --...) evaluate wrongly in the cel 0.13 parser (2)
    // backtick-quoted field names are not in cel 0.13 (5)
    ("fields/quoted_map_fields/field_access_slash", BACKTICK),
    ("fields/quoted_map_fields/field_access_dash", BACKTICK),
    ("fields/quoted_map_fields/field_access_dot", BACKTICK),
    ("fields/quoted_map_fields/has_field_dash", BACKTICK),
    ("fields/quoted_map_fields/has_field_dot", BACKTICK),
    // qualified identifiers (a.b.c bound as one name) and expression containers are not in cel 0.13 (10)
    (
        "fields/qualified_identifier_resolution/qualified_ident",
        CONTAINERS,
    ),
    (
        "fields/qualified_identifier_resolution/map_field_select",
        CONTAINERS,
    ),
    (
        "fields/qualified_identifier_resolution/qualified_identifier_resolution_unchecked",
        CONTAINERS,
    ),
    (
        "fields/qualified_identifier_resolution/ident_with_longest_prefix_check",
        CONTAINERS,
    ),
    ("namespace/qualified/self_eval_qualified_lookup", CONTAINERS),
    ("namespace/namespace/self_eval_container_lookup", CONTAINERS),
    (
        "namespace/namespace/self_eval_container_lookup_unchecked",
        CONTAINERS,
    ),
    ("namespace/namespace_shadowing/basic", CONTAINERS),
    (
        "namespace/namespace_shadowing/comprehension_shadowing_disambiguation",
        CONTAINERS,
    ),
    (
        "namespace/namespace_shadowing/comprehension_shadowing_namespaced_selector_disambiguation",
        CONTAINERS,
    ),
    (
        "optionals/optionals/map_null_entry_no_such_key",
        AS_KUBERNETES,
    ),
    (
        "optionals/optionals/map_present_key_invalid_field",
        AS_KUBERNETES,
    ),
    // kube-cel math.bit*: no uint overloads, shifts of 64+ error instead of 0, right shift of negatives is arithmetic (15)
    ("math_ext/bit_and/uint_uint_non_intersect", MATH_BITS),
    ("math_ext/bit_and/uint_uint_intersect", MATH_BITS),
    ("math_ext/bit_or/uint_uint", MATH_BITS),
    ("math_ext/bit_xor/uint_uint", MATH_BITS),
    ("math_ext/bit_not/uint_positive", MATH_BITS),
    ("math_ext/bit_not/uint_zero", MATH_BITS),
    ("math_ext/bit_shift_left/int_large_shift", MATH_BITS),
    (
        "math_ext/bit_shift_left/int_negative_large_shift",
        MATH_BITS,
    ),
    ("math_ext/bit_shift_left/uint", MATH_BITS),
    ("math_ext/bit_shift_left/uint_large_shift", MATH_BITS),
    ("math_ext/bit_shift_right/int_large_shift", MATH_BITS),
    ("math_ext/bit_shift_right/int_negative", MATH_BITS),
    (
        "math_ext/bit_shift_right/int_negative_large_shift",
        MATH_BITS,
    ),
    ("math_ext/bit_shift_right/uint", MATH_BITS),
    ("math_ext/bit_shift_right/uint_large_shift", MATH_BITS),
    // kube-cel string functions accept invalid arguments or out-of-range indices instead of raising an error (11)
    (
        "string_ext/value_errors/indexof_out_of_range",
        STRING_EXT_ERRORS,
    ),
    (
        "string_ext/value_errors/lastindexof_negative_index",
        STRING_EXT_ERRORS,
    ),
    (
        "string_ext/value_errors/lastindexof_out_of_range",
        STRING_EXT_ERRORS,
    ),
    (
        "string_ext/type_errors/indexof_binary_both_invalid_arguments",
        STRING_EXT_ERRORS,
    ),
    (
        "string_ext/type_errors/indexof_ternary_invalid_arguments",
        STRING_EXT_ERRORS,
    ),
    (
        "string_ext/type_errors/replace_ternary_invalid_argument_4",
        STRING_EXT_ERRORS,
    ),
    (
        "string_ext/type_errors/replace_quaternary_invalid_argument",
        STRING_EXT_ERRORS,
    ),
    (
        "string_ext/type_errors/split_ternary_invalid_argument",
        STRING_EXT_ERRORS,
    ),
    (
        "string_ext/type_errors/substring_ternary_invalid_argument",
        STRING_EXT_ERRORS,
    ),
    (
        "string_ext/type_errors/substring_binary_invalid_argument_2",
        STRING_EXT_ERRORS,
    ),
    // timestamp accessors ignore the time zone argument (6)
    ("timestamps/timestamp_selectors_tz/getDate", TZ),
    (
        "timestamps/timestamp_selectors_tz/getDayOfMonth_numerical_pos",
        TZ,
    ),
    (
        "timestamps/timestamp_selectors_tz/getDayOfMonth_numerical_neg",
        TZ,
    ),
    (
        "timestamps/timestamp_selectors_tz/getDayOfMonth_name_neg",
        TZ,
    ),
    ("timestamps/timestamp_selectors_tz/getHours", TZ),
    ("timestamps/timestamp_selectors_tz/getMinutes", TZ),
    // getMilliseconds returns total ms (1)
    ("timestamps/duration_converters/get_milliseconds", MILLIS),
    // string(timestamp) and string(duration) formats differ (+00:00, 277h46m40s) (3)
    (
        "timestamps/timestamp_conversions/toString_timestamp",
        TS_STRING,
    ),
    (
        "timestamps/timestamp_conversions/toString_timestamp_nanos",
        TS_STRING,
    ),
    (
        "timestamps/duration_conversions/toString_duration",
        TS_STRING,
    ),
    // network ext: kube-cel ip() has the Kubernetes semantics and rejects IPv4-mapped IPv6 (2)
    ("network_ext/ipv4/ipv4_equals_ipv6", NETWORK),
    ("network_ext/ipv4/ipv4_not_equals_ipv6", NETWORK),
    // missing errors: -false, duplicate map keys in a map literal (also 0 and 0u) (3)
    (
        "fields/qualified_identifier_resolution/map_value_repeat_key",
        ERRORS,
    ),
    ("integer_math/int64_math/unary_minus_not_bool", ERRORS),
    (
        "fields/qualified_identifier_resolution/map_value_repeat_key_heterogeneous",
        ERRORS,
    ),
];
