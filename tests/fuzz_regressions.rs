//! Inputs the fuzz targets (`fuzz/`) found to crash, hang or grow without
//! bound, each pinned here before its fix. The test names the target and the
//! input; the assertion is what a user sees instead of the crash.

use safety_gate::policy::cel_env;
use std::sync::Mutex;

/// Panics count even when a `catch_unwind` stops them: under libFuzzer (and
/// with `panic = "abort"`) they end the process, and each prints a message
/// and backtrace to the server's stderr. Runs `f` with a panic hook that
/// records instead of printing, and fails if anything was recorded. One
/// hook is process-wide, so the tests that use this take turns.
fn no_panic<T>(f: impl FnOnce() -> T) -> T {
    static TURN: Mutex<()> = Mutex::new(());
    static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        PANICS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(info.to_string());
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    let panics = std::mem::take(&mut *PANICS.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(panics.is_empty(), "the input panicked: {panics:?}");
    match result {
        Ok(v) => v,
        Err(_) => panic!("the input panicked"),
    }
}

/// cel_expression, site 7 (the tools' `cel_env::evaluate`): message
/// construction reached the `cel` crate's `todo!("Support structs!")`, which
/// the `catch_unwind` turned into "the CEL interpreter panicked". The policy
/// compiler refuses it by name; the tools' path now does the same.
#[test]
fn cel_env_evaluate_refuses_message_construction_by_name() {
    for source in [
        "[JSONPatch{op: 1, path: '/data'}]",
        "Object{spec: Object.spec{replicas: 1}}",
        "{'a': 1}.size() == 1 && google.protobuf.Value{}.size() == 0",
    ] {
        let result = no_panic(|| cel_env::evaluate(source, Vec::new()));
        let error = result.expect_err(source);
        assert!(
            error.contains("message construction ('Type{field: ...}') is not supported"),
            "{source}: {error}"
        );
    }
}

/// cel_expression, site 2 (a matchCondition), found in the long run: a
/// malformed expression of 1,407 characters with some 25 unclosed calls and
/// runs of unary minus took the `cel` crate's parser 1.3–2.2 s in a release
/// build (8–9 s in debug), about twice as long per bracket opened after an
/// even run of `-`: the crate's parser visits the operand of such a run
/// twice (`unary_runs.rs`). kube-apiserver refuses it in milliseconds.
#[test]
fn a_malformed_expression_is_refused_within_a_second() {
    let source = concat!(
        "object.kind != 'Pod' || (!has(object.spec.volumes)) || object.spec.volumes.all(vol, !(has(",
        "\u{7}\u{3}object.i1-nt ---.compareTo(--------1-----------------1-nt ---.compareTo(--------",
        "1-----------------------cont-----------------.c(oberences----------tolerati-----------cont",
        "ains(--------*-----s--!!int ---.compareTo(--------1---------$----ompareTo(-----6--1-------",
        "vol.hostPat-------\u{2}object.kind != 'Pod' || (!has(object.spec.volumes)) || object.spec.",
        "volumes.all(vol, !(has(\u{7}\u{3}object.i1-nt ---.compareTo(--------1-----------------1-nt",
        " ---.compareTo(--------1-----------------------cont-----------------.compareTo(-----6--1--",
        "-----vol.hostPat--------.spec.volumes)) || object.spec.volumes.all(vol, !(has(\u{7}\u{3}ob",
        "ject.i1-nt ---.compareTo(--------1-----------------1-nt ---.compareTo(--------1-----------",
        "------------cont-----------------.compareTo(-----6--1-------vol.hostPat-------\u{2}object.",
        "kind != 'Pod' || (!has(object.spec.volumes)) || object.spec.volumes.all(vol, !(has(\u{7}\u{3}",
        "object.i1-nt ---.compareTo(--------1-----------------1-nt ---.compareTo(--------1---------",
        "--------------cont-----------------.compareTo(-----6--1-------vol.hostPat-----------------",
        "tolerati-----------contains(--------*-----s--!!int ---.compareTo(--------1---------$------",
        "-------cont-----------------.compareTo(--------1------------cont-----------------.compareT",
        "o(--------1------------------------priority---------h))--co-9223372036854775808ntains(----",
        "---_",
    );
    // The debug build's parser recursion needs more than a test thread's 2 MB.
    let parse = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let started = std::time::Instant::now();
            (cel_env::parse(source).is_err(), started.elapsed())
        })
        .unwrap();
    let (refused, elapsed) = parse.join().unwrap();
    assert!(refused, "the expression is malformed");
    assert!(
        elapsed < std::time::Duration::from_secs(1),
        "parsing took {elapsed:?}"
    );
}

/// The same blow-up on a valid expression, and the meaning behind it: in
/// `(1---(1---(…1)))` every `1---y` is `1 - y` to kube-apiserver (an even run
/// of negations is no negation), so 25 levels are 0 (the `cel` crate read
/// `--y` as `-y`, giving 25, after 30 s of parsing).
#[test]
fn nested_operator_runs_parse_fast_with_kube_apiserver_meaning() {
    let nested = |levels: usize| format!("{}1{}", "(1---".repeat(levels), ")".repeat(levels));
    let run = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let started = std::time::Instant::now();
            let values = [
                cel_env::evaluate(&nested(25), Vec::new()),
                cel_env::evaluate(&nested(12), Vec::new()),
            ];
            (values, started.elapsed())
        })
        .unwrap();
    let (values, elapsed) = run.join().unwrap();
    // The values kube-apiserver v1.37.2 gives (its oracle, e2e/oracle).
    assert_eq!(
        values,
        [
            Ok(kube_cel::cel::Value::Int(0)),
            Ok(kube_cel::cel::Value::Int(1))
        ]
    );
    assert!(
        elapsed < std::time::Duration::from_secs(1),
        "took {elapsed:?}"
    );
}
