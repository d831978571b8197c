//! The cluster as the client sees it: bootstrap, a metadata cache with a generation number (so several
//! failures seen together refresh once), brokers by node id, partition leaders, and one reused connection
//! per broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    InitProducerIdRequest, MetadataRequest, MetadataResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::backoff::Backoff;
use crate::connection::{Connection, ConnectionOptions};
use crate::error::{Error, Result};

/// Metadata versions we speak: the flexible ones (9+, Kafka 2.4+); 12 on Kafka 3.x and 4.x.
const METADATA_VERSIONS: VersionRange = VersionRange { min: 9, max: 12 };

/// Where the cluster is and how patient to be with it.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` addresses to bootstrap from.
    pub bootstrap: Vec<String>,
    /// Per-connection settings.
    pub connection: ConnectionOptions,
    /// How long to keep retrying an unreachable cluster or a partition without leader; `None` = forever.
    pub retry_limit: Option<Duration>,
}

impl ClientOptions {
    /// Options for a comma-separated broker list.
    pub fn new(brokers: &str) -> Self {
        ClientOptions {
            bootstrap: brokers
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            connection: ConnectionOptions::default(),
            retry_limit: Some(Duration::from_secs(30)),
        }
    }
}

/// A broker as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMeta {
    /// Node id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, if configured.
    pub rack: Option<String>,
}

impl BrokerMeta {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One partition's leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    /// Partition index.
    pub id: i32,
    /// Leader node id, -1 if none.
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Offline replica node ids.
    pub offline: Vec<i32>,
    /// Error code for this partition.
    pub error: i16,
}

/// One topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
    /// Topic id (all zero when the broker sent none).
    pub id: [u8; 16],
    /// Error code for the topic.
    pub error: i16,
    /// Internal topic (e.g. `__consumer_offsets`).
    pub internal: bool,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionMeta>,
}

/// The answer to one Metadata request.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Controller node id.
    pub controller: i32,
    /// Brokers, sorted by id.
    pub brokers: Vec<BrokerMeta>,
    /// Topics in the broker's order.
    pub topics: Vec<TopicMeta>,
}

#[derive(Default)]
struct State {
    brokers: BTreeMap<i32, String>,
    conns: HashMap<String, Arc<Connection>>,
    topics: HashMap<String, Arc<TopicMeta>>,
    generation: u64,
}

/// The client's view of a Kafka cluster.
pub struct Cluster {
    opts: ClientOptions,
    state: Mutex<State>,
    /// Serialises connection set-up so that concurrent callers share one connection per broker.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.opts.bootstrap)
            .finish()
    }
}

impl Cluster {
    /// A cluster reached through `opts.bootstrap`; nothing is connected yet.
    pub fn new(opts: ClientOptions) -> Self {
        Cluster {
            opts,
            state: Mutex::new(State::default()),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The options this cluster was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection to `addr`, connecting if there is none (or it was closed).
    pub async fn connection(&self, addr: &str) -> Result<Arc<Connection>> {
        if let Some(c) = self.lock().conns.get(addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let _g = self.connecting.lock().await;
        if let Some(c) = self.lock().conns.get(addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(Connection::connect(addr, &self.opts.connection).await?);
        self.lock().conns.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The connection to broker `id`, as known from metadata.
    pub async fn broker(&self, id: i32) -> Result<Arc<Connection>> {
        let addr = self.lock().brokers.get(&id).cloned();
        match addr {
            Some(a) => self.connection(&a).await,
            None => Err(Error::NoBroker(format!(
                "broker id {id} is not in the metadata"
            ))),
        }
    }

    /// Records a broker address learnt outside Metadata (e.g. a Produce response's leader hint).
    pub fn add_broker(&self, id: i32, addr: String) {
        self.lock().brokers.insert(id, addr);
    }

    /// Any reachable broker: known brokers first (in random order), then the bootstrap list.
    async fn any_connection(&self) -> Result<Arc<Connection>> {
        let mut addrs: Vec<String> = self.lock().brokers.values().cloned().collect();
        fastrand::shuffle(&mut addrs);
        let mut boot = self.opts.bootstrap.clone();
        fastrand::shuffle(&mut boot);
        addrs.extend(boot);
        if addrs.is_empty() {
            return Err(Error::NoBroker(
                "the broker list is empty (-b/--brokers)".into(),
            ));
        }
        let mut last = None;
        for a in addrs {
            match self.connection(&a).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NoBroker("no broker".into())))
    }

    /// One Metadata request (for `topics`, or all topics when `None`) to any broker; updates the cache.
    pub async fn fetch_metadata(
        &self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<Metadata> {
        let conn = self.any_connection().await?;
        let version = conn.version::<MetadataRequest>(METADATA_VERSIONS)?;
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut mt = MetadataRequestTopic::default();
                    mt.name = Some(TopicName(StrBytes::from_string(t.clone())));
                    mt
                })
                .collect()
        });
        req.allow_auto_topic_creation = auto_create;
        let resp = conn.call_at(&req, version).await?;
        let md = convert(resp);
        let mut st = self.lock();
        for b in &md.brokers {
            st.brokers.insert(b.id, b.addr());
        }
        for t in &md.topics {
            if t.error == 0 {
                st.topics.insert(t.name.clone(), Arc::new(t.clone()));
            } else {
                st.topics.remove(&t.name);
            }
        }
        st.generation += 1;
        Ok(md)
    }

    /// Like [`Cluster::fetch_metadata`], retrying unreachable brokers under the retry limit.
    pub async fn metadata(&self, topics: Option<&[String]>, auto_create: bool) -> Result<Metadata> {
        let mut backoff = Backoff::new(self.opts.retry_limit);
        loop {
            match self.fetch_metadata(topics, auto_create).await {
                Ok(m) => return Ok(m),
                Err(e) if e.is_retriable() => {
                    if !backoff.wait().await {
                        return Err(give_up(&backoff, e));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The current metadata generation; pass it to [`Cluster::refresh`] after a failure.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The cached topic, if any.
    pub fn cached_topic(&self, name: &str) -> Option<Arc<TopicMeta>> {
        self.lock().topics.get(name).cloned()
    }

    /// The topic's metadata with a leader for every partition, from the cache or the cluster. Waits (under
    /// the retry limit) while a topic is being created or a leader elected. `auto_create` asks the broker
    /// to create a missing topic (if its config allows).
    pub async fn topic(&self, name: &str, auto_create: bool) -> Result<Arc<TopicMeta>> {
        if let Some(t) = self.cached_topic(name) {
            if t.partitions.iter().all(|p| p.leader >= 0) {
                return Ok(t);
            }
        }
        let mut backoff = Backoff::new(self.opts.retry_limit);
        let mut unknown_seen = 0;
        let names = [name.to_string()];
        loop {
            let err = match self.fetch_metadata(Some(&names), auto_create).await {
                Ok(md) => {
                    let t = md.topics.into_iter().find(|t| t.name == name);
                    match t {
                        Some(t) if t.error == 0 && t.partitions.iter().all(|p| p.leader >= 0) => {
                            if t.partitions.is_empty() {
                                Error::UnknownTopic { topic: name.into() }
                            } else {
                                return Ok(Arc::new(t));
                            }
                        }
                        Some(t) if t.error == 3 => {
                            unknown_seen += 1;
                            // Auto-creation may answer "unknown" once while the topic is being made.
                            if !auto_create || unknown_seen > 3 {
                                return Err(Error::UnknownTopic { topic: name.into() });
                            }
                            Error::UnknownTopic { topic: name.into() }
                        }
                        Some(t) if t.error != 0 && !crate::error::is_retriable_code(t.error) => {
                            return Err(Error::Kafka {
                                context: format!("topic '{name}': Metadata"),
                                code: t.error,
                            })
                        }
                        Some(t) => match t.partitions.iter().find(|p| p.leader < 0) {
                            Some(p) => Error::NoLeader {
                                topic: name.into(),
                                partition: p.id,
                            },
                            None => Error::Kafka {
                                context: format!("topic '{name}': Metadata"),
                                code: t.error,
                            },
                        },
                        None => Error::UnknownTopic { topic: name.into() },
                    }
                }
                Err(e) if e.is_retriable() => e,
                Err(e) => return Err(e),
            };
            if !backoff.wait().await {
                return Err(give_up(&backoff, err));
            }
        }
    }

    /// A producer id and epoch for an idempotent producer (InitProducerId without transactional id),
    /// retrying under the retry limit. <https://cwiki.apache.org/confluence/x/jR5CB> (KIP-98).
    pub async fn init_producer_id(&self) -> Result<(i64, i16)> {
        let mut backoff = Backoff::new(self.opts.retry_limit);
        loop {
            let attempt = async {
                let conn = self.any_connection().await?;
                let version =
                    conn.version::<InitProducerIdRequest>(VersionRange { min: 2, max: 5 })?;
                let mut req = InitProducerIdRequest::default();
                req.transactional_id = None;
                req.transaction_timeout_ms = i32::MAX;
                req.producer_id = ProducerId(-1);
                req.producer_epoch = -1;
                let resp = conn.call_at(&req, version).await?;
                if resp.error_code != 0 {
                    return Err(Error::Kafka {
                        context: format!("broker {}: InitProducerId", conn.addr()),
                        code: resp.error_code,
                    });
                }
                Ok((resp.producer_id.0, resp.producer_epoch))
            };
            match attempt.await {
                Ok(p) => return Ok(p),
                Err(e) if e.is_retriable() => {
                    if !backoff.wait().await {
                        return Err(give_up(&backoff, e));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Refreshes a topic's metadata unless someone already did since `seen_generation`.
    pub async fn refresh(&self, topic: &str, seen_generation: u64) -> Result<()> {
        if self.generation() != seen_generation {
            return Ok(());
        }
        self.lock().topics.remove(topic);
        self.topic(topic, false).await.map(|_| ())
    }

    /// Notes a leader change we learnt from a response (KIP-951), sparing a Metadata round trip.
    pub fn set_leader(&self, topic: &str, partition: i32, leader: i32, epoch: i32) {
        let mut st = self.lock();
        if let Some(t) = st.topics.get(topic) {
            let mut t = (**t).clone();
            if let Some(p) = t.partitions.iter_mut().find(|p| p.id == partition) {
                if epoch >= p.leader_epoch {
                    p.leader = leader;
                    p.leader_epoch = epoch;
                }
            }
            st.topics.insert(topic.to_string(), Arc::new(t));
        }
    }
}

fn give_up(backoff: &Backoff, last: Error) -> Error {
    Error::Deadline {
        ms: backoff.elapsed().as_millis() as u64,
        last: Box::new(last),
    }
}

fn convert(resp: MetadataResponse) -> Metadata {
    let mut brokers: Vec<BrokerMeta> = resp
        .brokers
        .into_iter()
        .map(|b| BrokerMeta {
            id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.map(|r| r.to_string()),
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let topics = resp
        .topics
        .into_iter()
        .map(|t| {
            let mut partitions: Vec<PartitionMeta> = t
                .partitions
                .into_iter()
                .map(|p| PartitionMeta {
                    id: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                    error: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            TopicMeta {
                name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                id: *t.topic_id.as_bytes(),
                error: t.error_code,
                internal: t.is_internal,
                partitions,
            }
        })
        .collect();
    Metadata {
        cluster_id: resp.cluster_id.map(|c| c.to_string()),
        controller: resp.controller_id.0,
        brokers,
        topics,
    }
}
