//! The cluster's metadata as shipper keeps it: brokers, topics, partitions and leaders, converted
//! from a Metadata response and checked (partition `i` at index `i`).

use kafka_protocol::messages::MetadataResponse;

use crate::error::Code;

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
    /// Partitions, sorted by index; index `i` holds partition `i` (checked when the metadata arrives).
    pub partitions: Vec<PartitionMeta>,
    /// The broker listed partition ids with gaps, duplicates or negative numbers: the topic cannot
    /// be used (its `error` is then UNKNOWN_SERVER_ERROR, for what looks only at the code).
    pub bad_ids: bool,
}

impl TopicMeta {
    /// The topic, to write to: an error when it is one of Kafka's internal topics, which brokers
    /// never let a client write to (t36 F2: every Produce was refused and retried for ever).
    pub fn writable(self: std::sync::Arc<Self>) -> crate::error::Result<std::sync::Arc<Self>> {
        match self.internal {
            true => Err(crate::error::Error::InternalTopic {
                topic: self.name.clone(),
            }),
            false => Ok(self),
        }
    }

    /// The leader of partition `p`, or -1.
    pub fn leader(&self, p: i32) -> i32 {
        usize::try_from(p)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .map_or(-1, |m| m.leader)
    }

    /// Whether every partition has a leader.
    pub fn all_led(&self) -> bool {
        self.partitions.iter().all(|p| p.leader >= 0)
    }
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

pub(super) fn convert(resp: MetadataResponse) -> Metadata {
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
            let mut error = t.error_code;
            // Partition i must be at index i: producer and consumer index by it. A broker that sends
            // gaps, duplicates or negative ids has sent nonsense.
            let bad_ids =
                error == 0 && partitions.iter().enumerate().any(|(i, p)| p.id != i as i32);
            if bad_ids {
                error = Code::UnknownServerError.code();
            }
            TopicMeta {
                name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                id: *t.topic_id.as_bytes(),
                error,
                internal: t.is_internal,
                partitions,
                bad_ids,
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

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{metadata_response, BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn answer(ids: &[i32]) -> MetadataResponse {
        let mut t = metadata_response::MetadataResponseTopic::default();
        t.name = Some(TopicName(StrBytes::from_static_str("t")));
        for &i in ids {
            let mut p = metadata_response::MetadataResponsePartition::default();
            p.partition_index = i;
            p.leader_id = BrokerId(1);
            t.partitions.push(p);
        }
        let mut r = MetadataResponse::default();
        r.topics.push(t);
        r
    }

    /// Gaps, duplicates or negative partition ids mark the topic unusable, and as such (they were
    /// said as the broker's UNKNOWN_SERVER_ERROR).
    #[test]
    fn partition_ids_kafka_would_not_send_mark_the_topic() {
        let good = convert(answer(&[1, 0, 2]));
        assert!(!good.topics[0].bad_ids);
        assert_eq!(good.topics[0].error, 0);
        for ids in [&[0, 0][..], &[-1, 0], &[0, 2]] {
            let md = convert(answer(ids));
            assert!(md.topics[0].bad_ids, "{ids:?}");
            assert_ne!(md.topics[0].error, 0, "{ids:?}");
        }
        let e = crate::error::Error::BadPartitionIds {
            topic: "t".into(),
            ids: "0, 0".into(),
        };
        assert!(
            e.to_string().contains("lists its partitions as 0, 0"),
            "{e}"
        );
        assert!(!e.is_retriable());
    }
}
