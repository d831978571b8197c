//! Standard output written by a thread of its own, for output that must not hold up the event loop.
//!
//! `produce --print-offsets` printed each acknowledgement from the event loop: with standard output
//! a pipe nobody read for a while (a pager, `| (sleep 60; cat)`), the write blocked the one-thread
//! runtime, no acknowledgement was read meanwhile, and the records waiting to be sent expired with
//! a false "not written". Here the loop queues text and goes on; the caller holds its input while
//! more than [`HIGH_WATER`] bytes wait ([`Behind::room`]), so the queue stays bounded.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Bytes waiting to be written past which the caller should stop taking input.
pub const HIGH_WATER: usize = 1 << 20;

/// A writer to standard output on a thread of its own (see the module).
pub struct Behind {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// The thread waits on it for text or the end.
    wake: Condvar,
    /// The caller waits on it for the queue to drain below [`HIGH_WATER`].
    room: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    queue: Vec<u8>,
    /// No more text comes: the thread writes what is queued and ends.
    closed: bool,
    /// The write that failed; nothing more is written after it.
    error: Option<io::Error>,
    /// The error was handed to the caller already.
    told: bool,
    /// Bytes taken since the start (written or queued).
    taken: u64,
    /// Bytes standard output took since the start.
    written: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the writer thread leaves the state as it was: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Behind {
    /// Starts the writer thread.
    pub fn stdout() -> io::Result<Behind> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            room: tokio::sync::Notify::new(),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || write_loop(&s, &mut super::stdout()))?;
        Ok(Behind {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `text`; dropped once a write failed. The failure is returned once, by the first call
    /// after it.
    pub fn write(&self, text: &[u8]) -> io::Result<()> {
        let mut st = self.shared.lock();
        if let Some(e) = take_error(&mut st) {
            return Err(e);
        }
        if st.error.is_none() {
            st.queue.extend_from_slice(text);
            st.taken += text.len() as u64;
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// As [`Behind::write`], taking the text out of `text` (left empty): when nothing is queued,
    /// the buffers trade places and nothing is copied.
    pub fn give(&self, text: &mut Vec<u8>) -> io::Result<()> {
        let mut st = self.shared.lock();
        if let Some(e) = take_error(&mut st) {
            text.clear();
            return Err(e);
        }
        if st.error.is_none() && !text.is_empty() {
            st.taken += text.len() as u64;
            if st.queue.is_empty() {
                std::mem::swap(&mut st.queue, text);
            } else {
                st.queue.extend_from_slice(text);
            }
            self.shared.wake.notify_one();
        }
        text.clear();
        Ok(())
    }

    /// Bytes taken so far by [`Behind::write`] and [`Behind::give`]: the mark that
    /// [`Behind::written`] reaches once they are all written.
    pub fn taken(&self) -> u64 {
        self.shared.lock().taken
    }

    /// Bytes standard output took so far.
    pub fn written(&self) -> u64 {
        self.shared.lock().written
    }

    /// Waits until everything taken is written, or writing failed.
    pub async fn drained(&self) {
        loop {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.shared.lock();
                if st.error.is_some() || st.written >= st.taken {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Whether more than [`HIGH_WATER`] bytes wait to be written.
    pub fn is_full(&self) -> bool {
        let st = self.shared.lock();
        st.error.is_none() && st.queue.len() > HIGH_WATER
    }

    /// Waits until the queue is below [`HIGH_WATER`] (or writing failed).
    pub async fn room(&self) {
        loop {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            // Registered before the look, so that a wake-up between the two is not missed.
            notified.as_mut().enable();
            if !self.is_full() {
                return;
            }
            notified.await;
        }
    }

    /// Writes what is queued and ends the thread; a write error not yet returned by
    /// [`Behind::write`] is returned. Blocks until standard output took it all.
    pub fn finish(mut self) -> io::Result<()> {
        {
            let mut st = self.shared.lock();
            st.closed = true;
            self.shared.wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        match take_error(&mut self.shared.lock()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Behind {
    /// Not finished (given up): the thread writes what is queued and ends; nobody waits for it.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

fn take_error(st: &mut State) -> Option<io::Error> {
    if st.told {
        return None;
    }
    let e = st.error.as_ref()?;
    st.told = true;
    Some(io::Error::new(e.kind(), e.to_string()))
}

fn write_loop(shared: &Shared, out: &mut impl Write) {
    let mut batch = Vec::new();
    loop {
        {
            let mut st = shared.lock();
            while st.queue.is_empty() && !st.closed {
                st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.queue.is_empty() {
                return;
            }
            // The two buffers trade places: no copy, and the queue keeps its capacity.
            batch.clear();
            std::mem::swap(&mut batch, &mut st.queue);
        }
        shared.room.notify_waiters();
        if let Err(e) = write_counted(shared, out, &batch).and_then(|()| out.flush()) {
            let mut st = shared.lock();
            st.error = Some(e);
            st.queue = Vec::new();
            drop(st);
            shared.room.notify_waiters();
            return;
        }
    }
}

/// Writes all of `batch`, counting each part standard output takes as written (a pipe takes 64 KiB
/// at a time): what is committed as printed follows what really was.
fn write_counted(shared: &Shared, out: &mut impl Write, mut batch: &[u8]) -> io::Result<()> {
    while !batch.is_empty() {
        match out.write(batch) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                shared.lock().written += n as u64;
                shared.room.notify_waiters();
                batch = &batch[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A writer that blocks until told to go on, then fails or takes the bytes.
    struct Gate {
        go: mpsc::Receiver<bool>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self.go.recv() {
                Ok(true) => {
                    self.got.lock().unwrap().extend_from_slice(buf);
                    Ok(buf.len())
                }
                _ => Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed")),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn behind_gate() -> (Behind, mpsc::Sender<bool>, Arc<Mutex<Vec<u8>>>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            room: tokio::sync::Notify::new(),
        });
        let (tx, rx) = mpsc::channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut gate = Gate {
            go: rx,
            got: Arc::clone(&got),
        };
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || write_loop(&s, &mut gate));
        (
            Behind {
                shared,
                thread: Some(thread),
            },
            tx,
            got,
        )
    }

    #[tokio::test]
    async fn a_blocked_reader_fills_the_queue_and_room_comes_when_it_reads() {
        let (b, go, got) = behind_gate();
        b.write(b"first\n").unwrap();
        while !b.shared.lock().queue.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // The thread is blocked writing "first"; the queue grows past the mark without blocking.
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(HIGH_WATER / chunk.len() + 1) {
            b.write(&chunk).unwrap();
        }
        assert!(b.is_full());
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), b.room()).await;
        assert!(waiting.is_err(), "no room while the reader reads nothing");
        // The reader takes everything: room.
        go.send(true).unwrap();
        go.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), b.room())
            .await
            .expect("room once the reader read");
        b.finish().unwrap();
        assert_eq!(
            got.lock().unwrap().len(),
            6 + chunk.len() * (HIGH_WATER / chunk.len() + 1)
        );
    }

    #[tokio::test]
    async fn written_reaches_the_mark_of_what_was_given_only_once_the_reader_took_it() {
        let (b, go, got) = behind_gate();
        let mut text = b"one\n".to_vec();
        b.give(&mut text).unwrap();
        assert!(text.is_empty());
        text.extend_from_slice(b"two\n");
        b.give(&mut text).unwrap();
        let mark = b.taken();
        assert_eq!(mark, 8);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), b.drained()).await;
        assert!(
            waiting.is_err(),
            "not drained while the reader reads nothing"
        );
        assert!(b.written() < mark);
        go.send(true).unwrap();
        go.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), b.drained())
            .await
            .expect("drained once the reader read");
        assert_eq!(b.written(), mark);
        b.finish().unwrap();
        assert_eq!(&got.lock().unwrap()[..], b"one\ntwo\n");
    }

    /// Takes two bytes per write, each when told to.
    struct Drip(mpsc::Receiver<()>);

    impl Write for Drip {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .recv()
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            Ok(buf.len().min(2))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn each_part_a_pipe_takes_counts_as_written() {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            room: tokio::sync::Notify::new(),
        });
        let (go, rx) = mpsc::channel();
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || write_loop(&s, &mut Drip(rx)));
        let b = Behind {
            shared,
            thread: Some(thread),
        };
        b.write(b"abcdef").unwrap();
        go.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while b.written() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(
            b.written(),
            2,
            "the first part counts before the rest is taken"
        );
        go.send(()).unwrap();
        go.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), b.drained())
            .await
            .expect("drained");
        assert_eq!(b.written(), 6);
        b.finish().unwrap();
    }

    #[test]
    fn a_failed_write_is_told_once_and_later_text_is_dropped() {
        let (b, go, got) = behind_gate();
        b.write(b"a\n").unwrap();
        go.send(false).unwrap();
        let mut told = None;
        for _ in 0..1000 {
            if let Err(e) = b.write(b"b\n") {
                told = Some(e);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(told.map(|e| e.kind()), Some(io::ErrorKind::BrokenPipe));
        b.write(b"c\n").unwrap();
        assert!(!b.is_full());
        b.finish().unwrap();
        assert!(got.lock().unwrap().is_empty());
    }
}
