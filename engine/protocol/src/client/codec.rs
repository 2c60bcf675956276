//! A client's side of the Kafka wire: request frames out, response frames in.
//!
//! A request frame, as [`encode_frame`] writes it:
//!
//! ```text
//! offset  0        4          6              8                12
//!         | size   | api key  | api version  | correlation id | client id, [tags], body ...
//!         | i32 BE | i16 BE   | i16 BE       | i32 BE         |
//! ```
//!
//! The first [`FRAME_PREFIX_BYTES`] are fixed for every API and header version, so a request
//! encoded once can be sent many times: only the correlation id changes, and
//! [`frame_prefix`] gives the 12 bytes to send ahead of the shared rest.
//!
//! A response frame, once its size prefix has been read and bounded
//! (`crate::frame::check_size`):
//!
//! ```text
//! offset  0                4
//!         | correlation id | [tags, header v1], body ...
//!         | i32 BE         |
//! ```
//!
//! [`decode_response`] checks the correlation id against the one sent, decodes the body
//! for the version asked, and refuses bytes left after it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use super::ClientError;

/// Bytes of a request frame before the client id: size, api key, version, correlation id.
pub const FRAME_PREFIX_BYTES: usize = 12;

/// Where the correlation id sits in a request frame (size prefix included).
pub const CORRELATION_ID_OFFSET: usize = 8;

/// The API a request type belongs to.
pub fn api_of<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("a kafka-protocol request type has a known API key")
}

/// Encodes a whole request frame (size prefix included), sized exactly.
pub fn encode_frame<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> Result<Bytes, ClientError> {
    let api = api_of::<R>();
    let encode_error = |error: &dyn std::fmt::Display| ClientError::Encode {
        api,
        version,
        reason: error.to_string(),
    };
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let header_version = api.request_header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|header_bytes| Ok(header_bytes + request.compute_size(version)?))
        .map_err(|error| encode_error(&error))?;
    let size_field = i32::try_from(size).map_err(|_| encode_error(&"larger than a frame"))?;
    let mut frame = BytesMut::with_capacity(4 + size);
    frame.put_i32(size_field);
    header
        .encode(&mut frame, header_version)
        .map_err(|error| encode_error(&error))?;
    request
        .encode(&mut frame, version)
        .map_err(|error| encode_error(&error))?;
    assert_eq!(frame.len(), 4 + size, "compute_size agrees with encode");
    Ok(frame.freeze())
}

/// The 12 bytes to send ahead of `frame[FRAME_PREFIX_BYTES..]` so that the frame goes out
/// with `correlation_id` instead of the one it was encoded with.
pub fn frame_prefix(frame: &[u8], correlation_id: i32) -> [u8; FRAME_PREFIX_BYTES] {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    prefix.copy_from_slice(&frame[..FRAME_PREFIX_BYTES]);
    prefix[CORRELATION_ID_OFFSET..CORRELATION_ID_OFFSET + 4]
        .copy_from_slice(&correlation_id.to_be_bytes());
    prefix
}

/// Decodes a response frame's header (the frame without its size prefix) and returns the
/// correlation id it carries; `frame` is left at the body.
pub fn decode_response_header(
    address: &str,
    frame: &mut Bytes,
    api: ApiKey,
    version: i16,
) -> Result<i32, ClientError> {
    let header =
        ResponseHeader::decode(frame, api.response_header_version(version)).map_err(|error| {
            ClientError::Decode {
                address: address.to_string(),
                api,
                version,
                reason: format!("response header: {error}"),
            }
        })?;
    Ok(header.correlation_id)
}

/// Decodes a response body as `R` for `version`, refusing bytes left after it.
pub fn decode_response_body<R: Decodable>(
    address: &str,
    body: &mut Bytes,
    api: ApiKey,
    version: i16,
) -> Result<R, ClientError> {
    let response = R::decode(body, version).map_err(|error| ClientError::Decode {
        address: address.to_string(),
        api,
        version,
        reason: error.to_string(),
    })?;
    if body.has_remaining() {
        return Err(ClientError::TrailingBytes {
            address: address.to_string(),
            api,
            version,
            bytes: body.remaining(),
        });
    }
    Ok(response)
}

/// Decodes a response frame (header, then body as `R`), checking that it answers
/// `correlation_id`.
pub fn decode_response<R: Decodable>(
    address: &str,
    frame: &mut Bytes,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<R, ClientError> {
    let found = decode_response_header(address, frame, api, version)?;
    if found != correlation_id {
        return Err(ClientError::CorrelationMismatch {
            address: address.to_string(),
            api,
            expected: correlation_id,
            found,
        });
    }
    decode_response_body(address, frame, api, version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::MetadataResponse;
    use kafka_protocol::messages::produce_request::ProduceRequest;
    use kafka_protocol::messages::MetadataRequest;

    fn response_frame<R: Encodable>(
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &R,
    ) -> Bytes {
        let mut frame = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut frame, api.response_header_version(version))
            .expect("header encodes");
        body.encode(&mut frame, version).expect("body encodes");
        frame.freeze()
    }

    #[test]
    fn a_request_header_round_trips_and_the_size_counts_the_rest() {
        let frame = encode_frame(
            &MetadataRequest::default().with_topics(None),
            12,
            77,
            &StrBytes::from_static_str("test"),
        )
        .expect("encodes");
        let size = i32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
        assert_eq!(size as usize, frame.len() - 4);
        let mut rest = frame.slice(4..);
        let header = RequestHeader::decode(&mut rest, ApiKey::Metadata.request_header_version(12))
            .expect("header decodes");
        assert_eq!(
            (
                header.request_api_key,
                header.request_api_version,
                header.correlation_id
            ),
            (ApiKey::Metadata as i16, 12, 77)
        );
        assert_eq!(header.client_id.as_deref(), Some("test"));
        let request = MetadataRequest::decode(&mut rest, 12).expect("body decodes");
        assert_eq!(request, MetadataRequest::default().with_topics(None));
        assert!(rest.is_empty());
    }

    #[test]
    fn the_prefix_carries_the_new_correlation_id_and_the_rest_is_unchanged() {
        let frame = encode_frame(
            &ProduceRequest::default().with_acks(-1),
            9,
            0,
            &StrBytes::from_static_str("test"),
        )
        .expect("encodes");
        let prefix = frame_prefix(&frame, 0x0102_0304);
        assert_eq!(
            &prefix[..CORRELATION_ID_OFFSET],
            &frame[..CORRELATION_ID_OFFSET]
        );
        assert_eq!(&prefix[CORRELATION_ID_OFFSET..], &[1, 2, 3, 4]);
        let mut body = frame.slice(4..);
        let header = RequestHeader::decode(&mut body, 2).expect("header decodes");
        assert_eq!((header.request_api_key, header.request_api_version), (0, 9));
    }

    #[test]
    fn a_response_answering_another_request_is_refused() {
        let body = MetadataResponse::default();
        let mut frame = response_frame(ApiKey::Metadata, 12, 5, &body);
        let decoded: MetadataResponse =
            decode_response("b:1", &mut frame.clone(), ApiKey::Metadata, 12, 5)
                .expect("answers request 5");
        assert_eq!(decoded, body);
        assert!(matches!(
            decode_response::<MetadataResponse>("b:1", &mut frame, ApiKey::Metadata, 12, 6),
            Err(ClientError::CorrelationMismatch {
                expected: 6,
                found: 5,
                ..
            })
        ));
    }

    #[test]
    fn bytes_after_the_body_are_refused() {
        let mut frame = BytesMut::from(
            &response_frame(ApiKey::Metadata, 12, 1, &MetadataResponse::default())[..],
        );
        frame.put_u8(0);
        let refused = decode_response::<MetadataResponse>(
            "b:1",
            &mut frame.freeze(),
            ApiKey::Metadata,
            12,
            1,
        );
        assert!(matches!(
            refused,
            Err(ClientError::TrailingBytes { bytes: 1, .. })
        ));
    }

    #[test]
    fn a_cut_response_is_a_decode_error_not_a_panic() {
        let frame = response_frame(ApiKey::Metadata, 12, 1, &MetadataResponse::default());
        for cut in 0..frame.len() {
            let result = decode_response::<MetadataResponse>(
                "b:1",
                &mut frame.slice(..cut),
                ApiKey::Metadata,
                12,
                1,
            );
            assert!(result.is_err(), "a frame cut at {cut} decoded");
        }
    }
}
