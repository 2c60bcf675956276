//! Kafka APIs: parse a request frame, answer it, frame the response.
//!
//! The header is read by hand first (api key, version, correlation id), so an unknown API or
//! an unsupported version gets its answer before the body is decoded. Bodies are decoded by
//! `kafka-protocol`; record batches inside produce requests stay raw bytes.

pub mod codes;
mod configs;
mod epochs;
mod fetch;
mod group;
mod list_offsets;
mod lookup;
mod metadata;
mod produce;
mod producer_id;
mod reassign;
mod share;
mod share_state;
mod topics;
mod versions;

use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::chunks::Chunk;
use super::shard::Shard;
use shardlog_protocol::error_code::UNSUPPORTED_VERSION;

/// What the connection does with a request's outcome.
pub enum Reply {
    /// Send these bytes (and file regions).
    Send(Vec<Chunk>),
    /// Send nothing (produce with acks=0).
    Nothing,
    /// Close the connection: the request cannot be answered in its own protocol.
    Close(&'static str),
}

/// The versions served, per API: what real clients need (see docs/broker.md).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 4),
    (ApiKey::DeleteTopics, 1, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 2),
    // Group configs only (docs/groups.md, "Group configs"); v1 is flexible.
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    // Consumer groups (docs/groups.md).
    (ApiKey::OffsetCommit, 2, 7),
    (ApiKey::OffsetFetch, 1, 5),
    (ApiKey::FindCoordinator, 0, 2),
    (ApiKey::JoinGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 3),
    (ApiKey::LeaveGroup, 0, 3),
    (ApiKey::SyncGroup, 0, 3),
    (ApiKey::DescribeGroups, 0, 4),
    (ApiKey::ListGroups, 0, 2),
    // Partition reassignment (docs/cluster.md): every version kafka-protocol has, flexible.
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    // Share groups (docs/groups.md, "Share groups"): KIP-932's stable version, flexible.
    (ApiKey::ShareGroupHeartbeat, 1, 1),
    (ApiKey::ShareGroupDescribe, 1, 1),
    (ApiKey::ShareFetch, 1, 1),
    (ApiKey::ShareAcknowledge, 1, 1),
    // The share coordinator, asked by the broker that leads a data partition (docs/groups.md).
    (ApiKey::ReadShareGroupState, 0, 0),
    (ApiKey::WriteShareGroupState, 0, 0),
];

fn supported_range(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|&(_, min, max)| (min, max))
}

/// A request frame, parsed: who asked what.
pub struct ParsedRequest {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub header: RequestHeader,
    pub request: RequestKind,
}

/// Why a frame was not parsed into a request.
#[derive(Debug)]
pub enum Unparsed {
    /// An ApiVersions request above our versions: answered in v0 with our ranges.
    ApiVersionsTooNew { correlation_id: i32 },
    /// Anything else: the connection is closed, for this reason.
    Close(&'static str),
}

/// Parses one request frame (without its size prefix): header first, so an unknown API or an
/// unsupported version is refused before its body is decoded, then the body.
///
/// Bounds: the frame is at least `REQUEST_HEADER_MIN_BYTES` long (the connection checked);
/// every length inside it is bounded by the frame. Hostile array lengths are survivable only
/// with `decode_guard::ReservingAllocator` installed, as the broker binary does.
pub fn parse(frame: Bytes) -> Result<ParsedRequest, Unparsed> {
    let mut fixed = &frame[..8];
    let api_key_raw = fixed.get_i16();
    let version = fixed.get_i16();
    let correlation_id = fixed.get_i32();
    let Ok(api_key) = ApiKey::try_from(api_key_raw) else {
        tracing::info!(api_key = api_key_raw, "unknown API key");
        return Err(Unparsed::Close("unknown API key"));
    };
    let Some((min, max)) = supported_range(api_key) else {
        tracing::info!(?api_key, "API not served");
        return Err(Unparsed::Close("API not served"));
    };
    if !(min..=max).contains(&version) {
        if api_key == ApiKey::ApiVersions {
            // Clients newer than us do this on every connection: routine, hence debug.
            tracing::debug!(version, "ApiVersions version above ours; answering v0");
            return Err(Unparsed::ApiVersionsTooNew { correlation_id });
        }
        tracing::info!(?api_key, version, "unsupported version");
        return Err(Unparsed::Close("unsupported version"));
    }
    let mut body = frame;
    let header_version = api_key.request_header_version(version);
    let header = match RequestHeader::decode(&mut body, header_version) {
        Ok(header) => header,
        Err(error) => {
            tracing::info!(?api_key, version, %error, "undecodable request header");
            return Err(Unparsed::Close("undecodable request header"));
        }
    };
    let request = match RequestKind::decode(api_key, &mut body, version) {
        Ok(request) => request,
        Err(error) => {
            tracing::info!(?api_key, version, %error, "undecodable request");
            return Err(Unparsed::Close("undecodable request"));
        }
    };
    Ok(ParsedRequest {
        api_key,
        version,
        correlation_id,
        header,
        request,
    })
}

/// Parses and answers one request frame.
pub async fn handle(shard: Rc<Shard>, frame: Bytes) -> Reply {
    let frame_bytes = frame.len();
    let ParsedRequest {
        api_key,
        version,
        correlation_id,
        header,
        request,
    } = match parse(frame) {
        Ok(parsed) => parsed,
        Err(Unparsed::ApiVersionsTooNew { correlation_id }) => {
            // Answer in v0 with the error and our ranges, so the client can pick a version.
            return versions::api_versions_unsupported(correlation_id);
        }
        Err(Unparsed::Close(why)) => return Reply::Close(why),
    };
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(versions::api_versions(0)),
        RequestKind::Metadata(request) => {
            ResponseKind::Metadata(metadata::metadata(&shard, request, version).await)
        }
        RequestKind::CreateTopics(request) => {
            ResponseKind::CreateTopics(topics::create_topics(&shard, request).await)
        }
        RequestKind::DeleteTopics(request) => {
            ResponseKind::DeleteTopics(topics::delete_topics(&shard, request, version).await)
        }
        RequestKind::DescribeConfigs(request) => {
            ResponseKind::DescribeConfigs(configs::describe_configs(&shard, request))
        }
        RequestKind::IncrementalAlterConfigs(request) => ResponseKind::IncrementalAlterConfigs(
            configs::incremental_alter_configs(&shard, request).await,
        ),
        RequestKind::InitProducerId(request) => {
            ResponseKind::InitProducerId(producer_id::init_producer_id(&shard, request).await)
        }
        RequestKind::OffsetForLeaderEpoch(request) => ResponseKind::OffsetForLeaderEpoch(
            epochs::offset_for_leader_epoch(&shard, request).await,
        ),
        RequestKind::ListOffsets(request) => {
            ResponseKind::ListOffsets(list_offsets::list_offsets(&shard, request).await)
        }
        RequestKind::AlterPartitionReassignments(request) => {
            ResponseKind::AlterPartitionReassignments(
                reassign::alter_partition_reassignments(&shard, request).await,
            )
        }
        RequestKind::ListPartitionReassignments(request) => {
            ResponseKind::ListPartitionReassignments(reassign::list_partition_reassignments(
                &shard, request,
            ))
        }
        RequestKind::Produce(request) => {
            match produce::produce(&shard, request, version, frame_bytes).await {
                Some(response) => ResponseKind::Produce(response),
                None => return Reply::Nothing,
            }
        }
        RequestKind::Fetch(request) => {
            return fetch::fetch(&shard, request, version, correlation_id).await;
        }
        RequestKind::FindCoordinator(request) => {
            ResponseKind::FindCoordinator(group::find_coordinator(&shard, request, version).await)
        }
        RequestKind::JoinGroup(request) => {
            let client_id = header.client_id.as_deref().unwrap_or("");
            ResponseKind::JoinGroup(group::join_group(&shard, request, version, client_id).await)
        }
        RequestKind::SyncGroup(request) => {
            ResponseKind::SyncGroup(group::sync_group(&shard, request).await)
        }
        RequestKind::Heartbeat(request) => {
            ResponseKind::Heartbeat(group::heartbeat(&shard, request).await)
        }
        RequestKind::LeaveGroup(request) => {
            ResponseKind::LeaveGroup(group::leave_group(&shard, request, version).await)
        }
        RequestKind::OffsetCommit(request) => {
            ResponseKind::OffsetCommit(group::offset_commit(&shard, request, version).await)
        }
        RequestKind::OffsetFetch(request) => {
            ResponseKind::OffsetFetch(group::offset_fetch(&shard, request, version).await)
        }
        RequestKind::ListGroups(request) => {
            ResponseKind::ListGroups(group::list_groups(&shard, request).await)
        }
        RequestKind::DescribeGroups(request) => {
            ResponseKind::DescribeGroups(group::describe_groups(&shard, request, version).await)
        }
        RequestKind::ShareGroupHeartbeat(request) => {
            let client_id = header.client_id.as_deref().unwrap_or("");
            ResponseKind::ShareGroupHeartbeat(share::heartbeat(&shard, request, client_id).await)
        }
        RequestKind::ShareGroupDescribe(request) => {
            ResponseKind::ShareGroupDescribe(share::describe(&shard, request).await)
        }
        RequestKind::ShareFetch(request) => {
            ResponseKind::ShareFetch(share::fetch(&shard, request).await)
        }
        RequestKind::ShareAcknowledge(request) => {
            ResponseKind::ShareAcknowledge(share::acknowledge(&shard, request).await)
        }
        RequestKind::ReadShareGroupState(request) => {
            ResponseKind::ReadShareGroupState(share_state::read(&shard, request).await)
        }
        RequestKind::WriteShareGroupState(request) => {
            ResponseKind::WriteShareGroupState(share_state::write(&shard, request).await)
        }
        _ => return Reply::Close("API not served"),
    };
    encode_response(api_key, version, correlation_id, &response)
}

/// Frames a response: 4-byte size, header (with the correlation id), body.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Reply {
    let mut bytes = BytesMut::with_capacity(256);
    bytes.extend_from_slice(&[0; 4]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    if header.encode(&mut bytes, header_version).is_err()
        || response.encode(&mut bytes, version).is_err()
    {
        tracing::error!(?api_key, version, "cannot encode a response");
        return Reply::Close("cannot encode the response");
    }
    let size = (bytes.len() - 4) as i32;
    bytes[..4].copy_from_slice(&size.to_be_bytes());
    Reply::Send(vec![Chunk::Bytes(bytes.freeze())])
}
