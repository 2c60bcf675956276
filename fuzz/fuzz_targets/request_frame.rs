//! A Kafka request frame, as any client may send it to the broker.
//!
//! Feeds the frame to `shardlog::broker::api::parse`, the broker's own parser: its hand-read
//! header checks, then `kafka-protocol`'s header and body decoders for every served API and
//! version. Checks that a parsed request reports the api key, version and correlation id of
//! its frame, and that it encodes and decodes back to itself.
//!
//! The broker binary installs `ReservingAllocator`, without which a hostile array length
//! aborts the process; this target installs it too, so it fuzzes what the broker runs.
//!
//! Input: see `shardlog_fuzz::request_frame`.
#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use libfuzzer_sys::fuzz_target;
use shardlog::broker::api::{self, ParsedRequest, Unparsed, SUPPORTED};
use shardlog_fuzz::request_frame;

#[global_allocator]
static ALLOCATOR: shardlog_protocol::decode_guard::ReservingAllocator =
    shardlog_protocol::decode_guard::ReservingAllocator;

fuzz_target!(|data: &[u8]| {
    let Some((chosen, frame)) = request_frame::read(data) else {
        return;
    };
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let served = SUPPORTED
        .iter()
        .any(|&(key, min, max)| key as i16 == api_key_raw && (min..=max).contains(&version));
    if chosen.is_some() {
        assert!(served);
    }

    match api::parse(frame) {
        Ok(parsed) => {
            assert!(served, "parsed a request for an API or version not served");
            check_parsed(&parsed, api_key_raw, version, correlation_id);
        }
        Err(Unparsed::ApiVersionsTooNew {
            correlation_id: reported,
        }) => {
            assert_eq!(api_key_raw, ApiKey::ApiVersions as i16);
            assert!(!served);
            assert_eq!(reported, correlation_id);
        }
        Err(Unparsed::Close(_)) => {}
    }
});

fn check_parsed(parsed: &ParsedRequest, api_key_raw: i16, version: i16, correlation_id: i32) {
    assert_eq!(parsed.api_key as i16, api_key_raw);
    assert_eq!(parsed.version, version);
    assert_eq!(parsed.correlation_id, correlation_id);
    assert_eq!(parsed.header.request_api_key, api_key_raw);
    assert_eq!(parsed.header.request_api_version, version);
    assert_eq!(parsed.header.correlation_id, correlation_id);
    assert_eq!(request_api_key(&parsed.request), Some(parsed.api_key));

    // What was decoded encodes, and decodes back to the same request. kafka-protocol 0.18
    // keeps unknown tags as i32, so a wire tag of 2^31 or more lands under a negative key,
    // which its encoder counts but does not write (`write_unknown_tagged_fields(buf, 0.., ..)`).
    // The broker never re-encodes a request, so that is the library's defect, not the
    // broker's: only requests without such a tag must round trip.
    if let Err(why) = round_trip(parsed) {
        let shown = format!("{:?} {:?}", parsed.header, parsed.request);
        assert!(
            shown.contains("unknown_tagged_fields: {-"),
            "round trip failed: {why}"
        );
    }
}

fn round_trip(parsed: &ParsedRequest) -> Result<(), String> {
    let version = parsed.version;
    let header_version = parsed.api_key.request_header_version(version);
    let mut bytes = BytesMut::new();
    parsed
        .header
        .encode(&mut bytes, header_version)
        .map_err(|error| format!("header does not encode: {error}"))?;
    parsed
        .request
        .encode(&mut bytes, version)
        .map_err(|error| format!("request does not encode: {error}"))?;
    let mut bytes: Bytes = bytes.freeze();
    let header = RequestHeader::decode(&mut bytes, header_version)
        .map_err(|error| format!("header does not decode again: {error}"))?;
    if header != parsed.header {
        return Err(format!("header {header:?} != {:?}", parsed.header));
    }
    let request = RequestKind::decode(parsed.api_key, &mut bytes, version)
        .map_err(|error| format!("request does not decode again: {error:#}"))?;
    if request != parsed.request {
        return Err(format!("request {request:?} != {:?}", parsed.request));
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes left over", bytes.len()));
    }
    Ok(())
}

/// The API a decoded request belongs to, for the served ones.
fn request_api_key(request: &RequestKind) -> Option<ApiKey> {
    Some(match request {
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Fetch(_) => ApiKey::Fetch,
        RequestKind::ListOffsets(_) => ApiKey::ListOffsets,
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::ApiVersions(_) => ApiKey::ApiVersions,
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::DeleteTopics(_) => ApiKey::DeleteTopics,
        RequestKind::InitProducerId(_) => ApiKey::InitProducerId,
        RequestKind::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        RequestKind::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        RequestKind::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
        RequestKind::OffsetCommit(_) => ApiKey::OffsetCommit,
        RequestKind::OffsetFetch(_) => ApiKey::OffsetFetch,
        RequestKind::FindCoordinator(_) => ApiKey::FindCoordinator,
        RequestKind::JoinGroup(_) => ApiKey::JoinGroup,
        RequestKind::Heartbeat(_) => ApiKey::Heartbeat,
        RequestKind::LeaveGroup(_) => ApiKey::LeaveGroup,
        RequestKind::SyncGroup(_) => ApiKey::SyncGroup,
        RequestKind::DescribeGroups(_) => ApiKey::DescribeGroups,
        RequestKind::ListGroups(_) => ApiKey::ListGroups,
        RequestKind::AlterPartitionReassignments(_) => ApiKey::AlterPartitionReassignments,
        RequestKind::ListPartitionReassignments(_) => ApiKey::ListPartitionReassignments,
        RequestKind::ShareGroupHeartbeat(_) => ApiKey::ShareGroupHeartbeat,
        RequestKind::ShareGroupDescribe(_) => ApiKey::ShareGroupDescribe,
        RequestKind::ShareFetch(_) => ApiKey::ShareFetch,
        RequestKind::ShareAcknowledge(_) => ApiKey::ShareAcknowledge,
        RequestKind::ReadShareGroupState(_) => ApiKey::ReadShareGroupState,
        RequestKind::WriteShareGroupState(_) => ApiKey::WriteShareGroupState,
        _ => return None,
    })
}
