//! Share groups (KIP-932) against the real broker binary, driven with `kafka-protocol`
//! request types (no client library speaks share groups yet): members share one partition,
//! each record is delivered to one member at a time, expired locks and releases redeliver,
//! rejects and the delivery limit archive, acknowledgements survive restarts, and bad input
//! gets Kafka's error codes while the broker keeps serving.

mod common_broker;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_broker::{encode_request, test_batch, topic_name, BrokerProcess, KafkaClient};
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::share_acknowledge_request::{
    self, AcknowledgePartition, AcknowledgeTopic, ShareAcknowledgeRequest,
};
use kafka_protocol::messages::share_acknowledge_response::ShareAcknowledgeResponse;
use kafka_protocol::messages::share_fetch_request::{
    self, FetchPartition, FetchTopic, ShareFetchRequest,
};
use kafka_protocol::messages::share_fetch_response::ShareFetchResponse;
use kafka_protocol::messages::share_group_describe_request::ShareGroupDescribeRequest;
use kafka_protocol::messages::share_group_heartbeat_request::ShareGroupHeartbeatRequest;
use kafka_protocol::messages::share_group_heartbeat_response::ShareGroupHeartbeatResponse;
use kafka_protocol::messages::GroupId;
use kafka_protocol::protocol::StrBytes;
use shardlog::batch::{self, Compression};
use uuid::Uuid;

/// Every share API is served at v1 only.
const SHARE_VERSION: i16 = 1;
const METADATA_VERSION: i16 = 12;

// Kafka's error codes, from the one table (checked there against kafka-protocol's list).
use shardlog_protocol::error_code as code;

mod ack {
    pub const ACCEPT: i8 = 1;
    pub const RELEASE: i8 = 2;
    pub const REJECT: i8 = 3;
}

/// Lock duration the tests run with, short enough to wait out.
const LOCK_MS: u64 = 1_500;
const DELIVERY_LIMIT: i16 = 3;

fn settings() -> String {
    format!(
        "share_auto_offset_reset = \"earliest\"\nshare_record_lock_duration_ms = {LOCK_MS}\n\
         share_delivery_count_limit = {DELIVERY_LIMIT}\n"
    )
}

fn start(name: &str, flags: &[&str]) -> BrokerProcess {
    BrokerProcess::start_with_settings(name, flags, "info", &settings())
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// A topic of one partition holding `batches` batches of 10 records; its id.
fn queue_topic(client: &mut KafkaClient, name: &str, batches: usize) -> Uuid {
    client.create_topic(name, 1);
    for index in 0..batches {
        let answer = client.produce(
            name,
            0,
            test_batch(&format!("b{index}"), 10, Compression::None),
            -1,
        );
        assert_eq!(answer.error_code, code::NONE, "produce");
    }
    topic_id(client, name)
}

fn topic_id(client: &mut KafkaClient, name: &str) -> Uuid {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(name)))
        ]))
        .with_allow_auto_topic_creation(false);
    let response = client.send(METADATA_VERSION, &request);
    let id = response.topics[0].topic_id;
    assert!(!id.is_nil(), "metadata v12 names the topic id");
    id
}

/// One share-group member on its own connection.
struct Member {
    client: KafkaClient,
    group: String,
    id: String,
    epoch: i32,
    session_epoch: i32,
    topic_id: Uuid,
}

/// What one ShareFetch gave: offset → (delivery count, value).
type Delivered = BTreeMap<i64, (i16, Vec<u8>)>;

impl Member {
    fn join(broker: &BrokerProcess, group: &str, topic: &str, topic_id: Uuid) -> Member {
        let mut member = Member {
            client: broker.client(),
            group: group.to_string(),
            id: Uuid::new_v4().to_string(),
            epoch: 0,
            session_epoch: 0,
            topic_id,
        };
        let response = member.heartbeat(0, Some(&[topic]));
        assert_eq!(response.error_code, code::NONE, "join");
        let assignment = response.assignment.expect("an assignment on join");
        assert_eq!(assignment.topic_partitions[0].topic_id, topic_id);
        assert_eq!(assignment.topic_partitions[0].partitions, vec![0]);
        member.epoch = response.member_epoch;
        member
    }

    fn heartbeat(&mut self, epoch: i32, topics: Option<&[&str]>) -> ShareGroupHeartbeatResponse {
        let request = ShareGroupHeartbeatRequest::default()
            .with_group_id(GroupId(text(&self.group)))
            .with_member_id(text(&self.id))
            .with_member_epoch(epoch)
            .with_subscribed_topic_names(
                topics.map(|names| names.iter().map(|name| topic_name(name)).collect()),
            );
        self.client.send(SHARE_VERSION, &request)
    }

    fn fetch_request(
        &self,
        acks: &[(i64, i64, Vec<i8>)],
        max_records: i32,
        wait_ms: i32,
    ) -> ShareFetchRequest {
        let batches = acks
            .iter()
            .map(|(first, last, types)| {
                share_fetch_request::AcknowledgementBatch::default()
                    .with_first_offset(*first)
                    .with_last_offset(*last)
                    .with_acknowledge_types(types.clone())
            })
            .collect();
        ShareFetchRequest::default()
            .with_group_id(Some(GroupId(text(&self.group))))
            .with_member_id(Some(text(&self.id)))
            .with_share_session_epoch(self.session_epoch)
            .with_max_wait_ms(wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_max_records(max_records)
            .with_batch_size(max_records)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(self.topic_id)
                .with_partitions(vec![FetchPartition::default()
                    .with_partition_index(0)
                    .with_acknowledgement_batches(batches)])])
    }

    /// A ShareFetch in this member's session (opened by the first); the raw response.
    fn fetch_raw(
        &mut self,
        acks: &[(i64, i64, Vec<i8>)],
        max_records: i32,
        wait_ms: i32,
    ) -> ShareFetchResponse {
        let request = self.fetch_request(acks, max_records, wait_ms);
        let response = self.client.send(SHARE_VERSION, &request);
        if response.error_code == code::NONE {
            self.session_epoch += 1;
        }
        response
    }

    /// A ShareFetch that must succeed: the records acquired, and the acknowledgement's code.
    fn fetch(
        &mut self,
        acks: &[(i64, i64, Vec<i8>)],
        max_records: i32,
        wait_ms: i32,
    ) -> (Delivered, i16) {
        let response = self.fetch_raw(acks, max_records, wait_ms);
        assert_eq!(
            response.error_code,
            code::NONE,
            "share fetch: {:?}",
            response.error_message
        );
        assert_eq!(response.acquisition_lock_timeout_ms as u64, LOCK_MS);
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, code::NONE, "partition error");
        (
            acquired_records(partition),
            partition.acknowledge_error_code,
        )
    }

    fn acknowledge(&mut self, acks: &[(i64, i64, Vec<i8>)]) -> ShareAcknowledgeResponse {
        let batches = acks
            .iter()
            .map(|(first, last, types)| {
                share_acknowledge_request::AcknowledgementBatch::default()
                    .with_first_offset(*first)
                    .with_last_offset(*last)
                    .with_acknowledge_types(types.clone())
            })
            .collect();
        let request = ShareAcknowledgeRequest::default()
            .with_group_id(Some(GroupId(text(&self.group))))
            .with_member_id(Some(text(&self.id)))
            .with_share_session_epoch(self.session_epoch)
            .with_topics(vec![AcknowledgeTopic::default()
                .with_topic_id(self.topic_id)
                .with_partitions(vec![AcknowledgePartition::default()
                    .with_partition_index(0)
                    .with_acknowledgement_batches(batches)])]);
        let response = self.client.send(SHARE_VERSION, &request);
        if response.error_code == code::NONE {
            self.session_epoch += 1;
        }
        response
    }
}

/// The records a ShareFetch partition answer acquired, decoded from its batches.
fn acquired_records(
    partition: &kafka_protocol::messages::share_fetch_response::PartitionData,
) -> Delivered {
    let mut counts = BTreeMap::new();
    for range in &partition.acquired_records {
        for offset in range.first_offset..=range.last_offset {
            counts.insert(offset, range.delivery_count);
        }
    }
    let mut delivered = Delivered::new();
    let records: Bytes = partition.records.clone().unwrap_or_default();
    for item in batch::batches(&records, usize::MAX) {
        let (position, header) = item.expect("whole batches");
        let stored = &records[position..position + header.total_bytes()];
        for record in batch::decode_records(stored, 64 << 20).expect("records") {
            let offset = header.base_offset + i64::from(record.offset_delta);
            if let Some(count) = counts.get(&offset) {
                delivered.insert(offset, (*count, record.value.unwrap_or_default()));
            }
        }
    }
    assert_eq!(
        delivered.len(),
        counts.len(),
        "every acquired offset has its record in the batches"
    );
    delivered
}

fn accept_all(delivered: &Delivered) -> Vec<(i64, i64, Vec<i8>)> {
    delivered
        .keys()
        .map(|offset| (*offset, *offset, vec![ack::ACCEPT]))
        .collect()
}

#[test]
fn two_members_share_a_partition_and_every_record_is_delivered_once() {
    let broker = start("share-two-members", &[]);
    let mut admin = broker.client();
    let id = queue_topic(&mut admin, "share-two", 3);
    let mut a = Member::join(&broker, "workers", "share-two", id);
    let mut b = Member::join(&broker, "workers", "share-two", id);
    let mut seen: BTreeMap<i64, &'static str> = BTreeMap::new();
    let mut pending: [Delivered; 2] = [Delivered::new(), Delivered::new()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 30 {
        assert!(
            Instant::now() < deadline,
            "only {} of 30 records delivered",
            seen.len()
        );
        for (index, (member, name)) in [(&mut a, "a"), (&mut b, "b")].into_iter().enumerate() {
            let acks = accept_all(&pending[index]);
            let (delivered, ack_code) = member.fetch(&acks, 4, 200);
            assert_eq!(ack_code, code::NONE, "{name} accepts what it got");
            for (offset, (count, _)) in &delivered {
                assert_eq!(*count, 1, "first delivery of {offset}");
                let earlier = seen.insert(*offset, name);
                assert!(
                    earlier.is_none(),
                    "offset {offset} delivered to {earlier:?} and {name}"
                );
            }
            pending[index] = delivered;
        }
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..30).collect::<Vec<_>>()
    );
    let from_a = seen.values().filter(|name| **name == "a").count();
    assert!(
        from_a > 0 && from_a < 30,
        "both members got records: a had {from_a}"
    );
    // Accept the last ones; then nothing is left for anyone.
    let (rest_a, code_a) = a.fetch(&accept_all(&pending[0]), 10, 100);
    let (rest_b, code_b) = b.fetch(&accept_all(&pending[1]), 10, 100);
    assert_eq!((code_a, code_b), (code::NONE, code::NONE));
    assert!(
        rest_a.is_empty() && rest_b.is_empty(),
        "{rest_a:?} {rest_b:?}"
    );
    // Both are in the group as ShareGroupDescribe shows it.
    let request = ShareGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(text("workers")), GroupId(text("nobody"))]);
    let described = admin.send(SHARE_VERSION, &request);
    assert_eq!(described.groups[0].error_code, code::NONE);
    assert_eq!(described.groups[0].members.len(), 2);
    assert_eq!(described.groups[1].error_code, code::GROUP_ID_NOT_FOUND);
}

#[test]
fn an_expired_lock_redelivers_to_another_member() {
    let broker = start("share-expiry", &[]);
    let mut admin = broker.client();
    let id = queue_topic(&mut admin, "share-expiry", 1);
    let mut a = Member::join(&broker, "expiry", "share-expiry", id);
    let mut b = Member::join(&broker, "expiry", "share-expiry", id);
    let (held, _) = a.fetch(&[], 2, 100);
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    // While a's lock holds, b gets the other records, never 0 or 1.
    let (others, _) = b.fetch(&[], 100, 100);
    assert_eq!(
        others.keys().copied().collect::<Vec<_>>(),
        (2..10).collect::<Vec<_>>()
    );
    let (nothing, _) = b.fetch(&accept_all(&others), 100, 100);
    assert!(nothing.is_empty());
    // b waits (long poll) until the lock runs out, then gets 0 and 1 a second time.
    let waited = Instant::now();
    let (again, _) = b.fetch(&[], 100, 5_000);
    assert!(
        waited.elapsed() < Duration::from_millis(4_500),
        "woken by the expiry"
    );
    assert_eq!(again.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert!(again.values().all(|(count, _)| *count == 2), "{again:?}");
    // a's acknowledgement comes too late.
    let late = a.acknowledge(&accept_all(&held));
    assert_eq!(late.error_code, code::NONE);
    assert_eq!(
        late.responses[0].partitions[0].error_code,
        code::INVALID_RECORD_STATE
    );
    let (_, accepted) = b.fetch(&accept_all(&again), 100, 0);
    assert_eq!(accepted, code::NONE);
}

#[test]
fn rejected_records_stay_gone_and_released_ones_come_back() {
    let broker = start("share-reject", &[]);
    let mut admin = broker.client();
    let id = queue_topic(&mut admin, "share-reject", 1);
    let mut a = Member::join(&broker, "reject", "share-reject", id);
    let mut b = Member::join(&broker, "reject", "share-reject", id);
    let (first, _) = a.fetch(&[], 3, 100);
    assert_eq!(first.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    // Per-offset types: reject 0, release 1, accept 2.
    let verdicts = [(0, 2, vec![ack::REJECT, ack::RELEASE, ack::ACCEPT])];
    let answer = a.acknowledge(&verdicts);
    assert_eq!(answer.responses[0].partitions[0].error_code, code::NONE);
    let (to_b, _) = b.fetch(&[], 1, 100);
    assert_eq!(
        to_b.keys().copied().collect::<Vec<_>>(),
        vec![1],
        "the released one first"
    );
    assert_eq!(to_b[&1].0, 2, "its second delivery");
    let (rest, _) = b.fetch(&accept_all(&to_b), 100, 100);
    assert_eq!(
        rest.keys().copied().collect::<Vec<_>>(),
        (3..10).collect::<Vec<_>>()
    );
    let (_, accepted) = b.fetch(&accept_all(&rest), 100, 0);
    assert_eq!(accepted, code::NONE);
    let (none_a, _) = a.fetch(&[], 100, 300);
    assert!(
        none_a.is_empty(),
        "0 was rejected: never delivered again ({none_a:?})"
    );
}

#[test]
fn the_delivery_limit_archives_a_record_released_too_often() {
    let broker = start("share-limit", &[]);
    let mut admin = broker.client();
    let id = queue_topic(&mut admin, "share-limit", 1);
    let mut a = Member::join(&broker, "limit", "share-limit", id);
    let mut acks = Vec::new();
    for delivery in 1..=DELIVERY_LIMIT {
        let (got, code) = a.fetch(&acks, 1, 100);
        assert_eq!(code, code::NONE);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(got[&0].0, delivery);
        acks = vec![(0, 0, vec![ack::RELEASE])];
    }
    // Released at the limit: archived; the next record comes instead.
    let (next, code) = a.fetch(&acks, 1, 100);
    assert_eq!(code, code::NONE);
    assert_eq!(next.keys().copied().collect::<Vec<_>>(), vec![1]);
}

fn acknowledged_state_survives(name: &str, kill: bool) {
    let mut broker = start(name, &["--durability", "always"]);
    let mut admin = broker.client();
    let id = queue_topic(&mut admin, name, 2);
    let mut a = Member::join(&broker, "durable", name, id);
    let (first, _) = a.fetch(&[], 11, 100);
    assert_eq!(
        first.keys().copied().collect::<Vec<_>>(),
        (0..=10).collect::<Vec<_>>()
    );
    let verdicts = [(0, 9, vec![ack::ACCEPT]), (10, 10, vec![ack::RELEASE])];
    let answer = a.acknowledge(&verdicts);
    assert_eq!(answer.responses[0].partitions[0].error_code, code::NONE);
    // Held, never acknowledged: offered again after the restart.
    let (held, _) = a.fetch(&[], 2, 100);
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), vec![10, 11]);
    drop(a);
    if kill {
        broker.kill();
    } else {
        let stopped = broker.stop();
        assert!(stopped.status.success(), "clean stop: {:?}", stopped.status);
    }
    broker.restart();
    let mut b = Member::join(&broker, "durable", name, id);
    let mut delivered = Delivered::new();
    let mut acks = Vec::new();
    loop {
        let (got, code) = b.fetch(&acks, 100, 300);
        assert_eq!(code, code::NONE);
        if got.is_empty() {
            break;
        }
        acks = accept_all(&got);
        delivered.extend(got);
    }
    assert_eq!(
        delivered.keys().copied().collect::<Vec<_>>(),
        (10..20).collect::<Vec<_>>(),
        "accepted records are not delivered again"
    );
    // Offset 10's release was written with its delivery count (1), so this is its second
    // delivery. Acquisitions are not written (as in Kafka): the second one of 10, and the
    // only one of 11, died with the broker's locks.
    assert_eq!(
        delivered[&10].0, 2,
        "delivery counts of released records survive"
    );
    assert_eq!(delivered[&11].0, 1);
    assert_eq!(delivered[&12].0, 1);
}

#[test]
fn acknowledged_state_survives_sigterm() {
    acknowledged_state_survives("share-restart-term", false);
}

#[test]
fn acknowledged_state_survives_sigkill() {
    acknowledged_state_survives("share-restart-kill", true);
}

#[test]
fn bad_input_gets_kafka_error_codes_and_the_broker_keeps_serving() {
    let mut broker = start("share-bad-input", &[]);
    let mut admin = broker.client();
    let id = queue_topic(&mut admin, "share-bad", 1);
    let mut good = Member::join(&broker, "bad", "share-bad", id);
    let (held, _) = good.fetch(&[], 2, 100);
    assert_eq!(held.len(), 2);
    let still_served = |good: &mut Member, broker: &mut BrokerProcess| {
        broker.assert_running();
        let beat = good.heartbeat(good.epoch, None);
        assert_eq!(beat.error_code, code::NONE, "the good member's heartbeat");
    };

    // Acknowledging records it does not hold: INVALID_RECORD_STATE, nothing applied.
    let (_, code) = good.fetch(&[(0, 5, vec![ack::ACCEPT])], 0, 0);
    assert_eq!(code, code::INVALID_RECORD_STATE);
    still_served(&mut good, &mut broker);

    // An acknowledgement batch wider than any window, and an unknown type.
    let (_, code) = good.fetch(&[(0, 1_000_000, vec![ack::ACCEPT])], 0, 0);
    assert_eq!(code, code::INVALID_REQUEST);
    let (_, code) = good.fetch(&[(0, 0, vec![9])], 0, 0);
    assert_eq!(code, code::INVALID_REQUEST);
    let answer = good.acknowledge(&[(0, 1, vec![ack::ACCEPT, ack::ACCEPT, ack::ACCEPT])]);
    assert_eq!(
        answer.responses[0].partitions[0].error_code,
        code::INVALID_REQUEST
    );
    still_served(&mut good, &mut broker);

    // An unknown member: UNKNOWN_MEMBER_ID for fetch, acknowledge and heartbeat.
    let mut stranger = Member {
        client: broker.client(),
        group: "bad".into(),
        id: "nobody".into(),
        epoch: 1,
        session_epoch: 0,
        topic_id: id,
    };
    assert_eq!(
        stranger.fetch_raw(&[], 10, 0).error_code,
        code::UNKNOWN_MEMBER_ID
    );
    stranger.session_epoch = 1;
    assert_eq!(
        stranger
            .acknowledge(&[(0, 0, vec![ack::ACCEPT])])
            .error_code,
        code::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        stranger.heartbeat(1, None).error_code,
        code::UNKNOWN_MEMBER_ID
    );
    still_served(&mut good, &mut broker);

    // A stale member epoch is fenced; a session epoch out of order is refused.
    assert_eq!(
        good.heartbeat(good.epoch + 5, None).error_code,
        code::FENCED_MEMBER_EPOCH
    );
    let saved = good.session_epoch;
    good.session_epoch = saved + 7;
    assert_eq!(
        good.fetch_raw(&[], 10, 0).error_code,
        code::INVALID_SHARE_SESSION_EPOCH
    );
    good.session_epoch = saved;
    // A new session cannot carry acknowledgements.
    let reopen = good
        .fetch_request(&[(0, 0, vec![ack::ACCEPT])], 10, 0)
        .with_share_session_epoch(0);
    assert_eq!(
        good.client.send(SHARE_VERSION, &reopen).error_code,
        code::INVALID_REQUEST
    );
    // A topic id nobody has.
    let mut lost = good.fetch_request(&[], 10, 0);
    lost.topics[0].topic_id = Uuid::new_v4();
    let answer = good.client.send(SHARE_VERSION, &lost);
    assert_eq!(answer.error_code, code::NONE);
    good.session_epoch += 1;
    let unknown = answer
        .responses
        .iter()
        .find(|topic| topic.topic_id == lost.topics[0].topic_id)
        .expect("the unknown topic is answered");
    assert_eq!(unknown.partitions[0].error_code, code::UNKNOWN_TOPIC_ID);
    // An acknowledgement with no session at all.
    let mut no_session = Member::join(&broker, "bad", "share-bad", id);
    no_session.session_epoch = 4;
    assert_eq!(
        no_session
            .acknowledge(&[(0, 0, vec![ack::ACCEPT])])
            .error_code,
        code::SHARE_SESSION_NOT_FOUND
    );
    still_served(&mut good, &mut broker);

    // A body that does not decode: the connection closes, the broker stays up.
    let mut raw = broker.client();
    let mut frame = encode_request(1, SHARE_VERSION, &good.fetch_request(&[], 10, 0));
    frame.truncate(frame.len() - 6);
    let size = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    raw.write_raw(&frame).expect("write");
    raw.assert_closed_by_broker();
    still_served(&mut good, &mut broker);

    // And the good member still gets and acknowledges its records.
    let (_, code) = good.fetch(&accept_all(&held), 10, 0);
    assert_eq!(code, code::NONE);
}

/// A leaving member gives its records back at once, without waiting for its lock.
#[test]
fn a_member_that_leaves_releases_what_it_holds() {
    let broker = start("share-leave", &[]);
    let mut admin = broker.client();
    let id = queue_topic(&mut admin, "share-leave", 1);
    let mut a = Member::join(&broker, "leave", "share-leave", id);
    let mut b = Member::join(&broker, "leave", "share-leave", id);
    let (held, _) = a.fetch(&[], 10, 100);
    assert_eq!(held.len(), 10);
    let left = a.heartbeat(-1, None);
    assert_eq!((left.error_code, left.member_epoch), (code::NONE, -1));
    let started = Instant::now();
    let (got, _) = b.fetch(&[], 10, 100);
    assert!(
        started.elapsed() < Duration::from_millis(LOCK_MS),
        "not the lock expiry"
    );
    let offsets: BTreeSet<i64> = got.keys().copied().collect();
    assert_eq!(offsets, (0..10).collect());
}
