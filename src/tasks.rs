//! Small helpers for tasks held in an `Option` slot while they run in the background.

use std::future::Future;

use tokio::task::JoinHandle;

/// The output of a task in `slot` that has finished (`Some(None)` if it panicked), taking it out;
/// `None` while it runs (or when there is none).
pub fn take_finished<T>(slot: &mut Option<JoinHandle<T>>) -> Option<Option<T>> {
    if !slot.as_ref().is_some_and(|h| h.is_finished()) {
        return None;
    }
    let mut h = slot.take()?;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(&mut h).poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r.ok()),
        // `is_finished` said it was done, and a finished task stays finished.
        std::task::Poll::Pending => None,
    }
}

/// Waits for the task in `slot`; when it is done, empties the slot and returns its output (`None` if it
/// panicked, or if the slot was empty). Cancel-safe: dropped before the end, the slot keeps the task.
pub async fn join_slot<T>(slot: &mut Option<JoinHandle<T>>) -> Option<T> {
    let h = slot.as_mut()?;
    let r = h.await;
    *slot = None;
    r.ok()
}

/// Resolves at the first SIGINT or SIGTERM with its number (never, if the handlers cannot be
/// installed).
pub async fn stop_signal() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
            }
        }
        _ => std::future::pending().await,
    }
}
