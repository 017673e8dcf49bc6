"""The APIs admin clients call today and the topic configs current clients expect, driven by
kafka-python's and confluent-kafka's admin clients (and one raw Produce for KIP-467): what a
current Kafka answers, Sluice answers."""

import glob
import os
import struct
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (AclOperation, AdminClient, NewTopic, OffsetSpec)
from kafka import KafkaAdminClient
from kafka.structs import TopicPartitionReplica

from conftest import running_broker
from test_hostile import connect, frame, recv_frame


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    yield from running_broker(tmp_path_factory.mktemp("apis"),
                              ["--set", "group.initial.rebalance.delay.ms=0"])


def create(broker, name, partitions=1, config=None):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(30)


def produce(broker, topic, values, **conf):
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", **conf})
    for v in values:
        if isinstance(v, tuple):
            p.produce(topic, v[1], key=v[0], timestamp=v[2], partition=0)
        else:
            p.produce(topic, v, partition=0)
    assert p.flush(30) == 0


def test_kafka_python_sees_a_current_kafka(shared):
    """kafka-python infers the broker's version from the API versions it advertises; it must
    see a current Kafka (4.0 or later), not an old one whose features it would avoid."""
    admin = KafkaAdminClient(bootstrap_servers=shared.bootstrap)
    try:
        version = admin._client.check_version()
        assert tuple(version) >= (4, 0), version
    finally:
        admin.close()


def test_describe_cluster_topic_partitions_and_config_resources(shared):
    """DescribeCluster names this broker as the only one and the controller;
    DescribeTopicPartitions (KIP-966) pages through partitions with a cursor; and
    ListConfigResources lists topics and the broker."""
    create(shared, "dtp", partitions=5)
    admin = KafkaAdminClient(bootstrap_servers=shared.bootstrap)
    try:
        cluster = admin.describe_cluster()
        assert [b["broker_id"] for b in cluster["brokers"]] == [0]
        assert cluster["controller_id"] == 0
        assert cluster["cluster_id"]
        first = admin.describe_topic_partitions(["dtp"], response_partition_limit=3)
        topics = first["topics"]
        assert [t["name"] for t in topics] == ["dtp"]
        assert [p["partition_index"] for p in topics[0]["partitions"]] == [0, 1, 2]
        cursor = first["next_cursor"]
        assert (cursor["topic_name"], cursor["partition_index"]) == ("dtp", 3)
        rest = admin.describe_topic_partitions(["dtp"], response_partition_limit=3,
                                               cursor=cursor)
        assert [p["partition_index"] for p in rest["topics"][0]["partitions"]] == [3, 4]
        assert rest["next_cursor"] is None
        listed = admin.list_config_resources()
        assert "dtp" in listed["topic"] and listed["broker"] == ["0"], listed
    finally:
        admin.close()


def test_log_dirs_show_real_sizes_and_only_their_own_directory(shared):
    """DescribeLogDirs reports the data directory with each partition's real size on disk and
    the file system's total and usable bytes; AlterReplicaLogDirs to that same directory
    succeeds (every replica already lives there) and to any other fails."""
    create(shared, "sizes", partitions=2)
    produce(shared, "sizes", [b"x" * 1000] * 20)
    admin = KafkaAdminClient(bootstrap_servers=shared.bootstrap)
    try:
        (broker,) = admin.describe_log_dirs({"sizes": [0, 1]})
        data_dir = os.path.realpath(shared.data_dir)
        (entry,) = broker["log_dirs"]
        assert entry["log_dir"] == data_dir and entry["error_code"] == 0
        sizes = {p["partition_index"]: p["partition_size"]
                 for t in entry["topics"] if t["name"] == "sizes" for p in t["partitions"]}
        on_disk = sum(os.path.getsize(f) for f in glob.glob(
            os.path.join(shared.data_dir, "sizes-0", "*.log")))
        assert sizes == {0: on_disk, 1: 0}
        assert entry["total_bytes"] > entry["usable_bytes"] > 0
        moved = admin.alter_replica_log_dirs({
            TopicPartitionReplica("sizes", 0, 0): data_dir,
            TopicPartitionReplica("sizes", 1, 0): "/nonexistent/log/dir",
        })
        codes = {(k.topic, k.partition): v for k, v in _flatten(moved).items()}
        assert codes[("sizes", 0)] == 0, moved
        assert codes[("sizes", 1)] == 57, moved  # LOG_DIR_NOT_FOUND
    finally:
        admin.close()


def _flatten(result):
    """kafka-python returns per-replica error codes (or exceptions) keyed by replica."""
    out = {}
    for k, v in result.items():
        out[k] = v if isinstance(v, int) else getattr(v, "errno", v)
    return out


def test_describe_producers_shows_an_idempotent_producer(shared):
    """DescribeProducers lists the idempotent producer that wrote to a partition, with the
    last sequence it appended."""
    create(shared, "idem")
    produce(shared, "idem", [b"a", b"b", b"c"], **{"enable.idempotence": True})
    admin = KafkaAdminClient(bootstrap_servers=shared.bootstrap)
    try:
        from kafka import TopicPartition as KTP
        states = admin.describe_producers([KTP("idem", 0)])
        (state,) = states.values()
        (p,) = state.active_producers
        assert p.producer_id >= 0 and p.producer_epoch == 0
        assert p.last_sequence == 2
        assert p.current_transaction_start_offset == -1
    finally:
        admin.close()


def test_authorized_operations_are_every_operation_without_an_authorizer(shared):
    """Asked for authorized operations (Metadata, DescribeCluster), a broker without an
    authorizer answers every operation the resource type supports, as Kafka does."""
    create(shared, "ops")
    admin = AdminClient({"bootstrap.servers": shared.bootstrap})
    cluster = admin.describe_cluster(include_authorized_operations=True).result(30)
    assert set(cluster.authorized_operations) == {
        AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER,
        AclOperation.DESCRIBE}
    from confluent_kafka import TopicCollection
    (topic,) = admin.describe_topics(TopicCollection(["ops"]),
                                     include_authorized_operations=True).values()
    assert set(topic.result(30).authorized_operations) == {
        AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE,
        AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS}


def test_list_offsets_max_timestamp_finds_the_newest_record(shared):
    """ListOffsets with the max-timestamp spec (KIP-734) answers the offset and timestamp of
    the record with the largest timestamp, wherever it is in the log."""
    create(shared, "maxts")
    base = 1_700_000_000_000
    produce(shared, "maxts", [(b"k", b"v0", base), (b"k", b"v1", base + 50),
                              (b"k", b"v2", base + 10), (b"k", b"v3", base + 20)],
            **{"linger.ms": 0, "batch.num.messages": 1})
    admin = AdminClient({"bootstrap.servers": shared.bootstrap})
    tp = TopicPartition("maxts", 0)
    result = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(30)
    assert (result.offset, result.timestamp) == (1, base + 50)


def stored_codecs(broker, topic):
    """The codec of every batch stored in partition 0 of `topic`, read from its segments."""
    codecs = []
    for seg in sorted(glob.glob(os.path.join(broker.data_dir, f"{topic}-0", "*.log"))):
        data = open(seg, "rb").read()
        at = 0
        while at + 61 <= len(data):
            (length,) = struct.unpack(">i", data[at + 8:at + 12])
            (attributes,) = struct.unpack(">h", data[at + 21:at + 23])
            codecs.append(attributes & 7)
            at += 12 + length
    return codecs


def consume_values(broker, topic, n):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"read-{topic}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    values = []
    deadline = time.monotonic() + 30
    while len(values) < n and time.monotonic() < deadline:
        m = c.poll(1)
        if m is not None and m.error() is None:
            values.append(m.value())
    c.close()
    return values


def test_compression_type_recompresses_on_produce(shared):
    """A topic with compression.type=gzip stores what a producer sent uncompressed as gzip
    batches (and consumers read the same values); set back to `producer`, batches are stored
    as sent (lz4 here)."""
    create(shared, "packed", config={"compression.type": "gzip"})
    produce(shared, "packed", [b"value-%d" % i for i in range(20)],
            **{"compression.type": "none"})
    assert set(stored_codecs(shared, "packed")) == {1}
    admin = AdminClient({"bootstrap.servers": shared.bootstrap})
    from confluent_kafka.admin import ConfigResource, ConfigEntry, AlterConfigOpType
    resource = ConfigResource("TOPIC", "packed", incremental_configs=[
        ConfigEntry("compression.type", "producer",
                    incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(30)
    produce(shared, "packed", [b"more-%d" % i for i in range(20)],
            **{"compression.type": "lz4"})
    codecs = stored_codecs(shared, "packed")
    assert codecs[-1] == 3 and set(codecs) == {1, 3}, codecs
    want = [b"value-%d" % i for i in range(20)] + [b"more-%d" % i for i in range(20)]
    assert consume_values(shared, "packed", 40) == want


# -- KIP-467 on the wire ------------------------------------------------------------------

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def varint(n):
    n = (n << 1) ^ (n >> 63)
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def batch(keys):
    """An uncompressed v2 batch with one record per key (None for a keyless record)."""
    records = b""
    for i, key in enumerate(keys):
        body = b"\x00" + varint(0) + varint(i)
        body += varint(-1) if key is None else varint(len(key)) + key
        body += varint(1) + b"v" + varint(0)
        records += varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, len(keys) - 1, 1000, 1000, -1, -1, -1, len(keys))
    after_crc += records
    head = struct.pack(">qiib", 0, 4 + 1 + 4 + len(after_crc), -1, 2)
    return head + struct.pack(">I", crc32c(after_crc)) + after_crc


def test_keyless_records_on_a_compacted_topic_are_named_per_record(shared):
    """A batch for a compacted topic with keyless records is refused with INVALID_RECORD and
    KIP-467's record errors: each keyless record's index in the batch, and a message naming
    them, in Produce v8."""
    create(shared, "table", config={"cleanup.policy": "compact"})
    records = batch([b"a", None, b"b", None])
    body = struct.pack(">hhi", -1, -1, 5000) + struct.pack(">i", 1)
    body += struct.pack(">h", 5) + b"table" + struct.pack(">ii", 1, 0)
    body += struct.pack(">i", len(records)) + records
    s = connect(shared)
    s.sendall(frame(0, 8, 3, body))
    resp = recv_frame(s)
    s.close()
    at = 4 + 4 + 2 + 5 + 4  # corr, topics, name, partitions
    index, error, base, _append, _start = struct.unpack(">ihqqq", resp[at:at + 30])
    assert (index, error, base) == (0, 87, -1)  # INVALID_RECORD
    at += 30
    (count,) = struct.unpack(">i", resp[at:at + 4])
    at += 4
    indexes = []
    for _ in range(count):
        (i, mlen) = struct.unpack(">ih", resp[at:at + 6])
        message = resp[at + 6:at + 6 + mlen].decode()
        indexes.append(i)
        assert "without key" in message and "table-0" in message
        at += 6 + mlen
    assert indexes == [1, 3]
    (mlen,) = struct.unpack(">h", resp[at:at + 2])
    assert "2 record errors" in resp[at + 2:at + 2 + mlen].decode()
