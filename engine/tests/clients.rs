//! Real Kafka clients against the real broker binary: each round-trips data and checks every
//! record. The client scripts live in `tests/clients/`; each prints a JSON summary and exits
//! non-zero on any mismatch.
//!
//! Every broker runs two cores, and every topic has partitions on both, so requests are both
//! served where they land and forwarded to the owning core. The strategies vary by test.
//!
//! A missing client fails its test (it is not skipped): `scripts/test.sh` installs them.

mod common_broker;

use std::process::Command;
use std::time::Duration;

use common_broker::{assert_spans_cores, clients_dir, require_tool, run_client, BrokerProcess};
use shardlog::batch::{self, Compression};

/// Longest one client script may run (they take seconds).
const CLIENT_RUN_MAX: Duration = Duration::from_secs(240);
/// The volume for kcat.
const KCAT_RECORDS: u64 = 100_000;
/// Partitions of the topics kcat auto-creates.
const KCAT_PARTITIONS: i32 = 4;

fn require_kcat() {
    require_tool("kcat", "kcat", &["-V"]);
}

fn require_python_module(module: &str) {
    require_tool(
        &format!("the Python module {module}"),
        "python3",
        &["-c", &format!("import {module}")],
    );
}

fn script(name: &str) -> std::path::PathBuf {
    clients_dir().join(name)
}

/// Every stored batch of every partition of `topic`, read with the test's own client.
fn stored_headers(broker: &BrokerProcess, topic: &str, partitions: i32) -> Vec<batch::BatchHeader> {
    let mut client = broker.client();
    (0..partitions)
        .flat_map(|partition| client.read_batches(topic, partition, 0))
        .map(|stored| batch::validate(&stored, usize::MAX).expect("valid stored batch"))
        .collect()
}

fn summary_u64(summary: &serde_json::Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary field {field:?} missing: {summary}"))
}

/// kcat produces `KCAT_RECORDS` keyed records with two headers (`-H`) to an auto-created
/// topic, then consumes them by partition and offset; the script compares key, headers and
/// value of every record with what it sent, byte for byte, and checks each partition's
/// offsets and order. Returns the broker for further checks.
fn kcat_round_trip(
    name: &str,
    strategy: &str,
    topic: &str,
    producer_args: &[&str],
) -> BrokerProcess {
    require_kcat();
    assert_spans_cores(topic, KCAT_PARTITIONS);
    let partitions = KCAT_PARTITIONS.to_string();
    let mut broker = BrokerProcess::start(
        name,
        &["--strategy", strategy, "--default-partitions", &partitions],
    );
    let mut command = Command::new("bash");
    command
        .arg(script("kcat_roundtrip.sh"))
        .args([&broker.bootstrap(), topic, &KCAT_RECORDS.to_string()])
        .args(producer_args);
    let summary = run_client(command, CLIENT_RUN_MAX);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["byte_identical"], true, "{summary}");
    assert_eq!(summary_u64(&summary, "consumed"), KCAT_RECORDS, "{summary}");
    assert_eq!(summary_u64(&summary, "order_errors"), 0, "{summary}");
    assert_eq!(
        summary_u64(&summary, "partitions"),
        KCAT_PARTITIONS as u64,
        "{summary}"
    );
    broker.assert_running();
    broker
}

#[test]
fn kcat_100k_keyed_records_with_headers_round_trip_byte_for_byte() {
    let broker = kcat_round_trip("kcat-plain", "buffered", "kcat-plain", &[]);
    let headers = stored_headers(&broker, "kcat-plain", KCAT_PARTITIONS);
    let records: i64 = headers
        .iter()
        .map(|header| i64::from(header.records_count))
        .sum();
    assert_eq!(records, KCAT_RECORDS as i64);
}

#[test]
fn kcat_100k_zstd_records_round_trip_byte_for_byte() {
    let broker = kcat_round_trip(
        "kcat-zstd",
        "uring",
        "kcat-zstd",
        &["-X", "compression.codec=zstd"],
    );
    // The broker stored what librdkafka compressed, as it was. (librdkafka sends a batch
    // uncompressed when zstd would not make it smaller, as for a lone small record.)
    let headers = stored_headers(&broker, "kcat-zstd", KCAT_PARTITIONS);
    let zstd_records: i64 = headers
        .iter()
        .filter(|header| header.compression() == Ok(Compression::Zstd))
        .map(|header| i64::from(header.records_count))
        .sum();
    assert!(
        zstd_records * 10 > KCAT_RECORDS as i64 * 9,
        "only {zstd_records} of {KCAT_RECORDS} records are in zstd batches"
    );
}

#[test]
fn confluent_kafka_idempotent_producer_and_consumer_by_partition_and_offset() {
    require_python_module("confluent_kafka");
    const TOPIC: &str = "confluent";
    const PARTITIONS: i32 = 3;
    const RECORDS: u64 = 30_000;
    assert_spans_cores(TOPIC, PARTITIONS);
    let mut broker = BrokerProcess::start(
        "confluent",
        &["--strategy", "direct", "--durability", "always"],
    );
    let mut command = Command::new("python3");
    command.arg(script("confluent_roundtrip.py")).args([
        &broker.bootstrap(),
        TOPIC,
        &RECORDS.to_string(),
        &PARTITIONS.to_string(),
    ]);
    let summary = run_client(command, CLIENT_RUN_MAX);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary_u64(&summary, "consumed"), RECORDS, "{summary}");
    // The producer really was idempotent: every batch carries its id and sequence.
    let headers = stored_headers(&broker, TOPIC, PARTITIONS);
    assert!(!headers.is_empty());
    for header in &headers {
        assert!(
            header.producer_id >= 0 && header.base_sequence >= 0,
            "{header:?}"
        );
    }
    broker.assert_running();
}

#[test]
fn kafka_python_round_trip() {
    require_python_module("kafka");
    const TOPIC: &str = "kafka-python";
    const PARTITIONS: i32 = 2;
    const RECORDS: u64 = 10_000;
    assert_spans_cores(TOPIC, PARTITIONS);
    let mut broker = BrokerProcess::start(
        "kafka-python",
        &["--strategy", "uring", "--durability", "always"],
    );
    let mut command = Command::new("python3");
    command.arg(script("kafka_python_roundtrip.py")).args([
        &broker.bootstrap(),
        TOPIC,
        &RECORDS.to_string(),
        &PARTITIONS.to_string(),
    ]);
    let summary = run_client(command, CLIENT_RUN_MAX);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary_u64(&summary, "consumed"), RECORDS, "{summary}");
    broker.assert_running();
}

/// KafkaJS consumes only through consumer groups, which the broker does not have yet, so the
/// script reads KafkaJS's records back with kcat (see `tests/clients/node/roundtrip.js`).
#[test]
fn kafkajs_produces_and_kcat_reads_back() {
    require_tool("node", "node", &["--version"]);
    require_kcat();
    let kafkajs = clients_dir().join("node/node_modules/kafkajs/package.json");
    assert!(
        kafkajs.exists(),
        "KafkaJS is not installed in tests/clients/node: run scripts/test.sh (npm ci)"
    );
    const TOPIC: &str = "kafkajs";
    const PARTITIONS: i32 = 3;
    const RECORDS: u64 = 20_000;
    assert_spans_cores(TOPIC, PARTITIONS);
    let mut broker = BrokerProcess::start("kafkajs", &["--strategy", "direct"]);
    let mut command = Command::new("node");
    command.arg(script("node/roundtrip.js")).args([
        &broker.bootstrap(),
        TOPIC,
        &RECORDS.to_string(),
        &PARTITIONS.to_string(),
    ]);
    let summary = run_client(command, CLIENT_RUN_MAX);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary_u64(&summary, "consumed"), RECORDS, "{summary}");
    // KafkaJS's idempotent producer, and its gzip batches, stored as sent.
    let headers = stored_headers(&broker, TOPIC, PARTITIONS);
    assert!(headers.iter().all(|header| header.producer_id >= 0));
    assert!(headers
        .iter()
        .any(|header| header.compression() == Ok(Compression::Gzip)));
    assert!(headers
        .iter()
        .any(|header| header.compression() == Ok(Compression::None)));
    broker.assert_running();
}

/// Kafka's fetch limits (issue 13): a response holds at most the request's `max_bytes` over
/// all partitions, however large each partition's own limit, or librdkafka refuses it and
/// retries forever. Records of 900 KB on three partitions, `fetch.max.bytes` 1 MB and
/// `max.partition.fetch.bytes` 20 MB: every record must still arrive.
#[test]
fn confluent_kafka_reads_under_a_response_limit_below_the_partition_limit() {
    require_python_module("confluent_kafka");
    const TOPIC: &str = "fetch-limits";
    const PARTITIONS: i32 = 3;
    const RECORDS: u64 = 4;
    const RECORD_BYTES: u64 = 900_000;
    assert_spans_cores(TOPIC, PARTITIONS);
    let mut broker = BrokerProcess::start("fetch-limits", &["--strategy", "direct"]);
    let mut command = Command::new("python3");
    command.arg(script("confluent_fetch_limits.py")).args([
        &broker.bootstrap(),
        TOPIC,
        &PARTITIONS.to_string(),
        &RECORDS.to_string(),
        &RECORD_BYTES.to_string(),
    ]);
    let summary = run_client(command, CLIENT_RUN_MAX);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(
        summary_u64(&summary, "consumed"),
        RECORDS * PARTITIONS as u64,
        "{summary}"
    );
    broker.assert_running();
}

/// Records for the share consumer to take off the queue.
const SHARE_RECORDS: u64 = 500;
/// Partitions of the share consumer's topic (spread over both cores).
const SHARE_PARTITIONS: i32 = 2;

/// librdkafka's share consumer (KIP-932, `rd_kafka_share_consumer_new`), called through
/// ctypes on the librdkafka the confluent-kafka wheel bundles. The script sets the group's
/// `share.auto.offset.reset` to earliest with IncrementalAlterConfigs on a GROUP resource,
/// receives every record produced before the group existed, and accepts each one; a second
/// member of the group then receives none of them again. The consumer learns its assignment
/// as topic ids and looks their names up with Metadata by topic id.
#[test]
fn librdkafka_share_consumer_receives_and_accepts_every_record() {
    require_python_module("confluent_kafka");
    let topic = "share-queue";
    assert_spans_cores(topic, SHARE_PARTITIONS);
    let mut broker = BrokerProcess::start("librdkafka-share", &["--strategy", "buffered"]);
    broker.client().create_topic(topic, SHARE_PARTITIONS);
    let mut command = Command::new("python3");
    command.arg(script("librdkafka_share.py")).args([
        &broker.bootstrap(),
        topic,
        "share-workers",
        &SHARE_RECORDS.to_string(),
    ]);
    let summary = run_client(command, CLIENT_RUN_MAX);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(
        summary_u64(&summary, "distinct"),
        SHARE_RECORDS,
        "{summary}"
    );
    assert_eq!(
        summary_u64(&summary, "partitions"),
        SHARE_PARTITIONS as u64,
        "{summary}"
    );
    assert_eq!(
        summary_u64(&summary, "redelivered_after_accept"),
        0,
        "{summary}"
    );
    broker.assert_running();
}
