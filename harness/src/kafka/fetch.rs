//! A consumer: fetches its partitions from offset 0, one fetch in flight per leader (as Kafka
//! consumers keep), until it has read up to the target end offsets, and counts what it got.
//! A fetcher whose leader is lost hands its positions back; the consumer finds the new
//! leaders and goes on from the same offsets (see `failover`).
//!
//! Each response is read into one reused buffer and decoded without copying the records;
//! the consumer walks the batch headers only (offsets, sizes, record counts, producer ids and
//! sequences for `verify`) and checks that the batches follow each other without a gap; it
//! reads the first record's send time for end-to-end latency. Partial batches at the end of a response
//! (Kafka allows them) are fetched again whole.
//!
//! Bounds: one response of at most `max_bytes` (plus the first batch of the first
//! partition, which Kafka always sends whole) in memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::{ApiKey, FetchResponse, ListOffsetsResponse};
use shardlog::batch::BatchHeader;
use shardlog_protocol::client::Connection;

use hdrhistogram::Histogram;

use super::failover::{self, KnownBrokers};
use super::metadata::topic_name;
use super::produce::LATENCY_US_MAX;
use super::stamp;
use super::{response_error, ClientError, WorkloadError};
use crate::verify::Consumed;

/// Fetch versions this client speaks: v4 has the isolation level and last stable offset;
/// v13 names topics by id.
const FETCH_VERSIONS: (i16, i16) = (4, 12);

/// ListOffsets versions this client speaks (v1 has a single offset per partition).
const LIST_OFFSETS_VERSIONS: (i16, i16) = (1, 7);

/// ListOffsets' timestamp that asks for the end of the log.
const LATEST_TIMESTAMP: i64 = -1;

/// A consumer that receives nothing for this long while short of its target gives up.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// What one consumer fetches.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub topic: String,
    pub partitions: Vec<i32>,
    /// Fetch `max_bytes`; each partition's `partition_max_bytes` is the same.
    pub max_bytes: i32,
    pub min_bytes: i32,
    pub max_wait_ms: i32,
    /// Record end-to-end latency (the consumer runs alongside the producers).
    pub end_to_end: bool,
}

/// Shared by the driver and every consumer.
pub struct ConsumerControl {
    /// Where each partition ends: consumers stop once they reach it. Set by the driver when
    /// the producers are done (or before the consumers start, if they read afterwards).
    pub targets: OnceLock<Vec<(i32, i64)>>,
    /// Stop now (another actor failed).
    pub aborting: AtomicBool,
    /// Batch bytes received by every consumer (for per-second windows).
    pub received_bytes: AtomicU64,
    /// End-to-end latency counts the batches sent from this time (microseconds since the
    /// UNIX epoch, see `stamp::unix_us`) until `measure_until_us`; nothing until it is set.
    pub measure_from_us: AtomicU64,
    pub measure_until_us: AtomicU64,
}

impl Default for ConsumerControl {
    fn default() -> ConsumerControl {
        ConsumerControl {
            targets: OnceLock::new(),
            aborting: AtomicBool::new(false),
            received_bytes: AtomicU64::new(0),
            measure_from_us: AtomicU64::new(u64::MAX),
            measure_until_us: AtomicU64::new(u64::MAX),
        }
    }
}

/// What one consumer measured.
#[derive(Debug, Clone)]
pub struct ConsumerOutcome {
    pub bytes: u64,
    pub batches: u64,
    pub records: u64,
    pub fetches: u64,
    /// From the first fetch sent to the last byte needed.
    pub elapsed: Duration,
    /// From each record's intended send time to the moment its fetch response was read, in
    /// microseconds, for records sent in the measured period (one count per record).
    pub end_to_end_us: Histogram<u64>,
    /// The sequences read, per partition and producer, for the verification.
    pub consumed: Consumed,
}

impl Default for ConsumerOutcome {
    fn default() -> ConsumerOutcome {
        ConsumerOutcome {
            bytes: 0,
            batches: 0,
            records: 0,
            fetches: 0,
            elapsed: Duration::ZERO,
            end_to_end_us: Histogram::new_with_max(LATENCY_US_MAX, 3)
                .expect("valid histogram bounds"),
            consumed: Consumed::default(),
        }
    }
}

impl ConsumerOutcome {
    /// Adds another part's figures (another fetcher, or another consumer).
    pub fn absorb(&mut self, other: &ConsumerOutcome) {
        self.bytes += other.bytes;
        self.batches += other.batches;
        self.records += other.records;
        self.fetches += other.fetches;
        self.elapsed = self.elapsed.max(other.elapsed);
        let _ = self.end_to_end_us.add(&other.end_to_end_us);
        self.consumed.merge(&other.consumed);
    }
}

/// Where one partition's reading is.
#[derive(Clone, Copy, Debug)]
struct Position {
    partition: i32,
    next_offset: i64,
}

/// How one fetcher (one connection) ended.
struct FetcherEnd {
    positions: Vec<Position>,
    outcome: ConsumerOutcome,
    /// `None`: every partition reached its target, or the consumer was told to stop.
    error: Option<WorkloadError>,
}

/// Runs one consumer on the calling thread until it reaches its targets: one fetcher thread
/// per leader of its partitions; a fetcher that loses its leader hands its positions back,
/// and the consumer finds the leaders again and carries on from there (see `failover`).
pub fn run(
    config: &ConsumerConfig,
    mut brokers: KnownBrokers,
    control: &ConsumerControl,
    failovers: &AtomicU64,
) -> Result<ConsumerOutcome, WorkloadError> {
    let started = Instant::now();
    let mut waiting: Vec<Position> = config
        .partitions
        .iter()
        .map(|&partition| Position {
            partition,
            next_offset: 0,
        })
        .collect();
    let mut outcome = ConsumerOutcome::default();
    let mut failure = None;
    let halted = || control.aborting.load(Ordering::Relaxed);
    std::thread::scope(|scope| {
        let (ended_sender, ended) = mpsc::channel::<FetcherEnd>();
        let mut running = 0usize;
        loop {
            if !waiting.is_empty() {
                let partitions: Vec<i32> =
                    waiting.iter().map(|position| position.partition).collect();
                match brokers.connect_leaders(&config.topic, &partitions, halted) {
                    Ok(Some(connections)) => {
                        for (connection, led) in connections {
                            let positions: Vec<Position> = waiting
                                .iter()
                                .filter(|position| led.contains(&position.partition))
                                .copied()
                                .collect();
                            let ended_sender = ended_sender.clone();
                            std::thread::Builder::new()
                                .name("consumer-fetcher".to_string())
                                .spawn_scoped(scope, move || {
                                    let end = fetch_until_done(
                                        connection, positions, config, control, started,
                                    );
                                    let _ = ended_sender.send(end);
                                })
                                .expect("can spawn a fetcher thread");
                            running += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        failure.get_or_insert(error);
                    }
                }
                waiting.clear();
            }
            if running == 0 {
                break;
            }
            let end = ended.recv().expect("a running fetcher reports its end");
            running -= 1;
            outcome.absorb(&end.outcome);
            match end.error {
                None => {}
                Some(error) if failover::is_retriable(&error) && !halted() => {
                    failovers.fetch_add(1, Ordering::Relaxed);
                    waiting = end.positions;
                }
                Some(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
    });
    match failure {
        Some(error) => Err(error),
        None => Ok(outcome),
    }
}

/// Fetches `positions` from one broker until each reaches its target, the consumer is
/// told to stop, or an error.
fn fetch_until_done(
    mut connection: Connection,
    mut positions: Vec<Position>,
    config: &ConsumerConfig,
    control: &ConsumerControl,
    started: Instant,
) -> FetcherEnd {
    let mut outcome = ConsumerOutcome::default();
    let error = fetch_loop(
        &mut connection,
        &mut positions,
        config,
        control,
        started,
        &mut outcome,
    )
    .err();
    FetcherEnd {
        positions,
        outcome,
        error,
    }
}

fn fetch_loop(
    connection: &mut Connection,
    positions: &mut [Position],
    config: &ConsumerConfig,
    control: &ConsumerControl,
    started: Instant,
    outcome: &mut ConsumerOutcome,
) -> Result<(), WorkloadError> {
    let version = connection.pick_version::<FetchRequest>(FETCH_VERSIONS.0, FETCH_VERSIONS.1)?;
    let mut last_progress = Instant::now();
    loop {
        if control.aborting.load(Ordering::Relaxed) || reached_targets(positions, control) {
            return Ok(());
        }
        if last_progress.elapsed() > STALL_LIMIT {
            return Err(WorkloadError::Stalled {
                what: format!(
                    "consumer of {} at offsets {:?}",
                    config.topic,
                    positions
                        .iter()
                        .map(|position| (position.partition, position.next_offset))
                        .collect::<Vec<_>>()
                ),
                waited_s: STALL_LIMIT.as_secs(),
            });
        }
        let request = FetchRequest::default()
            .with_max_wait_ms(config.max_wait_ms)
            .with_min_bytes(config.min_bytes)
            .with_max_bytes(config.max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(&config.topic))
                .with_partitions(
                    positions
                        .iter()
                        .map(|position| {
                            FetchPartition::default()
                                .with_partition(position.partition)
                                .with_fetch_offset(position.next_offset)
                                .with_partition_max_bytes(config.max_bytes)
                        })
                        .collect(),
                )]);
        let response: FetchResponse = connection.call(&request, version)?;
        outcome.fetches += 1;
        let received = take_response(&response, positions, config, control, outcome)?;
        if received > 0 {
            outcome.bytes += received;
            control
                .received_bytes
                .fetch_add(received, Ordering::Relaxed);
            last_progress = Instant::now();
            outcome.elapsed = started.elapsed();
        }
    }
}

/// Whether every position has reached the target the driver set (none set yet: no).
fn reached_targets(positions: &[Position], control: &ConsumerControl) -> bool {
    let Some(targets) = control.targets.get() else {
        return false;
    };
    positions.iter().all(|position| {
        targets
            .iter()
            .find(|(partition, _)| *partition == position.partition)
            .is_none_or(|&(_, end)| position.next_offset >= end)
    })
}

/// Walks a fetch response: advances the positions, counts what came, records end-to-end
/// latency and the sequences read. Returns the batch bytes received.
fn take_response(
    response: &FetchResponse,
    positions: &mut [Position],
    config: &ConsumerConfig,
    control: &ConsumerControl,
    outcome: &mut ConsumerOutcome,
) -> Result<u64, WorkloadError> {
    let answered_us = stamp::unix_us(Instant::now());
    if let Some(error) = response_error(response.error_code) {
        return Err(ClientError::BrokerRequest {
            api: ApiKey::Fetch,
            error,
        }
        .into());
    }
    let mut received = 0u64;
    for topic in &response.responses {
        for data in &topic.partitions {
            if let Some(error) = response_error(data.error_code) {
                return Err(ClientError::Broker {
                    api: ApiKey::Fetch,
                    topic: config.topic.clone(),
                    partition: data.partition_index,
                    error,
                    message: None,
                }
                .into());
            }
            let Some(position) = positions
                .iter_mut()
                .find(|position| position.partition == data.partition_index)
            else {
                continue;
            };
            let Some(records) = &data.records else {
                continue;
            };
            let partition = position.partition;
            let end_to_end_us = &mut outcome.end_to_end_us;
            let consumed = &mut outcome.consumed;
            let visit = |header: &BatchHeader, batch: &[u8]| {
                consumed.record(
                    partition,
                    header.producer_id,
                    header.base_sequence,
                    header.records_count.max(0) as u64,
                );
                if config.end_to_end {
                    record_end_to_end(end_to_end_us, control, answered_us, header, batch);
                }
            };
            let walked = walk_batches(records, position.next_offset, visit).map_err(
                |(offset, reason)| WorkloadError::BadBatch {
                    topic: config.topic.clone(),
                    partition,
                    offset,
                    reason,
                },
            )?;
            position.next_offset = walked.next_offset;
            received += walked.bytes;
            outcome.batches += walked.batches;
            outcome.records += walked.records;
        }
    }
    Ok(received)
}

/// What the whole batches at the start of a partition's records hold.
struct Walked {
    bytes: u64,
    batches: u64,
    records: u64,
    next_offset: i64,
}

/// Records the end-to-end latency of a batch sent in the measured period: `answered_us`
/// minus its send time, once per record.
fn record_end_to_end(
    histogram: &mut Histogram<u64>,
    control: &ConsumerControl,
    answered_us: u64,
    header: &BatchHeader,
    batch: &[u8],
) {
    let Some(sent_us) = stamp::read_send_time_us(batch) else {
        return;
    };
    let from = control.measure_from_us.load(Ordering::Relaxed);
    let until = control.measure_until_us.load(Ordering::Relaxed);
    if (from..until).contains(&sent_us) {
        let latency_us = answered_us.saturating_sub(sent_us).clamp(1, LATENCY_US_MAX);
        let _ = histogram.record_n(latency_us, header.records_count.max(0) as u64);
    }
}

/// Walks the complete batches of `records`, which should start at `next_offset`, and shows
/// each new one (header and bytes) to `visit`. A batch that starts before `next_offset` and
/// ends at or after it is allowed (a fetch from the middle of a batch gets the whole batch);
/// a gap is an error, with the offset.
fn walk_batches(
    records: &[u8],
    mut next_offset: i64,
    mut visit: impl FnMut(&BatchHeader, &[u8]),
) -> Result<Walked, (i64, String)> {
    let mut walked = Walked {
        bytes: 0,
        batches: 0,
        records: 0,
        next_offset,
    };
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        let header = match BatchHeader::parse_fields(rest) {
            Ok(header) => header,
            // A partial header at the end: fetched again next time.
            Err(_) if rest.len() < shardlog::batch::layout::HEADER_BYTES => break,
            Err(error) => return Err((next_offset, error.to_string())),
        };
        let total = header.batch_length as usize + shardlog::batch::layout::LOG_OVERHEAD_BYTES;
        if total > rest.len() {
            break; // a partial batch at the end
        }
        let last_offset = header.base_offset + i64::from(header.last_offset_delta);
        if header.base_offset > next_offset {
            return Err((
                next_offset,
                format!("next batch starts at offset {}: a gap", header.base_offset),
            ));
        }
        if last_offset >= next_offset {
            visit(&header, &rest[..total]);
            walked.bytes += total as u64;
            walked.batches += 1;
            walked.records += header.records_count.max(0) as u64;
            next_offset = last_offset + 1;
        }
        at += total;
    }
    walked.next_offset = next_offset;
    Ok(walked)
}

/// The partition's end offset (the offset the next batch will get), from ListOffsets.
pub fn high_watermark(
    connection: &mut Connection,
    topic: &str,
    partition: i32,
) -> Result<i64, WorkloadError> {
    let version = connection
        .pick_version::<ListOffsetsRequest>(LIST_OFFSETS_VERSIONS.0, LIST_OFFSETS_VERSIONS.1)?;
    let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic_name(topic))
        .with_partitions(vec![ListOffsetsPartition::default()
            .with_partition_index(partition)
            .with_timestamp(LATEST_TIMESTAMP)])]);
    let response: ListOffsetsResponse = connection.call(&request, version)?;
    let answer = response
        .topics
        .iter()
        .flat_map(|entry| entry.partitions.iter())
        .find(|answer| answer.partition_index == partition)
        .ok_or_else(|| ClientError::MissingInResponse {
            address: connection.address().to_string(),
            api: ApiKey::ListOffsets,
            what: format!("an answer for {topic}/{partition}"),
        })?;
    if let Some(error) = response_error(answer.error_code) {
        return Err(ClientError::Broker {
            api: ApiKey::ListOffsets,
            topic: topic.to_string(),
            partition,
            error,
            message: None,
        }
        .into());
    }
    Ok(answer.offset)
}

#[cfg(test)]
mod tests {
    use super::walk_batches;
    use shardlog::batch::{BatchBuilder, Compression};

    fn batch(base_offset: i64, records: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new(0, Compression::None);
        for _ in 0..records {
            builder.push_kv(None, Some(b"value"), &[], 0);
        }
        builder.build(base_offset).expect("encodes")
    }

    #[test]
    fn walks_whole_batches_and_stops_at_a_partial_one() {
        let mut records = batch(0, 3);
        records.extend(batch(3, 2));
        let second = batch(5, 4);
        records.extend(&second[..second.len() - 1]);
        let walked = walk_batches(&records, 0, |_, _| {}).expect("no gap");
        assert_eq!(walked.batches, 2);
        assert_eq!(walked.records, 5);
        assert_eq!(walked.next_offset, 5);
        assert_eq!(walked.bytes as usize, batch(0, 3).len() + batch(3, 2).len());
    }

    #[test]
    fn skips_a_batch_before_the_fetch_offset_and_reports_a_gap() {
        let mut records = batch(0, 3);
        records.extend(batch(3, 2));
        let walked = walk_batches(&records, 3, |_, _| {}).expect("no gap");
        assert_eq!((walked.batches, walked.next_offset), (1, 5));

        let gapped = batch(7, 1);
        let (offset, reason) = walk_batches(&gapped, 5, |_, _| {}).err().expect("a gap");
        assert_eq!(offset, 5);
        assert!(reason.contains("gap"), "{reason}");
    }
}
