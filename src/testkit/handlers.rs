//! The fake broker's answers to each API, like a broker's (offsets assigned, leaders checked,
//! idempotent sequences checked), bent by the rules in force.

#![allow(missing_docs)]

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{FakeBroker, Misbehave, PartitionLog};
use crate::wire::records::{self, BatchHeader};

impl FakeBroker {
    pub(super) fn api_versions(&self) -> Option<Body> {
        let mut r = ApiVersionsResponse::default();
        for (k, min, max) in [
            (ApiKey::Produce, 3, 12),
            (ApiKey::Fetch, 4, 13),
            (ApiKey::ListOffsets, 1, 7),
            (ApiKey::Metadata, 0, 12),
            (ApiKey::ApiVersions, 0, 3),
            (ApiKey::InitProducerId, 0, 5),
            (ApiKey::DescribeProducers, 0, 0),
            (ApiKey::SaslHandshake, 0, 1),
            (ApiKey::SaslAuthenticate, 0, 2),
            (ApiKey::FindCoordinator, 0, 6),
            (ApiKey::JoinGroup, 0, 9),
            (ApiKey::SyncGroup, 0, 5),
            (ApiKey::Heartbeat, 0, 4),
            (ApiKey::LeaveGroup, 0, 5),
            (ApiKey::OffsetCommit, 2, 9),
            (ApiKey::OffsetFetch, 1, 9),
            (ApiKey::CreateTopics, 2, 7),
            (ApiKey::ConsumerGroupHeartbeat, 0, 1),
        ] {
            if k == ApiKey::ConsumerGroupHeartbeat && !self.lock().consumer_protocol {
                continue;
            }
            let mut v = api_versions_response::ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = min;
            v.max_version = max;
            r.api_keys.push(v);
        }
        Some(Body::ApiVersions(r))
    }

    /// The existing topic `name` collides with, as Kafka has it: another name that is the same once
    /// '.' and '_' are taken for one another (their metrics' names would be the same).
    fn colliding(&self, name: &str) -> Option<String> {
        let folded = name.replace('.', "_");
        let st = self.lock();
        st.topics
            .keys()
            .find(|t| t.as_str() != name && t.replace('.', "_") == folded)
            .cloned()
    }

    /// Creates topics as Kafka's controller does, or only validates (nothing is created): a name
    /// that exists is refused, and one that collides with an existing one.
    pub(super) fn create_topics(&self, req: CreateTopicsRequest) -> Body {
        let mut r = CreateTopicsResponse::default();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut tr = create_topics_response::CreatableTopicResult::default();
            tr.name = t.name;
            if self.lock().topics.contains_key(&name) {
                tr.error_code = 36;
            } else if let Some(other) = self.colliding(&name) {
                tr.error_code = 17;
                tr.error_message = Some(StrBytes::from_string(format!(
                    "Topic '{name}' collides with existing topic: {other}"
                )));
            } else if !req.validate_only {
                self.create_topic(&name, t.num_partitions.max(1) as usize);
            }
            r.topics.push(tr);
        }
        Body::CreateTopics(r)
    }

    fn ensure_topic(&self, name: &str) -> bool {
        let auto = {
            let st = self.lock();
            if st.topics.contains_key(name) {
                return true;
            }
            st.auto_create_partitions
        };
        // Auto-creation fails as Kafka's does: the topic stays unknown.
        if self.colliding(name).is_some() {
            return false;
        }
        match auto {
            Some(n) => {
                self.create_topic(name, n);
                true
            }
            None => false,
        }
    }

    pub(super) fn metadata(&self, req: MetadataRequest) -> Body {
        let unknown = self.take_rule(|m| *m == Misbehave::UnknownTopic).is_some();
        let no_ids = self.take_rule(|m| *m == Misbehave::NoTopicIds).is_some();
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
            if let Some(&id) = st.topic_ids.get(&name).filter(|_| !no_ids) {
                t.topic_id = uuid::Uuid::from_u128(id);
            }
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

    pub(super) fn init_producer_id(&self) -> Body {
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

    pub(super) fn produce(&self, node: i32, req: ProduceRequest) -> Body {
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
                let refused = self.take_rule(
                    |m| matches!(m, Misbehave::ProduceErrorFor { topic, .. } if *topic == name),
                );
                let rule = match refused {
                    Some(Misbehave::ProduceErrorFor { code, .. }) => {
                        Some(Misbehave::ProduceError {
                            code,
                            leader_hint: None,
                        })
                    }
                    _ => self.take_rule(|m| matches!(m, Misbehave::ProduceError { .. })),
                };
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

    /// Each partition's producers and the last sequence appended for each (held or not).
    pub(super) fn describe_producers(&self, node: i32, req: DescribeProducersRequest) -> Body {
        let st = self.lock();
        let mut r = DescribeProducersResponse::default();
        for t in req.topics {
            let mut tr = describe_producers_response::TopicResponse::default();
            tr.name = t.name.clone();
            let logs = st.topics.get(&t.name.0.to_string());
            for p in t.partition_indexes {
                let mut pr = describe_producers_response::PartitionResponse::default();
                pr.partition_index = p;
                match logs.and_then(|l| l.get(p as usize)) {
                    None => pr.error_code = 3,
                    Some(log) if log.leader != node => pr.error_code = 6,
                    Some(log) => {
                        for (id, batches) in &log.producers {
                            if let Some(&(_, last, _)) = batches.last() {
                                let mut s = describe_producers_response::ProducerState::default();
                                s.producer_id = ProducerId(*id);
                                s.last_sequence = last;
                                s.last_timestamp = -1;
                                s.coordinator_epoch = -1;
                                s.current_txn_start_offset = -1;
                                pr.active_producers.push(s);
                            }
                        }
                    }
                }
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        Body::DescribeProducers(r)
    }

    pub(super) fn list_offsets(&self, node: i32, req: ListOffsetsRequest) -> Body {
        let forced = match self.take_rule(|m| matches!(m, Misbehave::Offsets { .. })) {
            Some(Misbehave::Offsets { earliest, latest }) => Some((earliest, latest)),
            _ => None,
        };
        let asked: Vec<i32> = req
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
            .collect();
        let refused = match self.take_rule(
            |m| matches!(m, Misbehave::OffsetsError { partition, .. } if asked.contains(partition)),
        ) {
            Some(Misbehave::OffsetsError { partition, code }) => Some((partition, code)),
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
                    _ if refused.is_some_and(|(rp, _)| rp == p.partition_index) => {
                        pr.error_code = refused.map_or(0, |(_, c)| c);
                    }
                    None => pr.error_code = 3,
                    Some(log) if log.leader != node => pr.error_code = 6,
                    Some(log) => {
                        let earliest = log.batches.first().map_or(log.next_offset, |(o, _)| *o);
                        pr.offset = match (p.timestamp, forced) {
                            (-2, Some((e, _))) => e,
                            (-1, Some((_, l))) => l,
                            (-2, None) => earliest,
                            // By time: the first batch whose largest timestamp is at or after it.
                            (ts, None) if ts >= 0 => log
                                .batches
                                .iter()
                                .find(|(_, b)| {
                                    b.get(35..43)
                                        .and_then(|t| t.try_into().ok())
                                        .is_some_and(|t| i64::from_be_bytes(t) >= ts)
                                })
                                .map_or(log.high_watermark(), |(o, _)| *o),
                            _ => log.high_watermark(),
                        };
                    }
                }
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        Body::ListOffsets(r)
    }

    pub(super) fn fetch(&self, node: i32, req: FetchRequest) -> Body {
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
        let missing = self
            .take_rule(|m| *m == Misbehave::FetchMissingPartition)
            .is_some();
        let st = self.lock();
        let mut r = FetchResponse::default();
        for t in req.topics {
            let mut tr = fetch_response::FetchableTopicResponse::default();
            tr.topic = t.topic.clone();
            tr.topic_id = t.topic_id;
            // From v13 the topic is named by its id (the name is empty): one not known, or of a
            // topic deleted since, is UNKNOWN_TOPIC_ID, as Kafka answers.
            let by_id = !t.topic_id.is_nil();
            let name = if by_id {
                st.topic_ids
                    .iter()
                    .find(|(_, id)| **id == t.topic_id.as_u128())
                    .map(|(n, _)| n.clone())
            } else {
                Some(t.topic.0.to_string())
            };
            let logs = name.and_then(|n| st.topics.get(&n));
            for p in &t.partitions {
                let mut pd = fetch_response::PartitionData::default();
                pd.partition_index = p.partition;
                pd.last_stable_offset = -1;
                pd.log_start_offset = -1;
                pd.preferred_read_replica = BrokerId(-1);
                match logs.and_then(|l| l.get(p.partition as usize)) {
                    None if by_id && logs.is_none() => pd.error_code = 100,
                    None => pd.error_code = 3,
                    Some(log) if log.leader != node => pd.error_code = 6,
                    Some(_) if error.is_some() => pd.error_code = error.unwrap_or(0),
                    Some(log) => {
                        let hw = log.high_watermark();
                        pd.high_watermark = hw;
                        let earliest = log.batches.first().map_or(log.next_offset, |(o, _)| *o);
                        if p.fetch_offset < earliest || p.fetch_offset > hw {
                            pd.error_code = 1;
                        } else if no_progress {
                            let mut b = BytesMut::new();
                            b.put_i64(p.fetch_offset);
                            b.put_i32(1_000_000);
                            b.put_bytes(0, 20);
                            pd.records = Some(b.freeze());
                        } else {
                            let mut out = BytesMut::new();
                            for (base, b) in log.batches.iter().filter(|(base, _)| *base < hw) {
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
                if !missing {
                    tr.partitions.push(pd);
                }
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
pub(super) fn fetch_is_empty(r: &FetchResponse) -> bool {
    r.responses.iter().all(|t| {
        t.partitions
            .iter()
            .all(|p| p.error_code == 0 && p.records.as_ref().is_none_or(|b| b.is_empty()))
    })
}

pub(super) fn store(log: &mut PartitionLog, mut b: BytesMut) {
    let base = log.next_offset;
    b[..8].copy_from_slice(&base.to_be_bytes());
    let count = BatchHeader::parse(&b).map_or(1, |h| h.last_offset_delta as i64 + 1);
    log.next_offset += count;
    log.batches.push((base, b.freeze()));
}

pub(super) fn batch_values(b: &[u8]) -> Vec<Vec<u8>> {
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

pub(super) fn decode<T: Decodable>(frame: &mut Bytes, version: i16) -> Option<T> {
    T::decode(frame, version).ok()
}

pub(super) enum Reply {
    Bytes(Bytes),
    /// Answer after a while (a long-polling fetch with nothing to return).
    Later(Bytes, std::time::Duration),
    Nothing,
    Hang,
    Close,
    /// Not yet: handle the same request again after [`HOLD_STEP`] (a follower's SyncGroup waiting for
    /// the leader's).
    Wait,
}

/// How often a held request is looked at again.
pub(super) const HOLD_STEP: std::time::Duration = std::time::Duration::from_millis(50);
/// How long a request is held at most.
pub(super) const HOLD_MAX: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) enum Body {
    SaslHandshake(SaslHandshakeResponse),
    SaslAuthenticate(SaslAuthenticateResponse),
    ApiVersions(ApiVersionsResponse),
    Metadata(MetadataResponse),
    InitProducerId(InitProducerIdResponse),
    Produce(ProduceResponse),
    ListOffsets(ListOffsetsResponse),
    Fetch(FetchResponse),
    FindCoordinator(FindCoordinatorResponse),
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    LeaveGroup(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    OffsetFetch(OffsetFetchResponse),
    DescribeProducers(DescribeProducersResponse),
    CreateTopics(CreateTopicsResponse),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse),
}

impl Body {
    pub(super) fn encode(&self, out: &mut BytesMut, version: i16) -> anyhow::Result<()> {
        match self {
            // The ApiVersions response body is encoded at the request's version, but we only answer
            // versions we can (0..=3).
            Body::ApiVersions(r) => r.encode(out, version.min(3)),
            Body::Metadata(r) => r.encode(out, version),
            Body::SaslHandshake(r) => r.encode(out, version),
            Body::SaslAuthenticate(r) => r.encode(out, version),
            Body::InitProducerId(r) => r.encode(out, version),
            Body::Produce(r) => r.encode(out, version),
            Body::ListOffsets(r) => r.encode(out, version),
            Body::Fetch(r) => r.encode(out, version),
            Body::FindCoordinator(r) => r.encode(out, version),
            Body::JoinGroup(r) => r.encode(out, version),
            Body::SyncGroup(r) => r.encode(out, version),
            Body::Heartbeat(r) => r.encode(out, version),
            Body::LeaveGroup(r) => r.encode(out, version),
            Body::OffsetCommit(r) => r.encode(out, version),
            Body::OffsetFetch(r) => r.encode(out, version),
            Body::DescribeProducers(r) => r.encode(out, version),
            Body::ConsumerGroupHeartbeat(r) => r.encode(out, version),
            Body::CreateTopics(r) => r.encode(out, version),
        }
    }
}
