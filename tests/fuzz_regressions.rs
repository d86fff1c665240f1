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
