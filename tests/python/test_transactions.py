"""Transactions (Kafka exactly-once) with real clients: a consume-transform-produce pipeline
SIGKILLed mid-transaction, zombie fencing, the transaction timeout, a broker SIGKILLed with
transactions open, kcat and kafka-python as read_committed readers, and ListTransactions /
DescribeTransactions on the wire.

Visibility is judged three ways: by read_committed and read_uncommitted consumers of the real
clients, and by the last stable offset (LSO) the broker reports, read with hand-encoded
ListOffsets v2 requests (latest offset: the high watermark at read_uncommitted, the LSO at
read_committed) so that no client's interpretation sits in between.

The pipeline test is randomised; its seed is printed, replay with SLUICE_TXN_SEED=<seed>.
"""

import collections
import json
import os
import pathlib
import queue
import random
import struct
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition
from kafka.errors import TransactionalIdNotFoundError
from kafka.structs import OffsetAndMetadata

from conftest import running_broker, uvarint
from crosscheck import fetch_batches
from test_groups import cstr, flexible_request, kstr, wait_for
from test_hostile import connect, frame, recv_frame

WORKER = str(pathlib.Path(__file__).with_name("txn_worker.py"))
WAIT_S = 60
# Timed-out transactions are looked for every half second instead of every ten.
TXN_ARGS = ["--set", "transaction.abort.timed.out.transaction.cleanup.interval.ms=500"]
COORDINATOR_LOADED = "transaction coordinator loaded"
READ_UNCOMMITTED, READ_COMMITTED = 0, 1
# What librdkafka reports when a producer was fenced by a newer one with its transactional id.
FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


@pytest.fixture
def broker(tmp_path):
    yield from running_broker(tmp_path, TXN_ARGS)


# -- helpers ------------------------------------------------------------------------------

def create_topic(broker, name, partitions):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def txn_producer(broker, txn_id, conf=None):
    """A confluent-kafka transactional producer, initialised."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": txn_id,
                  "linger.ms": 5, **(conf or {})})
    p.init_transactions(WAIT_S)
    return p


def produce_acked(producer, topic, partition, values):
    """Produces `values` to one partition and waits until the broker acknowledged every one of
    them (inside a transaction: they are in the log, whether or not it commits). Returns their
    offsets, in order."""
    offsets, errors = {}, []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)
        else:
            offsets[msg.value()] = msg.offset()

    for v in values:
        producer.produce(topic, value=v, partition=partition, on_delivery=delivered)
    assert producer.flush(WAIT_S) == 0, "records were not acknowledged"
    assert not errors, errors[:3]
    return [offsets[v] for v in values]


def assert_commit_refused(producer):
    """The broker refuses the producer's commit: a definite error, not a timeout."""
    with pytest.raises(KafkaException) as raised:
        producer.commit_transaction(WAIT_S)
    err = raised.value.args[0]
    print(f"\ncommit refused: {err}")
    assert err.code() != KafkaError._TIMED_OUT and (err.fatal() or err.txn_requires_abort()), err


def read_all(broker, topic, partitions, isolation):
    """Everything a confluent-kafka consumer at `isolation` ("read_committed" or
    "read_uncommitted") reads from the start of each partition up to its end (the LSO at
    read_committed): {partition: [(offset, value)]}."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"reader-{isolation}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": isolation})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen = {p: [] for p in range(partitions)}
    ended = set()
    deadline = time.monotonic() + WAIT_S
    try:
        while len(ended) < partitions:
            assert time.monotonic() < deadline, \
                f"{isolation}: no end of {topic} after {WAIT_S}s; ended {ended}, read {seen}"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(m.partition())
                    continue
                raise KafkaException(m.error())
            seen[m.partition()].append((m.offset(), m.value()))
    finally:
        c.close()
    return seen


def values(read):
    return [v for _, v in read]


def list_offset(broker, topic, partition, isolation):
    """The latest offset by a hand-encoded ListOffsets v2: the high watermark at
    READ_UNCOMMITTED, the last stable offset at READ_COMMITTED. None if the broker answered
    with an error (a partition still loading after a restart)."""
    body = struct.pack(">ib", -1, isolation) + struct.pack(">i", 1) + kstr(topic)
    body += struct.pack(">i", 1) + struct.pack(">iq", partition, -1)
    s = connect(broker)
    try:
        s.sendall(frame(2, 2, 11, body))
        resp = recv_frame(s)
    finally:
        s.close()
    corr, _throttle, ntopics = struct.unpack_from(">iii", resp)
    assert (corr, ntopics) == (11, 1)
    (name_len,) = struct.unpack_from(">h", resp, 12)
    at = 14 + name_len
    nparts, part, error, _ts, offset = struct.unpack_from(">iihqq", resp, at)
    assert (nparts, part) == (1, partition), (nparts, part)
    return offset if error == 0 else None


def lso(broker, topic, partition):
    return list_offset(broker, topic, partition, READ_COMMITTED)


def high_watermark(broker, topic, partition):
    return list_offset(broker, topic, partition, READ_UNCOMMITTED)


def settled(broker, topic, partition):
    """No transaction is open on the partition: its LSO has reached its high watermark."""
    stable = lso(broker, topic, partition)
    return stable is not None and stable == high_watermark(broker, topic, partition)


def log_count(broker, text):
    """How often `text` occurs in the broker's whole log, across restarts."""
    try:
        return pathlib.Path(broker.log_path).read_text(errors="replace").count(text)
    except OSError:
        return 0


def restart_and_wait_for_coordinator(broker, kill):
    """Restarts the broker (SIGKILL or clean stop) and waits until it replayed its transaction
    state."""
    loaded_before = log_count(broker, COORDINATOR_LOADED)
    if kill:
        broker.kill()
    else:
        broker.stop()
    broker.start()
    wait_for("the transaction coordinator to load after the restart",
             lambda: log_count(broker, COORDINATOR_LOADED) > loaded_before)


# -- 1. a consume-transform-produce pipeline killed mid-transaction ---------------------------

N_INPUT = 3000
PIPELINE_PARTITIONS = 3
KILL_ROUNDS = 5
# Where a round kills the worker: holding an open transaction whose records are acknowledged;
# holding one that also carries the group's offsets; just after letting it commit (racing the
# commit); holding just after a commit returned.
KILL_POINTS = ("produced", "offsets", "committing", "between")
MAX_COMMITS_BEFORE_KILL = 3
BATCHES = (20, 50, 100)
SOURCE, SINK, PIPELINE_GROUP, PIPELINE_TXN_ID = "eos-in", "eos-out", "eos-group", "eos-worker"


class TxnWorker:
    """A txn_worker.py process and the events it printed."""

    def __init__(self, broker, stderr_path, batch):
        self.stderr_path = stderr_path
        args = [sys.executable, WORKER, broker.bootstrap, SOURCE, SINK, PIPELINE_GROUP,
                PIPELINE_TXN_ID, str(batch)]
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err)
        self.queue = queue.Queue()
        self.events = []  # complete once the reader ended
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            self.events.append(ev)
            self.queue.put(ev)
        self.queue.put(None)

    def next_event(self):
        try:
            ev = self.queue.get(timeout=WAIT_S)
        except queue.Empty:
            pytest.fail(f"the worker printed nothing for {WAIT_S}s; last events "
                        f"{self.events[-5:]}")
        if ev is None:
            code = self.proc.wait(30)
            pytest.fail(f"the worker exited {code}:\n{self.stderr()}")
        return ev

    def go(self):
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.reader.join(30)

    def finish(self):
        self.proc.stdin.close()
        code = self.proc.wait(WAIT_S)
        self.reader.join(30)
        assert code == 0, f"the worker exited {code}:\n{self.stderr()}"

    def stderr(self):
        return pathlib.Path(self.stderr_path).read_text(errors="replace")[-3000:]

    def transactions(self):
        """[(records, committed)] for each transaction whose records were acknowledged."""
        txns = []
        for ev in self.events:
            if ev["ev"] == "produced":
                txns.append([ev["n"], False])
            elif ev["ev"] == "committed":
                txns[-1][1] = True
        return [tuple(t) for t in txns]


def drive_to_kill(worker, point, commits_first, rng):
    """Lets the worker commit `commits_first` transactions, then SIGKILLs it at `point`."""
    commits = 0
    while True:
        kind = worker.next_event()["ev"]
        due = commits >= commits_first
        if kind == "produced" and due and point == "produced":
            break
        if kind == "offsets" and due and point == "offsets":
            break
        if kind == "offsets" and due and point == "committing":
            worker.go()
            # Fault injection, not synchronisation: a random moment while the commit is in
            # flight, before or after the broker acts on it.
            time.sleep(rng.uniform(0, 0.03))
            break
        if kind == "committed":
            commits += 1
            if point == "between" and commits > commits_first:
                break
        if kind in ("produced", "offsets", "committed"):
            worker.go()
    worker.kill()


def drive_to_end(worker, broker, ends):
    """Lets the worker run until the group's committed offsets reach the end of the input."""
    checker = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": PIPELINE_GROUP,
                        "isolation.level": "read_committed", "enable.auto.commit": False})
    tps = [TopicPartition(SOURCE, p) for p in range(PIPELINE_PARTITIONS)]
    deadline = time.monotonic() + 120
    try:
        while True:
            assert time.monotonic() < deadline, "the final worker did not finish the input"
            kind = worker.next_event()["ev"]
            if kind in ("produced", "offsets", "committed"):
                worker.go()
            elif kind == "idle":
                committed = {tp.partition: tp.offset for tp in checker.committed(tps, timeout=30)}
                if committed == ends:
                    break
    finally:
        checker.close()
    worker.finish()


def test_exactly_once_pipeline_survives_sigkill(broker, tmp_path):
    """A consume-transform-produce worker (read_committed consumer in a group, transactional
    producer, offsets committed inside the transaction) is SIGKILLed five times at seeded
    random points, including while it holds an open transaction whose records are already in
    the log, and restarted with the same transactional id each time. When a last run has
    consumed all the input, every output partition read at read_committed is exactly its input
    partition transformed, in order: nothing lost, nothing twice. The group's committed offsets
    are the end of the input. At read_uncommitted the output holds every record of the
    transactions killed while open as well (so read_committed really filtered aborted data),
    and no more than those of the transactions that might have been aborted."""
    seed = int(os.environ.get("SLUICE_TXN_SEED", random.SystemRandom().randrange(2**32)))
    print(f"\ntransaction pipeline seed {seed}")
    rng = random.Random(seed)
    create_topic(broker, SOURCE, PIPELINE_PARTITIONS)
    create_topic(broker, SINK, PIPELINE_PARTITIONS)

    placed = {}  # value -> (partition, offset)

    def delivered(err, msg):
        assert err is None, err
        placed[msg.value()] = (msg.partition(), msg.offset())

    feeder = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                       "linger.ms": 5})
    for i in range(N_INPUT):
        feeder.produce(SOURCE, key=f"k{i % 101}".encode(), value=f"in-{i}".encode(),
                       on_delivery=delivered)
        feeder.poll(0)
    assert feeder.flush(WAIT_S) == 0
    assert len(placed) == N_INPUT
    by_partition = collections.defaultdict(list)
    for value, (p, o) in placed.items():
        by_partition[p].append((o, value))
    expected = {p: [b"out-" + v[3:] for _, v in sorted(by_partition.get(p, []))]
                for p in range(PIPELINE_PARTITIONS)}
    ends = {p: len(expected[p]) for p in range(PIPELINE_PARTITIONS)}
    assert sum(1 for p in ends if ends[p] > 0) > 1, "keyed input should spread over partitions"
    # Kill rounds must leave input for the last run.
    assert KILL_ROUNDS * (MAX_COMMITS_BEFORE_KILL + 1) * max(BATCHES) < N_INPUT

    # Both kinds of open transaction are killed at least once: the ">" below cannot flake.
    plan = ["produced", "offsets"] + [rng.choice(KILL_POINTS) for _ in range(KILL_ROUNDS - 2)]
    rng.shuffle(plan)
    surely_aborted = 0  # records of transactions killed while held open
    maybe_aborted = 0  # records of transactions killed while their commit was in flight
    for round_no, point in enumerate(plan):
        commits_first = rng.randrange(MAX_COMMITS_BEFORE_KILL + 1)
        batch = rng.choice(BATCHES)
        worker = TxnWorker(broker, tmp_path / f"worker-{round_no}.err", batch)
        try:
            drive_to_kill(worker, point, commits_first, rng)
        finally:
            worker.kill()
        txns = worker.transactions()
        open_at_kill = [n for n, committed in txns if not committed]
        assert len(open_at_kill) <= 1 and txns[:-1] == [(n, True) for n, _ in txns[:-1]], txns
        if point in ("produced", "offsets"):
            assert open_at_kill, f"round {round_no}: no transaction was open at the kill"
            surely_aborted += open_at_kill[0]
        elif open_at_kill:
            maybe_aborted += open_at_kill[0]
        print(f"round {round_no}: batch {batch}, killed at {point} after "
              f"{sum(1 for _, c in txns if c)} commits; open at the kill: {open_at_kill}")

    final = TxnWorker(broker, tmp_path / "worker-final.err", 250)
    try:
        drive_to_end(final, broker, ends)
    finally:
        final.kill()
    assert all(committed for _, committed in final.transactions())

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": PIPELINE_GROUP,
                  "enable.auto.commit": False})
    committed = c.committed([TopicPartition(SOURCE, p) for p in range(PIPELINE_PARTITIONS)],
                            timeout=30)
    c.close()
    assert {tp.partition: tp.offset for tp in committed} == ends

    got = read_all(broker, SINK, PIPELINE_PARTITIONS, "read_committed")
    for p in range(PIPELINE_PARTITIONS):
        out = values(got[p])
        dupes = len(out) - len(set(out))
        missing = len(set(expected[p]) - set(out))
        assert out == expected[p], (f"seed {seed}: partition {p}: {len(out)} records, "
                                    f"{dupes} duplicates, {missing} missing")
    everything = read_all(broker, SINK, PIPELINE_PARTITIONS, "read_uncommitted")
    for p in range(PIPELINE_PARTITIONS):
        assert set(values(everything[p])) == set(expected[p]), f"seed {seed}: partition {p}"
    total = sum(len(r) for r in everything.values())
    print(f"{total - N_INPUT} aborted records in the output log; at least {surely_aborted}, "
          f"at most {surely_aborted + maybe_aborted} expected")
    assert surely_aborted > 0
    assert N_INPUT + surely_aborted <= total <= N_INPUT + surely_aborted + maybe_aborted, \
        f"seed {seed}"


# -- 2. zombie fencing ------------------------------------------------------------------------

def test_zombie_producer_is_fenced(broker):
    """A second producer initialising the same transactional id fences the first: the first
    one's open transaction (its records already in the log) is aborted, its commit fails with
    a fatal fenced error, and the second one's transaction commits. read_committed readers see
    only the second producer's records; read_uncommitted readers see both."""
    topic = "zombie"
    create_topic(broker, topic, 1)
    zombie = txn_producer(broker, "fenced-id")
    zombie.begin_transaction()
    zombie_values = [b"zombie-%d" % i for i in range(5)]
    produce_acked(zombie, topic, 0, zombie_values)

    successor = txn_producer(broker, "fenced-id")
    with pytest.raises(KafkaException) as raised:
        zombie.commit_transaction(WAIT_S)
    err = raised.value.args[0]
    assert err.fatal() and err.code() in FENCED, err

    successor.begin_transaction()
    successor_values = [b"successor-%d" % i for i in range(5)]
    produce_acked(successor, topic, 0, successor_values)
    successor.commit_transaction(WAIT_S)

    assert values(read_all(broker, topic, 1, "read_committed")[0]) == successor_values
    assert values(read_all(broker, topic, 1, "read_uncommitted")[0]) == \
        zombie_values + successor_values
    assert settled(broker, topic, 0)


# -- 3. the transaction timeout ---------------------------------------------------------------

MAX_TIMEOUT_MS = 10_000
HUNG_TIMEOUT_MS = 5_000


@pytest.fixture
def timeout_broker(tmp_path):
    yield from running_broker(tmp_path, TXN_ARGS + ["--set",
                                                    f"transaction.max.timeout.ms={MAX_TIMEOUT_MS}"])


def test_transaction_timeout_aborts_a_hung_producer(timeout_broker):
    """A producer asking for a timeout above transaction.max.timeout.ms is refused. A producer
    that leaves a transaction open holds the last stable offset at its first record: records
    appended after it by others are invisible to read_committed readers. Once its
    transaction.timeout.ms has passed (and not before), the broker aborts the transaction: the
    LSO reaches the end of the log, read_committed readers see the later records and never the
    hung producer's, and the hung producer's commit then fails."""
    broker = timeout_broker
    topic = "hung"
    create_topic(broker, topic, 1)

    greedy = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "greedy",
                       "transaction.timeout.ms": MAX_TIMEOUT_MS * 2})
    with pytest.raises(KafkaException) as raised:
        greedy.init_transactions(WAIT_S)
    assert raised.value.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT, raised.value

    plain = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    before = [b"before-%d" % i for i in range(5)]
    produce_acked(plain, topic, 0, before)

    hung = txn_producer(broker, "hung-id", {"transaction.timeout.ms": HUNG_TIMEOUT_MS})
    began = time.monotonic()
    hung.begin_transaction()
    hung_values = [b"hung-%d" % i for i in range(5)]
    hung_offsets = produce_acked(hung, topic, 0, hung_values)
    after = [b"after-%d" % i for i in range(5)]
    produce_acked(plain, topic, 0, after)

    end = high_watermark(broker, topic, 0)
    assert end == len(before) + len(hung_values) + len(after)
    assert lso(broker, topic, 0) == hung_offsets[0]
    assert values(read_all(broker, topic, 1, "read_committed")[0]) == before
    assert values(read_all(broker, topic, 1, "read_uncommitted")[0]) == before + hung_values + after
    assert time.monotonic() - began < HUNG_TIMEOUT_MS / 1000, \
        "the checks above ran past the transaction timeout: they proved nothing"

    aborted_at = wait_for("the broker to abort the timed-out transaction",
                          lambda: settled(broker, topic, 0),
                          timeout=HUNG_TIMEOUT_MS / 1000 + WAIT_S)
    waited = aborted_at - began
    print(f"\naborted {waited:.2f}s after the transaction began (timeout "
          f"{HUNG_TIMEOUT_MS / 1000:.0f}s)")
    assert waited >= HUNG_TIMEOUT_MS / 1000 - 0.2, "aborted before its timeout"
    assert high_watermark(broker, topic, 0) == end + 1, "one abort marker"
    assert values(read_all(broker, topic, 1, "read_committed")[0]) == before + after
    assert values(read_all(broker, topic, 1, "read_uncommitted")[0]) == before + hung_values + after

    assert_commit_refused(hung)
    assert values(read_all(broker, topic, 1, "read_committed")[0]) == before + after


# -- 4. the broker SIGKILLed with transactions in every state -------------------------------

OPEN_TIMEOUT_MS = 15_000


def test_broker_restart_mid_transaction(broker):
    """The broker is SIGKILLed holding a committed transaction, an open one (records in the
    log, not committed) and one whose commit had just returned. After the restart the
    committed and the just-committed records are visible to read_committed readers; the open
    transaction still holds the LSO on its partition until its timeout, then is aborted and
    its records are never visible; its old producer cannot commit; a new producer with its
    transactional id initialises and commits. A clean restart afterwards shows the same."""
    topic = "restarted"
    create_topic(broker, topic, 2)

    committed = txn_producer(broker, "restart-committed")
    committed.begin_transaction()
    c0 = [b"committed-p0-%d" % i for i in range(5)]
    c1 = [b"committed-p1-%d" % i for i in range(5)]
    produce_acked(committed, topic, 0, c0)
    produce_acked(committed, topic, 1, c1)
    committed.commit_transaction(WAIT_S)

    left_open = txn_producer(broker, "restart-open", {"transaction.timeout.ms": OPEN_TIMEOUT_MS})
    began = time.monotonic()
    left_open.begin_transaction()
    open_values = [b"open-%d" % i for i in range(5)]
    open_offsets = produce_acked(left_open, topic, 0, open_values)

    last_moment = txn_producer(broker, "restart-last-moment")
    last_moment.begin_transaction()
    last_values = [b"last-moment-%d" % i for i in range(5)]
    last_offsets = produce_acked(last_moment, topic, 1, last_values)
    last_moment.commit_transaction(WAIT_S)
    # SIGKILL right after the commit was acknowledged: its markers may not be written yet.
    restart_and_wait_for_coordinator(broker, kill=True)

    # Partition 1: the acknowledged commit is completed by the restarted coordinator.
    wait_for("the acknowledged commit to be completed after the restart",
             lambda: settled(broker, topic, 1)
             and high_watermark(broker, topic, 1) > last_offsets[-1] + 1)
    assert values(read_all(broker, topic, 2, "read_committed")[1]) == c1 + last_values

    # Partition 0: the open transaction survived the restart and still holds the LSO.
    assert lso(broker, topic, 0) == open_offsets[0]
    assert values(read_all(broker, topic, 2, "read_committed")[0]) == c0
    assert values(read_all(broker, topic, 2, "read_uncommitted")[0]) == c0 + open_values
    assert time.monotonic() - began < OPEN_TIMEOUT_MS / 1000, \
        "the checks above ran past the open transaction's timeout: they proved nothing"

    aborted_at = wait_for("the open transaction to time out after the restart",
                          lambda: settled(broker, topic, 0),
                          timeout=OPEN_TIMEOUT_MS / 1000 + WAIT_S)
    assert aborted_at - began >= OPEN_TIMEOUT_MS / 1000 - 0.2, "aborted before its timeout"
    assert values(read_all(broker, topic, 2, "read_committed")[0]) == c0

    successor = txn_producer(broker, "restart-open")
    assert_commit_refused(left_open)
    successor.begin_transaction()
    next_values = [b"next-%d" % i for i in range(5)]
    produce_acked(successor, topic, 0, next_values)
    successor.commit_transaction(WAIT_S)

    want = {0: c0 + next_values, 1: c1 + last_values}
    got = read_all(broker, topic, 2, "read_committed")
    assert {p: values(r) for p, r in got.items()} == want

    restart_and_wait_for_coordinator(broker, kill=False)
    got = read_all(broker, topic, 2, "read_committed")
    assert {p: values(r) for p, r in got.items()} == want
    assert values(read_all(broker, topic, 2, "read_uncommitted")[0]) == \
        c0 + open_values + next_values


# -- 5. kcat (librdkafka 2.0.2) as a read_committed reader -----------------------------------

def kcat_read(broker, topic, isolation):
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning",
                          "-e", "-X", f"isolation.level={isolation}", "-f", "%o\t%s\n"],
                         capture_output=True, timeout=WAIT_S)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return [(int(o), v) for o, v in
            (line.split(b"\t", 1) for line in out.stdout.split(b"\n") if line)]


def test_kcat_read_committed_skips_aborted(broker):
    """After a committed, an aborted and another committed transaction (written by
    confluent-kafka), kcat at read_committed prints exactly the committed records at the
    offsets they were acknowledged with; at read_uncommitted it prints the aborted ones too.
    Neither shows a control record (the commit and abort markers) as a message."""
    topic = "kcat-txn"
    create_topic(broker, topic, 1)
    p = txn_producer(broker, "kcat-txn-id")
    written = []
    for name, commit in (("first", True), ("aborted", False), ("second", True)):
        p.begin_transaction()
        vals = [f"{name}-{i}".encode() for i in range(5)]
        written.append((list(zip(produce_acked(p, topic, 0, vals), vals)), commit))
        if commit:
            p.commit_transaction(WAIT_S)
        else:
            p.abort_transaction(WAIT_S)

    assert kcat_read(broker, topic, "read_committed") == \
        [r for records, commit in written if commit for r in records]
    assert kcat_read(broker, topic, "read_uncommitted") == \
        [r for records, _ in written for r in records]
    # Three markers took offsets no message has.
    assert high_watermark(broker, topic, 0) == 15 + 3


# -- 6. kafka-python -------------------------------------------------------------------------

def kp_read(broker, topic, isolation):
    """Every value a kafka-python consumer at `isolation` reads from partition 0, up to the
    end."""
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                      enable_auto_commit=False, isolation_level=isolation)
    tp = KTopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    out = []
    deadline = time.monotonic() + WAIT_S
    try:
        while c.position(tp) < end:
            assert time.monotonic() < deadline, f"{isolation}: stuck at {c.position(tp)} < {end}"
            for records in c.poll(timeout_ms=500).values():
                out.extend(r.value for r in records)
    finally:
        c.close()
    return out


def test_kafka_python_transactions(broker):
    """kafka-python's transactional producer commits, aborts and commits again, sending the
    group offsets of a source partition inside the first two transactions. kafka-python's
    read_committed consumer sees only the committed records, its read_uncommitted one all of
    them, and the group's committed offset is the one of the committed transaction: the offset
    sent in the aborted one was discarded."""
    topic, source = "kp-txn", "kp-source"
    create_topic(broker, topic, 1)
    create_topic(broker, source, 1)
    group_member = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="kp-group",
                                 enable_auto_commit=False)
    source_tp = KTopicPartition(source, 0)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="kp-txn-id")
    try:
        p.init_transactions()
        written = []
        for name, offset, commit in (("first", 3, True), ("aborted", 7, False),
                                     ("second", None, True)):
            p.begin_transaction()
            vals = [f"kp-{name}-{i}".encode() for i in range(5)]
            futures = [p.send(topic, value=v, partition=0) for v in vals]
            if offset is not None:
                p.send_offsets_to_transaction({source_tp: OffsetAndMetadata(offset, "", -1)},
                                              group_member.group_metadata())
            p.flush(WAIT_S)
            assert all(f.get(timeout=WAIT_S).offset >= 0 for f in futures)
            if commit:
                p.commit_transaction()
            else:
                p.abort_transaction()
            written.append((vals, commit))
    finally:
        p.close()

    assert kp_read(broker, topic, "read_committed") == \
        [v for vals, commit in written if commit for v in vals]
    assert kp_read(broker, topic, "read_uncommitted") == [v for vals, _ in written for v in vals]
    try:
        assert group_member.committed(source_tp) == 3
    finally:
        group_member.close()


# -- 7. ListTransactions and DescribeTransactions on the wire -------------------------------

TRANSACTIONAL_ID_NOT_FOUND = 105


def compact_array(items):
    return uvarint(len(items) + 1) + b"".join(items)


def list_transactions(broker, states=(), producer_ids=()):
    """ListTransactions v0: (error, unknown state filters, [(transactional id, producer id,
    state)])."""
    body = compact_array([cstr(s) for s in states])
    body += compact_array([struct.pack(">q", pid) for pid in producer_ids]) + b"\x00"
    r = flexible_request(broker, 66, 0, body)
    r.take(">i")  # throttle

    def listing():
        tid, pid, state = r.str(), r.take(">q"), r.str()
        r.tags()
        return tid, pid, state

    error = r.take(">h")
    unknown = r.array(r.str)
    listed = r.array(listing)
    r.tags()
    return error, unknown, sorted(listed)


def describe_transactions(broker, ids):
    """DescribeTransactions v0: {transactional id: fields}."""
    r = flexible_request(broker, 65, 0, compact_array([cstr(i) for i in ids]) + b"\x00")
    r.take(">i")  # throttle

    def topic():
        name = r.str()
        parts = r.array(lambda: r.take(">i"))
        r.tags()
        return name, sorted(parts)

    def state():
        d = {"error": r.take(">h"), "id": r.str(), "state": r.str(),
             "timeout_ms": r.take(">i"), "start_ms": r.take(">q"), "producer_id": r.take(">q"),
             "epoch": r.take(">h")}
        d["topics"] = sorted(r.array(topic))
        r.tags()
        return d

    described = r.array(state)
    r.tags()
    return {d["id"]: d for d in described}


def fetch_v4(broker, topic, partition, isolation):
    """A hand-encoded Fetch v4 from offset 0: (high watermark, LSO, aborted transactions,
    [(base offset, attributes, producer id, producer epoch)] for each batch)."""
    body = struct.pack(">iiiib", -1, 0, 0, 1 << 20, isolation)
    body += struct.pack(">i", 1) + kstr(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, 0, 1 << 20)
    s = connect(broker)
    try:
        s.sendall(frame(1, 4, 12, body))
        resp = recv_frame(s)
    finally:
        s.close()
    corr, _throttle, _ntopics = struct.unpack_from(">iii", resp)
    assert corr == 12
    (name_len,) = struct.unpack_from(">h", resp, 12)
    at = 14 + name_len + 4  # name, partition count
    _part, error, hw, stable = struct.unpack_from(">ihqq", resp, at)
    assert error == 0, error
    at += 22
    (n_aborted,) = struct.unpack_from(">i", resp, at)
    at += 4
    aborted = [struct.unpack_from(">qq", resp, at + 16 * i) for i in range(max(n_aborted, 0))]
    at += 16 * max(n_aborted, 0)
    (length,) = struct.unpack_from(">i", resp, at)
    records = resp[at + 4:at + 4 + max(length, 0)]
    batches, pos = [], 0
    # Batch header: base offset (8), length (4), leader epoch (4), magic (1), crc (4),
    # attributes (2) at 21, last offset delta (4), timestamps (16), producer id (8) at 43,
    # producer epoch (2) at 51.
    while pos + 12 <= len(records):
        base, blen = struct.unpack_from(">qi", records, pos)
        if pos + 12 + blen > len(records):
            break
        (attributes,) = struct.unpack_from(">h", records, pos + 21)
        pid, epoch = struct.unpack_from(">qh", records, pos + 43)
        batches.append((base, attributes, pid, epoch))
        pos += 12 + blen
    return hw, stable, aborted, batches


TRANSACTIONAL, CONTROL = 0x10, 0x20


def test_list_and_describe_transactions_on_the_wire(broker):
    """With one committed and one ongoing transaction: ListTransactions v0 lists both
    transactional ids with the producer ids stamped in their record batches and their states,
    and honours state and producer id filters (naming unknown states); DescribeTransactions v0
    shows the ongoing one's partitions, epoch, timeout and start time, and answers
    TRANSACTIONAL_ID_NOT_FOUND for an unknown id; a read_committed Fetch stops at the ongoing
    transaction's first offset. kafka-python's admin client reads the same. After the commit,
    nothing is listed as ongoing any more."""
    topic = "txn-wire"
    create_topic(broker, topic, 2)
    done = txn_producer(broker, "wire-done")
    done.begin_transaction()
    produce_acked(done, topic, 0, [b"done-%d" % i for i in range(3)])
    done.commit_transaction(WAIT_S)

    ongoing = txn_producer(broker, "wire-open", {"transaction.timeout.ms": 45_000})
    started_ms = int(time.time() * 1000)
    ongoing.begin_transaction()
    open_p0 = produce_acked(ongoing, topic, 0, [b"open-p0-%d" % i for i in range(3)])
    produce_acked(ongoing, topic, 1, [b"open-p1-%d" % i for i in range(3)])
    produced_ms = int(time.time() * 1000)

    # The producer ids and epochs the producers stamped into their batches.
    hw0, _, _, batches0 = fetch_v4(broker, topic, 0, READ_UNCOMMITTED)
    done_batch = [b for b in batches0 if b[0] == 0][0]
    open_batch = [b for b in batches0 if b[0] == open_p0[0]][0]
    assert done_batch[1] & TRANSACTIONAL and open_batch[1] & TRANSACTIONAL
    assert any(b[1] & CONTROL for b in batches0), "the commit marker of wire-done"
    done_pid, (open_pid, open_epoch) = done_batch[2], open_batch[2:]
    assert done_pid != open_pid
    _, stable, aborted, committed_batches = fetch_v4(broker, topic, 0, READ_COMMITTED)
    assert stable == open_p0[0] and aborted == []
    assert all(b[0] < open_p0[0] for b in committed_batches), "read_committed ends at the LSO"

    assert list_transactions(broker) == (0, [], [("wire-done", done_pid, "CompleteCommit"),
                                                 ("wire-open", open_pid, "Ongoing")])
    assert list_transactions(broker, states=["Ongoing", "Bogus"]) == \
        (0, ["Bogus"], [("wire-open", open_pid, "Ongoing")])
    assert list_transactions(broker, producer_ids=[done_pid]) == \
        (0, [], [("wire-done", done_pid, "CompleteCommit")])

    described = describe_transactions(broker, ["wire-open", "nobody"])
    assert described["nobody"]["error"] == TRANSACTIONAL_ID_NOT_FOUND
    d = described["wire-open"]
    assert (d["error"], d["state"], d["producer_id"], d["epoch"], d["timeout_ms"]) == \
        (0, "Ongoing", open_pid, open_epoch, 45_000)
    assert d["topics"] == [(topic, [0, 1])]
    assert started_ms <= d["start_ms"] <= produced_ms, (started_ms, d["start_ms"], produced_ms)

    # A client nobody here wrote decodes the same answers.
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        listed = {(t.transactional_id, t.producer_id, t.state.value)
                  for ts in admin.list_transactions().values() for t in ts}
        assert listed == {("wire-done", done_pid, "CompleteCommit"),
                          ("wire-open", open_pid, "Ongoing")}
        desc = admin.describe_transactions(["wire-open"])["wire-open"]
        assert (desc.state.value, desc.producer_id, desc.topic_partitions) == \
            ("Ongoing", open_pid, {KTopicPartition(topic, 0), KTopicPartition(topic, 1)})
        with pytest.raises(TransactionalIdNotFoundError):
            admin.describe_transactions(["nobody"])
    finally:
        admin.close()

    ongoing.commit_transaction(WAIT_S)
    assert list_transactions(broker, states=["Ongoing"]) == (0, [], [])
    d = describe_transactions(broker, ["wire-open"])["wire-open"]
    assert (d["error"], d["state"], d["producer_id"], d["topics"]) == \
        (0, "CompleteCommit", open_pid, [])
    assert settled(broker, topic, 0) and high_watermark(broker, topic, 0) > hw0


def offset_fetch_v7(broker, group, topic, partitions, require_stable):
    """OffsetFetch v7: (top-level error, {partition: (committed offset, error)})."""
    topics = compact_array([cstr(topic) + compact_array([struct.pack(">i", p) for p in partitions])
                            + b"\x00"])
    body = cstr(group) + topics + struct.pack(">?", require_stable) + b"\x00"
    r = flexible_request(broker, 9, 7, body)
    r.take(">i")  # throttle

    def partition():
        p, offset, _epoch, _meta, error = (r.take(">i"), r.take(">q"), r.take(">i"), r.str(),
                                           r.take(">h"))
        r.tags()
        return p, (offset, error)

    def topic_entry():
        r.str()
        parts = r.array(partition)
        r.tags()
        return parts

    parts = [p for t in r.array(topic_entry) for p in t]
    error = r.take(">h")
    r.tags()
    return error, dict(parts)


def test_pending_transactional_offsets_are_unstable_per_partition(broker):
    """While a transaction holds an offset commit for a partition, OffsetFetch with
    require_stable (KIP-447) answers UNSTABLE_OFFSET_COMMIT (88) for that partition only, with
    no group-level error, as Kafka does (Java consumers treat a group-level error as fatal);
    without require_stable the last committed offset is returned. Once the transaction
    commits, the offset is there and stable."""
    create_topic(broker, "unstable-in", 2)
    create_topic(broker, "unstable-out", 1)
    group = "unstable-group"
    member = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    producer = txn_producer(broker, "unstable-txn")
    producer.begin_transaction()
    produce_acked(producer, "unstable-out", 0, [b"x"])
    producer.send_offsets_to_transaction([TopicPartition("unstable-in", 0, 5)],
                                         member.consumer_group_metadata(), WAIT_S)
    error, parts = offset_fetch_v7(broker, group, "unstable-in", [0, 1], True)
    assert error == 0
    assert parts == {0: (-1, 88), 1: (-1, 0)}
    assert offset_fetch_v7(broker, group, "unstable-in", [0, 1], False) == (0, {0: (-1, 0),
                                                                                1: (-1, 0)})
    producer.commit_transaction(WAIT_S)
    assert offset_fetch_v7(broker, group, "unstable-in", [0, 1], True) == (0, {0: (5, 0),
                                                                               1: (-1, 0)})
    member.close()


WRITE_TXN_MARKERS, TRANSACTION_COORDINATOR_FENCED = 27, 52


def write_txn_marker(broker, topic, partition, producer_id, epoch, commit, coordinator_epoch):
    """One WriteTxnMarkers v1 marker, sent as a transaction coordinator sends it; returns the
    partition's error code."""
    body = uvarint(2)  # one marker
    body += struct.pack(">qhb", producer_id, epoch, int(commit))
    body += uvarint(2) + cstr(topic) + uvarint(2) + struct.pack(">i", partition) + b"\x00"
    body += struct.pack(">i", coordinator_epoch) + b"\x00"
    body += b"\x00"
    resp = flexible_request(broker, WRITE_TXN_MARKERS, 1, body)

    def partition_result():
        index, code = resp.take(">i"), resp.take(">h")
        resp.tags()
        return index, code

    def topic_result():
        name = resp.str()
        parts = resp.array(partition_result)
        resp.tags()
        return name, parts

    def marker_result():
        pid = resp.take(">q")
        topics = resp.array(topic_result)
        resp.tags()
        return pid, topics

    [(pid, [(name, [(index, code)])])] = resp.array(marker_result)
    assert (pid, name, index) == (producer_id, topic, partition)
    return code


def test_a_marker_from_an_older_coordinator_than_the_last_one_is_fenced(broker):
    """A partition remembers, per producer, the coordinator epoch of the last transaction
    marker it wrote (Kafka's ProducerStateEntry.coordinatorEpoch, rebuilt from the markers
    in the log after a restart): a marker carrying an older coordinator epoch is a zombie
    coordinator's (one that lost its `__transaction_state` partition and does not know
    yet), refused with TRANSACTION_COORDINATOR_FENCED and not written, even at the
    producer's epoch, where it would end the producer's next transaction. Here a
    confluent-kafka transaction's records are ended by a marker from coordinator epoch
    1000 (a later coordinator); a marker from epoch 999 is then fenced, before and after a
    restart, and one from epoch 1000 is accepted."""
    topic = "fenced-markers"
    # The real coordinator's own markers (its epoch is far below 1000) are fenced too: the
    # transaction is never ended by it, and this broker is the test's alone.
    b = broker
    create_topic(b, topic, 1)
    p = txn_producer(b, "zombie-target")
    p.begin_transaction()
    produce_acked(p, topic, 0, [b"in-txn"])
    [batch] = fetch_batches(b, topic, 0, 1)
    pid, epoch = batch["producer_id"], batch["epoch"]
    assert write_txn_marker(b, topic, 0, pid, epoch, True, 1000) == 0
    assert values(read_all(b, topic, 1, "read_committed")[0]) == [b"in-txn"]
    code = write_txn_marker(b, topic, 0, pid, epoch, False, 999)
    assert code == TRANSACTION_COORDINATOR_FENCED, code
    b.restart()
    code = write_txn_marker(b, topic, 0, pid, epoch, False, 999)
    assert code == TRANSACTION_COORDINATOR_FENCED, code
    assert [x["control"] for x in fetch_batches(b, topic, 0, 2)] == [False, True]
    assert write_txn_marker(b, topic, 0, pid, epoch, False, 1000) == 0
    assert [x["control"] for x in fetch_batches(b, topic, 0, 3)] == [False, True, True]
