#!/usr/bin/env python3
"""Produce through a leader failover with an idempotent, acks=all confluent-kafka producer.

Sends keyed records (key = partition-routing key, value = a global sequence number) to TOPIC
for SECONDS seconds, as fast as the producer takes them with a small linger, and appends one
line per acknowledged record to ACK_LOG: `partition offset sequence`. Errors reported by the
producer are counted, not fatal: while the leader is down, librdkafka retries and may give
up on some records, and those were never acknowledged.

    failover_produce.py BOOTSTRAP TOPIC SECONDS ACK_LOG

Prints one JSON summary line when done.
"""
import json
import sys
import time

from confluent_kafka import Producer


def main():
    bootstrap, topic, seconds, ack_log = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # Long enough to ride out a failover: the controller fences a dead leader within its
        # session timeout, and the producer keeps retrying meanwhile.
        "message.timeout.ms": 60000,
        "topic.metadata.refresh.interval.ms": 1000,
    })
    acked = []
    errors = []

    def on_delivery(error, message):
        if error is not None:
            errors.append(str(error))
        else:
            acked.append((message.partition(), message.offset(), int(message.value())))

    started = time.monotonic()
    sequence = 0
    while time.monotonic() - started < seconds:
        key = b"key-%d" % (sequence % 64)
        try:
            producer.produce(topic, key=key, value=b"%d" % sequence, on_delivery=on_delivery)
            sequence += 1
        except BufferError:
            producer.poll(0.05)
        producer.poll(0)
        if sequence % 200 == 0:
            time.sleep(0.01)  # a steady stream, not a flood: the test is about correctness
    remaining = producer.flush(90)
    with open(ack_log, "w") as out:
        for partition, offset, value in acked:
            out.write("%d %d %d\n" % (partition, offset, value))
    print(json.dumps({"sent": sequence, "acked": len(acked), "errors": len(errors),
                      "first_errors": errors[:3], "unflushed": remaining}))


if __name__ == "__main__":
    main()
