"""confluent-kafka (PyPI, bundled librdkafka) against sluice: admin APIs, produce in every codec
with acks=all and explicit timestamps, consume with assign(), offsets_for_times, restart; the
round trip runs against one node and against a three-node cluster (a rolling restart)."""

import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicCollection,
                             TopicPartition)
from confluent_kafka.admin import (AdminClient, ConfigResource, ConfigSource, NewPartitions,
                                   NewTopic)

from conftest import (CODECS, Msg, check_round_trip, expected_messages,
                      first_offset_at_or_after)

N = 10_000
PARTITIONS = 3
BASE_TS = 1_700_000_000_000


def timestamp(codec, i):
    return BASE_TS + CODECS.index(codec) * 1_000_000 + i


def headers(codec, i):
    return (("codec", codec.encode()), ("seq", str(i).encode()))


def assign_only(bootstrap):
    """A consumer that assigns partitions itself and commits nothing: it needs no group
    coordinator (confluent-kafka insists on a group.id all the same)."""
    return {"bootstrap.servers": bootstrap, "group.id": "assign-only", "enable.auto.commit": False}


def produce(bootstrap, topic, codec, msgs):
    errors, acked = [], []

    def on_delivery(err, msg):
        (errors if err else acked).append(err or msg.offset())

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                  "compression.type": codec, "linger.ms": 5})
    for i, (k, v) in enumerate(msgs):
        p.produce(topic, key=k, value=v, headers=list(headers(codec, i)),
                  timestamp=timestamp(codec, i), on_delivery=on_delivery)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0, "messages still queued after flush"
    assert errors == [], errors[:5]
    assert len(acked) == len(msgs)


def consume_all(bootstrap, topic, partitions, expected):
    """Reads from the beginning of every partition until `expected` messages arrived."""
    c = Consumer(assign_only(bootstrap))
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out = []
    deadline = time.monotonic() + 120
    while len(out) < expected and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        assert m.error() is None, m.error()
        ts_type, ts = m.timestamp()
        out.append(Msg(m.partition(), m.offset(), m.key(), m.value(),
                       tuple((k, v) for k, v in (m.headers() or [])), ts))
    c.close()
    return out


def test_confluent_round_trip_in_every_codec_survives_restart(any_broker):
    broker = any_broker
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = "confluent-orders"
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(30)
    produced = {}
    for codec in CODECS:
        produced[codec] = expected_messages(codec, N)
        produce(broker.bootstrap, topic, codec, produced[codec])

    consumed = consume_all(broker.bootstrap, topic, PARTITIONS, N * len(CODECS))
    check_round_trip(consumed, produced, PARTITIONS,
                     headers_of=lambda codec, i: tuple((k, v) for k, v in headers(codec, i)),
                     timestamp_of=lambda codec, i: (timestamp(codec, i), timestamp(codec, i)))

    c = Consumer(assign_only(broker.bootstrap))
    for target in (BASE_TS, timestamp("snappy", 4321), timestamp("zstd", N - 1), timestamp("zstd", N)):
        asked = [TopicPartition(topic, p, target) for p in range(PARTITIONS)]
        for tp in c.offsets_for_times(asked, timeout=10):
            assert tp.error is None
            assert tp.offset == first_offset_at_or_after(consumed, tp.partition, target), (target, tp)
    c.close()

    broker.restart()
    again = consume_all(broker.bootstrap, topic, PARTITIONS, N * len(CODECS))
    assert sorted(again) == sorted(consumed)


def test_confluent_admin_topics_partitions_and_configs(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    fs = admin.create_topics([NewTopic("cfg", num_partitions=2, replication_factor=1,
                                       config={"segment.bytes": "1048576",
                                               "message.timestamp.type": "LogAppendTime"})])
    fs["cfg"].result(30)

    # Errors come back as Kafka errors, per topic.
    bad = admin.create_topics([NewTopic("cfg", 1, 1), NewTopic("rf3", 1, 3),
                               NewTopic("bad/name", 1, 1),
                               NewTopic("badcfg", 1, 1, config={"segment.bytes": "lots"})])
    for name, code in (("cfg", "TOPIC_ALREADY_EXISTS"), ("rf3", "INVALID_REPLICATION_FACTOR"),
                       ("bad/name", "TOPIC_EXCEPTION"), ("badcfg", "INVALID_CONFIG")):
        with pytest.raises(KafkaException) as e:
            bad[name].result(30)
        assert e.value.args[0].name() == code, (name, e.value.args[0])
    admin.create_topics([NewTopic("dry", 1, 1)], validate_only=True)["dry"].result(30)
    assert "dry" not in admin.list_topics(timeout=10).topics

    # DescribeConfigs marks overrides and defaults.
    res = ConfigResource(ConfigResource.Type.TOPIC, "cfg")
    configs = admin.describe_configs([res])[res].result(30)
    assert configs["segment.bytes"].value == "1048576"
    assert configs["segment.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["message.timestamp.type"].value == "LogAppendTime"
    assert configs["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["max.message.bytes"].value == "1048588"
    broker_res = ConfigResource(ConfigResource.Type.BROKER, "0")
    broker_configs = admin.describe_configs([broker_res])[broker_res].result(30)
    assert broker_configs["num.partitions"].value == "1"
    assert broker_configs["num.partitions"].is_default
    assert broker_configs["socket.request.max.bytes"].value == str(100 * 1024 * 1024)

    # LogAppendTime: the broker's clock, not the producer's, stamps the batch.
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    before = int(time.time() * 1000)
    p.produce("cfg", value=b"x", partition=0, timestamp=1)
    assert p.flush(30) == 0
    c = Consumer(assign_only(broker.bootstrap))
    c.assign([TopicPartition("cfg", 0, OFFSET_BEGINNING)])
    m = None
    deadline = time.monotonic() + 30
    while m is None and time.monotonic() < deadline:
        m = c.poll(1.0)
    assert m is not None and m.error() is None
    ts_type, ts = m.timestamp()
    assert ts >= before, (ts_type, ts)
    c.close()

    # CreatePartitions grows the topic; shrinking is refused.
    admin.create_partitions([NewPartitions("cfg", 5)])["cfg"].result(30)
    assert len(admin.list_topics("cfg", timeout=10).topics["cfg"].partitions) == 5
    with pytest.raises(KafkaException) as e:
        admin.create_partitions([NewPartitions("cfg", 3)])["cfg"].result(30)
    assert e.value.args[0].name() == "INVALID_PARTITIONS"

    # Topic ids and configs survive a restart; deletion removes the topic for good.
    topic_id = describe_topic(admin, "cfg").topic_id
    assert str(topic_id) not in ("", "AAAAAAAAAAAAAAAAAAAAAA")
    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = describe_topic(admin, "cfg")
    assert str(described.topic_id) == str(topic_id)
    assert len(described.partitions) == 5
    configs = admin.describe_configs([res])[res].result(30)
    assert configs["segment.bytes"].value == "1048576"
    admin.delete_topics(["cfg"])["cfg"].result(30)
    assert "cfg" not in admin.list_topics(timeout=10).topics
    assert not (broker.data_dir / "cfg-0").exists()
    with pytest.raises(KafkaException) as e:
        admin.delete_topics(["cfg"])["cfg"].result(30)
    assert e.value.args[0].name() == "UNKNOWN_TOPIC_OR_PART"


def describe_topic(admin, name):
    return admin.describe_topics(TopicCollection([name]))[name].result(30)


def test_confluent_acks_levels_and_oversized_messages(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("acks", 1, 1, config={"max.message.bytes": "2000"})])["acks"].result(30)
    outcomes = {}
    for acks in ("0", "1", "all"):
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": acks, "linger.ms": 0})
        results = []
        for i in range(100):
            p.produce("acks", value=f"acks{acks}-{i}".encode(),
                      on_delivery=lambda err, msg: results.append(err))
        assert p.flush(30) == 0
        outcomes[acks] = results
    assert all(e is None for r in outcomes.values() for e in r)

    # A batch over the topic's max.message.bytes is refused by the broker, and nothing of it
    # is stored.
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                  "compression.type": "none", "message.send.max.retries": 0})
    errors = []
    p.produce("acks", value=b"z" * 5000, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert errors[0] is not None and errors[0].name() == "MSG_SIZE_TOO_LARGE", errors

    consumed = consume_all(broker.bootstrap, "acks", 1, 300)
    assert sorted(m.value for m in consumed) == sorted(
        f"acks{a}-{i}".encode() for a in ("0", "1", "all") for i in range(100))
