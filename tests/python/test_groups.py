"""Consumer groups with real clients: load balancing, failover after SIGKILL, static
membership, fan-out, offsets across restarts, kcat -G, and hostile group requests.

Group members run in their own processes (group_worker.py) so that one can be killed with
SIGKILL, the way a consumer machine dies: no LeaveGroup, only its session timing out.
"""

import json
import os
import pathlib
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import compact_str, running_broker, sluice_cli, uvarint

WORKER = str(pathlib.Path(__file__).with_name("group_worker.py"))
PARTITIONS = 6
SESSION_TIMEOUT_S = 6.0  # group_worker.SESSION_TIMEOUT_MS
WAIT_S = 60


@pytest.fixture
def broker(tmp_path):
    yield from running_broker(tmp_path)


def create_topic(broker, name, partitions=PARTITIONS):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def wait_for(what, predicate, timeout=WAIT_S):
    """Polls `predicate` until it holds; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class Timeline:
    """Events of every worker in the order the test received them. A commit is printed only
    after the broker acknowledged it, so a message received after a commit event was fetched
    after that commit was applied."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []

    def add(self, worker, ev):
        with self.lock:
            self.events.append((worker, ev))


class Worker:
    """A group_worker.py process and the events it printed."""

    def __init__(self, name, broker, client, group, topic, assignor, instance=None,
                 timeline=None):
        self.timeline = timeline or Timeline()
        self.name = name
        args = [sys.executable, WORKER, client, broker.bootstrap, group, topic, assignor]
        if instance:
            args.append(instance)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.lock = threading.Lock()
        self.parts = []
        self.callbacks = 0
        self.msgs = []  # (partition, offset) in consumption order
        self.commits = {}  # partition -> highest committed next-offset
        self.since_commit = 0  # messages consumed after the last commit
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            self.timeline.add(self.name, ev)
            with self.lock:
                if ev["ev"] == "assignment":
                    self.parts, self.callbacks = ev["parts"], ev["callbacks"]
                elif ev["ev"] == "msg":
                    self.msgs.append((ev["p"], ev["o"]))
                    self.since_commit += 1
                elif ev["ev"] == "commit":
                    self.since_commit = 0
                    self.commits[ev["p"]] = max(self.commits.get(ev["p"], 0), ev["o"])

    def assignment(self):
        with self.lock:
            return list(self.parts)

    def kill(self):
        self.proc.kill()
        self.proc.wait(30)
        self.reader.join(30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.reader.join(30)


class Feeder:
    """Produces numbered messages round-robin over the partitions with acks=all until
    stopped, remembering where each landed."""

    def __init__(self, broker, topic, rate_per_s=400):
        self.producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                                  "linger.ms": 5})
        self.topic = topic
        self.rate = rate_per_s
        self.produced = set()
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _delivered(self, err, msg):
        assert err is None, err
        self.produced.add((msg.partition(), msg.offset()))

    def _run(self):
        seq = 0
        while not self.stop_flag.is_set():
            self.producer.produce(self.topic, value=str(seq).encode(),
                                  partition=seq % PARTITIONS, on_delivery=self._delivered)
            seq += 1
            self.producer.poll(0)
            time.sleep(1.0 / self.rate)
        assert self.producer.flush(30) == 0

    def stop(self):
        self.stop_flag.set()
        self.thread.join(60)
        return set(self.produced)


def balanced(workers, per_worker):
    parts = [w.assignment() for w in workers]
    every = sorted(p for ps in parts for p in ps)
    return every == list(range(PARTITIONS)) and all(len(ps) == per_worker for ps in parts)


def check_exactly_covered(produced, timeline):
    """Every produced message was consumed, and a message consumed again was never below an
    offset the group had already committed (acknowledged) for its partition: duplicates come
    only from the uncommitted window. Returns the number of redeliveries."""
    with timeline.lock:
        events = list(timeline.events)
    if os.environ.get("SLUICE_GROUP_TIMELINE"):
        with open(os.environ["SLUICE_GROUP_TIMELINE"], "w") as out:
            for who, ev in events:
                out.write(f"{who} {json.dumps(ev)}\n")
    consumed = {(ev["p"], ev["o"]) for _, ev in events if ev["ev"] == "msg"}
    missing = produced - consumed
    assert not missing, f"{len(missing)} produced messages never consumed, e.g. {sorted(missing)[:5]}"
    committed = {}
    seen = set()
    duplicates = 0
    for who, ev in events:
        if ev["ev"] == "commit":
            committed[ev["p"]] = max(committed.get(ev["p"], 0), ev["o"])
        elif ev["ev"] == "msg":
            m = (ev["p"], ev["o"])
            if m in seen:
                duplicates += 1
                assert ev["o"] >= committed.get(ev["p"], 0), (
                    f"{who} got {m} again after the group committed "
                    f"{committed[ev['p']]} for partition {ev['p']}")
            seen.add(m)
    return duplicates


def run_failover(broker, client, assignor, group):
    """Two then three members split six partitions; the third is SIGKILLed; the other two
    take over its partitions after its session times out and nothing is lost."""
    topic = f"failover-{group}"
    create_topic(broker, topic)
    feeder = Feeder(broker, topic)
    timeline = Timeline()
    a = Worker("a", broker, client, group, topic, assignor, timeline=timeline)
    b = Worker("b", broker, client, group, topic, assignor, timeline=timeline)
    c = None
    try:
        wait_for("a and b to split six partitions 3/3", lambda: balanced([a, b], 3))
        c = Worker("c", broker, client, group, topic, assignor, timeline=timeline)
        wait_for("a, b and c to split six partitions 2/2/2", lambda: balanced([a, b, c], 2))
        # Kill c between two commits, with messages consumed but not committed.
        wait_for("c to consume past a commit", lambda: c.commits and c.since_commit > 0)
        c.kill()
        killed_at = time.monotonic()
        taken_over = wait_for("a and b to take over c's partitions",
                              lambda: balanced([a, b], 3), timeout=SESSION_TIMEOUT_S + WAIT_S)
        rebalance_s = taken_over - killed_at
        time.sleep(1)  # keep producing after the takeover: consumption must go on
        produced = feeder.stop()
        wait_for("every produced message to be consumed",
                 lambda: produced <= {m for w in (a, b, c) for m in w.msgs})
        duplicates = check_exactly_covered(produced, timeline)
        print(f"\n{client}/{assignor}: {len(produced)} messages, {duplicates} redelivered, "
              f"takeover {rebalance_s:.2f}s after SIGKILL (session timeout "
              f"{SESSION_TIMEOUT_S:.0f}s)")
        # The takeover waits for the session to expire: c sent no LeaveGroup.
        assert rebalance_s >= SESSION_TIMEOUT_S - 1.0, rebalance_s
    finally:
        feeder.stop_flag.set()
        for w in (a, b, c):
            if w is not None:
                w.stop()


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
def test_confluent_group_fails_over_after_sigkill_without_losing_messages(broker, assignor):
    run_failover(broker, "confluent", assignor, f"cf-{assignor}")


@pytest.mark.parametrize("assignor", ["sticky", "range"])
def test_kafka_python_group_fails_over_after_sigkill_without_losing_messages(broker, assignor):
    run_failover(broker, "kafka-python", assignor, f"kp-{assignor}")


def test_restarted_static_member_gets_its_partitions_back_without_a_rebalance(broker):
    topic, group = "static", "static-group"
    create_topic(broker, topic)
    feeder = Feeder(broker, topic)
    timeline = Timeline()
    a = Worker("a", broker, "confluent", group, topic, "range", "a", timeline)
    b = Worker("b", broker, "confluent", group, topic, "range", "b", timeline)
    b2 = None
    try:
        wait_for("a and b to split the partitions", lambda: balanced([a, b], 3))
        wait_for("b to commit", lambda: b.commits)
        a_callbacks = a.callbacks
        b_parts = b.assignment()
        b.kill()  # a static member sends no LeaveGroup even on close; SIGKILL is the same
        b2 = Worker("b2", broker, "confluent", group, topic, "range", "b", timeline)
        wait_for("the restarted b to get its partitions", lambda: b2.assignment() == b_parts,
                 timeout=SESSION_TIMEOUT_S - 1)
        time.sleep(1)
        produced = feeder.stop()
        wait_for("every produced message to be consumed",
                 lambda: produced <= {m for w in (a, b, b2) for m in w.msgs})
        assert a.callbacks == a_callbacks, "a saw a rebalance"
        assert b2.callbacks == 1, "the restarted member was assigned once, without a rebalance"
        check_exactly_covered(produced, timeline)
    finally:
        feeder.stop_flag.set()
        for w in (a, b, b2):
            if w is not None:
                w.stop()


def consume_all(broker, group, topic, expected, extra=None):
    """Consumes as a group member until `expected` messages arrived; returns (partition,
    offset) pairs."""
    conf = {"bootstrap.servers": broker.bootstrap, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": False}
    conf.update(extra or {})
    c = Consumer(conf)
    c.subscribe([topic])
    seen = []
    deadline = time.monotonic() + WAIT_S
    while len(seen) < expected and time.monotonic() < deadline:
        for m in c.consume(num_messages=500, timeout=0.5):
            if m.error() is None:
                seen.append((m.partition(), m.offset()))
    c.commit(asynchronous=False)
    c.close()
    return seen


def produce(broker, topic, n):
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(n):
        p.produce(topic, value=str(i).encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0


def test_two_groups_each_receive_every_message(broker):
    create_topic(broker, "fanout")
    produce(broker, "fanout", 600)
    first = consume_all(broker, "fan-1", "fanout", 600)
    second = consume_all(broker, "fan-2", "fanout", 600)
    want = {(p, o) for p in range(PARTITIONS) for o in range(100)}
    assert set(first) == want and len(first) == 600
    assert set(second) == want and len(second) == 600


def test_committed_offsets_and_metadata_survive_a_restart_and_kcat_consumes_as_a_group(broker):
    create_topic(broker, "kept")
    produce(broker, "kept", 60)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "keeper"})
    offsets = [TopicPartition("kept", p, 5 + p, metadata=f"checkpoint ✓ {p}")
               for p in range(PARTITIONS)]
    c.commit(offsets=offsets, asynchronous=False)
    c.close()

    # kcat (librdkafka 2.0.2) consumes as a group, commits, and exits at the end.
    def kcat_group():
        out = subprocess.run(["kcat", "-b", broker.bootstrap, "-G", "kcat-group", "kept",
                              "-X", "auto.offset.reset=earliest", "-e", "-f", "%p %o\n"],
                             capture_output=True, timeout=WAIT_S, check=True)
        return [tuple(map(int, line.split())) for line in out.stdout.decode().splitlines()]

    assert len(kcat_group()) == 60
    broker.restart()
    produce(broker, "kept", 12)

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "keeper"})
    committed = c.committed([TopicPartition("kept", p) for p in range(PARTITIONS)], timeout=30)
    c.close()
    assert [(tp.offset, tp.metadata) for tp in committed] == \
        [(5 + p, f"checkpoint ✓ {p}") for p in range(PARTITIONS)]
    # kcat's group resumes where it committed before the restart: only the new messages.
    again = kcat_group()
    assert sorted(again) == sorted((p, o) for p in range(PARTITIONS) for o in (10, 11))


# -- hostile group requests, on the wire ----------------------------------------------------

def kstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def request(broker, api_key, version, body, corr=7):
    with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as s:
        header = struct.pack(">hhi", api_key, version, corr) + kstr("hostile")
        frame = header + body
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        resp = recv_exact(s, size)
    assert struct.unpack(">i", resp[:4])[0] == corr
    return resp[4:]


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


def join_v5(group, member, session_ms, rebalance_ms, metadata):
    return (kstr(group) + struct.pack(">ii", session_ms, rebalance_ms) + kstr(member)
            + struct.pack(">h", -1) + kstr("consumer") + struct.pack(">i", 1) + kstr("range")
            + struct.pack(">i", len(metadata)) + metadata)


def join_error(resp):
    # JoinGroup v5 response: throttle_time_ms, error_code, ...
    return struct.unpack(">h", resp[4:6])[0]


def test_hostile_group_requests_get_errors(broker):
    join_group, heartbeat, find_coordinator = 11, 12, 10
    request(broker, find_coordinator, 1, kstr("g") + b"\x00")  # creates the offsets topic
    INVALID_SESSION_TIMEOUT, INVALID_REQUEST, UNKNOWN_MEMBER_ID = 26, 42, 25
    huge = b"\x00" * (2 << 20)
    assert join_error(request(broker, join_group, 5, join_v5("g", "", 10000, 10000, huge))) \
        == INVALID_REQUEST
    for session in (0, -1, 2**31 - 1):
        resp = request(broker, join_group, 5, join_v5("g", "", session, 10000, b"m"))
        assert join_error(resp) == INVALID_SESSION_TIMEOUT
    resp = request(broker, join_group, 5, join_v5("g", "", 10000, -7, b"m"))
    assert join_error(resp) == INVALID_REQUEST
    # Thousands of tiny protocols: refused before the coordinator compares any lists.
    many = struct.pack(">i", 5000) + b"".join(kstr(f"p{i}") + struct.pack(">i", 0)
                                               for i in range(5000))
    body = (kstr("g") + struct.pack(">ii", 10000, 10000) + kstr("") + struct.pack(">h", -1)
            + kstr("consumer") + many)
    assert join_error(request(broker, join_group, 5, body)) == INVALID_REQUEST
    # Heartbeat v3: group, generation, member, instance id. Unknown member and generation.
    def hb(member, generation):
        body = kstr("g") + struct.pack(">i", generation) + kstr(member) + struct.pack(">h", -1)
        return struct.unpack(">h", request(broker, heartbeat, 3, body)[4:6])[0]

    assert hb("nobody", 987654) == UNKNOWN_MEMBER_ID
    # Nothing above created a group.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert admin.list_consumer_groups().result(30).valid == []
    # A real member heartbeating with a generation it never had.
    MEMBER_ID_REQUIRED, ILLEGAL_GENERATION = 79, 22
    first = request(broker, join_group, 5, join_v5("g", "", 10000, 10000, b"m"))
    assert join_error(first) == MEMBER_ID_REQUIRED
    member = join_member_id(first)
    joined = request(broker, join_group, 5, join_v5("g", member, 10000, 10000, b"m"))
    assert join_error(joined) == 0
    assert hb(member, 987654) == ILLEGAL_GENERATION


def join_member_id(resp):
    # JoinGroup v5 response: throttle, error, generation, protocol name, leader, member id.
    at = 4 + 2 + 4
    for _ in range(2):
        (n,) = struct.unpack_from(">h", resp, at)
        at += 2 + max(n, 0)
    (n,) = struct.unpack_from(">h", resp, at)
    return resp[at + 2:at + 2 + n].decode()


# -- the group APIs clients rarely use, on the wire -------------------------------------

def cstr(s):
    return compact_str(s.encode())


class Reader:
    """Reads a flexible-version response body."""

    def __init__(self, buf):
        self.buf, self.at = buf, 0

    def take(self, fmt):
        (v,) = struct.unpack_from(fmt, self.buf, self.at)
        self.at += struct.calcsize(fmt)
        return v

    def uvarint(self):
        shift = value = 0
        while True:
            b = self.buf[self.at]
            self.at += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    def str(self):
        n = self.uvarint() - 1
        s = self.buf[self.at:self.at + n].decode() if n >= 0 else None
        self.at += max(n, 0)
        return s

    def tags(self):
        assert self.uvarint() == 0

    def array(self, item):
        return [item() for _ in range(self.uvarint() - 1)]


def flexible_request(broker, api_key, version, body, corr=9):
    with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as s:
        header = struct.pack(">hhi", api_key, version, corr) + kstr("wire") + b"\x00"
        frame = header + body
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        resp = Reader(recv_exact(s, size))
    assert resp.take(">i") == corr
    resp.tags()
    return resp


def test_batched_find_coordinator_multi_group_offset_fetch_and_offset_delete(broker):
    create_topic(broker, "wire", partitions=2)
    for group, offset in (("g1", 3), ("g2", 8)):
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
        c.commit(offsets=[TopicPartition("wire", p, offset + p) for p in (0, 1)],
                 asynchronous=False)
        c.close()

    # FindCoordinator v4: one answer per key, all this broker.
    r = flexible_request(broker, 10, 4, b"\x00" + uvarint(3) + cstr("g1") + cstr("g2") + b"\x00")
    r.take(">i")

    def coordinator():
        key, node, host, port, error = r.str(), r.take(">i"), r.str(), r.take(">i"), r.take(">h")
        r.str()
        r.tags()
        return key, node, port, error

    assert r.array(coordinator) == [("g1", 0, broker.port, 0), ("g2", 0, broker.port, 0)]

    # OffsetFetch v8: two groups in one request, one with all its offsets (null topics),
    # one for a single partition, plus a group that does not exist.
    body = uvarint(4)
    body += cstr("g1") + b"\x00" + b"\x00"  # null topics: every committed offset
    body += cstr("g2") + uvarint(2) + cstr("wire") + uvarint(2) + struct.pack(">i", 1) + b"\x00"
    body += b"\x00"
    body += cstr("nobody") + b"\x00" + b"\x00"
    body += b"\x00" + b"\x00"  # require_stable, tagged fields
    r = flexible_request(broker, 9, 8, body)
    r.take(">i")

    def group():
        gid = r.str()

        def topic():
            name = r.str()

            def partition():
                p, offset, _epoch = r.take(">i"), r.take(">q"), r.take(">i")
                meta, error = r.str(), r.take(">h")
                r.tags()
                return p, offset, meta, error

            parts = r.array(partition)
            r.tags()
            return name, parts

        topics, error = r.array(topic), None
        error = r.take(">h")
        r.tags()
        return gid, topics, error

    assert r.array(group) == [
        ("g1", [("wire", [(0, 3, "", 0), (1, 4, "", 0)])], 0),
        ("g2", [("wire", [(1, 9, "", 0)])], 0),
        ("nobody", [], 0),
    ]

    # OffsetDelete v0 (not flexible) on the empty group g1 removes partition 0's offset.
    body = kstr("g1") + struct.pack(">i", 1) + kstr("wire") + struct.pack(">ii", 1, 0)
    resp = request(broker, 47, 0, body)
    error, _throttle, topics = struct.unpack_from(">hii", resp)
    assert (error, topics) == (0, 1)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g1"})
    got = c.committed([TopicPartition("wire", p) for p in (0, 1)], timeout=30)
    c.close()
    assert [tp.offset for tp in got] == [-1001, 4]  # -1001: librdkafka's "no offset"

    # DeleteGroups through the AdminClient: g2 goes, its offsets with it.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_consumer_groups(["g2"])["g2"].result(30)
    listed = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
    assert listed == {"g1"}


# -- sluice groups ---------------------------------------------------------------------

def sluice(broker, *args, ok=True):
    return sluice_cli(broker, "groups", *args, ok=ok)


def rows(text):
    return [line.split() for line in text.splitlines() if line.strip()]


def test_sluice_groups_list_describe_and_reset_offsets(broker):
    create_topic(broker, "cli", partitions=2)
    produce_to = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(20):
        produce_to.produce("cli", value=b"x", partition=i % 2, timestamp=1_000_000 + i)
    assert produce_to.flush(30) == 0

    member = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-group",
                       "client.id": "cli-client", "auto.offset.reset": "earliest",
                       "enable.auto.commit": False})
    member.subscribe(["cli"])
    got = 0
    deadline = time.monotonic() + WAIT_S
    while got < 6 and time.monotonic() < deadline:
        got += len([m for m in member.consume(6 - got, timeout=0.5) if m.error() is None])
    member.commit(offsets=[TopicPartition("cli", 0, 3), TopicPartition("cli", 1, 4)],
                  asynchronous=False)
    try:
        assert ["cli-group", "Stable", "consumer"] in rows(sluice(broker, "list"))
        assert rows(sluice(broker, "list", "--state", "Empty")) == [["GROUP", "STATE", "PROTOCOL-TYPE"]]
        described = rows(sluice(broker, "describe", "cli-group"))
        lag_rows = [r for r in described if r[0] == "cli"]
        owner = [r for r in described if len(r) > 2 and r[2] == "cli-client"]
        assert len(owner) == 1 and owner[0][3] == "/127.0.0.1" and owner[0][4] == "cli[0,", owner
        assert [r[:5] for r in lag_rows] == [["cli", "0", "3", "10", "7"], ["cli", "1", "4", "10", "6"]]
        assert all(r[5] == owner[0][0] for r in lag_rows)
        refused = sluice(broker, "reset-offsets", "cli-group", "--topic", "cli", "--to-earliest",
                         ok=False)
        assert "stop its consumers" in refused
    finally:
        member.close()

    def committed():
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-group"})
        out = [tp.offset for tp in c.committed([TopicPartition("cli", p) for p in (0, 1)],
                                                timeout=30)]
        c.close()
        return out

    sluice(broker, "reset-offsets", "cli-group", "--topic", "cli", "--to-earliest", "--dry-run")
    assert committed() == [3, 4]
    sluice(broker, "reset-offsets", "cli-group", "--topic", "cli", "--to-earliest")
    assert committed() == [0, 0]
    sluice(broker, "reset-offsets", "cli-group", "--topic", "cli", "--to-latest")
    assert committed() == [10, 10]
    sluice(broker, "reset-offsets", "cli-group", "--topic", "cli", "--to-offset", "99")
    assert committed() == [10, 10], "clamped to the log end"
    # Partition 0 holds timestamps 1_000_000, _002, …; partition 1 _001, _003, ….
    sluice(broker, "reset-offsets", "cli-group", "--topic", "cli", "--to-timestamp", "1000010")
    assert committed() == [5, 5]
