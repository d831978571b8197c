//! Idempotent produce (KIP-98): one producer id and epoch for the producer, and per partition the
//! sequence number of the next record. A batch is stamped when it is first sent, so sequences follow
//! send order; one batch per partition is in flight, so a batch that will never be written gives its
//! numbers back and the next one continues where the broker expects.
//!
//! When the broker loses or fences our producer state (OUT_OF_ORDER_SEQUENCE_NUMBER,
//! UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH, PRODUCER_FENCED), every batch waits until the requests
//! in flight are back, a new producer id is taken — with a backoff that grows when the broker keeps
//! refusing the new one, so a broken broker cannot make us loop — and sequences start again at 0.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::wire::records::ProducerStamp;

/// The idempotence state of one producer.
#[derive(Debug)]
pub(crate) struct Sequences {
    /// Producer id and epoch, when idempotent and initialised.
    pid: Option<(i64, i16)>,
    /// Next sequence per (topic index, partition).
    next: HashMap<(usize, i32), i32>,
    /// The broker refused our state: take a new id before sending more.
    reset_wanted: bool,
    /// The reset is ours: a batch that may have been written was given up (not the broker's refusal).
    pub(crate) reset_for_given_up: bool,
    /// Paces resets: a new id that is refused at once waits longer before the next one.
    reset_backoff: Backoff,
    last_reset: Option<Instant>,
    /// How many resets so far (for messages).
    pub(crate) resets: u64,
}

impl Sequences {
    pub(crate) fn new() -> Self {
        Sequences {
            pid: None,
            next: HashMap::new(),
            reset_wanted: false,
            reset_for_given_up: false,
            reset_backoff: Backoff::with(Duration::from_millis(100), Duration::from_secs(30), None),
            last_reset: None,
            resets: 0,
        }
    }

    /// Whether batches are stamped.
    pub(crate) fn is_idempotent(&self) -> bool {
        self.pid.is_some()
    }

    /// The producer id and epoch, when idempotent.
    pub(crate) fn pid(&self) -> Option<(i64, i16)> {
        self.pid
    }

    /// Takes a (new) producer id: sequences start at 0 everywhere.
    pub(crate) fn set_pid(&mut self, pid: (i64, i16)) {
        if self.pid.is_some() {
            self.resets += 1;
        }
        self.pid = Some(pid);
        self.next.clear();
        self.reset_wanted = false;
        self.last_reset = Some(Instant::now());
    }

    /// The stamp for a batch of `records` of a partition sent now, advancing its sequence.
    pub(crate) fn stamp(&mut self, topic: usize, partition: i32, records: usize) -> ProducerStamp {
        let Some((id, epoch)) = self.pid else {
            return ProducerStamp::NONE;
        };
        let seq = self.next.entry((topic, partition)).or_insert(0);
        let s = ProducerStamp {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: *seq,
        };
        // Sequences wrap to 0 after i32::MAX, as the broker expects.
        *seq = ((*seq as i64 + records as i64) % (i32::MAX as i64 + 1)) as i32;
        s
    }

    /// A batch stamped with `stamp` will not be written: its numbers are given back.
    pub(crate) fn release(&mut self, topic: usize, partition: i32, stamp: Option<ProducerStamp>) {
        if let (Some(s), Some((id, epoch))) = (stamp, self.pid) {
            if s.producer_id == id && s.producer_epoch == epoch {
                self.next.insert((topic, partition), s.base_sequence);
            }
        }
    }

    /// Whether `stamp` is one of ours now (a batch stamped under an older id must be restamped).
    pub(crate) fn is_current(&self, stamp: ProducerStamp) -> bool {
        self.pid == Some((stamp.producer_id, stamp.producer_epoch))
    }

    /// The broker refused our producer state.
    pub(crate) fn want_reset(&mut self) {
        if self.pid.is_some() {
            self.reset_wanted = true;
            self.reset_for_given_up = false;
        }
    }

    /// A batch that may have been written was given up: its sequence numbers cannot be used again
    /// (the broker would take the next batch for a resend of it), so a new id is taken.
    pub(crate) fn want_reset_after_given_up(&mut self) {
        if self.pid.is_some() {
            self.reset_for_given_up |= !self.reset_wanted;
            self.reset_wanted = true;
        }
    }

    /// Whether a new producer id is wanted.
    pub(crate) fn reset_wanted(&self) -> bool {
        self.reset_wanted
    }

    /// When the next InitProducerId may be sent: at once after a long healthy stretch, later and later
    /// when new ids keep being refused.
    pub(crate) fn next_reset_at(&mut self) -> Instant {
        let now = Instant::now();
        match self.last_reset {
            Some(t) if now.duration_since(t) < Duration::from_secs(60) => {
                now + self
                    .reset_backoff
                    .next_delay()
                    .unwrap_or(Duration::from_secs(30))
            }
            _ => {
                self.reset_backoff.reset();
                now
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_advance_per_partition_and_are_given_back() {
        let mut s = Sequences::new();
        assert_eq!(s.stamp(0, 0, 10), ProducerStamp::NONE);
        s.set_pid((7, 0));
        let a = s.stamp(0, 0, 10);
        let b = s.stamp(0, 0, 5);
        let c = s.stamp(0, 1, 3);
        assert_eq!(
            (a.base_sequence, b.base_sequence, c.base_sequence),
            (0, 10, 0)
        );
        s.release(0, 0, Some(b));
        assert_eq!(s.stamp(0, 0, 1).base_sequence, 10);
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut s = Sequences::new();
        s.set_pid((7, 0));
        s.next.insert((0, 0), i32::MAX - 1);
        s.stamp(0, 0, 3);
        assert_eq!(s.stamp(0, 0, 1).base_sequence, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn resets_in_quick_succession_back_off() {
        let mut s = Sequences::new();
        s.set_pid((1, 0));
        let mut last = Duration::ZERO;
        for i in 0..8 {
            s.want_reset();
            let wait = s.next_reset_at() - Instant::now();
            assert!(wait >= last / 2, "reset {i}: {wait:?} after {last:?}");
            last = wait;
            s.set_pid((2 + i, 0));
        }
        assert!(last >= Duration::from_secs(5), "{last:?}");
    }
}
