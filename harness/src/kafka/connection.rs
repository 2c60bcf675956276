//! One blocking connection to a broker: framing, correlation ids and version negotiation.
//!
//! A Kafka frame is a 4-byte big-endian size followed by that many bytes. A request frame
//! starts with the request header, whose first 8 bytes are fixed:
//!
//! ```text
//! offset  0        4          6              8                12
//!         | size   | api key  | api version  | correlation id | client id, [tags], body ...
//!         | i32 BE | i16 BE   | i16 BE       | i32 BE         |
//! ```
//!
//! so a request encoded once can be sent many times: only the 12-byte prefix (here: the
//! correlation id in it) changes, and it is written ahead of the shared rest with `writev`.
//!
//! Concurrency: a [`Connection`] is used by one thread. [`Connection::split`] gives a
//! [`FrameWriter`] and a [`FrameReader`] over the same socket, for one sender thread and one
//! receiver thread; responses come back in request order, which is the Kafka contract.
//!
//! Bounds: a response frame larger than [`RESPONSE_BYTES_MAX`] is refused before it is read;
//! a read that waits more than [`READ_TIMEOUT`] fails.

use std::io::{IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::{response_error, ClientError};

/// Largest response frame this client reads (a fetch answer is bounded by its max_bytes).
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;

/// Longest a read waits for the broker before the connection is given up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes of a request frame before the client id: size, api key, version, correlation id.
pub const FRAME_PREFIX_BYTES: usize = 12;

/// Where the correlation id sits in a request frame.
const CORRELATION_ID_OFFSET: usize = 8;

/// The ApiVersions version this client asks with (the broker answers v0 with its ranges if
/// it does not serve it).
const API_VERSIONS_VERSION: i16 = 3;

/// Kafka's UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

/// The version range the broker serves for each API, from its ApiVersions answer.
#[derive(Clone, Debug, Default)]
pub struct BrokerVersions {
    ranges: Vec<(i16, i16, i16)>,
}

impl BrokerVersions {
    /// The highest version both sides speak for `R`, with the client's own range
    /// `client_min..=client_max` (capped by what `kafka-protocol` can encode).
    pub fn pick<R: Request>(
        &self,
        address: &str,
        client_min: i16,
        client_max: i16,
    ) -> Result<i16, ClientError> {
        let api = ApiKey::try_from(R::KEY).expect("R::KEY is a known API key");
        let client_max = client_max.min(R::VERSIONS.max);
        let unsupported = |broker_range: String| ClientError::UnsupportedVersion {
            address: address.to_string(),
            api,
            broker_range,
            client_min,
            client_max,
        };
        let Some(&(_, broker_min, broker_max)) =
            self.ranges.iter().find(|(key, _, _)| *key == R::KEY)
        else {
            return Err(unsupported("none".to_string()));
        };
        let version = broker_max.min(client_max);
        if version < broker_min.max(client_min) {
            return Err(unsupported(format!("{broker_min}..={broker_max}")));
        }
        Ok(version)
    }
}

/// Encodes a whole request frame (size prefix included).
pub fn encode_frame<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> Result<Bytes, ClientError> {
    let api = ApiKey::try_from(R::KEY).expect("R::KEY is a known API key");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let header_version = R::header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|header_bytes| Ok(header_bytes + request.compute_size(version)?))
        .map_err(|error| encode_error(api, version, &error))?;
    let mut frame = BytesMut::with_capacity(4 + size);
    frame.put_i32(size as i32);
    header
        .encode(&mut frame, header_version)
        .map_err(|error| encode_error(api, version, &error))?;
    request
        .encode(&mut frame, version)
        .map_err(|error| encode_error(api, version, &error))?;
    debug_assert_eq!(frame.len(), 4 + size);
    Ok(frame.freeze())
}

/// `kafka-protocol` reports errors as `anyhow::Error`; only their text is kept.
fn encode_error(api: ApiKey, version: i16, error: &dyn std::fmt::Display) -> ClientError {
    ClientError::Encode {
        api,
        version,
        reason: error.to_string(),
    }
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

/// The sending half of a connection.
pub struct FrameWriter {
    address: String,
    stream: TcpStream,
}

impl FrameWriter {
    /// Writes `head` then `tail` as one frame (one `writev` when the socket takes it all).
    /// Returns when the kernel has every byte.
    pub fn write_frame(&mut self, head: &[u8], tail: &[u8]) -> Result<(), ClientError> {
        let mut slices = [IoSlice::new(head), IoSlice::new(tail)];
        let mut remaining: &mut [IoSlice] = &mut slices;
        while !remaining.is_empty() {
            match self.stream.write_vectored(remaining) {
                Ok(0) => {
                    return Err(ClientError::Closed {
                        address: self.address.clone(),
                    })
                }
                Ok(written) => IoSlice::advance_slices(&mut remaining, written),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ClientError::Io {
                        address: self.address.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Closes both directions, which wakes a reader blocked on this socket.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The receiving half of a connection. Owns one buffer that every frame is read into; a
/// returned frame shares it, and the buffer is reused once the frame is dropped.
pub struct FrameReader {
    address: String,
    stream: TcpStream,
    buffer: BytesMut,
}

impl FrameReader {
    /// Reads the next frame (without its size prefix).
    pub fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let mut size = [0u8; 4];
        if let Err(source) = self.stream.read_exact(&mut size) {
            return Err(self.read_error(source));
        }
        let size = i64::from(i32::from_be_bytes(size));
        if !(4..=RESPONSE_BYTES_MAX as i64).contains(&size) {
            return Err(ClientError::FrameTooLarge {
                address: self.address.clone(),
                size,
                limit_bytes: RESPONSE_BYTES_MAX,
            });
        }
        let size = size as usize;
        // The previous frame has normally been dropped by now, so this reuses its memory.
        self.buffer.clear();
        self.buffer.reserve(size);
        let fd = self.stream.as_raw_fd();
        let mut filled = 0;
        while filled < size {
            let spare = &mut self.buffer.spare_capacity_mut()[filled..size];
            // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by the buffer;
            // recv writes at most that many bytes into it and never reads it.
            let read = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
            match read {
                0 => {
                    return Err(ClientError::Closed {
                        address: self.address.clone(),
                    })
                }
                read if read > 0 => filled += read as usize,
                _ => {
                    let error = std::io::Error::last_os_error();
                    if error.kind() != std::io::ErrorKind::Interrupted {
                        return Err(self.read_error(error));
                    }
                }
            }
        }
        // SAFETY: recv initialised the first `size` bytes, one after another.
        unsafe { self.buffer.set_len(size) };
        Ok(self.buffer.split().freeze())
    }

    fn read_error(&self, source: std::io::Error) -> ClientError {
        match source.kind() {
            std::io::ErrorKind::UnexpectedEof => ClientError::Closed {
                address: self.address.clone(),
            },
            _ => ClientError::Io {
                address: self.address.clone(),
                source,
            },
        }
    }

    /// Reads the next response, checks its correlation id and decodes its body as `R`.
    pub fn read_response<R: Decodable + HeaderVersion>(
        &mut self,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Result<R, ClientError> {
        let mut frame = match self.read_frame() {
            Ok(frame) => frame,
            Err(ClientError::Io { address, source })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ClientError::Timeout {
                    address,
                    api,
                    waited_s: READ_TIMEOUT.as_secs(),
                })
            }
            Err(error) => return Err(error),
        };
        decode_response(&self.address, &mut frame, api, version, correlation_id)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Closes both directions, which wakes a writer blocked on this socket.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Decodes a response frame (header, then body as `R`), checking the correlation id.
pub fn decode_response<R: Decodable + HeaderVersion>(
    address: &str,
    frame: &mut Bytes,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<R, ClientError> {
    let decode_error = |reason: String| ClientError::Decode {
        address: address.to_string(),
        api,
        version,
        reason,
    };
    let header = ResponseHeader::decode(frame, R::header_version(version))
        .map_err(|error| decode_error(error.to_string()))?;
    if header.correlation_id != correlation_id {
        return Err(ClientError::CorrelationMismatch {
            address: address.to_string(),
            expected: correlation_id,
            found: header.correlation_id,
        });
    }
    R::decode(frame, version).map_err(|error| decode_error(error.to_string()))
}

/// A connection used by one thread for plain request/response calls; [`Connection::split`]
/// turns it into a pipelined writer and reader.
pub struct Connection {
    writer: FrameWriter,
    reader: FrameReader,
    versions: BrokerVersions,
    client_id: StrBytes,
    next_correlation_id: i32,
}

impl Connection {
    /// Connects (TCP_NODELAY on) and asks the broker which API versions it serves.
    pub fn open(address: &str, client_id: &str) -> Result<Connection, ClientError> {
        let connect_error = |source| ClientError::Connect {
            address: address.to_string(),
            source,
        };
        let resolved: Vec<_> = address.to_socket_addrs().map_err(connect_error)?.collect();
        let stream = TcpStream::connect(&resolved[..]).map_err(connect_error)?;
        let io_error = |source| ClientError::Io {
            address: address.to_string(),
            source,
        };
        stream.set_nodelay(true).map_err(io_error)?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(io_error)?;
        let reader_stream = stream.try_clone().map_err(io_error)?;
        let mut connection = Connection {
            writer: FrameWriter {
                address: address.to_string(),
                stream,
            },
            reader: FrameReader {
                address: address.to_string(),
                stream: reader_stream,
                buffer: BytesMut::new(),
            },
            versions: BrokerVersions::default(),
            client_id: StrBytes::from_string(client_id.to_string()),
            next_correlation_id: 0,
        };
        connection.versions = connection.api_versions()?;
        Ok(connection)
    }

    fn api_versions(&mut self) -> Result<BrokerVersions, ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("shardlog-harness"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let correlation_id = self.take_correlation_id();
        let frame = encode_frame(
            &request,
            API_VERSIONS_VERSION,
            correlation_id,
            &self.client_id,
        )?;
        self.writer.write_frame(&frame, &[])?;
        let mut frame = self.reader.read_frame()?;
        let address = self.address().to_string();
        let mut body = frame.clone();
        let mut response: ApiVersionsResponse = decode_response(
            &address,
            &mut frame,
            ApiKey::ApiVersions,
            API_VERSIONS_VERSION,
            correlation_id,
        )
        .or_else(|_| {
            // A broker that does not serve our version answers in v0 (header always v0).
            decode_response(&address, &mut body, ApiKey::ApiVersions, 0, correlation_id)
        })?;
        if response.error_code == UNSUPPORTED_VERSION && !response.api_keys.is_empty() {
            response.error_code = 0;
        }
        if let Some(error) = response_error(response.error_code) {
            return Err(ClientError::BrokerRequest {
                api: ApiKey::ApiVersions,
                error,
            });
        }
        Ok(BrokerVersions {
            ranges: response
                .api_keys
                .iter()
                .map(|key| (key.api_key, key.min_version, key.max_version))
                .collect(),
        })
    }

    pub fn address(&self) -> &str {
        &self.writer.address
    }

    pub fn client_id(&self) -> &StrBytes {
        &self.client_id
    }

    /// The highest version of `R` both sides speak, within `client_min..=client_max`.
    pub fn pick_version<R: Request>(
        &self,
        client_min: i16,
        client_max: i16,
    ) -> Result<i16, ClientError> {
        self.versions
            .pick::<R>(self.address(), client_min, client_max)
    }

    fn take_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }

    /// Sends one request and waits for its response.
    pub fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError>
    where
        R::Response: HeaderVersion,
    {
        let api = ApiKey::try_from(R::KEY).expect("R::KEY is a known API key");
        let correlation_id = self.take_correlation_id();
        let frame = encode_frame(request, version, correlation_id, &self.client_id)?;
        self.writer.write_frame(&frame, &[])?;
        self.reader.read_response(api, version, correlation_id)
    }

    /// The two halves, for a sender thread and a receiver thread. Correlation ids continue
    /// from `next_correlation_id()`.
    pub fn split(self) -> (FrameWriter, FrameReader, i32) {
        (self.writer, self.reader, self.next_correlation_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::ProduceRequest;

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
        let size = i32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
        assert_eq!(size as usize, frame.len() - 4);
        let mut body = frame.slice(4..);
        let header = RequestHeader::decode(&mut body, 2).expect("header decodes");
        assert_eq!((header.request_api_key, header.request_api_version), (0, 9));
    }

    #[test]
    fn picks_the_highest_common_version_or_says_why_not() {
        let versions = BrokerVersions {
            ranges: vec![(0, 3, 9)],
        };
        assert_eq!(versions.pick::<ProduceRequest>("b:1", 3, 12).ok(), Some(9));
        assert_eq!(versions.pick::<ProduceRequest>("b:1", 3, 7).ok(), Some(7));
        assert!(matches!(
            versions.pick::<ProduceRequest>("b:1", 10, 12),
            Err(ClientError::UnsupportedVersion { .. })
        ));
        let none = BrokerVersions::default();
        assert!(none.pick::<ProduceRequest>("b:1", 3, 9).is_err());
    }
}
