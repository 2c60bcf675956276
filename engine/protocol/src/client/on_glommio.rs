//! One connection to a broker on a glommio executor, for code that runs inside the broker:
//! the follower's fetcher.
//!
//! Concurrency: owned by one task; one request in flight at a time ([`AsyncConnection::call`]
//! takes `&mut self`). Responses are read into buffers from a [`BufferPool`], so a large
//! answer (a replica fetch) reuses the memory of the previous one once its bytes are dropped.
//!
//! Bounds: each call names the largest response it accepts; a size prefix above it is
//! refused before anything is read into a buffer (`crate::frame::read_size_within`). Each
//! call, writing and reading together, is given up after the timeout it names.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Request, StrBytes};

use super::codec::{api_of, decode_response, encode_frame};
use super::versions::{self, BrokerVersions, API_VERSIONS_VERSION};
use super::{ClientError, FIRST_CORRELATION_ID};
use crate::buffers::BufferPool;
use crate::frame::{self, FrameError, RESPONSE_HEADER_MIN_BYTES};

/// Largest ApiVersions answer read during [`AsyncConnection::negotiate`].
const API_VERSIONS_BYTES_MAX: usize = 64 << 10;

/// A connection to a broker, used by one task on one executor.
pub struct AsyncConnection {
    address: String,
    stream: TcpStream,
    client_id: StrBytes,
    next_correlation_id: i32,
    versions: BrokerVersions,
    /// Response buffers, used again once the bytes in them have been dropped.
    buffers: Arc<BufferPool>,
}

impl AsyncConnection {
    /// Connects to `address` (TCP_NODELAY on) within `timeout`, without asking for versions.
    /// Responses are read into `buffers`.
    pub async fn connect(
        address: &str,
        client_id: &str,
        timeout: Duration,
        buffers: Arc<BufferPool>,
    ) -> Result<AsyncConnection, ClientError> {
        let connect_error = |source: std::io::Error| ClientError::Connect {
            address: address.to_string(),
            source,
        };
        let connecting = async {
            TcpStream::connect(address)
                .await
                .map_err(|error| connect_error(std::io::Error::other(error.to_string())))
        };
        let stream = connecting
            .or(async {
                glommio::timer::sleep(timeout).await;
                Err(connect_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                )))
            })
            .await?;
        stream.set_nodelay(true).map_err(|error| ClientError::Io {
            address: address.to_string(),
            source: std::io::Error::other(error.to_string()),
        })?;
        Ok(AsyncConnection {
            address: address.to_string(),
            stream,
            client_id: StrBytes::from_string(client_id.to_string()),
            next_correlation_id: FIRST_CORRELATION_ID,
            versions: BrokerVersions::default(),
            buffers,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Asks the broker which API versions it serves; [`AsyncConnection::pick_version`] then
    /// chooses from them.
    pub async fn negotiate(
        &mut self,
        software: &str,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let correlation_id = self.take_correlation_id();
        let request = versions::api_versions_request(software);
        let frame = encode_frame(
            &request,
            API_VERSIONS_VERSION,
            correlation_id,
            &self.client_id,
        )?;
        let answer = self
            .exchange(&frame, API_VERSIONS_BYTES_MAX, ApiKey::ApiVersions, timeout)
            .await?;
        self.versions = versions::decode_api_versions(&self.address, answer, correlation_id)?;
        Ok(())
    }

    /// The highest version of `R` both sides speak, within `client_min..=client_max`.
    /// Needs [`AsyncConnection::negotiate`] first.
    pub fn pick_version<R: Request>(
        &self,
        client_min: i16,
        client_max: i16,
    ) -> Result<i16, ClientError> {
        self.versions
            .pick::<R>(&self.address, client_min, client_max)
    }

    fn take_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }

    /// Sends one request at `version` and reads its response, refusing a response frame
    /// above `response_bytes_max` and giving up after `timeout`.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        response_bytes_max: usize,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let api = api_of::<R>();
        let correlation_id = self.take_correlation_id();
        let frame = encode_frame(request, version, correlation_id, &self.client_id)?;
        let mut answer = self
            .exchange(&frame, response_bytes_max, api, timeout)
            .await?;
        decode_response(&self.address, &mut answer, api, version, correlation_id)
    }

    /// Writes `frame` and reads the next response frame (without its size prefix).
    async fn exchange(
        &mut self,
        frame: &[u8],
        response_bytes_max: usize,
        api: ApiKey,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let address = &self.address;
        let io_error = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::UnexpectedEof => ClientError::Closed {
                address: address.clone(),
            },
            _ => ClientError::Io {
                address: address.clone(),
                source,
            },
        };
        let stream = &mut self.stream;
        let buffers = &self.buffers;
        let exchange = async {
            stream.write_all(frame).await.map_err(io_error)?;
            let size = match frame::read_size_within(
                stream,
                RESPONSE_HEADER_MIN_BYTES,
                response_bytes_max,
            )
            .await
            {
                Ok(Some(size)) => size,
                Ok(None) => {
                    return Err(ClientError::Closed {
                        address: address.clone(),
                    })
                }
                Err(FrameError::Io(source)) => return Err(io_error(source)),
                Err(source) => {
                    return Err(ClientError::FrameSize {
                        address: address.clone(),
                        source,
                    })
                }
            };
            buffers.read_exact(stream, size).await.map_err(io_error)
        };
        exchange
            .or(async {
                glommio::timer::sleep(timeout).await;
                Err(ClientError::Timeout {
                    address: address.clone(),
                    api,
                    waited: timeout,
                })
            })
            .await
    }
}
