//! Large produce requests under a small request budget, on a real broker.
//!
//! The broker reads frames of 64 KiB and more into reused buffers and admits them only while
//! they fit in the core's `request_memory_bytes`; the log writes each batch from the request
//! buffer itself (the offsets go in a patched copy of its first 16 bytes), and the tail cache
//! of the O_DIRECT strategies keeps slices of those buffers. Here the budget is the smallest
//! allowed (1 MiB) and four connections send ~300 KiB batches at once, some of them two
//! partitions to a request (which the tail cache must copy rather than slice). Every request
//! must be answered, and every acknowledged batch read back byte for byte: a buffer reused
//! while something still pointed into it would show up as a corrupt batch.

mod common_broker;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use shardlog::batch::Compression;

use common_broker::{
    assert_all_readable, error_code, produce_acknowledged, test_batch, topic_name, Acknowledged,
    BrokerProcess, KafkaClient, PRODUCE_VERSION,
};

const TOPIC: &str = "large";
const PARTITIONS: i32 = 4;
const CONNECTIONS: i32 = 4;
const ROUNDS: usize = 12;
/// About 300 KiB per batch: well above the 64 KiB from which buffers are pooled.
const RECORDS_PER_BATCH: usize = 3000;

/// Sends one request carrying a batch for each of two partitions; both must be acknowledged.
fn produce_two_partitions(
    client: &mut KafkaClient,
    partitions: [i32; 2],
    tag: &str,
) -> Vec<Acknowledged> {
    let batches: Vec<Vec<u8>> = partitions
        .iter()
        .map(|partition| {
            test_batch(
                &format!("{tag}-p{partition}"),
                RECORDS_PER_BATCH / 2,
                Compression::None,
            )
        })
        .collect();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(TOPIC))
            .with_partition_data(
                partitions
                    .iter()
                    .zip(&batches)
                    .map(|(partition, batch)| {
                        PartitionProduceData::default()
                            .with_index(*partition)
                            .with_records(Some(Bytes::from(batch.clone())))
                    })
                    .collect(),
            )]);
    let response = client.send(PRODUCE_VERSION, &request);
    let answers = &response.responses[0].partition_responses;
    assert_eq!(answers.len(), 2);
    answers
        .iter()
        .zip(batches)
        .map(|(answer, batch)| {
            assert_eq!(answer.error_code, error_code::NONE, "{tag}");
            Acknowledged {
                topic: TOPIC.to_string(),
                partition: answer.index,
                base_offset: answer.base_offset,
                batch,
            }
        })
        .collect()
}

/// `read_settings` choose how the batches older than the tail cache are read back; with
/// `read_ahead`, some must go through the read-ahead and some, over its budget, not.
fn large_requests_under_a_small_budget(strategy: &str, read_settings: &str, read_ahead: bool) {
    let mut broker = BrokerProcess::start_with_settings(
        &format!("request-memory-{strategy}"),
        &["--strategy", strategy],
        "info",
        &format!("request_memory_bytes = 1048576\ntail_cache_bytes = 2097152\n{read_settings}"),
    );
    broker.client().create_topic(TOPIC, PARTITIONS);
    let acknowledged: Vec<Acknowledged> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..CONNECTIONS)
            .map(|connection| {
                let broker = &broker;
                scope.spawn(move || {
                    let mut client = broker.client();
                    let mut acknowledged = Vec::new();
                    for round in 0..ROUNDS {
                        let tag = format!("c{connection}-r{round}");
                        if round % 3 == 2 {
                            let pair = [connection % PARTITIONS, (connection + 1) % PARTITIONS];
                            acknowledged.extend(produce_two_partitions(&mut client, pair, &tag));
                        } else {
                            let batch = test_batch(&tag, RECORDS_PER_BATCH, Compression::None);
                            acknowledged.push(produce_acknowledged(
                                &mut client,
                                TOPIC,
                                connection % PARTITIONS,
                                batch,
                            ));
                        }
                    }
                    acknowledged
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|sender| sender.join().expect("sender thread"))
            .collect()
    });
    assert_eq!(
        acknowledged.len(),
        (CONNECTIONS as usize) * (ROUNDS + ROUNDS / 3)
    );
    assert_all_readable(&mut broker.client(), &acknowledged);
    broker.stop();
    let (windows, over_budget) = catch_up_reads(&broker.log_text());
    if read_ahead {
        assert!(
            windows > 0 && over_budget > 0,
            "{windows} windows, {over_budget} over budget"
        );
    } else {
        assert_eq!((windows, over_budget), (0, 0));
    }
}

/// The read-ahead windows and the regions over its budget, summed over the cores' last
/// words at shutdown.
fn catch_up_reads(log: &str) -> (u64, u64) {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    log.lines()
        .filter(|line| line.contains("catch-up reads"))
        .fold((0, 0), |(windows, over), line| {
            (
                windows + field(line, "windows="),
                over + field(line, "over_budget="),
            )
        })
}

#[test]
fn direct_large_requests_under_a_small_budget_are_all_kept_byte_for_byte() {
    // Read back through the read-ahead, whose windows (1 MiB) are larger than a fetch's
    // batches, with room for one: a region reaching past it goes out with sendfile.
    large_requests_under_a_small_budget(
        "direct",
        "read_ahead_bytes = 1048576\nread_memory_bytes = 1048576",
        true,
    );
}

#[test]
fn direct_large_requests_read_back_with_sendfile_only() {
    large_requests_under_a_small_budget("direct", "read_ahead_bytes = 0", false);
}

#[test]
fn buffered_large_requests_under_a_small_budget_are_all_kept_byte_for_byte() {
    large_requests_under_a_small_budget("buffered", "", false);
}
