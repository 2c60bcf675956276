//! Real clients in consumer groups against the real broker binary (two cores; the
//! `__consumer_offsets` partitions and the topics span both, so group requests are both
//! served where they land and forwarded to the coordinator's core).
//!
//! - confluent-kafka-python: three consumers share a 6-partition topic (point-to-point), one
//!   leaves mid-run; every record is processed and none below a committed offset. Then two
//!   more groups each read every record (publish/subscribe). Once with the eager `range`
//!   assignor, once with `cooperative-sticky`.
//! - kafka-python: a consumer commits half the records and leaves; its successor in the
//!   group resumes exactly at the committed offsets.
//! - KafkaJS: the same with KafkaJS's own consumer (it has no other kind).
//! - confluent-kafka-python with `group.instance.id` (static members, KIP-345): a restart
//!   keeps the partitions without a rebalance, a newer instance fences the older one's
//!   commits; and a member that left cannot commit over its successor.
//!
//! The scripts live in `tests/clients/`; a missing client fails the test (scripts/test.sh
//! installs them).

mod common_broker;

use std::process::Command;
use std::time::Duration;

use common_broker::{assert_spans_cores, clients_dir, require_tool, run_client, BrokerProcess};

/// Longest one client script may run.
const CLIENT_RUN_MAX: Duration = Duration::from_secs(240);
/// Partitions of `__consumer_offsets` in these tests (both cores own some).
const OFFSETS_PARTITIONS: &str = "4";

fn require_python_module(module: &str) {
    require_tool(
        &format!("the Python module {module}"),
        "python3",
        &["-c", &format!("import {module}")],
    );
}

fn start_broker(name: &str, strategy: &str) -> BrokerProcess {
    BrokerProcess::start(
        name,
        &[
            "--strategy",
            strategy,
            "--offsets-topic-partitions",
            OFFSETS_PARTITIONS,
            // Let all three consumers into the first generation, as Kafka's 3 s default does.
            "--group-initial-rebalance-delay-ms",
            "1000",
        ],
    )
}

fn confluent_groups(name: &str, topic: &str, strategy: &str) {
    require_python_module("confluent_kafka");
    const RECORDS: u64 = 12_000;
    const PARTITIONS: i32 = 6;
    assert_spans_cores(topic, PARTITIONS);
    let mut broker = start_broker(name, "direct");
    let mut command = Command::new("python3");
    command
        .arg(clients_dir().join("confluent_groups.py"))
        .args([
            &broker.bootstrap(),
            topic,
            &RECORDS.to_string(),
            &PARTITIONS.to_string(),
            strategy,
        ]);
    let summary = run_client(command, CLIENT_RUN_MAX);
    assert_eq!(summary["ok"], true, "{summary}");
    let point_to_point = &summary["point_to_point"];
    assert_eq!(point_to_point["processed"], RECORDS, "{summary}");
    assert_eq!(point_to_point["below_commit"], 0, "{summary}");
    assert_eq!(point_to_point["committed_at_end"], true, "{summary}");
    for subscriber in summary["subscribers"].as_array().expect("subscribers") {
        assert_eq!(subscriber["distinct"], RECORDS, "{summary}");
        assert_eq!(subscriber["duplicates"], 0, "{summary}");
    }
    broker.assert_logged(&["member left"]);
    broker.assert_running();
}

#[test]
fn confluent_kafka_point_to_point_and_publish_subscribe_with_range() {
    confluent_groups("groups-range", "groups-range", "range");
}

#[test]
fn confluent_kafka_point_to_point_and_publish_subscribe_with_cooperative_sticky() {
    confluent_groups("groups-sticky", "groups-sticky", "cooperative-sticky");
}

/// Issue 13 item 3 (static membership was refused with UNSUPPORTED_VERSION) and item 2
/// (commits fenced by member, instance and generation): tests/clients/confluent_group_fencing.py.
#[test]
fn confluent_kafka_static_members_restart_quietly_and_stale_commits_are_fenced() {
    require_python_module("confluent_kafka");
    const TOPIC: &str = "group-fencing";
    const PARTITIONS: i32 = 4;
    assert_spans_cores(TOPIC, PARTITIONS);
    let mut broker = start_broker("groups-fencing", "direct");
    let mut command = Command::new("python3");
    command
        .arg(clients_dir().join("confluent_group_fencing.py"))
        .args([&broker.bootstrap(), TOPIC, &PARTITIONS.to_string()]);
    let summary = run_client(command, CLIENT_RUN_MAX);
    println!("{summary}");
    assert_eq!(summary["ok"], true, "{summary}");
    broker.assert_logged(&["static member rejoined; the old member id is fenced"]);
    broker.assert_logged(&["request from a fenced static member"]);
    broker.assert_running();
}

#[test]
fn kafka_python_successor_resumes_at_committed_offsets() {
    require_python_module("kafka");
    const TOPIC: &str = "kafka-python-groups";
    const RECORDS: u64 = 6_000;
    const PARTITIONS: i32 = 3;
    assert_spans_cores(TOPIC, PARTITIONS);
    let mut broker = start_broker("groups-kafka-python", "buffered");
    let mut command = Command::new("python3");
    command
        .arg(clients_dir().join("kafka_python_groups.py"))
        .args([
            &broker.bootstrap(),
            TOPIC,
            &RECORDS.to_string(),
            &PARTITIONS.to_string(),
        ]);
    let summary = run_client(command, CLIENT_RUN_MAX);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["distinct"], RECORDS, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    broker.assert_running();
}

/// KafkaJS consumes only through groups: a member reads everything and leaves, and its
/// successor reads exactly what was produced after (tests/clients/node/groups.js).
#[test]
fn kafkajs_successor_resumes_at_committed_offsets() {
    require_tool("node", "node", &["--version"]);
    let kafkajs = clients_dir().join("node/node_modules/kafkajs/package.json");
    assert!(
        kafkajs.exists(),
        "KafkaJS is not installed in tests/clients/node: run scripts/test.sh (npm ci)"
    );
    const TOPIC: &str = "kafkajs-groups";
    const RECORDS: u64 = 3_000;
    const PARTITIONS: i32 = 3;
    assert_spans_cores(TOPIC, PARTITIONS);
    let mut broker = start_broker("groups-kafkajs", "uring");
    let mut command = Command::new("node");
    command.arg(clients_dir().join("node/groups.js")).args([
        &broker.bootstrap(),
        TOPIC,
        &RECORDS.to_string(),
        &PARTITIONS.to_string(),
    ]);
    let summary = run_client(command, CLIENT_RUN_MAX);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["second_old"], 0, "{summary}");
    assert_eq!(summary["second_new"], RECORDS, "{summary}");
    broker.assert_running();
}
