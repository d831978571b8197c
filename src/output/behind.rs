//! Standard output written by a thread of its own, for output that must not hold up the event loop.
//!
//! `produce --print-offsets` printed each acknowledgement from the event loop: with standard output
//! a pipe nobody read for a while (a pager, `| (sleep 60; cat)`), the write blocked the one-thread
//! runtime, no acknowledgement was read meanwhile, and the records waiting to be sent expired with
//! a false "not written". `consume` printed its records the same way, and a group member whose
//! stdout was blocked for longer than the session was fenced. Here the loop queues text and goes on;
//! the caller holds its input while more than [`HIGH_WATER`] bytes wait ([`Behind::room`]), so the
//! queue stays bounded.
//!
//! Text is queued in chunks, each with an optional tag of the caller's (`consume`: the partition
//! and the position its records reach). A chunk's tag is handed back once standard output took all
//! of the chunk ([`Behind::take_written`]), and the chunks not yet started can be dropped by tag
//! ([`Behind::drop_queued`]: partitions a group member gives back).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Bytes waiting to be written past which the caller should stop taking input.
pub const HIGH_WATER: usize = 1 << 20;

/// Untagged text is appended to the last chunk while it is smaller than this.
const CHUNK: usize = 64 * 1024;

/// Emptied buffers kept for reuse.
const SPARE: usize = 4;

/// How often an idle writer looks whether standard output's reader is still there.
const IDLE_LOOK: std::time::Duration = std::time::Duration::from_millis(250);

/// A writer to standard output on a thread of its own (see the module).
pub struct Behind<T: Send + 'static = ()> {
    shared: Arc<Shared<T>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The thread waits on it for text or the end.
    wake: Condvar,
    /// The caller waits on it for room or for the queue to drain.
    room: tokio::sync::Notify,
}

struct Chunk<T> {
    text: Vec<u8>,
    tag: Option<T>,
}

struct State<T> {
    queue: VecDeque<Chunk<T>>,
    /// Bytes in `queue`.
    queued: usize,
    /// Bytes of the chunk being written that standard output has not taken yet.
    writing: usize,
    /// Written, and being flushed: standard output may still hold a last line without its newline
    /// in its buffer (the process must not exit before it is out).
    flushing: bool,
    /// Tags of the chunks written in full, oldest first.
    written: Vec<T>,
    /// Emptied buffers, for [`Behind::give`].
    spare: Vec<Vec<u8>>,
    /// Chunks the thread started writing, and finished (written or failed).
    started: u64,
    finished: u64,
    /// No more text comes: the thread writes what is queued and ends.
    closed: bool,
    /// The write that failed; nothing more is written after it.
    error: Option<io::Error>,
    /// The error was handed to the caller already.
    told: bool,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State {
            queue: VecDeque::new(),
            queued: 0,
            writing: 0,
            flushing: false,
            written: Vec::new(),
            spare: Vec::new(),
            started: 0,
            finished: 0,
            closed: false,
            error: None,
            told: false,
        }
    }
}

impl<T> Shared<T> {
    fn new() -> Shared<T> {
        Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            room: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic on the writer thread leaves the state as it was: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Send + 'static> Behind<T> {
    /// Starts the writer thread. While it has nothing to write, it looks every [`IDLE_LOOK`]
    /// whether standard output is a pipe or socket whose reader is gone (`consume t | head -2` of
    /// a quiet topic: nothing more is written, so no write would ever fail), and fails as a write
    /// to a closed pipe would.
    pub fn stdout() -> io::Result<Behind<T>> {
        Behind::start_watched(super::stdout, || super::reader_gone(1))
    }

    /// Starts the thread, writing to what `open` gives it there.
    #[cfg(test)]
    pub(crate) fn start<W: Write>(
        open: impl FnOnce() -> W + Send + 'static,
    ) -> io::Result<Behind<T>> {
        Behind::start_watched(open, || false)
    }

    /// Starts the thread, writing to what `open` gives it there; `gone` says, while the thread
    /// is idle, that the reader went away.
    fn start_watched<W: Write>(
        open: impl FnOnce() -> W + Send + 'static,
        gone: impl Fn() -> bool + Send + 'static,
    ) -> io::Result<Behind<T>> {
        let shared = Arc::new(Shared::new());
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || write_loop(&s, &mut open(), gone))?;
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
        if st.error.is_none() && !text.is_empty() {
            match st.queue.back_mut() {
                Some(last) if last.tag.is_none() && last.text.len() < CHUNK => {
                    last.text.extend_from_slice(text)
                }
                _ => st.queue.push_back(Chunk {
                    text: text.to_vec(),
                    tag: None,
                }),
            }
            st.queued += text.len();
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Queues the text in `text` as one chunk tagged `tag`, leaving `text` an empty buffer: nothing
    /// is copied. The tag comes back from [`Behind::take_written`] once the chunk is written (also
    /// when `text` is empty, once everything before it is).
    pub fn give(&self, text: &mut Vec<u8>, tag: T) -> io::Result<()> {
        let mut st = self.shared.lock();
        if let Some(e) = take_error(&mut st) {
            text.clear();
            return Err(e);
        }
        if st.error.is_some() {
            text.clear();
            return Ok(());
        }
        // A new buffer starts at its size (grown from empty, it was copied over and over: a third
        // more CPU for `consume > /dev/null`).
        let empty = st
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(2 * CHUNK));
        let chunk = std::mem::replace(text, empty);
        st.queued += chunk.len();
        st.queue.push_back(Chunk {
            text: chunk,
            tag: Some(tag),
        });
        self.shared.wake.notify_one();
        Ok(())
    }

    /// The tags of the chunks written in full since the last call, oldest first.
    pub fn take_written(&self) -> Vec<T> {
        std::mem::take(&mut self.shared.lock().written)
    }

    /// Drops the queued chunks not started yet whose tag `drop` picks; their tags.
    pub fn drop_queued(&self, mut drop: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut st = self.shared.lock();
        let mut gone = Vec::new();
        let mut bytes = 0;
        for c in std::mem::take(&mut st.queue) {
            match c.tag {
                Some(tag) if drop(&tag) => {
                    bytes += c.text.len();
                    gone.push(tag);
                }
                tag => st.queue.push_back(Chunk { text: c.text, tag }),
            }
        }
        st.queued -= bytes;
        drop_lock_and_notify(&self.shared, st);
        gone
    }

    /// Waits until the chunk being written now, if any, is finished (or writing failed).
    pub async fn started_written(&self) {
        let started = self.shared.lock().started;
        self.wait_for(|st| st.finished >= started).await
    }

    /// The write error not returned yet, if writing failed.
    pub fn check(&self) -> io::Result<()> {
        match take_error(&mut self.shared.lock()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Bytes queued or being written that standard output has not taken yet.
    pub fn unwritten(&self) -> usize {
        let st = self.shared.lock();
        st.queued + st.writing
    }

    /// Whether more than [`HIGH_WATER`] bytes wait to be written.
    pub fn is_full(&self) -> bool {
        let st = self.shared.lock();
        st.error.is_none() && st.queued > HIGH_WATER
    }

    /// Waits until the queue is below [`HIGH_WATER`] (or writing failed).
    pub async fn room(&self) {
        self.wait_for(|st| st.queued <= HIGH_WATER).await
    }

    /// Waits until at most `bytes` are queued (or writing failed).
    pub async fn below(&self, bytes: usize) {
        self.wait_for(|st| st.queued <= bytes).await
    }

    /// Whether more than `bytes` are queued (and writing has not failed).
    pub fn above(&self, bytes: usize) -> bool {
        let st = self.shared.lock();
        st.error.is_none() && st.queued > bytes
    }

    /// Waits until writing failed (a write, or the reader found gone while idle).
    pub async fn failed(&self) {
        self.wait_for(|_| false).await
    }

    /// Waits until everything queued is written, or writing failed.
    pub async fn drained(&self) {
        self.wait_for(|st| st.queued == 0 && st.writing == 0 && !st.flushing)
            .await
    }

    async fn wait_for(&self, done: impl Fn(&State<T>) -> bool) {
        loop {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            // Registered before the look, so that a wake-up between the two is not missed.
            notified.as_mut().enable();
            {
                let st = self.shared.lock();
                if st.error.is_some() || done(&st) {
                    return;
                }
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

impl<T: Send + 'static> Drop for Behind<T> {
    /// Not finished (given up): the thread writes what is queued and ends; nobody waits for it.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

fn drop_lock_and_notify<T>(shared: &Shared<T>, st: MutexGuard<'_, State<T>>) {
    drop(st);
    shared.room.notify_waiters();
}

fn take_error<T>(st: &mut State<T>) -> Option<io::Error> {
    if st.told {
        return None;
    }
    let e = st.error.as_ref()?;
    st.told = true;
    Some(io::Error::new(e.kind(), e.to_string()))
}

fn write_loop<T>(shared: &Shared<T>, out: &mut impl Write, gone: impl Fn() -> bool) {
    loop {
        let chunk = {
            let mut st = shared.lock();
            while st.queue.is_empty() && !st.closed {
                let (next, waited) = shared
                    .wake
                    .wait_timeout(st, IDLE_LOOK)
                    .unwrap_or_else(|p| p.into_inner());
                st = next;
                if waited.timed_out() && st.queue.is_empty() && !st.closed && gone() {
                    drop(st);
                    let e = io::Error::new(io::ErrorKind::BrokenPipe, "its reader is gone");
                    fail(shared, super::on_stdout(e));
                    return;
                }
            }
            let Some(chunk) = st.queue.pop_front() else {
                return;
            };
            st.queued -= chunk.text.len();
            st.writing = chunk.text.len();
            st.started += 1;
            chunk
        };
        shared.room.notify_waiters();
        let result = write_counted(shared, out, &chunk.text).and_then(|()| match &chunk.tag {
            // Tagged text counts as written once standard output has it.
            Some(_) => out.flush(),
            None => Ok(()),
        });
        let mut st = shared.lock();
        st.writing = 0;
        st.finished += 1;
        match result {
            Ok(()) => {
                st.written.extend(chunk.tag);
                let mut text = chunk.text;
                if st.spare.len() < SPARE && text.capacity() <= 4 * CHUNK {
                    text.clear();
                    st.spare.push(text);
                }
                // Untagged text waits for no flush of its own: flushed when the queue is empty.
                let idle = st.queue.is_empty();
                st.flushing = idle;
                drop_lock_and_notify(shared, st);
                if idle {
                    if let Err(e) = out.flush() {
                        fail(shared, e);
                        return;
                    }
                    let mut st = shared.lock();
                    st.flushing = false;
                    drop_lock_and_notify(shared, st);
                }
            }
            Err(e) => {
                drop(st);
                fail(shared, e);
                return;
            }
        }
    }
}

/// Writing failed: nothing more is written.
fn fail<T>(shared: &Shared<T>, e: io::Error) {
    let mut st = shared.lock();
    st.error = Some(e);
    st.queue.clear();
    st.queued = 0;
    st.writing = 0;
    st.flushing = false;
    drop_lock_and_notify(shared, st);
}

/// Writes all of `batch`, counting down the bytes of it standard output has not taken.
fn write_counted<T>(shared: &Shared<T>, out: &mut impl Write, mut batch: &[u8]) -> io::Result<()> {
    while !batch.is_empty() {
        match out.write(batch) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                batch = &batch[n..];
                shared.lock().writing = batch.len();
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
    use std::time::Duration;

    /// A writer that blocks until told to go on, then fails or takes up to `step` bytes.
    struct Gate {
        go: mpsc::Receiver<bool>,
        got: Arc<Mutex<Vec<u8>>>,
        step: usize,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self.go.recv() {
                Ok(true) => {
                    let n = buf.len().min(self.step);
                    self.got.lock().unwrap().extend_from_slice(&buf[..n]);
                    Ok(n)
                }
                _ => Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed")),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn behind_gate<T: Send + 'static>(
        step: usize,
    ) -> (Behind<T>, mpsc::Sender<bool>, Arc<Mutex<Vec<u8>>>) {
        let (tx, rx) = mpsc::channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let gate = Gate {
            go: rx,
            got: Arc::clone(&got),
            step,
        };
        (Behind::start(move || gate).unwrap(), tx, got)
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Standard output as Rust has it: a last line without its newline stays in the buffer until a
    /// flush, and this flush takes its time.
    struct Buffered {
        buf: Vec<u8>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Buffered {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.buf.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            std::thread::sleep(Duration::from_millis(200));
            self.out.lock().unwrap().append(&mut self.buf);
            Ok(())
        }
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_flush() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = Arc::clone(&out);
        let b: Behind<()> = Behind::start(move || Buffered {
            buf: Vec::new(),
            out: o,
        })
        .unwrap();
        // `-c 1 -f '%s'`: the process exits once drained; the record had no newline after it.
        b.write(b"last record").unwrap();
        b.drained().await;
        assert_eq!(*out.lock().unwrap(), b"last record");
    }

    #[tokio::test]
    async fn a_blocked_reader_fills_the_queue_and_room_comes_when_it_reads() {
        let (b, go, got) = behind_gate::<()>(usize::MAX);
        b.write(b"first\n").unwrap();
        wait_until("the thread takes the first chunk", || {
            b.shared.lock().queue.is_empty()
        });
        // The thread is blocked writing "first"; the queue grows past the mark without blocking.
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(HIGH_WATER / chunk.len() + 1) {
            b.write(&chunk).unwrap();
        }
        assert!(b.is_full());
        let waiting = tokio::time::timeout(Duration::from_millis(50), b.room()).await;
        assert!(waiting.is_err(), "no room while the reader reads nothing");
        // The reader takes everything: room.
        for _ in 0..100 {
            go.send(true).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), b.room())
            .await
            .expect("room once the reader read");
        b.finish().unwrap();
        assert_eq!(
            got.lock().unwrap().len(),
            6 + chunk.len() * (HIGH_WATER / chunk.len() + 1)
        );
    }

    #[tokio::test]
    async fn a_chunk_tag_comes_back_only_once_the_reader_took_all_of_it() {
        let (b, go, got) = behind_gate(2);
        let mut text = b"one\n".to_vec();
        b.give(&mut text, "one").unwrap();
        assert!(text.is_empty());
        text.extend_from_slice(b"two\n");
        b.give(&mut text, "two").unwrap();
        assert_eq!(b.unwritten(), 8);
        let waiting = tokio::time::timeout(Duration::from_millis(50), b.drained()).await;
        assert!(
            waiting.is_err(),
            "not drained while the reader reads nothing"
        );
        // Two bytes of "one\n" taken: counted, but the chunk is not written yet.
        go.send(true).unwrap();
        wait_until("two bytes taken", || b.unwritten() == 6);
        assert!(b.take_written().is_empty());
        go.send(true).unwrap();
        wait_until("the first chunk taken", || b.unwritten() == 4);
        assert_eq!(b.take_written(), vec!["one"]);
        go.send(true).unwrap();
        go.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), b.drained())
            .await
            .expect("drained once the reader read");
        assert_eq!(b.take_written(), vec!["two"]);
        b.finish().unwrap();
        assert_eq!(&got.lock().unwrap()[..], b"one\ntwo\n");
    }

    #[tokio::test]
    async fn chunks_not_started_are_dropped_by_tag_and_the_one_being_written_is_not() {
        let (b, go, got) = behind_gate(usize::MAX);
        for (text, part) in [("a0\n", 0), ("b1\n", 1), ("c0\n", 0), ("d1\n", 1)] {
            b.give(&mut text.as_bytes().to_vec(), part).unwrap();
        }
        wait_until("the thread takes the first chunk", || {
            b.shared.lock().queue.len() == 3
        });
        // "a0" is being written; "c0" waits: only it goes.
        assert_eq!(b.drop_queued(|p| *p == 0), vec![0]);
        assert_eq!(b.unwritten(), 9);
        for _ in 0..3 {
            go.send(true).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), b.drained())
            .await
            .expect("drained");
        assert_eq!(b.take_written(), vec![0, 1, 1]);
        b.finish().unwrap();
        assert_eq!(&got.lock().unwrap()[..], b"a0\nb1\nd1\n");
    }

    #[tokio::test]
    async fn an_idle_writer_fails_as_a_closed_pipe_once_its_reader_is_gone() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let gone = Arc::new(AtomicBool::new(false));
        let g = Arc::clone(&gone);
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = Arc::clone(&out);
        let b: Behind<()> = Behind::start_watched(
            move || Buffered {
                buf: Vec::new(),
                out: o,
            },
            move || g.load(Ordering::SeqCst),
        )
        .unwrap();
        b.write(b"one\n").unwrap();
        b.drained().await;
        // Idle, its reader there: no failure, however long it waits.
        let waiting = tokio::time::timeout(3 * IDLE_LOOK, b.failed()).await;
        assert!(waiting.is_err(), "failed while its reader is there");
        b.check().unwrap();
        gone.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(10), b.failed())
            .await
            .expect("failed once the reader is gone");
        let e = b.check().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(e.to_string().contains("reader is gone"), "{e}");
        assert_eq!(*out.lock().unwrap(), b"one\n");
    }

    #[test]
    fn a_failed_write_is_told_once_and_later_text_is_dropped() {
        let (b, go, got) = behind_gate::<()>(usize::MAX);
        b.write(b"a\n").unwrap();
        go.send(false).unwrap();
        let mut told = None;
        for _ in 0..1000 {
            if let Err(e) = b.write(b"b\n") {
                told = Some(e);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(told.map(|e| e.kind()), Some(io::ErrorKind::BrokenPipe));
        b.write(b"c\n").unwrap();
        assert!(!b.is_full());
        b.finish().unwrap();
        assert!(got.lock().unwrap().is_empty());
    }
}
