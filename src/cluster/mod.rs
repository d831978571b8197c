//! The cluster as the client sees it: bootstrap, a metadata cache with a generation number (so several
//! failures seen together refresh once), brokers by node id, partition leaders, and one reused
//! connection per broker, made through a [`Transport`] (TCP, TLS, or a fake broker in tests).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, InitProducerIdRequest, MetadataRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::time::Instant;

mod metadata;

use metadata::convert;
pub use metadata::{BrokerMeta, Metadata, PartitionMeta, TopicMeta};

use crate::backoff::retry;
use crate::connection::{ConnError, Connection, ConnectionOptions, TcpTransport, Transport};
use crate::error::{code, Code, Error, Result, Target};

/// Metadata versions we speak: the flexible ones (9+, Kafka 2.4+); 12 on Kafka 3.x and 4.x.
const METADATA_VERSIONS: VersionRange = VersionRange { min: 9, max: 12 };

/// How long a connection attempt of [`Cluster::any_connection`] has to itself before the next
/// broker is tried beside it (a hung broker accepts connections and never answers).
const NEXT_ATTEMPT_AFTER: Duration = Duration::from_secs(1);

/// A connection attempt of [`Cluster::any_connection`].
struct Attempt<'a> {
    addr: String,
    started: Instant,
    fut: std::pin::Pin<Box<dyn Future<Output = Result<Arc<Connection>>> + Send + 'a>>,
}

/// How long a connection's oldest request may go unanswered before [`Cluster::any_connection`] asks
/// the other brokers first.
const STALLED_AFTER: Duration = Duration::from_secs(2);

/// How long after a failed connection attempt [`Cluster::any_connection`] asks the other brokers
/// first.
const FAILED_RECENTLY: Duration = Duration::from_secs(30);
/// CreateTopics versions: the flexible ones (5+, Kafka 2.4+), which also take -1 for the broker's
/// default partitions and replication factor.
const CREATE_TOPICS_VERSIONS: VersionRange = VersionRange { min: 5, max: 7 };

/// How long the question why a topic was not created may take.
const CREATION_CHECK_WITHIN: Duration = Duration::from_secs(5);

/// The most of a broker's reason for refusing a topic that is kept (a message is the broker's text).
const REASON_MAX: usize = 300;

/// InitProducerId versions: flexible (2+).
const INIT_PRODUCER_ID_VERSIONS: VersionRange = VersionRange { min: 2, max: 5 };

/// The partitions of `t` without a leader.
fn leaderless(t: &TopicMeta) -> Vec<String> {
    t.partitions
        .iter()
        .filter(|p| p.leader < 0)
        .map(|p| p.id.to_string())
        .collect()
}

/// A topic with the partitions it has no leader for (see [`leaderless`]), as
/// [`State::leaderless_said`] keeps it.
fn leaderless_key(name: &str, none: &[String]) -> String {
    format!("{name}:{}", none.join(","))
}

/// How long a topic's metadata is asked again for a leader of every partition (an election takes
/// milliseconds, a new topic's leaders a second or two) before it is taken with some leaderless.
const EVERY_LEADER_WITHIN: Duration = Duration::from_secs(3);

/// How long a topic the broker says it does not know is asked for again before it is said not to
/// exist: a broker learns of a new topic from the controller's log, a moment after it was created.
const UNKNOWN_FOR: Duration = Duration::from_millis(1500);

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

    /// The deadline of an operation starting now, from the retry limit.
    pub fn deadline(&self) -> Option<Instant> {
        self.retry_limit.map(|l| Instant::now() + l)
    }
}

#[derive(Default)]
struct State {
    brokers: BTreeMap<i32, String>,
    conns: HashMap<String, Arc<Connection>>,
    topics: HashMap<String, Arc<TopicMeta>>,
    generation: u64,
    /// Topics (with their partitions) said to be taken with leaderless partitions: said once.
    leaderless_said: std::collections::HashSet<String>,
}

/// The client's view of a Kafka cluster.
pub struct Cluster {
    opts: ClientOptions,
    transport: Arc<dyn Transport>,
    state: Mutex<State>,
    /// One lock per broker address, so that concurrent callers share one connection per broker and a
    /// slow broker does not hold up connections to the others.
    connecting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When a connection to an address last failed to open (cleared when one opens).
    failed: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.opts.bootstrap)
            .finish()
    }
}

impl Cluster {
    /// A cluster reached over plain TCP through `opts.bootstrap`; nothing is connected yet.
    pub fn new(opts: ClientOptions) -> Self {
        Cluster::with_transport(opts, Arc::new(TcpTransport))
    }

    /// A cluster reached through `transport` (TLS, or a fake broker in tests).
    pub fn with_transport(opts: ClientOptions, transport: Arc<dyn Transport>) -> Self {
        Cluster {
            opts,
            transport,
            state: Mutex::new(State::default()),
            connecting: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// A client of the same cluster with the same options and transport that shares no connection
    /// with this one: for a reader whose long-poll fetches would otherwise hold up every other
    /// request on the shared connections (a broker answers one connection's requests in order, so a
    /// ListOffsets behind a Fetch held for 100 ms waits those 100 ms).
    pub fn sibling(&self) -> Cluster {
        let c = Cluster::with_transport(self.opts.clone(), self.transport.clone());
        c.lock().brokers = self.lock().brokers.clone();
        c
    }

    /// The options this cluster was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_connection(&self, addr: &str) -> Option<Arc<Connection>> {
        self.lock()
            .conns
            .get(addr)
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// The open connection to `addr`, connecting (before `deadline`) if there is none or it was closed.
    pub async fn connection(
        &self,
        addr: &str,
        deadline: Option<Instant>,
    ) -> Result<Arc<Connection>> {
        if let Some(c) = self.open_connection(addr) {
            return Ok(c);
        }
        let gate = self
            .connecting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr.to_string())
            .or_default()
            .clone();
        // Another caller connecting to the same broker (a metadata refresh with a later deadline)
        // must not hold this one past its own deadline.
        let waited = Instant::now();
        let _g =
            match deadline {
                Some(d) => tokio::time::timeout_at(d, gate.lock()).await.map_err(|_| {
                    ConnError::Timeout {
                        addr: addr.to_string(),
                        api: "ApiVersions (another connection attempt was under way)",
                        ms: waited.elapsed().as_millis() as u64,
                    }
                })?,
                None => gate.lock().await,
            };
        if let Some(c) = self.open_connection(addr) {
            return Ok(c);
        }
        let mut until = Instant::now() + self.opts.connection.connect_timeout;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        let c =
            match Connection::connect(&*self.transport, addr, &self.opts.connection, until).await {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    self.failed_lock().insert(addr.to_string(), Instant::now());
                    return Err(e.into());
                }
            };
        self.failed_lock().remove(addr);
        crate::log::debug(format_args!(
            "connected to broker {}",
            crate::escape::Esc::str(addr)
        ));
        self.lock().conns.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A new connection to `addr` of its own, not shared with other callers: for requests the broker may
    /// hold for long (a group join waits for the whole group), which would stall whatever else shares a
    /// connection, since a broker answers one connection's requests one at a time.
    pub async fn dedicated(&self, addr: &str, deadline: Option<Instant>) -> Result<Connection> {
        let mut until = Instant::now() + self.opts.connection.connect_timeout;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        Ok(Connection::connect(&*self.transport, addr, &self.opts.connection, until).await?)
    }

    fn failed_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection to broker `id`, as known from metadata.
    pub async fn broker(&self, id: i32, deadline: Option<Instant>) -> Result<Arc<Connection>> {
        let addr = self.lock().brokers.get(&id).cloned();
        match addr {
            Some(a) => self.connection(&a, deadline).await,
            None => Err(Error::UnknownBroker(id)),
        }
    }

    /// The address of broker `id`, as known from metadata.
    pub fn broker_addr(&self, id: i32) -> Option<String> {
        self.lock().brokers.get(&id).cloned()
    }

    /// Records a broker address learnt outside Metadata (a Produce response's leader hint, KIP-951).
    pub fn add_broker(&self, id: i32, addr: String) {
        self.lock().brokers.insert(id, addr);
    }

    /// Any reachable broker: an open connection with nothing in flight if there is one, else
    /// known brokers (in random order), then the bootstrap list; brokers that seem in trouble (a
    /// request unanswered for 2 s, a connection attempt under way or failed in the last 30 s)
    /// last. Each attempt gets
    /// [`NEXT_ATTEMPT_AFTER`] to itself before the next broker is tried beside it, and the first
    /// to connect wins: a hung broker (accepting, never answering) costs a second, not the whole
    /// connect timeout (t21 F6: `metadata` took 10 s with one broker of three paused).
    pub async fn any_connection(&self, deadline: Option<Instant>) -> Result<Arc<Connection>> {
        let mut addrs: Vec<String> = self.lock().brokers.values().cloned().collect();
        fastrand::shuffle(&mut addrs);
        let mut boot = self.opts.bootstrap.clone();
        fastrand::shuffle(&mut boot);
        addrs.extend(boot);
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|a| seen.insert(a.clone()));
        // A broker whose connection has left a request unanswered for a while (paused, overloaded)
        // is asked last: a request of ours would wait behind that one (a metadata refresh waiting
        // out a paused leader's Produce, while the others could say where the leader went).
        // So is one being connected to by another caller (we would wait for that attempt), or whose
        // last connection attempt failed a moment ago.
        let suspect = |a: &String| {
            let stalled = self
                .open_connection(a)
                .is_some_and(|c| c.stalled(STALLED_AFTER));
            let connecting = self
                .connecting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(a)
                .is_some_and(|g| g.try_lock().is_err());
            let failed = self
                .failed_lock()
                .get(a)
                .is_some_and(|t| t.elapsed() < FAILED_RECENTLY);
            stalled || connecting || failed
        };
        // An open connection with nothing in flight first: no new connection, no wait behind a
        // consumer's long-poll Fetch.
        let idle = |a: &String| self.open_connection(a).is_some_and(|c| !c.busy());
        addrs.sort_by_cached_key(|a| (suspect(a), !idle(a)));
        if addrs.is_empty() {
            return Err(Error::NoBrokers);
        }
        let mut todo = addrs.into_iter();
        let mut running: Vec<Attempt<'_>> = Vec::new();
        let mut last = Error::NoBrokers;
        loop {
            if running.is_empty() {
                let Some(a) = todo.next() else {
                    return Err(last);
                };
                running.push(self.attempt(a, deadline));
            }
            let more = todo.len() > 0;
            let next_after = tokio::time::sleep(NEXT_ATTEMPT_AFTER);
            let mut next_after = std::pin::pin!(next_after);
            let done = std::future::poll_fn(|cx| {
                for (i, at) in running.iter_mut().enumerate() {
                    if let std::task::Poll::Ready(r) = at.fut.as_mut().poll(cx) {
                        return std::task::Poll::Ready(Some((i, r)));
                    }
                }
                if more && next_after.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(None);
                }
                std::task::Poll::Pending
            })
            .await;
            match done {
                Some((i, Ok(c))) => {
                    running.swap_remove(i);
                    self.abandon(running);
                    return Ok(c);
                }
                Some((i, Err(e))) => {
                    running.swap_remove(i);
                    if !e.is_retriable() {
                        self.abandon(running);
                        return Err(e);
                    }
                    last = e;
                    // A failure starts the next attempt at once, without the head start.
                    if let Some(a) = todo.next() {
                        running.push(self.attempt(a, deadline));
                    }
                }
                None => {
                    if let Some(a) = todo.next() {
                        running.push(self.attempt(a, deadline));
                    }
                }
            }
        }
    }

    /// One attempt of [`Cluster::any_connection`]: a connection to `addr`.
    fn attempt(&self, addr: String, deadline: Option<Instant>) -> Attempt<'_> {
        Attempt {
            started: Instant::now(),
            addr: addr.clone(),
            fut: Box::pin(async move { self.connection(&addr, deadline).await }),
        }
    }

    /// Drops the attempts still under way once another won. One that went on past its head start
    /// is taken as failed: the next [`Cluster::any_connection`] tries that broker last.
    fn abandon(&self, running: Vec<Attempt<'_>>) {
        let now = Instant::now();
        let mut failed = self.failed_lock();
        for at in running {
            if now.duration_since(at.started) >= NEXT_ATTEMPT_AFTER {
                failed.insert(at.addr, now);
            }
        }
    }

    /// One Metadata request (for `topics`, or all topics when `None`) to any broker; updates the cache.
    pub async fn fetch_metadata(
        &self,
        topics: Option<&[String]>,
        auto_create: bool,
        deadline: Option<Instant>,
    ) -> Result<Metadata> {
        let conn = self.any_connection(deadline).await?;
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
        let resp = conn
            .call(&req, version, conn.request_deadline(deadline))
            .await?;
        let md = convert(resp);
        let mut st = self.lock();
        for b in &md.brokers {
            crate::connection::note_listed(&b.addr());
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

    /// Like [`Cluster::fetch_metadata`], retrying an unreachable cluster until the retry limit.
    pub async fn metadata(&self, topics: Option<&[String]>, auto_create: bool) -> Result<Metadata> {
        retry(self.opts.deadline(), |d| {
            self.fetch_metadata(topics, auto_create, d)
        })
        .await
    }

    /// The current metadata generation; pass it to [`Cluster::refresh`] after a failure.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The cached topic, if any.
    pub fn cached_topic(&self, name: &str) -> Option<Arc<TopicMeta>> {
        self.lock().topics.get(name).cloned()
    }

    /// One attempt at a topic's metadata with a leader for every partition (for some of them, with
    /// `some_led`).
    async fn topic_once(
        &self,
        name: &str,
        auto_create: bool,
        deadline: Option<Instant>,
        unknown_seen: &std::sync::atomic::AtomicU32,
        started: Instant,
        wanted: &[i32],
    ) -> Result<Arc<TopicMeta>> {
        let some_led = started.elapsed() >= EVERY_LEADER_WITHIN;
        let md = self
            .fetch_metadata(Some(&[name.to_string()]), auto_create, deadline)
            .await?;
        let Some(t) = md.topics.into_iter().find(|t| t.name == name) else {
            return Err(Error::Incomplete {
                api: "Metadata",
                target: Target::Topic(name.into()),
                what: "the topic is missing",
            });
        };
        if t.bad_ids {
            // Said as what it is, not as the code that stands for it (UNKNOWN_SERVER_ERROR).
            let mut ids: Vec<String> = t
                .partitions
                .iter()
                .take(8)
                .map(|p| p.id.to_string())
                .collect();
            if t.partitions.len() > 8 {
                ids.push("...".into());
            }
            return Err(Error::BadPartitionIds {
                topic: name.into(),
                ids: ids.join(", "),
            });
        }
        match code(t.error) {
            None if t.partitions.is_empty() => Err(Error::UnknownTopic { topic: name.into() }),
            None => match t
                .partitions
                .iter()
                .find(|p| p.leader < 0 && (wanted.is_empty() || wanted.contains(&p.id)))
            {
                Some(_) if some_led && t.partitions.iter().any(|p| p.leader >= 0) => {
                    let none = leaderless(&t);
                    if self
                        .lock()
                        .leaderless_said
                        .insert(leaderless_key(name, &none))
                    {
                        crate::log::warn(format_args!(
                            "topic '{}': partition{} {} {} no leader (are {} replicas' brokers down?); going on with the others",
                            crate::escape::Esc::str(name),
                            if none.len() == 1 { "" } else { "s" },
                            none.join(", "),
                            if none.len() == 1 { "has" } else { "have" },
                            if none.len() == 1 { "its" } else { "their" },
                        ));
                    }
                    Ok(Arc::new(t))
                }
                Some(p) => Err(Error::NoLeader {
                    topic: name.into(),
                    partition: p.id,
                }),
                None => Ok(Arc::new(t)),
            },
            Some(Code::UnknownTopicOrPartition) => {
                let seen = unknown_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                // Auto-creation may answer "unknown" a few times while the topic is being made, and
                // a broker may not know a topic created a moment ago (its metadata lags the
                // controller's): a few quick tries, on any broker, before saying it does not exist.
                // Asking to create it, more (~4 s): a loaded controller takes longer (CI saw three
                // "unknown" answers in 0.7 s for a topic that was being created). Not fewer than
                // UNKNOWN_FOR either: on a loaded three-broker cluster a broker learnt of a topic
                // created a moment before more than 0.5 s after it was made (three quick tries).
                let tries = if auto_create { 8 } else { 3 };
                if seen <= tries || started.elapsed() < UNKNOWN_FOR {
                    // Not "no leader": that blamed brokers being down when the time ran out here.
                    Err(Error::NotYetKnown { topic: name.into() })
                } else {
                    Err(Error::UnknownTopic { topic: name.into() })
                }
            }
            Some(c) => Err(Error::Kafka {
                api: "Metadata",
                target: Target::Topic(name.into()),
                code: c,
            }),
        }
    }

    /// The topic's metadata with a leader for every partition, from the cache or the cluster. Waits
    /// (until `deadline`) while a topic is being created or a leader elected; past
    /// [`EVERY_LEADER_WITHIN`], takes it with some partitions leaderless (said): a partition whose only
    /// replica's broker is down has no leader for as long as it is down, and the others can be
    /// written and read meanwhile (t21: produce refused to start, kcat wrote to the others).
    /// `auto_create` asks the broker to create a missing topic (if its config allows).
    pub async fn topic_until(
        &self,
        name: &str,
        auto_create: bool,
        deadline: Option<Instant>,
    ) -> Result<Arc<TopicMeta>> {
        self.topic_for(name, auto_create, deadline, &[]).await
    }

    /// [`Cluster::topic_until`] for a caller that uses only the `wanted` partitions (all when empty):
    /// the others are not waited for (t24 F5: `produce -p 0` and `consume -p 0` waited 3 s for
    /// another partition's leader).
    pub async fn topic_for(
        &self,
        name: &str,
        auto_create: bool,
        deadline: Option<Instant>,
        wanted: &[i32],
    ) -> Result<Arc<TopicMeta>> {
        if let Some(t) = self.cached_topic(name) {
            let key = || leaderless_key(&t.name, &leaderless(&t));
            let led = |p: &i32| t.partitions.iter().any(|m| m.id == *p && m.leader >= 0);
            if t.all_led()
                || (!wanted.is_empty() && wanted.iter().all(led))
                || self.lock().leaderless_said.contains(&key())
            {
                // (Taken with these partitions leaderless before: not waited for again.)
                return Ok(t);
            }
        }
        let unknown_seen = std::sync::atomic::AtomicU32::new(0);
        let started = Instant::now();
        let r = retry(deadline, |d| {
            self.topic_once(name, auto_create, d, &unknown_seen, started, wanted)
        })
        .await;
        match r {
            // Asked to create it and not created: Kafka may say why (t36 F3: `a_b` beside an
            // existing `a.b` was "does not exist (create it ...)", which cannot be done).
            Err(Error::UnknownTopic { topic }) if auto_create => {
                let within = Some(Instant::now() + CREATION_CHECK_WITHIN);
                match self.creation_refused(&topic, within).await {
                    Some(reason) => Err(Error::CannotCreate { topic, reason }),
                    None => Err(Error::UnknownTopic { topic }),
                }
            }
            r => r,
        }
    }

    /// Why Kafka refuses to create topic `name` with the broker's defaults, if it does: a CreateTopics
    /// request that only validates (nothing is created). `None` when creation would succeed (the
    /// broker's `auto.create.topics.enable` is off), when this user may not create topics, or when
    /// the broker does not answer or does not serve CreateTopics: the caller's error stands.
    pub async fn creation_refused(&self, name: &str, deadline: Option<Instant>) -> Option<String> {
        let conn = self.any_connection(deadline).await.ok()?;
        let version = conn
            .version::<CreateTopicsRequest>(CREATE_TOPICS_VERSIONS)
            .ok()?;
        let mut topic = CreatableTopic::default();
        topic.name = TopicName(StrBytes::from_string(name.to_string()));
        topic.num_partitions = -1;
        topic.replication_factor = -1;
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![topic];
        req.timeout_ms = CREATION_CHECK_WITHIN.as_millis() as i32;
        req.validate_only = true;
        let resp = conn
            .call(&req, version, conn.request_deadline(deadline))
            .await
            .ok()?;
        let t = resp
            .topics
            .into_iter()
            .find(|t| t.name.0.as_str() == name)?;
        let c = code(t.error_code)?;
        if !matches!(
            c,
            Code::InvalidTopicException
                | Code::InvalidPartitions
                | Code::InvalidReplicationFactor
                | Code::InvalidReplicaAssignment
                | Code::InvalidConfig
                | Code::PolicyViolation
        ) {
            return None;
        }
        let said = t
            .error_message
            .map(|m| m.as_str().trim().to_string())
            .filter(|m| !m.is_empty());
        Some(match said {
            Some(m) if m.len() > REASON_MAX => {
                let mut end = REASON_MAX;
                while !m.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}...", &m[..end])
            }
            Some(m) => m,
            None => c.to_string(),
        })
    }

    /// [`Cluster::topic_until`] with the retry limit from the options.
    pub async fn topic(&self, name: &str, auto_create: bool) -> Result<Arc<TopicMeta>> {
        self.topic_until(name, auto_create, self.opts.deadline())
            .await
    }

    /// The topic's metadata as the cluster has it now (asked, not taken from the cache), for a new
    /// reader that must see partitions added since the topic was cached; when that request fails,
    /// [`Cluster::topic`] (the cache, else retries) says why.
    pub async fn topic_current(&self, name: &str) -> Result<Arc<TopicMeta>> {
        let deadline = Instant::now() + self.opts.connection.request_timeout;
        if let Err(e) = self.refresh(name, self.generation(), Some(deadline)).await {
            crate::log::debug(format_args!(
                "metadata of '{}' not refreshed: {e}",
                crate::escape::Esc::str(name)
            ));
        }
        self.topic(name, false).await
    }

    /// The topic's metadata (as [`Cluster::topic`]) once it knows at least `least` partitions: a
    /// group may be assigned partitions added since the topic was cached (a KIP-848 coordinator does
    /// so at once), and brokers learn of them one after the other, so it is asked again for ~5 s
    /// before the caller is given fewer.
    pub async fn topic_with_partitions(&self, name: &str, least: usize) -> Result<Arc<TopicMeta>> {
        let mut meta = self.topic(name, false).await?;
        for _ in 0..20 {
            if meta.partitions.len() >= least {
                break;
            }
            crate::log::debug(format_args!(
                "'{}' has fewer partitions than asked for ({least}): asking its metadata again",
                crate::escape::Esc::str(name)
            ));
            meta = self.topic_current(name).await?;
            if meta.partitions.len() < least {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(meta)
    }

    /// One InitProducerId request (idempotent producer, no transactional id), to any broker.
    /// <https://cwiki.apache.org/confluence/x/jR5CB> (KIP-98).
    pub async fn init_producer_id_once(&self, deadline: Option<Instant>) -> Result<(i64, i16)> {
        let conn = self.any_connection(deadline).await?;
        let version = conn.version::<InitProducerIdRequest>(INIT_PRODUCER_ID_VERSIONS)?;
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = i32::MAX;
        req.producer_id = ProducerId(-1);
        req.producer_epoch = -1;
        let resp = conn
            .call(&req, version, conn.request_deadline(deadline))
            .await?;
        if let Some(c) = code(resp.error_code) {
            return Err(Error::Kafka {
                api: "InitProducerId",
                target: Target::Broker(conn.addr().to_string()),
                code: c,
            });
        }
        Ok((resp.producer_id.0, resp.producer_epoch))
    }

    /// A producer id and epoch, retrying until `deadline`.
    pub async fn init_producer_id(&self, deadline: Option<Instant>) -> Result<(i64, i16)> {
        retry(deadline, |d| self.init_producer_id_once(d)).await
    }

    /// Refreshes a topic's metadata (one attempt) unless someone already did since `seen_generation`.
    pub async fn refresh(
        &self,
        topic: &str,
        seen_generation: u64,
        deadline: Option<Instant>,
    ) -> Result<()> {
        if self.generation() != seen_generation {
            return Ok(());
        }
        self.topic_once(
            topic,
            false,
            deadline,
            &std::sync::atomic::AtomicU32::new(0),
            Instant::now(),
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Notes a leader change we learnt from a response (KIP-951), sparing a Metadata round trip.
    pub fn set_leader(&self, topic: &str, partition: i32, leader: i32, epoch: i32) {
        let mut st = self.lock();
        if let Some(t) = st.topics.get(topic) {
            let mut t = (**t).clone();
            if let Some(p) = usize::try_from(partition)
                .ok()
                .and_then(|i| t.partitions.get_mut(i))
            {
                if epoch >= p.leader_epoch {
                    p.leader = leader;
                    p.leader_epoch = epoch;
                }
            }
            st.topics.insert(topic.to_string(), Arc::new(t));
        }
    }
}

#[cfg(test)]
mod tests;
