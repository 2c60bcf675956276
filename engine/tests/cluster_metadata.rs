//! Three real broker processes form one cluster through the metadata quorum (`--quorum`):
//! every broker's Metadata API shows the same brokers, controller and partition leaders,
//! replicas and ISRs. Then the controller is killed with SIGKILL: the survivors elect a new
//! controller, which fences the dead broker after its session timeout, and every partition it
//! led moves to another ISR member with a higher leader epoch, as all survivors report.

mod common_broker;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common_broker::{error_code, topic_name, KafkaClient, CREATE_TOPICS_VERSION, READY_TIMEOUT};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::metadata_response::MetadataResponse;

const BROKERS: i32 = 3;
const TOPIC: &str = "replicated";
const PARTITIONS: i32 = 6;
const SESSION_TIMEOUT_MS: u64 = 2_000;
/// Election (1-2 s), then a full session timeout before the new controller fences anyone.
const FAILOVER_MAX: Duration = Duration::from_secs(30);
const AGREEMENT_MAX: Duration = Duration::from_secs(20);

/// One partition as a Metadata response describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PartitionView {
    error_code: i16,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline: Vec<i32>,
}

/// What a broker's Metadata API says about the cluster and the topic.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ClusterView {
    controller: i32,
    brokers: BTreeMap<i32, i32>,
    partitions: Vec<PartitionView>,
}

fn view(response: &MetadataResponse) -> ClusterView {
    let brokers = response
        .brokers
        .iter()
        .map(|broker| (broker.node_id.0, broker.port))
        .collect();
    let mut partitions: Vec<(i32, PartitionView)> = response
        .topics
        .iter()
        .filter(|topic| {
            topic
                .name
                .as_ref()
                .is_some_and(|name| name.as_str() == TOPIC)
        })
        .flat_map(|topic| topic.partitions.iter())
        .map(|partition| {
            let ids = |nodes: &[kafka_protocol::messages::BrokerId]| {
                nodes.iter().map(|node| node.0).collect::<Vec<_>>()
            };
            (
                partition.partition_index,
                PartitionView {
                    error_code: partition.error_code,
                    leader: partition.leader_id.0,
                    leader_epoch: partition.leader_epoch,
                    replicas: ids(&partition.replica_nodes),
                    isr: ids(&partition.isr_nodes),
                    offline: ids(&partition.offline_replicas),
                },
            )
        })
        .collect();
    partitions.sort_by_key(|(index, _)| *index);
    ClusterView {
        controller: response.controller_id.0,
        brokers,
        partitions: partitions.into_iter().map(|(_, view)| view).collect(),
    }
}

/// A broker process of the cluster. Unlike `BrokerProcess`, starting it does not wait for the
/// ready line: a broker is ready only once a majority of the voters runs.
struct ClusterBroker {
    id: i32,
    child: Option<Child>,
    ready: mpsc::Receiver<String>,
    address: Option<SocketAddr>,
    log: PathBuf,
}

impl ClusterBroker {
    fn spawn(id: i32, root: &Path, quorum: &str) -> ClusterBroker {
        let config = root.join("broker.toml");
        std::fs::write(
            &config,
            format!(
                "io_memory_bytes = {}\n",
                shardlog::runtime::IO_MEMORY_BYTES_DEFAULT
            ),
        )
        .expect("write broker.toml");
        let log = root.join(format!("broker-{id}.log"));
        let stderr = File::create(&log).expect("create the broker log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["--config", &config.display().to_string()])
            .args(["--listen", "127.0.0.1:0"])
            .args([
                "--data-dir",
                &root.join(format!("data-{id}")).display().to_string(),
            ])
            .args(["--cores", "1"])
            .args(["--node-id", &id.to_string()])
            .args(["--quorum", quorum])
            .args([
                "--broker-session-timeout-ms",
                &SESSION_TIMEOUT_MS.to_string(),
            ])
            .args(["--heartbeat-interval-ms", "200"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start the broker binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix("shardlog broker ready on ") {
                    let _ = sender.send(address.trim().to_string());
                }
            }
        });
        ClusterBroker {
            id,
            child: Some(child),
            ready,
            address: None,
            log,
        }
    }

    fn wait_ready(&mut self) {
        let address = self.ready.recv_timeout(READY_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "broker {} did not become ready within {READY_TIMEOUT:?}",
                self.id
            )
        });
        self.address = Some(address.parse().expect("the ready line names an address"));
    }

    fn address(&self) -> SocketAddr {
        self.address.expect("the broker is ready")
    }

    fn metadata(&self) -> ClusterView {
        view(&KafkaClient::connect(self.address()).metadata(Some(&[TOPIC])))
    }

    /// SIGKILL: no clean shutdown, no goodbye to the quorum.
    fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the broker");
            let _ = child.wait();
        }
    }
}

/// The brokers; on a failure, prints the end of every broker's log.
struct Cluster {
    _root: tempfile::TempDir,
    /// The voters' `--quorum` list.
    quorum: String,
    brokers: Vec<ClusterBroker>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for broker in &mut self.brokers {
            broker.kill_9();
            if std::thread::panicking() {
                let text = std::fs::read_to_string(&broker.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "broker {}'s last log lines:\n{}",
                    broker.id,
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn start_cluster() -> Cluster {
    let root = tempfile::Builder::new()
        .prefix("cluster-metadata-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temporary directory");
    let quorum: Vec<String> = (0..BROKERS)
        .map(|id| format!("{id}@127.0.0.1:{}", free_port()))
        .collect();
    let quorum = quorum.join(",");
    // All three start before any can be ready: registration needs a majority.
    let brokers = (0..BROKERS)
        .map(|id| ClusterBroker::spawn(id, root.path(), &quorum))
        .collect();
    let mut cluster = Cluster {
        _root: root,
        quorum,
        brokers,
    };
    for broker in &mut cluster.brokers {
        broker.wait_ready();
    }
    cluster
}

fn create_replicated_topic(broker: &ClusterBroker) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(TOPIC))
            .with_num_partitions(PARTITIONS)
            .with_replication_factor(BROKERS as i16)])
        .with_timeout_ms(10_000);
    let response = KafkaClient::connect(broker.address()).send(CREATE_TOPICS_VERSION, &request);
    let result = &response.topics[0];
    assert_eq!(
        result.error_code,
        error_code::NONE,
        "create: {:?}",
        result.error_message
    );
}

/// Polls every broker in `brokers` until they all report the same view and `done` holds for it.
fn wait_for_agreement(
    brokers: &[&ClusterBroker],
    within: Duration,
    what: &str,
    done: impl Fn(&ClusterView) -> bool,
) -> ClusterView {
    let deadline = Instant::now() + within;
    loop {
        let mut last = brokers
            .iter()
            .map(|broker| broker.metadata())
            .collect::<Vec<_>>();
        if last.windows(2).all(|pair| pair[0] == pair[1]) && done(&last[0]) {
            return last.swap_remove(0);
        }
        assert!(
            Instant::now() < deadline,
            "the brokers did not agree that {what} within {within:?}; they say {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_brokers_agree_on_leaders_and_a_killed_brokers_partitions_move() {
    let mut cluster = start_cluster();
    create_replicated_topic(&cluster.brokers[1]);
    let everyone: Vec<&ClusterBroker> = cluster.brokers.iter().collect();
    let before = wait_for_agreement(&everyone, AGREEMENT_MAX, "the topic exists", |view| {
        view.partitions.len() == PARTITIONS as usize && view.brokers.len() == BROKERS as usize
    });
    for broker in &cluster.brokers {
        assert_eq!(
            before.brokers.get(&broker.id),
            Some(&i32::from(broker.address().port())),
            "broker {} is advertised at its Kafka port",
            broker.id
        );
    }
    assert!((0..BROKERS).contains(&before.controller), "{before:?}");
    let mut led = BTreeMap::new();
    for partition in &before.partitions {
        assert_eq!(partition.error_code, error_code::NONE);
        assert_eq!(partition.replicas.len(), BROKERS as usize);
        assert_eq!(partition.isr.len(), BROKERS as usize);
        assert_eq!(
            partition.replicas[0], partition.leader,
            "the preferred replica leads"
        );
        assert!(partition.offline.is_empty());
        *led.entry(partition.leader).or_insert(0) += 1;
    }
    assert_eq!(
        led.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{led:?}"
    );

    // Kill the controller: the quorum must elect another, which then fences the dead broker.
    let dead = before.controller;
    cluster.brokers[dead as usize].kill_9();
    let survivors: Vec<&ClusterBroker> = cluster
        .brokers
        .iter()
        .filter(|broker| broker.id != dead)
        .collect();
    let after = wait_for_agreement(
        &survivors,
        FAILOVER_MAX,
        "the dead broker is fenced",
        |view| {
            !view.brokers.contains_key(&dead)
                && view.controller != dead
                && view.controller >= 0
                && view
                    .partitions
                    .iter()
                    .all(|partition| partition.leader != dead)
        },
    );
    for (index, (was, now)) in before.partitions.iter().zip(&after.partitions).enumerate() {
        assert!(!now.isr.contains(&dead), "partition {index}: {now:?}");
        assert_eq!(
            now.replicas, was.replicas,
            "partition {index}: replicas stay"
        );
        assert_eq!(
            now.offline,
            vec![dead],
            "partition {index}: the dead replica is offline"
        );
        if was.leader == dead {
            assert!(
                was.isr.contains(&now.leader),
                "partition {index}: {was:?} -> {now:?}"
            );
            assert!(
                now.leader_epoch > was.leader_epoch,
                "partition {index}: {was:?} -> {now:?}"
            );
        } else {
            assert_eq!(
                (now.leader, now.leader_epoch),
                (was.leader, was.leader_epoch),
                "partition {index}: its leader was alive"
            );
        }
    }
}

/// A fourth broker that is not a voter joins as an observer: it registers through a voter,
/// serves the same metadata, creates a topic through its session, and is fenced when it dies.
#[test]
fn an_observer_joins_proposes_and_is_fenced_when_killed() {
    let mut cluster = start_cluster();
    // The observer is given the same voters; it is not among them.
    let quorum = cluster.quorum.clone();
    let observer_id = BROKERS;
    let mut observer = ClusterBroker::spawn(observer_id, cluster._root.path(), &quorum);
    observer.wait_ready();
    cluster.brokers.push(observer);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(TOPIC))
            .with_num_partitions(PARTITIONS)
            .with_replication_factor((BROKERS + 1) as i16)])
        .with_timeout_ms(10_000);
    let response = KafkaClient::connect(cluster.brokers[observer_id as usize].address())
        .send(CREATE_TOPICS_VERSION, &request);
    assert_eq!(
        response.topics[0].error_code,
        error_code::NONE,
        "create through the observer"
    );
    let everyone: Vec<&ClusterBroker> = cluster.brokers.iter().collect();
    let before = wait_for_agreement(&everyone, AGREEMENT_MAX, "the observer is in", |view| {
        view.brokers.len() == (BROKERS + 1) as usize
            && (0..BROKERS).contains(&view.controller)
            && view.partitions.len() == PARTITIONS as usize
            && view
                .partitions
                .iter()
                .all(|partition| partition.isr.len() == (BROKERS + 1) as usize)
    });
    assert!(before
        .partitions
        .iter()
        .any(|partition| partition.leader == observer_id));

    cluster.brokers[observer_id as usize].kill_9();
    let voters: Vec<&ClusterBroker> = cluster.brokers[..BROKERS as usize].iter().collect();
    let after = wait_for_agreement(&voters, FAILOVER_MAX, "the observer is fenced", |view| {
        !view.brokers.contains_key(&observer_id)
            && view
                .partitions
                .iter()
                .all(|partition| partition.leader != observer_id && partition.leader >= 0)
    });
    for partition in &after.partitions {
        assert_eq!(partition.offline, vec![observer_id], "{partition:?}");
    }
}
