"""Log compaction with real clients: a compacted topic becomes a table.

The cleaner runs every 200 ms here (`log.cleaner.backoff.ms`); tests wait for its effect with
a deadline, never for a fixed time.
"""

import re
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic)
from kafka import KafkaConsumer, TopicPartition as KpTopicPartition

from conftest import running_broker

WAIT_S = 120
KEYS = 1000
UPDATES = 200_000
DELETED = 100  # keys 0..99 get tombstones


@pytest.fixture
def broker(tmp_path):
    yield from running_broker(tmp_path, ["--set", "log.cleaner.backoff.ms=200"])


def read_all(broker, topic, stop_at=None):
    """(offset, key, value) for every record from offset 0 to the end."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        m = c.poll(1)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # end of partition
                break
            raise KafkaException(m.error())
        out.append((m.offset(), m.key().decode(), None if m.value() is None else m.value().decode()))
    c.close()
    return out


def table_of(records):
    t = {}
    for _, k, v in records:
        t[k] = v
    return {k: v for k, v in t.items() if v is not None}


def roll(broker, topic):
    """Closes the active segment by writing one sentinel record after segment.ms has passed,
    so that everything before it becomes cleanable (the active segment never is)."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    time.sleep(0.2)  # segment.ms is 100: the current active segment is now older than that
    p.produce(topic, key=b"~sentinel", value=str(time.time()).encode(), partition=0)
    assert p.flush(30) == 0


def cleaned_lines(broker, topic):
    return [l for l in broker.log_text().splitlines()
            if "cleaned log" in l and f'topic="{topic}"' in l or ("cleaned log" in l and f"topic={topic}" in l)]


def test_compaction_turns_200k_updates_into_a_table_and_tombstones_go(broker):
    topic = "table"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    # Written as a plain log first, so that the "before" picture is complete; compaction is
    # switched on afterwards, without a restart.
    admin.create_topics([NewTopic(topic, 1, 1, config={
        "cleanup.policy": "delete", "retention.ms": "-1", "segment.bytes": str(1 << 20),
        # Long enough for the concurrent reader below to reach the end before any tombstone
        # may go: Sluice ages a tombstone from its own timestamp (Kafka from its segment's
        # first cleaning; README, "Where Sluice differs"), so with 3 s a slow machine could
        # drop them in the first pass, before the reader gets there. Lowered to 3 s below.
        "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "600000",
    })])[topic].result(30)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})

    def produce(key, value):
        # The client's queue (100,000 messages) fills when acks come slower than the loop
        # produces, on a busy machine: wait for room rather than fail.
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=0)
                return
            except BufferError:
                p.poll(0.1)

    latest = {}
    for i in range(UPDATES):
        key = f"k{i % KEYS:04d}"
        value = f"{key}-v{i // KEYS}"
        produce(key.encode(), value.encode())
        latest[key] = value
        if i % 10_000 == 0:
            p.poll(0)
    for k in range(DELETED):
        key = f"k{k:04d}"
        produce(key.encode(), None)
        del latest[key]
    assert p.flush(60) == 0
    before = read_all(broker, topic)
    assert len(before) == UPDATES + DELETED

    # A reader from offset 0 while the cleaner works sees increasing offsets and the same
    # table in the end.
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(read_all(broker, topic)))
    cfg = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.ms", "100", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([cfg])[cfg].result(30)

    # Keyless records are refused on a compacted topic.
    errors = []
    p.produce(topic, value=b"no key", partition=0, on_delivery=lambda e, m: errors.append(e))
    p.flush(30)
    assert errors and errors[0] is not None and errors[0].name() == "INVALID_RECORD", errors

    reader.start()
    roll(broker, topic)

    def cleaned():
        recs = read_all(broker, topic)
        keys = [k for _, k, _ in recs if k != "~sentinel"]
        return recs if len(keys) == len(set(keys)) else None

    deadline = time.monotonic() + WAIT_S
    after = None
    while after is None and time.monotonic() < deadline:
        after = cleaned()
    assert after is not None, "the topic was not compacted in time"
    reader.join(WAIT_S)
    offsets = [o for o, _, _ in seen]
    assert offsets == sorted(set(offsets)), "the concurrent reader saw offsets go back"
    assert {k: v for k, v in table_of(seen).items() if k != "~sentinel"} == latest

    # Exactly one record per live key, with its latest value, at its original offset.
    original = {(o, k, v) for o, k, v in before}
    live = [(o, k, v) for o, k, v in after if k != "~sentinel" and v is not None]
    assert {k: v for _, k, v in live} == latest and len(live) == KEYS - DELETED
    assert all(r in original for r in after if r[1] != "~sentinel")
    assert [o for o, _, _ in after] == sorted(o for o, _, _ in after)

    # Other clients read the compacted topic (empty batches, offset gaps) the same way.
    kp = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                       consumer_timeout_ms=5000)
    kp.assign([KpTopicPartition(topic, 0)])
    kp.seek(KpTopicPartition(topic, 0), 0)
    via_kafka_python = [(r.offset, r.key.decode(), None if r.value is None else r.value.decode())
                        for r in kp]
    kp.close()
    assert via_kafka_python == after
    kcat = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning",
                           "-e", "-f", "%o %k\\n"], capture_output=True, text=True,
                          timeout=WAIT_S, check=True)
    assert [int(l.split()[0]) for l in kcat.stdout.splitlines()] == [o for o, _, _ in after]

    # Tombstones older than delete.retention.ms go at the next cleaning. The little data
    # written now is far below min.cleanable.dirty.ratio, so it is max.compaction.lag.ms that
    # makes the cleaner run again.
    cfg = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.compaction.lag.ms", "1000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("delete.retention.ms", "3000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([cfg])[cfg].result(30)
    time.sleep(3.5)  # let the tombstones age past delete.retention.ms (3 s)
    p.produce(topic, key=b"k0999", value=b"k0999-final", partition=0)
    assert p.flush(30) == 0
    latest["k0999"] = "k0999-final"
    roll(broker, topic)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        final = read_all(broker, topic)
        keys = {k for _, k, _ in final}
        if not any(f"k{k:04d}" in keys for k in range(DELETED)) and \
                table_of(final).get("k0999") == "k0999-final" and \
                len([k for _, k, _ in final if k == "k0999"]) == 1:
            break
    else:
        pytest.fail("tombstones were not removed")
    assert {k: v for k, v in table_of(final).items() if k != "~sentinel"} == latest
    lines = [l for l in broker.log_text().splitlines() if "cleaned log" in l]
    assert lines, "the cleaner logged its passes"
    print("\n" + "\n".join(lines))


def test_sigkill_during_compaction_keeps_the_table(tmp_path):
    """Rounds of keyed updates while the cleaner runs constantly, each ended by SIGKILL at a
    random moment. After every restart the table holds, for every key, the last acknowledged
    value or a newer one that was written (never an older one, never an unknown one), offsets
    only increase, and no half-finished rewrite is left on disk."""
    import os
    import random

    seed = int(os.environ.get("SLUICE_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"\ncompaction crash test seed {seed}")
    rng = random.Random(seed)
    broker_gen = running_broker(tmp_path, ["--set", "log.cleaner.backoff.ms=20"])
    broker = next(broker_gen)
    try:
        topic = "crash-table"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic, 1, 1, config={
            "cleanup.policy": "compact", "segment.bytes": str(32 << 10), "segment.ms": "50",
            "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "600000",
        })])[topic].result(30)
        acked = {}  # key -> highest acknowledged sequence
        written = set()  # every value ever handed to the producer
        seq = 0
        for round_no in range(5):
            p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                          "enable.idempotence": False, "message.send.max.retries": 0,
                          "linger.ms": 2, "message.timeout.ms": 10000})

            def delivered(err, msg):
                if err is None:
                    key = msg.key().decode()
                    s = int(msg.value().decode().split(":")[1])
                    acked[key] = max(acked.get(key, -1), s)

            deadline = time.monotonic() + rng.uniform(0.5, 2.0)
            while time.monotonic() < deadline:
                key = f"k{rng.randrange(200)}"
                value = f"{key}:{seq}"
                written.add(value)
                seq += 1
                try:
                    p.produce(topic, key=key.encode(), value=value.encode(), partition=0,
                              on_delivery=delivered)
                except BufferError:
                    p.poll(0.01)
                p.poll(0)
            p.poll(0.05)
            broker.kill()
            p.flush(1)  # collect whatever was acknowledged before the kill
            leftovers = [f for f in os.listdir(broker.data_dir / f"{topic}-0")
                         if f.endswith(".cleaned")]
            broker.start()
            assert not [f for f in os.listdir(broker.data_dir / f"{topic}-0")
                        if f.endswith(".cleaned")], f"round {round_no}: leftover rewrite"
            records = read_all(broker, topic)
            offsets = [o for o, _, _ in records]
            assert offsets == sorted(set(offsets)), f"round {round_no}: offsets out of order"
            table = table_of(records)
            for key, s in acked.items():
                assert key in table, f"round {round_no}: acknowledged key {key} is gone"
                got = int(table[key].split(":")[1])
                assert got >= s, f"round {round_no}: {key} went back from {s} to {got}"
            assert set(table.values()) <= written, f"round {round_no}: unknown values"
            print(f"round {round_no}: {len(records)} records, {len(table)} keys, "
                  f"{len(leftovers)} rewrite(s) in flight at the kill")
        assert "cleaned log" in broker.log_text(), "the cleaner never ran"
    finally:
        try:
            next(broker_gen, None)
        finally:
            broker.kill()


def test_the_offsets_topic_is_compacted_and_replays_to_the_same_offsets(tmp_path):
    gen = running_broker(tmp_path, ["--set", "log.cleaner.backoff.ms=200",
                                    "--set", "offsets.topic.segment.bytes=16384"])
    broker = next(gen)
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("src", 2, 1)])["src"].result(30)
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "busy"})
        for i in range(1500):
            c.commit(offsets=[TopicPartition("src", 0, i), TopicPartition("src", 1, 2 * i)],
                     asynchronous=False)
        c.close()
        deadline = time.monotonic() + WAIT_S
        while "cleaned log" not in broker.log_text() or "__consumer_offsets" not in \
                "".join(l for l in broker.log_text().splitlines() if "cleaned log" in l):
            assert time.monotonic() < deadline, "the offsets topic was never cleaned"
            time.sleep(0.1)
        broker.stop()
        broker.start()
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "busy"})
        got = c.committed([TopicPartition("src", 0), TopicPartition("src", 1)], timeout=30)
        c.close()
        assert [tp.offset for tp in got] == [1499, 2998]
        loaded = [l for l in broker.log_text().splitlines() if "group coordinator loaded" in l][-1]
        records = int(re.search(r"records=(\d+)", loaded).group(1))
        assert records < 3000, f"replayed {records} records: the topic was not compacted"
        print("\n" + loaded)
    finally:
        try:
            next(gen, None)
        finally:
            broker.kill()
