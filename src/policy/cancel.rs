//! Stopping an evaluation whose answer nobody waits for any more.
//!
//! The `cel` crate has no step counter and no interrupt: once
//! `Value::resolve` runs, only code of ours that it calls can stop it. So a
//! [`CancelToken`] is installed for the thread running one request's
//! evaluation ([`CancelToken::enter`]), and these check points consult it:
//!
//! - every function the engine registers (`cel_env.rs`): our own, the `cel`
//!   standard library and `kube-cel`'s, including the operators rewritten into
//!   calls (`==`, `!=`, `in`, `[]`, field paths into the request);
//! - every `variables.<name>` read and every expression start (`evaluate.rs`);
//! - every 256 elements while the lazy layer decodes a list or map of the
//!   request (`values.rs`).
//!
//! A tripped check point returns an error, which failurePolicy handles like
//! any evaluation error; every later check point fails at once, so the
//! evaluation unwinds within one loop step of code that calls none of them
//! (see the README's cost guard section for what that leaves).
//!
//! A thread-local rather than a scope binding: the check runs on every
//! function call, and a thread-local read plus an atomic load is far cheaper
//! than a variable lookup through the CEL scope chain.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

/// Why an evaluation was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The request's deadline (`?timeout=` less the answer headroom) passed.
    Deadline,
    /// The client closed the connection or reset the HTTP/2 stream.
    ClientGone,
    /// The server is shutting down and stopped waiting for this request.
    Shutdown,
}

impl CancelReason {
    /// The metric label and the word used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Deadline => "deadline",
            CancelReason::ClientGone => "client_gone",
            CancelReason::Shutdown => "shutdown",
        }
    }

    fn code(self) -> u8 {
        match self {
            CancelReason::Deadline => 1,
            CancelReason::ClientGone => 2,
            CancelReason::Shutdown => 3,
        }
    }

    fn from_code(code: u8) -> Option<CancelReason> {
        match code {
            1 => Some(CancelReason::Deadline),
            2 => Some(CancelReason::ClientGone),
            3 => Some(CancelReason::Shutdown),
            _ => None,
        }
    }
}

/// The error a tripped check point reports (failurePolicy then decides).
pub fn message(reason: CancelReason) -> String {
    match reason {
        CancelReason::Deadline => "the request deadline passed; evaluation stopped".to_string(),
        CancelReason::ClientGone => "the caller went away; evaluation stopped".to_string(),
        CancelReason::Shutdown => "the server is shutting down; evaluation stopped".to_string(),
    }
}

#[derive(Debug)]
struct Inner {
    /// 0 while running; otherwise the first [`CancelReason`] code.
    reason: AtomicU8,
    deadline: Option<Instant>,
    /// A check point saw the cancellation (the evaluation was actually cut short).
    observed: AtomicBool,
    /// The token of an attempt on the server's async worker
    /// ([`CancelToken::inline_slice`]): [`before_blocking`] ends it.
    inline: bool,
}

/// One request's cancellation: cancelled explicitly (client gone, shutdown)
/// or implicitly once `deadline` passes. Cheap to clone; all clones share state.
#[derive(Debug, Clone)]
pub struct CancelToken(Arc<Inner>);

impl CancelToken {
    pub fn new(deadline: Option<Instant>) -> CancelToken {
        CancelToken(Arc::new(Inner {
            reason: AtomicU8::new(0),
            deadline,
            observed: AtomicBool::new(false),
            inline: false,
        }))
    }

    /// The token of an evaluation attempt on the server's async worker: it
    /// trips at `deadline` (the end of the attempt's time slice) or at the
    /// first [`before_blocking`], and the server then evaluates the request
    /// again on the blocking pool.
    pub fn inline_slice(deadline: Instant) -> CancelToken {
        CancelToken(Arc::new(Inner {
            reason: AtomicU8::new(0),
            deadline: Some(deadline),
            observed: AtomicBool::new(false),
            inline: true,
        }))
    }

    /// Cancels for `reason`; the first reason given sticks.
    pub fn cancel(&self, reason: CancelReason) {
        let _ =
            self.0
                .reason
                .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire);
    }

    /// Why the token is cancelled, if it is (a passed deadline counts).
    pub fn reason(&self) -> Option<CancelReason> {
        if let Some(reason) = CancelReason::from_code(self.0.reason.load(Ordering::Acquire)) {
            return Some(reason);
        }
        if self.0.deadline.is_some_and(|d| Instant::now() >= d) {
            self.cancel(CancelReason::Deadline);
            return CancelReason::from_code(self.0.reason.load(Ordering::Acquire));
        }
        None
    }

    /// Whether a check point stopped work because of this token.
    pub fn stopped_evaluation(&self) -> bool {
        self.0.observed.load(Ordering::Acquire)
    }

    /// Installs the token as this thread's current one until the guard drops.
    pub fn enter(&self) -> Entered {
        let previous = CURRENT.with(|c| c.replace(Some(self.clone())));
        Entered { previous }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<CancelToken>> = const { RefCell::new(None) };
}

/// Restores the previous token (usually none) when dropped.
#[must_use = "the token is current only while the guard lives"]
pub struct Entered {
    previous: Option<CancelToken>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// The check point: `Err(message)` once the current evaluation is cancelled;
/// always `Ok` on a thread without a token (CLI commands, tests).
pub fn check() -> Result<(), String> {
    CURRENT.with(|c| match c.borrow().as_ref() {
        None => Ok(()),
        Some(token) => match token.reason() {
            None => Ok(()),
            Some(reason) => {
                token.0.observed.store(true, Ordering::Release);
                Err(message(reason))
            }
        },
    })
}

/// Called before code that waits for something outside the process (a
/// SubjectAccessReview to kube-apiserver). An attempt on the server's async
/// worker must not wait there (it would hold every connection that worker
/// serves, and the answer may need that worker), so under an
/// [`CancelToken::inline_slice`] token this ends the attempt with `Err` and
/// the server evaluates the request again on the blocking pool. `Ok` under
/// any other token or none.
pub fn before_blocking() -> Result<(), String> {
    CURRENT.with(|c| match c.borrow().as_ref() {
        Some(token) if token.0.inline => {
            token.cancel(CancelReason::Deadline);
            token.0.observed.store(true, Ordering::Release);
            Err(
                "the evaluation would wait on the async worker; it moves to the blocking pool"
                    .to_string(),
            )
        }
        _ => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn check_points_see_the_current_token_only() {
        assert!(check().is_ok(), "no token: never cancelled");
        let token = CancelToken::new(None);
        {
            let _entered = token.enter();
            assert!(check().is_ok());
            token.cancel(CancelReason::ClientGone);
            token.cancel(CancelReason::Deadline);
            let error = check().expect_err("cancelled");
            assert!(error.contains("caller went away"), "{error}");
            assert!(token.stopped_evaluation());
        }
        assert!(check().is_ok(), "the guard restored the thread's state");
        assert_eq!(
            token.reason(),
            Some(CancelReason::ClientGone),
            "first reason sticks"
        );
    }

    /// The library's own functions, re-registered as check points, stop a
    /// loop whose body calls nothing else; so does decoding a request list.
    #[test]
    fn library_functions_and_list_decoding_are_check_points() {
        let only_library = "lists.range(1000).filter(i, 'ab'.startsWith('a')).size() == 1000";
        assert_eq!(
            crate::policy::cel_env::evaluate(only_library, vec![]),
            Ok(kube_cel::cel::Value::Bool(true))
        );
        let token = CancelToken::new(None);
        token.cancel(CancelReason::Shutdown);
        let _entered = token.enter();
        let error = crate::policy::cel_env::evaluate(only_library, vec![]).expect_err("stopped");
        assert!(error.contains("shutting down"), "{error}");
        let list = format!("[{}]", vec!["1"; 1000].join(","));
        let error = crate::policy::values::decode_json(&list).expect_err("stopped");
        assert!(error.to_string().contains("shutting down"), "{error}");
    }

    #[test]
    fn only_an_inline_slice_refuses_to_block() {
        assert!(before_blocking().is_ok(), "no token");
        let request = CancelToken::new(None);
        {
            let _entered = request.enter();
            assert!(before_blocking().is_ok(), "a request's own token");
            assert!(!request.stopped_evaluation());
        }
        let slice = CancelToken::inline_slice(Instant::now() + Duration::from_secs(60));
        let _entered = slice.enter();
        assert!(before_blocking().is_err());
        assert!(slice.stopped_evaluation());
        assert!(check().is_err(), "the rest of the attempt unwinds");
    }

    #[test]
    fn a_passed_deadline_cancels() {
        let token = CancelToken::new(Some(Instant::now() - Duration::from_millis(1)));
        let _entered = token.enter();
        assert!(check().expect_err("past").contains("deadline"));
        assert_eq!(token.reason(), Some(CancelReason::Deadline));
    }
}
