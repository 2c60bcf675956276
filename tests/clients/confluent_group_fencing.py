#!/usr/bin/env python3
"""confluent-kafka (librdkafka) consumers against the group coordinator's fencing rules.

    confluent_group_fencing.py BOOTSTRAP TOPIC PARTITIONS

1. Static membership (KIP-345). Two consumers with `group.instance.id` "a" and "b" share
   the topic. "a" closes (a static member sends no LeaveGroup) and a new consumer with
   instance id "a" starts within the session timeout: it gets the same partitions, and "b"
   sees no rebalance (no revoke or assign callback) for longer than a heartbeat interval.
2. Fencing of a static member. A third consumer starts with instance id "a" while the
   second is alive. It takes over at once; the second one's commit is refused (the broker
   answers FENCED_INSTANCE_ID, which librdkafka makes a fatal error), and the offsets the
   newest "a" committed stay.
3. A member that left cannot commit. A dynamic consumer commits and leaves (LeaveGroup); a
   successor commits. Then the departed member's commit is replayed on the wire with its
   real member id at every generation it could have held, and a commit without a member
   is sent: all are refused, and the successor's offsets stay.

Prints one JSON summary line; exits non-zero on any mismatch.
"""
import json
import socket
import struct
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 60
# librdkafka's default heartbeat interval is 3 s: a rebalance would reach "b" within it.
QUIET_S = 7

FENCED_INSTANCE_ID = 82
UNKNOWN_MEMBER_ID = 25
ILLEGAL_GENERATION = 22


def fail(message, **details):
    print(json.dumps({"ok": False, "error": message, **details}))
    sys.exit(1)


def produce(common, topic, count):
    producer = Producer({**common, "acks": "all"})
    for index in range(count):
        producer.produce(topic, key=b"%06d" % index, value=b"v%d" % index)
    if producer.flush(TIMEOUT_S):
        fail("produce did not finish")


class Member:
    """One consumer and what its rebalance callbacks saw."""

    def __init__(self, common, group, topic, instance=None):
        config = {
            **common,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
        }
        if instance is not None:
            config["group.instance.id"] = instance
        self.consumer = Consumer(config)
        self.assigned = set()
        self.callbacks = 0
        self.consumer.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke)

    def on_assign(self, _consumer, partitions):
        self.callbacks += 1
        self.assigned = {tp.partition for tp in partitions}

    def on_revoke(self, _consumer, _partitions):
        self.callbacks += 1
        self.assigned = set()

    def poll(self):
        message = self.consumer.poll(0.1)
        if message is not None and message.error() is not None:
            return message.error()
        return None


def poll_until(members, done, what):
    deadline = time.time() + TIMEOUT_S
    while not done():
        if time.time() > deadline:
            fail("timed out waiting for " + what)
        for member in members:
            error = member.poll()
            if error is not None and error.fatal():
                fail("fatal error while waiting for " + what, detail=str(error))


def commit(member, topic, partitions, offset):
    offsets = [TopicPartition(topic, partition, offset) for partition in sorted(partitions)]
    member.consumer.commit(offsets=offsets, asynchronous=False)


def committed(member, topic, partitions):
    asked = [TopicPartition(topic, partition) for partition in sorted(partitions)]
    return {tp.partition: tp.offset for tp in member.consumer.committed(asked, timeout=TIMEOUT_S)}


def static_members(common, topic, partitions):
    group = "fencing-static"
    everything = set(range(partitions))
    a = Member(common, group, topic, "a")
    b = Member(common, group, topic, "b")
    poll_until([a, b], lambda: a.assigned and b.assigned and a.assigned | b.assigned == everything,
               "a and b to share the topic")
    # Let the group settle: no callback for a while.
    settled = False
    while not settled:
        before = (a.callbacks, b.callbacks)
        end = time.time() + QUIET_S
        while time.time() < end:
            a.poll()
            b.poll()
        settled = before == (a.callbacks, b.callbacks)
    a_partitions = set(a.assigned)
    b_callbacks = b.callbacks

    # Restart "a": close sends no LeaveGroup for a static member; the new one comes back.
    a.consumer.close()
    a2 = Member(common, group, topic, "a")
    poll_until([a2, b], lambda: bool(a2.assigned), "the restarted a to get its partitions")
    end = time.time() + QUIET_S
    while time.time() < end:
        a2.poll()
        b.poll()
    restart = {
        "same_partitions": a2.assigned == a_partitions,
        "b_rebalanced": b.callbacks != b_callbacks,
        "b_kept": b.assigned == everything - a_partitions,
    }
    commit(a2, topic, a2.assigned, 5)

    # A third "a" while a2 still runs: it takes over and a2 is fenced.
    a3 = Member(common, group, topic, "a")
    poll_until([a3, b], lambda: bool(a3.assigned), "the third a to take over")
    commit(a3, topic, a3.assigned, 9)
    fenced_commit = None
    try:
        commit(a2, topic, a2.assigned or a_partitions, 2)
    except KafkaException as error:
        fenced_commit = error.args[0].code()
    end = time.time() + QUIET_S
    while time.time() < end:
        a3.poll()
        b.poll()
    fence = {
        "a3_partitions": a3.assigned == a_partitions,
        "old_commit_error": fenced_commit,
        "old_commit_refused": fenced_commit in (FENCED_INSTANCE_ID, KafkaError._FATAL),
        "offsets_kept": set(committed(a3, topic, a_partitions).values()) == {9},
        "b_rebalanced": b.callbacks != b_callbacks,
    }
    for member in (a3, b):
        member.consumer.close()
    try:
        a2.consumer.close()
    except KafkaException:
        pass
    return {"restart": restart, "fence": fence}


def offset_commit_v2(address, group, generation, member_id, topic, partitions, offset):
    """Sends one OffsetCommit v2 as a consumer would, and returns the partitions' codes."""

    def string(text):
        data = text.encode()
        return struct.pack(">h", len(data)) + data

    body = string(group) + struct.pack(">i", generation) + string(member_id)
    body += struct.pack(">q", -1)  # retention: the broker's default
    body += struct.pack(">i", 1) + string(topic) + struct.pack(">i", len(partitions))
    for partition in partitions:
        body += struct.pack(">iq", partition, offset) + string("")
    header = struct.pack(">hhi", 8, 2, 7) + string("zombie")
    frame = header + body
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as connection:
        connection.sendall(struct.pack(">i", len(frame)) + frame)

        def read(count):
            data = b""
            while len(data) < count:
                chunk = connection.recv(count - len(data))
                if not chunk:
                    fail("the broker closed the connection")
                data += chunk
            return data

        (size,) = struct.unpack(">i", read(4))
        response = read(size)
    position = 4  # correlation id
    (topics,) = struct.unpack_from(">i", response, position)
    position += 4
    codes = []
    for _ in range(topics):
        (name_length,) = struct.unpack_from(">h", response, position)
        position += 2 + name_length
        (count,) = struct.unpack_from(">i", response, position)
        position += 4
        for _ in range(count):
            _partition, code = struct.unpack_from(">ih", response, position)
            position += 6
            codes.append(code)
    return codes


def departed_member(common, bootstrap, topic, partitions):
    group = "fencing-dynamic"
    everything = set(range(partitions))
    first = Member(common, group, topic)
    poll_until([first], lambda: first.assigned == everything, "the first member's assignment")
    commit(first, topic, everything, 3)
    departed = first.consumer.memberid()
    first.consumer.close()  # LeaveGroup
    successor = Member(common, group, topic)
    poll_until([successor], lambda: successor.assigned == everything, "the successor's assignment")
    commit(successor, topic, everything, 7)
    current = successor.consumer.memberid()
    replays = {}
    for generation in range(0, 6):
        codes = offset_commit_v2(bootstrap, group, generation, departed, topic, sorted(everything), 1)
        replays[str(generation)] = sorted(set(codes))
    simple = offset_commit_v2(bootstrap, group, -1, "", topic, sorted(everything), 1)
    wrong_generation = offset_commit_v2(bootstrap, group, 1000, current, topic, sorted(everything), 1)
    kept = committed(successor, topic, everything)
    successor.consumer.close()
    return {
        "departed_refused": all(codes == [UNKNOWN_MEMBER_ID] for codes in replays.values()),
        "replays": replays,
        "simple_refused": set(simple) == {UNKNOWN_MEMBER_ID},
        "wrong_generation_refused": set(wrong_generation) == {ILLEGAL_GENERATION},
        "offsets_kept": set(kept.values()) == {7},
    }


def main():
    bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    common = {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}
    admin = AdminClient(common)
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(TIMEOUT_S)
    produce(common, topic, 200)
    summary = {
        "static": static_members(common, topic, partitions),
        "departed": departed_member(common, bootstrap, topic, partitions),
    }
    static = summary["static"]
    departed = summary["departed"]
    summary["ok"] = (
        static["restart"]["same_partitions"]
        and not static["restart"]["b_rebalanced"]
        and static["restart"]["b_kept"]
        and static["fence"]["a3_partitions"]
        and static["fence"]["old_commit_refused"]
        and static["fence"]["offsets_kept"]
        and not static["fence"]["b_rebalanced"]
        and departed["departed_refused"]
        and departed["simple_refused"]
        and departed["wrong_generation_refused"]
        and departed["offsets_kept"]
    )
    print(json.dumps(summary))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
