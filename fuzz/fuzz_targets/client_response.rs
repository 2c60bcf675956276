//! A Kafka response frame, as a broker (or anything listening on its port) may send it to
//! the client.
//!
//! Feeds the frame to `shardlog_protocol::client::codec::decode_response`, the decoder the
//! harness, the tests and the follower's fetcher all run: the response header, the
//! correlation check, `kafka-protocol`'s body decoder for the API and version asked, and the
//! refusal of bytes left over. Or, for the negotiation selector, to
//! `client::versions::decode_api_versions`. Checks that an accepted answer carries the
//! correlation id asked for and encodes and decodes back to itself, and that each refusal is the
//! one the frame deserves.
//!
//! The broker binary installs `ReservingAllocator` (the follower decodes its leader's answers
//! inside it), without which a hostile array length aborts the process; this target installs
//! it too.
//!
//! Input: see `shardlog_fuzz::client_response`.
#![no_main]

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use libfuzzer_sys::fuzz_target;
use shardlog_fuzz::client_response;
use shardlog_protocol::client::{codec, versions, ClientError};

#[global_allocator]
static ALLOCATOR: shardlog_protocol::decode_guard::ReservingAllocator =
    shardlog_protocol::decode_guard::ReservingAllocator;

const ADDRESS: &str = "fuzz:9092";

fuzz_target!(|data: &[u8]| {
    let Some(input) = client_response::read(data) else {
        return;
    };
    let expected = input.expected_correlation_id;
    let Some((api, version)) = input.api else {
        let own = own_correlation_id(&input.frame);
        if versions::decode_api_versions(ADDRESS, input.frame, expected).is_ok() {
            assert_eq!(
                own,
                Some(expected),
                "an ApiVersions answer to another request"
            );
        }
        return;
    };
    macro_rules! decode_as {
        ($($key:ident => $response:ty),* $(,)?) => {
            match api {
                $(ApiKey::$key => check::<$response>(api, version, &input.frame, expected),)*
                other => panic!("{other:?} is served but has no arm here"),
            }
        };
    }
    decode_as!(
        Produce => ProduceResponse,
        Fetch => FetchResponse,
        ListOffsets => ListOffsetsResponse,
        Metadata => MetadataResponse,
        ApiVersions => ApiVersionsResponse,
        CreateTopics => CreateTopicsResponse,
        DeleteTopics => DeleteTopicsResponse,
        InitProducerId => InitProducerIdResponse,
        DescribeConfigs => DescribeConfigsResponse,
        IncrementalAlterConfigs => IncrementalAlterConfigsResponse,
        OffsetForLeaderEpoch => OffsetForLeaderEpochResponse,
        OffsetCommit => OffsetCommitResponse,
        OffsetFetch => OffsetFetchResponse,
        FindCoordinator => FindCoordinatorResponse,
        JoinGroup => JoinGroupResponse,
        Heartbeat => HeartbeatResponse,
        LeaveGroup => LeaveGroupResponse,
        SyncGroup => SyncGroupResponse,
        DescribeGroups => DescribeGroupsResponse,
        ListGroups => ListGroupsResponse,
        AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
        ListPartitionReassignments => ListPartitionReassignmentsResponse,
        ShareGroupHeartbeat => ShareGroupHeartbeatResponse,
        ShareGroupDescribe => ShareGroupDescribeResponse,
        ShareFetch => ShareFetchResponse,
        ShareAcknowledge => ShareAcknowledgeResponse,
        ReadShareGroupState => ReadShareGroupStateResponse,
        WriteShareGroupState => WriteShareGroupStateResponse,
    );
});

/// The correlation id a frame starts with, if it is long enough to have one.
fn own_correlation_id(frame: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(frame.get(..4)?.try_into().ok()?))
}

fn check<R: Decodable + Encodable + PartialEq + Debug>(
    api: ApiKey,
    version: i16,
    frame: &Bytes,
    expected: i32,
) {
    let own = own_correlation_id(frame);
    let mut rest = frame.clone();
    match codec::decode_response::<R>(ADDRESS, &mut rest, api, version, expected) {
        Ok(response) => {
            assert_eq!(own, Some(expected), "accepted an answer to another request");
            assert!(rest.is_empty(), "accepted with bytes left over");
            if let Err(why) = round_trip(&response, version) {
                // kafka-protocol 0.18 keeps unknown tags as i32: a wire tag of 2^31 or more
                // lands under a negative key, which its encoder counts but does not write
                // (as in the request_frame target). The client never re-encodes a response.
                let shown = format!("{response:?}");
                assert!(
                    shown.contains("unknown_tagged_fields: {-"),
                    "round trip failed: {why}"
                );
            }
        }
        Err(ClientError::CorrelationMismatch {
            expected: asked,
            found,
            ..
        }) => {
            assert_eq!(asked, expected);
            assert_eq!(Some(found), own);
            assert_ne!(found, expected);
        }
        Err(ClientError::TrailingBytes { bytes, .. }) => {
            assert!(
                bytes > 0 && bytes < frame.len(),
                "{bytes} of {}",
                frame.len()
            );
        }
        Err(ClientError::Decode { .. }) => {}
        Err(other) => panic!("a decoder answered {other}"),
    }
}

/// What was decoded encodes, and decodes back to the same response (bytes may differ: a
/// varint need not be written in its shortest form to decode).
fn round_trip<R: Decodable + Encodable + PartialEq + Debug>(
    response: &R,
    version: i16,
) -> Result<(), String> {
    let mut encoded = BytesMut::new();
    response
        .encode(&mut encoded, version)
        .map_err(|error| format!("does not encode: {error}"))?;
    let mut encoded = encoded.freeze();
    let again = R::decode(&mut encoded, version)
        .map_err(|error| format!("does not decode again: {error}"))?;
    if again != *response {
        return Err(format!("{again:?} != {response:?}"));
    }
    if !encoded.is_empty() {
        return Err(format!("{} bytes left over", encoded.len()));
    }
    Ok(())
}
