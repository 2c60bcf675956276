//! Pipelined produce requests of an idempotent producer reach the log in the order they came.
//!
//! A real broker (two cores, each O_DIRECT strategy) gets 300 produce requests on one
//! connection without waiting for answers, each one batch of 100 records with the next
//! sequence numbers, for a partition owned by the other core than the one the connection
//! may land on half the time. Kafka answers a batch that arrives ahead of its predecessor with
//! OUT_OF_ORDER_SEQUENCE_NUMBER; here every one must be appended, at offsets that follow the
//! order of sending. Before the appends took strictly first-come turns (`fifo_lock`), about 1
//! in 6 harness runs on `uring` failed exactly so.

mod common_broker;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{ApiKey, ProduceResponse};
use shardlog::batch::{BatchBuilder, Compression};
use shardlog_protocol::client::codec;

use common_broker::{encode_request, error_code, topic_name, BrokerProcess, PRODUCE_VERSION};

const REQUESTS: i32 = 300;
const RECORDS_PER_BATCH: i32 = 100;
const TOPIC: &str = "ordered";

fn idempotent_batch(producer: (i64, i16), sequence: i32) -> Vec<u8> {
    let mut builder = BatchBuilder::new(1_700_000_000_000, Compression::None)
        .producer(producer.0, producer.1, sequence);
    let value = vec![b'v'; 1200];
    for index in 0..RECORDS_PER_BATCH {
        let key = format!("key-{}", sequence + index);
        builder.push_kv(Some(key.as_bytes()), Some(&value), &[], 1_700_000_000_000);
    }
    builder.build(0).expect("build batch")
}

fn pipelined_batches_keep_their_order(strategy: &str) {
    let broker = BrokerProcess::start(
        &format!("pipelined-{strategy}"),
        &["--strategy", strategy, "--segment-bytes", "1048576"],
    );
    let mut client = broker.client();
    client.create_topic(TOPIC, 2);
    let producer = client.init_producer_id();
    let (mut writer, mut reader, _) = broker.client().into_connection().split();
    let address = reader.address().to_string();
    // Partition 1 as well as 0: whichever core the connection lands on, one of them is
    // owned by the other core and its requests cross the core mesh.
    for partition in [0, 1] {
        let sender = std::thread::spawn(move || {
            for number in 0..REQUESTS {
                let batch = idempotent_batch(producer, number * RECORDS_PER_BATCH);
                let request = ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(topic_name(TOPIC))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(Bytes::from(batch)))])]);
                let frame = encode_request(number, PRODUCE_VERSION, &request);
                writer
                    .write_frame(&frame, &[])
                    .expect("send a produce request");
            }
            writer
        });
        let mut expected_base = 0;
        for number in 0..REQUESTS {
            let mut frame = reader.read_frame().expect("response");
            let correlation_id = codec::decode_response_header(
                &address,
                &mut frame,
                ApiKey::Produce,
                PRODUCE_VERSION,
            )
            .expect("response header");
            assert_eq!(correlation_id, number, "answers in request order");
            let response: ProduceResponse =
                codec::decode_response_body(&address, &mut frame, ApiKey::Produce, PRODUCE_VERSION)
                    .expect("response body");
            let answer = &response.responses[0].partition_responses[0];
            assert_eq!(
                answer.error_code,
                error_code::NONE,
                "{strategy}, partition {partition}: request {number} (sequence {}) was refused \
                 with error {}",
                number * RECORDS_PER_BATCH,
                answer.error_code
            );
            assert_eq!(
                answer.base_offset, expected_base,
                "appended in sending order"
            );
            expected_base += i64::from(RECORDS_PER_BATCH);
        }
        writer = sender.join().expect("sender thread");
    }
    writer.shutdown_write();
}

#[test]
fn uring_appends_pipelined_batches_in_the_order_they_came() {
    pipelined_batches_keep_their_order("uring");
}

#[test]
fn direct_appends_pipelined_batches_in_the_order_they_came() {
    pipelined_batches_keep_their_order("direct");
}
