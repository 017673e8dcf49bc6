"""The Java client against sluice: kafka-clients 4.4.0 (the reference client) for idempotent and
transactional producers, consumer groups with an eager and a cooperative assignor, read_committed
and the Admin client; older kafka-clients (0.10.2.2, 0.11.0.3, 1.1.1, 2.8.2, 3.9.2) producing,
consuming in a group and committing, and their AdminClient (0.11 on).

The Java programs live in tests/java/src (plain `main` programs that check their own
expectations and print what they observed, one fact per line); tests/java/install.sh fetches
the jars from Maven Central and compiles them. Here each program runs in its own JVM against
one broker shared by the module (every test uses its own topics and groups), and what it
printed is checked again, strictly, and against what confluent-kafka (librdkafka) sees.
"""

import collections
import os
import pathlib
import re
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import log_since, log_sizes, running_broker, running_cluster
from crosscheck import fetch_batches

JAVA_DIR = pathlib.Path(__file__).resolve().parents[1] / "java"
CACHE = JAVA_DIR / ".cache"
# Small heaps, C1 only, class-data sharing and no perf-data file: these JVMs live for seconds.
JVM = ["java", "-Xmx256m", "-Xss1m", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
       "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"]
JAVA_TIMEOUT_S = 150
# 0.10.2 is the newest client that cannot write record batches: it produces with Produce v2
# (magic 1 message sets) and fetches with Fetch v3, the versions Kafka 4 dropped (KIP-896).
OLD_CLIENTS = ["0.10.2.2", "0.11.0.3", "1.1.1", "2.8.2", "3.9.2"]
# The AdminClient came with 0.11.
OLD_ADMIN_CLIENTS = ["0.11.0.3", "1.1.1", "2.8.2", "3.9.2"]
CURRENT = "4.4.0"


@pytest.fixture(scope="session")
def java_installed():
    """Fetches the jars and compiles the Java programs once (quick when tests/java/.cache is
    already complete)."""
    out = subprocess.run([str(JAVA_DIR / "install.sh")], capture_output=True, text=True,
                         timeout=1200)
    assert out.returncode == 0, f"tests/java/install.sh failed:\n{out.stdout}\n{out.stderr}"


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory, java_installed):
    """One broker for the module; groups rebalance at once when their first member joins."""
    yield from running_broker(tmp_path_factory.mktemp("java-clients"),
                              ["--set", "group.initial.rebalance.delay.ms=0"])


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory, java_installed):
    """Three nodes for the module (default.replication.factor=3), each topic's partitions
    led by different brokers, and the coordinators on whichever leads their partition."""
    yield from running_cluster(tmp_path_factory.mktemp("java-clients-cluster"),
                               ["--set", "group.initial.rebalance.delay.ms=0"])


# The tests that also run against three nodes: transactions, where the transaction
# coordinator, the group coordinator and the partition leaders are on different brokers,
# and a group's rebalances.
ONE_AND_THREE = pytest.mark.parametrize("where", ["shared_broker", "shared_cluster"])


def classpath(jar_set, classes=True):
    cp = [str(CACHE / jar_set / "lib" / "*")]
    if classes:
        cp.insert(0, str(CACHE / f"classes-{jar_set}"))
    return os.pathsep.join(cp)


class JavaRun:
    """A finished JVM: exit status, output, and the broker log lines it caused about
    unsupported request versions."""

    def __init__(self, argv, returncode, stdout, stderr, unsupported):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.lines = stdout.splitlines()
        self.unsupported = unsupported

    def explain(self):
        return (f"$ {' '.join(self.argv[len(JVM):])}\nexit {self.returncode}\n"
                f"--- stdout (last 60 lines)\n" + "\n".join(self.lines[-60:]) +
                f"\n--- stderr (last 4000 chars)\n{self.stderr[-4000:]}"
                f"\n--- broker: requests at unsupported versions\n" +
                ("\n".join(self.unsupported) or "(none)"))

    def fields(self, tag):
        """The whitespace-split fields of every stdout line starting with `tag`."""
        return [line.split()[1:] for line in self.lines if line.split()[:1] == [tag]]

    def assert_ok(self):
        assert self.returncode == 0 and not self.fields("FAIL"), self.explain()


def run_jvm(broker, cp, main, *args, stdin=None, timeout=JAVA_TIMEOUT_S):
    """Runs `java -cp CP MAIN ARGS` to completion (killed after `timeout` seconds)."""
    argv = [*JVM, "-cp", cp, main, *map(str, args)]
    start = log_sizes(broker)
    try:
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        code, stdout, stderr = out.returncode, out.stdout, out.stderr
    except subprocess.TimeoutExpired as e:
        # subprocess.run has killed and reaped the JVM.
        code = "killed after timeout"
        stdout, stderr = (x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                          for x in (e.stdout, e.stderr))
    log = log_since(start)
    unsupported = [line for line in log.splitlines() if "unsupported version" in line]
    return JavaRun(argv, code, stdout, stderr, unsupported)


def java_clients(broker, *args, jar_set=f"clients-{CURRENT}"):
    return run_jvm(broker, classpath(jar_set), "JavaClients", *args)


def old_client(broker, version, main, *args):
    return run_jvm(broker, classpath(f"clients-{version}"), main, *args)


def conversions(broker):
    """Records the broker has converted from and to the old message formats (magic 0 and 1),
    by direction, from its Prometheus metrics."""
    with urllib.request.urlopen(broker.admin_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert "# TYPE sluice_message_conversions counter" in text, "no conversion metric"
    found = dict(re.findall(r'^sluice_message_conversions_total\{direction="(\w+)"\} (\d+)$',
                            text, re.M))
    # A direction appears once it has counted something.
    return {k: int(found.get(k, 0)) for k in ("produce", "fetch")}


# -- what confluent-kafka sees -------------------------------------------------------------

def create_topic(broker, name, partitions):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions)])[name].result(30)


def confluent_read(broker, topic, partitions, isolation="read_uncommitted"):
    """Every record of `topic` from the beginning up to the end (the LSO for read_committed),
    as (partition, offset, value) in per-partition offset order."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "java-crosscheck",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": isolation})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, at_end = [], set()
    deadline = time.monotonic() + 60
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"confluent did not reach the end of {topic}"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                at_end.add(m.partition())
                continue
            out.append((m.partition(), m.offset(), m.value().decode()))
    finally:
        c.close()
    return sorted(out)


def confluent_committed(broker, group, topic, partitions):
    """The group's committed offset per partition (-1001 when none), read by librdkafka."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in tps}


def watermarks(broker, topic, partition):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "java-crosscheck"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=20)
    finally:
        c.close()


def ensure_internal_topics(broker):
    """Makes the broker create __consumer_offsets (a group commit) and __transaction_state (a
    transactional producer's InitProducerId)."""
    if "internal-trigger" not in AdminClient({"bootstrap.servers": broker.bootstrap}) \
            .list_topics(timeout=10).topics:
        create_topic(broker, "internal-trigger", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "internal-trigger"})
    p.init_transactions(30)
    del p
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "internal-trigger"})
    c.commit(offsets=[TopicPartition("internal-trigger", 0, 0)], asynchronous=False)
    c.close()
    meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert {"__consumer_offsets", "__transaction_state"} <= set(meta.topics)


# -- kafka-clients 4.x -----------------------------------------------------------------------

def test_java_idempotent_producer_writes_each_record_once_in_order_with_sequences(shared_broker):
    """An idempotent Java producer (acks=all, five requests in flight, many small batches) gets
    every record acknowledged with dense per-partition offsets in send order; the stored
    batches all carry its one producer id and epoch, and each batch's base sequence equals its
    base offset (the first session of the only producer writing the topic); librdkafka reads
    back exactly what was acknowledged."""
    topic, partitions, n = "j-idem", 3, 2000
    create_topic(shared_broker, topic, partitions)
    run = java_clients(shared_broker, "idempotent", shared_broker.bootstrap, topic, n)
    run.assert_ok()

    produced = sorted((int(p), int(o), v) for p, o, v in run.fields("produced"))
    assert len(produced) == n, run.explain()
    assert sorted(v for _, _, v in produced) == [f"idem-{i:06d}" for i in range(n)]
    per_partition = collections.Counter(p for p, _, _ in produced)
    assert set(per_partition) == set(range(partitions)), per_partition
    for p, count in per_partition.items():
        assert [o for q, o, _ in produced if q == p] == list(range(count))
    assert confluent_read(shared_broker, topic, partitions) == produced

    producer_ids = set()
    for p, count in per_partition.items():
        batches = fetch_batches(shared_broker, topic, p, count)
        assert len(batches) > 1, f"partition {p}: the sequence check needs several batches"
        assert sum(b["count"] for b in batches) == count
        for b in batches:
            assert b["magic"] == 2 and not b["transactional"], b
            assert b["producer_id"] >= 0 and b["epoch"] >= 0, b
            assert b["base_sequence"] == b["base"], f"partition {p}: {b}"
            producer_ids.add((b["producer_id"], b["epoch"]))
    assert len(producer_ids) == 1, producer_ids


@ONE_AND_THREE
def test_java_transactions_commit_abort_fence_and_read_committed(request, where):
    """Java transactions over two partitions: a committed transaction, an aborted one whose
    records were acknowledged first, a committed one carrying the group's offset
    (sendOffsetsToTransaction), then a second producer with the same transactional.id fences
    the first (ProducerFencedException) and commits a fourth. A read_committed Java consumer
    reads exactly the committed records at their offsets (every transaction marker takes one);
    read_uncommitted reads the aborted ones too; the fenced producer's record is nowhere;
    librdkafka sees the same in both isolation levels, and the group's offset is the one
    committed in the transaction. On one node and on three."""
    shared_broker = request.getfixturevalue(where)
    topic, group = "j-txn", "j-txn-group"
    create_topic(shared_broker, topic, 2)
    run = java_clients(shared_broker, "transactions", shared_broker.bootstrap, topic, group)
    run.assert_ok()
    # PRODUCER_FENCED, from AddPartitionsToTxn: sluice offers transaction protocol v1 only.
    # (Kafka 4 with transaction.version 2, KIP-890, answers the zombie's Produce with
    # INVALID_PRODUCER_EPOCH instead, which the Java program also accepts.)
    assert run.fields("fenced") == [["ProducerFencedException"]], run.explain()

    def records(label, count, first_offset):
        """(partition, offset, value) of a transaction of `count` records sent round-robin
        to partitions 0 and 1."""
        out = []
        for p in (0, 1):
            values = [f"{label}-{i}" for i in range(count) if i % 2 == p]
            out += [(p, first_offset + j, v) for j, v in enumerate(values)]
        return out

    # Per partition: commit1 at 0-4, marker 5, abort at 6-10, marker 11, commit2 at 12-16,
    # marker 17, commit3 at 18-19, marker 20.
    committed = records("commit1", 10, 0) + records("commit2", 10, 12) + records("commit3", 4, 18)
    everything = committed + records("abort", 10, 6)
    seen = collections.defaultdict(list)
    for iso, p, o, v in run.fields("record"):
        seen[iso].append((int(p), int(o), v))
    assert sorted(seen["read_committed"]) == sorted(committed), run.explain()
    assert sorted(seen["read_uncommitted"]) == sorted(everything), run.explain()
    assert run.fields("end") == [["read_committed", "0=21,1=21"],
                                 ["read_uncommitted", "0=21,1=21"]], run.explain()

    assert confluent_read(shared_broker, topic, 2, "read_committed") == sorted(committed)
    assert confluent_read(shared_broker, topic, 2, "read_uncommitted") == sorted(everything)
    assert run.fields("committed") == [["0", "7", "in-txn"]], run.explain()
    assert confluent_committed(shared_broker, group, topic, 2) == {0: 7, 1: -1001}


def rebalance_events(run):
    """{phase: {member: [(kind, frozenset of partitions)]}} from the group scenario's output."""
    events = collections.defaultdict(lambda: collections.defaultdict(list))
    phase = None
    for line in run.lines:
        f = line.split()
        if f[:1] == ["phase"]:
            phase = f[1]
        elif f[:1] == ["event"]:
            member, kind, parts = f[1], f[2], f[3] if len(f) > 3 else ""
            events[phase][member].append((kind, frozenset(int(x) for x in parts.split(",") if x)))
    return events


@pytest.mark.parametrize("assignor,where", [
    ("range", "shared_broker"), ("cooperative-sticky", "shared_broker"),
    ("cooperative-sticky", "shared_cluster")])
def test_java_consumer_group_rebalances_as_members_join_and_leave(request, assignor, where):
    """Two Java consumers in one group over four partitions (A alone, then A and B, then A
    after B leaves with LeaveGroup): each phase's records are consumed exactly once across the
    group, only by the member that owns the partition, and the committed offsets end at the
    log end. The rebalance follows the assignor's protocol: range (eager) revokes everything
    and hands out contiguous halves; cooperative-sticky moves only the two partitions B takes
    (two rebalances) and gives them back without revoking A's own. Cooperative-sticky on
    three nodes too."""
    shared_broker = request.getfixturevalue(where)
    topic, group = f"j-group-{assignor}", f"j-group-{assignor}"
    create_topic(shared_broker, topic, 4)
    run = java_clients(shared_broker, "group", shared_broker.bootstrap, topic, group, assignor)
    run.assert_ok()

    produced = {(int(p), int(o)): v for p, o, v in run.fields("produced")}
    assert len(produced) == 24, run.explain()
    consumed = [(m, int(p), int(o), v) for m, p, o, v in run.fields("consumed")]
    assert len(consumed) == 24, run.explain()
    assert {(p, o): v for _, p, o, v in consumed} == produced, "every record exactly once"
    assert confluent_read(shared_broker, topic, 4) == \
        sorted((p, o, v) for (p, o), v in produced.items())

    every = frozenset(range(4))
    ev = rebalance_events(run)
    assert set(ev) <= {"1", "2", "3", "end"}, ev
    assert dict(ev["1"]) == {"A": [("assigned", every)]}, run.explain()
    owned_a = frozenset(int(x) for x in run.fields("owned")[0][1].split(","))
    owned_b = frozenset(int(x) for x in run.fields("owned")[1][1].split(","))
    assert run.fields("owned")[0][0] == "A" and run.fields("owned")[1][0] == "B"
    assert owned_a | owned_b == every and not owned_a & owned_b
    if assignor == "range":
        assert {owned_a, owned_b} == {frozenset({0, 1}), frozenset({2, 3})}, run.explain()
        assert dict(ev["2"]) == {"A": [("revoked", every), ("assigned", owned_a)],
                                 "B": [("assigned", owned_b)]}, run.explain()
        assert dict(ev["3"]) == {"B": [("revoked", owned_b)],
                                 "A": [("revoked", owned_a), ("assigned", every)]}, run.explain()
    else:
        assert len(owned_b) == 2, run.explain()
        assert dict(ev["2"]) == {"A": [("revoked", owned_b)],
                                 "B": [("assigned", owned_b)]}, run.explain()
        assert dict(ev["3"]) == {"B": [("revoked", owned_b)],
                                 "A": [("assigned", owned_b)]}, run.explain()
    assert dict(ev["end"]) == {"A": [("revoked", every)]}, run.explain()

    assert run.fields("committed") == [[str(p), "6"] for p in range(4)], run.explain()
    assert confluent_committed(shared_broker, group, topic, 4) == {p: 6 for p in range(4)}


def test_java_admin_client_topics_configs_groups_offsets_and_records(shared_broker):
    """The Java Admin client: createTopics (and TopicExistsException), listTopics without the
    internal topics, describeCluster, describeTopics (UnknownTopicOrPartitionException for a
    missing one), describeConfigs for a topic and the broker, incrementalAlterConfigs with SET,
    DELETE and APPEND, listConsumerGroups and describeConsumerGroups for a live and an
    offsets-only group, listConsumerGroupOffsets, alterConsumerGroupOffsets (refused with
    UnknownMemberIdException while the group has members), listOffsets, deleteRecords and
    deleteTopics each succeed with Kafka's answers; librdkafka then sees the same cluster,
    configs, committed offsets, low watermark and topic list."""
    b = shared_broker
    ensure_internal_topics(b)  # so that listTopics has something to leave out

    run = java_clients(b, "admin", b.bootstrap)
    steps = ["createTopics", "listTopics", "describeCluster", "describeTopics", "describeConfigs",
             "incrementalAlterConfigs", "produce-and-join", "listConsumerGroupOffsets",
             "alterConsumerGroupOffsets", "listConsumerGroups", "describeConsumerGroups",
             "describeConsumerGroups-after-leave", "listOffsets-and-deleteRecords", "deleteTopics"]
    run.assert_ok()
    assert [f[0] for f in run.fields("ok")] == steps, run.explain()

    meta = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
    [[cluster_id, _, node_id, address, _, controller_id]] = run.fields("cluster")
    assert cluster_id == meta.cluster_id
    assert int(controller_id) == meta.controller_id
    assert {int(node_id): address} == {n: f"{m.host}:{m.port}" for n, m in meta.brokers.items()}
    assert address == b.bootstrap
    [[name, _, partitions, _, leader, _, topic_id]] = run.fields("described")
    assert (name, partitions, leader) == ("adm-a", "3", node_id)
    assert len(topic_id) == 22 and topic_id != "A" * 22, f"topic id {topic_id}"
    assert "adm-a" not in meta.topics and len(meta.topics["adm-b"].partitions) == 1

    configs = {f[1]: (f[2], f[3]) for f in run.fields("config") if f[0] == "adm-cfg"}
    assert configs == {"retention.ms": ("604800000", "DEFAULT_CONFIG"),
                       "max.message.bytes": ("2000000", "DYNAMIC_TOPIC_CONFIG"),
                       "cleanup.policy": ("delete,compact", "DYNAMIC_TOPIC_CONFIG")}, run.explain()
    res = ConfigResource(ConfigResource.Type.TOPIC, "adm-cfg")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    seen = admin.describe_configs([res])[res].result(30)
    assert {k: seen[k].value for k in configs} == {k: v for k, (v, _) in configs.items()}

    assert run.fields("group-offset") == [["adm-live", "adm-b", "0", "10"],
                                          ["adm-offsets", "adm-b", "0", "4", "set-by-admin"]]
    assert confluent_committed(b, "adm-live", "adm-b", 1) == {0: 10}
    assert confluent_committed(b, "adm-offsets", "adm-b", 1) == {0: 4}
    assert run.fields("deleted-records") == [["adm-b", "0", "low-watermark", "3"]]
    assert watermarks(b, "adm-b", 0) == (3, 10)


# -- older kafka-clients ---------------------------------------------------------------------

@pytest.mark.parametrize("version", OLD_CLIENTS)
def test_old_java_client_produces_consumes_in_a_group_and_commits(shared_broker, version):
    """kafka-clients VERSION (compiled against that version) produces 30 keyed records with
    acks=all (dense offsets per partition in send order), consumes them in a group, each
    exactly once and as produced, and commits: its committed offsets read back are the log end
    offsets. librdkafka sees the same records and the same committed offsets. 0.10.2 writes and
    reads magic 1 message sets, so the broker converts each of its 30 records on the way in
    and again on the way out; the later clients use record batches and need no conversion."""
    topic, group = f"old-{version}", f"old-group-{version}"
    create_topic(shared_broker, topic, 3)
    before = conversions(shared_broker)
    run = old_client(shared_broker, version, "OldClient", shared_broker.bootstrap, topic, 3,
                     group, 30)
    after = conversions(shared_broker)
    run.assert_ok()
    assert run.fields("client") == [[version]], run.explain()

    produced = sorted((int(p), int(o), v) for p, o, v in run.fields("produced"))
    assert len(produced) == 30
    assert sorted(v for _, _, v in produced) == sorted(f"old-{version}-{i}" for i in range(30))
    consumed = sorted((int(p), int(o), v) for p, o, v in run.fields("consumed"))
    assert consumed == produced, run.explain()
    assert confluent_read(shared_broker, topic, 3) == produced
    ends = collections.Counter(p for p, _, _ in produced)
    assert run.fields("committed") == [[str(p), str(ends[p])] for p in range(3)], run.explain()
    assert confluent_committed(shared_broker, group, topic, 3) == {p: ends[p] for p in range(3)}

    converted = {k: after[k] - before[k] for k in after}
    if version.startswith("0.10."):
        assert converted["produce"] == 30 and converted["fetch"] >= 30, converted
    else:
        assert converted == {"produce": 0, "fetch": 0}, converted


@pytest.mark.parametrize("version", OLD_ADMIN_CLIENTS)
def test_old_java_admin_client_creates_and_describes_a_topic(shared_broker, version):
    """The AdminClient of kafka-clients VERSION creates a two-partition topic, lists and
    describes it, and reads its retention.ms (the default, 604800000) with DescribeConfigs;
    librdkafka sees the topic with two partitions."""
    topic = f"old-admin-{version}"
    run = old_client(shared_broker, version, "OldAdmin", shared_broker.bootstrap, topic)
    run.assert_ok()
    assert run.fields("topic") == [[topic, "2"]], run.explain()
    assert run.fields("config") == [["retention.ms", "604800000"]], run.explain()
    meta = AdminClient({"bootstrap.servers": shared_broker.bootstrap}).list_topics(timeout=10)
    assert len(meta.topics[topic].partitions) == 2
