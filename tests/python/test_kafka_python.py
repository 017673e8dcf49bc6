"""kafka-python (PyPI, a pure-Python protocol implementation) against sluice: admin, produce in
every codec with acks=all and explicit timestamps, consume with assign(), offsets_for_times,
restart; the round trip runs against one node and against a three-node cluster (a rolling
restart; its idempotent producers get ids from different brokers, which must not collide)."""

import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic

from conftest import (CODECS, Msg, check_round_trip, expected_messages,
                      first_offset_at_or_after)

N = 10_000
PARTITIONS = 3
BASE_TS = 1_600_000_000_000


def timestamp(codec, i):
    return BASE_TS + CODECS.index(codec) * 1_000_000 + i


def headers(codec, i):
    return (("codec", codec.encode()), ("seq", str(i).encode()))


def consume_all(bootstrap, topic, expected):
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    out = []
    deadline = time.monotonic() + 120
    while len(out) < expected and time.monotonic() < deadline:
        for records in c.poll(timeout_ms=1000).values():
            for r in records:
                out.append(Msg(r.partition, r.offset, r.key, r.value,
                               tuple((k, v) for k, v in r.headers), r.timestamp))
    c.close()
    return out


def test_kafka_python_round_trip_in_every_codec_survives_restart(any_broker):
    broker = any_broker
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    topic = "kafka-python-orders"
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    produced = {}
    for codec in CODECS:
        produced[codec] = expected_messages(codec, N)
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5,
                          compression_type=None if codec == "none" else codec)
        futures = [p.send(topic, key=k, value=v, headers=list(headers(codec, i)),
                          timestamp_ms=timestamp(codec, i))
                   for i, (k, v) in enumerate(produced[codec])]
        p.flush(60)
        offsets = [f.get(timeout=60).offset for f in futures]
        assert len(offsets) == N and min(offsets) >= 0
        p.close()

    consumed = consume_all(broker.bootstrap, topic, N * len(CODECS))
    check_round_trip(consumed, produced, PARTITIONS,
                     headers_of=lambda codec, i: headers(codec, i),
                     timestamp_of=lambda codec, i: (timestamp(codec, i), timestamp(codec, i)))

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    for target in (BASE_TS, timestamp("gzip", 777), timestamp("zstd", N)):
        answer = c.offsets_for_times({TopicPartition(topic, p): target for p in range(PARTITIONS)})
        for tp, found in answer.items():
            want = first_offset_at_or_after(consumed, tp.partition, target)
            assert (found.offset if found else -1) == want, (target, tp, found)
    earliest = c.beginning_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    latest = c.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    assert set(earliest.values()) == {0}
    assert sum(latest.values()) == N * len(CODECS)
    c.close()

    broker.restart()
    again = consume_all(broker.bootstrap, topic, N * len(CODECS))
    assert sorted(again) == sorted(consumed)


def test_kafka_python_admin(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("kp", num_partitions=1, replication_factor=1,
                                  topic_configs={"retention.ms": "3600000"})])
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp")])
    entry = described["topic"]["kp"]["retention.ms"]
    assert entry["value"] == "3600000"
    assert entry["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    topic = admin.describe_topics(["kp"])[0]
    assert topic["error_code"] == 0 and len(topic["topic_id"]) == 36
    admin.create_partitions({"kp": NewPartitions(total_count=4)})
    assert len(admin.describe_topics(["kp"])[0]["partitions"]) == 4
    admin.delete_topics(["kp"])
    assert "kp" not in admin.list_topics()
    admin.close()
