//! Response body layouts, one per API version range shipper negotiates, each derived field by field
//! from kafka-protocol's generated decoders (which mirror Kafka's message JSON).

use kafka_protocol::messages::ApiKey;

use super::F::{self, *};

/// Tagged fields, none of them checked (each is skipped by its size).
pub(super) const NO_TAGS: F = Tags(&[]);
const I32_ARR: F = Arr(&[I32]);
const NODE_ENDPOINT: &[F] = &[I32, Str, I32, Str, NO_TAGS];

const API_VERSIONS_V0: &[F] = &[I16, Arr32(&[I16, I16, I16])];
const API_VERSIONS_V3: &[F] = &[
    I16,
    Arr(&[I16, I16, I16, NO_TAGS]),
    I32,
    Tags(&[
        (0, &[Arr(&[Str, I16, I16, NO_TAGS])]),
        (1, &[I64]),
        (2, &[Arr(&[Str, I16, I16, NO_TAGS])]),
        (3, &[I8]),
    ]),
];

const META_BROKER: &[F] = &[I32, Str, I32, Str, NO_TAGS];
const META_PARTITION: &[F] = &[I16, I32, I32, I32, I32_ARR, I32_ARR, I32_ARR, NO_TAGS];
const META_TOPIC_V9: &[F] = &[I16, Str, I8, Arr(META_PARTITION), I32, NO_TAGS];
const META_TOPIC_V10: &[F] = &[I16, Str, Uuid, I8, Arr(META_PARTITION), I32, NO_TAGS];
const METADATA_V9: &[F] = &[
    I32,
    Arr(META_BROKER),
    Str,
    I32,
    Arr(META_TOPIC_V9),
    I32,
    NO_TAGS,
];
const METADATA_V10: &[F] = &[
    I32,
    Arr(META_BROKER),
    Str,
    I32,
    Arr(META_TOPIC_V10),
    I32,
    NO_TAGS,
];
const METADATA_V11: &[F] = &[
    I32,
    Arr(META_BROKER),
    Str,
    I32,
    Arr(META_TOPIC_V10),
    NO_TAGS,
];

const LEADER_ID_AND_EPOCH: &[F] = &[I32, I32, NO_TAGS];
const PRODUCE_PARTITION: &[F] = &[
    I32,
    I16,
    I64,
    I64,
    I64,
    Arr(&[I32, Str, NO_TAGS]),
    Str,
    Tags(&[(0, LEADER_ID_AND_EPOCH)]),
];
const PRODUCE_V9: &[F] = &[
    Arr(&[Str, Arr(PRODUCE_PARTITION), NO_TAGS]),
    I32,
    Tags(&[(0, &[Arr(NODE_ENDPOINT)])]),
];

const FETCH_PARTITION: &[F] = &[
    I32,
    I16,
    I64,
    I64,
    I64,
    Arr(&[I64, I64, NO_TAGS]),
    I32,
    Bytes,
    Tags(&[
        (0, &[I32, I64, NO_TAGS]),
        (1, LEADER_ID_AND_EPOCH),
        (2, &[I64, I32, NO_TAGS]),
    ]),
];
const FETCH_V12: &[F] = &[
    I32,
    I16,
    I32,
    Arr(&[Str, Arr(FETCH_PARTITION), NO_TAGS]),
    Tags(&[(0, &[Arr(NODE_ENDPOINT)])]),
];
/// v13 names each topic by its id.
const FETCH_V13: &[F] = &[
    I32,
    I16,
    I32,
    Arr(&[Uuid, Arr(FETCH_PARTITION), NO_TAGS]),
    Tags(&[(0, &[Arr(NODE_ENDPOINT)])]),
];

const LIST_OFFSETS_V6: &[F] = &[
    I32,
    Arr(&[Str, Arr(&[I32, I16, I64, I64, I32, NO_TAGS]), NO_TAGS]),
    NO_TAGS,
];

const INIT_PRODUCER_ID_V2: &[F] = &[I32, I16, I64, I16, NO_TAGS];

// CreateTopics, asked only to validate (why a topic was not created). topic_config_error_code is
// tagged field 0 of each topic.
const CREATABLE_TOPIC_CONFIGS: &[F] = &[Str, Str, I8, I8, I8, NO_TAGS];
const CREATE_TOPICS_TOPIC_V5: &[F] = &[
    Str,
    I16,
    Str,
    I32,
    I16,
    Arr(CREATABLE_TOPIC_CONFIGS),
    Tags(&[(0, &[I16])]),
];
const CREATE_TOPICS_TOPIC_V7: &[F] = &[
    Str,
    Uuid,
    I16,
    Str,
    I32,
    I16,
    Arr(CREATABLE_TOPIC_CONFIGS),
    Tags(&[(0, &[I16])]),
];
const CREATE_TOPICS_V5: &[F] = &[I32, Arr(CREATE_TOPICS_TOPIC_V5), NO_TAGS];
const CREATE_TOPICS_V7: &[F] = &[I32, Arr(CREATE_TOPICS_TOPIC_V7), NO_TAGS];

const SASL_HANDSHAKE_V1: &[F] = &[I16, Arr32(&[Str16])];
const SASL_AUTHENTICATE_V2: &[F] = &[I16, Str, Bytes, I64, NO_TAGS];

// Consumer groups. None of these responses has tagged fields of its own in kafka-protocol 0.18, so
// every struct ends in NO_TAGS.

const FIND_COORDINATOR_V4: &[F] = &[I32, Arr(&[Str, I32, Str, I32, I16, Str, NO_TAGS]), NO_TAGS];

const JOIN_GROUP_MEMBER: &[F] = &[Str, Str, Bytes, NO_TAGS];
const JOIN_GROUP_V7: &[F] = &[
    I32,
    I16,
    I32,
    Str,
    Str,
    Str,
    Str,
    Arr(JOIN_GROUP_MEMBER),
    NO_TAGS,
];
/// v9 adds SkipAssignment (a bool, one byte) after Leader.
const JOIN_GROUP_V9: &[F] = &[
    I32,
    I16,
    I32,
    Str,
    Str,
    Str,
    I8,
    Str,
    Arr(JOIN_GROUP_MEMBER),
    NO_TAGS,
];

const SYNC_GROUP_V5: &[F] = &[I32, I16, Str, Str, Bytes, NO_TAGS];

const HEARTBEAT_V4: &[F] = &[I32, I16, NO_TAGS];

const LEAVE_GROUP_V4: &[F] = &[I32, I16, Arr(&[Str, Str, I16, NO_TAGS]), NO_TAGS];

const OFFSET_COMMIT_V8: &[F] = &[
    I32,
    Arr(&[Str, Arr(&[I32, I16, NO_TAGS]), NO_TAGS]),
    NO_TAGS,
];

const OFFSET_FETCH_PARTITION_V8: &[F] = &[I32, I64, I32, Str, I16, NO_TAGS];
const OFFSET_FETCH_V8: &[F] = &[
    I32,
    Arr(&[
        Str,
        Arr(&[Str, Arr(OFFSET_FETCH_PARTITION_V8), NO_TAGS]),
        I16,
        NO_TAGS,
    ]),
    NO_TAGS,
];

const CONSUMER_GROUP_HEARTBEAT_V0: &[F] = &[
    I32,
    I16,
    Str,
    Str,
    I32,
    I32,
    Opt(&[Arr(&[Uuid, I32_ARR, NO_TAGS]), NO_TAGS]),
    NO_TAGS,
];

const DESCRIBE_GROUPS_MEMBER: &[F] = &[Str, Str, Str, Str, Bytes, Bytes, NO_TAGS];
const DESCRIBE_GROUPS_V5: &[F] = &[
    I32,
    Arr(&[
        I16,
        Str,
        Str,
        Str,
        Str,
        Arr(DESCRIBE_GROUPS_MEMBER),
        I32,
        NO_TAGS,
    ]),
    NO_TAGS,
];
/// v6 adds ErrorMessage after each group's ErrorCode.
const DESCRIBE_GROUPS_V6: &[F] = &[
    I32,
    Arr(&[
        I16,
        Str,
        Str,
        Str,
        Str,
        Str,
        Arr(DESCRIBE_GROUPS_MEMBER),
        I32,
        NO_TAGS,
    ]),
    NO_TAGS,
];

const LIST_GROUPS_V4: &[F] = &[I32, I16, Arr(&[Str, Str, Str, NO_TAGS]), NO_TAGS];
/// v5 adds GroupType to each group.
const LIST_GROUPS_V5: &[F] = &[I32, I16, Arr(&[Str, Str, Str, Str, NO_TAGS]), NO_TAGS];

const CGD_TOPIC_PARTITIONS: &[F] = &[Uuid, Str, I32_ARR, NO_TAGS];
/// Assignment and TargetAssignment are non-nullable structs, so each is its fields inline: the
/// TopicPartitions array and the struct's own tagged fields.
const CGD_MEMBER_V0: &[F] = &[
    Str,
    Str,
    Str,
    I32,
    Str,
    Str,
    Arr(&[Str]),
    Str,
    Arr(CGD_TOPIC_PARTITIONS),
    NO_TAGS,
    Arr(CGD_TOPIC_PARTITIONS),
    NO_TAGS,
    NO_TAGS,
];
/// v1 adds MemberType (int8) at the end of each member.
const CGD_MEMBER_V1: &[F] = &[
    Str,
    Str,
    Str,
    I32,
    Str,
    Str,
    Arr(&[Str]),
    Str,
    Arr(CGD_TOPIC_PARTITIONS),
    NO_TAGS,
    Arr(CGD_TOPIC_PARTITIONS),
    NO_TAGS,
    I8,
    NO_TAGS,
];
const CONSUMER_GROUP_DESCRIBE_V0: &[F] = &[
    I32,
    Arr(&[
        I16,
        Str,
        Str,
        Str,
        I32,
        I32,
        Str,
        Arr(CGD_MEMBER_V0),
        I32,
        NO_TAGS,
    ]),
    NO_TAGS,
];
const CONSUMER_GROUP_DESCRIBE_V1: &[F] = &[
    I32,
    Arr(&[
        I16,
        Str,
        Str,
        Str,
        I32,
        I32,
        Str,
        Arr(CGD_MEMBER_V1),
        I32,
        NO_TAGS,
    ]),
    NO_TAGS,
];

const DESCRIBE_PRODUCERS_V0: &[F] = &[
    I32,
    Arr(&[
        Str,
        Arr(&[
            I32,
            I16,
            Str,
            Arr(&[I64, I32, I32, I64, I32, I64, NO_TAGS]),
            NO_TAGS,
        ]),
        NO_TAGS,
    ]),
    NO_TAGS,
];

/// The layout of a response body, for the versions shipper negotiates.
pub(super) fn layout(api: ApiKey, version: i16) -> Option<&'static [F]> {
    Some(match (api, version) {
        (ApiKey::ApiVersions, 0) => API_VERSIONS_V0,
        (ApiKey::ApiVersions, 3..=4) => API_VERSIONS_V3,
        (ApiKey::Metadata, 9) => METADATA_V9,
        (ApiKey::Metadata, 10) => METADATA_V10,
        (ApiKey::Metadata, 11..=12) => METADATA_V11,
        (ApiKey::Produce, 9..=12) => PRODUCE_V9,
        (ApiKey::Fetch, 12) => FETCH_V12,
        (ApiKey::Fetch, 13) => FETCH_V13,
        (ApiKey::ListOffsets, 6..=7) => LIST_OFFSETS_V6,
        (ApiKey::DescribeProducers, 0) => DESCRIBE_PRODUCERS_V0,
        (ApiKey::InitProducerId, 2..=5) => INIT_PRODUCER_ID_V2,
        (ApiKey::CreateTopics, 5..=6) => CREATE_TOPICS_V5,
        (ApiKey::CreateTopics, 7) => CREATE_TOPICS_V7,
        (ApiKey::SaslHandshake, 1) => SASL_HANDSHAKE_V1,
        (ApiKey::SaslAuthenticate, 2) => SASL_AUTHENTICATE_V2,
        (ApiKey::FindCoordinator, 4..=6) => FIND_COORDINATOR_V4,
        (ApiKey::JoinGroup, 7..=8) => JOIN_GROUP_V7,
        (ApiKey::JoinGroup, 9) => JOIN_GROUP_V9,
        (ApiKey::SyncGroup, 5) => SYNC_GROUP_V5,
        (ApiKey::Heartbeat, 4) => HEARTBEAT_V4,
        (ApiKey::LeaveGroup, 4..=5) => LEAVE_GROUP_V4,
        (ApiKey::OffsetCommit, 8..=9) => OFFSET_COMMIT_V8,
        (ApiKey::OffsetFetch, 8..=9) => OFFSET_FETCH_V8,
        (ApiKey::ConsumerGroupHeartbeat, 0..=1) => CONSUMER_GROUP_HEARTBEAT_V0,
        (ApiKey::DescribeGroups, 5) => DESCRIBE_GROUPS_V5,
        (ApiKey::DescribeGroups, 6) => DESCRIBE_GROUPS_V6,
        (ApiKey::ListGroups, 4) => LIST_GROUPS_V4,
        (ApiKey::ListGroups, 5) => LIST_GROUPS_V5,
        (ApiKey::ConsumerGroupDescribe, 0) => CONSUMER_GROUP_DESCRIBE_V0,
        (ApiKey::ConsumerGroupDescribe, 1) => CONSUMER_GROUP_DESCRIBE_V1,
        _ => return None,
    })
}
