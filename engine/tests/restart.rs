//! SIGTERM shuts the broker down cleanly, and a restart recovers every topic.
//!
//! A real broker (`direct`, two cores) takes acks=all produce requests for three topics, plain
//! and zstd, one topic from an idempotent producer. Durability is `none`, so acknowledged
//! batches may still sit in the appenders' memory: the clean shutdown has to write them. SIGTERM, with a
//! client still connected, must end it with status 0 within a few seconds, leaving a
//! clean-shutdown marker in every partition directory. Restarted on the same data directory,
//! it must list every topic and serve every acknowledged batch, byte for byte, and still know
//! the idempotent producer's sequence.

mod common_broker;

use std::time::Duration;

use common_broker::{
    assert_all_readable, assert_spans_cores, error_code, produce_acknowledged, test_batch,
    Acknowledged, BrokerProcess,
};
use shardlog::batch::{BatchBuilder, Compression};

/// A clean shutdown should take well under this (the broker waits at most 5 s for
/// connections, then closes the logs).
const CLEAN_STOP_MAX: Duration = Duration::from_secs(8);

/// (topic, partitions): several partitions so both cores own some.
const TOPICS: [(&str, i32); 3] = [("orders", 3), ("payments", 4), ("audit", 1)];
const BATCHES_PER_PARTITION: usize = 12;

fn idempotent_batch(producer: (i64, i16), sequence: i32, tag: &str) -> Vec<u8> {
    let mut builder = BatchBuilder::new(1_700_000_000_000, Compression::None)
        .producer(producer.0, producer.1, sequence);
    for index in 0..5 {
        let key = format!("{tag}-{index}");
        builder.push_kv(
            Some(key.as_bytes()),
            Some(b"idempotent"),
            &[],
            1_700_000_000_000,
        );
    }
    builder.build(0).expect("build batch")
}

#[test]
fn sigterm_flushes_and_a_restart_recovers_every_topic() {
    let mut broker = BrokerProcess::start(
        "restart",
        &[
            "--strategy",
            "direct",
            "--durability",
            "none",
            "--segment-bytes",
            "32768",
        ],
    );
    let mut client = broker.client();
    let mut acknowledged: Vec<Acknowledged> = Vec::new();
    for (topic, partitions) in TOPICS.iter().take(2) {
        assert_spans_cores(topic, *partitions);
    }
    for (topic, partitions) in TOPICS {
        client.create_topic(topic, partitions);
    }
    for round in 0..BATCHES_PER_PARTITION {
        for (topic, partitions) in TOPICS.iter().take(2) {
            for partition in 0..*partitions {
                let compression = if round % 3 == 2 {
                    Compression::Zstd
                } else {
                    Compression::None
                };
                let tag = format!("{topic}-{partition}-{round}");
                let batch = test_batch(&tag, 1 + round * 7, compression);
                acknowledged.push(produce_acknowledged(&mut client, topic, partition, batch));
            }
        }
    }
    // The third topic: an idempotent producer.
    let producer = client.init_producer_id();
    for sequence in 0..BATCHES_PER_PARTITION as i32 {
        let batch = idempotent_batch(producer, sequence * 5, &format!("audit-{sequence}"));
        acknowledged.push(produce_acknowledged(&mut client, "audit", 0, batch));
    }

    // The client stays connected: an idle connection must not hold the shutdown up.
    let stopped = broker.stop();
    client.assert_closed_by_broker();
    assert!(
        stopped.status.success(),
        "SIGTERM must end the broker with status 0, got {}; log:\n{}",
        stopped.status,
        broker.log_text()
    );
    assert!(
        stopped.elapsed < CLEAN_STOP_MAX,
        "clean shutdown took {:?}",
        stopped.elapsed
    );
    broker.assert_logged(&["shutting down", "signal=15"]);
    broker.assert_logged(&["server: stopped"]);
    let mut segments_max = 0;
    for (topic, partitions) in TOPICS {
        for partition in 0..partitions {
            let dir = broker.data_dir().join(format!("{topic}-{partition}"));
            assert!(dir.is_dir(), "{} missing", dir.display());
            assert!(
                dir.join(shardlog::log::CLEAN_SHUTDOWN_FILE).exists(),
                "{} has no clean-shutdown marker",
                dir.display()
            );
            let segments = std::fs::read_dir(&dir)
                .expect("list a partition directory")
                .filter(|entry| {
                    entry
                        .as_ref()
                        .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "log"))
                })
                .count();
            segments_max = segments_max.max(segments);
        }
    }
    // Small segments: recovery must cover sealed segments, not only the active one.
    assert!(segments_max > 1, "no partition rolled a segment");

    broker.restart();
    let mut client = broker.client();
    let metadata = client.metadata(None);
    for (topic, partitions) in TOPICS {
        let listed = metadata
            .topics
            .iter()
            .find(|listed| {
                listed
                    .name
                    .as_ref()
                    .is_some_and(|name| name.0.as_str() == topic)
            })
            .unwrap_or_else(|| panic!("{topic} not listed after the restart"));
        assert_eq!(listed.error_code, error_code::NONE, "{topic}");
        assert_eq!(listed.partitions.len(), partitions as usize, "{topic}");
    }
    assert_all_readable(&mut client, &acknowledged);

    // The idempotent producer's state came back too: a retry of its last batch is a
    // duplicate (its original offset, nothing appended), the next sequence appends.
    let last = acknowledged.last().expect("acknowledged").clone();
    let retry = client.produce("audit", 0, last.batch.clone(), -1);
    assert_eq!(retry.error_code, error_code::NONE, "retry after restart");
    assert_eq!(
        retry.base_offset, last.base_offset,
        "a retry gets its offset"
    );
    let next_sequence = BATCHES_PER_PARTITION as i32 * 5;
    let next = idempotent_batch(producer, next_sequence, "audit-next");
    acknowledged.push(produce_acknowledged(&mut client, "audit", 0, next));
    assert_all_readable(&mut client, &acknowledged);
    broker.assert_running();
}
