//! A producer: its share of the topic's partitions, one pipelined connection per leader (see
//! [`pipeline`]), and failover when a leader is lost.
//!
//! With acks=all the producer is idempotent, as Kafka's is by default: it asks for a
//! producer id (InitProducerId) and numbers each partition's records from 0, so a batch
//! resent after a failover is written once, and every acknowledged record can be checked
//! for afterwards (see `verify`).
//!
//! Failover: when a pipeline fails with a retriable error (its connection lost, its broker
//! no longer the leader), its partitions come back here with the batches that were not
//! acknowledged. The producer finds the leaders again (`failover::KnownBrokers`), starts
//! pipelines for them, and they resend those batches first, with their sequence numbers and
//! their original intended send times, so latency counts the time the failover took. The
//! producer's other pipelines keep going meanwhile.
//!
//! Threads: the caller's thread runs the producer; each pipeline runs on a thread of its own
//! plus a receiver thread. Bounds: one pipeline per partition at most, each with at most
//! `in_flight_max` requests outstanding, and that many unacknowledged batches per partition
//! carried over a failover.

pub mod pipeline;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::{ApiKey, InitProducerIdResponse, ProducerId};

use super::failover::{self, KnownBrokers};
use super::{response_error, ClientError, WorkloadError};
use crate::verify::Acknowledged;
use pipeline::{PartitionState, Pipeline, PipelineEnd};

/// Highest latency the histograms track: 60 s in microseconds, 3 significant digits.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Most requests in flight per connection for an idempotent producer: brokers remember the
/// last 5 batches of each producer and partition to recognise a retry (Kafka's limit too).
pub const IDEMPOTENT_IN_FLIGHT_MAX: usize = 5;

/// InitProducerId versions this client speaks.
const INIT_PRODUCER_ID_VERSIONS: (i16, i16) = (0, 4);

/// What one producer sends.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub topic: String,
    /// This producer's partitions; each request carries one batch for one of them, in turn.
    pub partitions: Vec<i32>,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    /// Requests in flight per connection.
    pub in_flight_max: usize,
    /// Requests per second over all of this producer's partitions; 0 = as fast as
    /// acknowledgements allow.
    pub requests_per_s: f64,
    /// The record batch every request carries, stamped before each send (see `stamp`).
    pub batch: Bytes,
    pub records_per_batch: u64,
    /// The broker's deadline for each request (Kafka `timeout_ms`).
    pub timeout_ms: i32,
    /// Take a producer id and number the records (needs acks=all).
    pub idempotent: bool,
}

/// Flags the driver sets and counters it reads while producers run. Shared by all producers.
#[derive(Default)]
pub struct ProducerControl {
    /// Acknowledgements count (bytes, latency) only while this is set.
    pub measuring: AtomicBool,
    /// Producers stop sending, wait for what is in flight, and return.
    pub stopping: AtomicBool,
    /// Batch bytes acknowledged while measuring, by every producer (for per-second windows).
    pub acked_bytes: AtomicU64,
    /// Batch bytes acknowledged since the start, warm-up included (for the backlog).
    pub all_acked_bytes: AtomicU64,
    /// Pipelines restarted after losing their leader, by every producer.
    pub failovers: AtomicU64,
}

/// What one producer measured.
pub struct ProducerOutcome {
    /// Publish latency in microseconds of the requests acknowledged while measuring.
    pub latency_us: Histogram<u64>,
    /// Batch bytes, batches and records acknowledged while measuring (with acks=0: written).
    pub bytes: u64,
    pub batches: u64,
    pub records: u64,
    /// Per partition of this producer: the offset after its last acknowledged batch
    /// (-1 if none was acknowledged, or with acks=0).
    pub end_offsets: Vec<(i32, i64)>,
    /// Every acknowledged record's sequence (idempotent producers only).
    pub acknowledged: Acknowledged,
    /// Batches sent and never acknowledged (in flight when a connection was lost at the
    /// end of the run, or when it stopped during a failover).
    pub unacknowledged_batches: u64,
}

impl ProducerOutcome {
    /// Nothing measured yet, for `partitions`.
    pub fn new(partitions: &[i32]) -> ProducerOutcome {
        ProducerOutcome {
            latency_us: Histogram::new_with_max(LATENCY_US_MAX, 3).expect("valid histogram bounds"),
            bytes: 0,
            batches: 0,
            records: 0,
            end_offsets: partitions
                .iter()
                .map(|&partition| (partition, -1))
                .collect(),
            acknowledged: Acknowledged::default(),
            unacknowledged_batches: 0,
        }
    }

    /// Adds another producer's figures (its partitions' end offsets are not merged: the
    /// caller keeps those).
    pub fn merge(&mut self, other: &ProducerOutcome) {
        let _ = self.latency_us.add(&other.latency_us);
        self.bytes += other.bytes;
        self.batches += other.batches;
        self.records += other.records;
        self.acknowledged.merge(&other.acknowledged);
        self.unacknowledged_batches += other.unacknowledged_batches;
    }

    fn absorb(&mut self, measured: &pipeline::Measured) {
        let _ = self.latency_us.add(&measured.latency_us);
        self.bytes += measured.bytes;
        self.batches += measured.batches;
        self.records += measured.records;
        self.acknowledged.merge(&measured.acknowledged);
        for &(partition, end) in &measured.end_offsets {
            if let Some((_, known)) = self
                .end_offsets
                .iter_mut()
                .find(|(known_partition, _)| *known_partition == partition)
            {
                *known = (*known).max(end);
            }
        }
    }
}

/// An idempotent producer's id and epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// Runs one producer on the calling thread until `control.stopping` is set and every
/// pipeline has had its requests in flight answered (or lost its connection).
pub fn run(
    config: &ProducerConfig,
    mut brokers: KnownBrokers,
    control: &ProducerControl,
) -> Result<ProducerOutcome, WorkloadError> {
    assert!(config.in_flight_max >= 1 && !config.partitions.is_empty());
    let identity = if config.idempotent {
        Some(init_producer_id(&brokers)?)
    } else {
        None
    };
    let mut outcome = ProducerOutcome::new(&config.partitions);
    let mut waiting = initial_states(config);
    let aborting = AtomicBool::new(false);
    let halted = || control.stopping.load(Ordering::Relaxed) || aborting.load(Ordering::Relaxed);
    let mut failure = None;
    std::thread::scope(|scope| {
        let (ended_sender, ended) = mpsc::channel::<PipelineEnd>();
        let mut running = 0usize;
        loop {
            if !waiting.is_empty() {
                let partitions: Vec<i32> = waiting.iter().map(|state| state.partition).collect();
                match brokers.connect_leaders(&config.topic, &partitions, halted) {
                    Ok(Some(connections)) => {
                        for (connection, led) in connections {
                            let states = take_states(&mut waiting, &led);
                            let pipeline = Pipeline {
                                config,
                                control,
                                aborting: &aborting,
                                identity,
                            };
                            let ended_sender = ended_sender.clone();
                            std::thread::Builder::new()
                                .name("producer-pipeline".to_string())
                                .spawn_scoped(scope, move || {
                                    let _ = ended_sender.send(pipeline.run(connection, states));
                                })
                                .expect("can spawn a pipeline thread");
                            running += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        failure.get_or_insert(error);
                        aborting.store(true, Ordering::SeqCst);
                    }
                }
                outcome.unacknowledged_batches += unacknowledged(&waiting);
                waiting.clear();
            }
            if running == 0 {
                break;
            }
            let end = ended.recv().expect("a running pipeline reports its end");
            running -= 1;
            outcome.absorb(&end.measured);
            match end.error {
                Some(error) if failover::is_retriable(&error) && !halted() => {
                    control.failovers.fetch_add(1, Ordering::Relaxed);
                    waiting = end.partitions;
                }
                Some(error) if !failover::is_retriable(&error) => {
                    failure.get_or_insert(error);
                    aborting.store(true, Ordering::SeqCst);
                    outcome.unacknowledged_batches += unacknowledged(&end.partitions);
                }
                _ => outcome.unacknowledged_batches += unacknowledged(&end.partitions),
            }
        }
    });
    match failure {
        Some(error) => Err(error),
        None => Ok(outcome),
    }
}

/// Each partition's state before anything is sent. At a fixed rate, the partitions' first
/// sends are spread over one interval so that requests go out evenly.
fn initial_states(config: &ProducerConfig) -> Vec<PartitionState> {
    let started = Instant::now();
    let partitions = config.partitions.len();
    let interval = (config.requests_per_s > 0.0)
        .then(|| Duration::from_secs_f64(partitions as f64 / config.requests_per_s));
    config
        .partitions
        .iter()
        .enumerate()
        .map(|(index, &partition)| PartitionState {
            partition,
            next_batch: 0,
            next_due: started
                + interval.map_or(Duration::ZERO, |interval| {
                    interval.mul_f64(index as f64 / partitions as f64)
                }),
            interval,
            unacknowledged: Vec::new(),
        })
        .collect()
}

/// Removes and returns the states of `partitions` from `states`.
fn take_states(states: &mut Vec<PartitionState>, partitions: &[i32]) -> Vec<PartitionState> {
    let (taken, kept) = std::mem::take(states)
        .into_iter()
        .partition(|state| partitions.contains(&state.partition));
    *states = kept;
    taken
}

fn unacknowledged(states: &[PartitionState]) -> u64 {
    states
        .iter()
        .map(|state| state.unacknowledged.len() as u64)
        .sum()
}

/// Asks any broker for a producer id (any broker may hand one to a non-transactional
/// producer), retrying retriable errors for up to the failover timeout.
fn init_producer_id(brokers: &KnownBrokers) -> Result<ProducerIdentity, WorkloadError> {
    let started = Instant::now();
    loop {
        let attempt = brokers.any().and_then(|mut connection| {
            let version = connection.pick_version::<InitProducerIdRequest>(
                INIT_PRODUCER_ID_VERSIONS.0,
                INIT_PRODUCER_ID_VERSIONS.1,
            )?;
            let request = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(i32::MAX)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            let response: InitProducerIdResponse = connection.call(&request, version)?;
            if let Some(error) = response_error(response.error_code) {
                return Err(ClientError::BrokerRequest {
                    api: ApiKey::InitProducerId,
                    error,
                });
            }
            Ok(ProducerIdentity {
                producer_id: response.producer_id.0,
                producer_epoch: response.producer_epoch,
            })
        });
        match attempt {
            Err(error)
                if failover::client_error_is_retriable(&error)
                    && started.elapsed() < failover::FAILOVER_TIMEOUT =>
            {
                std::thread::sleep(failover::RETRY_BACKOFF);
            }
            other => return Ok(other?),
        }
    }
}
