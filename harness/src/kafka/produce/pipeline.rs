//! One producer connection: up to `in_flight_max` produce requests outstanding, one sender
//! thread and one receiver thread, for the partitions this broker leads.
//!
//! Each partition's request frame is encoded once; before each send the sender stamps the
//! batch in place (send time, batch timestamps, producer id and sequence, CRC: see `stamp`),
//! then writes a fresh 12-byte frame prefix (new correlation id) and the frame, so sending
//! allocates nothing and copies nothing in user space. The receiver reads the responses in
//! request order (the Kafka contract) and returns an in-flight slot for each.
//!
//! Latency, in microseconds, is measured from the *intended* send time to the response:
//! - at a fixed rate, each partition has a schedule (`next_due`, one `interval` apart) and
//!   the intended time is the schedule, so a send held back by a slow broker (no free
//!   in-flight slot) or by a failover still counts from when it should have gone out: no
//!   coordinated omission;
//! - at the maximum rate there is no schedule, and the time is taken just before the write;
//! - a batch resent after a failover keeps its first intended time.
//!
//! A pipeline ends when the producer stops (after every request in flight is answered) or
//! at the first error (connection lost, a broker error); it then hands its partitions back
//! with the batches that were sent and not acknowledged, for the producer to resend
//! elsewhere. It never retries by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{ApiKey, ProduceResponse};

use super::{ProducerConfig, ProducerControl, ProducerIdentity, LATENCY_US_MAX};
use crate::kafka::metadata::topic_name;
use crate::kafka::stamp::{self, ProducerStamp};
use crate::kafka::{response_error, ClientError, WorkloadError};
use crate::verify::Acknowledged;
use shardlog_protocol::client::codec::{encode_frame, frame_prefix, FRAME_PREFIX_BYTES};
use shardlog_protocol::client::{Connection, FrameReader, FrameWriter};

/// Produce versions this client speaks: RecordBatch v2 needs v3; v13 names topics by id.
const PRODUCE_VERSIONS: (i16, i16) = (3, 12);

/// The longest sleep between checks of the stop flags while waiting for a scheduled send.
const SCHEDULE_SLEEP_MAX: Duration = Duration::from_millis(5);

/// A batch that was sent and not acknowledged: it is sent again, as it was.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub batch_number: u64,
    pub intended: Instant,
}

/// One partition as its producer knows it; moves from pipeline to pipeline on failover.
#[derive(Debug)]
pub struct PartitionState {
    pub partition: i32,
    /// The number of the next new batch (its first sequence is this times the batch's
    /// records).
    pub next_batch: u64,
    /// At a fixed rate: when the next new batch is due, and the time between batches.
    pub next_due: Instant,
    pub interval: Option<Duration>,
    /// Batches to send again before any new one, in batch order.
    pub unacknowledged: Vec<Pending>,
}

/// What a pipeline measured.
pub struct Measured {
    pub latency_us: Histogram<u64>,
    pub bytes: u64,
    pub batches: u64,
    pub records: u64,
    pub end_offsets: Vec<(i32, i64)>,
    pub acknowledged: Acknowledged,
}

impl Measured {
    fn new() -> Measured {
        Measured {
            latency_us: Histogram::new_with_max(LATENCY_US_MAX, 3).expect("valid histogram bounds"),
            bytes: 0,
            batches: 0,
            records: 0,
            end_offsets: Vec::new(),
            acknowledged: Acknowledged::default(),
        }
    }
}

/// How a pipeline ended.
pub struct PipelineEnd {
    pub partitions: Vec<PartitionState>,
    pub measured: Measured,
    /// `None`: stopped as asked.
    pub error: Option<WorkloadError>,
}

/// A pipeline's settings, borrowed from its producer.
pub struct Pipeline<'a> {
    pub config: &'a ProducerConfig,
    pub control: &'a ProducerControl,
    /// Set by the producer when another pipeline failed for good.
    pub aborting: &'a AtomicBool,
    pub identity: Option<ProducerIdentity>,
}

/// One request on the wire, as the receiver needs to know it.
struct InFlight {
    correlation_id: i32,
    slot: usize,
    pending: Pending,
}

/// Why the sender should stop: the producer stops or aborts, or the receiver failed.
struct Halt<'a> {
    control: &'a ProducerControl,
    aborting: &'a AtomicBool,
    receiver_failed: &'a AtomicBool,
}

impl Halt<'_> {
    fn now(&self) -> bool {
        self.control.stopping.load(Ordering::Relaxed)
            || self.aborting.load(Ordering::Relaxed)
            || self.receiver_failed.load(Ordering::Relaxed)
    }
}

impl Pipeline<'_> {
    /// Runs the pipeline on the calling thread (plus a receiver thread) for `partitions`,
    /// all led by the broker `connection` talks to.
    pub fn run(&self, connection: Connection, mut partitions: Vec<PartitionState>) -> PipelineEnd {
        let mut measured = Measured::new();
        measured.end_offsets = partitions
            .iter()
            .map(|state| (state.partition, -1))
            .collect();
        let error = match self.frames(&connection, &partitions) {
            Ok(frames) => self.exchange(connection, frames, &mut partitions, &mut measured),
            Err(error) => Some(error),
        };
        for state in &mut partitions {
            state
                .unacknowledged
                .sort_by_key(|pending| pending.batch_number);
        }
        PipelineEnd {
            partitions,
            measured,
            error,
        }
    }

    /// One produce request per partition, encoded for this broker.
    fn frames(
        &self,
        connection: &Connection,
        partitions: &[PartitionState],
    ) -> Result<Vec<StampedFrame>, WorkloadError> {
        let config = self.config;
        let version =
            connection.pick_version::<ProduceRequest>(PRODUCE_VERSIONS.0, PRODUCE_VERSIONS.1)?;
        let send_time_at =
            stamp::send_time_position(&config.batch).ok_or_else(|| WorkloadError::Unsupported {
                what: "the template batch has no send-time header".to_string(),
            })?;
        partitions
            .iter()
            .map(|state| {
                let request = ProduceRequest::default()
                    .with_acks(config.acks)
                    .with_timeout_ms(config.timeout_ms)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(topic_name(&config.topic))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(state.partition)
                            .with_records(Some(config.batch.clone()))])]);
                let frame = encode_frame(&request, version, 0, connection.client_id())?;
                StampedFrame::new(frame.to_vec(), &config.batch, send_time_at, version)
            })
            .collect()
    }

    /// Sends and receives until stopped or failed; returns the error, if any. Unanswered
    /// requests go back into `partitions`' unacknowledged batches.
    fn exchange(
        &self,
        connection: Connection,
        mut frames: Vec<StampedFrame>,
        partitions: &mut [PartitionState],
        measured: &mut Measured,
    ) -> Option<WorkloadError> {
        let version = frames[0].version;
        let (writer, reader, first_correlation_id) = connection.split();
        let receiver_failed = AtomicBool::new(false);
        let halt = Halt {
            control: self.control,
            aborting: self.aborting,
            receiver_failed: &receiver_failed,
        };
        let mut sender = Sender {
            writer,
            frames: &mut frames,
            correlation_id: first_correlation_id,
            records_per_batch: self.config.records_per_batch,
            identity: self.identity,
            max_rate: self.config.requests_per_s <= 0.0,
            round_robin: 0,
        };
        if self.config.acks == 0 {
            // No responses at all: count what was written.
            let error = sender
                .run(partitions, &halt, &AlwaysAvailable, None, |batch_bytes| {
                    if self.control.measuring.load(Ordering::Relaxed) {
                        measured.bytes += batch_bytes;
                        measured.batches += 1;
                        measured.records += self.config.records_per_batch;
                        self.control
                            .acked_bytes
                            .fetch_add(batch_bytes, Ordering::Relaxed);
                    }
                })
                .err();
            return error;
        }
        let (sent_sender, sent) = sync_channel::<InFlight>(self.config.in_flight_max);
        let (slot_sender, slots) = sync_channel::<()>(self.config.in_flight_max);
        for _ in 0..self.config.in_flight_max {
            slot_sender
                .send(())
                .expect("the channel has room for every slot");
        }
        let partition_ids: Vec<i32> = partitions.iter().map(|state| state.partition).collect();
        let (received, sent_result) = std::thread::scope(|scope| {
            let receiver = std::thread::Builder::new()
                .name("producer-rx".to_string())
                .spawn_scoped(scope, || {
                    let mut receiver = Receiving {
                        reader,
                        version,
                        pipeline: self,
                        partitions: &partition_ids,
                        measured,
                        failed: &receiver_failed,
                    };
                    receiver.run(sent, slot_sender)
                })
                .expect("can spawn the receiver thread");
            let sent_result = sender.run(partitions, &halt, &slots, Some(sent_sender), |_| {});
            (
                receiver.join().expect("the receiver thread does not panic"),
                sent_result,
            )
        });
        let (unanswered, received_error) = received;
        for in_flight in unanswered {
            partitions[in_flight.slot]
                .unacknowledged
                .push(in_flight.pending);
        }
        // The receiver's error explains a failed send (it shut the socket down), so it wins.
        received_error.or(sent_result.err())
    }
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

/// The sending half: picks the next batch, stamps it, writes it.
struct Sender<'a> {
    writer: FrameWriter,
    frames: &'a mut [StampedFrame],
    correlation_id: i32,
    records_per_batch: u64,
    identity: Option<ProducerIdentity>,
    max_rate: bool,
    /// At the maximum rate: the partition slot whose turn it is.
    round_robin: usize,
}

impl Sender<'_> {
    /// Sends the partitions' unacknowledged batches, then new ones, until halted. Each
    /// request is announced on `sent` (when responses are expected) before it is written, so
    /// the receiver always knows what to expect next. A batch not sent stays in its
    /// partition's unacknowledged batches.
    fn run(
        &mut self,
        partitions: &mut [PartitionState],
        halt: &Halt,
        slots: &impl Slots,
        sent: Option<SyncSender<InFlight>>,
        mut on_written: impl FnMut(u64),
    ) -> Result<(), WorkloadError> {
        let resends: Vec<(usize, Pending)> = partitions
            .iter_mut()
            .enumerate()
            .flat_map(|(slot, state)| {
                std::mem::take(&mut state.unacknowledged)
                    .into_iter()
                    .map(move |pending| (slot, pending))
            })
            .collect();
        let mut resends = resends.into_iter();
        let result = loop {
            if halt.now() {
                break Ok(());
            }
            let next = match resends.next() {
                Some((slot, pending)) if !slots.acquire() => {
                    partitions[slot].unacknowledged.push(pending);
                    break Ok(());
                }
                Some(resend) => Some(resend),
                None => self.next_new_batch(partitions, halt, slots)?,
            };
            let Some((slot, pending)) = next else {
                break Ok(());
            };
            if let Err(error) = self.send(slot, pending, &sent) {
                partitions[slot].unacknowledged.push(pending);
                break Err(error);
            }
            on_written(self.frames[slot].batch_bytes as u64);
        };
        // What was not sent goes back.
        for (slot, pending) in resends {
            partitions[slot].unacknowledged.push(pending);
        }
        // Dropping `sent` tells the receiver that nothing more is coming.
        drop(sent);
        result
    }

    /// The next new batch, once it is due and an in-flight slot is free; `None` if halted
    /// meanwhile.
    fn next_new_batch(
        &mut self,
        partitions: &mut [PartitionState],
        halt: &Halt,
        slots: &impl Slots,
    ) -> Result<Option<(usize, Pending)>, WorkloadError> {
        let slot = if self.max_rate {
            let slot = self.round_robin % partitions.len();
            self.round_robin = slot + 1;
            slot
        } else {
            let (slot, state) = partitions
                .iter()
                .enumerate()
                .min_by_key(|(_, state)| state.next_due)
                .expect("a pipeline has partitions");
            if !sleep_until(state.next_due, halt) {
                return Ok(None);
            }
            slot
        };
        if !slots.acquire() {
            return Ok(None);
        }
        let state = &mut partitions[slot];
        let intended = match state.interval {
            Some(interval) if !self.max_rate => {
                let due = state.next_due;
                state.next_due += interval;
                due
            }
            // At the maximum rate, the clock starts once the request can go.
            _ => Instant::now(),
        };
        let batch_number = state.next_batch;
        if (batch_number + 1) * self.records_per_batch > i32::MAX as u64 {
            return Err(WorkloadError::Unsupported {
                what: format!(
                    "partition {} ran out of sequence numbers (2^31 records per run)",
                    state.partition
                ),
            });
        }
        state.next_batch += 1;
        Ok(Some((
            slot,
            Pending {
                batch_number,
                intended,
            },
        )))
    }

    /// Stamps and writes one batch (its in-flight slot is already taken).
    fn send(
        &mut self,
        slot: usize,
        pending: Pending,
        sent: &Option<SyncSender<InFlight>>,
    ) -> Result<(), WorkloadError> {
        let producer = self.identity.map(|identity| ProducerStamp {
            producer_id: identity.producer_id,
            producer_epoch: identity.producer_epoch,
            base_sequence: (pending.batch_number * self.records_per_batch) as i32,
        });
        let frame = &mut self.frames[slot];
        frame.stamp(stamp::unix_us(pending.intended), producer);
        let in_flight = InFlight {
            correlation_id: self.correlation_id,
            slot,
            pending,
        };
        if let Some(sent) = sent {
            if sent.send(in_flight).is_err() {
                // The receiver is gone; it reports why.
                return Err(ClientError::Closed {
                    address: String::from("(receiver stopped)"),
                }
                .into());
            }
        }
        let prefix = frame_prefix(frame.bytes(), self.correlation_id);
        if let Err(error) = self
            .writer
            .write_frame(&prefix, &frame.bytes()[FRAME_PREFIX_BYTES..])
        {
            self.writer.shutdown();
            return Err(error.into());
        }
        self.correlation_id = self.correlation_id.wrapping_add(1);
        Ok(())
    }
}

/// Sleeps until `due`, waking now and then to check for a halt; `false` if halted.
fn sleep_until(due: Instant, halt: &Halt) -> bool {
    loop {
        if halt.now() {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        std::thread::sleep((due - now).min(SCHEDULE_SLEEP_MAX));
    }
}

/// The receiving half.
struct Receiving<'a, 'm> {
    reader: FrameReader,
    version: i16,
    pipeline: &'a Pipeline<'a>,
    partitions: &'a [i32],
    measured: &'m mut Measured,
    failed: &'a AtomicBool,
}

impl Receiving<'_, '_> {
    /// Reads responses in order until the sender is done, or until an error; then returns
    /// the requests that got no successful answer, and the error.
    fn run(
        &mut self,
        sent: Receiver<InFlight>,
        slots: SyncSender<()>,
    ) -> (Vec<InFlight>, Option<WorkloadError>) {
        while let Ok(in_flight) = sent.recv() {
            if let Err(error) = self.answer(&in_flight) {
                self.failed.store(true, Ordering::SeqCst);
                self.reader.shutdown();
                // Wake a sender waiting for a slot, then collect what it still sends.
                drop(slots);
                let mut unanswered = vec![in_flight];
                unanswered.extend(sent.iter());
                return (unanswered, Some(error));
            }
            let _ = slots.send(());
        }
        (Vec::new(), None)
    }

    /// Reads the response to `in_flight` and counts it.
    fn answer(&mut self, in_flight: &InFlight) -> Result<(), WorkloadError> {
        let config = self.pipeline.config;
        let control = self.pipeline.control;
        let response: ProduceResponse =
            self.reader
                .read_response(ApiKey::Produce, self.version, in_flight.correlation_id)?;
        let answered = Instant::now();
        let partition = self.partitions[in_flight.slot];
        let mut acknowledged = false;
        for topic in &response.responses {
            for answer in &topic.partition_responses {
                if let Some(error) = response_error(answer.error_code) {
                    return Err(ClientError::Broker {
                        api: ApiKey::Produce,
                        topic: topic.name.0.to_string(),
                        partition: answer.index,
                        error,
                        message: answer.error_message.as_ref().map(|text| text.to_string()),
                    }
                    .into());
                }
                if answer.index == partition {
                    acknowledged = true;
                    let end = &mut self.measured.end_offsets[in_flight.slot].1;
                    *end = (*end).max(answer.base_offset + config.records_per_batch as i64);
                }
            }
        }
        if !acknowledged {
            return Err(ClientError::MissingInResponse {
                address: self.reader.address().to_string(),
                api: ApiKey::Produce,
                what: format!("an answer for {}/{partition}", config.topic),
            }
            .into());
        }
        if let Some(identity) = self.pipeline.identity {
            let base_sequence = in_flight.pending.batch_number * config.records_per_batch;
            self.measured.acknowledged.record(
                partition,
                identity.producer_id,
                base_sequence as i32,
                config.records_per_batch,
            );
        }
        let batch_bytes = config.batch.len() as u64;
        control
            .all_acked_bytes
            .fetch_add(batch_bytes, Ordering::Relaxed);
        if control.measuring.load(Ordering::Relaxed) {
            let latency = answered.saturating_duration_since(in_flight.pending.intended);
            let latency_us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
            let _ = self.measured.latency_us.record(latency_us);
            self.measured.bytes += batch_bytes;
            self.measured.batches += 1;
            self.measured.records += config.records_per_batch;
            control
                .acked_bytes
                .fetch_add(batch_bytes, Ordering::Relaxed);
        }
        Ok(())
    }
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
    /// The Produce version the frame was encoded in.
    version: i16,
}

/// Bytes a produce request may carry after its records: the empty tagged-field sections of
/// the partition, the topic and the request in flexible versions.
const TRAILER_BYTES_MAX: usize = 8;

impl StampedFrame {
    fn new(
        bytes: Vec<u8>,
        batch: &[u8],
        send_time_at: usize,
        version: i16,
    ) -> Result<StampedFrame, WorkloadError> {
        // The records are the last field of the only partition of the only topic.
        let batch_at = (0..=TRAILER_BYTES_MAX)
            .filter_map(|trailer| bytes.len().checked_sub(batch.len() + trailer))
            .find(|&at| &bytes[at..at + batch.len()] == batch)
            .ok_or_else(|| WorkloadError::Unsupported {
                what: "cannot find the record batch in the encoded produce request".to_string(),
            })?;
        Ok(StampedFrame {
            bytes,
            batch_at,
            batch_bytes: batch.len(),
            send_time_at,
            version,
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
