#!/usr/bin/env python3
"""confluent-kafka (librdkafka) consumer groups: point-to-point and publish/subscribe.

    confluent_groups.py BOOTSTRAP TOPIC COUNT PARTITIONS STRATEGY

1. An idempotent producer writes COUNT records (key = index) to a topic of PARTITIONS
   partitions.
2. Point-to-point: three consumers in one group (assignment strategy STRATEGY) share the
   topic. Each processes what it gets and commits synchronously after every poll. One of
   them commits and leaves (close(): LeaveGroup) once a quarter of the records are done;
   the other two take over its partitions. Checks: every record is processed; no record
   is processed at an offset below one the group had already committed for its partition
   (it may be processed twice only if its offset was not yet committed); records were
   processed after the leave, including from partitions the leaver had; the group's
   committed offsets end at each partition's end.
3. Publish/subscribe: two more groups, one consumer each, read the same topic; each gets
   every record exactly once.

Prints one JSON summary line; exits non-zero on any mismatch.
"""
import json
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 90
# Slows processing down so the group is still busy when a member leaves.
PROCESS_DELAY_S = 0.001


def produce(common, topic, count):
    producer = Producer({**common, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    errors = []
    partition_ends = {}

    def on_delivery(error, message):
        if error is not None:
            errors.append(str(error))
        else:
            end = partition_ends.get(message.partition(), 0)
            partition_ends[message.partition()] = max(end, message.offset() + 1)

    for index in range(count):
        producer.produce(topic, key=b"%08d" % index, value=b"value-%d" % index, on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)
    if errors or remaining:
        raise SystemExit("produce failed: %s, %d undelivered" % (errors[:3], remaining))
    return partition_ends


class Ledger:
    """What the point-to-point group processed and committed, shared by its consumers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.processed = {}  # index -> times processed
        self.committed = {}  # partition -> highest offset the group committed
        self.below_commit = []  # (partition, offset, committed) processed below a commit
        self.events = []  # (time, consumer, partition, offset)
        self.left_at = None
        self.leaver_partitions = set()

    def process(self, name, message):
        partition, offset = message.partition(), message.offset()
        with self.lock:
            committed = self.committed.get(partition, -1)
            if offset < committed:
                self.below_commit.append((partition, offset, committed))
            index = int(message.key())
            self.processed[index] = self.processed.get(index, 0) + 1
            self.events.append((time.monotonic(), name, partition, offset))

    def record_commit(self, offsets):
        with self.lock:
            for tp in offsets:
                if tp.error is None and tp.offset >= 0:
                    self.committed[tp.partition] = max(self.committed.get(tp.partition, -1), tp.offset)

    def done(self, count):
        with self.lock:
            return len(self.processed) >= count


def consumer_config(common, group, strategy):
    return {
        **common,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": strategy,
    }


def point_to_point_member(name, config, topic, count, ledger, leaves, failures):
    consumer = Consumer(config)
    consumer.subscribe([topic])
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ledger.done(count) and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=200, timeout=0.2)
            batch = []
            for message in messages:
                if message.error():
                    failures.append("%s: %s" % (name, message.error()))
                    continue
                ledger.process(name, message)
                batch.append(message)
                time.sleep(PROCESS_DELAY_S)
            if batch:
                try:
                    ledger.record_commit(consumer.commit(asynchronous=False))
                except KafkaException as error:
                    # A commit refused during a rebalance: those records may be redelivered,
                    # which the ledger allows (their offsets were not committed).
                    print("%s: commit refused: %s" % (name, error), file=sys.stderr)
            if leaves and len(ledger.processed) >= count // 4:
                with ledger.lock:
                    ledger.leaver_partitions = {tp.partition for tp in consumer.assignment()}
                break
        if not leaves:
            final_commit(name, consumer, ledger)
    finally:
        consumer.close()
        if leaves:
            with ledger.lock:
                ledger.left_at = time.monotonic()


def final_commit(name, consumer, ledger):
    """Commits what this member processed last, retrying past a rebalance."""
    for _ in range(5):
        try:
            ledger.record_commit(consumer.commit(asynchronous=False))
            return
        except KafkaException as error:
            if "NO_OFFSET" in str(error):
                return  # nothing new to commit
            print("%s: final commit refused: %s" % (name, error), file=sys.stderr)
            consumer.consume(num_messages=1, timeout=0.5)


def point_to_point(common, topic, count, strategy, partition_ends):
    ledger = Ledger()
    failures = []
    threads = [
        threading.Thread(
            target=point_to_point_member,
            args=(name, consumer_config(common, "point-to-point", strategy), topic, count, ledger, name == "c3", failures),
        )
        for name in ("c1", "c2", "c3")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S + 30)

    # The group's committed offsets, read back by a fresh member of the group.
    checker = Consumer(consumer_config(common, "point-to-point", strategy))
    partitions = [TopicPartition(topic, partition) for partition in sorted(partition_ends)]
    committed = {tp.partition: tp.offset for tp in checker.committed(partitions, timeout=30)}
    checker.close()

    missing = [index for index in range(count) if index not in ledger.processed]
    twice = sum(1 for times in ledger.processed.values() if times > 1)
    after_leave = [event for event in ledger.events if ledger.left_at and event[0] > ledger.left_at]
    taken_over = {event[2] for event in after_leave if event[1] != "c3"} & ledger.leaver_partitions
    by_consumer = {}
    for _, name, _, _ in ledger.events:
        by_consumer[name] = by_consumer.get(name, 0) + 1
    return {
        "processed": len(ledger.processed),
        "missing": len(missing),
        "processed_twice": twice,
        "below_commit": len(ledger.below_commit),
        "below_commit_examples": ledger.below_commit[:5],
        "processed_after_leave": len(after_leave),
        "leaver_partitions": sorted(ledger.leaver_partitions),
        "leaver_partitions_taken_over": sorted(taken_over),
        "by_consumer": by_consumer,
        "committed_at_end": committed == partition_ends,
        "committed": committed,
        "failures": failures[:5],
    }


def subscriber(common, topic, count, group):
    consumer = Consumer({**consumer_config(common, group, "roundrobin"), "enable.auto.commit": True})
    consumer.subscribe([topic])
    seen = {}
    deadline = time.monotonic() + TIMEOUT_S
    while len(seen) < count and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=1000, timeout=0.5):
            if message.error():
                continue
            index = int(message.key())
            seen[index] = seen.get(index, 0) + 1
    consumer.close()
    return {"group": group, "distinct": len(seen), "duplicates": sum(times - 1 for times in seen.values())}


def main():
    bootstrap, topic, count, partitions, strategy = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    common = {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}
    admin = AdminClient(common)
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(TIMEOUT_S)
    partition_ends = produce(common, topic, count)

    p2p = point_to_point(common, topic, count, strategy, partition_ends)
    subscribers = [subscriber(common, topic, count, group) for group in ("subscriber-a", "subscriber-b")]

    ok = (
        p2p["missing"] == 0
        and p2p["below_commit"] == 0
        and p2p["processed_after_leave"] > 0
        and len(p2p["leaver_partitions_taken_over"]) > 0
        and p2p["committed_at_end"]
        and not p2p["failures"]
        and all(sub["distinct"] == count and sub["duplicates"] == 0 for sub in subscribers)
    )
    print(json.dumps({"ok": ok, "records": count, "point_to_point": p2p, "subscribers": subscribers}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
