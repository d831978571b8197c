//! What happens to a batch when its request comes back: acknowledged, retried (same bytes) after a
//! backoff, split because the broker refused a record in it, failed for good, or expired.

use std::time::Duration;

use tokio::time::Instant;

use super::accumulator::{Batch, Body};
use super::sender::{self, Completed, InFlight, Verdict};
use super::{Delivery, OnPermanent, Producer};
use crate::backoff::Backoff;
use crate::error::{Code, Error};
use crate::wire::records;

impl Producer {
    /// Fails waiting batches whose delivery timeout has passed.
    pub(super) fn expire_waiting(&mut self, now: Instant, out: &mut Vec<Delivery>) {
        let Some(timeout) = self.cfg.delivery_timeout else {
            return;
        };
        for t in 0..self.acc.topics.len() {
            for p in 0..self.acc.topics[t].parts.len() {
                loop {
                    let q = &mut self.acc.topics[t].parts[p];
                    if q.in_flight || q.ready.front().is_none_or(|b| now < b.created + timeout) {
                        break;
                    }
                    let Some(b) = q.ready.pop_front() else { break };
                    let key = (t, p as i32);
                    let last = self
                        .failing
                        .get(&key)
                        .or_else(|| self.last_failed.get(&key))
                        .cloned()
                        .map(|e| match e {
                            // Its own give-up, not wrapped again.
                            Error::Deadline { last, .. } => *last,
                            e => e,
                        })
                        .unwrap_or_else(|| {
                            let topic = &self.acc.topics[t];
                            match topic.meta.leader(p as i32) {
                                -1 => Error::NoLeader {
                                    topic: topic.name.clone(),
                                    partition: p as i32,
                                },
                                leader => Error::NotSent {
                                    topic: topic.name.clone(),
                                    partition: p as i32,
                                    leader,
                                },
                            }
                        });
                    let e = Error::Deadline {
                        ms: now.duration_since(b.created).as_millis() as u64,
                        last: Box::new(last),
                    };
                    self.fail(t, p as i32, b, e, out);
                }
            }
        }
    }

    /// Handles one finished request.
    pub(super) fn complete(&mut self, c: Completed, out: &mut Vec<Delivery>) {
        if let Some(n) = self.requests_in_flight.get_mut(&c.leader) {
            *n = n.saturating_sub(1);
        }
        self.stats.requests += 1;
        self.stats.request_seconds.observe(c.took.as_secs_f64());
        if let Err(e) = &c.result {
            self.stats.request_errors += 1;
            crate::log::debug(format_args!("produce to broker {} failed: {e}", c.leader));
        }
        let topics = &self.acc.topics;
        let (verdicts, throttle_ms, endpoints) = sender::judge(&c, |t| {
            topics.get(t).map_or(String::new(), |t| t.name.clone())
        });
        if throttle_ms > 0 {
            let until = Instant::now() + Duration::from_millis(throttle_ms.min(60_000) as u64);
            self.throttled.insert(c.leader, until);
            crate::log::debug(format_args!(
                "broker {} asks to wait {throttle_ms} ms (quota)",
                c.leader
            ));
        }
        for (id, addr) in endpoints {
            self.cluster.add_broker(id, addr);
        }
        for (f, v) in c.batches.into_iter().zip(verdicts) {
            if let Some(code) = v.error().and_then(Error::code) {
                *self
                    .stats
                    .partition_errors
                    .entry(crate::error::name(code))
                    .or_default() += 1;
            }
            // `sent_at` stays until it is acknowledged: a failure counts from the send.
            self.acc.topics[f.topic].parts[f.partition as usize].in_flight = false;
            self.settle(f, v, out);
        }
    }

    /// Applies the verdict on one batch.
    pub(super) fn settle(&mut self, f: InFlight, v: Verdict, out: &mut Vec<Delivery>) {
        let InFlight {
            topic: t,
            partition: p,
            batch,
        } = f;
        match v {
            Verdict::Acked { base_offset } => {
                let q = &mut self.acc.topics[t].parts[p as usize];
                q.backoff = None;
                q.retry_at = None;
                q.failing_since = None;
                q.sent_at = None;
                self.failing.remove(&(t, p));
                // A failure before a success is no reason for a later give-up.
                self.last_failed.remove(&(t, p));
                self.acc.shrink(t, batch.size);
                self.acc.topics[t].proven = true;
                let resent = batch.maybe_written && !self.seq.is_idempotent();
                let Batch { body, tokens, .. } = batch;
                self.acc.recycle(body);
                out.push(Delivery {
                    topic: t,
                    partition: p,
                    base_offset,
                    tokens,
                    error: None,
                    batch: None,
                    maybe_written: true,
                    resent,
                });
            }
            Verdict::Retry {
                error,
                refresh,
                leader,
            } => {
                if let Some((l, epoch)) = leader {
                    let name = self.acc.topics[t].name.clone();
                    self.cluster.set_leader(&name, p, l, epoch);
                    match self.cluster.cached_topic(&name) {
                        Some(m) => {
                            for q in self.acc.update_meta(t, m) {
                                self.failing.remove(&(t, q));
                            }
                        }
                        // Not in the cache (a refresh found it leaderless or unknown): the hint
                        // had nowhere to go, and without a refresh the batch went back to the old
                        // leader every second for good.
                        None => {
                            self.stale.insert(t);
                        }
                    }
                } else if refresh {
                    self.stale.insert(t);
                }
                self.retry_later(t, p, batch, error, Duration::from_secs(1), out);
            }
            Verdict::Refused(error) if batch.tokens.len() > 1 => {
                self.split(t, p, batch, error, out)
            }
            Verdict::Refused(error) => self.fail(t, p, batch, error, out),
            Verdict::ProducerState(error) if self.cfg.stop_on_state_loss => {
                self.fatal = Some(Error::ProducerStateLost(Box::new(error.clone())));
                self.retry_later(t, p, batch, error, Duration::from_secs(3600), out);
            }
            Verdict::ProducerState(error) => {
                crate::log::debug(format_args!("{error}"));
                self.seq.want_reset();
                self.retry_later(t, p, batch, error, Duration::ZERO, out);
            }
            Verdict::Permanent(error) => match self.cfg.on_permanent {
                OnPermanent::Fail => self.fail(t, p, batch, error, out),
                OnPermanent::Retry => {
                    self.retry_later(t, p, batch, error, Duration::from_secs(10), out)
                }
            },
        }
    }

    /// Puts a batch back at the front of its queue (same bytes) to be retried after a backoff growing
    /// to `max_delay`, unless its delivery timeout has passed.
    pub(super) fn retry_later(
        &mut self,
        t: usize,
        p: i32,
        b: Batch,
        e: Error,
        max_delay: Duration,
        out: &mut Vec<Delivery>,
    ) {
        let now = Instant::now();
        if let Some(timeout) = self.cfg.delivery_timeout {
            if now >= b.created + timeout {
                // An attempt cut short by the deadline says less than the failure before it, this
                // batch's or (a batch that waited its turn behind failing ones) its partition's last.
                let before = self
                    .failing
                    .get(&(t, p))
                    .or_else(|| self.last_failed.get(&(t, p)));
                let last = match before {
                    Some(before) if e.is_timeout() => match before {
                        Error::Deadline { last, .. } => (**last).clone(),
                        before => before.clone(),
                    },
                    _ => e,
                };
                let e = Error::Deadline {
                    ms: now.duration_since(b.created).as_millis() as u64,
                    last: Box::new(last),
                };
                self.fail(t, p, b, e, out);
                return;
            }
        }
        crate::log::debug(format_args!("will retry: {e}"));
        // The Produce answer's UNKNOWN_TOPIC_OR_PARTITION for a topic the last refresh found gone.
        let e = match e.code() {
            Some(Code::UnknownTopicOrPartition) if self.gone.contains(&t) => self.gone_error(t),
            _ => e,
        };
        let mut b = b;
        b.maybe_written |= may_have_sent(&e);
        self.stats.retries += 1;
        self.failing.insert((t, p), e);
        let q = &mut self.acc.topics[t].parts[p as usize];
        // From the attempt's send: a request the broker held failed only at its timeout.
        q.failing_since
            .get_or_insert(q.sent_at.unwrap_or(now).min(now));
        let delay = if max_delay.is_zero() {
            Duration::ZERO
        } else {
            q.backoff
                .get_or_insert_with(|| Backoff::with(Duration::from_millis(100), max_delay, None))
                .next_delay()
                .unwrap_or(max_delay)
        };
        q.retry_at = Some(now + delay);
        q.ready.push_front(b);
    }

    /// Reports a batch failed for good. Its sequence numbers are given back if it was never written;
    /// if it may have been (sent, no answer), they may not be: the broker would take the next batch
    /// stamped with them for a resend of this one, answer success and drop it (t11: 208 lines lost,
    /// reported acknowledged). A new producer id is taken before anything more is sent instead.
    pub(super) fn fail(&mut self, t: usize, p: i32, b: Batch, e: Error, out: &mut Vec<Delivery>) {
        let e = self.leaderless(t, p, e);
        let bytes = b.bytes();
        let maybe_written = !bytes.is_empty() && (b.maybe_written || may_have_sent(&e));
        if maybe_written && b.stamp().is_some_and(|s| self.seq.is_current(s)) {
            if self.cfg.stop_on_state_loss {
                // Exactly-once keeps its producer id: a restart reads back what Kafka holds.
                self.fatal = Some(Error::ProducerStateLost(Box::new(e.clone())));
            }
            self.seq.want_reset_after_given_up();
        } else {
            self.seq.release(t, p, b.stamp());
        }
        self.acc.shrink(t, b.size);
        let q = &mut self.acc.topics[t].parts[p as usize];
        q.backoff = None;
        q.retry_at = None;
        q.failing_since = None;
        self.failing.remove(&(t, p));
        self.last_failed.insert((t, p), e.clone());
        out.push(Delivery {
            topic: t,
            partition: p,
            base_offset: -1,
            tokens: b.tokens,
            error: Some(e),
            batch: (!bytes.is_empty()).then_some(bytes),
            maybe_written,
            resent: false,
        });
    }

    /// `e`, with a broker's "not the leader" for a partition that has no leader now said as that (t21
    /// F7: a partition whose only replica's broker was down was given up as NOT_LEADER_OR_FOLLOWER,
    /// which reads as a leader move).
    fn leaderless(&self, t: usize, p: i32, e: Error) -> Error {
        let topic = &self.acc.topics[t];
        if topic.meta.leader(p) != -1 {
            return e;
        }
        let no_leader = || Error::NoLeader {
            topic: topic.name.clone(),
            partition: p,
        };
        let about_leaders = |e: &Error| {
            matches!(
                e,
                Error::Kafka {
                    code: Code::NotLeaderOrFollower | Code::LeaderNotAvailable,
                    ..
                }
            )
        };
        match e {
            Error::Deadline { ms, last } if about_leaders(&last) => Error::Deadline {
                ms,
                last: Box::new(no_leader()),
            },
            e if about_leaders(&e) => no_leader(),
            e => e,
        }
    }

    /// Splits a batch the broker refused into two, keeping record order; the halves go to the front of
    /// the queue and are stamped when sent.
    pub(super) fn split(&mut self, t: usize, p: i32, b: Batch, e: Error, out: &mut Vec<Delivery>) {
        self.seq.release(t, p, b.stamp());
        let halves = records::split_batch(
            &b.bytes(),
            self.cfg.compression,
            self.cfg.compression_level,
            &mut self.compressor,
        );
        let [(first, n1), (second, _)] = match halves {
            Ok(h) => h,
            Err(error) => {
                let err = Error::Records {
                    topic: self.acc.topics[t].name.clone(),
                    partition: p,
                    error,
                };
                crate::log::error(format_args!("cannot split a refused batch: {err}"));
                self.fail(t, p, b, e, out);
                return;
            }
        };
        crate::log::debug(format_args!(
            "{e}: splitting a batch of {} records",
            b.tokens.len()
        ));
        let mut tokens = b.tokens;
        let rest = tokens.split_off(n1);
        let (s1, s2) = (first.len(), second.len());
        self.acc.grow(t, s1 + s2);
        self.acc.shrink(t, b.size);
        let q = &mut self.acc.topics[t].parts[p as usize];
        for (bytes, tokens, size) in [(second, rest, s2), (first, tokens, s1)] {
            q.ready.push_front(Batch {
                body: Body::Finished(bytes.freeze()),
                tokens,
                created: b.created,
                size,
                maybe_written: b.maybe_written,
                moved: false,
            });
        }
    }
}

/// Whether a Produce that failed with `e` may have been written by the broker all the same: no
/// answer came after it was sent (see [`crate::connection::ConnError::may_have_sent`]).
fn may_have_sent(e: &Error) -> bool {
    match e {
        Error::Conn(c) => c.may_have_sent("Produce"),
        // The leader appended it and its followers did not confirm in time: it may well be
        // committed later (t12: 100 and 132 such lines were in Kafka, reported "not written").
        Error::Kafka {
            code:
                crate::error::Code::RequestTimedOut | crate::error::Code::NotEnoughReplicasAfterAppend,
            ..
        } => true,
        // With acks=all the leader appends first, then waits for its followers; losing the
        // leadership meanwhile answers this, and the records stay if the new leader had fetched
        // them (acks=1 answers it only before appending: taken as written, the batch's sequence
        // numbers are kept from the next batch, which is all the caution costs).
        Error::Kafka {
            code: crate::error::Code::NotLeaderOrFollower,
            ..
        } => true,
        Error::Deadline { last, .. } => may_have_sent(last),
        // An answer that leaves the partition out says nothing of its batch (t49).
        Error::Incomplete { api: "Produce", .. } => true,
        _ => false,
    }
}
