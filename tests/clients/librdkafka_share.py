#!/usr/bin/env python3
"""librdkafka's share consumer (KIP-932), called through ctypes on the librdkafka that the
confluent-kafka wheel bundles (2.15 or later has rd_kafka_share_consumer_new).

    librdkafka_share.py BOOTSTRAP TOPIC GROUP COUNT

1. A confluent-kafka producer writes COUNT records (value = "record-<index>") to TOPIC,
   spread over its partitions.
2. The group's config share.auto.offset.reset is set to earliest with the admin client's
   IncrementalAlterConfigs on a GROUP resource, so the group reads what was produced before
   it existed.
3. A share consumer (share.acknowledgement.mode=explicit) subscribes, polls until it has
   every record, and acknowledges each one (ACCEPT); commit_sync sends the last ones.
4. A second share consumer of the same group then polls for a while: records already
   accepted must not be delivered again.

Prints one JSON summary line; exits non-zero on any mismatch.
"""
import ctypes
import glob
import json
import os
import sys
import time

import confluent_kafka
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

TIMEOUT_S = 90
# How long the second consumer waits for a redelivery that must not come.
QUIET_S = 6
# The share consumer C API appeared in librdkafka 2.15.0.
VERSION_MIN = 0x020F0000
ACKNOWLEDGE_ACCEPT = 1


class Message(ctypes.Structure):
    """rd_kafka_message_t, the public fields of rdkafka.h."""

    _fields_ = [
        ("err", ctypes.c_int),
        ("rkt", ctypes.c_void_p),
        ("partition", ctypes.c_int32),
        ("payload", ctypes.c_void_p),
        ("len", ctypes.c_size_t),
        ("key", ctypes.c_void_p),
        ("key_len", ctypes.c_size_t),
        ("offset", ctypes.c_int64),
        ("_private", ctypes.c_void_p),
    ]


def load_librdkafka():
    """The librdkafka the confluent-kafka wheel ships (already loaded by it)."""
    package = os.path.dirname(confluent_kafka.__file__)
    candidates = sorted(glob.glob(os.path.join(package, "..", "confluent_kafka.libs", "librdkafka*.so*")))
    candidates += sorted(glob.glob(os.path.join(package, ".libs", "librdkafka*.so*")))
    if not candidates:
        raise SystemExit("no librdkafka shared library in the confluent-kafka wheel")
    lib = ctypes.CDLL(candidates[0])
    lib.rd_kafka_version.restype = ctypes.c_int
    version = lib.rd_kafka_version()
    if version < VERSION_MIN or not hasattr(lib, "rd_kafka_share_consumer_new"):
        raise SystemExit("librdkafka %#x has no share consumer: need 2.15 or later" % version)
    void_p = ctypes.c_void_p
    signatures = {
        "rd_kafka_conf_new": ([], void_p),
        "rd_kafka_conf_set": ([void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int),
        "rd_kafka_share_consumer_new": ([void_p, ctypes.c_char_p, ctypes.c_size_t], void_p),
        "rd_kafka_topic_partition_list_new": ([ctypes.c_int], void_p),
        "rd_kafka_topic_partition_list_add": ([void_p, ctypes.c_char_p, ctypes.c_int32], void_p),
        "rd_kafka_topic_partition_list_destroy": ([void_p], None),
        "rd_kafka_share_subscribe": ([void_p, void_p], ctypes.c_int),
        "rd_kafka_share_poll": ([void_p, ctypes.c_int, ctypes.POINTER(void_p)], void_p),
        "rd_kafka_messages_count": ([void_p], ctypes.c_size_t),
        "rd_kafka_messages_get": ([void_p, ctypes.c_size_t], ctypes.POINTER(Message)),
        "rd_kafka_messages_destroy": ([void_p], None),
        "rd_kafka_share_acknowledge_type": ([void_p, ctypes.POINTER(Message), ctypes.c_int], ctypes.c_int),
        "rd_kafka_share_commit_sync": ([void_p, ctypes.c_int, ctypes.POINTER(void_p)], void_p),
        "rd_kafka_share_consumer_close": ([void_p], void_p),
        "rd_kafka_share_destroy": ([void_p], None),
        "rd_kafka_error_string": ([void_p], ctypes.c_char_p),
        "rd_kafka_error_destroy": ([void_p], None),
        "rd_kafka_err2str": ([ctypes.c_int], ctypes.c_char_p),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = arguments
        function.restype = result
    return lib, version


def error_text(lib, error):
    """The error's text; frees it."""
    text = lib.rd_kafka_error_string(error).decode()
    lib.rd_kafka_error_destroy(error)
    return text


class ShareConsumer:
    def __init__(self, lib, bootstrap, group, topic):
        self.lib = lib
        conf = lib.rd_kafka_conf_new()
        settings = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "share.acknowledgement.mode": "explicit",
        }
        if os.environ.get("SHARE_DEBUG"):
            settings["debug"] = os.environ["SHARE_DEBUG"]
        errstr = ctypes.create_string_buffer(512)
        for name, value in settings.items():
            if lib.rd_kafka_conf_set(conf, name.encode(), value.encode(), errstr, len(errstr)) != 0:
                raise SystemExit("conf %s: %s" % (name, errstr.value.decode()))
        self.handle = lib.rd_kafka_share_consumer_new(conf, errstr, len(errstr))
        if not self.handle:
            raise SystemExit("rd_kafka_share_consumer_new: %s" % errstr.value.decode())
        topics = lib.rd_kafka_topic_partition_list_new(1)
        lib.rd_kafka_topic_partition_list_add(topics, topic.encode(), -1)
        err = lib.rd_kafka_share_subscribe(self.handle, topics)
        lib.rd_kafka_topic_partition_list_destroy(topics)
        if err:
            raise SystemExit("rd_kafka_share_subscribe: %s" % lib.rd_kafka_err2str(err).decode())
        self.errors = []

    def poll(self, timeout_ms):
        """One poll: [(partition, offset, value)], each acknowledged (ACCEPT)."""
        lib = self.lib
        batch = ctypes.c_void_p()
        error = lib.rd_kafka_share_poll(self.handle, timeout_ms, ctypes.byref(batch))
        if error:
            self.errors.append(error_text(lib, error))
            return []
        received = []
        for index in range(lib.rd_kafka_messages_count(batch)):
            message = lib.rd_kafka_messages_get(batch, index)
            fields = message.contents
            if fields.err:
                self.errors.append(lib.rd_kafka_err2str(fields.err).decode())
                continue
            value = ctypes.string_at(fields.payload, fields.len).decode()
            received.append((fields.partition, fields.offset, value))
            err = lib.rd_kafka_share_acknowledge_type(self.handle, message, ACKNOWLEDGE_ACCEPT)
            if err:
                self.errors.append("acknowledge: %s" % lib.rd_kafka_err2str(err).decode())
        lib.rd_kafka_messages_destroy(batch)
        return received

    def commit_sync(self):
        partitions = ctypes.c_void_p()
        error = self.lib.rd_kafka_share_commit_sync(self.handle, 10_000, ctypes.byref(partitions))
        if partitions:
            self.lib.rd_kafka_topic_partition_list_destroy(partitions)
        if error:
            self.errors.append("commit_sync: %s" % error_text(self.lib, error))

    def close(self):
        error = self.lib.rd_kafka_share_consumer_close(self.handle)
        if error:
            self.errors.append("close: %s" % error_text(self.lib, error))
        self.lib.rd_kafka_share_destroy(self.handle)


def produce(bootstrap, topic, count):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []

    def on_delivery(error, _message):
        if error is not None:
            errors.append(str(error))

    # Round-robin over the partitions by hand: keyless records go to one partition per
    # batch (librdkafka's sticky partitioner), and a small count fits in one batch.
    partitions = len(producer.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions)
    for index in range(count):
        producer.produce(
            topic,
            value=b"record-%d" % index,
            partition=index % max(partitions, 1),
            on_delivery=on_delivery,
        )
        producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)
    if errors or remaining:
        raise SystemExit("produce failed: %s, %d undelivered" % (errors[:3], remaining))


def set_offset_reset(bootstrap, group):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def main():
    bootstrap, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    lib, version = load_librdkafka()
    produce(bootstrap, topic, count)
    set_offset_reset(bootstrap, group)

    consumer = ShareConsumer(lib, bootstrap, group, topic)
    seen = {}
    deadline = time.monotonic() + TIMEOUT_S
    while len(seen) < count and time.monotonic() < deadline:
        for partition, offset, value in consumer.poll(1000):
            seen.setdefault(value, []).append((partition, offset))
    consumer.commit_sync()
    consumer.close()

    # Everything accepted is done for the group: a new member gets none of it again.
    second = ShareConsumer(lib, bootstrap, group, topic)
    again = []
    quiet_until = time.monotonic() + QUIET_S
    while time.monotonic() < quiet_until:
        again.extend(second.poll(500))
    second.close()

    expected = {"record-%d" % index for index in range(count)}
    summary = {
        "librdkafka": "%#x" % version,
        "produced": count,
        "received": sum(len(places) for places in seen.values()),
        "distinct": len(seen),
        "missing": len(expected - set(seen)),
        "unexpected": len(set(seen) - expected),
        "partitions": len({partition for places in seen.values() for partition, _ in places}),
        "redelivered_after_accept": len(again),
        "errors": (consumer.errors + second.errors)[:5],
    }
    summary["ok"] = (
        summary["distinct"] == count
        and summary["missing"] == 0
        and summary["unexpected"] == 0
        and summary["redelivered_after_accept"] == 0
    )
    print(json.dumps(summary))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
