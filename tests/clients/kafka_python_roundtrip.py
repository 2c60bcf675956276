#!/usr/bin/env python3
"""kafka-python round trip.

KafkaAdminClient creates a topic of PARTITIONS partitions; KafkaProducer (acks=all) sends
COUNT keyed records with headers, round-robin over the partitions; KafkaConsumer (no group)
is assigned every partition, seeks to offset 0 and reads everything back. Every record is
checked: key, value, headers, and offsets 0, 1, 2... per partition in production order.

    kafka_python_roundtrip.py BOOTSTRAP TOPIC COUNT PARTITIONS

Prints one JSON summary line; exits non-zero on any mismatch.
"""
import json
import random
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

TIMEOUT_S = 60


def main():
    bootstrap, topic, count, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    admin.close()

    rng = random.Random(7)
    sent = []
    for index in range(count):
        key = b"kp-%06d" % index
        value = rng.randbytes(rng.randrange(1, 1500))
        headers = [("index", str(index).encode()), ("lang", b"python")]
        sent.append((index % partitions, key, value, headers))

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_in_flight_requests_per_connection=1)
    futures = [producer.send(topic, key=key, value=value, headers=headers, partition=partition)
               for partition, key, value, headers in sent]
    producer.flush(TIMEOUT_S)
    errors = []
    delivered = {}  # (partition, offset) -> index
    for index, future in enumerate(futures):
        try:
            metadata = future.get(TIMEOUT_S)
            delivered[(metadata.partition, metadata.offset)] = index
        except Exception as error:  # noqa: BLE001 - any failure is a failed round trip
            errors.append(repr(error))
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="none")
    assigned = [TopicPartition(topic, partition) for partition in range(partitions)]
    consumer.assign(assigned)
    for tp in assigned:
        consumer.seek(tp, 0)
    received = {}
    consumed = 0
    deadline = time.monotonic() + TIMEOUT_S
    while consumed < count and time.monotonic() < deadline:
        for tp, messages in consumer.poll(timeout_ms=500, max_records=2000).items():
            for message in messages:
                consumed += 1
                received.setdefault(tp.partition, []).append(message)
    end_offsets = consumer.end_offsets(assigned)
    consumer.close()

    mismatches = []
    for partition in range(partitions):
        messages = received.get(partition, [])
        if [message.offset for message in messages] != list(range(len(messages))):
            mismatches.append("partition %d: offsets not 0..n-1 (gap or duplicate)" % partition)
        if end_offsets[TopicPartition(topic, partition)] != len(messages):
            mismatches.append("partition %d: end offset %d, read %d" % (
                partition, end_offsets[TopicPartition(topic, partition)], len(messages)))
        indexes = []
        for message in messages:
            index = delivered.get((partition, message.offset))
            if index is None:
                mismatches.append("partition %d offset %d: never delivered" % (partition, message.offset))
                continue
            indexes.append(index)
            _, key, value, headers = sent[index]
            if (message.key, message.value, list(message.headers)) != (key, value, headers):
                mismatches.append("partition %d offset %d: record %d differs" % (
                    partition, message.offset, index))
        if indexes != sorted(indexes):
            mismatches.append("partition %d: not in production order" % partition)
    ok = not errors and not mismatches and len(delivered) == count and consumed == count
    print(json.dumps({
        "client": "kafka-python", "produced": count, "delivered": len(delivered),
        "consumed": consumed, "partitions": {str(p): len(received.get(p, [])) for p in range(partitions)},
        "errors": errors[:5], "problems": mismatches[:5], "ok": ok,
    }))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
