#!/usr/bin/env python3
"""confluent-kafka (librdkafka) round trip.

An idempotent producer with acks=all writes COUNT keyed records with headers to a topic of
PARTITIONS partitions; a consumer assigned to each partition from offset 0 (no consumer
group: the broker has none) reads them back and checks every record: key, value, headers,
offsets 0, 1, 2... per partition in production order, no gap, no duplicate.

    confluent_roundtrip.py BOOTSTRAP TOPIC COUNT PARTITIONS

Prints one JSON summary line; exits non-zero on any mismatch.
"""
import json
import random
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 60


def record(index, rng):
    key = b"key-%06d" % index
    value = rng.randbytes(rng.randrange(0, 2048))  # any bytes, empty included
    headers = [("index", str(index).encode()), ("blob", rng.randbytes(8)), ("empty", b"")]
    return key, value, headers


def main():
    bootstrap, topic, count, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    common = {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}

    admin = AdminClient(common)
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(TIMEOUT_S)

    rng = random.Random(20261126)
    sent = [record(index, rng) for index in range(count)]
    delivered = {}  # (partition, offset) -> index
    errors = []

    def on_delivery(error, message):
        if error is not None:
            errors.append(str(error))
        else:
            index = int(message.key()[4:])
            delivered[(message.partition(), message.offset())] = index

    producer = Producer({**common, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    for index, (key, value, headers) in enumerate(sent):
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)

    # With idempotence, each partition's offsets are exactly 0..n-1 and follow production
    # order (the default partitioner is by key).
    per_partition = {}
    for (partition, offset), index in sorted(delivered.items()):
        per_partition.setdefault(partition, []).append((offset, index))
    produce_problems = []
    for partition, entries in per_partition.items():
        if [offset for offset, _ in entries] != list(range(len(entries))):
            produce_problems.append("partition %d: offsets not 0..n-1" % partition)
        if [index for _, index in entries] != sorted(index for _, index in entries):
            produce_problems.append("partition %d: not in production order" % partition)

    consumer = Consumer({
        **common,
        # librdkafka insists on a group id; assign() without commits never sends it.
        "group.id": "unused-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
    })
    consumer.assign([TopicPartition(topic, partition, 0) for partition in range(partitions)])
    received = {}  # partition -> [(offset, key, value, headers)]
    at_end = set()
    deadline = time.monotonic() + TIMEOUT_S
    consumed = 0
    while consumed < count or len(at_end) < partitions:
        if time.monotonic() > deadline:
            break
        for message in consumer.consume(num_messages=1000, timeout=1.0):
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                    continue
                errors.append(str(message.error()))
                continue
            at_end.discard(message.partition())
            consumed += 1
            received.setdefault(message.partition(), []).append(
                (message.offset(), message.key(), message.value(), message.headers() or []))
    watermarks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), TIMEOUT_S)
                  for p in range(partitions)}
    consumer.close()

    mismatches = []
    for partition in range(partitions):
        records = received.get(partition, [])
        offsets = [offset for offset, *_ in records]
        if offsets != list(range(len(records))):
            mismatches.append("partition %d: offsets not 0..n-1 (gap or duplicate)" % partition)
        if watermarks[partition] != (0, len(records)):
            mismatches.append("partition %d: watermarks %s" % (partition, watermarks[partition]))
        for offset, key, value, headers in records:
            index = delivered.get((partition, offset))
            if index is None:
                mismatches.append("partition %d offset %d: never delivered" % (partition, offset))
                continue
            want_key, want_value, want_headers = sent[index]
            if (key, value, [(name, bytes(data)) for name, data in headers]) != (
                    want_key, want_value, want_headers):
                mismatches.append("partition %d offset %d: record %d differs" % (partition, offset, index))
    ok = (not errors and not remaining and not produce_problems and not mismatches
          and len(delivered) == count and consumed == count)
    print(json.dumps({
        "client": "confluent-kafka", "librdkafka": __import__("confluent_kafka").libversion()[0],
        "produced": count, "delivered": len(delivered), "consumed": consumed,
        "partitions": {str(p): len(received.get(p, [])) for p in range(partitions)},
        "errors": errors[:5], "problems": (produce_problems + mismatches)[:5], "ok": ok,
    }))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
