"""Kafka Connect 4.3.1 in distributed mode on sluice: one worker (ConnectDistributed from
connect-runtime, run unchanged from Maven Central's jars) keeps its connector configs, source
offsets and statuses in topics on the broker, and a FileStreamSourceConnector and a
FileStreamSinkConnector, created through the worker's REST API, copy a file through a topic into
another file.

The worker runs in its own JVM (in its own process group, killed whatever happens); its log goes
to a file that failures quote, with the broker's.
"""

import json
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import running_broker, running_cluster
from jvm_process import JvmProcess
from test_java_clients import classpath, java_installed  # noqa: F401 (a fixture)

CONNECT = "connect-4.3.1"
JVM = ["java", "-Xmx384m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData",
       "-Xshare:auto", "-Duser.timezone=UTC"]
MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"
CONFIG_TOPIC, OFFSET_TOPIC, STATUS_TOPIC = "connect-configs", "connect-offsets", "connect-status"
# Connect's defaults for the offsets and status topics; the config topic has one partition.
INTERNAL_PARTITIONS = {CONFIG_TOPIC: 1, OFFSET_TOPIC: 25, STATUS_TOPIC: 5}
DATA_TOPIC = "connect-lines"
SOURCE, SINK = "file-source", "file-sink"
REST_LISTENING = re.compile(r"REST server listening at http://127\.0\.0\.1:(\d+)/")
# Bounds on conditions that normally hold within seconds.
START_S = 90
CONVERGE_S = 90

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d{{ISO8601}}Z] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
# Every client logs its whole configuration at INFO.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


@pytest.fixture(params=["one node", "three nodes"])
def broker(request, tmp_path, java_installed):
    """A broker whose groups rebalance at once when their first member joins (the Connect
    worker's group and the sink's), then a three-node cluster of such brokers."""
    args = ["--set", "group.initial.rebalance.delay.ms=0"]
    if request.param == "one node":
        yield from running_broker(tmp_path, args)
    else:
        yield from running_cluster(tmp_path, args)


def replicas_of(broker):
    """The replication factor the test's topics get: every node's (one, or three)."""
    return len(getattr(broker, "nodes", [broker]))


class Worker(JvmProcess):
    """The Connect worker's JVM: started, stopped with SIGTERM, and always reaped."""

    what = "the Connect worker"

    def __init__(self, broker, tmp_path):
        self.broker = broker
        self.log_path = tmp_path / "connect.log"
        self.out_path = tmp_path / "connect.out"
        self.props = tmp_path / "worker.properties"
        self.log4j = tmp_path / "log4j2.properties"
        self.log4j.write_text(LOG4J2.format(log=self.log_path))
        self.props.write_text("\n".join(f"{k}={v}" for k, v in {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "sluice-connect",
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "config.storage.topic": CONFIG_TOPIC,
            "offset.storage.topic": OFFSET_TOPIC,
            "status.storage.topic": STATUS_TOPIC,
            "config.storage.replication.factor": replicas_of(broker),
            "offset.storage.replication.factor": replicas_of(broker),
            "status.storage.replication.factor": replicas_of(broker),
            # Port 0: the worker logs the port it got.
            "listeners": "http://127.0.0.1:0",
            "rest.advertised.host.name": "127.0.0.1",
            # Source offsets and sink commits (and the sink file's flush) twice a second.
            "offset.flush.interval.ms": 500,
            # The connectors are on the classpath with ServiceLoader manifests: no scanning.
            "plugin.discovery": "service_load",
        }.items()) + "\n")
        super().__init__()
        self.url = None

    def start(self):
        argv = [*JVM, f"-Dlog4j2.configurationFile={self.log4j}", "-cp",
                classpath(CONNECT, classes=False), MAIN, str(self.props)]
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_S
        while self.url is None:
            m = REST_LISTENING.search(self.log())
            if m:
                self.url = f"http://127.0.0.1:{m.group(1)}"
                break
            assert self.running(), "the Connect worker exited\n" + self.explain()
            assert time.monotonic() < deadline, \
                f"no REST listener within {START_S} s\n" + self.explain()
            time.sleep(0.2)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def explain(self):
        lines = self.log().splitlines()
        notable = [line for line in lines if "] WARN " in line or "] ERROR " in line
                   or line.startswith(("\tat ", "Caused by: "))]
        out = self.out_path.read_text(errors="replace") if self.out_path.exists() else ""
        return ("--- worker stdout/stderr (last 3000 chars)\n" + out[-3000:]
                + "\n--- worker WARN/ERROR lines and stack traces (last 60)\n"
                + "\n".join(notable[-60:])
                + "\n--- worker log (last 4000 chars)\n" + "\n".join(lines)[-4000:]
                + "\n--- broker log (last 5000 chars)\n" + self.broker.log_text())

    def rest(self, method, path, body=None):
        """One REST call: (status, decoded JSON body or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def until(self, what, probe, timeout_s=CONVERGE_S):
        """Polls `probe()` until it returns a true value, which it returns."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            last = probe()
            if last and last[0]:
                return last[1]
            assert self.running(), f"the Connect worker exited ({what})\n" + self.explain()
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout_s} s; last: {last[1] if last else None}"
                            f"\n" + self.explain())
            time.sleep(0.2)


def read_topic(broker, topic):
    """Every record of `topic` from the beginning to its end, as (partition, key, value)."""
    meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
    partitions = len(meta.topics[topic].partitions)
    assert partitions > 0, f"{topic} has no partitions"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "connect-checker",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, at_end = [], set()
    deadline = time.monotonic() + 60
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"did not reach the end of {topic}"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                at_end.add(m.partition())
                continue
            out.append((m.partition(), m.key() and m.key().decode(),
                        m.value() and m.value().decode()))
    finally:
        c.close()
    return out


def committed(broker, group, topic):
    """The offset `group` has committed for partition 0 of `topic` (-1001 when none)."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=20)
    finally:
        c.close()
    return tp.offset


def append(path, lines):
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def test_connect_distributed_copies_a_file_through_sluice(broker, tmp_path):
    """A distributed Kafka Connect worker runs on sluice: it creates its config, offset and
    status topics there (compacted, with one replica per node: one, then three), a file
    source and a file sink connector created through REST both report RUNNING, every line
    appended to the source file appears in the sink file exactly once and in order
    (including lines appended while they run), the source's file position is stored in the offsets topic, the sink's consumer group
    commits the end of the topic, and the worker stops cleanly on SIGTERM."""
    source_file, sink_file = tmp_path / "source.txt", tmp_path / "sink.txt"
    first = [f"line {i:03d} {'x' * (i % 13)}" for i in range(100)] + ["naïve café ✓ 🚰"]
    second = [f"more {i:03d}" for i in range(60)]
    source_file.write_text("")
    append(source_file, first)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(DATA_TOPIC, 1, replicas_of(broker))])[DATA_TOPIC].result(30)

    worker = Worker(broker, tmp_path)
    try:
        worker.start()
        # The REST listener is up before the worker has joined its group and read the config
        # topic; until then connector requests are refused.
        def answers():
            s, b = worker.rest("GET", "/connectors")
            return s == 200, (s, b)
        worker.until("the worker answers GET /connectors", answers)
        status, plugins = worker.rest("GET", "/connector-plugins")
        assert status == 200, plugins
        classes = {p["class"] for p in plugins}
        assert {"org.apache.kafka.connect.file.FileStreamSourceConnector",
                "org.apache.kafka.connect.file.FileStreamSinkConnector"} <= classes, plugins

        configs = {
            SOURCE: {"connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
                     "tasks.max": "1", "file": str(source_file), "topic": DATA_TOPIC},
            SINK: {"connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                   "tasks.max": "1", "file": str(sink_file), "topics": DATA_TOPIC},
        }
        for name, config in configs.items():
            def create(name=name, config=config):
                s, b = worker.rest("POST", "/connectors", {"name": name, "config": config})
                # 409: a rebalance is under way; anything else but 201 is a failure.
                assert s in (201, 409), (s, b)
                return s == 201, (s, b)
            worker.until(f"creating {name}", create)

        def all_running():
            states = {}
            for name in configs:
                s, b = worker.rest("GET", f"/connectors/{name}/status")
                if s != 200:
                    return False, (name, s, b)
                states[name] = b
            ok = all(b["connector"]["state"] == "RUNNING" and len(b["tasks"]) == 1
                     and b["tasks"][0]["state"] == "RUNNING" for b in states.values())
            return ok, states
        states = worker.until("both connectors and their tasks RUNNING", all_running)
        for name, b in states.items():
            assert b["type"] == ("source" if name == SOURCE else "sink"), b

        def sink_holds(lines):
            def probe():
                text = sink_file.read_text(encoding="utf-8") if sink_file.exists() else ""
                # Complete lines only: the sink may be caught in the middle of writing one.
                got = text[:text.rfind("\n") + 1].splitlines()
                # Never more than was written, and always a prefix: a duplicate or a
                # reordering fails at once.
                wrong = [(i, g) for i, g in enumerate(got) if i >= len(lines) or g != lines[i]]
                assert not wrong, f"sink file is not a prefix of the source lines " \
                    f"({len(got)} lines; line number, line): {wrong[:5]}\n" + worker.explain()
                return got == lines and text.endswith("\n"), len(got)
            return probe
        worker.until("the sink file holds the first lines", sink_holds(first))

        append(source_file, second)
        everything = first + second
        worker.until("the sink file holds every line", sink_holds(everything))

        # The source's position reaches the whole file in the offsets topic. FileStreamSource
        # counts the characters it decoded (UTF-16 code units), not bytes.
        size = len(source_file.read_text(encoding="utf-8").encode("utf-16-le")) // 2

        def stored_position():
            positions = [json.loads(v)["position"]
                         for _, k, v in read_topic(broker, OFFSET_TOPIC)
                         if k and json.loads(k)[0] == SOURCE and v is not None]
            return bool(positions) and positions[-1] == size, positions[-3:]
        worker.until("the source offset reaches the end of the file", stored_position)
        def sink_committed():
            offset = committed(broker, f"connect-{SINK}", DATA_TOPIC)
            return offset == len(everything), offset
        worker.until("the sink group commits the end of the topic", sink_committed)
        assert [v for _, _, v in read_topic(broker, DATA_TOPIC)] == everything

        status, listed = worker.rest("GET", "/connectors")
        assert status == 200 and sorted(listed) == sorted(configs), listed
        assert all_running()[0], all_running()[1]

        # Connect's own topics, on sluice: created by the worker, compacted, holding records.
        topics = admin.list_topics(timeout=10).topics
        for topic, partitions in INTERNAL_PARTITIONS.items():
            assert topic in topics, sorted(topics)
            assert len(topics[topic].partitions) == partitions, topic
            assert all(len(p.replicas) == replicas_of(broker)
                       for p in topics[topic].partitions.values()), topic
            res = ConfigResource(ConfigResource.Type.TOPIC, topic)
            assert admin.describe_configs([res])[res].result(30)["cleanup.policy"].value \
                == "compact", topic
        config_keys = {k for _, k, _ in read_topic(broker, CONFIG_TOPIC)}
        assert {f"connector-{SOURCE}", f"connector-{SINK}", f"task-{SOURCE}-0",
                f"task-{SINK}-0", f"commit-{SOURCE}", f"commit-{SINK}"} <= config_keys, \
            config_keys
        status_keys = {k for _, k, _ in read_topic(broker, STATUS_TOPIC)}
        assert {f"status-connector-{SOURCE}", f"status-connector-{SINK}",
                f"status-task-{SOURCE}-0", f"status-task-{SINK}-0"} <= status_keys, status_keys

        code = worker.stop()
        # 143: the JVM ends with SIGTERM's status once the shutdown hook has run.
        assert code == 143 and "Kafka Connect stopped" in worker.log(), \
            f"exit {code}\n" + worker.explain()
    finally:
        worker.kill()
