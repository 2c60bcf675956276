//! One blocking connection to a broker over a `std::net::TcpStream`, for threads that own
//! their socket: the harness's producers and consumers, and the integration tests.
//!
//! Concurrency: a [`Connection`] is used by one thread. [`Connection::split`] gives a
//! [`FrameWriter`] and a [`FrameReader`] over the same socket, for one sender thread and one
//! receiver thread; responses come back in request order, which is the Kafka contract.
//!
//! Bounds: a response frame larger than [`RESPONSE_BYTES_MAX`] is refused before it is read
//! (`crate::frame::check_size`); a read that waits longer than the connection's read timeout
//! ([`READ_TIMEOUT`] for [`Connection::open`]) fails with [`ClientError::Timeout`].

use std::io::{IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Request, StrBytes};

use super::codec::{api_of, decode_response, encode_frame};
use super::versions::{self, BrokerVersions, API_VERSIONS_VERSION};
use super::{ClientError, FIRST_CORRELATION_ID};
use crate::frame::{self, RESPONSE_HEADER_MIN_BYTES, SIZE_PREFIX_BYTES};

/// Largest response frame this client reads (a fetch answer is bounded by its max_bytes).
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;

/// Longest a read on a connection made by [`Connection::open`] waits for the broker.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

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

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Closes both directions, which wakes a reader blocked on this socket.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Closes the sending direction only: the broker sees the end of the stream and may
    /// still answer what it has read.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// The receiving half of a connection. Owns one buffer that every frame is read into; a
/// returned frame shares it, and the buffer is reused once the frame is dropped.
pub struct FrameReader {
    address: String,
    stream: TcpStream,
    buffer: BytesMut,
    read_timeout: Option<Duration>,
}

impl FrameReader {
    /// Reads the next frame (without its size prefix), refusing one larger than
    /// [`RESPONSE_BYTES_MAX`] before reading its body.
    pub fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let mut prefix = [0u8; SIZE_PREFIX_BYTES];
        if let Err(source) = self.stream.read_exact(&mut prefix) {
            return Err(self.read_error(source));
        }
        let size = frame::check_size(prefix, RESPONSE_HEADER_MIN_BYTES, RESPONSE_BYTES_MAX)
            .map_err(|source| ClientError::FrameSize {
                address: self.address.clone(),
                source,
            })?;
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
    pub fn read_response<R: Decodable>(
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
                    waited: self.read_timeout.unwrap_or_default(),
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
    /// Connects (TCP_NODELAY on, reads bounded by [`READ_TIMEOUT`]) and asks the broker
    /// which API versions it serves, naming the client `software` (KIP-511: letters, digits,
    /// '-' and '.').
    pub fn open(address: &str, client_id: &str, software: &str) -> Result<Connection, ClientError> {
        let mut connection = Connection::connect(address, client_id, READ_TIMEOUT)?;
        connection.negotiate(software)?;
        Ok(connection)
    }

    /// Connects (TCP_NODELAY on, reads bounded by `read_timeout`) without asking for
    /// versions, for callers that speak fixed ones.
    pub fn connect(
        address: &str,
        client_id: &str,
        read_timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let connect_error = |source| ClientError::Connect {
            address: address.to_string(),
            source,
        };
        let resolved: Vec<SocketAddr> = address.to_socket_addrs().map_err(connect_error)?.collect();
        let stream = TcpStream::connect(&resolved[..]).map_err(connect_error)?;
        let io_error = |source| ClientError::Io {
            address: address.to_string(),
            source,
        };
        stream.set_nodelay(true).map_err(io_error)?;
        stream
            .set_read_timeout(Some(read_timeout))
            .map_err(io_error)?;
        Connection::from_stream(stream, address, client_id)
    }

    /// Wraps a socket the caller connected and configured (timeouts, options) itself.
    pub fn from_stream(
        stream: TcpStream,
        address: &str,
        client_id: &str,
    ) -> Result<Connection, ClientError> {
        let read_timeout = stream.read_timeout().ok().flatten();
        let reader_stream = stream.try_clone().map_err(|source| ClientError::Io {
            address: address.to_string(),
            source,
        })?;
        Ok(Connection {
            writer: FrameWriter {
                address: address.to_string(),
                stream,
            },
            reader: FrameReader {
                address: address.to_string(),
                stream: reader_stream,
                buffer: BytesMut::new(),
                read_timeout,
            },
            versions: BrokerVersions::default(),
            client_id: StrBytes::from_string(client_id.to_string()),
            next_correlation_id: FIRST_CORRELATION_ID,
        })
    }

    /// Asks the broker which API versions it serves; [`Connection::pick_version`] then
    /// chooses from them.
    pub fn negotiate(&mut self, software: &str) -> Result<(), ClientError> {
        let correlation_id = self.take_correlation_id();
        let frame = encode_frame(
            &versions::api_versions_request(software),
            API_VERSIONS_VERSION,
            correlation_id,
            &self.client_id,
        )?;
        self.writer.write_frame(&frame, &[])?;
        let frame = self.reader.read_frame()?;
        self.versions = versions::decode_api_versions(self.address(), frame, correlation_id)?;
        Ok(())
    }

    pub fn address(&self) -> &str {
        &self.writer.address
    }

    /// This end's address, as the broker logs it.
    pub fn local_address(&self) -> Result<SocketAddr, ClientError> {
        self.writer
            .stream
            .local_addr()
            .map_err(|source| ClientError::Io {
                address: self.address().to_string(),
                source,
            })
    }

    pub fn client_id(&self) -> &StrBytes {
        &self.client_id
    }

    /// The highest version of `R` both sides speak, within `client_min..=client_max`.
    /// Needs [`Connection::negotiate`] first (done by [`Connection::open`]).
    pub fn pick_version<R: Request>(
        &self,
        client_min: i16,
        client_max: i16,
    ) -> Result<i16, ClientError> {
        self.versions
            .pick::<R>(self.address(), client_min, client_max)
    }

    /// The next correlation id, taken: each request gets its own.
    pub fn take_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }

    /// Sends one request and waits for its response.
    pub fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let correlation_id = self.take_correlation_id();
        let frame = encode_frame(request, version, correlation_id, &self.client_id)?;
        self.writer.write_frame(&frame, &[])?;
        self.reader
            .read_response(api_of::<R>(), version, correlation_id)
    }

    /// The sending half, for frames built by the caller (pipelining, or bytes a test
    /// sends on purpose).
    pub fn writer(&mut self) -> &mut FrameWriter {
        &mut self.writer
    }

    /// The receiving half, for reading frames the caller decodes itself.
    pub fn reader(&mut self) -> &mut FrameReader {
        &mut self.reader
    }

    /// The two halves, for a sender thread and a receiver thread, and the correlation id to
    /// continue from.
    pub fn split(self) -> (FrameWriter, FrameReader, i32) {
        (self.writer, self.reader, self.next_correlation_id)
    }
}
