"""The operator CLI against a real broker, judged by clients nobody here wrote: what
`sluice produce` writes, kcat and confluent-kafka read; what they write, `sluice consume`
prints; `--group` commits what it printed and shares partitions like any group member;
`cluster`, `topics` and `groups` print JSON that agrees with confluent-kafka's admin client;
`serve --log-format json` logs parseable JSON; hostile brokers get errors, not crashes."""

import collections
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import BIN, compact_str, make_broker, running_broker, uvarint
from test_groups import wait_for

WAIT_S = 60


# -- helpers ------------------------------------------------------------------------------

def cli(broker, *args, stdin=None, ok=True, timeout=WAIT_S):
    """Runs `sluice ARGS --bootstrap <broker>`; asserts on the exit status; returns the
    completed process (stdout and stderr as bytes)."""
    out = subprocess.run([BIN, *args, "--bootstrap", broker.bootstrap], input=stdin,
                         capture_output=True, timeout=timeout)
    assert (out.returncode == 0) == ok, \
        f"exit {out.returncode}: {out.stderr.decode(errors='replace')}"
    return out


def cli_json(broker, *args):
    return json.loads(cli(broker, *args, "--output", "json").stdout)


def consume_json(broker, topic, *args):
    """`sluice consume --format json`: the records as dicts."""
    out = cli(broker, "consume", topic, "--format", "json", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def kcat(broker, *args, stdin=None):
    out = subprocess.run(["kcat", "-b", broker.bootstrap, *args], input=stdin,
                         capture_output=True, timeout=WAIT_S)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout


def create_topic(broker, name, partitions, *configs):
    args = ["topics", "create", name, "--partitions", str(partitions)]
    for c in configs:
        args += ["--config", c]
    cli(broker, *args)


def produce_with_confluent(broker, topic, messages, **config):
    """Produces `messages` (dicts of Producer.produce arguments); returns them with the
    partition and offset each was acknowledged at."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", **config})
    acked = [None] * len(messages)

    def report(i, err, msg):
        assert err is None, err
        acked[i] = (msg.partition(), msg.offset(), msg.key(), msg.value())

    for i, m in enumerate(messages):
        producer.produce(topic, on_delivery=lambda err, msg, i=i: report(i, err, msg), **m)
    assert producer.flush(WAIT_S) == 0
    assert None not in acked
    return acked


@pytest.fixture
def quick_groups_broker(tmp_path):
    """A broker that does not hold the first join of a group for 3 s (Kafka's
    group.initial.rebalance.delay.ms), so group tests need not wait for it."""
    yield from running_broker(tmp_path, ["--set", "group.initial.rebalance.delay.ms=0"])


# -- produce ------------------------------------------------------------------------------

def test_produced_lines_with_keys_and_headers_are_read_back_by_kcat_where_kafka_puts_them(broker):
    """Every line becomes one record with the key before the separator, the value after it
    and every --header; kcat reads them back, offsets dense from 0 per partition; each key
    lands in the partition Kafka's default (murmur2) partitioner picks, as librdkafka's
    murmur2 partitioner computes it; the JSON summary counts what kcat finds."""
    create_topic(broker, "cli-produce", 3)
    create_topic(broker, "cli-murmur", 3)
    lines = [f"key-{i % 41}|value-{i}|with:colon" for i in range(500)]
    out = cli(broker, "produce", "cli-produce", "--key-separator", "|",
              "--header", "src=cli", "--header", "empty=", "--output", "json",
              stdin="\n".join(lines).encode() + b"\n")
    summary = json.loads(out.stdout)
    assert summary["topic"] == "cli-produce" and summary["records"] == 500

    raw = kcat(broker, "-C", "-t", "cli-produce", "-o", "beginning", "-e",
               "-f", "%p\t%o\t%k\t%s\t%h\n")
    got = [line.split(b"\t") for line in raw.splitlines() if line]
    assert sorted((k, v) for _, _, k, v, _ in got) == \
        sorted(tuple(l.encode().split(b"|", 1)) for l in lines)
    assert {h for *_, h in got} == {b"src=cli,empty="}
    by_partition = collections.defaultdict(list)
    for p, o, k, _, _ in got:
        by_partition[int(p)].append(int(o))
    assert len(by_partition) > 1, "41 keys should spread over 3 partitions"
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    assert {s["partition"]: (s["records"], s["first_offset"], s["last_offset"])
            for s in summary["partitions"]} == \
        {p: (len(o), 0, len(o) - 1) for p, o in by_partition.items()}

    keys = sorted({k for _, _, k, _, _ in got})
    expected = produce_with_confluent(broker, "cli-murmur", [{"key": k} for k in keys],
                                      partitioner="murmur2_random")
    kafka_partition = {k: p for p, _, k, _ in expected}
    for p, _, k, _, _ in got:
        assert int(p) == kafka_partition[k], f"key {k} in partition {p}"


def test_keyless_lines_take_partitions_in_turn_and_a_fixed_partition_takes_all(broker):
    """Without a key, records go round-robin; --partition puts every record in one
    partition; a partition the topic lacks is refused before anything is sent."""
    create_topic(broker, "cli-rr", 3)
    cli(broker, "produce", "cli-rr", stdin=b"a\nb\nc\nd\ne\nf\n")
    cli(broker, "produce", "cli-rr", "--partition", "2", stdin=b"x\ny\n")
    refused = cli(broker, "produce", "cli-rr", "--partition", "3", stdin=b"z\n", ok=False)
    assert b"no partition 3" in refused.stderr
    records = consume_json(broker, "cli-rr", "--from-beginning", "--max-messages", "8",
                           "--timeout-ms", "10000")
    per_partition = collections.Counter(r["partition"] for r in records)
    assert per_partition == {0: 2, 1: 2, 2: 4}
    assert sorted(r["value"] for r in records if r["partition"] == 2)[-2:] == ["x", "y"]


def test_produce_fails_loudly_when_the_broker_refuses_a_record(broker):
    """A record over the topic's max.message.bytes is refused by the broker: the command
    exits non-zero naming the error, and reports how many records were acknowledged."""
    create_topic(broker, "cli-small", 1, "max.message.bytes=200")
    # One line at a time reaches the broker: the first is acknowledged, the second refused.
    proc = subprocess.Popen([BIN, "produce", "cli-small", "--bootstrap", broker.bootstrap],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b"ok\n")
    proc.stdin.flush()
    wait_for("the first record", lambda: consume_json(
        broker, "cli-small", "--from-beginning", "--timeout-ms", "200") != [])
    proc.stdin.write(b"x" * 1000 + b"\n")
    proc.stdin.close()
    assert proc.wait(WAIT_S) == 1
    err = proc.stderr.read().decode()
    assert "MESSAGE_TOO_LARGE" in err and "1 of 2 record(s) acknowledged" in err, err


def test_acks_zero_records_arrive_without_an_answer(broker):
    """With --acks 0 the broker sends no response; the records are still written."""
    create_topic(broker, "cli-acks0", 1)
    out = cli(broker, "produce", "cli-acks0", "--acks", "0", "--output", "json",
              stdin=b"a\nb\nc\n")
    assert json.loads(out.stdout)["records"] == 3
    records = consume_json(broker, "cli-acks0", "--from-beginning", "--max-messages", "3",
                           "--timeout-ms", "20000")
    assert [r["value"] for r in records] == ["a", "b", "c"]


# -- consume ------------------------------------------------------------------------------

def test_records_from_confluent_kafka_print_as_json_with_keys_values_headers_and_offsets(broker):
    """Compressed batches written by librdkafka are printed one JSON object per record with
    the partition and offset librdkafka was acknowledged at, the key and value (hex where
    not UTF-8, null where null), the headers in order (repeated keys and null values kept)
    and the producer's timestamps."""
    create_topic(broker, "cli-json", 2)
    messages = []
    for i in range(300):
        m = {"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": i % 2,
             "timestamp": 1_600_000_000_000 + i,
             "headers": [("h", f"{i}".encode()), ("h", b"again"), ("null", None)]}
        if i == 7:
            m["value"] = b"\xff\xfe\x00"
        if i == 8:
            m["value"] = None
        if i == 9:
            m["key"] = None
        messages.append(m)
    acked = produce_with_confluent(broker, "cli-json", messages, **{
        "compression.type": "zstd", "linger.ms": 50})
    records = consume_json(broker, "cli-json", "--from-beginning", "--max-messages", "300",
                           "--timeout-ms", "20000")
    assert len(records) == 300
    at = {}
    for r in records:
        assert r["topic"] == "cli-json" and r["timestamp_type"] == "CreateTime"
        at[(r["partition"], r["offset"])] = r
    for i, ((partition, offset, _, _), m) in enumerate(zip(acked, messages)):
        r = at[(partition, offset)]
        expected_value = (None, None) if m["value"] is None else \
            (m["value"].hex(), "hex") if m["value"] == b"\xff\xfe\x00" else \
            (m["value"].decode(), "utf8")
        assert (r["value"], r["value_encoding"]) == expected_value
        assert r["key"] == (m["key"].decode() if m["key"] is not None else None)
        assert r["timestamp"] == m["timestamp"]
        assert r["headers"] == [
            {"key": "h", "value": str(i), "value_encoding": "utf8"},
            {"key": "h", "value": "again", "value_encoding": "utf8"},
            {"key": "null", "value": None, "value_encoding": None}]


def test_start_positions_beginning_offset_timestamp_and_latest(broker):
    """--from-beginning reads from the log start; --offset N from N (clamped to the log
    end); --timestamp T from the first record at or after T as ListOffsets finds it;
    without any, only records written after the consumer started are printed."""
    create_topic(broker, "cli-pos", 1)
    produce_with_confluent(broker, "cli-pos", [
        {"value": f"v{i}".encode(), "timestamp": 1_000_000 + 10 * i} for i in range(10)])

    def offsets(*args):
        return [r["offset"] for r in consume_json(broker, "cli-pos", "--timeout-ms", "500",
                                                  *args)]

    assert offsets("--from-beginning") == list(range(10))
    assert offsets("--offset", "4") == list(range(4, 10))
    assert offsets("--offset", "99") == []
    assert offsets("--timestamp", "1000035") == list(range(4, 10))
    assert offsets("--timestamp", "1000040") == list(range(4, 10))
    assert offsets("--timestamp", "2000000") == []
    # Negative times are ListOffsets' sentinels (latest, earliest): refused, not passed on.
    refused = subprocess.run([BIN, "consume", "cli-pos", "--timestamp=-2", "--bootstrap",
                              broker.bootstrap], capture_output=True, timeout=WAIT_S)
    assert refused.returncode == 2 and b"--timestamp" in refused.stderr, refused.stderr
    assert offsets("--partition", "0", "--offset", "9") == [9]
    cli(broker, "consume", "cli-pos", "--partition", "1", "--timeout-ms", "100", ok=False)

    latest = subprocess.Popen([BIN, "consume", "cli-pos", "--max-messages", "1",
                               "--format", "json", "--timeout-ms", "30000",
                               "--bootstrap", broker.bootstrap], stdout=subprocess.PIPE)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    deadline = time.monotonic() + WAIT_S
    while latest.poll() is None and time.monotonic() < deadline:
        # Until the consumer has its start position, these may land before it: keep going.
        producer.produce("cli-pos", value=b"new")
        producer.flush(WAIT_S)
        try:
            latest.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    assert latest.wait(WAIT_S) == 0
    printed = json.loads(latest.stdout.read())
    assert printed["offset"] >= 10 and printed["value"] == "new"


# -- consumer groups ----------------------------------------------------------------------

def test_group_commits_what_it_printed_and_the_next_run_continues_there(quick_groups_broker):
    """A --group run stopped by --max-messages commits exactly the next offset after what
    it printed in each partition (as `groups describe --output json` and confluent-kafka's
    committed() agree), leaves the group, and a second run of the group prints exactly the
    rest: every record once over both runs."""
    broker = quick_groups_broker
    create_topic(broker, "cli-group", 3)
    cli(broker, "produce", "cli-group", "--parse-key",
        stdin="".join(f"k{i}:v{i}\n" for i in range(90)).encode())

    first = consume_json(broker, "cli-group", "--group", "g", "--from-beginning",
                         "--max-messages", "40", "--timeout-ms", "30000")
    assert len(first) == 40
    described = cli_json(broker, "groups", "describe", "g")
    assert described["state"] == "Empty" and described["members"] == []
    next_offset = collections.defaultdict(int)
    for r in first:
        next_offset[r["partition"]] = max(next_offset[r["partition"]], r["offset"] + 1)
    committed = {o["partition"]: o["committed"] for o in described["offsets"]}
    assert committed == {p: next_offset[p] for p in range(3)}
    confluent = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g"})
    try:
        theirs = confluent.committed([TopicPartition("cli-group", p) for p in range(3)],
                                     timeout=30)
    finally:
        confluent.close()
    assert {tp.partition: tp.offset for tp in theirs} == committed

    second = consume_json(broker, "cli-group", "--group", "g", "--max-messages", "50",
                          "--timeout-ms", "30000")
    both = [(r["partition"], r["offset"]) for r in first + second]
    assert len(both) == len(set(both)) == 90
    assert sorted(r["value"] for r in first + second) == sorted(f"v{i}" for i in range(90))
    lags = {o["partition"]: o["lag"] for o in cli_json(broker, "groups", "describe", "g")["offsets"]}
    assert lags == {0: 0, 1: 0, 2: 0}
    assert {"group": "g", "state": "Empty", "protocol_type": "consumer"} in \
        cli_json(broker, "groups", "list")


def test_two_group_members_split_the_partitions_and_an_interrupt_leaves_cleanly(quick_groups_broker):
    """Two `sluice consume --group` processes get disjoint range assignments covering every
    partition (seen with `groups describe`), each prints exactly the records of its own
    partitions, and SIGINT makes a member commit and leave at once."""
    broker = quick_groups_broker
    create_topic(broker, "cli-split", 4)

    def member():
        return subprocess.Popen(
            [BIN, "consume", "cli-split", "--group", "split", "--from-beginning",
             "--format", "json", "--max-messages", "20", "--timeout-ms", "60000",
             "--bootstrap", broker.bootstrap], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    a, b = member(), member()
    try:
        assignment = {}

        def split_between_two():
            g = cli_json(broker, "groups", "describe", "split")
            if g["state"] != "Stable" or len(g["members"]) != 2:
                return False
            assignment.clear()
            for m in g["members"]:
                assignment[m["member"]] = {p for t in m["assignment"] for p in t["partitions"]}
            return all(assignment.values())

        wait_for("two members sharing the partitions", split_between_two)
        shares = list(assignment.values())
        assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == {0, 1, 2, 3}
        assert sorted(len(s) for s in shares) == [2, 2], "range: 4 partitions over 2 members"

        produce_with_confluent(broker, "cli-split", [
            {"value": f"p{p}-{i}".encode(), "partition": p} for p in range(4) for i in range(10)])
        printed = []
        for proc in (a, b):
            out, err = proc.communicate(timeout=WAIT_S)
            assert proc.returncode == 0, err.decode(errors="replace")
            printed.append({(json.loads(l)["partition"], json.loads(l)["offset"])
                            for l in out.splitlines()})
        assert all(len(p) == 20 for p in printed)
        assert {frozenset(p for p, _ in got) for got in printed} == \
            {frozenset(s) for s in shares}
        assert printed[0] | printed[1] == {(p, o) for p in range(4) for o in range(10)}
    finally:
        for proc in (a, b):
            proc.kill()
            proc.wait()

    # An interrupted member commits what it printed and leaves: the group is Empty at once,
    # not after its session timeout.
    produce_with_confluent(broker, "cli-split", [{"value": b"late", "partition": 0}])
    c = subprocess.Popen([BIN, "consume", "cli-split", "--group", "split", "--format", "json",
                          "--timeout-ms", "60000", "--bootstrap", broker.bootstrap],
                         stdout=subprocess.PIPE)
    try:
        line = c.stdout.readline()
        assert json.loads(line)["value"] == "late"
        c.send_signal(signal.SIGINT)
        assert c.wait(WAIT_S) == 0
    finally:
        c.kill()
        c.wait()
    g = cli_json(broker, "groups", "describe", "split")
    assert g["state"] == "Empty"
    assert {o["partition"]: o["committed"] for o in g["offsets"]} == {0: 11, 1: 10, 2: 10, 3: 10}


# -- cluster, topics, groups as JSON -------------------------------------------------------

def test_cluster_and_topics_as_json_agree_with_confluent_kafka_admin(broker):
    """`cluster --output json` gives the cluster id, controller, brokers and topic and
    partition counts Metadata reports to confluent-kafka; `topics list` and `topics
    describe` give each topic's partitions and offsets."""
    create_topic(broker, "cli-a", 3)
    create_topic(broker, "cli-b", 2, "retention.ms=3600000")
    cli(broker, "produce", "cli-b", "--partition", "1", stdin=b"1\n2\n3\n")
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=30)

    cluster = cli_json(broker, "cluster")
    assert cluster["cluster_id"] == md.cluster_id and cluster["cluster_id"]
    assert cluster["controller_id"] == md.controller_id
    assert cluster["brokers"] == [{"node_id": b.id, "host": b.host, "port": b.port, "rack": None}
                                  for b in md.brokers.values()]
    assert cluster["brokers"][0]["port"] == broker.port
    assert cluster["topics"] == len(md.topics)
    assert cluster["partitions"] == sum(len(t.partitions) for t in md.topics.values())

    listed = cli_json(broker, "topics", "list")
    assert {t["topic"]: t["partitions"] for t in listed} == \
        {name: len(t.partitions) for name, t in md.topics.items()}
    assert {"topic": "cli-a", "partitions": 3, "internal": False} in listed

    described = cli_json(broker, "topics", "describe", "cli-b")
    assert described["topic"] == "cli-b" and described["internal"] is False
    assert described["partitions"] == [
        {"partition": 0, "leader": 0, "log_start": 0, "log_end": 0},
        {"partition": 1, "leader": 0, "log_start": 0, "log_end": 3}]
    assert {"config": "retention.ms", "value": "3600000", "source": "topic"} in \
        described["configs"]


def test_topics_create_as_json_reports_the_topic_it_made(broker):
    """`topics create --output json` prints one object with the topic, the partition count
    and replication factor the broker chose, and the configs given; the topic is there, as
    confluent-kafka sees it."""
    made = cli_json(broker, "topics", "create", "cli-made", "--partitions", "3",
                    "--config", "retention.ms=3600000", "--config", "cleanup.policy=compact")
    assert made == {"topic": "cli-made", "partitions": 3, "replication_factor": 1,
                    "configs": {"retention.ms": "3600000", "cleanup.policy": "compact"}}
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=30)
    assert len(md.topics["cli-made"].partitions) == 3


def test_topics_alter_as_json_reports_what_it_set_and_returned_to_default(broker):
    """`topics alter --output json` prints the configs set and those returned to their
    defaults, and `topics describe` then shows exactly that."""
    create_topic(broker, "cli-alter", 1, "segment.bytes=1048576")
    altered = cli_json(broker, "topics", "alter", "cli-alter", "--set", "retention.ms=1000",
                       "--delete", "segment.bytes")
    assert altered == {"topic": "cli-alter", "set": {"retention.ms": "1000"},
                       "deleted": ["segment.bytes"]}
    configs = {c["config"]: c for c in cli_json(broker, "topics", "describe",
                                                 "cli-alter")["configs"]}
    assert (configs["retention.ms"]["value"], configs["retention.ms"]["source"]) == \
        ("1000", "topic")
    assert configs["segment.bytes"]["source"] != "topic"


def test_topics_delete_as_json_reports_the_deleted_topic(broker):
    """`topics delete --output json` prints the topic it deleted, which is then gone."""
    create_topic(broker, "cli-gone", 2)
    assert cli_json(broker, "topics", "delete", "cli-gone") == \
        {"topic": "cli-gone", "deleted": True}
    assert "cli-gone" not in {t["topic"] for t in cli_json(broker, "topics", "list")}


def test_groups_reset_offsets_as_json_reports_the_new_offsets_and_whether_it_committed(broker):
    """`groups reset-offsets --output json` prints the group, topic, whether it was a dry
    run and each partition's new offset; a dry run commits nothing, a real run commits
    exactly what it printed (as confluent-kafka's committed() reads back)."""
    create_topic(broker, "cli-reset", 2)
    cli(broker, "produce", "cli-reset", "--partition", "1", stdin=b"a\nb\nc\n")
    args = ["groups", "reset-offsets", "cli-reset-group", "--topic", "cli-reset",
            "--to-latest"]
    offsets = [{"topic": "cli-reset", "partition": 0, "new_offset": 0},
               {"topic": "cli-reset", "partition": 1, "new_offset": 3}]

    assert cli_json(broker, *args, "--dry-run") == {
        "group": "cli-reset-group", "topic": "cli-reset", "dry_run": True, "offsets": offsets}
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-reset-group"})
    try:
        def committed():
            return [tp.offset for tp in consumer.committed(
                [TopicPartition("cli-reset", p) for p in (0, 1)], timeout=30)]

        assert all(o < 0 for o in committed()), "a dry run commits nothing"
        assert cli_json(broker, *args) == {
            "group": "cli-reset-group", "topic": "cli-reset", "dry_run": False,
            "offsets": offsets}
        assert committed() == [0, 3]
    finally:
        consumer.close()


# -- serve --------------------------------------------------------------------------------

def json_log_events(tmp_path, name, *args):
    """Starts and cleanly stops a broker with `--log-format json ARGS`; returns every line it
    wrote, parsed."""
    (tmp_path / name).mkdir()
    b = make_broker(tmp_path / name, ["--log-format", "json", *args])
    b.start()
    try:
        # Until it is ready (unfenced by its controller) the broker has not loaded its
        # coordinators, whose lines the test looks for.
        deadline = time.monotonic() + 30
        while b"broker ready" not in open(b.log_path, "rb").read():
            assert time.monotonic() < deadline, "the broker never became ready"
            time.sleep(0.05)
        b.stop()
    finally:
        b.kill()
    lines = [l for l in open(b.log_path, "rb").read().splitlines() if l.strip()]
    return b, [json.loads(l) for l in lines]


def test_serve_log_format_json_writes_one_object_per_line_and_log_sets_module_levels(tmp_path):
    """With --log-format json every line the broker writes is one JSON object with a
    timestamp, level, target and message (the listening line among them), and --log turns
    one module's INFO lines off while the rest stay."""
    b, events = json_log_events(tmp_path, "plain")
    for e in events:
        assert {"timestamp", "level", "target", "message"} <= e.keys(), e
    assert any(e["message"] == f"listening on 127.0.0.1:{b.port}" for e in events)
    targets = {e["target"] for e in events if e["level"] == "INFO"}
    assert "sluice_broker::groups" in targets, f"the test needs INFO lines of it: {targets}"

    _, events = json_log_events(tmp_path, "quiet", "--log", "info,sluice_broker::groups=warn")
    targets = {e["target"] for e in events if e["level"] == "INFO"}
    assert "sluice_broker::groups" not in targets and "sluice_broker" in targets, targets


@pytest.mark.parametrize("args,env,complaint", [
    (["--log", "info,sluice_storage=loud"], {}, b"--log"),
    (["--log", "=info"], {}, b"--log"),
    ([], {"RUST_LOG": "sluice=shout"}, b"RUST_LOG"),
    (["--log-format", "yaml"], {}, b"yaml"),
    (["--admin-listen", "not-an-address"], {}, b"admin.listen"),
])
def test_serve_refuses_bad_logging_and_admin_flags_with_exit_status_2(tmp_path, args, env, complaint):
    """A log directive, log format or admin address that does not parse stops `serve`
    before it starts, with exit status 2 and a message naming what was wrong."""
    out = subprocess.run([BIN, "serve", "--data-dir", str(tmp_path / "data"),
                          "--listen", "127.0.0.1:0", *args],
                         env={**os.environ, **env}, capture_output=True, timeout=WAIT_S)
    assert out.returncode == 2, out.stderr
    assert complaint in out.stderr, out.stderr


# -- hostile brokers ----------------------------------------------------------------------

def fake_broker(answer):
    """A one-connection server that answers each request with `answer(correlation_id,
    api_key)`: the bytes after the size prefix, or a whole frame if it returns a tuple."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            try:
                while True:
                    head = conn.recv(4, socket.MSG_WAITALL)
                    if len(head) < 4:
                        return
                    body = conn.recv(struct.unpack(">i", head)[0], socket.MSG_WAITALL)
                    api_key, _, correlation_id = struct.unpack(">hhi", body[:8])
                    reply = answer(correlation_id, api_key)
                    conn.sendall(reply[0] if isinstance(reply, tuple) else
                                 struct.pack(">i", len(reply)) + reply)
            except OSError:
                return  # the CLI hung up, as it should after a bad answer

    threading.Thread(target=serve, daemon=True).start()
    return server


HOSTILE = {
    # A Metadata response claiming 2^32 - 2 brokers in a few bytes.
    "huge-array": lambda corr, _: struct.pack(">ib", corr, 0) + struct.pack(">i", 0)
    + b"\xff\xff\xff\xff\x0f",
    # A frame that says it is 2 GiB long.
    "huge-frame": lambda corr, _: (struct.pack(">i", 2**31 - 1) + struct.pack(">i", corr),),
    # A string length running past the end.
    "short-string": lambda corr, _: struct.pack(">ib", corr, 0) + struct.pack(">i", 0)
    + b"\x02" + struct.pack(">i", 0) + b"\x7f",
    # Garbage after a right correlation id.
    "garbage": lambda corr, _: struct.pack(">i", corr) + bytes(range(256)) * 3,
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("command", [["topics", "list"], ["cluster"],
                                     ["consume", "t", "--timeout-ms", "100"],
                                     ["produce", "t"]])
def test_hostile_broker_responses_are_errors_not_crashes(kind, command):
    """Absurd counts, lengths and bytes in a broker's answer end the command with exit
    status 1 and a message, never a panic (101) or an abort on allocation (SIGABRT)."""
    server = fake_broker(HOSTILE[kind])
    try:
        out = subprocess.run([BIN, *command, "--bootstrap",
                              f"127.0.0.1:{server.getsockname()[1]}"],
                             input=b"x\n", capture_output=True, timeout=WAIT_S)
    finally:
        server.close()
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert out.stderr.startswith(b"sluice: "), out.stderr


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def zigzag(n):
    return uvarint((n << 1) ^ (n >> 63))


def v2_batch(base_offset, values, records_count=None):
    """An uncompressed v2 record batch with a correct CRC (see sluice-records)."""
    records = b""
    for i, v in enumerate(values):
        body = b"\x00" + zigzag(0) + zigzag(i) + zigzag(-1) + zigzag(len(v)) + v + zigzag(0)
        records += zigzag(len(body)) + body
    n = len(values) if records_count is None else records_count
    covered = struct.pack(">hiqqqhii", 0, n - 1, 0, 0, -1, -1, -1, n) + records
    rest = struct.pack(">ibI", -1, 2, crc32c(covered)) + covered
    return struct.pack(">qi", base_offset, len(rest)) + rest


def topic_t_broker(records, aborted=b"\x00"):
    """Answers Metadata and ListOffsets for a topic `t` with one partition, and every Fetch
    with `records` (and the aborted-transactions array bytes `aborted`)."""
    def answer(corr, api_key):
        header = struct.pack(">i", corr) + b"\x00"
        if api_key == 3:  # Metadata v12
            broker = struct.pack(">i", 0) + compact_str(b"127.0.0.1") + struct.pack(">i", 1) \
                + b"\x00\x00"
            replicas = uvarint(2) + struct.pack(">i", 0)
            partition = struct.pack(">hiii", 0, 0, 0, 0) + replicas + replicas + uvarint(1) \
                + b"\x00"
            topic = struct.pack(">h", 0) + compact_str(b"t") + bytes(16) + b"\x00" \
                + uvarint(2) + partition + struct.pack(">i", 0) + b"\x00"
            return header + struct.pack(">i", 0) + uvarint(2) + broker + compact_str(b"c") \
                + struct.pack(">i", 0) + uvarint(2) + topic + b"\x00"
        if api_key == 2:  # ListOffsets v6: offset 0
            return header + struct.pack(">i", 0) + uvarint(2) + compact_str(b"t") + uvarint(2) \
                + struct.pack(">ihqqi", 0, 0, -1, 0, 0) + b"\x00\x00\x00"
        assert api_key == 1, api_key  # Fetch v12
        partition = struct.pack(">ihqqq", 0, 0, 10, 10, 0) + aborted + struct.pack(">i", -1) \
            + uvarint(len(records) + 1) + records + b"\x00"
        return header + struct.pack(">ihi", 0, 0, 0) + uvarint(2) + compact_str(b"t") \
            + uvarint(2) + partition + b"\x00\x00"
    return answer


def flipped(b, at):
    return b[:at] + bytes([b[at] ^ 1]) + b[at + 1:]


HOSTILE_FETCHES = {
    "aborted-transactions-count": (v2_batch(0, [b"v"]), uvarint(2**32 - 1)),
    "records-garbage": (bytes(range(256)), b"\x00"),
    "crc-mismatch": (flipped(v2_batch(0, [b"v"]), -2), b"\x00"),
    "base-offset-near-max": (v2_batch(2**63 - 2, [b"v"]), b"\x00"),
    "record-count-lies": (v2_batch(0, [b"v"], records_count=5), b"\x00"),
}


def consume_from_fake(answer):
    server = fake_broker(answer)
    try:
        return subprocess.run([BIN, "consume", "t", "--from-beginning", "--max-messages", "1",
                               "--timeout-ms", "5000", "--bootstrap",
                               f"127.0.0.1:{server.getsockname()[1]}"],
                              capture_output=True, timeout=WAIT_S)
    finally:
        server.close()


def test_the_fake_broker_serves_a_record_the_cli_prints():
    """The hostile fetches below differ from this one only in what they break."""
    out = consume_from_fake(topic_t_broker(v2_batch(0, [b"v"])))
    assert (out.returncode, out.stdout) == (0, b"v\n"), out.stderr


@pytest.mark.parametrize("kind", sorted(HOSTILE_FETCHES))
def test_hostile_fetch_responses_are_errors_not_crashes(kind):
    """Absurd counts, corrupt batches and impossible offsets in a Fetch response end
    `sluice consume` with exit status 1 and a message, never a panic or an abort."""
    out = consume_from_fake(topic_t_broker(*HOSTILE_FETCHES[kind]))
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert b"\nsluice: " in b"\n" + out.stderr and out.stdout == b"", out.stderr
