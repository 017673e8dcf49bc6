"""kafkajs against sluice: kafkajs 2.2.4 (the current release) for its admin client, an
idempotent producer with gzip, a consumer group of two members and transactions; kafkajs
1.16.0 (an old release, installed beside it as `kafkajs-old`) producing, consuming in a group
and creating topics.

tests/js/install.sh installs both from the npm registry (package-lock.json pins them) into
tests/js/.cache; tests/js/client.js runs one scenario per process and prints what kafkajs
reported, one JSON line per step, unjudged. Here that is checked against expectations computed
from the inputs, and against what librdkafka (confluent-kafka) and a raw Fetch see. The tests
share one broker; each uses its own topics and groups.
"""

import collections
import json
import pathlib
import shutil
import subprocess
import time

import pytest

from conftest import (check_round_trip, expected_messages, log_since, log_sizes, running_broker,
                      running_cluster)
from crosscheck import (broker_ids, check_wire_batches, committed, create_topic, end_offsets,
                        read_all, topic_configs, topic_partitions, watermarks)

JS_DIR = pathlib.Path(__file__).resolve().parents[1] / "js"
CLIENT = JS_DIR / "client.js"
RUN_TIMEOUT_S = 120
# How long client.js waits for a group to settle, records to arrive or commits to land.
WAIT_MS = 30_000
# DescribeConfigs' config source numbers (Kafka's ConfigSource).
DYNAMIC_TOPIC_CONFIG = 1
# The kafkajs release behind each `lib` of client.js (tests/js/package.json).
KAFKAJS = {"current": "2.2.4", "old": "1.16.0"}


@pytest.fixture(scope="session")
def js_installed():
    """Installs kafkajs (quick when tests/js/.cache is current)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the kafkajs tests (Node 14+)")
    out = subprocess.run([str(JS_DIR / "install.sh")], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"tests/js/install.sh failed:\n{out.stdout}\n{out.stderr}"


@pytest.fixture(scope="module")
def shared(tmp_path_factory, js_installed):
    """One broker for the module; a group's first rebalance does not wait for more members
    (the two-member test holds its members paused until both are in)."""
    yield from running_broker(tmp_path_factory.mktemp("js-clients"),
                              ["--set", "group.initial.rebalance.delay.ms=0"])


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory, js_installed):
    """Three nodes for the module (default.replication.factor=3), with `shared`'s settings."""
    yield from running_cluster(tmp_path_factory.mktemp("js-clients-cluster"),
                               ["--set", "group.initial.rebalance.delay.ms=0"])


# The tests that also run against three nodes.
ONE_AND_THREE = pytest.mark.parametrize("where", ["shared", "shared_cluster"])


# -- running client.js ---------------------------------------------------------------------

def collapse(text, limit=60):
    """The last `limit` distinct lines, repeated ones shown once with their count: a retrying
    client repeats itself."""
    counts = collections.Counter(text.splitlines())
    lines = [line if n == 1 else f"{line}  (x{n})" for line, n in counts.items()]
    return "\n".join(lines[-limit:])


class JsRun:
    """What one client.js process reported: its steps in order."""

    def __init__(self, steps):
        self.steps = steps

    def all(self, step):
        return [s["result"] for s in self.steps if s.get("step") == step]

    def one(self, step):
        found = self.all(step)
        assert len(found) == 1, f"expected one {step!r} step, got {len(found)}: {self.steps}"
        return found[0]


def run_js(broker, scenario, spec, client_id, lib="current"):
    """Runs `node client.js SCENARIO` with `spec` (plus the broker and client id) on stdin;
    fails the test with kafkajs's log and the broker's complaints unless it exits 0 with the
    broker having refused none of its requests as at an unsupported version."""
    # One seed broker (client.js takes one address): kafkajs finds the others from it.
    spec = {"bootstrap": broker.bootstrap.split(",")[0], "client_id": client_id, "lib": lib,
            "wait_ms": WAIT_MS, "deadline_ms": (RUN_TIMEOUT_S - 10) * 1000, **spec}
    log_start = log_sizes(broker)
    argv = ["node", str(CLIENT), scenario]
    try:
        out = subprocess.run(argv, input=json.dumps(spec), capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S)
        code, stdout, stderr = out.returncode, out.stdout, out.stderr
    except subprocess.TimeoutExpired as e:
        code = "killed after timeout"
        stdout, stderr = (x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                          for x in (e.stdout, e.stderr))
    complaints = broker_complaints(log_start, client_id)
    explain = (f"node client.js {scenario} ({lib}, {client_id}): exit {code}\n"
               f"--- stdout\n{stdout[-6000:]}\n--- stderr (kafkajs log)\n{collapse(stderr)}\n"
               f"--- broker log: warnings and errors meanwhile\n" +
               ("\n".join(complaints) or "(none)"))
    if code != 0:
        pytest.fail(explain)
    assert not [c for c in complaints if "unsupported version" in c], explain
    run = JsRun([json.loads(line) for line in stdout.splitlines()])
    assert run.one("client") == {"lib": lib, "version": KAFKAJS[lib]}, explain
    return run


def broker_complaints(since, client_id):
    """Broker log lines written since `since` (`log_sizes`) that are warnings or errors, or
    that name `client_id`."""
    return [line for line in log_since(since).splitlines()
            if " WARN " in line or " ERROR " in line or f'"{client_id}"' in line]


# -- expectations --------------------------------------------------------------------------

def as_spec(pairs):
    """(key, value) byte pairs as client.js messages."""
    return [{"key": k.decode(), "value": v.decode()} for k, v in pairs]


def check_send_results(sends, batches, stored):
    """Each kafkajs send (one call, `batches[i]`) reported, for every partition its records
    went to, the offset of its first record there, and the records of one send sit at
    consecutive offsets of their partition in send order. Returns {(partition, offset): index
    of the send that wrote it}."""
    assert len(sends) == len(batches)
    where = {(m.key, m.value): (m.partition, m.offset) for m in stored}
    written_by = {}
    for i, (sent, msgs) in enumerate(zip(sends, batches)):
        placed = collections.defaultdict(list)
        for kv in msgs:
            p, o = where[kv]
            placed[p].append(o)
            written_by[(p, o)] = i
        assert sent == [{"partition": p, "base_offset": placed[p][0], "error_code": 0}
                        for p in sorted(placed)], f"send {i}"
        for p, offsets in placed.items():
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), \
                f"send {i}: its records in partition {p} are not consecutive in send order"
    return written_by


def records_of(stored):
    """librdkafka's Msg tuples as the (partition, offset, key, value, timestamp) client.js
    reports."""
    return sorted((m.partition, m.offset, m.key.decode(), m.value.decode(), m.timestamp)
                  for m in stored)


def consumed_records(records):
    return sorted((r["p"], r["o"], r["k"], r["v"], r["ts"]) for r in records)


def by_partition_json(offsets):
    """{partition: offset} with the partition as a string, as JSON objects have it."""
    return {str(p): o for p, o in offsets.items()}


def check_group_consumed(run, stored, members):
    """The group-consume scenario's members, once all were in the group, were assigned
    disjoint non-empty sets of partitions covering the topic, as DescribeGroups also showed;
    together they read exactly the stored records, each once, in offset order per partition,
    each from the member its partition was assigned to; the group committed the end offsets
    and, after the members left, is Empty with the offsets kept."""
    partitions = sorted({m.partition for m in stored})
    joined = run.one("joined")
    assignments = {int(m): j["assignment"] for m, j in joined.items()}
    assert sorted(assignments) == list(range(members))
    assert all(assignments.values()), f"a member got no partitions: {assignments}"
    flat = [p for a in assignments.values() for p in a]
    assert sorted(flat) == partitions, f"assignment not a partition of the topic: {assignments}"

    described = run.one("described")
    assert (described["error_code"], described["state"], described["protocol_type"]) == \
        (0, "Stable", "consumer")
    assert sorted((m["member_id"], m["assignment"]) for m in described["members"]) == \
        sorted((j["member_id"], j["assignment"]) for j in joined.values())

    records = run.one("records")
    assert consumed_records(records) == records_of(stored)
    for r in records:
        assert r["p"] in assignments[r["member"]], f"{r} read by a member not assigned it"
    for p in partitions:
        offsets = [r["o"] for r in records if r["p"] == p]
        assert offsets == sorted(offsets), f"partition {p} delivered out of order"

    ends = by_partition_json(end_offsets(stored))
    assert run.one("committed") == ends
    after = run.one("described_after_leave")
    assert (after["error_code"], after["state"], after["members"]) == (0, "Empty", [])
    assert run.one("committed_after_leave") == ends


# -- kafkajs 2.2.4 -------------------------------------------------------------------------

def test_kafkajs_admin_creates_describes_alters_grows_lists_offsets_and_deletes(shared):
    """kafkajs's admin client: createTopics (3 partitions, two configs) succeeds once and
    reports an existing topic the second time; fetchTopicMetadata lists the partitions led by
    the broker; describeConfigs shows the two configs as dynamic topic configs and the rest as
    librdkafka sees them on an untouched topic; alterConfigs (legacy, whole-set) changes one
    and returns the other to its default, as librdkafka then reads; createPartitions grows the
    topic to 5, records produced to every new partition land there; fetchTopicOffsets and
    fetchTopicOffsetsByTimestamp answer the offsets computed from what was produced;
    deleteTopics removes it from listTopics and from librdkafka's metadata."""
    topic, control = "kjs-admin", "kjs-admin-control"
    names = ["retention.ms", "max.message.bytes", "cleanup.policy"]
    create_topic(shared, control, 1)
    defaults = topic_configs(shared, control, names)
    configs = {"retention.ms": "3600000", "max.message.bytes": "200000"}
    altered = {"retention.ms": "7200000"}
    for name, value in [*configs.items(), *altered.items()]:
        assert value != defaults[name][0], f"{name}: pick a value other than the default"
    counts = [3, 1, 0, 4, 2]  # records per partition once grown from 3 to 5
    base = int(time.time() * 1000) - 60_000
    records = [{"partition": p, "key": f"k{p}-{j}", "value": f"v{p}-{j}",
                "timestamp": base + 1000 * j}
               for p, n in enumerate(counts) for j in range(n)]
    at = base + 1500

    run = run_js(shared, "admin", {
        "topic": topic, "partitions": 3, "configs": configs, "config_names": names,
        "altered_configs": altered, "partitions_grown": len(counts), "records": records,
        "timestamp": at}, client_id="kjs-admin")

    assert run.one("created") is True
    assert run.one("created_again") is False
    [leader] = broker_ids(shared)

    def partitions(n):
        return [{"partition": p, "error_code": 0, "leader": leader, "replicas": [leader],
                 "isr": [leader]} for p in range(n)]

    assert run.one("metadata") == partitions(3)

    def expected_configs(dynamic):
        return {"error_code": 0, "entries": {
            n: ({"value": dynamic[n], "is_default": False, "source": DYNAMIC_TOPIC_CONFIG,
                 "read_only": False} if n in dynamic else
                {"value": defaults[n][0], "is_default": defaults[n][2],
                 "source": defaults[n][1], "read_only": False})
            for n in names}}

    assert run.one("configs") == expected_configs(configs)
    assert run.one("configs_altered") == expected_configs(altered)
    assert topic_configs(shared, topic, names) == {
        n: (e["value"], e["source"], e["is_default"])
        for n, e in expected_configs(altered)["entries"].items()}

    assert run.one("metadata_grown") == partitions(len(counts))
    assert topic_partitions(shared, topic) == list(range(len(counts)))
    assert run.one("sent") == [{"partition": p, "base_offset": 0, "error_code": 0}
                               for p, n in enumerate(counts) if n > 0]
    stored = read_all(shared, topic)
    assert records_of(stored) == sorted(
        (r["partition"], int(r["value"].split("-")[1]), r["key"], r["value"], r["timestamp"])
        for r in records)
    assert run.one("offsets") == [{"partition": p, "low": 0, "high": n, "offset": n}
                                  for p, n in enumerate(counts)]
    assert [watermarks(shared, topic, p) for p in range(len(counts))] == \
        [(0, n) for n in counts]

    def first_at_or_after(p):
        """ListOffsets by timestamp from the stored records; kafkajs answers the end offset
        where there is none."""
        return min((m.offset for m in stored if m.partition == p and m.timestamp >= at),
                   default=counts[p])

    assert run.one("offsets_by_timestamp") == [
        {"partition": p, "offset": first_at_or_after(p)} for p in range(len(counts))]

    deleted = run_js(shared, "delete-topic", {"topic": topic}, client_id="kjs-admin")
    assert deleted.one("listed") is True
    assert deleted.one("listed_after_delete") is False
    assert topic_partitions(shared, topic) is None


@ONE_AND_THREE
def test_kafkajs_idempotent_gzip_producer_and_two_member_group(request, where):
    """An idempotent kafkajs producer (acks -1) sends keyed records in four gzip batches and
    one uncompressed: each send is told the offsets its records got; librdkafka reads every
    record once, dense per partition, in send order, one partition per key; the stored batches
    keep kafkajs's codec, its one producer id and sequences from 0. Then two kafkajs consumers
    in one group split the partitions between them and read everything exactly once, each
    partition in order by its owner, and commit the end offsets, which kafkajs's admin
    (fetchOffsets, describeGroups) and librdkafka read back. On one node and on three."""
    shared = request.getfixturevalue(where)
    topic, group, partitions = "kjs-idem", "kjs-idem-group", 3
    create_topic(shared, topic, partitions)
    gz, plain = expected_messages("gzip", 120), expected_messages("none", 30)
    batches = [("gzip", gz[i:i + 30]) for i in range(0, len(gz), 30)] + [("none", plain)]

    run = run_js(shared, "produce", {
        "topic": topic, "idempotent": True,
        "batches": [{"compression": c, "messages": as_spec(m)} for c, m in batches]},
        client_id="kjs-idem")
    stored = read_all(shared, topic)
    check_round_trip(stored, {"gzip": gz, "none": plain}, partitions)
    written_by = check_send_results(run.all("sent"), [m for _, m in batches], stored)
    wire = check_wire_batches(shared, topic, stored,
                              lambda p, o: batches[written_by[(p, o)]][0])
    for p, in_p in wire.items():  # one batch per partition per send
        assert len(in_p) == len({i for (q, _), i in written_by.items() if q == p}), in_p

    consumed = run_js(shared, "group-consume", {
        "topic": topic, "group": group, "members": 2, "expect": len(stored)},
        client_id="kjs-group")
    check_group_consumed(consumed, stored, members=2)
    assert committed(shared, group, topic, partitions) == end_offsets(stored)


@ONE_AND_THREE
def test_kafkajs_transactions_commit_abort_send_offsets_and_read_committed(request, where):
    """A kafkajs transactional producer (maxInFlightRequests 1, idempotent) commits a
    transaction carrying group offsets (sendOffsets), aborts one carrying other offsets, and
    commits a third: the log holds all three, each closed by a control batch in every
    partition it touched; read_committed readers (kafkajs's default consumer, and librdkafka)
    see exactly the committed records, read_uncommitted ones everything; the group's offsets
    are those of the committed transactions only, as kafkajs and librdkafka read them. On
    one node and on three."""
    shared = request.getfixturevalue(where)
    topic, source, group = "kjs-txn", "kjs-txn-source", "kjs-txn-group"
    partitions = 3
    create_topic(shared, topic, partitions)
    create_topic(shared, source, partitions)

    def txn(action, label, offsets):
        return {"action": action, "offsets": offsets,
                "messages": [{"partition": i % partitions, "key": f"{label}-k{i}",
                              "value": f"{label}-{i:03d}"} for i in range(3 * partitions)]}

    transactions = [txn("commit", "first", {"0": 5, "1": 7}),
                    txn("abort", "aborted", {"0": 50, "1": 70, "2": 90}),
                    txn("commit", "second", {"2": 11})]
    expected_offsets = {}
    for t in transactions:
        if t["action"] == "commit":
            expected_offsets.update({int(p): o for p, o in t["offsets"].items()})
    values = {a: [m["value"] for t in transactions if t["action"] == a for m in t["messages"]]
              for a in ("commit", "abort")}

    run = run_js(shared, "transactions", {
        "topic": topic, "transactional_id": "kjs-txn-id", "group": group,
        "offsets_topic": source, "transactions": transactions}, client_id="kjs-txn")
    reported = run.all("transaction")
    assert [r["action"] for r in reported] == [t["action"] for t in transactions]

    everything = read_all(shared, topic, "read_uncommitted")
    assert sorted(m.value.decode() for m in everything) == sorted(values["commit"] +
                                                                  values["abort"])
    pairs = [[(m["key"].encode(), m["value"].encode()) for m in t["messages"]]
             for t in transactions]
    check_send_results([r["sent"] for r in reported], pairs, everything)
    wire = check_wire_batches(shared, topic, everything, lambda p, o: "none",
                              transactional=True)
    for p, batches in wire.items():
        # Each transaction: its data batch, then its marker.
        assert [b["control"] for b in batches] == [False, True] * len(transactions), \
            f"partition {p}: {batches}"

    committed_log = read_all(shared, topic, "read_committed")
    assert sorted(m.value.decode() for m in committed_log) == sorted(values["commit"])
    assert committed_log == [m for m in everything if m.value.decode() in values["commit"]]

    read_committed = run_js(shared, "group-consume", {
        "topic": topic, "group": "kjs-txn-rc", "expect": len(values["commit"])},
        client_id="kjs-txn-rc")
    assert consumed_records(read_committed.one("records")) == records_of(committed_log)
    read_uncommitted = run_js(shared, "group-consume", {
        "topic": topic, "group": "kjs-txn-ru", "read_uncommitted": True,
        "expect": len(everything)}, client_id="kjs-txn-ru")
    assert consumed_records(read_uncommitted.one("records")) == records_of(everything)

    assert committed(shared, group, source, partitions) == expected_offsets
    offsets = run_js(shared, "group-offsets", {"group": group, "topic": source},
                     client_id="kjs-txn")
    assert offsets.one("committed") == by_partition_json(expected_offsets)


# -- kafkajs 1.16.0 ------------------------------------------------------------------------

def test_old_kafkajs_creates_topic_produces_and_consumes_in_a_group(shared):
    """kafkajs 1.16.0 (2022, before 2.0): its admin creates a topic (and reports it exists the
    second time) and reads its metadata; its producer (acks -1, gzip and uncompressed sends)
    gets every record stored once, in order, at the offsets it was told, as librdkafka reads
    them; two of its consumers in one group read everything exactly once and commit the end
    offsets, which its admin and librdkafka read back."""
    topic, group, partitions = "kjs-old", "kjs-old-group", 3
    admin = run_js(shared, "admin", {"topic": topic, "partitions": partitions},
                   client_id="kjs-old", lib="old")
    assert admin.one("created") is True
    assert admin.one("created_again") is False
    [leader] = broker_ids(shared)
    assert admin.one("metadata") == [{"partition": p, "error_code": 0, "leader": leader,
                                      "replicas": [leader], "isr": [leader]}
                                     for p in range(partitions)]
    assert topic_partitions(shared, topic) == list(range(partitions))

    gz, plain = expected_messages("gzip", 60), expected_messages("none", 30)
    batches = [("gzip", gz[:30]), ("none", plain), ("gzip", gz[30:])]
    run = run_js(shared, "produce", {
        "topic": topic, "batches": [{"compression": c, "messages": as_spec(m)}
                                    for c, m in batches]},
        client_id="kjs-old", lib="old")
    stored = read_all(shared, topic)
    check_round_trip(stored, {"gzip": gz, "none": plain}, partitions)
    check_send_results(run.all("sent"), [m for _, m in batches], stored)

    consumed = run_js(shared, "group-consume", {
        "topic": topic, "group": group, "members": 2, "expect": len(stored)},
        client_id="kjs-old-group", lib="old")
    check_group_consumed(consumed, stored, members=2)
    assert committed(shared, group, topic, partitions) == end_offsets(stored)
