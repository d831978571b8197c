//! The producer's background work: metadata refreshes for topics whose leaders moved, and new
//! producer ids when the broker lost or fenced ours — each a task of its own, paced by a backoff, so
//! `drive` never blocks on them and stays cancel-safe.

use std::time::Duration;

use tokio::time::Instant;

use super::Producer;
use crate::error::{code, Code, Error};
use crate::tasks::take_finished;

/// What a metadata refresh found.
pub(super) struct Refreshed {
    /// The topics it asked for.
    asked: Vec<usize>,
    /// Whether the cluster answered.
    ok: bool,
    /// Those of them Kafka says do not exist.
    unknown: Vec<usize>,
}

impl Producer {
    /// Takes the results of background tasks that finished (metadata refresh, producer id).
    pub(super) fn poll_background(&mut self) {
        if let Some(r) = take_finished(&mut self.refresh) {
            self.refreshed(r);
        }
        if let Some(r) = take_finished(&mut self.pid_task) {
            self.pid_answered(r);
        }
    }

    /// A metadata refresh is done (`None`: its task died): the topics it asked for take the cached
    /// metadata. Topics found stale while it ran stay stale (it did not ask for them: cleared, they
    /// were sent to their old leaders again). The pace is kept unless the refresh succeeded and
    /// every partition has a leader: after a failed one the cache is the old metadata, which may
    /// name a leader for each partition all the same, and resetting the pace then made a refresh
    /// every 100 ms for as long as the brokers were away.
    ///
    /// A topic the refresh found gone (deleted, and not created again) has that said as the reason
    /// its partitions fail, in place of the Produce answer's bare UNKNOWN_TOPIC_OR_PARTITION.
    pub(super) fn refreshed(&mut self, r: Option<Refreshed>) {
        let Some(Refreshed { asked, ok, unknown }) = r else {
            return;
        };
        let mut all_led = ok;
        for t in asked {
            if unknown.contains(&t) {
                self.gone.insert(t);
                let gone = self.gone_error(t);
                for ((ft, _), e) in self.failing.iter_mut() {
                    if *ft == t && e.code() == Some(Code::UnknownTopicOrPartition) {
                        *e = gone.clone();
                    }
                }
            } else {
                self.gone.remove(&t);
            }
            if !self.stale.remove(&t) {
                continue;
            }
            let name = self.acc.topics[t].name.clone();
            match self.cluster.cached_topic(&name) {
                Some(m) => {
                    all_led &= m.all_led();
                    for q in self.acc.update_meta(t, m) {
                        self.failing.remove(&(t, q));
                    }
                }
                None => all_led = false,
            }
        }
        if all_led {
            self.refresh_backoff.reset();
        }
    }

    /// An InitProducerId came back (`None`: its task died).
    pub(super) fn pid_answered(&mut self, r: Option<Result<(i64, i16), Error>>) {
        match r {
            Some(Ok(pid)) if std::mem::take(&mut self.seq.reset_for_given_up) => {
                self.seq.set_pid(pid);
                crate::log::info(format_args!(
                    "new idempotent producer id {} after a batch was given up that Kafka may hold: the next batches cannot be taken for a resend of it",
                    pid.0
                ));
            }
            Some(Ok(pid)) => {
                let resets = self.seq.resets;
                self.seq.set_pid(pid);
                self.warn_reset(pid, resets + 1);
            }
            Some(Err(e)) => {
                crate::log::debug(format_args!("new producer id not granted: {e}"));
                self.pid_not_before = Some(self.seq.next_reset_at());
                self.note_failure_everywhere(e);
            }
            None => self.pid_not_before = Some(self.seq.next_reset_at()),
        }
    }

    pub(super) fn warn_reset(&mut self, pid: (i64, i16), resets: u64) {
        let now = Instant::now();
        if self
            .last_reset_warning
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            crate::log::debug(format_args!("new idempotent producer id {pid:?}"));
            return;
        }
        self.last_reset_warning = Some(now);
        crate::log::warn(format_args!(
            "the broker lost or fenced this producer's state; new idempotent producer id {} ({resets} so far); batches resent now may be duplicates",
            pid.0
        ));
    }

    /// Records an error against every partition that has something to send (used while no producer id
    /// can be had).
    pub(super) fn note_failure_everywhere(&mut self, e: Error) {
        for (t, topic) in self.acc.topics.iter().enumerate() {
            for (p, q) in topic.parts.iter().enumerate() {
                if !q.ready.is_empty() {
                    self.failing.insert((t, p as i32), e.clone());
                }
            }
        }
    }

    /// Starts an InitProducerId when the broker refused our state and nothing is in flight any more.
    pub(super) fn maybe_reset_pid(&mut self, now: Instant) {
        if !self.seq.reset_wanted() || !self.tasks.is_empty() || self.pid_task.is_some() {
            return;
        }
        let at = *self
            .pid_not_before
            .get_or_insert_with(|| self.seq.next_reset_at());
        if now < at {
            return;
        }
        self.pid_not_before = None;
        let cluster = self.cluster.clone();
        let deadline = cluster.options().deadline();
        self.pid_task = Some(tokio::spawn(async move {
            cluster.init_producer_id_once(deadline).await
        }));
    }

    /// Refreshes the metadata of stale topics, one request at a time, paced by a backoff.
    pub(super) fn maybe_refresh(&mut self, now: Instant) {
        if self.stale.is_empty() || self.refresh.is_some() {
            return;
        }
        let at = *self.refresh_not_before.get_or_insert_with(|| {
            now + self
                .refresh_backoff
                .next_delay()
                .unwrap_or(Duration::from_secs(1))
        });
        if now < at {
            return;
        }
        self.refresh_not_before = None;
        let cluster = self.cluster.clone();
        let asked: Vec<usize> = self.stale.iter().copied().collect();
        let names: Vec<String> = asked
            .iter()
            .map(|&t| self.acc.topics[t].name.clone())
            .collect();
        let deadline = Some(now + cluster.options().connection.request_timeout);
        // A topic deleted under a running producer is created again where the broker creates
        // topics at a producer's write (as the Java producer's metadata requests allow).
        let auto_create = self.cfg.auto_create_topics;
        self.refresh = Some(tokio::spawn(async move {
            let (ok, unknown) = match cluster
                .fetch_metadata(Some(&names), auto_create, deadline)
                .await
            {
                Ok(md) => {
                    let unknown = asked
                        .iter()
                        .zip(&names)
                        .filter(|(_, n)| {
                            md.topics.iter().any(|mt| {
                                mt.name == **n
                                    && code(mt.error) == Some(Code::UnknownTopicOrPartition)
                            })
                        })
                        .map(|(t, _)| *t)
                        .collect();
                    (true, unknown)
                }
                Err(e) => {
                    crate::log::debug(format_args!("metadata refresh failed: {e}"));
                    (false, Vec::new())
                }
            };
            Refreshed { asked, ok, unknown }
        }));
    }

    /// Why a topic the last refresh found gone fails.
    pub(super) fn gone_error(&self, t: usize) -> Error {
        let topic = self.acc.topics[t].name.clone();
        if self.cfg.auto_create_topics {
            Error::UnknownTopic { topic }
        } else {
            Error::NotCreated { topic }
        }
    }

    /// Starts metadata lookups for topics asked for by name that are due.
    pub(super) fn resolve_topics(&mut self, now: Instant) {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.in_flight && p.not_before.is_none_or(|t| now >= t))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            if let Some(p) = self.pending.get_mut(&name) {
                p.in_flight = true;
            }
            let cluster = self.cluster.clone();
            let auto_create = self.cfg.auto_create_topics;
            let deadline = Some(now + cluster.options().connection.request_timeout);
            self.resolving.spawn(async move {
                let lookup = cluster.topic_until(&name, auto_create, deadline);
                let r = crate::backoff::bounded_by("topic lookup", lookup).await;
                (name, r)
            });
        }
    }

    /// A topic lookup is done: the topic is added, or retried later (said once per topic).
    pub(super) fn topic_resolved(
        &mut self,
        name: String,
        r: Result<std::sync::Arc<crate::cluster::TopicMeta>, Error>,
    ) {
        // An internal topic (a template made `__consumer_offsets` of a file's name): its lines
        // wait in their files, said once, as for a topic that cannot be used.
        match r.and_then(|m| m.writable()) {
            Ok(meta) => {
                // A wait that was said gets its end said too (t17 F6: the journal ended with "wait
                // in their files", whether or not they still did).
                if let Some(p) = self.pending.remove(&name).filter(|p| p.error.is_some()) {
                    crate::log::info(format_args!(
                        "topic '{}' can be used now, after {:.0}s; the lines that waited for it are sent",
                        crate::escape::Esc::str(&name),
                        p.since.elapsed().as_secs_f64()
                    ));
                }
                self.acc.add_topic(meta);
                self.newly_ready.push(name);
            }
            Err(e) => {
                let e = match e {
                    Error::UnknownTopic { topic } if !self.cfg.auto_create_topics => {
                        Error::NotCreated { topic }
                    }
                    e => e,
                };
                let Some(p) = self.pending.get_mut(&name) else {
                    return;
                };
                if p.error.is_none() {
                    let until = match e {
                        Error::InternalTopic { .. } => {
                            "(exclude the file, or route it to another topic, and reload)"
                        }
                        _ => "until it can be used",
                    };
                    crate::log::warn(format_args!(
                        "{e}; lines routed to topic '{}' wait in their files {until}",
                        crate::escape::Esc::str(&name)
                    ));
                }
                p.in_flight = false;
                p.not_before = Some(
                    Instant::now() + p.backoff.next_delay().unwrap_or(Duration::from_secs(30)),
                );
                p.error = Some(e);
            }
        }
    }
}
