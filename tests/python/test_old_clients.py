"""Old clients against sluice, each with the request versions it was built to send: sarama
1.22.1 with its default config (it assumes Kafka 0.8.2), segmentio kafka-go 0.2.1 (both the
versions Debian 12 packages), kcat (librdkafka) told to assume a 0.9.0 or 0.10.0 broker
without asking, and Burrow 1.2.1 (Debian's, built with sarama 1.22.1) reporting
per-partition consumer lag.

Kafka 3.9 accepts all of these; Kafka 4 dropped the old versions (KIP-896). The Go programs
and Burrow come from tests/go/install.sh; the helpers are test_go_clients.py's. When a check
fails, its message lists the requests the broker logged as unsupported for that client id.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from conftest import ROOT, running_broker, running_cluster
from test_go_clients import (WAIT_S, as_tuples, check_log, collapse, committed, create_topic,
                             end_offsets, expected, produce, read_all, run_go,
                             unsupported_requests)

PARTITIONS = 3
N = 30
# The old programs' own deadline: long enough for a group join and a few fetches, short
# enough that a client retrying a refused request fails soon.
OLD_TIMEOUT = "20s"
CACHE = ROOT / "tests" / "go" / ".cache"
BURROW = CACHE / "burrow" / "usr" / "bin" / "Burrow"
ZOOKEEPER_LIB = CACHE / "zookeeper" / "lib"
SERVICE_START_S = 30
# Burrow asks for end offsets every second (offset-refresh=1).
BURROW_OFFSETS_WAIT_S = 20
# Burrow 1.2.1 takes 8 to 20 s to pass a commit from __consumer_offsets to its storage, with
# Kafka 3.9.1 as with sluice.
BURROW_LAG_WAIT_S = 60


@pytest.fixture(scope="module", params=["one node", "three nodes"])
def old(request, tmp_path_factory):
    """One broker for the old Go clients and kcat, each test with its own topics, groups
    and client ids; then a three-node cluster (auto-created topics with three replicas),
    where the old clients find the partition leaders and the group coordinator through
    Metadata v0 and GroupCoordinator v0 from one seed broker."""
    args = ["--set", f"num.partitions={PARTITIONS}",
            "--set", "group.initial.rebalance.delay.ms=0"]
    where = tmp_path_factory.mktemp("old-clients")
    if request.param == "one node":
        yield from running_broker(where, args)
    else:
        yield from running_cluster(where, args)


def old_go(broker, program, cmd, *args, client_id):
    return run_go(broker, program, cmd, *args, "-timeout", OLD_TIMEOUT, client_id=client_id)


# -- sarama 1.22.1 ---------------------------------------------------------------------------

def test_old_sarama_default_config_produces(old):
    """sarama 1.22.1's SyncProducer with the default config (Metadata v0, Produce v0 with
    magic 0 messages, acks=1) gets every message stored once, in order per key, at the
    partition and offset sarama was told."""
    topic = "old-sarama-produced"
    create_topic(old, topic)
    out = old_go(old, "sarama122", "produce", "-topic", topic, "-n", N, "-tag", "sarama122",
                 client_id="old-sarama-produce")
    stored = read_all(old, topic)
    check_log(stored, expected("sarama122", N))
    assert as_tuples(out["records"]) == stored


def test_old_sarama_default_config_consumes(old):
    """sarama 1.22.1's Consumer with the default config (ListOffsets v0 for the oldest
    offset, Fetch v0, which carries magic 0 messages) reads exactly the records
    confluent-kafka produced, from every partition."""
    topic = "old-sarama-consumed"
    create_topic(old, topic)
    produce(old, topic, expected("for-old-sarama", N))
    stored = read_all(old, topic)
    out = old_go(old, "sarama122", "consume", "-topic", topic, "-n", N,
                 client_id="old-sarama-consume")
    assert out == {"records": [dict(zip("pokv", r)) for r in stored], "partitions": PARTITIONS}


def test_old_sarama_default_config_commits_offsets(old):
    """sarama 1.22.1's OffsetManager with the default config (FindCoordinator v0,
    OffsetCommit v1, OffsetFetch v1) commits a group's offsets, reads them back, and
    confluent-kafka reads the same offsets."""
    topic, group = "old-sarama-offsets", "old-sarama-offsets-group"
    create_topic(old, topic)
    produce(old, topic, expected("for-old-sarama-offsets", N))
    want = {"0": 1, "1": 2, "2": 3}
    out = old_go(old, "sarama122", "offsets", "-topic", topic, "-group", group,
                 "-at", ",".join(f"{p}:{o}" for p, o in want.items()),
                 client_id="old-sarama-offsets")
    assert out == {"committed": want}
    assert committed(old, group, topic) == want


def test_old_sarama_consumer_group_assuming_kafka_2_1(old):
    """sarama 1.22.1's ConsumerGroup assuming Kafka 2.1.0, the newest version it knows
    (Metadata v5, JoinGroup v1, SyncGroup v0, Heartbeat v0, ListOffsets v1, Fetch v4, and
    OffsetCommit v1, which it sends whenever no retention is configured), reads every record
    once and commits the end offsets, which confluent-kafka reads back."""
    topic, group = "old-sarama-group", "old-sarama-group"
    create_topic(old, topic)
    produce(old, topic, expected("for-old-sarama-group", N))
    stored = read_all(old, topic)
    out = old_go(old, "sarama122", "group", "-topic", topic, "-group", group, "-n", N,
                 "-version", "2.1.0", client_id="old-sarama-group")
    assert as_tuples(out["records"]) == stored
    assert out["committed"] == end_offsets(stored)
    assert committed(old, group, topic) == end_offsets(stored)


# -- kafka-go 0.2.1 --------------------------------------------------------------------------

def test_old_kafka_go_creates_a_topic(old):
    """kafka-go 0.2.1's Conn.CreateTopics (CreateTopics v0) creates a topic with the
    partitions asked for, which its Conn.ReadPartitions (Metadata v1) and confluent-kafka
    both see."""
    topic = "old-kafka-go-created"
    out = old_go(old, "kafkago021", "create", "-topic", topic, "-partitions", 4,
                 client_id="old-kafka-go-create")
    assert out == {"partitions": 4}
    md = Consumer({"bootstrap.servers": old.bootstrap, "group.id": "x"})
    try:
        assert len(md.list_topics(topic, timeout=WAIT_S).topics[topic].partitions) == 4
    finally:
        md.close()


def test_old_kafka_go_writer_produces(old):
    """kafka-go 0.2.1's Writer (Produce v2 with magic 1 message sets, acks=all) gets every
    message stored once, in order per key."""
    topic = "old-kafka-go-produced"
    create_topic(old, topic)
    out = old_go(old, "kafkago021", "produce", "-topic", topic, "-n", N, "-tag", "kafkago021",
                 client_id="old-kafka-go-produce")
    assert out == {"written": N}
    check_log(read_all(old, topic), expected("kafkago021", N))


def test_old_kafka_go_reader_reads_a_partition(old):
    """kafka-go 0.2.1's Reader of one partition (ListOffsets v1 for the first offset, then
    Fetch v2, which carries magic 1 messages) reads exactly that partition's records."""
    topic = "old-kafka-go-read"
    create_topic(old, topic)
    produce(old, topic, expected("for-old-kafka-go", N))
    in_p1 = [r for r in read_all(old, topic) if r[0] == 1]
    out = old_go(old, "kafkago021", "read", "-topic", topic, "-partition", 1,
                 "-n", len(in_p1), client_id="old-kafka-go-read")
    assert as_tuples(out["records"]) == in_p1


def test_old_kafka_go_group_reader_consumes_and_commits(old):
    """kafka-go 0.2.1's Reader in a group (FindCoordinator v0, JoinGroup v1, SyncGroup v0,
    Heartbeat v0, OffsetFetch v1, Fetch v2, OffsetCommit v2) reads every record once and
    commits the end offsets, which confluent-kafka reads back."""
    topic, group = "old-kafka-go-group", "old-kafka-go-group"
    create_topic(old, topic)
    produce(old, topic, expected("for-old-kafka-go-group", N))
    stored = read_all(old, topic)
    out = old_go(old, "kafkago021", "consume", "-topic", topic, "-group", group, "-n", N,
                 client_id="old-kafka-go-group")
    assert as_tuples(out["records"]) == stored
    assert committed(old, group, topic) == end_offsets(stored)


# -- kcat (librdkafka) assuming an old broker -------------------------------------------------

FALLBACKS = ["0.9.0", "0.10.0"]
KCAT_TIMEOUT_S = 60


def kcat(broker, fallback, client_id, *args, stdin=None):
    """kcat with API version requests off and the broker version assumed; asserts exit 0."""
    argv = ["kcat", "-b", broker.bootstrap, "-X", "api.version.request=false",
            "-X", f"broker.version.fallback={fallback}", "-X", f"client.id={client_id}", *args]
    try:
        out = subprocess.run(argv, input=stdin, capture_output=True, timeout=KCAT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kcat {args} did not finish within {KCAT_TIMEOUT_S}s; refused by the "
                    f"broker: {unsupported_requests(broker, client_id)}")
    if out.returncode != 0:
        pytest.fail(f"kcat {args} exited {out.returncode}; stderr:\n"
                    f"{collapse(out.stderr.decode(errors='replace'))}\nrequests the broker "
                    f"refused as unsupported from {client_id!r}: "
                    f"{unsupported_requests(broker, client_id)}")
    return out.stdout


@pytest.mark.parametrize("fallback", FALLBACKS)
def test_kcat_assuming_an_old_broker_produces(old, fallback):
    """kcat with api.version.request=false and broker.version.fallback=0.9.0 (Metadata v0,
    Produce v1 with magic 0 messages) or 0.10.0 gets every keyed message stored once, in
    order per key. (With 0.10.0, librdkafka 2.0.2 still sends ApiVersions, which 0.10.0
    brokers answer, and then uses the versions offered: Produce v7.)"""
    topic, tag = f"kcat-{fallback}-produced", f"kcat-{fallback}"
    create_topic(old, topic)
    pairs = expected(tag, N)
    # One request in flight, so that a retry cannot reorder (an idempotent producer needs
    # Kafka 0.11); a delivery failure ends kcat within 15 s instead of librdkafka's 300.
    kcat(old, fallback, f"kcat-{fallback}-produce", "-P", "-t", topic, "-K", "\t",
         "-X", "max.in.flight.requests.per.connection=1", "-X", "message.timeout.ms=15000",
         stdin="".join(f"{k}\t{v}\n" for k, v in pairs).encode())
    check_log(read_all(old, topic), pairs)


@pytest.mark.parametrize("fallback", FALLBACKS)
def test_kcat_assuming_an_old_broker_consumes(old, fallback):
    """kcat with api.version.request=false and broker.version.fallback=0.9.0 (Metadata v0,
    ListOffsets v0, Fetch v1 with magic 0 messages) or 0.10.0 (ApiVersions, then ListOffsets
    v2 and Fetch v11) reads from the beginning to the end exactly the records confluent-kafka
    produced."""
    topic = f"kcat-{fallback}-consumed"
    create_topic(old, topic)
    produce(old, topic, expected(f"for-kcat-{fallback}", N))
    stored = read_all(old, topic)
    raw = kcat(old, fallback, f"kcat-{fallback}-consume", "-C", "-t", topic, "-o", "beginning",
               "-e", "-f", "%p\t%o\t%k\t%s\n")
    got = []
    for line in raw.decode().splitlines():
        p, o, k, v = line.split("\t")
        got.append((int(p), int(o), k, v))
    assert sorted(got) == stored


# -- Burrow 1.2.1 ----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def service(argv, log_path, cwd):
    """A process in its own session, logging to `log_path`; when the block ends it and
    anything it started get SIGTERM, then SIGKILL if still there after 10 s."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def poll(what, proc, probe, timeout, explain):
    """Calls `probe` until it returns something other than None, and returns that, or None
    once `timeout` seconds have passed; fails with `explain()` if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what}: the process exited {proc.returncode}\n{explain()}")
        got = probe()
        if got is not None:
            return got
        time.sleep(0.2)
    return None


def zookeeper_serving(port):
    """True once ZooKeeper serves sessions (`srvr` says its mode; `ruok` answers imok even
    while the server has not started), else None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"srvr")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            return True if b"Mode: standalone" in answer else None
    except OSError:
        return None


def http_json(url):
    """The JSON body of a 200 answer, or None (not listening yet, or another status)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


BURROW_CONFIG = """\
[general]
pidfile="{dir}/burrow.pid"

[logging]
level="info"

[zookeeper]
servers=["127.0.0.1:{zk_port}"]
timeout=6
root-path="/burrow"

[client-profile.sluice]
client-id="{client_id}"
kafka-version="{kafka_version}"

[cluster.sluice]
class-name="kafka"
servers=["{bootstrap}"]
client-profile="sluice"
topic-refresh=1
offset-refresh=1

[consumer.sluice]
class-name="kafka"
cluster="sluice"
servers=["{bootstrap}"]
client-profile="sluice"

[httpserver.default]
address="127.0.0.1:{http_port}"

[storage.default]
class-name="inmemory"
workers=2
intervals=10
expire-group=604800
min-distance=1
"""


COORDINATOR_NOT_READY = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                         KafkaError.COORDINATOR_LOAD_IN_PROGRESS}


def commit(broker, group, offsets):
    """Commits `offsets` for `group` with confluent-kafka, retrying while the coordinator is
    not ready (Kafka answers NOT_COORDINATOR while it loads __consumer_offsets)."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                c.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as e:
                if e.args[0].code() not in COORDINATOR_NOT_READY or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
    finally:
        c.close()


@pytest.fixture
def burrow_broker(tmp_path):
    yield from running_broker(tmp_path, ["--set", "group.initial.rebalance.delay.ms=0"])


# kafka-version "0.10.0" is the client profile Debian's /etc/burrow/burrow.toml ships;
# "2.1.0" is the newest Burrow 1.2.1 knows.
@pytest.mark.parametrize("kafka_version", ["0.10.0", "2.1.0"])
def test_burrow_reports_per_partition_lag_of_a_group(burrow_broker, tmp_path, kafka_version):
    """Burrow 1.2.1 (Debian's, with ZooKeeper) pointed at sluice learns the partitions' end
    offsets (ListOffsets v0, whatever kafka-version says) and the group's commits (it reads
    __consumer_offsets from the oldest offset: ListOffsets v0 and Fetch v2 with "0.10.0",
    ListOffsets v1 and Fetch v4 with "2.1.0", and decodes offset commit values v0, v1 and v3),
    and its HTTP API reports each partition's committed offset and current lag as produced
    and committed."""
    for path in (BURROW, ZOOKEEPER_LIB):
        if not path.exists():
            pytest.fail(f"{path} does not exist: run tests/go/install.sh")
    broker = burrow_broker
    topic, group, client_id = "burrow-lag", "burrow-group", f"burrow-{kafka_version}"
    ends = {0: 5, 1: 7, 2: 9}
    commits = {0: 2, 1: 7, 2: 4}
    create_topic(broker, topic, len(ends))
    prod = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for p, count in ends.items():
        for i in range(count):
            prod.produce(topic, key=f"k{i}".encode(), value=f"v{p}-{i}".encode(), partition=p)
    assert prod.flush(WAIT_S) == 0
    # __consumer_offsets must exist before Burrow starts: it reads its partition count once.
    commit(broker, "burrow-warm-up", [TopicPartition(topic, 0, 0)])

    zk_port, http_port = free_port(), free_port()
    zk_dir = tmp_path / "zookeeper"
    zk_dir.mkdir()
    (zk_dir / "zoo.cfg").write_text(
        f"tickTime=2000\ndataDir={zk_dir / 'data'}\nclientPort={zk_port}\n"
        "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
        "4lw.commands.whitelist=srvr\n")
    burrow_dir = tmp_path / "burrow"
    burrow_dir.mkdir()
    (burrow_dir / "burrow.toml").write_text(BURROW_CONFIG.format(
        dir=burrow_dir, zk_port=zk_port, client_id=client_id, kafka_version=kafka_version,
        bootstrap=broker.bootstrap, http_port=http_port))
    zk_log, burrow_log = tmp_path / "zookeeper.log", tmp_path / "burrow.log"
    api = f"http://127.0.0.1:{http_port}/v3/kafka/sluice"

    def zookeeper_log():
        return "ZooKeeper's log:\n" + zk_log.read_text(errors="replace")[-3000:]

    def burrow_errors():
        """Burrow's distinct error lines, and what the broker refused from it."""
        errors = []
        for line in burrow_log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") == "error":
                entry.pop("ts", None)
                if entry not in errors:
                    errors.append(entry)
        return ("Burrow's errors:\n" + "\n".join(json.dumps(e) for e in errors)
                + f"\nrequests the broker refused as unsupported from {client_id!r}: "
                f"{unsupported_requests(broker, client_id)}")

    with service(["java", "-Xmx128m", "-cp", f"{ZOOKEEPER_LIB}/*",
                  "org.apache.zookeeper.server.ZooKeeperServerMain", str(zk_dir / "zoo.cfg")],
                 zk_log, zk_dir) as zk:
        assert poll("ZooKeeper serving", zk, lambda: zookeeper_serving(zk_port),
                    SERVICE_START_S, zookeeper_log), zookeeper_log()
        with service([str(BURROW), "-config-dir", str(burrow_dir)], burrow_log,
                     burrow_dir) as burrow:
            assert poll("Burrow's HTTP API", burrow,
                        lambda: http_json(f"http://127.0.0.1:{http_port}/v3/kafka"),
                        SERVICE_START_S, burrow_errors), burrow_errors()

            # The group commits only once Burrow knows the end offsets: Burrow drops commits
            # for partitions it has no broker offset for.
            def topic_offsets():
                body = http_json(f"{api}/topic/{topic}")
                return body["offsets"] if body and body.get("offsets") else None
            seen = poll("Burrow's topic offsets", burrow, topic_offsets, BURROW_OFFSETS_WAIT_S,
                        burrow_errors)
            assert seen == [ends[p] for p in sorted(ends)], (
                f"Burrow's end offsets of {topic}: {seen}, expected {ends}\n{burrow_errors()}")

            member = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                               "enable.auto.commit": False, "auto.offset.reset": "earliest"})
            member.subscribe([topic])
            read = 0
            deadline = time.monotonic() + WAIT_S
            while read < sum(ends.values()) and time.monotonic() < deadline:
                m = member.poll(1.0)
                if m is not None and not m.error():
                    read += 1
            assert read == sum(ends.values())
            member.commit(offsets=[TopicPartition(topic, p, o) for p, o in commits.items()],
                          asynchronous=False)
            member.close()

            last = {}

            def lag():
                body = last["lag"] = http_json(f"{api}/consumer/{group}/lag")
                if not body or not body.get("status"):
                    return None
                parts = {p["partition"]: p for p in body["status"]["partitions"]
                         if p["topic"] == topic and p.get("end")}
                if {p: parts[p]["end"]["offset"] for p in parts} != commits:
                    return None
                return body["status"], parts
            got = poll("Burrow's lag", burrow, lag, BURROW_LAG_WAIT_S, burrow_errors)
            assert got is not None, (
                f"Burrow reported no lag for {group}: its last answer was {last['lag']}; it "
                f"lists the consumers {http_json(f'{api}/consumer')}\n{burrow_errors()}")
            status, parts = got
            assert {p: (parts[p]["end"]["offset"], parts[p]["current_lag"]) for p in parts} == {
                p: (commits[p], ends[p] - commits[p]) for p in ends}
            assert status["partition_count"] == len(ends)
            assert status["totallag"] == sum(ends[p] - commits[p] for p in ends)
