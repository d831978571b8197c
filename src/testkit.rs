//! A fake Kafka cluster for tests: it speaks the real wire protocol (kafka-protocol's codecs, our record
//! batches), keeps what is produced, serves it back, and can misbehave one way per case — what a real
//! broker rarely does on demand. It never replaces the real broker as proof of a feature; it drives the
//! error paths.
//!
//! Two ways in: [`FakeBroker::transport`] gives an in-memory [`Transport`] for unit tests (no sockets,
//! works with tokio's paused clock), and [`FakeBroker::start_tcp`] serves on loopback TCP ports from a
//! thread of its own, so integration tests can run the `shipper` binary against it.
//!
//! Served: ApiVersions, Metadata, InitProducerId, Produce (offsets assigned, idempotent sequences checked
//! like a broker: duplicates answered DUPLICATE_SEQUENCE_NUMBER, gaps OUT_OF_ORDER_SEQUENCE_NUMBER),
//! ListOffsets, Fetch.

#![allow(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::connection::{BoxFuture, BoxIo, ConnError, Transport};
use crate::wire::records::{self, BatchHeader};

/// One way to misbehave. Each applies to the next `times` matching requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehave {
    /// Never answer anything again (the connection stays open).
    Silent,
    /// Answer with a correlation id that matches no request.
    WrongCorrelationId,
    /// Announce a frame of this size.
    FrameSize(i32),
    /// Close the connection when a request of this API arrives.
    DropOn(ApiKey),
    /// Handle a request of this API, then close the connection without answering (the response is
    /// lost after the work was done).
    DropAfter(ApiKey),
    /// Answer a request of this API with bytes that do not decode.
    Garbage(ApiKey),
    /// Answer Produce for a partition with this error code; `leader_hint` names a new leader (KIP-951).
    ProduceError { code: i16, leader_hint: Option<i32> },
    /// Answer Produce leaving out every partition.
    ProduceMissingPartition,
    /// Answer Produce with `throttle_time_ms`.
    Throttle(i32),
    /// Answer InitProducerId with this error code.
    InitProducerIdError(i16),
    /// Answer Fetch for a partition with this error code.
    FetchError(i16),
    /// Answer Fetch with data for a partition that was not asked for, besides the real answer.
    FetchForeignPartition,
    /// Answer Fetch with a batch header whose length runs past the response (and nothing else).
    FetchNoProgress,
    /// ListOffsets answers these offsets for earliest and latest.
    Offsets { earliest: i64, latest: i64 },
    /// Metadata describes this many partitions for each topic asked for.
    HugeMetadata(usize),
    /// Metadata says this topic does not exist.
    UnknownTopic,
}

#[derive(Debug, Clone)]
struct Rule {
    what: Misbehave,
    times: usize,
}

#[derive(Debug, Clone, Default)]
struct PartitionLog {
    leader: i32,
    leader_epoch: i32,
    /// Stored batches: base offset, bytes (with the offset patched in).
    batches: Vec<(i64, Bytes)>,
    next_offset: i64,
    /// Per producer id: the last five batches' (first sequence, last sequence, base offset).
    producers: HashMap<i64, Vec<(i32, i32, i64)>>,
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<i32, Node>,
    topics: BTreeMap<String, Vec<PartitionLog>>,
    auto_create_partitions: Option<usize>,
    rules: Vec<Rule>,
    requests: HashMap<i16, usize>,
    next_producer_id: i64,
    open_streams: usize,
}

#[derive(Debug, Default)]
struct Node {
    addr: String,
    up: bool,
    tasks: Vec<AbortHandle>,
}

/// A fake cluster of `n` brokers (ids 1..=n).
#[derive(Clone)]
pub struct FakeBroker {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeBroker")
    }
}

impl FakeBroker {
    /// A cluster of `n` in-memory brokers at `fake-ID:9092`; topics are created on first use with 3
    /// partitions (see [`FakeBroker::auto_create`]).
    pub fn new(n: i32) -> FakeBroker {
        let b = FakeBroker {
            state: Arc::new(Mutex::new(State {
                auto_create_partitions: Some(3),
                next_producer_id: 1000,
                ..State::default()
            })),
        };
        for id in 1..=n {
            b.lock().nodes.insert(
                id,
                Node {
                    addr: format!("fake-{id}:9092"),
                    up: true,
                    tasks: Vec::new(),
                },
            );
        }
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the cluster on loopback TCP from a thread of its own; returns it and the bootstrap list.
    pub fn start_tcp(n: i32) -> (FakeBroker, String) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async move {
                let b = FakeBroker::new(n);
                let mut listeners = Vec::new();
                for id in 1..=n {
                    let Ok(l) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
                        return;
                    };
                    let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                    if let Some(node) = b.lock().nodes.get_mut(&id) {
                        node.addr = addr;
                    }
                    listeners.push((id, l));
                }
                let boot = b
                    .lock()
                    .nodes
                    .values()
                    .map(|n| n.addr.clone())
                    .collect::<Vec<_>>()
                    .join(",");
                let _ = tx.send((b.clone(), boot));
                let mut accepts = Vec::new();
                for (id, l) in listeners {
                    let b = b.clone();
                    accepts.push(tokio::spawn(async move {
                        while let Ok((s, _)) = l.accept().await {
                            if b.lock().nodes.get(&id).is_some_and(|n| n.up) {
                                b.serve(id, Box::new(s));
                            }
                        }
                    }));
                }
                for a in accepts {
                    let _ = a.await;
                }
            });
        });
        rx.recv()
            .unwrap_or_else(|_| panic!("the fake broker did not start"))
    }

    /// The in-memory transport to this cluster.
    pub fn transport(&self) -> FakeTransport {
        FakeTransport(self.clone())
    }

    /// Address of broker `id`.
    pub fn addr(&self, id: i32) -> String {
        self.lock()
            .nodes
            .get(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default()
    }

    /// The bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.lock()
            .nodes
            .values()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Creates a topic with `partitions` partitions, leaders spread over the brokers.
    pub fn create_topic(&self, name: &str, partitions: usize) {
        let mut st = self.lock();
        let ids: Vec<i32> = st.nodes.keys().copied().collect();
        let logs = (0..partitions)
            .map(|p| PartitionLog {
                leader: ids[p % ids.len()],
                ..PartitionLog::default()
            })
            .collect();
        st.topics.insert(name.to_string(), logs);
    }

    /// Whether unknown topics are created on first use, and with how many partitions.
    pub fn auto_create(&self, partitions: Option<usize>) {
        self.lock().auto_create_partitions = partitions;
    }

    /// Misbehaves this way for the next `times` matching requests (`usize::MAX`: from now on).
    pub fn misbehave_times(&self, what: Misbehave, times: usize) {
        self.lock().rules.push(Rule { what, times });
    }

    /// Misbehaves this way from now on.
    pub fn misbehave(&self, what: Misbehave) {
        self.misbehave_times(what, usize::MAX);
    }

    /// Behaves again.
    pub fn behave(&self) {
        self.lock().rules.clear();
    }

    /// Moves a partition's leadership.
    pub fn set_leader(&self, topic: &str, partition: i32, leader: i32) {
        if let Some(p) = self
            .lock()
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(partition as usize))
        {
            p.leader = leader;
            p.leader_epoch += 1;
        }
    }

    /// Stops a broker: its connections close, new ones are refused.
    pub fn stop(&self, id: i32) {
        let tasks = match self.lock().nodes.get_mut(&id) {
            Some(n) => {
                n.up = false;
                std::mem::take(&mut n.tasks)
            }
            None => Vec::new(),
        };
        for t in tasks {
            t.abort();
        }
    }

    /// Starts a stopped broker again.
    pub fn start(&self, id: i32) {
        if let Some(n) = self.lock().nodes.get_mut(&id) {
            n.up = true;
        }
    }

    /// How many requests of this API arrived.
    pub fn requests(&self, api: ApiKey) -> usize {
        self.lock()
            .requests
            .get(&(api as i16))
            .copied()
            .unwrap_or(0)
    }

    /// Streams currently served.
    pub fn open_streams(&self) -> usize {
        self.lock().open_streams
    }

    /// Every record value of a topic, partition by partition, in offset order.
    pub fn values(&self, topic: &str) -> Vec<Vec<u8>> {
        let st = self.lock();
        let mut out = Vec::new();
        for log in st.topics.get(topic).into_iter().flatten() {
            for (_, b) in &log.batches {
                out.extend(batch_values(b));
            }
        }
        out
    }

    /// Every record value of one partition, in offset order.
    pub fn partition_values(&self, topic: &str, partition: i32) -> Vec<Vec<u8>> {
        let st = self.lock();
        let Some(log) = st.topics.get(topic).and_then(|t| t.get(partition as usize)) else {
            return Vec::new();
        };
        log.batches
            .iter()
            .flat_map(|(_, b)| batch_values(b))
            .collect()
    }

    /// Appends records to a partition directly (as another producer would).
    pub fn append(&self, topic: &str, partition: i32, values: &[&[u8]]) {
        let mut buf = BytesMut::new();
        let mut b = records::BatchBuilder::begin(&mut buf, 1_700_000_000_000);
        for v in values {
            b.push(&mut buf, 1_700_000_000_000, None, Some(v), &[]);
        }
        let mut c = crate::wire::compression::Compressor::default();
        if b.finish(
            &mut buf,
            crate::wire::compression::Compression::None,
            None,
            records::ProducerStamp::NONE,
            &mut c,
        )
        .is_err()
        {
            return;
        }
        let mut st = self.lock();
        if let Some(log) = st
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(partition as usize))
        {
            store(log, buf);
        }
    }

    /// Takes one rule matching `pred`, counting it down; returns what it says.
    fn take_rule(&self, pred: impl Fn(&Misbehave) -> bool) -> Option<Misbehave> {
        let mut st = self.lock();
        let i = st.rules.iter().position(|r| r.times > 0 && pred(&r.what))?;
        let r = &mut st.rules[i];
        r.times = r.times.saturating_sub(1);
        let what = r.what.clone();
        if r.times == 0 {
            st.rules.remove(i);
        }
        Some(what)
    }

    fn serve(&self, node: i32, io: BoxIo) {
        let b = self.clone();
        b.lock().open_streams += 1;
        let task = tokio::spawn(async move {
            // Counts the stream closed however the task ends (done, or aborted by `stop`).
            struct Gone(FakeBroker);
            impl Drop for Gone {
                fn drop(&mut self) {
                    self.0.lock().open_streams -= 1;
                }
            }
            let _gone = Gone(b.clone());
            let _ = b.serve_stream(node, io).await;
        });
        if let Some(n) = self.lock().nodes.get_mut(&node) {
            n.tasks.retain(|t| !t.is_finished());
            n.tasks.push(task.abort_handle());
        }
    }

    async fn serve_stream(&self, node: i32, mut io: BoxIo) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        loop {
            while buf.len() < 4 || buf.len() < 4 + (&buf[..4]).get_i32() as usize {
                if io.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
            let size = (&buf[..4]).get_i32() as usize;
            buf.advance(4);
            let frame = buf.split_to(size).freeze();
            match self.handle(node, frame) {
                Reply::Bytes(out) => io.write_all(&out).await?,
                Reply::Later(out, wait) => {
                    tokio::time::sleep(wait).await;
                    io.write_all(&out).await?;
                }
                Reply::Nothing => {}
                Reply::Hang => {
                    // Silent, but notice when the client closes its end.
                    let mut sink = [0u8; 4096];
                    while io.read(&mut sink).await? > 0 {}
                    return Ok(());
                }
                Reply::Close => return Ok(()),
            }
        }
    }

    fn handle(&self, node: i32, mut frame: Bytes) -> Reply {
        if frame.len() < 8 {
            return Reply::Close;
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        *self.lock().requests.entry(key).or_default() += 1;
        let Ok(api) = ApiKey::try_from(key) else {
            return Reply::Close;
        };
        let header_version = api.request_header_version(version);
        let Ok(header) = RequestHeader::decode(&mut frame, header_version) else {
            return Reply::Close;
        };
        if self.take_rule(|m| *m == Misbehave::Silent).is_some() {
            return Reply::Hang;
        }
        if self.take_rule(|m| *m == Misbehave::DropOn(api)).is_some() {
            return Reply::Close;
        }
        if let Some(Misbehave::FrameSize(n)) =
            self.take_rule(|m| matches!(m, Misbehave::FrameSize(_)))
        {
            let mut out = BytesMut::new();
            out.put_i32(n);
            out.put_i32(header.correlation_id);
            return Reply::Bytes(out.freeze());
        }
        let mut correlation_id = header.correlation_id;
        if self
            .take_rule(|m| *m == Misbehave::WrongCorrelationId)
            .is_some()
        {
            correlation_id = correlation_id.wrapping_add(1000);
        }
        let drop_after = self
            .take_rule(|m| *m == Misbehave::DropAfter(api))
            .is_some();
        let mut long_poll = None;
        let body = match api {
            ApiKey::ApiVersions => self.api_versions(),
            ApiKey::Metadata => decode(&mut frame, version).map(|r| self.metadata(r)),
            ApiKey::InitProducerId => Some(self.init_producer_id()),
            ApiKey::Produce => match decode::<ProduceRequest>(&mut frame, version) {
                Some(r) if r.acks == 0 => {
                    self.produce(node, r);
                    return Reply::Nothing;
                }
                Some(r) => Some(self.produce(node, r)),
                None => None,
            },
            ApiKey::ListOffsets => decode(&mut frame, version).map(|r| self.list_offsets(node, r)),
            ApiKey::Fetch => match decode::<FetchRequest>(&mut frame, version) {
                Some(r) => {
                    long_poll = Some(std::time::Duration::from_millis(r.max_wait_ms.max(0) as u64));
                    Some(self.fetch(node, r))
                }
                None => None,
            },
            _ => None,
        };
        let Some(body) = body else {
            return Reply::Close;
        };
        if drop_after {
            return Reply::Close;
        }
        let mut out = BytesMut::new();
        out.put_i32(0);
        let hv = api.response_header_version(version);
        let mut rh = ResponseHeader::default();
        rh.correlation_id = correlation_id;
        if rh.encode(&mut out, hv).is_err() {
            return Reply::Close;
        }
        if self.take_rule(|m| *m == Misbehave::Garbage(api)).is_some() {
            out.put_slice(&[0xff; 7]);
        } else if body.encode(&mut out, version).is_err() {
            return Reply::Close;
        }
        let size = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        match (long_poll, &body) {
            (Some(wait), Body::Fetch(r)) if fetch_is_empty(r) => Reply::Later(out.freeze(), wait),
            _ => Reply::Bytes(out.freeze()),
        }
    }

    fn api_versions(&self) -> Option<Body> {
        let mut r = ApiVersionsResponse::default();
        for (k, min, max) in [
            (ApiKey::Produce, 3, 12),
            (ApiKey::Fetch, 4, 12),
            (ApiKey::ListOffsets, 1, 7),
            (ApiKey::Metadata, 0, 12),
            (ApiKey::ApiVersions, 0, 3),
            (ApiKey::InitProducerId, 0, 5),
        ] {
            let mut v = api_versions_response::ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = min;
            v.max_version = max;
            r.api_keys.push(v);
        }
        Some(Body::ApiVersions(r))
    }

    fn ensure_topic(&self, name: &str) -> bool {
        let auto = {
            let st = self.lock();
            if st.topics.contains_key(name) {
                return true;
            }
            st.auto_create_partitions
        };
        match auto {
            Some(n) => {
                self.create_topic(name, n);
                true
            }
            None => false,
        }
    }

    fn metadata(&self, req: MetadataRequest) -> Body {
        let unknown = self.take_rule(|m| *m == Misbehave::UnknownTopic).is_some();
        let huge = match self.take_rule(|m| matches!(m, Misbehave::HugeMetadata(_))) {
            Some(Misbehave::HugeMetadata(n)) => Some(n),
            _ => None,
        };
        let names: Vec<String> = match &req.topics {
            Some(ts) => ts
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect(),
            None => self.lock().topics.keys().cloned().collect(),
        };
        if req.allow_auto_topic_creation && !unknown {
            for n in &names {
                self.ensure_topic(n);
            }
        }
        let st = self.lock();
        let mut r = MetadataResponse::default();
        for (id, n) in &st.nodes {
            let mut b = metadata_response::MetadataResponseBroker::default();
            b.node_id = BrokerId(*id);
            let (host, port) = n.addr.rsplit_once(':').unwrap_or((&n.addr, "9092"));
            b.host = StrBytes::from_string(host.to_string());
            b.port = port.parse().unwrap_or(9092);
            r.brokers.push(b);
        }
        r.cluster_id = Some(StrBytes::from_static_str("fake-cluster"));
        r.controller_id = BrokerId(1);
        for name in names {
            let mut t = metadata_response::MetadataResponseTopic::default();
            t.name = Some(TopicName(StrBytes::from_string(name.clone())));
            match st.topics.get(&name) {
                Some(logs) if !unknown => {
                    let count = huge.unwrap_or(logs.len());
                    for i in 0..count {
                        let log = &logs[i % logs.len()];
                        let mut p = metadata_response::MetadataResponsePartition::default();
                        p.partition_index = i as i32;
                        p.leader_id = BrokerId(log.leader);
                        p.leader_epoch = log.leader_epoch;
                        p.replica_nodes = vec![BrokerId(log.leader)];
                        p.isr_nodes = vec![BrokerId(log.leader)];
                        t.partitions.push(p);
                    }
                }
                _ => t.error_code = 3,
            }
            r.topics.push(t);
        }
        Body::Metadata(r)
    }

    fn init_producer_id(&self) -> Body {
        let mut r = InitProducerIdResponse::default();
        if let Some(Misbehave::InitProducerIdError(code)) =
            self.take_rule(|m| matches!(m, Misbehave::InitProducerIdError(_)))
        {
            r.error_code = code;
            return Body::InitProducerId(r);
        }
        let mut st = self.lock();
        st.next_producer_id += 1;
        r.producer_id = ProducerId(st.next_producer_id);
        r.producer_epoch = 0;
        Body::InitProducerId(r)
    }

    fn produce(&self, node: i32, req: ProduceRequest) -> Body {
        let mut resp = ProduceResponse::default();
        if let Some(Misbehave::Throttle(ms)) =
            self.take_rule(|m| matches!(m, Misbehave::Throttle(_)))
        {
            resp.throttle_time_ms = ms;
        }
        let missing = self
            .take_rule(|m| *m == Misbehave::ProduceMissingPartition)
            .is_some();
        for td in req.topic_data {
            let name = td.name.0.to_string();
            let mut tr = produce_response::TopicProduceResponse::default();
            tr.name = td.name.clone();
            for pd in td.partition_data {
                let mut pr = produce_response::PartitionProduceResponse::default();
                pr.index = pd.index;
                pr.base_offset = -1;
                pr.log_start_offset = -1;
                pr.log_append_time_ms = -1;
                let rule = self.take_rule(|m| matches!(m, Misbehave::ProduceError { .. }));
                if let Some(Misbehave::ProduceError { code, leader_hint }) = rule {
                    pr.error_code = code;
                    if let Some(l) = leader_hint {
                        pr.current_leader.leader_id = BrokerId(l);
                        pr.current_leader.leader_epoch = 1000;
                        let mut ep = produce_response::NodeEndpoint::default();
                        let addr = self.addr(l);
                        let (host, port) = addr.rsplit_once(':').unwrap_or((&addr, "9092"));
                        ep.node_id = BrokerId(l);
                        ep.host = StrBytes::from_string(host.to_string());
                        ep.port = port.parse().unwrap_or(9092);
                        resp.node_endpoints.push(ep);
                    }
                } else {
                    let (code, offset) = self.append_batch(node, &name, pd.index, pd.records);
                    pr.error_code = code;
                    pr.base_offset = offset;
                }
                tr.partition_responses.push(pr);
            }
            if !missing {
                resp.responses.push(tr);
            }
        }
        Body::Produce(resp)
    }

    /// Stores a produced batch like a broker: leader check, CRC, idempotent sequences. Returns the error
    /// code and base offset.
    fn append_batch(
        &self,
        node: i32,
        topic: &str,
        partition: i32,
        records: Option<Bytes>,
    ) -> (i16, i64) {
        if !self.ensure_topic(topic) {
            return (3, -1);
        }
        let mut st = self.lock();
        let Some(log) = st
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(partition as usize))
        else {
            return (3, -1);
        };
        if log.leader != node {
            return (6, -1);
        }
        let Some(bytes) = records else {
            return (87, -1);
        };
        let Ok(h) = BatchHeader::parse(&bytes) else {
            return (2, -1);
        };
        if records::verify_crc(&h, &bytes).is_err() || bytes.len() != 12 + h.batch_length as usize {
            return (2, -1);
        }
        if h.producer_id >= 0 {
            let last = h.base_sequence.wrapping_add(h.record_count - 1);
            let seen = log.producers.entry(h.producer_id).or_default();
            if let Some(&(_, _, off)) = seen
                .iter()
                .find(|(f, l, _)| *f == h.base_sequence && *l == last)
            {
                return (46, off);
            }
            let expected = seen.last().map_or(0, |(_, l, _)| l.wrapping_add(1));
            if h.base_sequence != expected {
                return (45, -1);
            }
        }
        let base = log.next_offset;
        let mut b = BytesMut::from(&bytes[..]);
        b[..8].copy_from_slice(&base.to_be_bytes());
        if h.producer_id >= 0 {
            let last = h.base_sequence.wrapping_add(h.record_count - 1);
            let seen = log.producers.entry(h.producer_id).or_default();
            seen.push((h.base_sequence, last, base));
            if seen.len() > 5 {
                seen.remove(0);
            }
        }
        store(log, b);
        (0, base)
    }

    fn list_offsets(&self, node: i32, req: ListOffsetsRequest) -> Body {
        let forced = match self.take_rule(|m| matches!(m, Misbehave::Offsets { .. })) {
            Some(Misbehave::Offsets { earliest, latest }) => Some((earliest, latest)),
            _ => None,
        };
        let st = self.lock();
        let mut r = ListOffsetsResponse::default();
        for t in req.topics {
            let mut tr = list_offsets_response::ListOffsetsTopicResponse::default();
            tr.name = t.name.clone();
            let logs = st.topics.get(&t.name.0.to_string());
            for p in t.partitions {
                let mut pr = list_offsets_response::ListOffsetsPartitionResponse::default();
                pr.partition_index = p.partition_index;
                pr.timestamp = -1;
                match logs.and_then(|l| l.get(p.partition_index as usize)) {
                    None => pr.error_code = 3,
                    Some(log) if log.leader != node => pr.error_code = 6,
                    Some(log) => {
                        let earliest = log.batches.first().map_or(log.next_offset, |(o, _)| *o);
                        pr.offset = match (p.timestamp, forced) {
                            (-2, Some((e, _))) => e,
                            (-1, Some((_, l))) => l,
                            (-2, None) => earliest,
                            _ => log.next_offset,
                        };
                    }
                }
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        Body::ListOffsets(r)
    }

    fn fetch(&self, node: i32, req: FetchRequest) -> Body {
        let error = match self.take_rule(|m| matches!(m, Misbehave::FetchError(_))) {
            Some(Misbehave::FetchError(c)) => Some(c),
            _ => None,
        };
        let foreign = self
            .take_rule(|m| *m == Misbehave::FetchForeignPartition)
            .is_some();
        let no_progress = self
            .take_rule(|m| *m == Misbehave::FetchNoProgress)
            .is_some();
        let st = self.lock();
        let mut r = FetchResponse::default();
        for t in req.topics {
            let mut tr = fetch_response::FetchableTopicResponse::default();
            tr.topic = t.topic.clone();
            let logs = st.topics.get(&t.topic.0.to_string());
            for p in &t.partitions {
                let mut pd = fetch_response::PartitionData::default();
                pd.partition_index = p.partition;
                pd.last_stable_offset = -1;
                pd.log_start_offset = -1;
                pd.preferred_read_replica = BrokerId(-1);
                match logs.and_then(|l| l.get(p.partition as usize)) {
                    None => pd.error_code = 3,
                    Some(log) if log.leader != node => pd.error_code = 6,
                    Some(_) if error.is_some() => pd.error_code = error.unwrap_or(0),
                    Some(log) => {
                        pd.high_watermark = log.next_offset;
                        let earliest = log.batches.first().map_or(log.next_offset, |(o, _)| *o);
                        if p.fetch_offset < earliest || p.fetch_offset > log.next_offset {
                            pd.error_code = 1;
                        } else if no_progress {
                            let mut b = BytesMut::new();
                            b.put_i64(p.fetch_offset);
                            b.put_i32(1_000_000);
                            b.put_bytes(0, 20);
                            pd.records = Some(b.freeze());
                        } else {
                            let mut out = BytesMut::new();
                            for (base, b) in &log.batches {
                                let h = BatchHeader::parse(b).ok();
                                if h.is_some_and(|h| h.next_offset() > p.fetch_offset)
                                    || *base >= p.fetch_offset
                                {
                                    out.put_slice(b);
                                }
                                if out.len() > p.partition_max_bytes.max(1) as usize {
                                    break;
                                }
                            }
                            pd.records = Some(out.freeze());
                        }
                    }
                }
                tr.partitions.push(pd);
            }
            if foreign {
                let mut pd = fetch_response::PartitionData::default();
                pd.partition_index = 999;
                pd.high_watermark = 5;
                let mut buf = BytesMut::new();
                let mut b = records::BatchBuilder::begin(&mut buf, 1);
                b.push(&mut buf, 1, None, Some(b"not yours"), &[]);
                let mut c = crate::wire::compression::Compressor::default();
                let _ = b.finish(
                    &mut buf,
                    crate::wire::compression::Compression::None,
                    None,
                    records::ProducerStamp::NONE,
                    &mut c,
                );
                pd.records = Some(buf.freeze());
                tr.partitions.push(pd);
            }
            r.responses.push(tr);
        }
        Body::Fetch(r)
    }
}

/// Whether a fetch response has no records and no errors (a broker would hold it for max_wait_ms).
fn fetch_is_empty(r: &FetchResponse) -> bool {
    r.responses.iter().all(|t| {
        t.partitions
            .iter()
            .all(|p| p.error_code == 0 && p.records.as_ref().is_none_or(|b| b.is_empty()))
    })
}

fn store(log: &mut PartitionLog, mut b: BytesMut) {
    let base = log.next_offset;
    b[..8].copy_from_slice(&base.to_be_bytes());
    let count = BatchHeader::parse(&b).map_or(1, |h| h.last_offset_delta as i64 + 1);
    log.next_offset += count;
    log.batches.push((base, b.freeze()));
}

fn batch_values(b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for item in records::split_batches(b) {
        let Ok((h, batch)) = item else { break };
        let mut scratch = Vec::new();
        let Ok(sec) = records::records_section(&h, batch, &mut scratch, 1 << 30) else {
            break;
        };
        for r in records::records(&h, sec).flatten() {
            out.push(r.value.unwrap_or_default().to_vec());
        }
    }
    out
}

fn decode<T: Decodable>(frame: &mut Bytes, version: i16) -> Option<T> {
    T::decode(frame, version).ok()
}

enum Reply {
    Bytes(Bytes),
    /// Answer after a while (a long-polling fetch with nothing to return).
    Later(Bytes, std::time::Duration),
    Nothing,
    Hang,
    Close,
}

enum Body {
    ApiVersions(ApiVersionsResponse),
    Metadata(MetadataResponse),
    InitProducerId(InitProducerIdResponse),
    Produce(ProduceResponse),
    ListOffsets(ListOffsetsResponse),
    Fetch(FetchResponse),
}

impl Body {
    fn encode(&self, out: &mut BytesMut, version: i16) -> anyhow::Result<()> {
        match self {
            // The ApiVersions response body is encoded at the request's version, but we only answer
            // versions we can (0..=3).
            Body::ApiVersions(r) => r.encode(out, version.min(3)),
            Body::Metadata(r) => r.encode(out, version),
            Body::InitProducerId(r) => r.encode(out, version),
            Body::Produce(r) => r.encode(out, version),
            Body::ListOffsets(r) => r.encode(out, version),
            Body::Fetch(r) => r.encode(out, version),
        }
    }
}

/// The in-memory way to a [`FakeBroker`].
#[derive(Debug, Clone)]
pub struct FakeTransport(FakeBroker);

impl Transport for FakeTransport {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
        _until: Instant,
    ) -> BoxFuture<'a, Result<BoxIo, ConnError>> {
        Box::pin(async move {
            let node = {
                let st = self.0.lock();
                st.nodes
                    .iter()
                    .find(|(_, n)| n.addr == addr)
                    .map(|(id, n)| (*id, n.up))
            };
            match node {
                Some((id, true)) => {
                    let (client, server) = tokio::io::duplex(1 << 20);
                    self.0.serve(id, Box::new(server));
                    Ok(Box::new(client) as BoxIo)
                }
                _ => Err(ConnError::Connect {
                    addr: addr.to_string(),
                    detail: "Connection refused (os error 111)".into(),
                }),
            }
        })
    }
}
