#!/usr/bin/env python3
"""confluent-kafka (librdkafka) consumer under a response size limit smaller than a partition's.

Writes RECORDS records of RECORD_BYTES to each of PARTITIONS partitions, then reads them all
back with one consumer assigned to every partition, whose fetch.max.bytes (the whole
response) is far below max.partition.fetch.bytes (one partition), and whose
receive.message.max.bytes is just above fetch.max.bytes. A broker that applies only the
per-partition limit sends responses larger than the client accepts: the client drops them,
reconnects and asks again, and never reads a record.

    confluent_fetch_limits.py BOOTSTRAP TOPIC PARTITIONS RECORDS RECORD_BYTES

Prints one JSON summary line; exits non-zero on any mismatch or if not everything is read
within the timeout.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 60
FETCH_MAX_BYTES = 1_000_000
PARTITION_FETCH_MAX_BYTES = 20_000_000
# librdkafka requires at least fetch.max.bytes + 512.
RECEIVE_MAX_BYTES = FETCH_MAX_BYTES + 512


def value(partition, index, size):
    head = b"%d:%d:" % (partition, index)
    return head + bytes([(partition * 31 + index) % 251]) * (size - len(head))


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    partitions, records, size = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    common = {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}

    admin = AdminClient(common)
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(TIMEOUT_S)

    errors = []
    producer = Producer({**common, "acks": "all", "linger.ms": 0,
                         "message.max.bytes": size + 4096})
    for partition in range(partitions):
        for index in range(records):
            producer.produce(topic, value=value(partition, index, size), partition=partition,
                             on_delivery=lambda error, _: error and errors.append(str(error)))
            producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)
    if remaining or errors:
        print(json.dumps({"ok": False, "stage": "produce", "remaining": remaining,
                          "errors": errors[:5]}))
        sys.exit(1)

    consumer = Consumer({
        **common,
        "group.id": "unused-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.max.bytes": FETCH_MAX_BYTES,
        "max.partition.fetch.bytes": PARTITION_FETCH_MAX_BYTES,
        "receive.message.max.bytes": RECEIVE_MAX_BYTES,
    })
    consumer.assign([TopicPartition(topic, partition, 0) for partition in range(partitions)])
    next_index = {partition: 0 for partition in range(partitions)}
    mismatches = []
    client_errors = []
    deadline = time.monotonic() + TIMEOUT_S
    while sum(next_index.values()) < partitions * records and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                client_errors.append(str(message.error()))
            continue
        partition = message.partition()
        index = next_index[partition]
        if message.offset() != index or message.value() != value(partition, index, size):
            mismatches.append("partition %d offset %d" % (partition, message.offset()))
        next_index[partition] = index + 1
    consumer.close()

    consumed = sum(next_index.values())
    ok = consumed == partitions * records and not mismatches
    print(json.dumps({"ok": ok, "consumed": consumed, "mismatches": mismatches[:5],
                      "client_errors": client_errors[:5]}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
