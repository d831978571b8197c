use super::*;

#[test]
fn absurd_array_count_is_rejected_before_any_allocation() {
    // ListOffsets v6: throttle, then a topics array claiming 2^28 elements.
    let body = [0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x01];
    let e = check_body(ApiKey::ListOffsets, 6, &body).unwrap_err();
    assert!(e.contains("array of"), "{e}");
}

#[test]
fn trailing_bytes_are_rejected() {
    let body = [0, 0, 0, 0, 1, 0, 0xff];
    assert!(check_body(ApiKey::ListOffsets, 6, &body).is_err());
    assert!(check_body(ApiKey::ListOffsets, 6, &body[..6]).is_ok());
}

/// kafka-protocol keeps every unknown tagged field in a map: a frame of millions of empty ones is
/// counted in the decode estimate (it was 0, so 128 MiB of them decoded to gigabytes).
#[test]
fn unknown_tagged_fields_count_in_the_decode_estimate() {
    let mut body = vec![0, 0, 0, 0, 1];
    let base = check_body(ApiKey::ListOffsets, 6, &[0, 0, 0, 0, 1, 0]).unwrap();
    body.extend_from_slice(&[0xe8, 0x07]); // 1,000 tagged fields
    for i in 0..1000u32 {
        body.extend_from_slice(&[0x80 | (i & 0x7f) as u8, (i >> 7) as u8 + 1, 0]);
    }
    let with_tags = check_body(ApiKey::ListOffsets, 6, &body).unwrap();
    assert!(with_tags >= base + 1000 * 48, "{base} -> {with_tags}");
}

#[test]
fn unsupported_versions_are_refused() {
    assert!(check_body(ApiKey::Fetch, 4, &[]).is_err());
}

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    consumer_group_describe_response as cgd, consumer_group_heartbeat_response as cghb,
    describe_groups_response as dg, find_coordinator_response::Coordinator,
    join_group_response::JoinGroupResponseMember, leave_group_response::MemberResponse,
    list_groups_response::ListedGroup, offset_commit_response as oc, offset_fetch_response as of,
    BrokerId, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatResponse,
    DescribeGroupsResponse, FindCoordinatorResponse, HeartbeatResponse, JoinGroupResponse,
    LeaveGroupResponse, ListGroupsResponse, OffsetCommitResponse, OffsetFetchResponse,
    SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

/// Encodes `resp` as kafka-protocol does at `version`, then checks that the walk accepts exactly those
/// bytes: not any shorter prefix, nor one byte more. Also checks kafka-protocol reads them back, so the
/// populated data really went on the wire.
fn assert_layout_matches<T>(api: ApiKey, version: i16, resp: &T)
where
    T: Encodable + Decodable + PartialEq + std::fmt::Debug,
{
    let mut buf = BytesMut::new();
    resp.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: encode: {e:#}"));
    let body = buf.freeze();
    if let Err(e) = check_body(api, version, &body) {
        panic!("{api:?} v{version}: {e} in {body:?}");
    }
    assert_eq!(
        &T::decode(&mut body.clone(), version).unwrap(),
        resp,
        "{api:?} v{version}"
    );
    for n in 0..body.len() {
        assert!(
            check_body(api, version, &body[..n]).is_err(),
            "{api:?} v{version}: accepted the first {n} of {} bytes",
            body.len()
        );
    }
    let mut longer = body.to_vec();
    longer.push(0);
    assert!(
        check_body(api, version, &longer).is_err(),
        "{api:?} v{version}: accepted a byte past the end"
    );
}

#[test]
fn find_coordinator_v4_to_v6() {
    let resp = FindCoordinatorResponse::default()
        .with_throttle_time_ms(7)
        .with_coordinators(vec![
            Coordinator::default()
                .with_key(s("group-a"))
                .with_node_id(BrokerId(1))
                .with_host(s("broker-1"))
                .with_port(9092)
                .with_error_message(None),
            Coordinator::default()
                .with_key(s("group-b"))
                .with_node_id(BrokerId(-1))
                .with_host(s("b2"))
                .with_port(9093)
                .with_error_code(15)
                .with_error_message(Some(s("coordinator not available"))),
        ]);
    for v in 4..=6 {
        assert_layout_matches(ApiKey::FindCoordinator, v, &resp);
    }
}

fn join_group() -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_throttle_time_ms(3)
        .with_error_code(0)
        .with_generation_id(12)
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_leader(s("member-1"))
        .with_member_id(s("member-1"))
        .with_members(vec![
            JoinGroupResponseMember::default()
                .with_member_id(s("member-1"))
                .with_group_instance_id(Some(s("instance-1")))
                .with_metadata(Bytes::from_static(b"\x00\x03meta")),
            JoinGroupResponseMember::default()
                .with_member_id(s("member-2"))
                .with_group_instance_id(None)
                .with_metadata(Bytes::from_static(b"x")),
        ])
}

#[test]
fn join_group_v7_to_v9() {
    for v in 7..=9 {
        assert_layout_matches(ApiKey::JoinGroup, v, &join_group());
        let follower = join_group()
            .with_protocol_type(None)
            .with_protocol_name(None)
            .with_member_id(s("member-2"))
            .with_members(vec![]);
        assert_layout_matches(ApiKey::JoinGroup, v, &follower);
    }
    let skip = join_group().with_skip_assignment(true);
    assert_layout_matches(ApiKey::JoinGroup, 9, &skip);
}

#[test]
fn sync_group_v5() {
    let full = SyncGroupResponse::default()
        .with_throttle_time_ms(1)
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("cooperative-sticky")))
        .with_assignment(Bytes::from_static(b"\x00\x03assignment"));
    assert_layout_matches(ApiKey::SyncGroup, 5, &full);
    let empty = SyncGroupResponse::default()
        .with_error_code(27)
        .with_protocol_type(None)
        .with_protocol_name(None);
    assert_layout_matches(ApiKey::SyncGroup, 5, &empty);
}

#[test]
fn heartbeat_v4() {
    let resp = HeartbeatResponse::default()
        .with_throttle_time_ms(9)
        .with_error_code(27);
    assert_layout_matches(ApiKey::Heartbeat, 4, &resp);
}

#[test]
fn leave_group_v4_to_v5() {
    let resp = LeaveGroupResponse::default()
        .with_throttle_time_ms(2)
        .with_error_code(0)
        .with_members(vec![
            MemberResponse::default()
                .with_member_id(s("member-1"))
                .with_group_instance_id(Some(s("instance-1"))),
            MemberResponse::default()
                .with_member_id(s("member-2"))
                .with_group_instance_id(None)
                .with_error_code(25),
        ]);
    for v in 4..=5 {
        assert_layout_matches(ApiKey::LeaveGroup, v, &resp);
    }
}

#[test]
fn offset_commit_v8_to_v9() {
    let partitions = |first: i32| {
        vec![
            oc::OffsetCommitResponsePartition::default().with_partition_index(first),
            oc::OffsetCommitResponsePartition::default()
                .with_partition_index(first + 1)
                .with_error_code(12),
        ]
    };
    let resp = OffsetCommitResponse::default()
        .with_throttle_time_ms(4)
        .with_topics(vec![
            oc::OffsetCommitResponseTopic::default()
                .with_name(s("orders").into())
                .with_partitions(partitions(0)),
            oc::OffsetCommitResponseTopic::default()
                .with_name(s("payments").into())
                .with_partitions(partitions(5)),
        ]);
    for v in 8..=9 {
        assert_layout_matches(ApiKey::OffsetCommit, v, &resp);
    }
}

#[test]
fn offset_fetch_v8_to_v9() {
    let topic = |name: &'static str| {
        of::OffsetFetchResponseTopics::default()
            .with_name(s(name).into())
            .with_partitions(vec![
                of::OffsetFetchResponsePartitions::default()
                    .with_partition_index(0)
                    .with_committed_offset(1234)
                    .with_committed_leader_epoch(5)
                    .with_metadata(Some(s("committed by shipper"))),
                of::OffsetFetchResponsePartitions::default()
                    .with_partition_index(1)
                    .with_committed_offset(-1)
                    .with_metadata(None)
                    .with_error_code(3),
            ])
    };
    let resp = OffsetFetchResponse::default()
        .with_throttle_time_ms(6)
        .with_groups(vec![
            of::OffsetFetchResponseGroup::default()
                .with_group_id(s("group-a").into())
                .with_topics(vec![topic("orders"), topic("payments")]),
            of::OffsetFetchResponseGroup::default()
                .with_group_id(s("group-b").into())
                .with_topics(vec![topic("audit"), topic("logs")])
                .with_error_code(16),
        ]);
    for v in 8..=9 {
        assert_layout_matches(ApiKey::OffsetFetch, v, &resp);
    }
}

#[test]
fn consumer_group_heartbeat_v0_to_v1() {
    let no_assignment = ConsumerGroupHeartbeatResponse::default()
        .with_throttle_time_ms(1)
        .with_error_code(25)
        .with_error_message(Some(s("unknown member id")))
        .with_member_id(None)
        .with_member_epoch(-1)
        .with_heartbeat_interval_ms(0)
        .with_assignment(None);
    let assigned = ConsumerGroupHeartbeatResponse::default()
        .with_error_message(None)
        .with_member_id(Some(s("Xy3-member")))
        .with_member_epoch(8)
        .with_heartbeat_interval_ms(5000)
        .with_assignment(Some(cghb::Assignment::default().with_topic_partitions(
            vec![
            cghb::TopicPartitions::default()
                .with_topic_id("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".parse().unwrap())
                .with_partitions(vec![0, 2]),
            cghb::TopicPartitions::default()
                .with_topic_id("11111111-2222-3333-4444-555555555555".parse().unwrap())
                .with_partitions(vec![1, 3]),
        ],
        )));
    let revoked_all = assigned
        .clone()
        .with_assignment(Some(cghb::Assignment::default()));
    for v in 0..=1 {
        assert_layout_matches(ApiKey::ConsumerGroupHeartbeat, v, &no_assignment);
        assert_layout_matches(ApiKey::ConsumerGroupHeartbeat, v, &assigned);
        assert_layout_matches(ApiKey::ConsumerGroupHeartbeat, v, &revoked_all);
    }
}

#[test]
fn nullable_struct_markers_other_than_minus_one_and_one_are_refused() {
    let resp = ConsumerGroupHeartbeatResponse::default().with_assignment(None);
    let mut buf = BytesMut::new();
    resp.encode(&mut buf, 0).unwrap();
    let mut body = buf.to_vec();
    // The marker is the last field before the top-level tagged fields (an empty set, one byte).
    let at = body.len() - 2;
    assert_eq!(body[at], 0xff);
    assert!(check_body(ApiKey::ConsumerGroupHeartbeat, 0, &body).is_ok());
    for marker in [0u8, 2, 0x7f, 0x80, 0xfe] {
        body[at] = marker;
        let e = check_body(ApiKey::ConsumerGroupHeartbeat, 0, &body).unwrap_err();
        assert!(e.contains("marker"), "{marker}: {e}");
    }
}

fn described_group(id: &'static str, error_message: Option<StrBytes>) -> dg::DescribedGroup {
    dg::DescribedGroup::default()
        .with_error_message(error_message)
        .with_group_id(s(id).into())
        .with_group_state(s("Stable"))
        .with_protocol_type(s("consumer"))
        .with_protocol_data(s("range"))
        .with_members(vec![
            dg::DescribedGroupMember::default()
                .with_member_id(s("member-1"))
                .with_group_instance_id(Some(s("instance-1")))
                .with_client_id(s("shipper"))
                .with_client_host(s("/10.0.0.1"))
                .with_member_metadata(Bytes::from_static(b"\x00\x01metadata"))
                .with_member_assignment(Bytes::from_static(b"\x00\x01assignment")),
            dg::DescribedGroupMember::default()
                .with_member_id(s("member-2"))
                .with_group_instance_id(None)
                .with_client_id(s("other"))
                .with_client_host(s("/10.0.0.2"))
                .with_member_metadata(Bytes::from_static(b"m"))
                .with_member_assignment(Bytes::new()),
        ])
        .with_authorized_operations(0x0f)
}

#[test]
fn describe_groups_v5_to_v6() {
    let v5 = DescribeGroupsResponse::default()
        .with_throttle_time_ms(2)
        .with_groups(vec![
            described_group("group-a", None),
            described_group("group-b", None).with_error_code(15),
        ]);
    assert_layout_matches(ApiKey::DescribeGroups, 5, &v5);
    assert_layout_matches(ApiKey::DescribeGroups, 6, &v5);
    let v6 = DescribeGroupsResponse::default().with_groups(vec![
        described_group("group-a", Some(s("not authorized"))).with_error_code(30),
        described_group("group-b", None),
    ]);
    assert_layout_matches(ApiKey::DescribeGroups, 6, &v6);
}

#[test]
fn list_groups_v4_to_v5() {
    let group = |id: &'static str, state: &'static str| {
        ListedGroup::default()
            .with_group_id(s(id).into())
            .with_protocol_type(s("consumer"))
            .with_group_state(s(state))
    };
    let v4 = ListGroupsResponse::default()
        .with_throttle_time_ms(3)
        .with_groups(vec![group("group-a", "Stable"), group("group-b", "Empty")]);
    assert_layout_matches(ApiKey::ListGroups, 4, &v4);
    assert_layout_matches(ApiKey::ListGroups, 5, &v4);
    let v5 = ListGroupsResponse::default()
        .with_error_code(0)
        .with_groups(vec![
            group("group-a", "Stable").with_group_type(s("consumer")),
            group("group-b", "Empty").with_group_type(s("classic")),
        ]);
    assert_layout_matches(ApiKey::ListGroups, 5, &v5);
}

fn cgd_assignment(name: &'static str, partitions: Vec<i32>) -> cgd::Assignment {
    cgd::Assignment::default().with_topic_partitions(vec![
        cgd::TopicPartitions::default()
            .with_topic_id("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".parse().unwrap())
            .with_topic_name(s(name).into())
            .with_partitions(partitions),
        cgd::TopicPartitions::default()
            .with_topic_id("11111111-2222-3333-4444-555555555555".parse().unwrap())
            .with_topic_name(s("payments").into())
            .with_partitions(vec![4]),
    ])
}

fn cgd_member(id: &'static str, instance: Option<StrBytes>, member_type: i8) -> cgd::Member {
    cgd::Member::default()
        .with_member_id(s(id))
        .with_instance_id(instance.clone())
        .with_rack_id(instance.map(|_| s("rack-a")))
        .with_member_epoch(4)
        .with_client_id(s("shipper"))
        .with_client_host(s("/10.0.0.1"))
        .with_subscribed_topic_names(vec![s("orders").into(), s("payments").into()])
        .with_subscribed_topic_regex(Some(s("pay.*")))
        .with_assignment(cgd_assignment("orders", vec![0, 1]))
        .with_target_assignment(cgd_assignment("orders", vec![0, 1, 2]))
        .with_member_type(member_type)
}

fn cgd_response(member_type: i8) -> ConsumerGroupDescribeResponse {
    ConsumerGroupDescribeResponse::default()
        .with_throttle_time_ms(5)
        .with_groups(vec![
            cgd::DescribedGroup::default()
                .with_error_message(None)
                .with_group_id(s("group-a").into())
                .with_group_state(s("Stable"))
                .with_group_epoch(9)
                .with_assignment_epoch(9)
                .with_assignor_name(s("uniform"))
                .with_members(vec![
                    cgd_member("member-1", Some(s("instance-1")), member_type),
                    cgd_member("member-2", None, member_type)
                        .with_subscribed_topic_regex(None)
                        .with_assignment(cgd::Assignment::default()),
                ])
                .with_authorized_operations(-2147483648),
            cgd::DescribedGroup::default()
                .with_error_code(69)
                .with_error_message(Some(s("group id not found")))
                .with_group_id(s("group-b").into())
                .with_group_state(s("Dead"))
                .with_assignor_name(s("range")),
        ])
}

#[test]
fn consumer_group_describe_v0_to_v1() {
    // MemberType is v1 only: at v0 kafka-protocol refuses to encode anything but its default (-1).
    assert_layout_matches(ApiKey::ConsumerGroupDescribe, 0, &cgd_response(-1));
    assert_layout_matches(ApiKey::ConsumerGroupDescribe, 1, &cgd_response(-1));
    assert_layout_matches(ApiKey::ConsumerGroupDescribe, 1, &cgd_response(1));
}

#[test]
fn group_versions_outside_the_layouts_are_not_checked() {
    for (api, below, above) in [
        (ApiKey::FindCoordinator, 3, 7),
        (ApiKey::JoinGroup, 6, 10),
        (ApiKey::SyncGroup, 4, 6),
        (ApiKey::Heartbeat, 3, 5),
        (ApiKey::LeaveGroup, 3, 6),
        (ApiKey::OffsetCommit, 7, 10),
        (ApiKey::OffsetFetch, 7, 10),
        (ApiKey::ConsumerGroupHeartbeat, -1, 2),
        (ApiKey::DescribeGroups, 4, 7),
        (ApiKey::ListGroups, 3, 6),
        (ApiKey::ConsumerGroupDescribe, -1, 2),
        (ApiKey::CreateTopics, 4, 8),
    ] {
        assert!(!is_checked(api, below), "{api:?} v{below}");
        assert!(!is_checked(api, above), "{api:?} v{above}");
        assert!(is_checked(api, below + 1), "{api:?} v{}", below + 1);
        assert!(is_checked(api, above - 1), "{api:?} v{}", above - 1);
    }
}

#[test]
fn describe_producers_v0() {
    use kafka_protocol::messages::describe_producers_response::{
        PartitionResponse, ProducerState, TopicResponse,
    };
    use kafka_protocol::messages::{DescribeProducersResponse, ProducerId, TopicName};
    let resp = DescribeProducersResponse::default()
        .with_throttle_time_ms(3)
        .with_topics(vec![TopicResponse::default()
            .with_name(TopicName(s("logs")))
            .with_partitions(vec![
                PartitionResponse::default()
                    .with_partition_index(0)
                    .with_active_producers(vec![
                        ProducerState::default()
                            .with_producer_id(ProducerId(4001))
                            .with_producer_epoch(2)
                            .with_last_sequence(977)
                            .with_last_timestamp(1_700_000_000_000)
                            .with_coordinator_epoch(-1)
                            .with_current_txn_start_offset(-1),
                        ProducerState::default().with_producer_id(ProducerId(9)),
                    ]),
                PartitionResponse::default()
                    .with_partition_index(1)
                    .with_error_code(6)
                    .with_error_message(Some(s("not the leader"))),
            ])]);
    assert_layout_matches(ApiKey::DescribeProducers, 0, &resp);
}

#[test]
fn create_topics_v5_to_v7() {
    use kafka_protocol::messages::create_topics_response::{
        CreatableTopicConfigs, CreatableTopicResult,
    };
    use kafka_protocol::messages::{CreateTopicsResponse, TopicName};
    for version in 5..=7 {
        let resp = CreateTopicsResponse::default()
            .with_throttle_time_ms(1)
            .with_topics(vec![
                CreatableTopicResult::default()
                    .with_name(TopicName(s("app_logs")))
                    .with_error_code(17)
                    .with_error_message(Some(s(
                        "Topic 'app_logs' collides with existing topic: app.logs",
                    )))
                    .with_topic_config_error_code(3),
                CreatableTopicResult::default()
                    .with_name(TopicName(s("fine")))
                    .with_topic_id(if version >= 7 {
                        uuid::Uuid::from_u128(7)
                    } else {
                        uuid::Uuid::nil()
                    })
                    .with_num_partitions(3)
                    .with_replication_factor(1)
                    .with_configs(Some(vec![CreatableTopicConfigs::default()
                        .with_name(s("cleanup.policy"))
                        .with_value(Some(s("delete")))
                        .with_config_source(5)
                        .with_is_sensitive(false)])),
            ]);
        assert_layout_matches(ApiKey::CreateTopics, version, &resp);
    }
}

fn fetch_response(version: i16) -> kafka_protocol::messages::FetchResponse {
    use kafka_protocol::messages::fetch_response as fr;
    let partition = |i: i32, records: Option<Bytes>| {
        fr::PartitionData::default()
            .with_partition_index(i)
            .with_high_watermark(40)
            .with_last_stable_offset(38)
            .with_log_start_offset(3)
            .with_aborted_transactions(Some(vec![fr::AbortedTransaction::default()
                .with_producer_id(kafka_protocol::messages::ProducerId(9))
                .with_first_offset(12)]))
            .with_preferred_read_replica(BrokerId(-1))
            .with_records(records)
    };
    let mut topic = fr::FetchableTopicResponse::default().with_partitions(vec![
        partition(0, Some(Bytes::from_static(b"0123456789"))),
        partition(1, None).with_error_code(100),
    ]);
    if version >= 13 {
        topic = topic.with_topic_id(uuid::Uuid::from_u128(0x1234_5678_9abc_def0));
    } else {
        topic = topic.with_topic(s("logs").into());
    }
    kafka_protocol::messages::FetchResponse::default()
        .with_throttle_time_ms(1)
        .with_session_id(0)
        .with_responses(vec![topic])
}

#[test]
fn fetch_v12_to_v13() {
    assert_layout_matches(ApiKey::Fetch, 12, &fetch_response(12));
    assert_layout_matches(ApiKey::Fetch, 13, &fetch_response(13));
    // A v12 body (a topic name) read as v13 (a 16-byte id) does not pass.
    let mut buf = BytesMut::new();
    fetch_response(12).encode(&mut buf, 12).unwrap();
    assert!(check_body(ApiKey::Fetch, 13, &buf).is_err());
    assert!(!is_checked(ApiKey::Fetch, 14));
}
