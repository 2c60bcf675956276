//! Writes a seed corpus for every fuzz target into `fuzz/corpus/<target>/`, using the
//! product's own encoders: `BatchBuilder`, the index encoders, `kafka-protocol` requests and
//! responses, the quorum record and frame encoders, and the group and share record encoders.
//!
//! Run from `fuzz/`: `cargo +nightly run --example make_seeds`. Existing seed files are
//! overwritten; other corpus files are left alone.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, ApiKey, ApiVersionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, ListPartitionReassignmentsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest,
    ProduceRequest, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
    ShareAcknowledgeRequest, ShareFetchRequest, ShareGroupDescribeRequest,
    ShareGroupHeartbeatRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use raft::eraftpb::{ConfState, Entry, HardState, Message, MessageType, Snapshot};
use shardlog::broker::api::SUPPORTED;
use shardlog::broker::group::record::{self as group, OffsetKey, OffsetValue};
use shardlog::broker::share::record::{self as share, DurableState, Run, StateKey};
use shardlog::cluster::quorum::frame::{self, Frame};
use shardlog::cluster::quorum::record::{self as quorum_record, RecordKind, MAGIC};
use shardlog_fuzz::{client_response, index, internal, quorum, record_batch, request_frame};
use shardlog_storage::batch::layout::ATTRIBUTES_OFFSET;
use shardlog_storage::batch::{BatchBuilder, Compression};
use shardlog_storage::index::{OffsetIndex, TimeIndex};
use uuid::Uuid;

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut written = 0;
    for (target, seeds) in [
        ("record_batch", record_batch_seeds()),
        ("offset_index", offset_index_seeds()),
        ("time_index", time_index_seeds()),
        ("request_frame", request_frame_seeds()),
        ("client_response", client_response_seeds()),
        ("quorum_record", quorum_record_seeds()),
        ("internal_records", internal_records_seeds()),
    ] {
        let dir: PathBuf = corpus.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus folder");
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
        written += seeds.len();
    }
    println!("{written} seeds");
}

type Seeds = Vec<(String, Vec<u8>)>;

fn sample_batch(compression: Compression, base_offset: i64, records: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new(1_700_000_000_000, compression);
    for index in 0..records {
        let key = format!("key-{index}");
        let value = format!("value-{index}-{}", "x".repeat(index * 3));
        match index % 3 {
            0 => builder.push_kv(
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[],
                1_700_000_000_000 + index as i64,
            ),
            1 => builder.push_kv(
                None,
                Some(value.as_bytes()),
                &[(b"trace", Some(b"abc")), (b"empty", None)],
                1_700_000_000_000 - 5,
            ),
            _ => builder.push_kv(Some(key.as_bytes()), None, &[], 1_700_000_000_010),
        };
    }
    builder.build(base_offset).expect("build a seed batch")
}

fn record_batch_seeds() -> Seeds {
    let none = sample_batch(Compression::None, 0, 3);
    let zstd = sample_batch(Compression::Zstd, 100, 4);
    let empty = BatchBuilder::new(0, Compression::None)
        .build(0)
        .expect("empty batch");
    let idempotent = {
        let mut builder = BatchBuilder::new(5, Compression::None).producer(42, 1, 7);
        builder.push_kv(Some(b"k"), Some(b"v"), &[], 6);
        builder.push_kv(Some(b"k"), Some(b"w"), &[(b"h", Some(b"1"))], 7);
        builder.build(1_000).expect("idempotent batch")
    };
    let flagged = {
        // Transactional, control and log-append-time bits set, CRC stamped again.
        let mut batch = sample_batch(Compression::None, 7, 1);
        batch[ATTRIBUTES_OFFSET + 1] |= 0x38;
        record_batch::fix_crcs(&mut batch);
        batch
    };
    let expanding = {
        // Decompresses to about 200 KB: above the small cap, below the large one.
        let mut builder = BatchBuilder::new(0, Compression::Zstd);
        let value = vec![b'z'; 2_000];
        for index in 0..100 {
            builder.push_kv(None, Some(&value), &[], index);
        }
        builder.build(0).expect("expanding batch")
    };
    let mut packed = none.clone();
    packed.extend_from_slice(&zstd);
    packed.extend_from_slice(&idempotent);
    let mut cut = packed.clone();
    cut.truncate(packed.len() - 10);

    use record_batch::{FIX_CRC, SMALL_DECOMPRESSED_CAP, SMALL_MAX_BATCH};
    vec![
        ("none".into(), record_batch::write(0, &none)),
        ("none-fix-crc".into(), record_batch::write(FIX_CRC, &none)),
        ("zstd".into(), record_batch::write(0, &zstd)),
        ("zstd-fix-crc".into(), record_batch::write(FIX_CRC, &zstd)),
        ("empty".into(), record_batch::write(0, &empty)),
        ("idempotent".into(), record_batch::write(0, &idempotent)),
        ("flagged".into(), record_batch::write(FIX_CRC, &flagged)),
        ("expanding".into(), record_batch::write(0, &expanding)),
        (
            "expanding-small-cap".into(),
            record_batch::write(SMALL_DECOMPRESSED_CAP, &expanding),
        ),
        ("packed".into(), record_batch::write(FIX_CRC, &packed)),
        (
            "packed-small-max".into(),
            record_batch::write(SMALL_MAX_BATCH, &packed),
        ),
        ("cut".into(), record_batch::write(0, &cut)),
    ]
}

fn offset_index_seeds() -> Seeds {
    let mut offsets = OffsetIndex::default();
    for (relative_offset, position) in [(0, 0), (10, 4_096), (25, 8_192), (40, 12_288)] {
        offsets.push(relative_offset, position);
    }
    let bytes = offsets.encode();
    vec![
        ("four".into(), index::write(16_384, 12, &bytes)),
        ("four-past-end".into(), index::write(8_192, 8_192, &bytes)),
        ("empty".into(), index::write(1, 0, &[])),
    ]
}

fn time_index_seeds() -> Seeds {
    let mut times = TimeIndex::default();
    for (timestamp, relative_offset) in [(1_700_000_000_000, 0), (1_700_000_000_500, 10)] {
        times.push(timestamp, relative_offset);
    }
    times.push(1_700_000_001_000, 25);
    let bytes = times.encode();
    vec![
        ("three".into(), index::write(26, 1_700_000_000_600, &bytes)),
        ("three-past-end".into(), index::write(25, 10, &bytes)),
        ("empty".into(), index::write(0, 0, &[])),
    ]
}

/// A default request body for each served API.
fn default_request(api_key: ApiKey) -> RequestKind {
    match api_key {
        ApiKey::Produce => ProduceRequest::default().into(),
        ApiKey::Fetch => FetchRequest::default().into(),
        ApiKey::ListOffsets => ListOffsetsRequest::default().into(),
        ApiKey::Metadata => MetadataRequest::default().into(),
        ApiKey::ApiVersions => ApiVersionsRequest::default().into(),
        ApiKey::CreateTopics => CreateTopicsRequest::default().into(),
        ApiKey::DeleteTopics => DeleteTopicsRequest::default().into(),
        ApiKey::InitProducerId => InitProducerIdRequest::default().into(),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::default().into(),
        ApiKey::IncrementalAlterConfigs => {
            kafka_protocol::messages::IncrementalAlterConfigsRequest::default().into()
        }
        ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::default().into(),
        ApiKey::OffsetCommit => OffsetCommitRequest::default().into(),
        ApiKey::OffsetFetch => OffsetFetchRequest::default().into(),
        ApiKey::FindCoordinator => FindCoordinatorRequest::default().into(),
        ApiKey::JoinGroup => JoinGroupRequest::default().into(),
        ApiKey::Heartbeat => HeartbeatRequest::default().into(),
        ApiKey::LeaveGroup => LeaveGroupRequest::default().into(),
        ApiKey::SyncGroup => SyncGroupRequest::default().into(),
        ApiKey::DescribeGroups => DescribeGroupsRequest::default().into(),
        ApiKey::ListGroups => ListGroupsRequest::default().into(),
        ApiKey::AlterPartitionReassignments => AlterPartitionReassignmentsRequest::default().into(),
        ApiKey::ListPartitionReassignments => ListPartitionReassignmentsRequest::default().into(),
        ApiKey::ShareGroupHeartbeat => ShareGroupHeartbeatRequest::default().into(),
        ApiKey::ShareGroupDescribe => ShareGroupDescribeRequest::default().into(),
        ApiKey::ShareFetch => ShareFetchRequest::default().into(),
        ApiKey::ShareAcknowledge => ShareAcknowledgeRequest::default().into(),
        ApiKey::ReadShareGroupState => {
            kafka_protocol::messages::ReadShareGroupStateRequest::default().into()
        }
        ApiKey::WriteShareGroupState => {
            kafka_protocol::messages::WriteShareGroupStateRequest::default().into()
        }
        other => panic!("no seed request for {other:?}"),
    }
}

/// The frame (without its size prefix) of `request` at `version`, or `None` when
/// `kafka-protocol` refuses to encode it at that version.
fn request_frame(api_key: ApiKey, version: i16, request: &RequestKind) -> Option<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1_000 + i32::from(version))
        .with_client_id(Some(StrBytes::from_static_str("fuzz-seed")));
    let mut bytes = BytesMut::new();
    header
        .encode(&mut bytes, api_key.request_header_version(version))
        .ok()?;
    request.encode(&mut bytes, version).ok()?;
    Some(bytes.to_vec())
}

fn request_frame_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    for &(api_key, min, max) in SUPPORTED {
        for version in min..=max {
            let request = default_request(api_key);
            match request_frame(api_key, version, &request) {
                Some(frame) => seeds.push((
                    format!("{api_key:?}-v{version}"),
                    request_frame::write(&frame).expect("a served pair"),
                )),
                None => eprintln!("request_frame: {api_key:?} v{version} does not encode"),
            }
        }
    }

    // A few requests with content.
    let topic = || TopicName(StrBytes::from_static_str("orders"));
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            kafka_protocol::messages::produce_request::TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![
                    kafka_protocol::messages::produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(sample_batch(Compression::None, 0, 2)))),
                ]),
        ]);
    let fetch = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            kafka_protocol::messages::fetch_request::FetchTopic::default()
                .with_topic(topic())
                .with_partitions(vec![
                    kafka_protocol::messages::fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(5)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(topic())),
    ]));
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("billing")))
        .with_generation_id(3)
        .with_member_id(StrBytes::from_static_str("member-1"));
    for (name, api_key, version, request) in [
        (
            "produce-batch",
            ApiKey::Produce,
            9,
            RequestKind::from(produce.clone()),
        ),
        (
            "produce-batch-v3",
            ApiKey::Produce,
            3,
            RequestKind::from(produce),
        ),
        (
            "fetch-topic",
            ApiKey::Fetch,
            12,
            RequestKind::from(fetch.clone()),
        ),
        ("fetch-topic-v4", ApiKey::Fetch, 4, RequestKind::from(fetch)),
        (
            "metadata-topic",
            ApiKey::Metadata,
            12,
            RequestKind::from(metadata),
        ),
        (
            "heartbeat-group",
            ApiKey::Heartbeat,
            3,
            RequestKind::from(heartbeat),
        ),
    ] {
        let frame = request_frame(api_key, version, &request).expect("a seed request encodes");
        seeds.push((name.into(), request_frame::write(&frame).expect("served")));
    }

    // Raw frames: an ApiVersions newer than served, an unknown API, an unserved one.
    let api_versions = request_frame(
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default().into(),
    )
    .expect("ApiVersions encodes");
    let mut too_new = api_versions.clone();
    too_new[2..4].copy_from_slice(&4i16.to_be_bytes());
    seeds.push((
        "raw-api-versions-v4".into(),
        request_frame::write_raw(&too_new),
    ));
    let mut unknown = api_versions.clone();
    unknown[0..2].copy_from_slice(&999i16.to_be_bytes());
    seeds.push(("raw-unknown-api".into(), request_frame::write_raw(&unknown)));
    seeds.push((
        "raw-api-versions-v3".into(),
        request_frame::write_raw(&api_versions),
    ));
    seeds
}

/// A default response body for each served API.
fn default_response(api_key: ApiKey) -> ResponseKind {
    use kafka_protocol::messages as m;
    match api_key {
        ApiKey::Produce => m::ProduceResponse::default().into(),
        ApiKey::Fetch => m::FetchResponse::default().into(),
        ApiKey::ListOffsets => m::ListOffsetsResponse::default().into(),
        ApiKey::Metadata => m::MetadataResponse::default().into(),
        ApiKey::ApiVersions => m::ApiVersionsResponse::default().into(),
        ApiKey::CreateTopics => m::CreateTopicsResponse::default().into(),
        ApiKey::DeleteTopics => m::DeleteTopicsResponse::default().into(),
        ApiKey::InitProducerId => m::InitProducerIdResponse::default().into(),
        ApiKey::DescribeConfigs => m::DescribeConfigsResponse::default().into(),
        ApiKey::IncrementalAlterConfigs => m::IncrementalAlterConfigsResponse::default().into(),
        ApiKey::OffsetForLeaderEpoch => m::OffsetForLeaderEpochResponse::default().into(),
        ApiKey::OffsetCommit => m::OffsetCommitResponse::default().into(),
        ApiKey::OffsetFetch => m::OffsetFetchResponse::default().into(),
        ApiKey::FindCoordinator => m::FindCoordinatorResponse::default().into(),
        ApiKey::JoinGroup => m::JoinGroupResponse::default().into(),
        ApiKey::Heartbeat => m::HeartbeatResponse::default().into(),
        ApiKey::LeaveGroup => m::LeaveGroupResponse::default().into(),
        ApiKey::SyncGroup => m::SyncGroupResponse::default().into(),
        ApiKey::DescribeGroups => m::DescribeGroupsResponse::default().into(),
        ApiKey::ListGroups => m::ListGroupsResponse::default().into(),
        ApiKey::AlterPartitionReassignments => {
            m::AlterPartitionReassignmentsResponse::default().into()
        }
        ApiKey::ListPartitionReassignments => {
            m::ListPartitionReassignmentsResponse::default().into()
        }
        ApiKey::ShareGroupHeartbeat => m::ShareGroupHeartbeatResponse::default().into(),
        ApiKey::ShareGroupDescribe => m::ShareGroupDescribeResponse::default().into(),
        ApiKey::ShareFetch => m::ShareFetchResponse::default().into(),
        ApiKey::ShareAcknowledge => m::ShareAcknowledgeResponse::default().into(),
        ApiKey::ReadShareGroupState => m::ReadShareGroupStateResponse::default().into(),
        ApiKey::WriteShareGroupState => m::WriteShareGroupStateResponse::default().into(),
        other => panic!("no seed response for {other:?}"),
    }
}

/// The frame (without its size prefix) of `response` at `version`, or `None` when
/// `kafka-protocol` refuses to encode it at that version.
fn response_frame(api_key: ApiKey, version: i16, response: &ResponseKind) -> Option<Vec<u8>> {
    let mut bytes = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(2_000 + i32::from(version))
        .encode(&mut bytes, api_key.response_header_version(version))
        .ok()?;
    response.encode(&mut bytes, version).ok()?;
    Some(bytes.to_vec())
}

fn client_response_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    for &(api_key, min, max) in SUPPORTED {
        for version in min..=max {
            match response_frame(api_key, version, &default_response(api_key)) {
                Some(frame) => seeds.push((
                    format!("{api_key:?}-v{version}"),
                    client_response::write(api_key, version, &frame).expect("a served pair"),
                )),
                None => eprintln!("client_response: {api_key:?} v{version} does not encode"),
            }
        }
    }

    // Answers with content: a fetch carrying a batch, metadata naming a broker and a topic,
    // and the ApiVersions answers the negotiation reads (v3, and v0 refusing our version).
    let topic = || TopicName(StrBytes::from_static_str("orders"));
    let fetch = kafka_protocol::messages::FetchResponse::default().with_responses(vec![
        kafka_protocol::messages::fetch_response::FetchableTopicResponse::default()
            .with_topic(topic())
            .with_partitions(vec![
                kafka_protocol::messages::fetch_response::PartitionData::default()
                    .with_partition_index(0)
                    .with_high_watermark(2)
                    .with_records(Some(Bytes::from(sample_batch(Compression::None, 0, 2)))),
            ]),
    ]);
    let metadata = kafka_protocol::messages::MetadataResponse::default()
        .with_brokers(vec![
            kafka_protocol::messages::metadata_response::MetadataResponseBroker::default()
                .with_node_id(1.into())
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(9092),
        ])
        .with_topics(vec![
            kafka_protocol::messages::metadata_response::MetadataResponseTopic::default()
                .with_name(Some(topic()))
                .with_partitions(vec![
                    kafka_protocol::messages::metadata_response::MetadataResponsePartition::default()
                        .with_leader_id(1.into())
                        .with_replica_nodes(vec![1.into()])
                        .with_isr_nodes(vec![1.into()]),
                ]),
        ]);
    let api_versions = kafka_protocol::messages::ApiVersionsResponse::default().with_api_keys(
        SUPPORTED
            .iter()
            .map(|&(api_key, min, max)| {
                kafka_protocol::messages::api_versions_response::ApiVersion::default()
                    .with_api_key(api_key as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect(),
    );
    for (name, api_key, version, response) in [
        (
            "fetch-batch",
            ApiKey::Fetch,
            12,
            ResponseKind::from(fetch.clone()),
        ),
        (
            "fetch-batch-v4",
            ApiKey::Fetch,
            4,
            ResponseKind::from(fetch),
        ),
        (
            "metadata-topic",
            ApiKey::Metadata,
            12,
            ResponseKind::from(metadata),
        ),
    ] {
        let frame = response_frame(api_key, version, &response).expect("a seed response encodes");
        seeds.push((
            name.into(),
            client_response::write(api_key, version, &frame).expect("served"),
        ));
    }
    let current = response_frame(
        ApiKey::ApiVersions,
        3,
        &ResponseKind::from(api_versions.clone()),
    )
    .expect("ApiVersions v3 encodes");
    seeds.push((
        "negotiation-v3".into(),
        client_response::write_negotiation(&current),
    ));
    let refusing = response_frame(
        ApiKey::ApiVersions,
        0,
        &ResponseKind::from(api_versions.with_error_code(35)),
    )
    .expect("ApiVersions v0 encodes");
    seeds.push((
        "negotiation-v0-unsupported".into(),
        client_response::write_negotiation(&refusing),
    ));
    seeds
}

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        data: data.to_vec().into(),
        ..Entry::default()
    }
}

fn quorum_record_seeds() -> Seeds {
    let hard_state = HardState {
        term: 2,
        vote: 1,
        commit: 2,
        ..HardState::default()
    };
    let mut conf_state = ConfState::default();
    conf_state.set_voters(vec![1, 2, 3]);
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 1;
    snapshot.mut_metadata().term = 1;
    snapshot.mut_metadata().set_conf_state(conf_state.clone());
    snapshot.data = b"{\"brokers\":{}}".to_vec().into();

    let payload = |message: &dyn protobuf::Message| message.write_to_bytes().expect("encode");
    let mut file = MAGIC.to_vec();
    quorum_record::encode(RecordKind::ConfState, &payload(&conf_state), &mut file);
    quorum_record::encode(
        RecordKind::Entry,
        &payload(&entry(1, 1, b"{\"create_topic\":\"orders\"}")),
        &mut file,
    );
    quorum_record::encode(RecordKind::Entry, &payload(&entry(2, 2, b"")), &mut file);
    quorum_record::encode(RecordKind::HardState, &payload(&hard_state), &mut file);
    quorum_record::encode(RecordKind::Snapshot, &payload(&snapshot), &mut file);
    let mut torn = file.clone();
    torn.truncate(file.len() - 3);

    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgAppend);
    message.from = 1;
    message.to = 2;
    message.term = 2;
    message.log_term = 1;
    message.index = 1;
    message.commit = 1;
    message.entries = vec![entry(2, 2, b"{}")].into();
    let request = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let frames = [
        ("raft", Frame::Raft(message)),
        ("heartbeat", Frame::Heartbeat { broker_id: 3 }),
        ("subscribe", Frame::Subscribe { broker_id: 4 }),
        (
            "propose",
            Frame::Propose {
                request,
                proposal: b"{\"CreateTopic\":{}}".to_vec(),
            },
        ),
        (
            "state",
            Frame::State {
                version: 9,
                controller: 1,
                state: b"{\"brokers\":{}}".to_vec(),
            },
        ),
        ("controller", Frame::Controller { controller: -1 }),
        (
            "answer",
            Frame::Answer {
                request,
                outcome: b"{\"Ok\":null}".to_vec(),
            },
        ),
    ];

    let mut seeds = vec![
        ("file".into(), quorum::write(0, &file)),
        ("file-fix-crc".into(), quorum::write(quorum::FIX_CRC, &file)),
        ("file-torn".into(), quorum::write(0, &torn)),
        ("file-empty".into(), quorum::write(0, MAGIC)),
    ];
    for (name, frame) in frames {
        let bytes = frame::encode(&frame).expect("a seed frame encodes");
        seeds.push((
            format!("frame-{name}"),
            quorum::write(quorum::FRAME, &bytes[frame::LENGTH_BYTES..]),
        ));
    }
    seeds
}

fn internal_records_seeds() -> Seeds {
    let offset_key = OffsetKey {
        group: "billing".into(),
        topic: "orders".into(),
        partition: 3,
    };
    let with_metadata = OffsetValue {
        offset: 42,
        leader_epoch: 5,
        commit_time_ms: 1_700_000_000_000,
        metadata: Some("checkpoint".into()),
    };
    let without_metadata = OffsetValue {
        offset: 0,
        leader_epoch: -1,
        commit_time_ms: 0,
        metadata: None,
    };
    let state_key = StateKey {
        group: "workers".into(),
        topic_id: Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788),
        partition: 1,
    };
    let snapshot = share::Snapshot {
        sequence: 9,
        start: 100,
        runs: vec![
            Run {
                first: 100,
                last: 104,
                state: DurableState::Acknowledged,
                delivery_count: 1,
            },
            Run {
                first: 110,
                last: 110,
                state: DurableState::Archived,
                delivery_count: 5,
            },
            Run {
                first: 111,
                last: 120,
                state: DurableState::Available,
                delivery_count: 2,
            },
        ],
    };
    let empty_snapshot = share::Snapshot {
        sequence: 0,
        start: 0,
        runs: Vec::new(),
    };
    vec![
        (
            "group-key".into(),
            internal::write(
                internal::GROUP_KEY,
                &group::encode_offset_key(&offset_key).expect("key"),
            ),
        ),
        (
            "group-value".into(),
            internal::write(
                internal::GROUP_OFFSET_VALUE,
                &group::encode_offset_value(&with_metadata),
            ),
        ),
        (
            "group-value-null-metadata".into(),
            internal::write(
                internal::GROUP_OFFSET_VALUE,
                &group::encode_offset_value(&without_metadata),
            ),
        ),
        (
            "share-key".into(),
            internal::write(
                internal::SHARE_KEY,
                &share::encode_key(&state_key).expect("key"),
            ),
        ),
        (
            "share-value".into(),
            internal::write(internal::SHARE_VALUE, &share::encode_value(&snapshot)),
        ),
        (
            "share-value-empty".into(),
            internal::write(internal::SHARE_VALUE, &share::encode_value(&empty_snapshot)),
        ),
    ]
}
