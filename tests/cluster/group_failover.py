#!/usr/bin/env python3
"""A consumer group's committed offsets across the loss of its coordinator.

    group_failover.py produce BOOTSTRAP TOPIC COUNT
        COUNT records (value = sequence number), acks=all, idempotent.
    group_failover.py consume BOOTSTRAP TOPIC GROUP COUNT
        Joins GROUP, consumes COUNT records, commits synchronously, leaves. Prints the
        committed offsets.
    group_failover.py resume BOOTSTRAP TOPIC GROUP TOTAL
        Joins GROUP again (after the coordinator's broker died), reads the committed offsets,
        consumes until TOTAL records were seen over both phases. Prints the committed offsets
        it found and the first offset it consumed per partition.

Each mode prints one JSON line.
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

TIMEOUT_S = 90


def common(bootstrap):
    return {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}


def produce(bootstrap, topic, count):
    producer = Producer({**common(bootstrap), "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    errors = []
    for sequence in range(count):
        producer.produce(topic, key=b"k%d" % (sequence % 32), value=b"%d" % sequence,
                         on_delivery=lambda error, _: error and errors.append(str(error)))
        producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)
    print(json.dumps({"produced": count, "errors": len(errors), "unflushed": remaining}))


def consumer(bootstrap, group):
    return Consumer({**common(bootstrap), "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "session.timeout.ms": 10000})


def committed(client, topic):
    partitions = client.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions
    found = client.committed([TopicPartition(topic, p) for p in sorted(partitions)], timeout=TIMEOUT_S)
    return {str(tp.partition): tp.offset for tp in found}


def consume(bootstrap, topic, group, count, total=None):
    client = consumer(bootstrap, group)
    client.subscribe([topic])
    seen, first, since_commit = 0, {}, 0
    values = []
    deadline = time.monotonic() + TIMEOUT_S
    target = count
    while seen < target and time.monotonic() < deadline:
        message = client.poll(0.5)
        if message is None or message.error():
            continue
        first.setdefault(str(message.partition()), message.offset())
        values.append(int(message.value()))
        seen += 1
        since_commit += 1
        if seen % 100 == 0 or seen == target:
            client.commit(asynchronous=False)
            since_commit = 0
    if since_commit:
        client.commit(asynchronous=False)
    offsets = committed(client, topic)
    client.close()
    return {"consumed": seen, "first_offsets": first, "committed": offsets,
            "distinct": len(set(values)), "values_min": min(values, default=-1)}


def main():
    mode = sys.argv[1]
    if mode == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "consume":
        print(json.dumps(consume(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
    elif mode == "resume":
        bootstrap, topic, group, rest = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
        probe = consumer(bootstrap, group)
        before = committed(probe, topic)
        probe.close()
        result = consume(bootstrap, topic, group, rest)
        result["committed_before"] = before
        print(json.dumps(result))
    else:
        sys.exit("unknown mode %s" % mode)


if __name__ == "__main__":
    main()
