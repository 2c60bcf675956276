//! A pipelined producer: one connection, up to `in_flight_max` produce requests outstanding,
//! one sender thread and one receiver thread.
//!
//! The batch is built once and each partition's request frame is encoded once; before each
//! send the sender stamps the batch in place (send time, batch timestamps, CRC: see
//! `stamp`), then writes a fresh 12-byte frame prefix (new correlation id) and the frame, so
//! sending allocates nothing and copies nothing in user space. The receiver reads the
//! responses in request order (the Kafka contract) and returns an in-flight slot for each.
//!
//! Latency, in microseconds, is measured from the *intended* send time to the response:
//! - at a fixed rate, the intended time is the schedule (`start + k / rate`), so a send held
//!   back by a slow broker (no free in-flight slot) still counts from when it should have
//!   gone out: no coordinated omission;
//! - at the maximum rate there is no schedule, and the time is taken just before the write.
//!
//! Bounds: at most `in_flight_max` requests are outstanding; memory is one encoded frame per
//! partition of this producer plus one response buffer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{ApiKey, ProduceResponse};

use super::connection::{
    encode_frame, frame_prefix, Connection, FrameReader, FrameWriter, FRAME_PREFIX_BYTES,
};
use super::metadata::topic_name;
use super::stamp::{self, ProducerStamp};
use super::{response_error, ClientError};

/// Produce versions this client speaks: RecordBatch v2 needs v3; v13 names topics by id.
const PRODUCE_VERSIONS: (i16, i16) = (3, 12);

/// Highest latency the histograms track: 60 s in microseconds, 3 significant digits.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// The longest sleep between checks of the stop flag while waiting for a scheduled send.
const SCHEDULE_SLEEP_MAX: Duration = Duration::from_millis(5);

/// What one producer sends.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub topic: String,
    /// The partitions this producer writes to, one request each, in turn. All of them are led
    /// by the broker it is connected to.
    pub partitions: Vec<i32>,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    pub in_flight_max: usize,
    /// Requests per second this producer sends; 0 = as fast as acknowledgements allow.
    pub requests_per_s: f64,
    /// The record batch every request carries (one per request).
    pub batch: Bytes,
    pub records_per_batch: u64,
    /// The broker's deadline for each request (Kafka `timeout_ms`).
    pub timeout_ms: i32,
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
}

/// One request on the wire, as the receiver needs to know it.
struct InFlight {
    correlation_id: i32,
    partition_slot: usize,
    intended: Instant,
}

/// Runs one producer on the calling thread (plus a receiver thread) until
/// `control.stopping` is set and every request in flight is answered.
pub fn run(
    connection: Connection,
    config: &ProducerConfig,
    control: &ProducerControl,
) -> Result<ProducerOutcome, ClientError> {
    assert!(config.in_flight_max >= 1 && !config.partitions.is_empty());
    let version =
        connection.pick_version::<ProduceRequest>(PRODUCE_VERSIONS.0, PRODUCE_VERSIONS.1)?;
    let send_time_at =
        stamp::send_time_position(&config.batch).ok_or_else(|| ClientError::Unsupported {
            what: "the template batch has no send-time header".to_string(),
        })?;
    let frames = config
        .partitions
        .iter()
        .map(|&partition| {
            let request = ProduceRequest::default()
                .with_acks(config.acks)
                .with_timeout_ms(config.timeout_ms)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic_name(&config.topic))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(config.batch.clone()))])]);
            let frame = encode_frame(&request, version, 0, connection.client_id())?;
            StampedFrame::new(frame.to_vec(), &config.batch, send_time_at)
        })
        .collect::<Result<Vec<StampedFrame>, ClientError>>()?;
    let mut frames = frames;
    let (writer, reader, first_correlation_id) = connection.split();
    let histogram = Histogram::new_with_max(LATENCY_US_MAX, 3).expect("valid histogram bounds");

    if config.acks == 0 {
        // No responses at all: count what was written.
        let mut outcome = ProducerOutcome {
            latency_us: histogram,
            bytes: 0,
            batches: 0,
            records: 0,
            end_offsets: config.partitions.iter().map(|&p| (p, -1)).collect(),
        };
        let batch_bytes = config.batch.len() as u64;
        let plan = SendPlan {
            first_correlation_id,
            config,
            control,
        };
        send_loop(writer, &mut frames, &plan, AlwaysAvailable, None, || {
            if control.measuring.load(Ordering::Relaxed) {
                outcome.bytes += batch_bytes;
                outcome.batches += 1;
                outcome.records += config.records_per_batch;
                control
                    .acked_bytes
                    .fetch_add(batch_bytes, Ordering::Relaxed);
            }
        })?;
        return Ok(outcome);
    }

    let (sent_sender, sent_receiver) = sync_channel::<InFlight>(config.in_flight_max);
    let (token_sender, token_receiver) = sync_channel::<()>(config.in_flight_max);
    for _ in 0..config.in_flight_max {
        token_sender.send(()).expect("the receiver is alive");
    }
    std::thread::scope(|scope| {
        let receiver = std::thread::Builder::new()
            .name("producer-rx".to_string())
            .spawn_scoped(scope, || {
                receive_loop(
                    reader,
                    version,
                    config,
                    control,
                    sent_receiver,
                    token_sender,
                    histogram,
                )
            })
            .expect("can spawn the receiver thread");
        let plan = SendPlan {
            first_correlation_id,
            config,
            control,
        };
        let sent = send_loop(
            writer,
            &mut frames,
            &plan,
            token_receiver,
            Some(sent_sender),
            || {},
        );
        let received = receiver.join().expect("the receiver thread does not panic");
        // The receiver's error explains a failed send (it shut the socket down), so it wins.
        let outcome = received?;
        sent?;
        Ok(outcome)
    })
}

/// Where the sender gets permission to put one more request in flight.
trait Slots {
    /// Blocks until a slot is free; `false` when none will ever be (the receiver is gone).
    fn acquire(&self) -> bool;
}

impl Slots for Receiver<()> {
    fn acquire(&self) -> bool {
        self.recv().is_ok()
    }
}

/// acks=0: nothing comes back, so nothing limits the requests outstanding.
struct AlwaysAvailable;

impl Slots for AlwaysAvailable {
    fn acquire(&self) -> bool {
        true
    }
}

/// How the sender sends: correlation ids from `first_correlation_id`, partitions in turn.
struct SendPlan<'a> {
    first_correlation_id: i32,
    config: &'a ProducerConfig,
    control: &'a ProducerControl,
}

/// Sends until stopped. Each request is announced on `sent` (when responses are expected)
/// before it is written, so the receiver always knows what to expect next.
fn send_loop(
    mut writer: FrameWriter,
    frames: &mut [StampedFrame],
    plan: &SendPlan,
    slots: impl Slots,
    sent: Option<SyncSender<InFlight>>,
    mut on_written: impl FnMut(),
) -> Result<(), ClientError> {
    let SendPlan {
        first_correlation_id,
        config,
        control,
    } = *plan;
    let interval =
        (config.requests_per_s > 0.0).then(|| Duration::from_secs_f64(1.0 / config.requests_per_s));
    let mut scheduled = Instant::now();
    let mut correlation_id = first_correlation_id;
    let mut partition_slot = 0;
    while !control.stopping.load(Ordering::Relaxed) {
        let intended = match interval {
            Some(interval) => {
                let due = scheduled;
                scheduled += interval;
                if !sleep_until(due, control) {
                    break;
                }
                due
            }
            None => Instant::now(),
        };
        if !slots.acquire() {
            break;
        }
        // At the maximum rate, the clock starts once the request can go.
        let intended = if interval.is_some() {
            intended
        } else {
            Instant::now()
        };
        let frame = &mut frames[partition_slot];
        frame.stamp(stamp::unix_us(intended), None);
        let in_flight = InFlight {
            correlation_id,
            partition_slot,
            intended,
        };
        if sent
            .as_ref()
            .is_some_and(|sent| sent.send(in_flight).is_err())
        {
            break; // the receiver failed; it reports why
        }
        let prefix = frame_prefix(frame.bytes(), correlation_id);
        if let Err(error) = writer.write_frame(&prefix, &frame.bytes()[FRAME_PREFIX_BYTES..]) {
            writer.shutdown();
            return Err(error);
        }
        on_written();
        correlation_id = correlation_id.wrapping_add(1);
        partition_slot = (partition_slot + 1) % frames.len();
    }
    // Dropping `sent` tells the receiver that nothing more is coming.
    drop(sent);
    Ok(())
}

/// One partition's produce request, encoded once; its batch is stamped in place before each
/// send, which is safe because a write returns only once the kernel has every byte.
struct StampedFrame {
    bytes: Vec<u8>,
    /// Where the batch starts in `bytes`, and its length.
    batch_at: usize,
    batch_bytes: usize,
    /// Where the send time sits in the batch.
    send_time_at: usize,
}

/// Bytes a produce request may carry after its records: the empty tagged-field sections of
/// the partition, the topic and the request in flexible versions.
const TRAILER_BYTES_MAX: usize = 8;

impl StampedFrame {
    fn new(bytes: Vec<u8>, batch: &[u8], send_time_at: usize) -> Result<StampedFrame, ClientError> {
        // The records are the last field of the only partition of the only topic.
        let batch_at = (0..=TRAILER_BYTES_MAX)
            .filter_map(|trailer| bytes.len().checked_sub(batch.len() + trailer))
            .find(|&at| &bytes[at..at + batch.len()] == batch)
            .ok_or_else(|| ClientError::Unsupported {
                what: "cannot find the record batch in the encoded produce request".to_string(),
            })?;
        Ok(StampedFrame {
            bytes,
            batch_at,
            batch_bytes: batch.len(),
            send_time_at,
        })
    }

    fn stamp(&mut self, send_time_us: u64, producer: Option<ProducerStamp>) {
        let batch = &mut self.bytes[self.batch_at..self.batch_at + self.batch_bytes];
        stamp::stamp(batch, self.send_time_at, send_time_us, producer);
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Sleeps until `due`, waking now and then to check for a stop; `false` if stopped.
fn sleep_until(due: Instant, control: &ProducerControl) -> bool {
    loop {
        if control.stopping.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        std::thread::sleep((due - now).min(SCHEDULE_SLEEP_MAX));
    }
}

fn receive_loop(
    mut reader: FrameReader,
    version: i16,
    config: &ProducerConfig,
    control: &ProducerControl,
    sent: Receiver<InFlight>,
    slots: SyncSender<()>,
    mut latency_us: Histogram<u64>,
) -> Result<ProducerOutcome, ClientError> {
    let mut outcome_bytes = 0u64;
    let mut batches = 0u64;
    let mut end_offsets: Vec<(i32, i64)> = config.partitions.iter().map(|&p| (p, -1)).collect();
    let batch_bytes = config.batch.len() as u64;
    while let Ok(in_flight) = sent.recv() {
        let response: ProduceResponse =
            match reader.read_response(ApiKey::Produce, version, in_flight.correlation_id) {
                Ok(response) => response,
                Err(error) => {
                    reader.shutdown();
                    return Err(error);
                }
            };
        let answered = Instant::now();
        let (partition, end_offset) = &mut end_offsets[in_flight.partition_slot];
        let mut acknowledged = false;
        for topic in &response.responses {
            for answer in &topic.partition_responses {
                if let Some(error) = response_error(answer.error_code) {
                    reader.shutdown();
                    return Err(ClientError::Broker {
                        api: ApiKey::Produce,
                        topic: topic.name.0.to_string(),
                        partition: answer.index,
                        error,
                        message: answer.error_message.as_ref().map(|text| text.to_string()),
                    });
                }
                if answer.index == *partition {
                    acknowledged = true;
                    *end_offset =
                        (*end_offset).max(answer.base_offset + config.records_per_batch as i64);
                }
            }
        }
        if !acknowledged {
            reader.shutdown();
            return Err(ClientError::MissingInResponse {
                address: reader.address().to_string(),
                api: ApiKey::Produce,
                what: format!("an answer for {}/{partition}", config.topic),
            });
        }
        control
            .all_acked_bytes
            .fetch_add(batch_bytes, Ordering::Relaxed);
        if control.measuring.load(Ordering::Relaxed) {
            let latency = answered.saturating_duration_since(in_flight.intended);
            let _ = latency_us.record((latency.as_micros() as u64).clamp(1, LATENCY_US_MAX));
            outcome_bytes += batch_bytes;
            batches += 1;
            control
                .acked_bytes
                .fetch_add(batch_bytes, Ordering::Relaxed);
        }
        let _ = slots.send(());
    }
    Ok(ProducerOutcome {
        latency_us,
        bytes: outcome_bytes,
        batches,
        records: batches * config.records_per_batch,
        end_offsets,
    })
}
