"""Retention, DeleteRecords and dynamic topic configs with confluent-kafka.

Retention runs every 200 ms here (`log.retention.check.interval.ms`); tests wait for its
effect with a deadline, never for a fixed time.
"""

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewTopic)

from conftest import running_broker, sluice_cli

WAIT_S = 60
HOUR_MS = 3600 * 1000


@pytest.fixture
def broker(tmp_path):
    yield from running_broker(tmp_path, ["--set", "log.retention.check.interval.ms=200"])


def admin(broker):
    """One AdminClient per broker start (a client dropped before its futures resolve fails
    them)."""
    key = ("admin", broker.port, broker.proc.pid)
    if getattr(broker, "_admin_key", None) != key:
        broker._admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        broker._admin_key = key
    return broker._admin


def create(broker, name, configs):
    admin(broker).create_topics([NewTopic(name, 1, 1, config=configs)])[name].result(30)


def produce(broker, topic, n, size=1000, timestamp=None):
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0,
                  "batch.num.messages": 1})
    for i in range(n):
        kwargs = {"timestamp": timestamp} if timestamp is not None else {}
        p.produce(topic, value=b"%06d" % i + b"x" * (size - 6), partition=0, **kwargs)
        p.poll(0)
    assert p.flush(30) == 0


def watermarks(broker, topic):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wm"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30, cached=False)
    finally:
        c.close()


def wait_for(what, predicate, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def consume_from_zero(broker, topic, expected):
    """A consumer asking for offset 0 below the log start gets OFFSET_OUT_OF_RANGE and resets
    to the earliest offset; returns the offsets it read."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"reader-{topic}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < expected and time.monotonic() < deadline:
        for m in c.consume(500, timeout=0.5):
            if m.error() is None:
                got.append(m.offset())
    c.close()
    return got


def test_retention_by_size_deletes_old_segments_and_moves_the_log_start(broker):
    # 1 KB messages, one per batch: a segment holds 4 of them, and 8 segments' worth stay.
    create(broker, "by-size", {"segment.bytes": "4500", "retention.bytes": "36000"})
    produce(broker, "by-size", 200)
    # A pass may run while the records are still arriving (every 200 ms): wait for the one
    # after the last record, which leaves less than retention.bytes plus one segment.
    wait_for("retention to delete segments",
             lambda: (lambda w: w[0] > 0 and w[1] - w[0] <= 44)(watermarks(broker, "by-size")))
    low, high = watermarks(broker, "by-size")
    assert high == 200
    # What remains is at least retention.bytes (whole segments are deleted only while the
    # rest stays above it) and less than that plus one segment.
    assert 32 <= high - low <= 44, (low, high)
    assert consume_from_zero(broker, "by-size", high - low) == list(range(low, high))


def test_retention_by_time_keeps_only_recent_segments_and_rolls_an_expired_active_one(broker):
    create(broker, "by-time", {"segment.bytes": "4500", "retention.ms": str(HOUR_MS)})
    old = int(time.time() * 1000) - 3 * HOUR_MS
    produce(broker, "by-time", 20, timestamp=old)
    produce(broker, "by-time", 20)  # now: these stay
    wait_for("old segments to go", lambda: watermarks(broker, "by-time")[0] >= 20)
    low, high = watermarks(broker, "by-time")
    assert (low, high) == (20, 40), "exactly the old messages' segments went"

    create(broker, "all-old", {"retention.ms": str(HOUR_MS)})
    produce(broker, "all-old", 10, timestamp=old)
    # The only segment is the active one: it is rolled so that retention can delete it.
    wait_for("the expired active segment to go", lambda: watermarks(broker, "all-old") == (10, 10))
    produce(broker, "all-old", 3)
    assert consume_from_zero(broker, "all-old", 3) == [10, 11, 12]


def test_delete_records_moves_the_log_start_durably(broker):
    create(broker, "trim", {"segment.bytes": "4500"})
    produce(broker, "trim", 50)
    result = admin(broker).delete_records([TopicPartition("trim", 0, 30)])
    low = result[TopicPartition("trim", 0, 30)].result(30).low_watermark
    assert low == 30
    assert watermarks(broker, "trim") == (30, 50)
    with pytest.raises(KafkaException):
        admin(broker).delete_records([TopicPartition("trim", 0, 51)])[
            TopicPartition("trim", 0, 51)].result(30)
    broker.restart()
    assert watermarks(broker, "trim") == (30, 50), "the log start survives a restart"
    assert consume_from_zero(broker, "trim", 20) == list(range(30, 50))


def describe(broker, topic):
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return admin(broker).describe_configs([res])[res].result(30)


def test_topic_configs_alter_incrementally_validate_persist_and_apply_without_restart(broker):
    create(broker, "cfg", {"segment.bytes": "4500"})
    res = ConfigResource(ConfigResource.Type.TOPIC, "cfg")
    a = admin(broker)

    def incremental(*entries, validate_only=False):
        r = ConfigResource(ConfigResource.Type.TOPIC, "cfg", incremental_configs=list(entries))
        return a.incremental_alter_configs([r], validate_only=validate_only)[r].result(30)

    incremental(ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("cleanup.policy", "compact",
                            incremental_operation=AlterConfigOpType.APPEND))
    configs = describe(broker, "cfg")
    assert configs["retention.ms"].value == "86400000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["cleanup.policy"].value == "delete,compact"
    assert configs["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    synonyms = configs["retention.ms"].synonyms
    assert "log.retention.ms" in synonyms, synonyms

    incremental(ConfigEntry("cleanup.policy", "delete",
                            incremental_operation=AlterConfigOpType.SUBTRACT),
                ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE))
    configs = describe(broker, "cfg")
    assert configs["cleanup.policy"].value == "compact"
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    # Validation errors, and validate_only changes nothing.
    for bad in (ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("segment.bytes", "1", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.APPEND)):
        with pytest.raises(KafkaException) as e:
            incremental(bad)
        assert e.value.args[0].name() == "INVALID_CONFIG", (bad, e.value)
    incremental(ConfigEntry("retention.bytes", "1", incremental_operation=AlterConfigOpType.SET),
                validate_only=True)
    assert describe(broker, "cfg")["retention.bytes"].value == "-1"

    # AlterConfigs replaces the whole set: what it does not name reverts to the default.
    res.set_config("retention.bytes", "9000")
    res.set_config("cleanup.policy", "delete")
    a.alter_configs([res])[res].result(30)
    configs = describe(broker, "cfg")
    assert configs["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["retention.bytes"].value == "9000"

    # The change applies to the running log: retention now keeps about 9000 bytes.
    incremental(ConfigEntry("segment.bytes", "4500", incremental_operation=AlterConfigOpType.SET))
    produce(broker, "cfg", 100)
    wait_for("the altered retention.bytes to act", lambda: watermarks(broker, "cfg")[0] > 0)
    broker.restart()
    configs = describe(broker, "cfg")
    assert (configs["retention.bytes"].value, configs["segment.bytes"].value) == ("9000", "4500")


def sluice_topics(broker, *args, ok=True):
    return sluice_cli(broker, "topics", *args, ok=ok)


def test_sluice_topics_create_list_describe_alter_delete(broker):
    sluice_topics(broker, "create", "cli-t", "--partitions", "2",
                  "--config", "cleanup.policy=compact", "--config", "segment.bytes=4500")
    assert "TOPIC_ALREADY_EXISTS" in sluice_topics(broker, "create", "cli-t", ok=False)
    assert "INVALID_CONFIG" in sluice_topics(broker, "create", "bad",
                                             "--config", "retention.ms=soon", ok=False)
    rows = [l.split() for l in sluice_topics(broker, "list").splitlines()]
    assert ["cli-t", "2", "no"] in rows

    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(5):
        p.produce("cli-t", key=b"k%d" % i, value=b"v", partition=1)
    assert p.flush(30) == 0
    described = [l.split() for l in sluice_topics(broker, "describe", "cli-t").splitlines()]
    assert ["0", "0", "0", "0"] in described and ["1", "0", "0", "5"] in described, described
    assert ["cleanup.policy", "compact", "topic"] in described
    assert ["retention.ms", "604800000", "default"] in described

    sluice_topics(broker, "alter", "cli-t", "--set", "retention.ms=1000", "--delete",
                  "segment.bytes")
    configs = describe(broker, "cli-t")
    assert configs["retention.ms"].value == "1000"
    assert configs["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert "INVALID_CONFIG" in sluice_topics(broker, "alter", "cli-t", "--set", "nope=1", ok=False)

    sluice_topics(broker, "delete", "cli-t")
    assert "cli-t" not in sluice_topics(broker, "list")
    assert "UNKNOWN_TOPIC_OR_PARTITION" in sluice_topics(broker, "describe", "cli-t", ok=False)
