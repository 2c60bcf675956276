#!/usr/bin/env python3
"""kafka-python consumer group: join, consume, commit, and a successor that resumes.

    kafka_python_groups.py BOOTSTRAP TOPIC COUNT PARTITIONS

A producer writes COUNT records (value = index) to a new topic. A first consumer in group
"kafka-python-group" subscribes, consumes about half of them, commits and closes (leaving the
group). A second consumer in the same group subscribes and consumes the rest. Checks: the
two together saw every record exactly once (the second started at the committed offsets),
and the group's committed offsets end at each partition's end.

Prints one JSON summary line; exits non-zero on any mismatch.
"""
import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

TIMEOUT_S = 90
GROUP = "kafka-python-group"


def consumer(bootstrap, topic):
    member = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=GROUP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
    )
    member.subscribe([topic])
    return member


def consume(member, want, seen):
    """Polls until `want` more records arrived (or the deadline); counts them into `seen`."""
    got = 0
    deadline = time.monotonic() + TIMEOUT_S
    while got < want and time.monotonic() < deadline:
        batches = member.poll(timeout_ms=500, max_records=min(100, want - got))
        for records in batches.values():
            for record in records:
                index = int(record.value)
                seen[index] = seen.get(index, 0) + 1
                got += 1
    return got


def main():
    bootstrap, topic, count, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    sends = [producer.send(topic, value=str(index).encode()) for index in range(count)]
    producer.flush(TIMEOUT_S)
    for send in sends:
        send.get(timeout=TIMEOUT_S)  # raises if the record was not acknowledged
    producer.close()

    seen = {}
    first = consumer(bootstrap, topic)
    first_got = consume(first, count // 2, seen)
    first.commit()
    first.close()  # LeaveGroup

    second = consumer(bootstrap, topic)
    second_got = consume(second, count - first_got, seen)
    second.commit()
    tps = [TopicPartition(topic, partition) for partition in range(partitions)]
    ends = second.end_offsets(tps)
    committed = {tp.partition: second.committed(tp) for tp in tps}
    second.close()

    duplicates = sum(times - 1 for times in seen.values())
    committed_at_end = all(committed[tp.partition] == ends[tp] for tp in tps)
    ok = len(seen) == count and duplicates == 0 and committed_at_end and first_got > 0
    print(json.dumps({
        "ok": ok,
        "records": count,
        "first_consumer": first_got,
        "second_consumer": second_got,
        "distinct": len(seen),
        "duplicates": duplicates,
        "committed_at_end": committed_at_end,
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
