//! One live read per topic, shared by every view of it: a hub follows the end of each partition with
//! one Fetch per leader and hands each response (still encoded, reference-counted) to every
//! subscriber. A subscriber whose queue is full — a browser that does not keep up — is dropped and
//! told so, so the server holds a bounded amount whatever the number of tabs. A hub with no
//! subscribers left stops.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::cluster::{Cluster, TopicMeta};
use crate::consumer::{Consumer, FetchConfig, Fetched, StartOffset};

/// Responses a subscriber may have queued before it counts as too slow.
const QUEUE: usize = 64;

/// Record bytes a subscriber may have queued before it counts as too slow: each stuck view pins
/// the responses it has not taken, and views stuck at different places pin different ones (t25 F2:
/// 30 views that did not read held 2.1-2.5 GB through a 60 MB burst, 64 responses each).
pub const QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// Fetch sizes for live reads: small responses, often, so a queue of them stays small. The page shows
/// what `consume` shows by default: committed records (read_committed, as kcat).
pub fn live_fetch() -> FetchConfig {
    FetchConfig {
        read_committed: true,
        max_wait_ms: 100,
        max_bytes: 4 * 1024 * 1024,
        partition_max_bytes: 1024 * 1024,
        ..FetchConfig::default()
    }
}

/// A subscription to a topic's hub.
pub struct Subscription {
    /// The next offset the hub will hand out, per partition, as of subscribing.
    pub next: BTreeMap<i32, i64>,
    /// The responses, from then on.
    pub rx: mpsc::Receiver<Arc<Fetched>>,
    /// Set when the hub dropped this subscriber for being too slow.
    pub dropped: Arc<AtomicBool>,
    /// Record bytes sent and not yet taken: take a response's off with [`Subscription::took`].
    pub queued: Arc<AtomicUsize>,
}

impl Subscription {
    /// Notes a response taken from `rx`.
    pub fn took(&self, f: &Fetched) {
        self.queued.fetch_sub(f.records.len(), Ordering::Relaxed);
    }
}

struct Subscriber {
    tx: mpsc::Sender<Arc<Fetched>>,
    dropped: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
}

type Ask = oneshot::Sender<Subscription>;

/// The hubs of a server, by topic.
pub struct Hubs {
    cluster: Arc<Cluster>,
    /// Each topic's hub, with the number of partitions it reads.
    hubs: Mutex<HashMap<String, (mpsc::Sender<Ask>, usize)>>,
}

impl Hubs {
    /// No hubs yet; they start on first use.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Hubs {
            cluster,
            hubs: Mutex::new(HashMap::new()),
        }
    }

    /// Subscribes to `topic`'s live records (`meta`: its metadata as of now), starting its hub if
    /// none runs.
    pub async fn subscribe(
        &self,
        topic: &str,
        meta: &Arc<TopicMeta>,
    ) -> crate::error::Result<Subscription> {
        for _ in 0..2 {
            let tx = self.hub(topic, meta).await?;
            let (reply, rx) = oneshot::channel();
            if tx.send(reply).await.is_ok() {
                if let Ok(s) = rx.await {
                    return Ok(s);
                }
            }
            // The hub had just stopped (its last subscriber left): start another.
            self.hubs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(topic);
        }
        Err(crate::error::Error::Incomplete {
            api: "Fetch",
            target: crate::error::Target::Topic(topic.into()),
            what: "the live reader stopped",
        })
    }

    /// The topic's hub; a new one when the topic has more partitions than the running one reads
    /// (partitions added: the running one goes on for its subscribers until they leave).
    async fn hub(
        &self,
        topic: &str,
        meta: &Arc<TopicMeta>,
    ) -> crate::error::Result<mpsc::Sender<Ask>> {
        let count = meta.partitions.len();
        if let Some((tx, _)) = self
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .filter(|(tx, n)| !tx.is_closed() && *n >= count)
        {
            return Ok(tx.clone());
        }
        let live = FetchConfig {
            read_on: true,
            ..live_fetch()
        };
        let mut consumer = Consumer::new(self.cluster.clone(), live);
        consumer.assign(meta.clone(), &[], StartOffset::End).await?;
        let (tx, rx) = mpsc::channel(8);
        crate::log::debug(format_args!(
            "web: live read of '{}' started",
            crate::escape::Esc::str(topic)
        ));
        tokio::spawn(run(consumer, rx, topic.to_string()));
        self.hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string(), (tx.clone(), count));
        Ok(tx)
    }
}

/// The hub's loop: take new subscribers, fetch, hand out; stop when none is left. A fetch is never
/// interrupted (it may hold records already taken from the partitions): subscribers are taken
/// between fetches, which the broker answers within 100 ms.
async fn run(mut consumer: Consumer, mut asks: mpsc::Receiver<Ask>, topic: String) {
    let mut subs: Vec<Subscriber> = Vec::new();
    loop {
        if subs.is_empty() {
            match asks.recv().await {
                Some(reply) => add(&consumer, &mut subs, reply),
                None => return,
            }
        }
        while let Ok(reply) = asks.try_recv() {
            add(&consumer, &mut subs, reply);
        }
        match consumer.poll().await {
            Ok(fetched) => {
                for f in fetched.into_iter().filter(|f| !f.records.is_empty()) {
                    let f = Arc::new(f);
                    let n = f.records.len();
                    subs.retain(|s| {
                        // One response alone is always taken (a batch larger than the budget).
                        let held = s.queued.load(Ordering::Relaxed);
                        if held > 0 && held + n > QUEUE_BYTES {
                            s.dropped.store(true, Ordering::Relaxed);
                            return false;
                        }
                        match s.tx.try_send(f.clone()) {
                            Ok(()) => {
                                s.queued.fetch_add(n, Ordering::Relaxed);
                                true
                            }
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                s.dropped.store(true, Ordering::Relaxed);
                                false
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => false,
                        }
                    });
                }
                subs.retain(|s| !s.tx.is_closed());
                if subs.is_empty() {
                    return;
                }
            }
            Err(e) => {
                crate::log::warn(format_args!(
                    "web: live read of '{}' failed: {e}",
                    crate::escape::Esc::str(&topic)
                ));
                return; // subscribers see their queue end; a new view starts a new hub
            }
        }
    }
}

/// Adds a subscriber, telling it where the hub stands.
fn add(consumer: &Consumer, subs: &mut Vec<Subscriber>, reply: Ask) {
    let next = consumer
        .positions()
        .into_iter()
        .map(|(_, p, o)| (p, o))
        .collect();
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicUsize::new(0));
    let s = Subscription {
        next,
        rx,
        dropped: dropped.clone(),
        queued: queued.clone(),
    };
    if reply.send(s).is_ok() {
        subs.push(Subscriber {
            tx,
            dropped,
            queued,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClientOptions;
    use crate::testkit::FakeBroker;

    /// A view that does not take what it is sent is dropped once it holds [`QUEUE_BYTES`] of
    /// records, not 64 responses of any size (t25 F2: 2.1-2.5 GB for 30 such views).
    #[tokio::test(start_paused = true)]
    async fn a_view_that_does_not_read_is_dropped_at_its_byte_budget() {
        let b = FakeBroker::new(1);
        b.create_topic("t", 1);
        let o = ClientOptions::new(&b.bootstrap());
        let c = Arc::new(Cluster::with_transport(o, Arc::new(b.transport())));
        let meta = c.topic("t", false).await.unwrap();
        let hubs = Hubs::new(c);
        let stuck = hubs.subscribe("t", &meta).await.unwrap();
        let value = vec![b'x'; 512 * 1024];
        for _ in 0..40 {
            b.append("t", 0, &[&value]);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            if stuck.dropped.load(Ordering::Relaxed) {
                break;
            }
        }
        assert!(stuck.dropped.load(Ordering::Relaxed), "not dropped");
        let held = stuck.queued.load(Ordering::Relaxed);
        assert!(held <= QUEUE_BYTES, "{held} bytes held");
    }
}
