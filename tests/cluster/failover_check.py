#!/usr/bin/env python3
"""Check that every acknowledged record survived a failover, in order, once.

Reads ACK_LOG (`partition offset sequence` lines from failover_produce.py), then consumes
every partition of TOPIC from offset 0 to its high watermark (by assignment, no group) and
checks, per partition: each acknowledged record is at its offset with its value; offsets
have no gaps; no sequence number appears twice anywhere (the idempotent producer must not
duplicate through retries); sequence numbers rise within a partition (production order).

    failover_check.py BOOTSTRAP TOPIC ACK_LOG

Prints one JSON summary line; exits non-zero on any problem.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

TIMEOUT_S = 60


def main():
    bootstrap, topic, ack_log = sys.argv[1], sys.argv[2], sys.argv[3]
    acked = {}
    with open(ack_log) as lines:
        for line in lines:
            partition, offset, value = map(int, line.split())
            acked[(partition, offset)] = value
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": "unused-assign-only",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    metadata = consumer.list_topics(topic, timeout=TIMEOUT_S)
    partitions = sorted(metadata.topics[topic].partitions)
    ends = {}
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
        ends[partition] = high
    consumer.assign([TopicPartition(topic, partition, 0) for partition in partitions])
    found = {partition: [] for partition in partitions}
    done = {partition for partition in partitions if ends[partition] == 0}
    deadline = time.monotonic() + TIMEOUT_S
    while len(done) < len(partitions) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                if message.offset() >= ends[message.partition()]:
                    done.add(message.partition())
                continue
            raise SystemExit("consume error: %s" % message.error())
        found[message.partition()].append((message.offset(), int(message.value())))
        if message.offset() + 1 >= ends[message.partition()]:
            done.add(message.partition())
    consumer.close()

    problems = []
    seen = {}
    for partition, records in found.items():
        offsets = [offset for offset, _ in records]
        if offsets != list(range(len(offsets))):
            problems.append("partition %d: offsets have gaps or repeats" % partition)
        values = [value for _, value in records]
        if values != sorted(values):
            problems.append("partition %d: sequence numbers out of order" % partition)
        for offset, value in records:
            if value in seen:
                problems.append("sequence %d twice: %s and %s" % (value, seen[value], (partition, offset)))
            seen[value] = (partition, offset)
    stored = {(partition, offset): value for partition, records in found.items() for offset, value in records}
    lost = [key for key, value in acked.items() if stored.get(key) != value]
    if lost:
        problems.append("%d acknowledged records missing or changed, first %s" % (len(lost), sorted(lost)[:5]))
    print(json.dumps({"acked": len(acked), "consumed": len(stored), "ends": ends,
                      "lost": len(lost), "problems": problems[:10]}))
    if problems or len(done) < len(partitions):
        sys.exit(1)


if __name__ == "__main__":
    main()
