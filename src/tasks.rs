//! Small helpers for tasks held in an `Option` slot while they run in the background, and for
//! awaiting several futures together.

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

/// Awaits every future of `futs` together (not one after another), their outputs in their order: a
/// request to a hung broker must not hold up those to the others (t24 F1: a consume's start offsets,
/// asked of each leader in turn, waited out a paused broker before asking the healthy ones).
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}

/// Sleeps until `at` (forever when `None`): a deadline that may not be there, in a `select!`.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
