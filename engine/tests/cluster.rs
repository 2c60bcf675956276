//! A three-broker cluster of real processes on 127.0.0.1: replication, failover, rejoin.
//!
//! An idempotent confluent-kafka producer (acks=all) writes through a `kill -9` of a
//! partition leader; afterwards every acknowledged record must be readable, in order, once.
//! The killed broker then restarts, recovers, catches up and rejoins every ISR.
//! A fourth broker, not a voter, joins a running cluster and a partition moves to it
//! (AlterPartitionReassignments) while the producer runs; nothing acknowledged is lost.

mod common_broker;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common_broker::{require_tool, run_client, BrokerProcess};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    AlterPartitionReassignmentsRequest, ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsRequest;
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::{BrokerId, TopicName};
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
    start_cluster_with_quorum(name).0
}

/// Like [`start_cluster`], also returning the voters' `--quorum` list.
fn start_cluster_with_quorum(name: &str) -> (Vec<BrokerProcess>, String) {
    let controller_ports: Vec<u16> = (0..BROKERS).map(|_| free_port()).collect();
    let quorum = controller_ports
        .iter()
        .enumerate()
        .map(|(index, port)| format!("{}@127.0.0.1:{port}", index + 1))
        .collect::<Vec<_>>()
        .join(",");
    let brokers = std::thread::scope(|scope| {
        let starting: Vec<_> = controller_ports
            .iter()
            .enumerate()
            .map(|(index, port)| {
                let quorum = quorum.clone();
                scope.spawn(move || {
                    let controller = format!("127.0.0.1:{port}");
                    start_broker(name, index as i32 + 1, &quorum, Some(&controller))
                })
            })
            .collect();
        starting
            .into_iter()
            .map(|handle| handle.join().expect("a broker started"))
            .collect()
    });
    (brokers, quorum)
}

/// Starts broker `node_id` of the cluster whose voters are `quorum`; a broker without a
/// `controller` address is not a voter (an observer).
fn start_broker(name: &str, node_id: i32, quorum: &str, controller: Option<&str>) -> BrokerProcess {
    let node_id = node_id.to_string();
    let mut flags = vec![
        "--node-id",
        &node_id,
        "--quorum",
        quorum,
        "--broker-session-timeout-ms",
        "2000",
        "--heartbeat-interval-ms",
        "200",
        "--strategy",
        "direct",
    ];
    if let Some(controller) = controller {
        flags.extend(["--controller-listen", controller]);
    }
    BrokerProcess::start_with_settings(&format!("{name}-{node_id}"), &flags, "info", SETTINGS)
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

/// Partition `index`'s replicas, ISR (both sorted) and leader.
fn replicas_of(metadata: &MetadataResponse, index: i32) -> (Vec<i32>, Vec<i32>, i32) {
    let partition = metadata
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .find(|partition| partition.partition_index == index)
        .expect("the partition in metadata");
    let sorted = |nodes: &[kafka_protocol::messages::BrokerId]| {
        let mut ids: Vec<i32> = nodes.iter().map(|node| node.0).collect();
        ids.sort_unstable();
        ids
    };
    (
        sorted(&partition.replica_nodes),
        sorted(&partition.isr_nodes),
        partition.leader_id.0,
    )
}

#[test]
fn a_new_broker_joins_and_takes_over_a_partition_while_producers_run() {
    require_tool(
        "python3 with confluent-kafka",
        "python3",
        &["-c", "import confluent_kafka"],
    );
    const MOVING: &str = "moving";
    const NEW_BROKER: i32 = BROKERS as i32 + 1;
    let (mut brokers, quorum) = start_cluster_with_quorum("join");
    brokers[0]
        .client()
        .create_replicated_topic(MOVING, PARTITIONS, BROKERS as i16);
    let settled = wait_for_metadata(&brokers[0], MOVING, "three in-sync replicas", |m| {
        all_partitions_have(m, BROKERS)
    });
    // The partition broker 1 leads moves to [2, 3, 4]: its leadership must move too.
    let moving = (0..PARTITIONS)
        .find(|index| replicas_of(&settled, *index).2 == 1)
        .expect("broker 1 leads a partition");
    let target = vec![2, 3, NEW_BROKER];

    let ack_log = tempfile::NamedTempFile::new().expect("ack log");
    let all = bootstrap(&brokers.iter().collect::<Vec<_>>());
    let producer = {
        let mut command = Command::new("python3");
        command
            .arg(scripts_dir().join("failover_produce.py"))
            .args([
                all.as_str(),
                MOVING,
                &PRODUCE_SECONDS.to_string(),
                &ack_log.path().display().to_string(),
            ]);
        std::thread::spawn(move || run_client(command, Duration::from_secs(PRODUCE_SECONDS + 120)))
    };
    std::thread::sleep(Duration::from_secs(3));
    // Broker 4 is not a voter: it joins as an observer and is ready once registered.
    brokers.push(start_broker("join", NEW_BROKER, &quorum, None));

    let request = AlterPartitionReassignmentsRequest::default().with_topics(vec![
        ReassignableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(MOVING)))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(moving)
                .with_replicas(Some(target.iter().map(|id| BrokerId(*id)).collect()))]),
    ]);
    let altered = brokers[1].client().send(0, &request);
    assert_eq!(altered.error_code, 0, "{altered:?}");
    assert_eq!(
        altered.responses[0].partitions[0].error_code, 0,
        "{altered:?}"
    );
    let started = Instant::now();
    let moved = wait_for_metadata(&brokers[3], MOVING, "the reassignment to finish", |m| {
        let (replicas, isr, leader) = replicas_of(m, moving);
        replicas == target && isr == target && target.contains(&leader)
    });
    println!(
        "partition {moving} moved to {:?} in {:?}",
        replicas_of(&moved, moving),
        started.elapsed()
    );
    // Broker 0 answers from its own copy of the metadata, which may apply the last change
    // a moment after broker 3's did: wait for it, within a bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = brokers[0]
            .client()
            .send(0, &ListPartitionReassignmentsRequest::default());
        if listed.topics.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing still moving after 10 s: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let produced = producer.join().expect("the producer thread");
    assert_eq!(produced["errors"], 0, "{produced}");
    assert_eq!(produced["acked"], produced["sent"], "{produced}");

    // Broker 1 no longer holds the partition: it deleted its copy.
    let old_copy = brokers[0].data_dir().join(format!("{MOVING}-{moving}"));
    let started = Instant::now();
    while old_copy.exists() {
        assert!(
            started.elapsed() < SETTLE_TIMEOUT,
            "{} is still there",
            old_copy.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(brokers[3]
        .data_dir()
        .join(format!("{MOVING}-{moving}"))
        .exists());

    // With broker 1 dead, everything acknowledged is read from brokers 2, 3 and 4.
    brokers[0].kill();
    let survivors: Vec<&BrokerProcess> = brokers[1..].iter().collect();
    wait_for_metadata(&brokers[1], MOVING, "leaders without broker 1", |m| {
        (0..PARTITIONS).all(|index| {
            let leader = replicas_of(m, index).2;
            leader >= 0 && leader != 1
        })
    });
    let mut check = Command::new("python3");
    check.arg(scripts_dir().join("failover_check.py")).args([
        bootstrap(&survivors).as_str(),
        MOVING,
        &ack_log.path().display().to_string(),
    ]);
    let checked = run_client(check, Duration::from_secs(120));
    println!("produced {produced}\nchecked {checked}");
    assert_eq!(checked["lost"], 0, "{checked}");
    assert_eq!(checked["acked"], produced["acked"], "{checked}");
    for broker in &mut brokers[1..] {
        broker.assert_running();
    }
}

/// librdkafka's share consumer (KIP-932) across the cluster: the topic's partitions are led
/// by different brokers, so the consumer fetches and acknowledges at each leader, while its
/// group is coordinated by one broker and the share-partition state is kept by the leaders
/// of `__share_group_state`'s partitions, mostly other brokers (ReadShareGroupState and
/// WriteShareGroupState between brokers). The group's `share.auto.offset.reset` is set with
/// IncrementalAlterConfigs on a GROUP resource, through the quorum. Every record arrives,
/// and none accepted is delivered again to a second member.
#[test]
fn librdkafka_share_consumer_reads_every_record_across_the_cluster() {
    require_tool(
        "python3 with confluent-kafka",
        "python3",
        &["-c", "import confluent_kafka"],
    );
    const SHARE_TOPIC: &str = "jobs";
    const RECORDS: u64 = 600;
    let brokers = start_cluster("share");
    brokers[0]
        .client()
        .create_replicated_topic(SHARE_TOPIC, PARTITIONS, BROKERS as i16);
    let metadata = wait_for_metadata(&brokers[0], SHARE_TOPIC, "three in-sync replicas", |m| {
        all_partitions_have(m, BROKERS)
    });
    let leaders: std::collections::BTreeSet<i32> = metadata.topics[0]
        .partitions
        .iter()
        .map(|partition| partition.leader_id.0)
        .collect();
    assert!(
        leaders.len() > 1,
        "one leader for every partition: {metadata:#?}"
    );
    let mut command = Command::new("python3");
    command
        .arg(common_broker::clients_dir().join("librdkafka_share.py"))
        .args([
            &bootstrap(&brokers.iter().collect::<Vec<_>>()),
            SHARE_TOPIC,
            "share-cluster",
            &RECORDS.to_string(),
        ]);
    let summary = run_client(command, Duration::from_secs(240));
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["distinct"], RECORDS, "{summary}");
    assert_eq!(summary["partitions"], PARTITIONS, "{summary}");
    assert_eq!(summary["redelivered_after_accept"], 0, "{summary}");
}
