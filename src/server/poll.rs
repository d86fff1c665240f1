//! The loop behind every file poller of `serve` (policies, serving
//! certificate, client CAs): a tick every `--reload-interval`, the file work
//! on the blocking pool (it reads and parses files), the result handed to the
//! poller's own handler, and an end when shutdown starts.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Calls `poll(&mut source)` on the blocking pool every `every` (the first
/// call one period after start: the source was just loaded) and awaits
/// `on_result` with what it returned, until `stop` changes. Ticks missed while
/// a poll or handler ran are delayed, not bunched. A poll that panics is
/// logged with `what` and the loop goes on with the next tick.
pub(super) async fn poll_every<S, R, Fut>(
    what: &'static str,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    source: S,
    poll: fn(&mut S) -> R,
    mut on_result: impl FnMut(R) -> Fut,
) where
    S: Send + 'static,
    R: Send + 'static,
    Fut: Future<Output = ()>,
{
    let source = Arc::new(Mutex::new(source));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let source = Arc::clone(&source);
        // A poll that panicked poisoned the lock; the source itself is still
        // whole (every poll leaves it in its last good state), so go on with it.
        let polled = tokio::task::spawn_blocking(move || match source.lock() {
            Ok(mut s) => poll(&mut s),
            Err(poisoned) => poll(&mut poisoned.into_inner()),
        })
        .await;
        match polled {
            Ok(result) => on_result(result).await,
            Err(e) => tracing::error!(error = %e, "{what} reload task failed"),
        }
    }
}

/// The last reload error a poller reported, so that a file that stays broken
/// is reported once (log line and failure counter), not on every poll.
#[derive(Debug, Default)]
pub(super) struct DistinctError {
    last: Option<String>,
}

impl DistinctError {
    /// True when `message` differs from the last reported error (and remembers it).
    pub(super) fn is_new(&mut self, message: &str) -> bool {
        if self.last.as_deref() == Some(message) {
            return false;
        }
        self.last = Some(message.to_owned());
        true
    }

    /// The file loaded again: its next error is news.
    pub(super) fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_error_is_reported_once_and_again_after_a_good_load() {
        let mut reported = DistinctError::default();
        assert!(reported.is_new("no such file"));
        assert!(!reported.is_new("no such file"));
        assert!(reported.is_new("bad PEM"));
        reported.clear();
        assert!(reported.is_new("bad PEM"));
    }

    #[tokio::test]
    async fn polls_every_period_until_stopped() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let poller = tokio::spawn(poll_every(
            "test",
            Duration::from_millis(10),
            stop_rx,
            0u32,
            |n| {
                *n += 1;
                *n
            },
            move |n| {
                let _ = seen_tx.send(n);
                std::future::ready(())
            },
        ));
        assert_eq!(seen_rx.recv().await, Some(1));
        assert_eq!(seen_rx.recv().await, Some(2));
        let _ = stop_tx.send(true);
        poller.await.expect("the poller ends when stopped");
        assert_eq!(seen_rx.recv().await, None, "no poll after stop");
    }
}
