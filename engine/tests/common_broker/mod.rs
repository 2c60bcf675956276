//! Helpers shared by the tests that run the real `broker` binary (`clients`, `bad_input`,
//! `restart`): a broker process in a temporary directory, and a small blocking Kafka client
//! with the calls the tests make, over the one Kafka client's blocking connection
//! (`shardlog_protocol::client`).
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{ApiVersionsRequest, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use shardlog::batch::{self, BatchBuilder, Compression, Record};
use shardlog_protocol::client::{codec, ClientError, Connection};

/// Longest a broker may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a SIGTERM'd broker may take to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Socket timeout of the test client: a broker that stops answering fails the test.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a log line may take to reach the log file after the event it reports.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// The client id the tests' requests carry.
const CLIENT_ID: &str = "shardlog-test";
/// What the broker prints on stdout once every core listens.
const READY_PREFIX: &str = "shardlog broker ready on ";

/// Request versions the test client speaks (all served by the broker).
pub const PRODUCE_VERSION: i16 = 8;
pub const FETCH_VERSION: i16 = 11;
pub const METADATA_VERSION: i16 = 8;
pub const API_VERSIONS_VERSION: i16 = 3;
pub const CREATE_TOPICS_VERSION: i16 = 4;
pub const INIT_PRODUCER_ID_VERSION: i16 = 2;

/// Kafka error codes, from the one table (checked there against kafka-protocol's list).
pub use shardlog_protocol::error_code;

/// Where the workspace keeps the client scripts.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients")
}

/// The real `broker` binary, running in a temporary directory under the target dir.
///
/// Its stdout is read for the ready line; its stderr (the log) goes to `broker.log` in the
/// same directory, appended across restarts. Dropping it kills the process; [`stop`]
/// (SIGTERM) is the clean way out.
///
/// [`stop`]: BrokerProcess::stop
pub struct BrokerProcess {
    root: tempfile::TempDir,
    data_dir: PathBuf,
    log_filter: String,
    flags: Vec<String>,
    child: Option<Child>,
    address: SocketAddr,
}

/// How a SIGTERM'd broker ended.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub elapsed: Duration,
}

impl BrokerProcess {
    /// Starts a broker on 127.0.0.1, port 0, two cores, with `flags` added (for example
    /// `["--strategy", "direct"]`; not `--config`, `--listen`, `--data-dir` or `--cores`,
    /// which this sets).
    pub fn start(name: &str, flags: &[&str]) -> BrokerProcess {
        BrokerProcess::start_with_log_filter(name, flags, "info")
    }

    /// Like [`start`](Self::start), with a `RUST_LOG` filter of the test's choosing.
    pub fn start_with_log_filter(name: &str, flags: &[&str], log_filter: &str) -> BrokerProcess {
        BrokerProcess::start_with_settings(name, flags, log_filter, "")
    }

    /// Like [`start_with_log_filter`](Self::start_with_log_filter), with `settings` (TOML
    /// lines) added to the broker's config file, for settings that have no flag.
    pub fn start_with_settings(
        name: &str,
        flags: &[&str],
        log_filter: &str,
        settings: &str,
    ) -> BrokerProcess {
        BrokerProcess::start_in(name, flags, log_filter, settings, None)
    }

    /// Like [`start`](Self::start), with the data directory at `data_dir` (a file system of
    /// the test's choosing) rather than in the broker's temporary directory.
    pub fn start_with_data_dir(name: &str, flags: &[&str], data_dir: &Path) -> BrokerProcess {
        BrokerProcess::start_in(name, flags, "info", "", Some(data_dir.to_path_buf()))
    }

    fn start_in(
        name: &str,
        flags: &[&str],
        log_filter: &str,
        settings: &str,
        data_dir: Option<PathBuf>,
    ) -> BrokerProcess {
        let root = tempfile::Builder::new()
            .prefix(&format!("broker-{name}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temporary directory for the broker");
        // The broker's default DMA pool (32 MiB per core) needs a raised memlock limit; the
        // engine tests' 4 MiB per executor fits the common default (see README: memlock).
        let config = root.path().join("broker.toml");
        std::fs::write(
            &config,
            format!(
                "io_memory_bytes = {}\n{settings}\n",
                shardlog::runtime::IO_MEMORY_BYTES_DEFAULT
            ),
        )
        .expect("write broker.toml");
        let data_dir = data_dir.unwrap_or_else(|| root.path().join("data"));
        let mut all_flags: Vec<String> = vec![
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--cores".into(),
            BROKER_CORES.to_string(),
        ];
        all_flags.extend(flags.iter().map(|flag| flag.to_string()));
        let mut broker = BrokerProcess {
            root,
            data_dir,
            log_filter: log_filter.to_string(),
            flags: all_flags,
            child: None,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open broker.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(&self.flags)
            .env("RUST_LOG", &self.log_filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the broker binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready, address) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout after the ready line so the broker never blocks on it.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix(READY_PREFIX) {
                    let _ = ready.send(address.trim().to_string());
                }
            }
        });
        self.child = Some(child);
        match address.recv_timeout(READY_TIMEOUT) {
            Ok(address) => {
                self.address = address.parse().unwrap_or_else(|error| {
                    panic!("the broker announced {address:?}, not an address: {error}")
                });
            }
            Err(_) => {
                let exited = self.child.as_mut().and_then(|child| child.try_wait().ok());
                self.kill();
                panic!(
                    "the broker did not print its ready line within {READY_TIMEOUT:?} \
                     (exit: {exited:?}); its log:\n{}",
                    self.log_text()
                );
            }
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `host:port`, as clients take it in `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("broker.log")
    }

    /// Everything the broker logged so far (every run), with any terminal colour codes removed.
    pub fn log_text(&self) -> String {
        let bytes = std::fs::read(self.log_path()).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&bytes))
    }

    /// The first log line containing every one of `needles`, waiting up to [`LOG_TIMEOUT`]
    /// for it to appear.
    pub fn log_line(&self, needles: &[&str]) -> Option<String> {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            let found = self
                .log_text()
                .lines()
                .find(|line| needles.iter().all(|needle| line.contains(needle)))
                .map(str::to_string);
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics unless a log line contains every one of `needles`.
    pub fn assert_logged(&self, needles: &[&str]) -> String {
        self.log_line(needles).unwrap_or_else(|| {
            panic!(
                "no log line contains {needles:?}; the log:\n{}",
                self.log_text()
            )
        })
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn assert_running(&mut self) {
        assert!(
            self.is_running(),
            "the broker is no longer running; its log:\n{}",
            self.log_text()
        );
    }

    /// Sends SIGTERM and waits for the process to exit (at most [`STOP_TIMEOUT`], then it
    /// is killed and the test fails).
    pub fn stop(&mut self) -> Stopped {
        let mut child = self.child.take().expect("the broker is running");
        let started = Instant::now();
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: plain kill(2) on the child we spawned and have not reaped yet.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            sent,
            0,
            "kill(SIGTERM): {}",
            std::io::Error::last_os_error()
        );
        loop {
            if let Some(status) = child.try_wait().expect("wait for the broker") {
                return Stopped {
                    status,
                    elapsed: started.elapsed(),
                };
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the broker did not exit within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the broker again on the same data directory and flags (a new port).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// Kills the process with SIGKILL (no clean shutdown) and reaps it; `restart` then
    /// starts it again on the same data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new client connection to this broker.
    pub fn client(&self) -> KafkaClient {
        KafkaClient::connect(self.address)
    }
}

/// Log lines shown when a test fails while a broker runs.
const FAILURE_LOG_LINES: usize = 60;

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "the broker's last log lines:\n{}",
                lines[lines.len().saturating_sub(FAILURE_LOG_LINES)..].join("\n")
            );
        }
    }
}

/// Removes ANSI escape sequences (ESC '[' ... final byte), in case colours slip through.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(character) = chars.next() {
        if character == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for inner in chars.by_ref() {
                if ('@'..='~').contains(&inner) {
                    break;
                }
            }
        } else {
            out.push(character);
        }
    }
    out
}

/// Frames a request: 4-byte size, header (v1 or v2 as the API and version want), body.
pub fn encode_request<R: Request>(correlation_id: i32, version: i16, request: &R) -> Vec<u8> {
    codec::encode_frame(
        request,
        version,
        correlation_id,
        &StrBytes::from_static_str(CLIENT_ID),
    )
    .expect("encode request")
    .to_vec()
}

/// A blocking Kafka client on one connection: one request at a time, typed with
/// `kafka-protocol`, plus raw frames for tests that misbehave on purpose.
pub struct KafkaClient {
    connection: Connection,
    /// The same socket, for tests that watch the broker close it or half-close it themselves.
    raw: TcpStream,
}

impl KafkaClient {
    pub fn connect(address: SocketAddr) -> KafkaClient {
        let stream = TcpStream::connect(address)
            .unwrap_or_else(|error| panic!("connect to the broker at {address}: {error}"));
        stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        stream
            .set_write_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let raw = stream.try_clone().expect("clone the socket");
        let connection = Connection::from_stream(stream, &address.to_string(), CLIENT_ID)
            .unwrap_or_else(|error| panic!("{error}"));
        KafkaClient { connection, raw }
    }

    /// The connection itself, for tests that pipeline requests ([`Connection::split`]).
    pub fn into_connection(self) -> Connection {
        self.connection
    }

    /// This end's address, as the broker logs it (`peer=...`).
    pub fn local_address(&self) -> String {
        self.raw.local_addr().expect("local address").to_string()
    }

    /// Sends one request and returns its decoded response.
    pub fn send<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        self.try_send(version, request)
            .unwrap_or_else(|error| panic!("API {} v{version}: {error}", R::KEY))
    }

    /// Sends one request; an error (a closed connection, an answer out of order) is
    /// returned, not a panic.
    pub fn try_send<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, ClientError> {
        self.connection.call(request, version)
    }

    /// Sends bytes as they are (a frame the test built, whole or not).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.connection.writer().write_frame(bytes, &[])
    }

    /// Reads one size-prefixed response frame (without its size).
    pub fn read_frame(&mut self) -> Result<Vec<u8>, ClientError> {
        Ok(self.connection.reader().read_frame()?.to_vec())
    }

    /// Half-closes the sending side (the broker then sees end of stream).
    pub fn shutdown_write(&mut self) {
        let _ = self.raw.shutdown(Shutdown::Write);
    }

    /// Whether the broker closed the connection: end of stream or a reset, with no response
    /// bytes first. Panics if the broker answers instead, or neither happens in time.
    pub fn assert_closed_by_broker(&mut self) {
        let mut buffer = [0u8; 64];
        match self.raw.read(&mut buffer) {
            Ok(0) => {}
            Ok(read) => panic!(
                "expected the broker to close the connection; it sent {read} bytes: {:?}",
                &buffer[..read]
            ),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) => {}
            Err(error) => panic!("expected the broker to close the connection: {error}"),
        }
    }

    pub fn api_versions(&mut self) -> kafka_protocol::messages::ApiVersionsResponse {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("shardlog-test"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        self.send(API_VERSIONS_VERSION, &request)
    }

    /// Metadata for `topics`, or for every topic when `None`. Never creates topics.
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> MetadataResponse {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        self.send(METADATA_VERSION, &request)
    }

    /// Creates a topic; panics unless the broker reports success.
    pub fn create_topic(&mut self, name: &str, partitions: i32) {
        self.create_replicated_topic(name, partitions, 1);
    }

    /// Creates a topic with `replication` replicas per partition; panics unless the broker
    /// reports success.
    pub fn create_replicated_topic(&mut self, name: &str, partitions: i32, replication: i16) {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(partitions)
                .with_replication_factor(replication)])
            .with_timeout_ms(10_000);
        let response = self.send(CREATE_TOPICS_VERSION, &request);
        let result = &response.topics[0];
        assert_eq!(
            result.error_code,
            error_code::NONE,
            "create topic {name}: {:?}",
            result.error_message
        );
    }

    /// A fresh idempotent producer id and epoch.
    pub fn init_producer_id(&mut self) -> (i64, i16) {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
        let response = self.send(INIT_PRODUCER_ID_VERSION, &request);
        assert_eq!(response.error_code, error_code::NONE, "InitProducerId");
        (response.producer_id.0, response.producer_epoch)
    }

    /// Produces `records` (one or more whole batches) to one partition and returns the
    /// partition's answer.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Vec<u8>,
        acks: i16,
    ) -> PartitionProduceResponse {
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(Bytes::from(records)))])]);
        let mut response = self.send(PRODUCE_VERSION, &request);
        assert_eq!(response.responses.len(), 1, "one topic in the answer");
        let mut topic_response = response.responses.remove(0);
        assert_eq!(topic_response.partition_responses.len(), 1);
        topic_response.partition_responses.remove(0)
    }

    /// One fetch from one partition, without waiting for data.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
    ) -> PartitionData {
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(max_bytes)])]);
        let mut response = self.send(FETCH_VERSION, &request);
        assert_eq!(
            response.error_code,
            error_code::NONE,
            "fetch: top-level error"
        );
        assert_eq!(response.responses.len(), 1, "one topic in the answer");
        let mut topic_response = response.responses.remove(0);
        assert_eq!(topic_response.partitions.len(), 1);
        topic_response.partitions.remove(0)
    }

    /// Every batch of a partition from `offset` to its high watermark, as stored.
    pub fn read_batches(&mut self, topic: &str, partition: i32, offset: i64) -> Vec<Vec<u8>> {
        let mut batches = Vec::new();
        let mut next = offset;
        loop {
            let data = self.fetch(topic, partition, next, 1 << 20);
            assert_eq!(
                data.error_code,
                error_code::NONE,
                "fetch {topic}-{partition} at {next}"
            );
            let records = data.records.unwrap_or_default();
            let before = next;
            for item in batch::batches(&records, usize::MAX) {
                match item {
                    Ok((position, header)) => {
                        next = header.last_offset() + 1;
                        batches.push(records[position..position + header.total_bytes()].to_vec());
                    }
                    // A size-limited fetch may end inside a batch; the next fetch resumes.
                    Err(batch::BatchError::Truncated { .. }) => break,
                    Err(error) => panic!("fetched {topic}-{partition} at {before}: {error}"),
                }
            }
            if next >= data.high_watermark {
                return batches;
            }
            assert!(
                next > before,
                "fetch {topic}-{partition} at {before} made no progress (high watermark {})",
                data.high_watermark
            );
        }
    }

    /// Every record of a partition, with its offset.
    pub fn read_records(&mut self, topic: &str, partition: i32) -> Vec<(i64, Record)> {
        let mut records = Vec::new();
        for stored in self.read_batches(topic, partition, 0) {
            let header = batch::validate(&stored, usize::MAX).expect("valid batch");
            for record in batch::decode_records(&stored, 64 << 20).expect("decode records") {
                records.push((header.base_offset + i64::from(record.offset_delta), record));
            }
        }
        records
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A batch of `count` records keyed `{tag}-key-{i}`, with a header, optionally compressed.
pub fn test_batch(tag: &str, count: usize, compression: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new(1_700_000_000_000, compression);
    for index in 0..count {
        let key = format!("{tag}-key-{index}");
        let value = format!("{tag}-value-{index}-").repeat(1 + index % 7);
        builder.push_kv(
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[(b"origin".as_slice(), Some(tag.as_bytes()))],
            1_700_000_000_000 + index as i64,
        );
    }
    builder.build(0).expect("build batch")
}

/// A batch the broker acknowledged, and where.
#[derive(Clone, Debug)]
pub struct Acknowledged {
    pub topic: String,
    pub partition: i32,
    pub base_offset: i64,
    pub batch: Vec<u8>,
}

/// Produces `batch` with acks=all, asserts success, and records where it went.
pub fn produce_acknowledged(
    client: &mut KafkaClient,
    topic: &str,
    partition: i32,
    batch: Vec<u8>,
) -> Acknowledged {
    let answer = client.produce(topic, partition, batch.clone(), -1);
    assert_eq!(
        answer.error_code,
        error_code::NONE,
        "produce to {topic}-{partition}"
    );
    assert!(answer.base_offset >= 0, "produce gave no offset");
    Acknowledged {
        topic: topic.to_string(),
        partition,
        base_offset: answer.base_offset,
        batch,
    }
}

/// Every acknowledged batch is readable at its offset, byte for byte except the fields the
/// broker assigns (base offset, partition leader epoch), and each partition holds nothing
/// else.
pub fn assert_all_readable(client: &mut KafkaClient, acknowledged: &[Acknowledged]) {
    let mut partitions: Vec<(String, i32)> = acknowledged
        .iter()
        .map(|ack| (ack.topic.clone(), ack.partition))
        .collect();
    partitions.sort();
    partitions.dedup();
    for (topic, partition) in partitions {
        let stored = client.read_batches(&topic, partition, 0);
        let mut expected: Vec<&Acknowledged> = acknowledged
            .iter()
            .filter(|ack| ack.topic == topic && ack.partition == partition)
            .collect();
        expected.sort_by_key(|ack| ack.base_offset);
        assert_eq!(
            stored.len(),
            expected.len(),
            "{topic}-{partition}: batches stored vs acknowledged"
        );
        for (stored, ack) in stored.iter().zip(expected) {
            let header = batch::validate(stored, usize::MAX).expect("valid stored batch");
            assert_eq!(header.base_offset, ack.base_offset, "{topic}-{partition}");
            let mut sent = ack.batch.clone();
            batch::patch_base_offset(&mut sent, ack.base_offset);
            batch::patch_partition_leader_epoch(&mut sent, header.partition_leader_epoch);
            assert!(
                *stored == sent,
                "{topic}-{partition}: the batch at {} differs from the one acknowledged",
                ack.base_offset
            );
        }
    }
}

/// Fails the test, pointing at scripts/test.sh, unless `program args...` runs and succeeds.
pub fn require_tool(what: &str, program: &str, args: &[&str]) {
    let found = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "{what} is missing (`{program} {}` failed): run scripts/test.sh, which installs the \
         test clients",
        args.join(" ")
    );
}

/// Runs a client script to completion (at most `timeout`), echoing its output, and returns
/// its JSON summary: the last line of stdout. Panics if it fails or prints no summary.
pub fn run_client(mut command: Command, timeout: Duration) -> serde_json::Value {
    let description = format!("{command:?}");
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run {description}: {error} (run scripts/test.sh to install clients)")
        });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} took more than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let err_tail: String = {
        let lines: Vec<&str> = err.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    println!(
        "{description}: {status} in {:.1}s\nstdout:\n{out}\nstderr (tail):\n{err_tail}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "{description} failed ({status});\nstdout:\n{out}\nstderr (tail):\n{err_tail}"
    );
    let summary = out
        .lines()
        .rev()
        .find(|line| line.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("{description} printed no JSON summary:\n{out}"));
    serde_json::from_str(summary)
        .unwrap_or_else(|error| panic!("{description}: bad JSON summary {summary:?}: {error}"))
}

/// Cores of a two-core broker, as the tests run it.
pub const BROKER_CORES: usize = 2;

/// Panics unless `topic`'s partitions are owned by every core, so clients' requests are
/// forwarded between cores as well as served locally.
pub fn assert_spans_cores(topic: &str, partitions: i32) {
    let owners: std::collections::BTreeSet<usize> = (0..partitions)
        .map(|partition| shardlog::broker::shard::partition_owner(topic, partition, BROKER_CORES))
        .collect();
    assert_eq!(
        owners.len(),
        BROKER_CORES,
        "topic {topic:?}: all {partitions} partitions on core(s) {owners:?}; pick a name \
         whose partitions spread over both cores"
    );
}
