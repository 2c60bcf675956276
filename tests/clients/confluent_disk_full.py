#!/usr/bin/env python3
"""confluent-kafka (librdkafka) against a broker whose disk fills up.

1. Creates TOPIC with PARTITIONS partitions and produces rounds of records (acks=all, no
   retries, so the broker's error reaches the delivery report as it is) until a round has
   deliveries refused with KAFKA_STORAGE_ERROR; one more round must be refused too.
2. A consumer (assign, no group) reads every partition from offset 0 to its end: every
   acknowledged record must be there at its offset, byte for byte.
3. Deletes FILLER (a file the test wrote on the same file system) to free space, then an
   idempotent producer (acks=all, retries on) produces RECOVERY_RECORDS more: all must be
   delivered, within the message timeout.
4. Reads everything again: every acknowledged record, before and after, at its offset.

    confluent_disk_full.py BOOTSTRAP TOPIC PARTITIONS FILLER

Prints one JSON summary line; exits non-zero if any check fails.
"""
import json
import os
import random
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 60
ROUND_RECORDS = 1000
ROUNDS_MAX = 60
RECOVERY_RECORDS = 500


def main():
    bootstrap, topic, partitions, filler = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    common = {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}
    admin = AdminClient(common)
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(TIMEOUT_S)

    rng = random.Random(20261127)
    acknowledged = {}  # (partition, offset) -> value
    refusals = {}  # error name -> count
    other_errors = []

    def on_delivery(error, message):
        if error is None:
            acknowledged[(message.partition(), message.offset())] = message.value()
        elif error.code() == KafkaError.KAFKA_STORAGE_ERROR:
            refusals[error.name()] = refusals.get(error.name(), 0) + 1
        else:
            other_errors.append(str(error))

    # Phase 1: fill the disk.
    filler_producer = Producer({**common, "acks": "all", "enable.idempotence": False,
                                "retries": 0, "linger.ms": 5, "message.timeout.ms": 30000})
    full_rounds = 0
    rounds = 0
    while full_rounds < 2 and rounds < ROUNDS_MAX:
        rounds += 1
        refused_before = sum(refusals.values())
        for index in range(ROUND_RECORDS):
            value = rng.randbytes(rng.randrange(1024, 8192))
            while True:
                try:
                    filler_producer.produce(topic, value=value, key=b"%d-%d" % (rounds, index),
                                            on_delivery=on_delivery)
                    break
                except BufferError:
                    filler_producer.poll(0.1)
            filler_producer.poll(0)
        filler_producer.flush(TIMEOUT_S)
        if sum(refusals.values()) > refused_before:
            full_rounds += 1
    filled = dict(acknowledged)

    # Phase 2: the broker still serves every acknowledged record.
    missing_while_full = check_readable(common, topic, partitions, filled)

    # Phase 3: space returns; produce works again.
    os.remove(filler)
    os.sync()
    recovery_acks = {}
    recovery_errors = []

    def on_recovery_delivery(error, message):
        if error is None:
            recovery_acks[(message.partition(), message.offset())] = message.value()
        else:
            recovery_errors.append(str(error))

    started = time.monotonic()
    producer = Producer({**common, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                         "message.timeout.ms": TIMEOUT_S * 1000})
    for index in range(RECOVERY_RECORDS):
        producer.produce(topic, value=b"after-%06d" % index + rng.randbytes(100),
                         key=b"after-%d" % index, on_delivery=on_recovery_delivery)
        producer.poll(0)
    remaining = producer.flush(TIMEOUT_S * 2)
    recovery_seconds = time.monotonic() - started
    acknowledged.update(recovery_acks)

    # Phase 4: everything acknowledged, before and after, is there.
    missing_after = check_readable(common, topic, partitions, acknowledged)

    ok = (full_rounds >= 2 and not other_errors and not missing_while_full and not missing_after
          and not recovery_errors and remaining == 0 and len(recovery_acks) == RECOVERY_RECORDS)
    print(json.dumps({
        "client": "confluent-kafka", "rounds": rounds, "full_rounds": full_rounds,
        "acknowledged_while_filling": len(filled), "refusals": refusals,
        "other_errors": other_errors[:5], "missing_while_full": missing_while_full[:5],
        "recovered": len(recovery_acks), "recovery_errors": recovery_errors[:5],
        "recovery_seconds": round(recovery_seconds, 2), "missing_after": missing_after[:5],
        "ok": ok,
    }))
    sys.exit(0 if ok else 1)


def check_readable(common, topic, partitions, acknowledged):
    """Reads every partition from 0 to its end; returns what is missing or different."""
    consumer = Consumer({**common, "group.id": "unused-assign-only", "enable.auto.commit": False,
                         "enable.auto.offset.store": False, "enable.partition.eof": True})
    ends = {}
    for partition in range(partitions):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), TIMEOUT_S)
        ends[partition] = high
    consumer.assign([TopicPartition(topic, partition, 0) for partition in range(partitions)])
    stored = {}
    at_end = set(partition for partition, end in ends.items() if end == 0)
    deadline = time.monotonic() + TIMEOUT_S
    while len(at_end) < partitions and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=1000, timeout=1.0):
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    if message.offset() >= ends[message.partition()]:
                        at_end.add(message.partition())
                continue
            stored[(message.partition(), message.offset())] = message.value()
    consumer.close()
    problems = []
    for place, value in sorted(acknowledged.items()):
        found = stored.get(place)
        if found is None:
            problems.append("partition %d offset %d: acknowledged, not read" % place)
        elif found != value:
            problems.append("partition %d offset %d: differs from what was acknowledged" % place)
    return problems


if __name__ == "__main__":
    main()
