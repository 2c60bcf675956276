//! The zero-copy path sends exactly the bytes a plain copying encoder would.
//!
//! Record batches are written to a segment file; fetch responses whose records are file
//! regions of it are encoded as chunks and sent over a loopback TCP connection with
//! `write_chunks_with_stats` (sendfile for the regions). What arrives must equal both the
//! plain copying path (`chunks_to_vec`) and kafka-protocol's own encoding of the same
//! response with the records inlined.
//!
//! Reader and writer are two tasks on one single-threaded glommio executor: if the writer
//! ever blocked the thread on a full socket, the reader could not drain it and the test
//! would hang, which the watchdog turns into a failure.

use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::io::WriteHalf;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{ResponseHeader, TopicName};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use shardlog::batch::{BatchBuilder, Compression};
use shardlog::broker::chunks::{Chunk, FileChunk, Records};
use shardlog::broker::fetch_response::{
    encode_fetch_response, FetchPartition, FetchResponseBody, FetchTopic, FETCH_VERSION_MAX,
    FETCH_VERSION_MIN,
};
use shardlog::broker::zero_copy::{
    chunks_to_vec, write_chunks_to_socket, write_chunks_with_stats, SendStats,
};
use shardlog::runtime::{run_local, IO_MEMORY_BYTES_DEFAULT};

/// A test taking longer than this has hung (a blocked executor): fail it instead.
const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(120);
/// The slow reader's read size and the pause after each read.
const SLOW_READ_BYTES: usize = 32 << 10;
const SLOW_READ_PAUSE: Duration = Duration::from_millis(1);
/// The writer's send buffer in the slow-reader test, small so the socket fills for certain.
const SLOW_TEST_SEND_BUFFER_BYTES: libc::c_int = 256 << 10;

/// A segment file of real record batches, and a copy of its bytes kept in memory.
struct Segment {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    /// Offset in the file where each batch starts, plus the file's length at the end.
    batch_starts: Vec<u64>,
}

impl Segment {
    /// Writes batches of varying size (some zstd-compressed) until the file holds at least
    /// `bytes_min` bytes, so batch boundaries fall at unaligned offsets.
    fn write(bytes_min: usize) -> Segment {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let path = dir.path().join("00000000000000000000.log");
        let mut bytes = Vec::with_capacity(bytes_min + (256 << 10));
        let mut batch_starts = Vec::new();
        let mut base_offset = 0i64;
        let mut batch_index = 0usize;
        while bytes.len() < bytes_min {
            let records = 20 + batch_index % 50;
            let compression = if batch_index % 5 == 4 {
                Compression::Zstd
            } else {
                Compression::None
            };
            let timestamp_ms = 1_700_000_000_000 + base_offset;
            let mut builder = BatchBuilder::new(timestamp_ms, compression);
            for record in 0..records {
                let key = format!("key-{batch_index}-{record}");
                let value: Vec<u8> = (0..700 + (record * 37) % 900)
                    .map(|byte| (batch_index * 131 + record * 17 + byte * 7) as u8)
                    .collect();
                builder.push_kv(
                    Some(key.as_bytes()),
                    Some(&value),
                    &[(b"trace".as_slice(), Some(b"abc".as_slice()))],
                    timestamp_ms + record as i64,
                );
            }
            batch_starts.push(bytes.len() as u64);
            bytes.extend_from_slice(&builder.build(base_offset).unwrap());
            base_offset += records as i64;
            batch_index += 1;
        }
        batch_starts.push(bytes.len() as u64);
        std::fs::write(&path, &bytes).unwrap();
        Segment {
            _dir: dir,
            path,
            bytes,
            batch_starts,
        }
    }

    /// The segment opened read-only, plainly or with O_DIRECT (`None` if the filesystem
    /// refuses O_DIRECT, as tmpfs does).
    fn open(&self, direct: bool) -> Option<Arc<OwnedFd>> {
        let file = if direct {
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.path)
            {
                Ok(file) => file,
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => return None,
                Err(error) => panic!("open {:?} with O_DIRECT: {error}", self.path),
            }
        } else {
            std::fs::File::open(&self.path).unwrap()
        };
        Some(Arc::new(OwnedFd::from(file)))
    }

    /// The region holding batches `first..last` (indexes into `batch_starts`).
    fn region(&self, fd: &Arc<OwnedFd>, first: usize, last: usize) -> Chunk {
        let position = self.batch_starts[first];
        Chunk::File(FileChunk {
            fd: Arc::clone(fd),
            position,
            len: self.batch_starts[last] - position,
        })
    }

    fn batch_count(&self) -> usize {
        self.batch_starts.len() - 1
    }

    /// The records' bytes taken from memory, not from the file: independent of both paths.
    fn inline(&self, records: &Records) -> Bytes {
        let mut out = Vec::new();
        for part in &records.parts {
            match part {
                Chunk::Bytes(bytes) => out.extend_from_slice(bytes),
                Chunk::File(file) => out.extend_from_slice(
                    &self.bytes[file.position as usize..(file.position + file.len) as usize],
                ),
            }
        }
        Bytes::from(out)
    }
}

/// Two topics: one partition of two file regions, one of a single region with an error-free
/// empty neighbour; one topic whose partitions have null records and an error.
fn mixed_body(segment: &Segment, fd: &Arc<OwnedFd>) -> FetchResponseBody {
    let batches = segment.batch_count();
    let partition = |partition_index, error_code, records| FetchPartition {
        partition_index,
        error_code,
        high_watermark: 100_000,
        last_stable_offset: 100_000,
        log_start_offset: 0,
        records,
    };
    FetchResponseBody {
        throttle_time_ms: 0,
        error_code: 0,
        session_id: 0,
        topics: vec![
            FetchTopic {
                name: "events".to_string(),
                partitions: vec![
                    partition(
                        0,
                        0,
                        Some(Records {
                            parts: vec![
                                segment.region(fd, 0, batches / 3),
                                segment.region(fd, batches / 3, batches / 2),
                            ],
                        }),
                    ),
                    partition(
                        1,
                        0,
                        Some(Records {
                            parts: vec![segment.region(fd, batches / 2 + 1, batches)],
                        }),
                    ),
                    partition(2, 0, Some(Records::default())),
                ],
            },
            FetchTopic {
                name: "audit".to_string(),
                partitions: vec![partition(0, 3, None), partition(1, 6, None)],
            },
        ],
    }
}

/// One topic, one partition, whose records are the whole segment in one region.
fn whole_segment_body(segment: &Segment, fd: &Arc<OwnedFd>) -> FetchResponseBody {
    FetchResponseBody {
        throttle_time_ms: 0,
        error_code: 0,
        session_id: 0,
        topics: vec![FetchTopic {
            name: "events".to_string(),
            partitions: vec![FetchPartition {
                partition_index: 0,
                error_code: 0,
                high_watermark: 1 << 20,
                last_stable_offset: 1 << 20,
                log_start_offset: 0,
                records: Some(Records {
                    parts: vec![segment.region(fd, 0, segment.batch_count())],
                }),
            }],
        }],
    }
}

/// kafka-protocol's encoding of the same response, records inlined, with the size prefix.
fn kafka_protocol_frame(
    version: i16,
    correlation_id: i32,
    body: &FetchResponseBody,
    segment: &Segment,
) -> Vec<u8> {
    let topics = body
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    PartitionData::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(partition.error_code)
                        .with_high_watermark(partition.high_watermark)
                        .with_last_stable_offset(partition.last_stable_offset)
                        .with_log_start_offset(partition.log_start_offset)
                        .with_aborted_transactions(None)
                        .with_records(partition.records.as_ref().map(|r| segment.inline(r)))
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(topic.name.clone())))
                .with_partitions(partitions)
        })
        .collect();
    let mut response = FetchResponse::default()
        .with_throttle_time_ms(body.throttle_time_ms)
        .with_responses(topics);
    if version >= 7 {
        response = response
            .with_error_code(body.error_code)
            .with_session_id(body.session_id);
    }
    let mut frame = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut frame, FetchResponse::header_version(version))
        .unwrap();
    response.encode(&mut frame, version).unwrap();
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    out
}

/// A connected loopback pair: (the broker's side, which writes; the client's side).
async fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let client = TcpStream::connect(address).await.unwrap();
    let broker = listener.accept().await.unwrap();
    (broker, client)
}

/// The broker's end of the connection: the stream itself, or split as a connection splits it
/// (the write half, and the task reading the acknowledgement on the read half).
enum BrokerSide {
    Whole(TcpStream),
    Halves(WriteHalf<TcpStream>, glommio::Task<[u8; 8]>),
}

/// What one run of the scenario produced.
struct Exchange {
    received: Vec<u8>,
    copied_encoding: Vec<u8>,
    kafka_protocol_encoding: Vec<u8>,
    stats: SendStats,
    file_bytes: u64,
}

/// Sends one response per version in `versions` from a writer task to a reader task on the
/// same executor, then the reader acknowledges the byte count over the same connection (so
/// the writer also reads from its now non-blocking socket).
async fn exchange(
    segment: Arc<Segment>,
    body: FetchResponseBody,
    versions: std::ops::RangeInclusive<i16>,
    slow_reader: bool,
    split_halves: bool,
) -> Exchange {
    let (broker, mut client) = connected_pair().await;
    if slow_reader {
        set_send_buffer(&broker, SLOW_TEST_SEND_BUFFER_BYTES);
    }

    let reader = glommio::spawn_local(async move {
        let mut received = Vec::new();
        if slow_reader {
            let mut piece = vec![0u8; SLOW_READ_BYTES];
            loop {
                let read = client.read(&mut piece).await.unwrap();
                if read == 0 {
                    break;
                }
                received.extend_from_slice(&piece[..read]);
                glommio::timer::sleep(SLOW_READ_PAUSE).await;
            }
        } else {
            client.read_to_end(&mut received).await.unwrap();
        }
        client
            .write_all(&(received.len() as u64).to_be_bytes())
            .await
            .unwrap();
        received
    });

    let writer = glommio::spawn_local(async move {
        let mut stats = SendStats::default();
        let mut copied_encoding = Vec::new();
        let mut kafka_protocol_encoding = Vec::new();
        let mut file_bytes = 0u64;
        let socket_fd = broker.as_raw_fd();
        let mut side = if split_halves {
            // As a connection does: a read stays pending on one half while the other writes.
            let (mut read_half, write_half) = futures_lite::io::split(broker);
            let acknowledgement = glommio::spawn_local(async move {
                let mut acknowledged = [0u8; 8];
                read_half.read_exact(&mut acknowledged).await.unwrap();
                acknowledged
            });
            BrokerSide::Halves(write_half, acknowledgement)
        } else {
            BrokerSide::Whole(broker)
        };
        for version in versions {
            let correlation_id = 1_000 + i32::from(version);
            let chunks = encode_fetch_response(version, correlation_id, &body);
            assert!(chunks.iter().any(|chunk| matches!(chunk, Chunk::File(_))));
            file_bytes += chunks
                .iter()
                .filter(|chunk| matches!(chunk, Chunk::File(_)))
                .map(Chunk::len)
                .sum::<u64>();
            copied_encoding.extend_from_slice(&chunks_to_vec(&chunks).unwrap());
            kafka_protocol_encoding.extend_from_slice(&kafka_protocol_frame(
                version,
                correlation_id,
                &body,
                &segment,
            ));
            let sent = match &mut side {
                BrokerSide::Whole(stream) => write_chunks_with_stats(stream, &chunks).await,
                BrokerSide::Halves(write_half, _) => {
                    write_chunks_to_socket(write_half, socket_fd, &chunks).await
                }
            };
            let sent = sent.unwrap();
            stats.zero_copy_bytes += sent.zero_copy_bytes;
            stats.copied_bytes += sent.copied_bytes;
        }
        let acknowledged = match side {
            BrokerSide::Whole(mut stream) => {
                stream.shutdown(Shutdown::Write).await.unwrap();
                let mut acknowledged = [0u8; 8];
                stream.read_exact(&mut acknowledged).await.unwrap();
                acknowledged
            }
            BrokerSide::Halves(mut write_half, acknowledgement) => {
                write_half.close().await.unwrap();
                acknowledgement.await
            }
        };
        assert_eq!(
            u64::from_be_bytes(acknowledged),
            copied_encoding.len() as u64,
            "the reader's count, read back on the non-blocking socket"
        );
        (stats, copied_encoding, kafka_protocol_encoding, file_bytes)
    });

    let (stats, copied_encoding, kafka_protocol_encoding, file_bytes) = writer.await;
    let received = reader.await;
    Exchange {
        received,
        copied_encoding,
        kafka_protocol_encoding,
        stats,
        file_bytes,
    }
}

fn set_send_buffer(stream: &TcpStream, bytes: libc::c_int) {
    // SAFETY: SO_SNDBUF reads one c_int from the pointer, which outlives the call.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        result,
        0,
        "setsockopt SO_SNDBUF: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `test` on a fresh executor; a hang past [`WATCHDOG_TIMEOUT`] fails the process.
fn run_with_watchdog<T>(name: &str, test: impl std::future::Future<Output = T>) -> T {
    let (done, finished) = mpsc::channel::<()>();
    let name_for_watchdog = name.to_string();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(WATCHDOG_TIMEOUT) {
            eprintln!(
                "{name_for_watchdog}: no result after {WATCHDOG_TIMEOUT:?}: the executor is \
                 blocked (a write waited on the thread instead of in a task)"
            );
            std::process::exit(101);
        }
    });
    let output = run_local(IO_MEMORY_BYTES_DEFAULT, test);
    let _ = done.send(());
    output
}

fn assert_same_bytes(exchange: &Exchange) {
    assert_eq!(exchange.received.len(), exchange.copied_encoding.len());
    assert!(
        exchange.received == exchange.copied_encoding,
        "the zero-copy path sent different bytes than chunks_to_vec"
    );
    assert!(
        exchange.received == exchange.kafka_protocol_encoding,
        "the zero-copy path sent different bytes than kafka-protocol's encoding"
    );
    assert_eq!(
        exchange.stats.zero_copy_bytes + exchange.stats.copied_bytes,
        exchange.file_bytes,
        "every file byte went one way or the other"
    );
}

#[test]
fn zero_copy_sends_what_a_copying_encoder_would_for_every_version() {
    let exchange = run_with_watchdog("every version", async {
        let segment = Arc::new(Segment::write(4 << 20));
        let fd = segment.open(false).unwrap();
        let body = mixed_body(&segment, &fd);
        exchange(
            Arc::clone(&segment),
            body,
            FETCH_VERSION_MIN..=FETCH_VERSION_MAX,
            false,
            false,
        )
        .await
    });
    assert_same_bytes(&exchange);
    assert!(exchange.stats.zero_copy_bytes > 0, "{:?}", exchange.stats);
    eprintln!(
        "buffered descriptor, {} bytes received: {:?}",
        exchange.received.len(),
        exchange.stats
    );
}

#[test]
fn slow_reader_fills_the_socket_and_the_writer_waits_without_blocking() {
    let started = Instant::now();
    let exchange = run_with_watchdog("slow reader", async {
        let segment = Arc::new(Segment::write(16 << 20));
        let fd = segment.open(false).unwrap();
        let body = whole_segment_body(&segment, &fd);
        exchange(Arc::clone(&segment), body, 12..=12, true, false).await
    });
    assert_same_bytes(&exchange);
    assert!(
        exchange.stats.zero_copy_bytes > 0 && exchange.stats.copied_bytes > 0,
        "a full socket must have sent both ways: {:?}",
        exchange.stats
    );
    eprintln!(
        "slow reader, {} bytes in {:?}: {:?}",
        exchange.received.len(),
        started.elapsed(),
        exchange.stats
    );
}

#[test]
fn split_halves_with_a_pending_read_send_the_same_bytes() {
    let exchange = run_with_watchdog("split halves", async {
        let segment = Arc::new(Segment::write(8 << 20));
        let fd = segment.open(false).unwrap();
        let body = whole_segment_body(&segment, &fd);
        exchange(Arc::clone(&segment), body, 11..=12, true, true).await
    });
    assert_same_bytes(&exchange);
    assert!(
        exchange.stats.zero_copy_bytes > 0 && exchange.stats.copied_bytes > 0,
        "a full socket must have sent both ways: {:?}",
        exchange.stats
    );
    eprintln!("split halves, slow reader: {:?}", exchange.stats);
}

#[test]
fn o_direct_descriptor_sends_aligned_blocks_with_sendfile_and_copies_the_ends() {
    let exchange = run_with_watchdog("O_DIRECT", async {
        let segment = Arc::new(Segment::write(4 << 20));
        let Some(fd) = segment.open(true) else {
            eprintln!("skipped: the filesystem of CARGO_TARGET_TMPDIR refuses O_DIRECT");
            return None;
        };
        let body = mixed_body(&segment, &fd);
        Some(exchange(Arc::clone(&segment), body, 11..=12, false, false).await)
    });
    let Some(exchange) = exchange else {
        return;
    };
    assert_same_bytes(&exchange);
    // Batch boundaries are unaligned, so each region's head and tail are copied; the
    // aligned middle goes through sendfile.
    assert!(
        exchange.stats.zero_copy_bytes > 0 && exchange.stats.copied_bytes > 0,
        "{:?}",
        exchange.stats
    );
    eprintln!("O_DIRECT descriptor: {:?}", exchange.stats);
}

#[test]
fn a_descriptor_sendfile_refuses_goes_through_the_copy_path() {
    // procfs files cannot be spliced: sendfile fails with EINVAL, while pread works. The
    // environment block of this process does not change while it runs.
    let environ = std::fs::read("/proc/self/environ").unwrap();
    assert!(environ.len() > 3, "cargo test always sets some environment");
    let fd = Arc::new(OwnedFd::from(
        std::fs::File::open("/proc/self/environ").unwrap(),
    ));
    let chunks = vec![
        Chunk::Bytes(Bytes::from_static(b"before")),
        Chunk::File(FileChunk {
            fd,
            position: 3,
            len: environ.len() as u64 - 3,
        }),
        Chunk::Bytes(Bytes::from_static(b"after")),
    ];
    let mut expected = b"before".to_vec();
    expected.extend_from_slice(&environ[3..]);
    expected.extend_from_slice(b"after");
    assert_eq!(chunks_to_vec(&chunks).unwrap(), expected);

    let (received, stats) = run_with_watchdog("refused descriptor", async move {
        let (mut broker, mut client) = connected_pair().await;
        let reader = glommio::spawn_local(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        });
        let stats = write_chunks_with_stats(&mut broker, &chunks).await.unwrap();
        broker.shutdown(Shutdown::Write).await.unwrap();
        (reader.await, stats)
    });
    assert!(received == expected, "the copy path sent different bytes");
    assert_eq!(
        stats,
        SendStats {
            zero_copy_bytes: 0,
            copied_bytes: environ.len() as u64 - 3,
        }
    );
}
