"""What a second client and the wire see, for test_js_clients.py and test_aiokafka.py: topics
read back with confluent-kafka (librdkafka), a group's committed offsets as librdkafka reads
them, topic configs as its admin client describes them, and the record batch headers a raw
Fetch v4 returns."""

import struct
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import Msg
from test_hostile import connect, frame, recv_frame

WAIT_S = 30

# Record batch attributes (Kafka's DefaultRecordBatch).
CODEC_MASK = 0x07
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
TRANSACTIONAL = 0x10
CONTROL = 0x20


def create_topic(broker, name, partitions, configs=None):
    """Creates a topic with the broker's default replication factor (3 on a Cluster)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, config=configs or {})])[name].result(WAIT_S)


def leader_of(broker, topic, partition):
    """The node of `broker` (a Broker, or a Cluster of them) that leads one partition."""
    nodes = getattr(broker, "nodes", None)
    if nodes is None:
        return broker
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=WAIT_S)
    leader = md.brokers[md.topics[topic].partitions[partition].leader]
    return next(n for n in nodes if n.port == leader.port)


def topic_partitions(broker, name):
    """The partition ids of `name` as librdkafka's metadata lists them, or None if it does not
    list the topic."""
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=WAIT_S)
    t = md.topics.get(name)
    if t is None or t.error is not None:
        return None
    return sorted(t.partitions)


def broker_ids(broker):
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=WAIT_S)
    return sorted(md.brokers)


def topic_configs(broker, name, names):
    """{config: (value, source as Kafka's number, is_default)} of topic `name`, from
    librdkafka's DescribeConfigs."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([res])[res].result(WAIT_S)
    out = {}
    for n in names:
        e = entries[n]
        out[n] = (e.value, getattr(e.source, "value", e.source), e.is_default)
    return out


def read_all(broker, topic, isolation="read_uncommitted"):
    """Every record of `topic` from the start of each partition to its end (the last stable
    offset for read_committed), read by librdkafka: Msg tuples (bytes key and value, headers
    as a list of (str, bytes)) sorted by partition and offset."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "crosscheck-reader",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": isolation})
    try:
        parts = sorted(c.list_topics(topic, timeout=WAIT_S).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        done, out = set(), []
        deadline = time.monotonic() + WAIT_S
        while len(done) < len(parts):
            assert time.monotonic() < deadline, f"librdkafka did not reach the end of {topic}"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                done.add(m.partition())
                continue
            out.append(Msg(m.partition(), m.offset(), m.key(), m.value(), m.headers() or [],
                           m.timestamp()[1]))
        return sorted(out, key=lambda m: (m.partition, m.offset))
    finally:
        c.close()


def watermarks(broker, topic, partition):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "crosscheck-reader"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=WAIT_S)
    finally:
        c.close()


def committed(broker, group, topic, partitions):
    """The group's committed offsets on `topic`, {partition: offset}, read by librdkafka;
    partitions without a commit left out."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=WAIT_S)
    finally:
        c.close()
    for tp in tps:
        assert tp.error is None, tp.error
    return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}


def end_offsets(msgs):
    """{partition: one past its last offset} of the records `msgs`."""
    ends = {}
    for m in msgs:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    return ends


def fetch_batches(broker, topic, partition, high_watermark):
    """Every record batch of one partition (Fetch v4, read_uncommitted, so control batches
    too) up to `high_watermark`, as dicts of the batch header fields."""
    name = topic.encode()
    s = connect(leader_of(broker, topic, partition))
    batches, offset, corr = [], 0, 0
    deadline = time.monotonic() + WAIT_S
    try:
        while offset < high_watermark:
            assert time.monotonic() < deadline, f"fetching {topic}-{partition} made no progress"
            corr += 1
            body = struct.pack(">iiiib", -1, 100, 1, 1 << 20, 0)
            body += struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
            body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 1 << 20)
            s.sendall(frame(1, 4, corr, body, client_id=b"crosscheck"))
            resp = recv_frame(s)
            at = 12 + 2 + len(name) + 4
            _part, error, _hw, _lso = struct.unpack(">ihqq", resp[at:at + 22])
            assert error == 0, f"fetch {topic}-{partition}@{offset}: error {error}"
            at += 22
            (aborted,) = struct.unpack(">i", resp[at:at + 4])
            at += 4 + max(aborted, 0) * 16
            (length,) = struct.unpack(">i", resp[at:at + 4])
            records = resp[at + 4:at + 4 + max(length, 0)]
            pos = 0
            while pos + 61 <= len(records):
                base, blen = struct.unpack(">qi", records[pos:pos + 12])
                if pos + 12 + blen > len(records):
                    break
                raw = records[pos:pos + 12 + blen]
                attrs, last_delta = struct.unpack(">hi", raw[21:27])
                pid, epoch, seq, count = struct.unpack(">qhii", raw[43:61])
                (leader_epoch,) = struct.unpack(">i", raw[12:16])
                batches.append({"base": base, "last": base + last_delta, "magic": raw[16],
                                "leader_epoch": leader_epoch,
                                "codec": CODECS.get(attrs & CODEC_MASK, attrs & CODEC_MASK),
                                "transactional": bool(attrs & TRANSACTIONAL),
                                "control": bool(attrs & CONTROL),
                                "producer_id": pid, "epoch": epoch, "base_sequence": seq,
                                "count": count})
                offset = base + last_delta + 1
                pos += 12 + blen
    finally:
        s.close()
    return batches


def check_wire_batches(broker, topic, stored, codec_of_offset, transactional=False):
    """The batches a raw Fetch returns for each partition cover its offsets from 0 to the high
    watermark without gap or overlap; each data batch is compressed with the codec its records
    were sent with (stored as sent); all carry one producer id and epoch, and (the topic's only
    producer, in its first session) each data batch's base sequence is its position among the
    partition's data records, which are the stored ones. Returns {partition: [batch]}."""
    out, producers = {}, set()
    for p in sorted({m.partition for m in stored}):
        _low, high = watermarks(broker, topic, p)
        batches = fetch_batches(broker, topic, p, high)
        assert [b["base"] for b in batches] == [0] + [b["last"] + 1 for b in batches[:-1]]
        assert batches[-1]["last"] == high - 1, f"partition {p}: {batches}"
        sequence = 0
        for b in batches:
            assert b["magic"] == 2, b
            assert b["transactional"] == transactional, b
            assert b["producer_id"] >= 0 and b["epoch"] >= 0, b
            producers.add((b["producer_id"], b["epoch"]))
            if b["control"]:
                continue
            assert b["codec"] == codec_of_offset(p, b["base"]), f"partition {p}: {b}"
            assert b["base_sequence"] == sequence, f"partition {p}: {b}"
            sequence += b["count"]
        assert sequence == sum(1 for m in stored if m.partition == p)
        out[p] = batches
    assert len(producers) == 1, producers
    return out
