//! Version negotiation: ask the broker which versions it serves (ApiVersions), then pick,
//! per API, the highest version both sides speak.
//!
//! The client asks with ApiVersions v[`API_VERSIONS_VERSION`]. A broker that does not serve
//! that version answers in v0 with UNSUPPORTED_VERSION and its ranges all the same (KIP-511),
//! so an answer that does not decode as v3 is decoded again as v0, and that error code is
//! taken as an answer.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Request, StrBytes};

use super::codec::{api_of, decode_response};
use super::{response_error, ClientError};
use crate::error_code;

/// The ApiVersions version this client asks with.
pub const API_VERSIONS_VERSION: i16 = 3;

/// The version range the broker serves for each API, from its ApiVersions answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerVersions {
    /// (api key, min version, max version), as the broker listed them.
    ranges: Vec<(i16, i16, i16)>,
}

impl BrokerVersions {
    /// Versions as a broker would list them: (api key, min, max).
    pub fn from_ranges(ranges: Vec<(i16, i16, i16)>) -> BrokerVersions {
        BrokerVersions { ranges }
    }

    /// The highest version both sides speak for `R`, with the client's own range
    /// `client_min..=client_max` (capped by what `kafka-protocol` can encode).
    pub fn pick<R: Request>(
        &self,
        address: &str,
        client_min: i16,
        client_max: i16,
    ) -> Result<i16, ClientError> {
        let api = api_of::<R>();
        let client_max = client_max.min(R::VERSIONS.max);
        let unsupported = |broker_versions| ClientError::UnsupportedVersion {
            address: address.to_string(),
            api,
            broker_versions,
            client_min,
            client_max,
        };
        let Some(&(_, broker_min, broker_max)) =
            self.ranges.iter().find(|(key, _, _)| *key == R::KEY)
        else {
            return Err(unsupported(None));
        };
        let version = broker_max.min(client_max);
        if version < broker_min.max(client_min) {
            return Err(unsupported(Some((broker_min, broker_max))));
        }
        Ok(version)
    }
}

/// The ApiVersions request this client sends, naming `software` (KIP-511).
pub fn api_versions_request(software: &str) -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_string(software.to_string()))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")))
}

/// Reads the broker's answer to an ApiVersions request sent at [`API_VERSIONS_VERSION`] with
/// `correlation_id` (`frame` without its size prefix).
pub fn decode_api_versions(
    address: &str,
    frame: Bytes,
    correlation_id: i32,
) -> Result<BrokerVersions, ClientError> {
    let api = ApiKey::ApiVersions;
    let mut response: ApiVersionsResponse = decode_response(
        address,
        &mut frame.clone(),
        api,
        API_VERSIONS_VERSION,
        correlation_id,
    )
    .or_else(|_| decode_response(address, &mut frame.clone(), api, 0, correlation_id))?;
    if response.error_code == error_code::UNSUPPORTED_VERSION && !response.api_keys.is_empty() {
        response.error_code = error_code::NONE;
    }
    if let Some(error) = response_error(response.error_code) {
        return Err(ClientError::BrokerRequest { api, error });
    }
    Ok(BrokerVersions::from_ranges(
        response
            .api_keys
            .iter()
            .map(|key| (key.api_key, key.min_version, key.max_version))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::produce_request::ProduceRequest;
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn picks_the_highest_common_version_or_says_why_not() {
        let versions = BrokerVersions::from_ranges(vec![(0, 3, 9)]);
        assert_eq!(versions.pick::<ProduceRequest>("b:1", 3, 12).ok(), Some(9));
        assert_eq!(versions.pick::<ProduceRequest>("b:1", 3, 7).ok(), Some(7));
        assert!(matches!(
            versions.pick::<ProduceRequest>("b:1", 10, 12),
            Err(ClientError::UnsupportedVersion {
                broker_versions: Some((3, 9)),
                ..
            })
        ));
        assert!(matches!(
            BrokerVersions::default().pick::<ProduceRequest>("b:1", 3, 9),
            Err(ClientError::UnsupportedVersion {
                broker_versions: None,
                ..
            })
        ));
    }

    fn answer(version: i16, correlation_id: i32, error_code: i16) -> Bytes {
        let mut frame = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut frame, 0)
            .expect("header encodes");
        ApiVersionsResponse::default()
            .with_error_code(error_code)
            .with_api_keys(vec![ApiVersion::default()
                .with_api_key(ApiKey::Produce as i16)
                .with_min_version(3)
                .with_max_version(9)])
            .encode(&mut frame, version)
            .expect("body encodes");
        frame.freeze()
    }

    #[test]
    fn a_v0_answer_refusing_our_version_still_gives_the_ranges() {
        let expected = BrokerVersions::from_ranges(vec![(ApiKey::Produce as i16, 3, 9)]);
        let current = decode_api_versions("b:1", answer(API_VERSIONS_VERSION, 4, 0), 4);
        assert_eq!(current.ok(), Some(expected.clone()));
        let older = decode_api_versions("b:1", answer(0, 4, error_code::UNSUPPORTED_VERSION), 4);
        assert_eq!(older.ok(), Some(expected));
        assert!(matches!(
            decode_api_versions("b:1", answer(API_VERSIONS_VERSION, 4, 0), 5),
            Err(ClientError::CorrelationMismatch { .. })
        ));
    }
}
