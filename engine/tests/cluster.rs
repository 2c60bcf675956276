//! A three-broker cluster of real processes on 127.0.0.1: replication, failover, rejoin.
//!
//! An idempotent confluent-kafka producer (acks=all) writes through a `kill -9` of a
//! partition leader; afterwards every acknowledged record must be readable, in order, once.
//! The killed broker then restarts, recovers, catches up and rejoins every ISR.

mod common_broker;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common_broker::{require_tool, run_client, BrokerProcess};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

const BROKERS: usize = 3;
const TOPIC: &str = "failover";
const PARTITIONS: i32 = 3;
/// How long the producer runs, and when into its run the leader dies.
const PRODUCE_SECONDS: u64 = 20;
const KILL_AFTER: Duration = Duration::from_secs(6);
/// Longest the cluster may take to agree on something (a leader, an ISR).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(40);

/// Settings the brokers get beyond their flags: acks=all needs two in-sync replicas, and
/// laggards leave the ISR after 5 s so the test does not wait Kafka's 30 s.
const SETTINGS: &str = "min_insync_replicas = 2\nreplica_lag_time_max_ms = 5000\n";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Starts `BROKERS` brokers (node ids 1..) that form one quorum. They start together: each
/// reports ready only once the quorum has registered it, which needs a majority running.
fn start_cluster(name: &str) -> Vec<BrokerProcess> {
    let controller_ports: Vec<u16> = (0..BROKERS).map(|_| free_port()).collect();
    let quorum = controller_ports
        .iter()
        .enumerate()
        .map(|(index, port)| format!("{}@127.0.0.1:{port}", index + 1))
        .collect::<Vec<_>>()
        .join(",");
    std::thread::scope(|scope| {
        let starting: Vec<_> = controller_ports
            .iter()
            .enumerate()
            .map(|(index, port)| {
                let quorum = quorum.clone();
                scope.spawn(move || {
                    let node_id = (index + 1).to_string();
                    let controller = format!("127.0.0.1:{port}");
                    BrokerProcess::start_with_settings(
                        &format!("{name}-{node_id}"),
                        &[
                            "--node-id",
                            &node_id,
                            "--quorum",
                            &quorum,
                            "--controller-listen",
                            &controller,
                            "--broker-session-timeout-ms",
                            "2000",
                            "--heartbeat-interval-ms",
                            "200",
                            "--strategy",
                            "direct",
                        ],
                        "info",
                        SETTINGS,
                    )
                })
            })
            .collect();
        starting
            .into_iter()
            .map(|handle| handle.join().expect("a broker started"))
            .collect()
    })
}

fn bootstrap(brokers: &[&BrokerProcess]) -> String {
    brokers
        .iter()
        .map(|broker| broker.bootstrap())
        .collect::<Vec<_>>()
        .join(",")
}

/// Polls `broker`'s Metadata until `done` holds, or fails the test after SETTLE_TIMEOUT.
fn wait_for_metadata(
    broker: &BrokerProcess,
    topic: &str,
    what: &str,
    done: impl Fn(&MetadataResponse) -> bool,
) -> MetadataResponse {
    let started = Instant::now();
    loop {
        let metadata = broker.client().metadata(Some(&[topic]));
        if done(&metadata) {
            return metadata;
        }
        assert!(
            started.elapsed() < SETTLE_TIMEOUT,
            "waited {SETTLE_TIMEOUT:?} for {what}; last metadata: {metadata:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every partition of the topic has a leader and `isr` in-sync replicas.
fn all_partitions_have(metadata: &MetadataResponse, isr: usize) -> bool {
    metadata.topics.iter().any(|topic| {
        topic.partitions.len() == PARTITIONS as usize
            && topic.error_code == 0
            && topic
                .partitions
                .iter()
                .all(|partition| partition.leader_id.0 >= 0 && partition.isr_nodes.len() == isr)
    })
}

/// Partition 0's leader and leader epoch.
fn leader_of_first_partition(metadata: &MetadataResponse) -> (i32, i32) {
    let partition = metadata
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .find(|partition| partition.partition_index == 0)
        .expect("partition 0 in metadata");
    (partition.leader_id.0, partition.leader_epoch)
}

#[test]
fn acknowledged_records_survive_a_leader_killed_mid_stream_and_the_leader_rejoins() {
    require_tool(
        "python3 with confluent-kafka",
        "python3",
        &["-c", "import confluent_kafka"],
    );
    let mut brokers = start_cluster("failover");
    brokers[0]
        .client()
        .create_replicated_topic(TOPIC, PARTITIONS, BROKERS as i16);
    let settled = wait_for_metadata(
        &brokers[0],
        TOPIC,
        "three in-sync replicas everywhere",
        |m| all_partitions_have(m, BROKERS),
    );
    let (leader, epoch) = leader_of_first_partition(&settled);

    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cluster");
    let ack_log = tempfile::NamedTempFile::new().expect("ack log");
    let all = bootstrap(&brokers.iter().collect::<Vec<_>>());
    let producer = {
        let mut command = Command::new("python3");
        command.arg(scripts.join("failover_produce.py")).args([
            all.as_str(),
            TOPIC,
            &PRODUCE_SECONDS.to_string(),
            &ack_log.path().display().to_string(),
        ]);
        std::thread::spawn(move || run_client(command, Duration::from_secs(PRODUCE_SECONDS + 120)))
    };
    std::thread::sleep(KILL_AFTER);
    let victim = usize::try_from(leader - 1).expect("node ids start at 1");
    brokers[victim].kill();
    let survivor = if victim == 0 { 1 } else { 0 };
    let moved = wait_for_metadata(
        &brokers[survivor],
        TOPIC,
        "a new leader for partition 0",
        |m| {
            let (now, now_epoch) = leader_of_first_partition(m);
            now >= 0 && now != leader && now_epoch > epoch
        },
    );
    println!(
        "partition 0 moved from {leader} to {:?}",
        leader_of_first_partition(&moved)
    );

    let produced = producer.join().expect("the producer thread");
    assert_eq!(produced["errors"], 0, "{produced}");
    assert_eq!(produced["acked"], produced["sent"], "{produced}");

    let survivors: Vec<&BrokerProcess> = brokers
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != victim)
        .map(|(_, broker)| broker)
        .collect();
    let mut check = Command::new("python3");
    check.arg(scripts.join("failover_check.py")).args([
        bootstrap(&survivors).as_str(),
        TOPIC,
        &ack_log.path().display().to_string(),
    ]);
    let checked = run_client(check, Duration::from_secs(120));
    assert_eq!(checked["lost"], 0, "{checked}");

    // The killed broker recovers its log, cuts what the new leader never had, catches up
    // and is taken back into every ISR.
    brokers[victim].restart();
    wait_for_metadata(
        &brokers[survivor],
        TOPIC,
        "the restarted broker back in every ISR",
        |m| all_partitions_have(m, BROKERS),
    );
    for broker in &mut brokers {
        broker.assert_running();
    }

    // Deleting the topic through one broker deletes its data on every broker.
    let partition_dirs = |brokers: &[BrokerProcess]| -> Vec<String> {
        brokers
            .iter()
            .flat_map(|broker| std::fs::read_dir(broker.data_dir()).expect("data dir"))
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.starts_with(&format!("{TOPIC}-")))
            .collect()
    };
    assert_eq!(
        partition_dirs(&brokers).len(),
        BROKERS * PARTITIONS as usize,
        "every broker holds every partition"
    );
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(StrBytes::from_static_str(TOPIC))])
        .with_timeout_ms(10_000);
    let deleted = brokers[survivor].client().send(4, &request);
    assert_eq!(deleted.responses[0].error_code, 0, "{deleted:?}");
    let started = Instant::now();
    loop {
        let left: Vec<String> = brokers
            .iter()
            .flat_map(|broker| std::fs::read_dir(broker.data_dir()).expect("data dir"))
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.starts_with(&format!("{TOPIC}-")))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < SETTLE_TIMEOUT,
            "partition directories left after the delete: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scripts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cluster")
}

fn group_script(args: &[&str]) -> serde_json::Value {
    let mut command = Command::new("python3");
    command
        .arg(scripts_dir().join("group_failover.py"))
        .args(args);
    run_client(command, Duration::from_secs(180))
}

#[test]
fn committed_offsets_survive_the_loss_of_the_group_coordinator() {
    require_tool(
        "python3 with confluent-kafka",
        "python3",
        &["-c", "import confluent_kafka"],
    );
    const GROUP_TOPIC: &str = "orders";
    const GROUP: &str = "billing";
    const RECORDS: u64 = 3000;
    const FIRST_PHASE: u64 = 1000;
    let mut brokers = start_cluster("coordinator");
    brokers[0]
        .client()
        .create_replicated_topic(GROUP_TOPIC, PARTITIONS, BROKERS as i16);
    wait_for_metadata(&brokers[0], GROUP_TOPIC, "three in-sync replicas", |m| {
        all_partitions_have(m, BROKERS)
    });
    let all = bootstrap(&brokers.iter().collect::<Vec<_>>());
    let produced = group_script(&["produce", &all, GROUP_TOPIC, &RECORDS.to_string()]);
    assert_eq!(produced["errors"], 0, "{produced}");
    let first = group_script(&[
        "consume",
        &all,
        GROUP_TOPIC,
        GROUP,
        &FIRST_PHASE.to_string(),
    ]);
    assert_eq!(first["consumed"], FIRST_PHASE, "{first}");

    // Kill the broker that coordinates the group: it leads the group's offsets partition.
    let found = brokers[0].client().send(
        2,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str(GROUP)),
    );
    assert_eq!(found.error_code, 0, "{found:?}");
    let coordinator = usize::try_from(found.node_id.0 - 1).expect("node ids start at 1");
    brokers[coordinator].kill();
    let survivors: Vec<&BrokerProcess> = brokers
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != coordinator)
        .map(|(_, broker)| broker)
        .collect();

    // Another broker coordinates now and serves the same offsets; the group resumes exactly
    // where it committed.
    let rest = (RECORDS - FIRST_PHASE).to_string();
    let second = group_script(&["resume", &bootstrap(&survivors), GROUP_TOPIC, GROUP, &rest]);
    assert_eq!(
        second["committed_before"], first["committed"],
        "{first}\n{second}"
    );
    assert_eq!(second["consumed"], RECORDS - FIRST_PHASE, "{second}");
    assert_eq!(second["distinct"], RECORDS - FIRST_PHASE, "{second}");
    let committed = first["committed"].as_object().expect("committed offsets");
    for (partition, offset) in second["first_offsets"].as_object().expect("first offsets") {
        // A partition the first phase never committed starts at the beginning (-1001 is
        // Kafka's "no offset").
        let expected = committed
            .get(partition)
            .and_then(serde_json::Value::as_i64)
            .filter(|offset| *offset >= 0)
            .unwrap_or(0);
        assert_eq!(
            offset.as_i64(),
            Some(expected),
            "partition {partition} resumed elsewhere: {first}\n{second}"
        );
    }
}
