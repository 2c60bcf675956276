//! The broker workload (`--bootstrap`): producers and consumers over the Kafka protocol.
//!
//! Timeline: the topic is created if missing; producers connect, run a warm-up, then a
//! measured period, and stop (what is in flight is answered but not counted). Consumers read
//! the partitions from offset 0 up to where the producers ended, either afterwards
//! (`--consume after`: a catch-up read of everything produced) or alongside the producers
//! (`--consume during`: tailing, which also gives end-to-end latency and the backlog). Each
//! actor runs on its own threads with blocking sockets and fails over on its own when a
//! leader is lost; the measuring thread samples shared counters once a second and injects
//! the faults when due (`faults`). At the end, with acks=all, the producers'
//! acknowledgements are checked against what the consumers read (`verify`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use shardlog::batch::{BatchBuilder, Compression};

use crate::engine_workload::cpu_time;
use crate::faults::{FaultInjector, FaultPlan, FaultReport, FaultSchedule};
use crate::kafka::failover::KnownBrokers;
use crate::kafka::fetch::{self, ConsumerConfig, ConsumerControl, ConsumerOutcome};
use crate::kafka::metadata::{self, TopicLayout};
use crate::kafka::produce::{self, ProducerConfig, ProducerControl, ProducerOutcome};
use crate::kafka::stamp;
use crate::kafka::{self, WorkloadError};
use crate::verify::{self, Verification};
use crate::workload_file::KeyDistributor;

/// When consumers read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumeMode {
    /// After the producers stop: a catch-up read of everything they wrote.
    After,
    /// Alongside the producers, from offset 0, until they have read what the producers wrote.
    During,
}

impl ConsumeMode {
    pub fn name(self) -> &'static str {
        match self {
            ConsumeMode::After => "after",
            ConsumeMode::During => "during",
        }
    }
}

/// One run's settings.
#[derive(Clone, Debug)]
pub struct BrokerWorkload {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub producers: usize,
    pub consumers: usize,
    pub record_bytes: u64,
    pub batch_bytes: u64,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    pub duration: Duration,
    pub warmup: Duration,
    pub in_flight: usize,
    /// Records per second over all producers; 0 = as fast as the broker acknowledges.
    pub rate_records_per_s: u64,
    pub fetch_bytes: u64,
    pub fetch_wait_ms: i32,
    pub consume: ConsumeMode,
    /// Names the run in its results folder (e.g. the broker's strategy and durability).
    pub label: String,
    /// Replicas per partition when the topic is created (-1: the brokers' default).
    pub replication: i16,
    /// The brokers' process ids, to sample their CPU time and peak memory (same machine
    /// only; empty when unknown).
    pub broker_pids: Vec<u32>,
    /// How the records' keys are chosen.
    pub key_distributor: KeyDistributor,
    /// Faults to inject in the measured period (needs a cluster the harness started).
    pub faults: Option<FaultPlan>,
    /// The workload file's name (`--workload`), which then names the results folder.
    pub workload_file: Option<String>,
}

impl BrokerWorkload {
    pub fn records_per_batch(&self) -> u64 {
        (self.batch_bytes / self.record_bytes).max(1)
    }

    /// Producers are idempotent with acks=all (as Kafka's are by default), which lets the
    /// run check every acknowledged record afterwards.
    pub fn idempotent(&self) -> bool {
        self.acks == -1
    }

    pub fn acks_name(&self) -> &'static str {
        match self.acks {
            0 => "0",
            1 => "1",
            _ => "all",
        }
    }
}

/// The publish side of a run.
pub struct PublishOutcome {
    pub bytes: u64,
    pub batches: u64,
    pub records: u64,
    pub elapsed: Duration,
    /// Publish latency in microseconds, every producer's histogram merged.
    pub latency_us: Histogram<u64>,
    /// Batch bytes acknowledged in each second of the measured period.
    pub window_bytes: Vec<u64>,
    /// With consumers tailing: bytes acknowledged and not yet consumed at the end of each
    /// second, and at the end of the measured period.
    pub window_backlog_bytes: Vec<u64>,
    pub backlog_bytes_at_end: Option<u64>,
    /// Batches sent and never acknowledged (lost with a connection at the very end, or sent
    /// while a failover was still going on when the producers stopped).
    pub unacknowledged_batches: u64,
    pub cpu: CpuUse,
}

/// The consume side of a run.
pub struct ConsumeOutcome {
    pub bytes: u64,
    pub batches: u64,
    pub records: u64,
    pub fetches: u64,
    pub elapsed: Duration,
    /// With `--consume during`: from each record's intended send time to its fetch, in
    /// microseconds, for records sent in the measured period; every consumer's merged.
    pub end_to_end_us: Option<Histogram<u64>>,
    pub window_bytes: Vec<u64>,
    pub cpu: CpuUse,
}

/// What a run measured.
pub struct BrokerOutcome {
    pub batch_bytes: u64,
    pub publish: Option<PublishOutcome>,
    pub consume: Option<ConsumeOutcome>,
    /// The broker's peak resident memory (VmHWM) at the end, when its pid was given.
    pub broker_peak_rss_bytes: Option<u64>,
    /// Where each partition ended, from the producers' acknowledgements.
    pub end_offsets: Vec<(i32, i64)>,
    /// Whether every acknowledged record was read once, in order (idempotent producers
    /// and consumers both ran).
    pub verification: Option<Verification>,
    /// What was injected, with `--kill-leader-at`.
    pub faults: Option<FaultReport>,
}

/// The record batch every produce request carries: `batch_bytes / record_bytes` records
/// of `record_bytes` value bytes each, no key, no compression. The first record also carries
/// the send-time header, which the producer stamps before each send with the batch
/// timestamps (see `kafka::stamp`).
pub fn template_batch(workload: &BrokerWorkload) -> Result<Bytes, WorkloadError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let value = vec![0x5a; workload.record_bytes as usize];
    let mut builder = BatchBuilder::new(now_ms, Compression::None);
    let send_time = [0u8; stamp::SEND_TIME_BYTES];
    let keys = record_keys(
        workload.key_distributor,
        workload.records_per_batch() as usize,
    );
    for (index, key) in keys.iter().enumerate() {
        let headers: &[(&[u8], Option<&[u8]>)] = if index == 0 {
            &[(stamp::SEND_TIME_HEADER_KEY, Some(&send_time[..]))]
        } else {
            &[]
        };
        builder.push_kv(key.as_deref(), Some(&value), headers, now_ms);
    }
    builder
        .build(0)
        .map(Bytes::from)
        .map_err(|error| WorkloadError::Unsupported {
            what: format!("cannot build the record batch: {error}"),
        })
}

/// Distinct keys in the pool, and characters per key: as OpenMessaging Benchmark's key
/// distributors, 10,000 keys of 7 random bytes in unpadded base64url.
const KEY_POOL_SIZE: usize = 10_000;
const KEY_CHARS: usize = 10;

/// The key of each record of the template batch. With keys, the pool is drawn afresh for
/// each run; KEY_ROUND_ROBIN takes it in order, RANDOM_NANO at random. Every batch repeats
/// the template's keys, and partitions are chosen per batch in turn, not by key hash (the
/// spread over partitions is even either way).
fn record_keys(distributor: KeyDistributor, records: usize) -> Vec<Option<Vec<u8>>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let seed = stamp::unix_us(Instant::now()) | 1;
    let mut random = XorShift(seed);
    let pool_size = KEY_POOL_SIZE.min(records.max(1));
    let pool: Vec<Vec<u8>> = (0..pool_size)
        .map(|_| {
            (0..KEY_CHARS)
                .map(|_| ALPHABET[(random.next() % 64) as usize])
                .collect()
        })
        .collect();
    (0..records)
        .map(|index| match distributor {
            KeyDistributor::NoKey => None,
            KeyDistributor::KeyRoundRobin => Some(pool[index % pool_size].clone()),
            KeyDistributor::RandomNano => {
                Some(pool[(random.next() % pool_size as u64) as usize].clone())
            }
        })
        .collect()
}

/// xorshift64: plenty for picking key bytes, and no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Which partitions actor `index` of `actors` works on: every `actors`-th partition, or, when
/// there are more actors than partitions, partition `index % partitions` (shared).
fn share(index: usize, actors: usize, partitions: i32) -> Vec<i32> {
    let mine: Vec<i32> = (0..partitions)
        .filter(|partition| *partition as usize % actors == index)
        .collect();
    if mine.is_empty() {
        vec![(index % partitions as usize) as i32]
    } else {
        mine
    }
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start with the state, field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(ticks * 1_000_000 / ticks_per_s))
}

/// A process's peak resident memory (VmHWM), in bytes.
pub fn process_peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// CPU time every core of the machine has spent busy (not idle, not waiting for I/O),
/// from the first line of /proc/stat.
pub fn machine_busy_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
    let busy: u64 = fields.iter().take(8).sum::<u64>() - fields.get(3)? - fields.get(4)?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(busy * 1_000_000 / ticks_per_s))
}

/// CPU use over one phase: this process, the broker (if its pid is known), the machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub harness: Duration,
    pub broker: Option<Duration>,
    pub machine_busy: Option<Duration>,
}

/// Readings at the start of a phase, for [`CpuUse`].
struct CpuMark {
    harness: Duration,
    broker: Option<Duration>,
    machine_busy: Option<Duration>,
}

impl CpuMark {
    fn now(broker_pids: &[u32]) -> CpuMark {
        // The brokers' CPU summed, known only if every broker's is.
        let broker = if broker_pids.is_empty() {
            None
        } else {
            broker_pids
                .iter()
                .map(|pid| process_cpu(*pid))
                .sum::<Option<Duration>>()
        };
        CpuMark {
            harness: cpu_time(),
            broker,
            machine_busy: machine_busy_cpu(),
        }
    }

    fn since(&self, broker_pids: &[u32]) -> CpuUse {
        let later = CpuMark::now(broker_pids);
        CpuUse {
            harness: later.harness.saturating_sub(self.harness),
            broker: later
                .broker
                .zip(self.broker)
                .map(|(after, before)| after.saturating_sub(before)),
            machine_busy: later
                .machine_busy
                .zip(self.machine_busy)
                .map(|(after, before)| after.saturating_sub(before)),
        }
    }
}

/// Per-second samples of the shared counters: bytes published and consumed in each window
/// and, while consumers tail the producers, the backlog at each window's end.
struct Windows {
    publish_bytes: Vec<u64>,
    consume_bytes: Vec<u64>,
    backlog_bytes: Vec<u64>,
    acked_seen: u64,
    received_seen: u64,
}

impl Windows {
    fn start(producer_control: &ProducerControl, consumer_control: &ConsumerControl) -> Windows {
        Windows {
            publish_bytes: Vec::new(),
            consume_bytes: Vec::new(),
            backlog_bytes: Vec::new(),
            acked_seen: producer_control.acked_bytes.load(Ordering::Relaxed),
            received_seen: consumer_control.received_bytes.load(Ordering::Relaxed),
        }
    }

    /// Closes a window of the measured period (the last one may be partial).
    fn sample_publish(
        &mut self,
        producer_control: &ProducerControl,
        consumer_control: &ConsumerControl,
        tailing: bool,
    ) {
        let acked = producer_control.acked_bytes.load(Ordering::Relaxed);
        self.publish_bytes.push(acked - self.acked_seen);
        self.acked_seen = acked;
        if tailing {
            self.sample_consume(consumer_control);
            self.backlog_bytes
                .push(backlog_bytes(producer_control, consumer_control));
        }
    }

    fn sample_consume(&mut self, consumer_control: &ConsumerControl) {
        let received = consumer_control.received_bytes.load(Ordering::Relaxed);
        self.consume_bytes.push(received - self.received_seen);
        self.received_seen = received;
    }

    fn progress_line(&self, elapsed: Duration) -> String {
        let last_mb = |windows: &[u64]| windows.last().map_or(0.0, |&bytes| bytes as f64 / 1e6);
        let mut line = format!(
            "{:.0}s published {:.0} MB/s",
            elapsed.as_secs_f64(),
            last_mb(&self.publish_bytes)
        );
        if !self.consume_bytes.is_empty() {
            line += &format!(", consumed {:.0} MB/s", last_mb(&self.consume_bytes));
        }
        if let Some(backlog) = self.backlog_bytes.last() {
            line += &format!(", backlog {:.1} MB", *backlog as f64 / 1e6);
        }
        line
    }
}

/// Bytes acknowledged to the producers and not yet received by the consumers.
fn backlog_bytes(producer_control: &ProducerControl, consumer_control: &ConsumerControl) -> u64 {
    let acked = producer_control.all_acked_bytes.load(Ordering::Relaxed);
    acked.saturating_sub(consumer_control.received_bytes.load(Ordering::Relaxed))
}

/// Runs the workload and returns what it measured.
pub fn run(workload: &BrokerWorkload) -> Result<BrokerOutcome, WorkloadError> {
    run_with_faults(workload, None)
}

/// Shared by the driver and the actors while a run goes on.
struct Controls {
    producer: ProducerControl,
    consumer: ConsumerControl,
    consumer_failovers: AtomicU64,
}

/// Runs the workload, injecting the faults of `workload.faults` with `injector`.
pub fn run_with_faults(
    workload: &BrokerWorkload,
    injector: Option<&mut dyn FaultInjector>,
) -> Result<BrokerOutcome, WorkloadError> {
    let client_id = format!("shardlog-harness-{}", std::process::id());
    let mut bootstrap = kafka::open(&workload.bootstrap, &client_id)?;
    let layout = metadata::ensure_topic(
        &mut bootstrap,
        &workload.topic,
        workload.partitions,
        workload.replication,
    )?;
    drop(bootstrap);
    let brokers = KnownBrokers::new(&workload.bootstrap, Some(&layout), &client_id);
    let batch = template_batch(workload)?;
    let producer_configs = producer_configs(workload, &batch);
    let consumer_configs = consumer_configs(workload);
    let mut faults = match (workload.faults, injector) {
        (Some(plan), Some(injector)) => Some(FaultSchedule::new(plan, injector)),
        (Some(_), None) => {
            return Err(WorkloadError::Unsupported {
                what: "faults need a cluster the harness started (--brokers)".to_string(),
            })
        }
        (None, _) => None,
    };
    let controls = Controls {
        producer: ProducerControl::default(),
        consumer: ConsumerControl::default(),
        consumer_failovers: AtomicU64::new(0),
    };
    let progress = indicatif::ProgressBar::new_spinner();
    let outcome = std::thread::scope(|scope| -> Result<BrokerOutcome, WorkloadError> {
        let producer_threads: Vec<ScopedJoinHandle<Result<ProducerOutcome, WorkloadError>>> =
            producer_configs
                .iter()
                .enumerate()
                .map(|(index, config)| {
                    let producer_brokers =
                        brokers.with_client_id(&format!("{client_id}-producer-{index}"));
                    let control = &controls.producer;
                    std::thread::Builder::new()
                        .name(format!("producer-{index}"))
                        .spawn_scoped(scope, move || {
                            produce::run(config, producer_brokers, control)
                        })
                        .expect("can spawn a producer thread")
                })
                .collect();
        let start_consumers = || {
            consumer_configs
                .iter()
                .enumerate()
                .map(|(index, config)| {
                    let consumer_brokers =
                        brokers.with_client_id(&format!("{client_id}-consumer-{index}"));
                    let controls = &controls;
                    std::thread::Builder::new()
                        .name(format!("consumer-{index}"))
                        .spawn_scoped(scope, move || {
                            fetch::run(
                                config,
                                consumer_brokers,
                                &controls.consumer,
                                &controls.consumer_failovers,
                            )
                        })
                        .expect("can spawn a consumer thread")
                })
                .collect::<Vec<ScopedJoinHandle<Result<ConsumerOutcome, WorkloadError>>>>()
        };
        let tailing_since = (Instant::now(), CpuMark::now(&workload.broker_pids));
        let mut consumer_threads = Vec::new();
        if workload.consume == ConsumeMode::During {
            consumer_threads = start_consumers();
        }
        let mut windows = Windows::start(&controls.producer, &controls.consumer);
        let published = if producer_threads.is_empty() {
            None
        } else {
            let measured = measure_publish(
                workload,
                &controls,
                &producer_threads,
                &mut windows,
                faults.as_mut(),
                (&brokers, &progress),
            );
            controls.producer.stopping.store(true, Ordering::SeqCst);
            let joined = measured.and_then(|measured| join_producers(producer_threads, measured));
            match joined {
                Ok(published) => Some(published),
                Err(error) => {
                    controls.consumer.aborting.store(true, Ordering::SeqCst);
                    for thread in consumer_threads {
                        let _ = thread.join();
                    }
                    return Err(error);
                }
            }
        };
        let end_offsets = published
            .as_ref()
            .map(|published| published.end_offsets.clone())
            .unwrap_or_default();
        if end_offsets.iter().any(|(_, end)| *end < 0) && workload.consumers > 0 {
            controls.consumer.aborting.store(true, Ordering::SeqCst);
            return Err(WorkloadError::Unsupported {
                what: "consumers need to know where the producers ended: use --acks 1 or all \
                       (with acks=0 nothing is acknowledged)"
                    .to_string(),
            });
        }

        // Consume: up to where the producers ended (or, without producers, to the end the
        // consumers find when they start).
        let mut consumed = None;
        if workload.consumers > 0 {
            let targets = if workload.producers > 0 {
                end_offsets.clone()
            } else {
                current_end_offsets(&layout, &client_id)?
            };
            let _ = controls.consumer.targets.set(targets);
            let since = if workload.consume == ConsumeMode::After {
                let since = (Instant::now(), CpuMark::now(&workload.broker_pids));
                consumer_threads = start_consumers();
                // Windows of the catch-up read alone.
                windows = Windows::start(&controls.producer, &controls.consumer);
                since
            } else {
                tailing_since
            };
            consumed = Some(measure_consume(
                workload,
                &controls,
                consumer_threads,
                &mut windows,
                since,
                &progress,
            )?);
        }
        Ok(finish(
            workload, &batch, &controls, published, consumed, faults,
        ))
    });
    progress.finish_and_clear();
    outcome
}

/// The producers' settings: each its share of the partitions and of the rate.
fn producer_configs(workload: &BrokerWorkload, batch: &Bytes) -> Vec<ProducerConfig> {
    let records_per_batch = workload.records_per_batch();
    let requests_per_s = if workload.rate_records_per_s == 0 || workload.producers == 0 {
        0.0
    } else {
        workload.rate_records_per_s as f64 / records_per_batch as f64 / workload.producers as f64
    };
    (0..workload.producers)
        .map(|index| ProducerConfig {
            topic: workload.topic.clone(),
            partitions: share(index, workload.producers, workload.partitions),
            acks: workload.acks,
            in_flight_max: workload.in_flight,
            requests_per_s,
            batch: batch.clone(),
            records_per_batch,
            timeout_ms: 30_000,
            idempotent: workload.idempotent(),
        })
        .collect()
}

fn consumer_configs(workload: &BrokerWorkload) -> Vec<ConsumerConfig> {
    (0..workload.consumers)
        .map(|index| ConsumerConfig {
            topic: workload.topic.clone(),
            partitions: share(index, workload.consumers, workload.partitions),
            max_bytes: workload.fetch_bytes.min(i32::MAX as u64) as i32,
            min_bytes: 1,
            max_wait_ms: workload.fetch_wait_ms,
            end_to_end: workload.consume == ConsumeMode::During,
        })
        .collect()
}

/// What the publish phase measured before the producers are joined.
struct PublishMeasured {
    elapsed: Duration,
    window_bytes: Vec<u64>,
    window_backlog_bytes: Vec<u64>,
    backlog_bytes_at_end: Option<u64>,
    cpu: CpuUse,
}

/// The warm-up and the measured period, sampled once a second, with the faults injected
/// when due. Returns once the period is over (or a producer ended early).
fn measure_publish(
    workload: &BrokerWorkload,
    controls: &Controls,
    producer_threads: &[ScopedJoinHandle<Result<ProducerOutcome, WorkloadError>>],
    windows: &mut Windows,
    mut faults: Option<&mut FaultSchedule>,
    (brokers, progress): (&KnownBrokers, &indicatif::ProgressBar),
) -> Result<PublishMeasured, WorkloadError> {
    let (producer_control, consumer_control) = (&controls.producer, &controls.consumer);
    progress.set_message("producers: warming up");
    let any_done = || producer_threads.iter().any(|thread| thread.is_finished());
    let warmup_end = Instant::now() + workload.warmup;
    while Instant::now() < warmup_end && !any_done() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu_mark = CpuMark::now(&workload.broker_pids);
    let started = Instant::now();
    consumer_control
        .measure_from_us
        .store(stamp::unix_us(started), Ordering::SeqCst);
    producer_control.measuring.store(true, Ordering::SeqCst);
    *windows = Windows::start(producer_control, consumer_control);
    let tailing = workload.consume == ConsumeMode::During && workload.consumers > 0;
    let mut next_tick = started + Duration::from_secs(1);
    let end = started + workload.duration;
    while Instant::now() < end && !any_done() {
        let now = Instant::now();
        if let Some(faults) = faults.as_deref_mut() {
            faults.tick(now - started, brokers, &workload.topic)?;
        }
        if now >= next_tick {
            windows.sample_publish(producer_control, consumer_control, tailing);
            next_tick += Duration::from_secs(1);
            progress.set_message(windows.progress_line(now - started));
            progress.tick();
        }
        std::thread::sleep(Duration::from_millis(10).min(end.saturating_duration_since(now)));
    }
    producer_control.measuring.store(false, Ordering::SeqCst);
    let elapsed = started.elapsed();
    consumer_control
        .measure_until_us
        .store(stamp::unix_us(started + elapsed), Ordering::SeqCst);
    // The last, partial second.
    windows.sample_publish(producer_control, consumer_control, tailing);
    Ok(PublishMeasured {
        elapsed,
        window_bytes: std::mem::take(&mut windows.publish_bytes),
        window_backlog_bytes: std::mem::take(&mut windows.backlog_bytes),
        backlog_bytes_at_end: tailing.then(|| backlog_bytes(producer_control, consumer_control)),
        cpu: cpu_mark.since(&workload.broker_pids),
    })
}

/// The producers' results, merged.
struct Published {
    outcome: ProducerOutcome,
    measured: PublishMeasured,
    end_offsets: Vec<(i32, i64)>,
}

/// Waits for every producer to answer its last requests, and merges what they measured.
fn join_producers(
    producer_threads: Vec<ScopedJoinHandle<Result<ProducerOutcome, WorkloadError>>>,
    measured: PublishMeasured,
) -> Result<Published, WorkloadError> {
    let mut total = ProducerOutcome::new(&[]);
    let mut end_offsets: Vec<(i32, i64)> = Vec::new();
    let mut failure = None;
    for thread in producer_threads {
        match thread.join().expect("producer threads do not panic") {
            Ok(outcome) => {
                for &(partition, end) in &outcome.end_offsets {
                    match end_offsets
                        .iter_mut()
                        .find(|(known, _)| *known == partition)
                    {
                        Some((_, known_end)) => *known_end = end.max(*known_end),
                        None => end_offsets.push((partition, end)),
                    }
                }
                total.merge(&outcome);
            }
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    end_offsets.sort_unstable();
    Ok(Published {
        outcome: total,
        measured,
        end_offsets,
    })
}

/// The consumers' results, merged, and the windows of the consume phase.
struct Consumed {
    total: ConsumerOutcome,
    /// (partitions, what was read) per consumer, for the verification.
    readers: Vec<(Vec<i32>, verify::Consumed)>,
    window_bytes: Vec<u64>,
    cpu: CpuUse,
}

/// Samples the consumers once a second until every one has reached its targets.
fn measure_consume(
    workload: &BrokerWorkload,
    controls: &Controls,
    consumer_threads: Vec<ScopedJoinHandle<Result<ConsumerOutcome, WorkloadError>>>,
    windows: &mut Windows,
    (started, cpu_mark): (Instant, CpuMark),
    progress: &indicatif::ProgressBar,
) -> Result<Consumed, WorkloadError> {
    let consumer_control = &controls.consumer;
    progress.set_message("consumers: reading");
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    while !consumer_threads.iter().all(|thread| thread.is_finished()) {
        let now = Instant::now();
        if now >= next_tick {
            windows.sample_consume(consumer_control);
            next_tick += Duration::from_secs(1);
            let received = consumer_control.received_bytes.load(Ordering::Relaxed);
            progress.set_message(format!(
                "consumers: {:.0}s {:.0} MB/s",
                (now - started).as_secs_f64(),
                received as f64 / (now - started).as_secs_f64() / 1e6
            ));
            progress.tick();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu = cpu_mark.since(&workload.broker_pids);
    windows.sample_consume(consumer_control);
    let mut total = ConsumerOutcome::default();
    let mut readers = Vec::new();
    let mut failure = None;
    for (index, thread) in consumer_threads.into_iter().enumerate() {
        match thread.join().expect("consumer threads do not panic") {
            Ok(outcome) => {
                total.absorb(&outcome);
                let partitions = share(index, workload.consumers, workload.partitions);
                readers.push((partitions, outcome.consumed));
            }
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(Consumed {
        total,
        readers,
        window_bytes: std::mem::take(&mut windows.consume_bytes),
        cpu,
    })
}

/// Puts the run's results together, the verification included.
fn finish(
    workload: &BrokerWorkload,
    batch: &Bytes,
    controls: &Controls,
    published: Option<Published>,
    consumed: Option<Consumed>,
    faults: Option<FaultSchedule>,
) -> BrokerOutcome {
    let verification = match (&published, &consumed) {
        (Some(published), Some(consumed)) if workload.idempotent() => Some(verify::verify(
            &published.outcome.acknowledged,
            &consumed.readers,
        )),
        _ => None,
    };
    let faults = faults.map(|schedule| FaultReport {
        producer_failovers: controls.producer.failovers.load(Ordering::Relaxed),
        consumer_failovers: controls.consumer_failovers.load(Ordering::Relaxed),
        ..schedule.report
    });
    let end_offsets = published
        .as_ref()
        .map(|published| published.end_offsets.clone())
        .unwrap_or_default();
    BrokerOutcome {
        batch_bytes: batch.len() as u64,
        publish: published.map(|published| PublishOutcome {
            bytes: published.outcome.bytes,
            batches: published.outcome.batches,
            records: published.outcome.records,
            elapsed: published.measured.elapsed,
            latency_us: published.outcome.latency_us,
            window_bytes: published.measured.window_bytes,
            window_backlog_bytes: published.measured.window_backlog_bytes,
            backlog_bytes_at_end: published.measured.backlog_bytes_at_end,
            unacknowledged_batches: published.outcome.unacknowledged_batches,
            cpu: published.measured.cpu,
        }),
        consume: consumed.map(|consumed| ConsumeOutcome {
            bytes: consumed.total.bytes,
            batches: consumed.total.batches,
            records: consumed.total.records,
            fetches: consumed.total.fetches,
            elapsed: consumed.total.elapsed,
            end_to_end_us: (workload.consume == ConsumeMode::During && workload.producers > 0)
                .then_some(consumed.total.end_to_end_us),
            window_bytes: consumed.window_bytes,
            cpu: consumed.cpu,
        }),
        // The largest broker's: the bound is per broker.
        broker_peak_rss_bytes: workload
            .broker_pids
            .iter()
            .filter_map(|pid| process_peak_rss_bytes(*pid))
            .max(),
        end_offsets,
        verification,
        faults,
    }
}

/// Each partition's current end (high watermark), for consumers that run without producers.
fn current_end_offsets(
    layout: &TopicLayout,
    client_id: &str,
) -> Result<Vec<(i32, i64)>, WorkloadError> {
    let mut ends = Vec::new();
    for leader in &layout.partitions {
        let mut connection = kafka::open(&leader.leader_address, client_id)?;
        let end = fetch::high_watermark(&mut connection, &layout.name, leader.partition)?;
        ends.push((leader.partition, end));
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog::broker::server;
    use shardlog::broker::BrokerConfig;

    fn start_broker(data_dir: &std::path::Path) -> server::Running {
        let config = BrokerConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
            data_dir: data_dir.to_path_buf(),
            cores: 1,
            strategy: "buffered".to_string(),
            io_memory_bytes: 4 << 20,
            ..BrokerConfig::default()
        };
        server::start(config).expect("the broker starts")
    }

    fn workload(address: String, consume: ConsumeMode, rate_records_per_s: u64) -> BrokerWorkload {
        BrokerWorkload {
            bootstrap: address,
            topic: "harness-test".to_string(),
            partitions: 2,
            producers: 2,
            consumers: 1,
            record_bytes: 100,
            batch_bytes: 10_000,
            acks: -1,
            duration: Duration::from_millis(700),
            warmup: Duration::from_millis(200),
            in_flight: 3,
            rate_records_per_s,
            fetch_bytes: 64 << 10,
            fetch_wait_ms: 50,
            consume,
            label: "test".to_string(),
            replication: 1,
            broker_pids: vec![std::process::id()],
            key_distributor: KeyDistributor::NoKey,
            faults: None,
            workload_file: None,
        }
    }

    /// Everything the producers wrote (warm-up included) is what the consumer reads back.
    fn check(workload: &BrokerWorkload, outcome: &BrokerOutcome) {
        let publish = outcome.publish.as_ref().expect("producers ran");
        let consume = outcome.consume.as_ref().expect("consumers ran");
        assert!(publish.batches > 0 && publish.latency_us.len() == publish.batches);
        assert_eq!(
            publish.records,
            publish.batches * workload.records_per_batch()
        );
        let produced: i64 = outcome.end_offsets.iter().map(|(_, end)| end).sum();
        assert_eq!(outcome.end_offsets.len(), 2);
        assert_eq!(consume.records as i64, produced);
        assert_eq!(consume.batches as i64 * 100, produced);
        // acks=all: idempotent producers, and every record they wrote was acknowledged and
        // read back once.
        let verdict = outcome.verification.as_ref().expect("acks=all is verified");
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!(verdict.acknowledged_records as i64, produced);
        assert_eq!(verdict.consumed_acknowledged_records as i64, produced);
    }

    #[test]
    fn produces_then_reads_everything_back() {
        let data_dir = tempfile::tempdir().expect("a temporary directory");
        let broker = start_broker(data_dir.path());
        let workload = workload(broker.address().to_string(), ConsumeMode::After, 0);
        let outcome = run(&workload).expect("the workload runs");
        check(&workload, &outcome);
        let consume = outcome.consume.as_ref().expect("consumers ran");
        assert!(consume.end_to_end_us.is_none(), "a catch-up read has none");
        // The topic now exists with 2 partitions; asking for 3 is refused clearly.
        let mut other = workload.clone();
        other.partitions = 3;
        let refused = run(&other).err().expect("a partition count mismatch");
        assert!(
            refused.to_string().contains("exists with 2 partitions"),
            "{refused}"
        );
        broker.stop();
    }

    #[test]
    fn tails_at_a_fixed_rate() {
        let data_dir = tempfile::tempdir().expect("a temporary directory");
        let broker = start_broker(data_dir.path());
        let workload = workload(broker.address().to_string(), ConsumeMode::During, 20_000);
        let outcome = run(&workload).expect("the workload runs");
        check(&workload, &outcome);
        let publish = outcome.publish.as_ref().expect("producers ran");
        // 20,000 records/s for 0.7 s is 140 batches of 100; allow for timer slack.
        assert!(
            (100..=160).contains(&publish.batches),
            "{}",
            publish.batches
        );
        // End-to-end latency: one count per record sent in the measured period, each at
        // least its publish latency's floor and far below the run's length.
        let consume = outcome.consume.as_ref().expect("consumers ran");
        let end_to_end = consume.end_to_end_us.as_ref().expect("tailing measures it");
        let sent_records = publish.batches * workload.records_per_batch();
        let counted = end_to_end.len();
        assert!(
            counted + 2 * workload.records_per_batch() >= sent_records
                && counted <= sent_records + 2 * workload.records_per_batch(),
            "{counted} end-to-end counts for {sent_records} records"
        );
        assert!(end_to_end.max() < 2_000_000, "{}", end_to_end.max());
        broker.stop();
    }
}
