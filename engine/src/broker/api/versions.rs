//! ApiVersions: the versions served, per API (`SUPPORTED`), and the v0 answer to a request
//! above ours.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

use super::super::chunks::Chunk;
use super::{Reply, SUPPORTED, UNSUPPORTED_VERSION};

pub fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = error_code;
    response.api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut version = ApiVersion::default();
            version.api_key = key as i16;
            version.min_version = min;
            version.max_version = max;
            version
        })
        .collect();
    response
}

/// The answer to an ApiVersions request of a version above ours: a v0 body with
/// UNSUPPORTED_VERSION and our ranges (the header is v0 for ApiVersions in any case).
pub fn api_versions_unsupported(correlation_id: i32) -> Reply {
    use kafka_protocol::protocol::Encodable;
    let mut bytes = BytesMut::new();
    bytes.put_i32(0);
    bytes.put_i32(correlation_id);
    if api_versions(UNSUPPORTED_VERSION)
        .encode(&mut bytes, 0)
        .is_err()
    {
        return Reply::Close("cannot encode ApiVersions");
    }
    let size = (bytes.len() - 4) as i32;
    bytes[..4].copy_from_slice(&size.to_be_bytes());
    Reply::Send(vec![Chunk::Bytes(bytes.freeze())])
}
