//! Writes the checkpoint on a thread of its own (fsync can stall on a busy disk; shipping must not),
//! always the latest state, only when it changed. A failed write is said once, retried with a growing
//! pause (1 s to 30 s), and said again once when writing works again; the current trouble shows in
//! `--stats`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::checkpoint;
use crate::escape::Esc;

#[derive(Default)]
struct State {
    /// The latest text not yet written.
    pending: Option<String>,
    /// The last text written.
    written: Option<String>,
    /// Since when and why writing fails.
    failing: Option<(Instant, String)>,
    /// Write attempts so far.
    attempts: u64,
    /// Retry at once instead of after the pause (a flush is waiting).
    hurry: bool,
    stop: bool,
}

/// The checkpoint writer.
pub struct Saver {
    path: PathBuf,
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Saver {
    /// Starts the writer for `path`, which holds `written` now.
    pub fn start(path: &Path, written: String) -> std::io::Result<Saver> {
        let state = State {
            written: Some(written),
            ..State::default()
        };
        let shared = Arc::new((Mutex::new(state), Condvar::new()));
        let (s, p) = (shared.clone(), path.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || write_loop(&p, &s))?;
        Ok(Saver {
            path: path.to_path_buf(),
            shared,
            thread: Some(thread),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for `text` to be written (unless it is what was last written or asked).
    pub fn submit(&self, text: String) {
        let mut st = self.lock();
        if st.written.as_ref() == Some(&text) || st.pending.as_ref() == Some(&text) {
            return;
        }
        st.pending = Some(text);
        self.shared.1.notify_all();
    }

    /// Writes `text` now and waits (up to `limit`) until it is on disk; the error if the next attempt
    /// failed.
    pub fn flush(&self, text: String, limit: Duration) -> Result<(), String> {
        self.submit(text);
        let deadline = Instant::now() + limit;
        let mut st = self.lock();
        let start = st.attempts;
        st.hurry = true;
        self.shared.1.notify_all();
        while st.pending.is_some() {
            if st.attempts > start {
                if let Some((_, e)) = &st.failing {
                    return Err(e.clone());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            st = self
                .shared
                .1
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        Ok(())
    }

    /// Why writing has been failing, and for how long, if it is.
    pub fn trouble(&self) -> Option<String> {
        self.lock().failing.as_ref().map(|(since, e)| {
            format!(
                "checkpoint not written for {:.0}s: {e}",
                since.elapsed().as_secs_f64()
            )
        })
    }

    /// How long writing has been failing, if it is.
    pub fn failing_for(&self) -> Option<Duration> {
        self.lock()
            .failing
            .as_ref()
            .map(|(since, _)| since.elapsed())
    }

    /// The checkpoint's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.lock().stop = true;
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_loop(path: &Path, shared: &(Mutex<State>, Condvar)) {
    let lock = || shared.0.lock().unwrap_or_else(|e| e.into_inner());
    let mut pause = Duration::from_secs(1);
    loop {
        let text = {
            let mut st = lock();
            while st.pending.is_none() && !st.stop {
                st = shared.1.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            match st.pending.clone() {
                Some(t) if !st.stop || st.hurry => t,
                _ => return,
            }
        };
        let r = checkpoint::store(path, &text);
        let mut st = lock();
        st.attempts += 1;
        match r {
            Ok(()) => {
                if let Some((since, _)) = st.failing.take() {
                    crate::log::info(format_args!(
                        "checkpoint {} written again after {:.0}s",
                        Esc::path(path),
                        since.elapsed().as_secs_f64()
                    ));
                }
                pause = Duration::from_secs(1);
                st.hurry = false;
                if st.pending.as_ref() == Some(&text) {
                    st.pending = None;
                }
                st.written = Some(text);
                shared.1.notify_all();
            }
            Err(e) => {
                if st.failing.is_none() {
                    crate::log::error(format_args!(
                        "cannot write checkpoint {}: {e}; retrying (lines keep shipping; a restart now would resend more)",
                        Esc::path(path)
                    ));
                    st.failing = Some((Instant::now(), e.to_string()));
                }
                st.hurry = false;
                shared.1.notify_all();
                // Pause before the next attempt, unless stopping or a flush wants it now.
                let until = Instant::now() + pause;
                while !st.stop && !st.hurry {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    st = shared
                        .1
                        .wait_timeout(st, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                if st.stop && !st.hurry {
                    return;
                }
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}
