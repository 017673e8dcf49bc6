"""Kafka Streams 4.4.0 on sluice: the word-count application tests/java/src/streams/WordCount.java
(a repartition topic from groupBy on the word, a RocksDB state store with its changelog topic,
processing.guarantee=exactly_once_v2) runs against the real broker while the test kills it with
SIGKILL and restarts the broker under load, and what it commits must equal the counts computed
here from everything that was produced.

The application runs in its own JVM (in its own process group, killed whatever happens); its
stdout carries one fact per line (STATE ..., UNCAUGHT ..., CLOSED) and its log goes to a file
that failures quote, with the broker's.
"""

import collections
import random
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import running_broker, running_cluster
from jvm_process import JvmProcess
from test_java_clients import classpath, java_installed  # noqa: F401 (a fixture)

STREAMS = "streams-4.4.0"
# Small heap, C1 only, serial GC: the application lives for a minute.
JVM = ["java", "-Xmx384m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData",
       "-Xshare:auto", "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
       # Wall-clock times in UTC, to read next to the broker's log.
       "-Duser.timezone=UTC", "-Dorg.slf4j.simpleLogger.showDateTime=true",
       "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"]
APP_ID = "wordcount"
INPUT, OUTPUT = "wc-lines", "wc-counts"
INPUT_PARTITIONS, OUTPUT_PARTITIONS = 3, 2
CHANGELOG = f"{APP_ID}-counts-changelog"
REPARTITION = f"{APP_ID}-words-repartition"
WORDS = ("kafka sluice stream table topic partition offset record batch broker "
         "leader replica consumer producer group commit abort marker fence epoch").split()
# Bounds on conditions that normally hold within seconds.
CONVERGE_S = 120


@pytest.fixture(params=["one node", "three nodes"])
def broker(request, tmp_path, java_installed):
    """A broker whose groups rebalance at once when their first member joins, then a
    three-node cluster of such brokers (its topics with three replicas, `restart` a rolling
    restart of every node)."""
    args = ["--set", "group.initial.rebalance.delay.ms=0"]
    if request.param == "one node":
        yield from running_broker(tmp_path, args)
    else:
        yield from running_cluster(tmp_path, args)


class App(JvmProcess):
    """The word-count JVM: started, SIGKILLed or stopped with SIGTERM, and always reaped."""

    what = "the application"

    def __init__(self, broker, tmp_path):
        self.broker = broker
        self.state_dir = tmp_path / "streams-state"
        self.state_dir.mkdir()
        # RocksDB unpacks its native library into java.io.tmpdir; a SIGKILLed JVM leaves it.
        self.java_tmp = tmp_path / "java-tmp"
        self.java_tmp.mkdir()
        self.out_path = tmp_path / "app.out"
        self.err_path = tmp_path / "app.log"
        super().__init__()
        self.starts = 0

    def start(self):
        assert self.proc is None
        self.starts += 1
        argv = [*JVM, f"-Djava.io.tmpdir={self.java_tmp}", "-cp", classpath(STREAMS),
                "WordCount", self.broker.bootstrap, APP_ID, str(self.state_dir), INPUT, OUTPUT]
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            out.write(f"--- start {self.starts}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def facts(self):
        """Lines the current run printed on stdout."""
        text = self.out_path.read_text(errors="replace")
        return text.rsplit(f"--- start {self.starts}\n", 1)[-1].splitlines()

    def explain(self):
        log = self.err_path.read_text(errors="replace").splitlines()
        notable = [line for line in log if " WARN " in line or " ERROR " in line]
        return ("--- application stdout\n" + self.out_path.read_text(errors="replace")
                + "\n--- application WARN/ERROR lines (last 40)\n" + "\n".join(notable[-40:])
                + "\n--- application log (last 3000 chars)\n" + "\n".join(log)[-3000:]
                + "\n--- broker log (last 5000 chars)\n" + self.broker.log_text())


class Feeder:
    """Produces lines to the input topic with an idempotent producer (acks=all), in small
    paced chunks, on a thread; remembers every line the broker acknowledged."""

    def __init__(self, broker):
        self.producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                                  "enable.idempotence": True, "linger.ms": 5,
                                  "message.timeout.ms": 120000})
        self.acked = []
        self.errors = []
        self.seq = 0
        self.lock = threading.Lock()
        self.thread = None
        self.stopping = threading.Event()

    def _delivered(self, err, msg):
        with self.lock:
            if err is not None:
                self.errors.append(err)
            else:
                self.acked.append(msg.value().decode())

    def produce(self, lines, chunk=20, pause_s=0.0):
        for i in range(0, len(lines), chunk):
            if self.stopping.is_set():
                return
            for line in lines[i:i + chunk]:
                self.producer.produce(INPUT, key=f"line-{self.seq}".encode(),
                                      value=line.encode(), on_delivery=self._delivered)
                self.seq += 1
            self.producer.poll(0)
            if pause_s:
                time.sleep(pause_s)  # spreads the load over time; synchronises nothing
        assert self.producer.flush(CONVERGE_S) == 0, "input not delivered in time"

    def start(self, lines, chunk=10, pause_s=0.1):
        """Produces `lines` in the background over about len(lines) / chunk * pause_s s."""
        assert self.thread is None

        def run():
            try:
                self.produce(lines, chunk, pause_s)
            except Exception as e:  # join() reports it
                with self.lock:
                    self.errors.append(repr(e))

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self):
        """Abandons whatever is still queued (the test is over) and ends the thread."""
        self.stopping.set()
        self.producer.purge()
        if self.thread is not None:
            self.thread.join(30)

    def join(self):
        if self.thread is not None:
            self.thread.join(CONVERGE_S + 30)
            assert not self.thread.is_alive(), "the feeder did not finish"
            self.thread = None
        with self.lock:
            assert self.errors == [], f"input not acknowledged: {self.errors[:5]}"
            return list(self.acked)


class Counts:
    """The output topic read with read_committed from the beginning: every committed count of
    every word, in offset order."""

    def __init__(self, broker, topic, partitions):
        self.consumer = Consumer({"bootstrap.servers": broker.bootstrap,
                                  "group.id": "wordcount-checker", "enable.auto.commit": False,
                                  "isolation.level": "read_committed"})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                              for p in range(partitions)])
        self.history = collections.defaultdict(list)
        self.partition_of = {}

    def poll(self, timeout_s=0.2):
        for m in self.consumer.consume(500, timeout_s):
            assert not m.error(), m.error()
            word = m.key().decode()
            (count,) = struct.unpack(">q", m.value())
            assert self.partition_of.setdefault(word, m.partition()) == m.partition(), \
                f"{word!r} counted in two output partitions"
            self.history[word].append(count)

    def latest(self):
        return {w: h[-1] for w, h in self.history.items()}

    def close(self):
        self.consumer.close()


def expected_counts(lines):
    return dict(collections.Counter(w for line in lines for w in line.lower().split()))


def make_lines(rng, n):
    """Lines of 1 to 8 words from WORDS, in mixed case with irregular spacing (the application
    lower-cases and splits on whitespace)."""
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 8))]
        words = [w.upper() if rng.random() < 0.1 else w for w in words]
        sep = "  " if rng.random() < 0.1 else " "
        lead = " " if rng.random() < 0.05 else ""
        out.append(lead + sep.join(words))
    return out


def check_no_overcount(counts, expected, app):
    """No committed count may exceed what was produced (a record counted twice would), and a
    word's committed counts strictly increase (a recount after a crash would repeat one)."""
    for word, history in counts.history.items():
        assert word in expected and history[-1] <= expected[word], \
            f"{word!r} counted {history[-1]} times, produced {expected.get(word, 0)}\n" \
            + app.explain()
        assert all(a < b for a, b in zip(history, history[1:])), \
            f"committed counts of {word!r} not strictly increasing: {history}\n" + app.explain()


def wait_for_counts(counts, expected, app, what):
    """Polls the output until the latest committed count of every word equals `expected`."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        counts.poll()
        check_no_overcount(counts, expected, app)
        if counts.latest() == expected:
            return
        assert app.running() and not any(f.startswith("UNCAUGHT") for f in app.facts()), \
            f"the application failed ({what})\n" + app.explain()
        if time.monotonic() > deadline:
            got = counts.latest()
            diff = {w: (got.get(w), expected.get(w)) for w in set(got) | set(expected)
                    if got.get(w) != expected.get(w)}
            pytest.fail(f"{what}: output did not reach the expected counts within {CONVERGE_S} s;"
                        f" (output, expected) where they differ: {diff}\n" + app.explain())


def wait_until_processing(counts, before, app, what):
    """Polls until the output shows a count beyond `before`: the application is busy with
    the new input (and so, with a 100 ms commit interval, inside a transaction)."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        counts.poll()
        if any(c > before.get(w, 0) for w, c in counts.latest().items()):
            return
        assert app.running(), f"the application died ({what})\n" + app.explain()
        assert time.monotonic() < deadline, \
            f"{what}: no new count within {CONVERGE_S} s\n" + app.explain()


def read_changelog(broker, partitions):
    """The latest count per word in the changelog topic, read_committed to its end (the
    store is timestamped, but its changelog values are the bare counts: the timestamp is the
    record's)."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wordcount-changelog",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": "read_committed"})
    c.assign([TopicPartition(CHANGELOG, p, OFFSET_BEGINNING) for p in range(partitions)])
    latest, at_end = {}, set()
    deadline = time.monotonic() + 60
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, "did not reach the end of the changelog"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                at_end.add(m.partition())
                continue
            if m.value() is None:
                latest.pop(m.key().decode(), None)
                continue
            latest[m.key().decode()] = struct.unpack(">q", m.value())[0]
    finally:
        c.close()
    return latest


def test_streams_word_count_is_exact_across_app_kill_and_broker_restart(broker, tmp_path):
    """A Kafka Streams word count with exactly_once_v2 (repartition topic, RocksDB store,
    changelog) commits, in its output read with read_committed, exactly the counts of every
    line produced: after SIGKILL mid-transaction and a restart that restores its store from the
    changelog, and after a broker restart (SIGTERM, same ports; on three nodes, each node in
    turn, so that every leadership and coordinator moves) while input keeps arriving. No
    committed count ever exceeds the true count or repeats; the changelog and repartition topics
    exist (the changelog compacted) and the changelog holds the same final counts."""
    seed = random.randrange(1 << 32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    # Every node holds a replica on a cluster (Streams' own topics get the brokers'
    # default.replication.factor, three there).
    replicas = len(getattr(broker, "nodes", [broker]))
    for name, parts in ((INPUT, INPUT_PARTITIONS), (OUTPUT, OUTPUT_PARTITIONS)):
        admin.create_topics([NewTopic(name, parts, replicas)])[name].result(30)

    app = App(broker, tmp_path)
    feeder = Feeder(broker)
    counts = Counts(broker, OUTPUT, OUTPUT_PARTITIONS)
    try:
        # Input waiting before the application first starts.
        feeder.produce(make_lines(rng, 300))
        app.start()
        wait_for_counts(counts, expected_counts(feeder.join()), app, "first run")

        # (a) SIGKILL while it processes more input, then start it again over the same state
        # directory (exactly-once wipes the unclean store and restores it from the changelog).
        before = counts.latest()
        feeder.start(make_lines(rng, 300), chunk=10, pause_s=0.05)
        wait_until_processing(counts, before, app, "before the kill")
        app.kill()
        app.start()
        wait_for_counts(counts, expected_counts(feeder.join()), app, "after SIGKILL and restart")

        # (b) The broker restarts (clean stop, same ports) while input keeps arriving, and
        # more comes once it is back.
        before = counts.latest()
        feeder.start(make_lines(rng, 300), chunk=10, pause_s=0.05)
        wait_until_processing(counts, before, app, "before the broker restart")
        broker.restart()
        feeder.join()
        feeder.produce(make_lines(rng, 100))
        expected = expected_counts(feeder.join())
        wait_for_counts(counts, expected, app, "after the broker restart")
        # Streams rebalances cooperatively, so it may count while REBALANCING; it must settle.
        deadline = time.monotonic() + CONVERGE_S
        while app.facts()[-1] != "STATE RUNNING":
            assert app.running() and time.monotonic() < deadline, \
                "the application did not settle in RUNNING\n" + app.explain()
            time.sleep(0.2)
        assert not any(f.startswith("UNCAUGHT") for f in app.facts()), app.explain()

        topics = admin.list_topics(timeout=10).topics
        assert len(topics[REPARTITION].partitions) == INPUT_PARTITIONS, sorted(topics)
        assert len(topics[CHANGELOG].partitions) == INPUT_PARTITIONS, sorted(topics)
        res = ConfigResource(ConfigResource.Type.TOPIC, CHANGELOG)
        configs = admin.describe_configs([res])[res].result(30)
        assert configs["cleanup.policy"].value == "compact"
        assert read_changelog(broker, INPUT_PARTITIONS) == expected

        code = app.stop()
        facts = app.facts()
        # 143: the JVM ends with SIGTERM's status once its shutdown hook has run. The state
        # listener may report NOT_RUNNING (from Streams' close thread) after close() returned.
        assert code == 143 and "CLOSED" in facts and "STATE NOT_RUNNING" in facts, \
            f"exit {code}\n" + app.explain()
    finally:
        app.kill()
        feeder.close()
        counts.close()
