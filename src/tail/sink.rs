//! What the tail engine ships lines into: the producer in the product, a recording fake in tests.

use crate::producer::{Appended, Producer, RecordTooLarge, SourcePos, TopicState};
use crate::wire::records::Header;

/// Where lines go. A record appended can be taken back with [`Sink::undo_last`] until the next append:
/// the reader copies a line straight from a memory map into a batch and takes it back if a page of the
/// map vanished during the copy.
pub trait Sink {
    /// Adds one record to topic `topic`; `token` comes back with its delivery. With exactly-once,
    /// `pos` is where the record ends in its file.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        topic: usize,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[Header<'_>],
        timestamp_ms: i64,
        token: u64,
        pos: Option<&SourcePos<'_>>,
    ) -> Result<Appended, RecordTooLarge>;

    /// [`Sink::append`], with the value cut to fit when the whole record is larger than the largest
    /// batch shipper sends (a line under the line limit whose key and headers take its record past
    /// `--max-message-bytes`): cut by what it was over, its record fits, and up to two bytes more may
    /// (the shorter value can shorten the value's and the record's length varints by one byte each):
    /// the longest that fits is taken, ending on a UTF-8 character's end when the value is text there.
    /// Returns the bytes of `value` in the record (fewer when cut).
    #[allow(clippy::too_many_arguments)]
    fn append_cut_to_fit(
        &mut self,
        topic: usize,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[Header<'_>],
        timestamp_ms: i64,
        token: u64,
        pos: Option<&SourcePos<'_>>,
    ) -> (Result<Appended, RecordTooLarge>, usize) {
        match self.append(topic, key, value, headers, timestamp_ms, token, pos) {
            Err(e) if e.size > e.limit && value.len() >= e.size - e.limit => {
                let fits = value.len() - (e.size - e.limit);
                let mut r = (Err(e), fits);
                for n in (fits..=(fits + 2).min(value.len() - 1)).rev() {
                    // Not inside a UTF-8 character (see [`super::lines::cut`]).
                    let v = super::lines::cut(value, n);
                    r = (
                        self.append(topic, key, v, headers, timestamp_ms, token, pos),
                        v.len(),
                    );
                    if r.0.is_ok() {
                        break;
                    }
                }
                r
            }
            r => (r, value.len()),
        }
    }

    /// Whether a record with this key and these headers and a one-byte value fits alone in the
    /// largest batch: if not, none of its lines can be sent, whatever is cut.
    fn fits_alone(&self, _key: Option<&[u8]>, _headers: &[Header<'_>]) -> bool {
        true
    }

    /// Takes back the record just appended.
    fn undo_last(&mut self, a: Appended);

    /// Whether the buffer is full: stop reading until deliveries free room.
    fn is_full(&self) -> bool;

    /// Whether no more lines for topic `topic` may be appended now: the buffer is full, or the
    /// topic is held back (see [`Sink::holds_back`]).
    fn is_full_for(&self, _topic: usize) -> bool {
        self.is_full()
    }

    /// Whether the files of topic `topic` wait now (it holds its most of the buffer, which leaves
    /// room to other topics: its deliveries may fail for good), until the topic is named ready
    /// again.
    fn holds_back(&mut self, _topic: usize) -> bool {
        false
    }

    /// The topic `name`: its index once known, else pending (looked up in the background).
    fn topic(&mut self, name: &str) -> TopicState;
}

impl Sink for Producer {
    fn append(
        &mut self,
        topic: usize,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[Header<'_>],
        timestamp_ms: i64,
        token: u64,
        pos: Option<&SourcePos<'_>>,
    ) -> Result<Appended, RecordTooLarge> {
        Producer::append_at(
            self,
            topic,
            key,
            Some(value),
            headers,
            timestamp_ms,
            token,
            pos,
        )
    }

    fn fits_alone(&self, key: Option<&[u8]>, headers: &[Header<'_>]) -> bool {
        Producer::fits_alone(self, key, headers)
    }

    fn undo_last(&mut self, a: Appended) {
        Producer::undo_last(self, a)
    }

    fn is_full(&self) -> bool {
        Producer::is_full(self)
    }

    fn is_full_for(&self, topic: usize) -> bool {
        Producer::is_full_for(self, topic)
    }

    fn holds_back(&mut self, topic: usize) -> bool {
        Producer::holds_back(self, topic)
    }

    fn topic(&mut self, name: &str) -> TopicState {
        Producer::topic(self, name)
    }
}
