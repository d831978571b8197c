//! Sending: one Produce request per leader carrying the front batch of every ready partition led by it,
//! sent by a task of its own (connecting first if needed), and the verdict on each batch when the
//! response comes back.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::VersionRange;
use tokio::time::Instant;

use super::accumulator::Batch;
use crate::cluster::Cluster;
use crate::error::{classify, code, Class, Error, Target};
use crate::wire::produce::TopicBatches;

/// Produce versions we speak: flexible (9+, Kafka 2.4+) up to 12, the last that names topics.
pub(crate) const PRODUCE_VERSIONS: VersionRange = VersionRange { min: 9, max: 12 };

/// One batch riding in a request.
pub(crate) struct InFlight {
    pub(crate) topic: usize,
    pub(crate) partition: i32,
    pub(crate) batch: Batch,
}

/// A request that came back (or failed): its leader, its batches, and the response.
pub(crate) struct Completed {
    pub(crate) leader: i32,
    pub(crate) batches: Vec<InFlight>,
    pub(crate) result: Result<Option<ProduceResponse>, Error>,
    /// From the start of the send (connecting included) to the response.
    pub(crate) took: std::time::Duration,
}

/// What the broker said about one batch.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Written (or written before: DUPLICATE_SEQUENCE_NUMBER) at this base offset (-1 with acks=0).
    Acked { base_offset: i64 },
    /// Try again later; `refresh` metadata first. A leader hint (KIP-951) spares the refresh.
    Retry {
        error: Error,
        refresh: bool,
        leader: Option<(i32, i32)>,
    },
    /// The broker refuses these records themselves: split the batch, or skip a single record.
    Refused(Error),
    /// Our idempotent producer state is gone: new producer id, then resend.
    ProducerState(Error),
    /// Nothing retrying soon will fix.
    Permanent(Error),
}

impl Verdict {
    /// The error of a batch not acknowledged.
    pub(crate) fn error(&self) -> Option<&Error> {
        match self {
            Verdict::Acked { .. } => None,
            Verdict::Retry { error, .. }
            | Verdict::Refused(error)
            | Verdict::ProducerState(error)
            | Verdict::Permanent(error) => Some(error),
        }
    }

    fn of(error: Error) -> Verdict {
        match error.class() {
            Class::Retriable { refresh } => Verdict::Retry {
                error,
                refresh,
                leader: None,
            },
            Class::RecordRefused => Verdict::Refused(error),
            Class::ProducerState => Verdict::ProducerState(error),
            Class::Permanent => Verdict::Permanent(error),
        }
    }
}

/// The parameters of one request.
pub(crate) struct Send {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) leader: i32,
    pub(crate) acks: i16,
    pub(crate) ack_timeout_ms: i32,
    /// The latest moment the request may still be waited for.
    pub(crate) deadline: Option<Instant>,
    pub(crate) topic_names: Vec<(usize, String)>,
}

/// Builds the request for `batches` (finished) and sends it; the future resolves when the response is
/// in or the request failed.
pub(crate) async fn send(s: Send, batches: Vec<InFlight>) -> Completed {
    let started = Instant::now();
    let result = async {
        let conn = s.cluster.broker(s.leader, s.deadline).await?;
        let version = conn.version::<ProduceRequest>(PRODUCE_VERSIONS)?;
        let topics = topics(&s, &batches);
        let until = conn.request_deadline(s.deadline);
        let pending = conn
            .send_produce(version, (s.acks, s.ack_timeout_ms), &topics, until)
            .await?;
        if s.acks == 0 {
            return Ok(None);
        }
        let frame = conn.wait(pending, until).await?;
        Ok(Some(conn.decode::<ProduceRequest>(frame, version)?))
    }
    .await;
    Completed {
        leader: s.leader,
        batches,
        result,
        took: started.elapsed(),
    }
}

/// The request's topics, each with its partitions' batches (shared, not copied).
fn topics<'a>(s: &'a Send, batches: &[InFlight]) -> Vec<TopicBatches<'a>> {
    let mut by_topic: Vec<(usize, TopicBatches<'a>)> = Vec::new();
    for b in batches {
        let entry = (b.partition, b.batch.bytes());
        match by_topic.iter_mut().find(|(t, _)| *t == b.topic) {
            Some((_, t)) => t.batches.push(entry),
            None => {
                let name = s
                    .topic_names
                    .iter()
                    .find(|(i, _)| *i == b.topic)
                    .map_or("", |(_, n)| n.as_str());
                by_topic.push((
                    b.topic,
                    TopicBatches {
                        name,
                        batches: vec![entry],
                    },
                ));
            }
        }
    }
    by_topic.into_iter().map(|(_, t)| t).collect()
}

/// The verdict on every batch of a completed request, in the order of `c.batches`; also the throttle
/// the broker asked for and the broker endpoints it named.
pub(crate) fn judge(
    c: &Completed,
    topic_name: impl Fn(usize) -> String,
) -> (Vec<Verdict>, i32, Vec<(i32, String)>) {
    let resp = match &c.result {
        Err(e) => {
            return (
                c.batches.iter().map(|_| Verdict::of(e.clone())).collect(),
                0,
                Vec::new(),
            )
        }
        Ok(None) => {
            let v = c
                .batches
                .iter()
                .map(|_| Verdict::Acked { base_offset: -1 })
                .collect();
            return (v, 0, Vec::new());
        }
        Ok(Some(r)) => r,
    };
    type Answer = (i16, i64, i32, i32);
    let mut answers: HashMap<(&str, i32), Answer> = HashMap::new();
    for t in &resp.responses {
        for p in &t.partition_responses {
            answers.insert(
                (t.name.0.as_str(), p.index),
                (
                    p.error_code,
                    p.base_offset,
                    p.current_leader.leader_id.0,
                    p.current_leader.leader_epoch,
                ),
            );
        }
    }
    let endpoints = resp
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, format!("{}:{}", e.host, e.port)))
        .collect();
    let verdicts = c
        .batches
        .iter()
        .map(|b| {
            let name = topic_name(b.topic);
            let target = Target::Partition(name.clone(), b.partition);
            let Some(&(err, base_offset, hint, epoch)) = answers.get(&(name.as_str(), b.partition))
            else {
                return Verdict::Permanent(Error::Incomplete {
                    api: "Produce",
                    target,
                    what: "no answer for this partition",
                });
            };
            let Some(code) = code(err) else {
                return Verdict::Acked { base_offset };
            };
            if code == crate::error::Code::DuplicateSequenceNumber {
                // The broker already has this batch: an earlier try was written.
                return Verdict::Acked { base_offset };
            }
            let error = Error::Kafka {
                api: "Produce",
                target,
                code,
            };
            match classify(code) {
                Class::Retriable { refresh } => Verdict::Retry {
                    error,
                    refresh,
                    leader: (hint >= 0).then_some((hint, epoch)),
                },
                _ => Verdict::of(error),
            }
        })
        .collect();
    (verdicts, resp.throttle_time_ms, endpoints)
}
