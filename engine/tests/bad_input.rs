//! Bad input over raw TCP against the real broker binary.
//!
//! Each test starts a broker (two cores), has it acknowledge batches (acks=all) on partitions
//! of both cores, and opens a well-behaved "bystander" connection. Then it sends one kind of
//! bad input and checks:
//! - the answer: the right Kafka error code, or a closed connection;
//! - a log line about it in the broker's stderr;
//! - the broker still runs, the bystander's open connection and a new one are both served;
//! - every batch acknowledged before (and after) is still readable, byte for byte.

mod common_broker;

use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shardlog::batch::Compression;

use common_broker::{
    assert_all_readable, assert_spans_cores, encode_request, error_code, produce_acknowledged,
    test_batch, Acknowledged, BrokerProcess, KafkaClient,
};

/// The topic whose acknowledged batches must survive every bad input.
const KEPT_TOPIC: &str = "kept";
/// Enough partitions that both cores own some (owners are a hash of topic and partition).
const KEPT_PARTITIONS: i32 = 4;

/// A broker that has acknowledged batches, and a well-behaved client connected to it.
struct Scenario {
    broker: BrokerProcess,
    acknowledged: Vec<Acknowledged>,
    bystander: KafkaClient,
}

impl Scenario {
    fn start(name: &str, strategy: &str, flags: &[&str]) -> Scenario {
        Scenario::start_with_log_filter(name, strategy, flags, "info")
    }

    fn start_with_log_filter(
        name: &str,
        strategy: &str,
        flags: &[&str],
        log_filter: &str,
    ) -> Scenario {
        assert_spans_cores(KEPT_TOPIC, KEPT_PARTITIONS);
        let mut all_flags = vec!["--strategy", strategy, "--durability", "always"];
        all_flags.extend_from_slice(flags);
        let broker = BrokerProcess::start_with_log_filter(name, &all_flags, log_filter);
        let mut client = broker.client();
        client.create_topic(KEPT_TOPIC, KEPT_PARTITIONS);
        let mut acknowledged = Vec::new();
        for round in 0..3 {
            for partition in 0..KEPT_PARTITIONS {
                let compression = if round == 1 {
                    Compression::Zstd
                } else {
                    Compression::None
                };
                let tag = format!("before-{partition}-{round}");
                let batch = test_batch(&tag, 20 + round * 30, compression);
                acknowledged.push(produce_acknowledged(
                    &mut client,
                    KEPT_TOPIC,
                    partition,
                    batch,
                ));
            }
        }
        let mut bystander = broker.client();
        bystander.api_versions();
        Scenario {
            broker,
            acknowledged,
            bystander,
        }
    }

    /// The checks after the bad input: the broker runs, logged a line containing every one
    /// of `log_needles`, serves the bystander and a new client, and lost nothing.
    fn finish(mut self, log_needles: &[&str]) {
        self.broker.assert_running();
        let line = self.broker.assert_logged(log_needles);
        println!("logged: {line}");

        // The connection that was open all along still gets answers...
        let metadata = self.bystander.metadata(Some(&[KEPT_TOPIC]));
        assert_eq!(metadata.topics.len(), 1);
        assert_eq!(metadata.topics[0].error_code, error_code::NONE);
        for partition in 0..KEPT_PARTITIONS {
            let batch = test_batch(&format!("after-{partition}"), 10, Compression::None);
            self.acknowledged.push(produce_acknowledged(
                &mut self.bystander,
                KEPT_TOPIC,
                partition,
                batch,
            ));
        }
        // ...and so does a new one, which reads back everything acknowledged.
        let mut reader = self.broker.client();
        let versions = reader.api_versions();
        assert_eq!(versions.error_code, error_code::NONE);
        assert_all_readable(&mut reader, &self.acknowledged);
        self.broker.assert_running();
    }
}

/// A size-prefixed frame of the given parts.
fn frame(parts: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = parts.concat();
    let size = u32::try_from(body.len()).expect("frame size");
    [size.to_be_bytes().as_slice(), &body].concat()
}

/// A request header for a known API, encoded as that API and version want it.
fn known_header(api_key: ApiKey, version: i16, correlation_id: i32) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("bad-input")));
    let mut bytes = bytes::BytesMut::new();
    header
        .encode(&mut bytes, api_key.request_header_version(version))
        .expect("encode header");
    bytes.to_vec()
}

/// A v1 request header with any API key: key, version, correlation id, client id.
fn raw_header(api_key: i16, version: i16, correlation_id: i32) -> Vec<u8> {
    let client_id = b"bad-input";
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&api_key.to_be_bytes());
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(&correlation_id.to_be_bytes());
    bytes.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    bytes.extend_from_slice(client_id);
    bytes
}

/// Deterministic pseudo-random bytes (xorshift64).
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Sends `bytes` on a new connection and expects the broker to close it; returns the
/// connection's address as the broker logs it.
fn send_expecting_close(broker: &BrokerProcess, bytes: &[u8]) -> String {
    let mut bad = broker.client();
    let peer = bad.local_address();
    // The broker may close before reading everything; a failed write is fine.
    let _ = bad.write_raw(bytes);
    bad.assert_closed_by_broker();
    peer
}

#[test]
fn frame_over_the_maximum_closes_the_connection() {
    let mut scenario = Scenario::start(
        "frame-too-large",
        "direct",
        &["--max-request-bytes", "1048576"],
    );
    // A 2 MiB size prefix, then a little of the promised body.
    let mut bytes = (2u32 << 20).to_be_bytes().to_vec();
    bytes.extend_from_slice(&garbage(1, 4096));
    let peer = send_expecting_close(&scenario.broker, &bytes);
    // A request just under the limit is still served (max_batch_bytes follows the request
    // limit instead of stopping the broker from starting).
    let mut client = scenario.broker.client();
    let big = test_batch("big", 10_500, Compression::None);
    assert!(
        big.len() > 900 << 10 && big.len() < 1000 << 10,
        "{}",
        big.len()
    );
    scenario
        .acknowledged
        .push(produce_acknowledged(&mut client, KEPT_TOPIC, 0, big));
    scenario.finish(&[&peer, "exceeds the limit"]);
}

#[test]
fn truncated_frame_closes_the_connection() {
    let mut scenario = Scenario::start("truncated", "buffered", &[]);
    let request = encode_request(7, 8, &MetadataRequest::default().with_topics(None));
    let mut bad = scenario.broker.client();
    let peer = bad.local_address();
    bad.write_raw(&request[..request.len() / 2])
        .expect("send half a frame");
    // While that connection waits for the rest, everyone else is served.
    let metadata = scenario.bystander.metadata(None);
    assert!(!metadata.topics.is_empty());
    bad.shutdown_write();
    bad.assert_closed_by_broker();
    scenario.finish(&[&peer, "truncated frame"]);
}

#[test]
fn unknown_api_key_closes_the_connection() {
    let scenario = Scenario::start("unknown-api", "uring", &[]);
    let unknown = frame(&[&raw_header(999, 0, 1), &[0; 16]]);
    let peer = send_expecting_close(&scenario.broker, &unknown);
    scenario
        .broker
        .assert_logged(&[&peer, "closing connection", "unknown API key"]);
    // A real API the broker does not serve (SaslHandshake: no authentication).
    let not_served = frame(&[
        &known_header(ApiKey::SaslHandshake, 1, 2),
        &[0, 5, b'P', b'L', b'A', b'I', b'N'],
    ]);
    let peer = send_expecting_close(&scenario.broker, &not_served);
    scenario.finish(&[&peer, "API not served"]);
}

#[test]
fn unsupported_metadata_version_closes_the_connection() {
    let scenario = Scenario::start("unsupported-metadata", "direct", &[]);
    // Metadata v13 is past the broker's v12.
    let request = encode_request(3, 13, &MetadataRequest::default().with_topics(None));
    let peer = send_expecting_close(&scenario.broker, &request);
    scenario
        .broker
        .assert_logged(&[&peer, "closing connection", "unsupported version"]);
    // Produce v2 is below the broker's v3 (magic 2 batches need v3).
    let old_produce = frame(&[&known_header(ApiKey::Produce, 2, 4), &garbage(2, 40)]);
    let peer = send_expecting_close(&scenario.broker, &old_produce);
    scenario.finish(&[&peer, "unsupported version"]);
}

#[test]
fn api_versions_above_ours_gets_a_v0_answer_with_unsupported_version() {
    // Newer clients send ApiVersions above ours on every connection, so the broker logs
    // this at debug level only.
    let scenario = Scenario::start_with_log_filter(
        "api-versions-v4",
        "buffered",
        &[],
        "info,shardlog::broker::api=debug",
    );
    let mut client = scenario.broker.client();
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("future-client"))
        .with_client_software_version(StrBytes::from_static_str("9"));
    client
        .write_raw(&encode_request(42, 4, &request))
        .expect("send ApiVersions v4");
    // The answer is in v0 (header v0, body v0), whatever version was asked.
    let mut response = bytes::Bytes::from(client.read_frame().expect("an answer"));
    let header = ResponseHeader::decode(&mut response, 0).expect("v0 header");
    assert_eq!(header.correlation_id, 42);
    let body = ApiVersionsResponse::decode(&mut response, 0).expect("v0 body");
    assert_eq!(body.error_code, error_code::UNSUPPORTED_VERSION);
    let metadata = body
        .api_keys
        .iter()
        .find(|api| api.api_key == ApiKey::Metadata as i16)
        .expect("the answer lists Metadata");
    assert_eq!((metadata.min_version, metadata.max_version), (0, 12));
    // The client then retries with a version the broker has, on the same connection.
    let retried = client.api_versions();
    assert_eq!(retried.error_code, error_code::NONE);
    assert!(!retried.api_keys.is_empty());
    drop(client);
    scenario.finish(&["ApiVersions version above ours"]);
}

#[test]
fn garbage_bytes_close_the_connection() {
    let scenario = Scenario::start("garbage", "uring", &[]);
    // Someone points an HTTP client at the port: "GET " reads as a 1.2 GB frame.
    let peer = send_expecting_close(
        &scenario.broker,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    scenario.broker.assert_logged(&[&peer, "exceeds the limit"]);
    // Noise inside a plausible frame size.
    let noise = frame(&[&garbage(0x5eed, 256)]);
    let peer = send_expecting_close(&scenario.broker, &noise);
    scenario
        .broker
        .assert_logged(&[&peer, "closing connection"]);
    // A valid Produce header, then a body that ends inside its first string.
    let body = [&[0x7f, 0xff][..], b"xxxxxxxx"].concat();
    let cut = frame(&[&known_header(ApiKey::Produce, 8, 3), &body]);
    let peer = send_expecting_close(&scenario.broker, &cut);
    scenario.finish(&[&peer, "undecodable request"]);
}

#[test]
fn corrupt_batch_gets_corrupt_message_and_nothing_is_appended() {
    let scenario = Scenario::start("corrupt-crc", "direct", &[]);
    let mut client = scenario.broker.client();
    let end_before = client.fetch(KEPT_TOPIC, 1, 0, 1).high_watermark;
    let mut corrupt = test_batch("corrupt", 50, Compression::None);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40; // inside the records, covered by the CRC
    let answer = client.produce(KEPT_TOPIC, 1, corrupt.clone(), -1);
    assert_eq!(answer.error_code, error_code::CORRUPT_MESSAGE);
    assert_eq!(answer.base_offset, -1);
    // A valid batch followed by a corrupt one in the same request: nothing of it lands.
    let valid = test_batch("valid-first", 5, Compression::None);
    let answer = client.produce(KEPT_TOPIC, 1, [valid, corrupt].concat(), -1);
    assert_eq!(answer.error_code, error_code::CORRUPT_MESSAGE);
    let end_after = client.fetch(KEPT_TOPIC, 1, 0, 1).high_watermark;
    assert_eq!(
        end_after, end_before,
        "a rejected request appended something"
    );
    drop(client);
    scenario.finish(&["rejected produce", "crc mismatch"]);
}

#[test]
fn produce_to_an_unknown_topic_gets_unknown_topic_or_partition() {
    let scenario = Scenario::start(
        "unknown-topic",
        "buffered",
        &["--auto-create-topics", "false"],
    );
    let mut client = scenario.broker.client();
    let batch = test_batch("nowhere", 5, Compression::None);
    let answer = client.produce("missing", 0, batch.clone(), -1);
    assert_eq!(answer.error_code, error_code::UNKNOWN_TOPIC_OR_PARTITION);
    // Nor is it created by asking for it, and fetching it fails the same way.
    let metadata = client.metadata(Some(&["missing"]));
    assert_eq!(
        metadata.topics[0].error_code,
        error_code::UNKNOWN_TOPIC_OR_PARTITION
    );
    let listed = client.metadata(None);
    assert!(listed.topics.iter().all(|topic| topic
        .name
        .as_ref()
        .is_some_and(|name| name.0.as_str() != "missing")));
    let fetched = client.fetch("missing", 0, 0, 1 << 20);
    assert_eq!(fetched.error_code, error_code::UNKNOWN_TOPIC_OR_PARTITION);
    // A partition past the topic's last.
    let answer = client.produce(KEPT_TOPIC, KEPT_PARTITIONS + 5, batch, -1);
    assert_eq!(answer.error_code, error_code::UNKNOWN_TOPIC_OR_PARTITION);
    drop(client);
    scenario.finish(&["produce to an unknown topic", "missing"]);
}

#[test]
fn fetch_outside_the_log_gets_offset_out_of_range() {
    let scenario = Scenario::start("out-of-range", "uring", &[]);
    let mut client = scenario.broker.client();
    for partition in 0..KEPT_PARTITIONS {
        let end = client.fetch(KEPT_TOPIC, partition, 0, 1).high_watermark;
        assert!(end > 0);
        for offset in [end + 1, end + (1 << 40), -3] {
            let answer = client.fetch(KEPT_TOPIC, partition, offset, 1 << 20);
            assert_eq!(
                answer.error_code,
                error_code::OFFSET_OUT_OF_RANGE,
                "partition {partition} at {offset} (end {end})"
            );
            assert_eq!(answer.high_watermark, end);
        }
        // The end itself is in range: nothing to read yet.
        let at_end = client.fetch(KEPT_TOPIC, partition, end, 1 << 20);
        assert_eq!(at_end.error_code, error_code::NONE);
        assert!(at_end.records.unwrap_or_default().is_empty());
    }
    drop(client);
    scenario.finish(&["fetch offset out of range", KEPT_TOPIC]);
}

#[test]
fn hostile_array_length_closes_the_connection() {
    let scenario = Scenario::start("hostile-array", "direct", &[]);
    // Metadata v8: topics is an INT32-counted array; claim 2^31 - 1 entries, send one byte.
    let claimed = frame(&[
        &known_header(ApiKey::Metadata, 8, 5),
        &i32::MAX.to_be_bytes(),
        &[1],
    ]);
    let peer = send_expecting_close(&scenario.broker, &claimed);
    scenario
        .broker
        .assert_logged(&[&peer, "closing connection", "undecodable request"]);
    // Metadata v12: a compact array, its length + 1 as an unsigned varint (2^31).
    let compact = frame(&[
        &known_header(ApiKey::Metadata, 12, 6),
        &[0x80, 0x80, 0x80, 0x80, 0x08],
        &[1],
    ]);
    let peer = send_expecting_close(&scenario.broker, &compact);
    scenario.finish(&[&peer, "undecodable request"]);
}
