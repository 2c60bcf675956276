//! Committed offsets survive a restart of the broker, whether it stops cleanly (SIGTERM) or
//! is killed (SIGKILL, so the offsets partition is recovered and replayed from an unclean
//! log). `kcat -G` consumes part of a topic as a member of a group and commits as it closes;
//! after the restart a new `kcat -G` in the same group must resume exactly there: the two
//! runs together see every record once.

mod common_broker;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common_broker::{
    assert_spans_cores, clients_dir, produce_acknowledged, require_tool, run_client, test_batch,
    BrokerProcess,
};
use shardlog::batch::Compression;

const CLIENT_RUN_MAX: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 4;
const RECORDS_PER_PARTITION: usize = 500;
/// What the first member consumes before it commits and leaves.
const FIRST_RUN_RECORDS: usize = 700;

#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

/// Runs `kcat -G` in `group` (see tests/clients/kcat_group.sh) and returns the keys read.
fn kcat_group(broker: &BrokerProcess, group: &str, topic: &str, limit: usize) -> Vec<String> {
    let mut command = Command::new("bash");
    command.arg(clients_dir().join("kcat_group.sh")).args([
        &broker.bootstrap(),
        group,
        topic,
        &limit.to_string(),
    ]);
    let summary = run_client(command, CLIENT_RUN_MAX);
    summary["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key.as_str().expect("key is text").to_string())
        .collect()
}

fn committed_offsets_survive(name: &str, topic: &str, group: &str, stop: Stop) {
    require_tool("kcat", "kcat", &["-V"]);
    assert_spans_cores(topic, PARTITIONS);
    let mut broker = BrokerProcess::start(
        name,
        &[
            "--strategy",
            "direct",
            "--durability",
            "always",
            "--offsets-topic-partitions",
            "4",
            "--group-initial-rebalance-delay-ms",
            "0",
        ],
    );
    let mut client = broker.client();
    client.create_topic(topic, PARTITIONS);
    let mut expected = BTreeSet::new();
    for partition in 0..PARTITIONS {
        let tag = format!("p{partition}");
        produce_acknowledged(
            &mut client,
            topic,
            partition,
            test_batch(&tag, RECORDS_PER_PARTITION, Compression::None),
        );
        expected.extend((0..RECORDS_PER_PARTITION).map(|index| format!("{tag}-key-{index}")));
    }
    drop(client);

    let first = kcat_group(&broker, group, topic, FIRST_RUN_RECORDS);
    assert_eq!(first.len(), FIRST_RUN_RECORDS);

    match stop {
        Stop::Term => {
            let stopped = broker.stop();
            assert!(stopped.status.success(), "{stopped:?}");
        }
        Stop::Kill => broker.kill(),
    }
    broker.restart();

    let second = kcat_group(&broker, group, topic, 0);
    let first_set: BTreeSet<String> = first.iter().cloned().collect();
    let second_set: BTreeSet<String> = second.iter().cloned().collect();
    let again: Vec<&String> = first_set.intersection(&second_set).take(5).collect();
    assert!(
        again.is_empty(),
        "after the restart the group re-read committed records, e.g. {again:?}"
    );
    assert_eq!(first_set.len() + second_set.len(), expected.len());
    let union: BTreeSet<String> = first_set.union(&second_set).cloned().collect();
    assert_eq!(union, expected, "every record once over the two runs");
    // The restarted broker rebuilt the offsets from the log rather than starting empty: one
    // committed offset per partition the first member read from.
    let partitions_read: BTreeSet<&str> = first
        .iter()
        .filter_map(|key| key.split('-').next())
        .collect();
    let committed = format!("committed={}", partitions_read.len());
    broker.assert_logged(&["loaded committed offsets", &committed]);
    broker.assert_running();
}

#[test]
fn committed_offsets_survive_a_clean_restart() {
    committed_offsets_survive(
        "groups-restart-term",
        "groups-restart-term",
        "restart-term",
        Stop::Term,
    );
}

#[test]
fn committed_offsets_survive_sigkill() {
    committed_offsets_survive(
        "groups-restart-kill",
        "groups-restart-kill",
        "restart-kill",
        Stop::Kill,
    );
}
