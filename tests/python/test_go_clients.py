"""Current Go clients against sluice: franz-go (kgo and kadm), IBM/sarama 1.62, segmentio
kafka-go 0.4 and confluent-kafka-go 2.11, each from the Go module proxy.

The programs under tests/go are built by tests/go/install.sh into tests/go/.cache/bin. Each
runs one scenario, prints one line of JSON and exits 0, or exits 1 with the step that failed.
What they report is checked here, and cross-checked by reading the topics and the groups'
offsets with confluent-kafka. All tests share one broker; each uses its own topics and groups.
"""

import json
import pathlib
import re
import subprocess

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import crosscheck
from conftest import ROOT, running_broker, running_cluster

GO_BIN = ROOT / "tests" / "go" / ".cache" / "bin"
RUN_TIMEOUT_S = 120
WAIT_S = 30
PARTITIONS = 3
UNSUPPORTED = re.compile(
    r'request at an unsupported version api=(\w+) version=(-?\d+) client="([^"]*)"')


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One broker for the whole module: three partitions per auto-created topic, and no
    initial rebalance delay, so that a lone group member is assigned at once."""
    yield from running_broker(tmp_path_factory.mktemp("go-clients"),
                              ["--set", f"num.partitions={PARTITIONS}",
                               "--set", "group.initial.rebalance.delay.ms=0"])


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """Three nodes for the module (default.replication.factor=3), with `shared`'s settings."""
    yield from running_cluster(tmp_path_factory.mktemp("go-clients-cluster"),
                               ["--set", f"num.partitions={PARTITIONS}",
                                "--set", "group.initial.rebalance.delay.ms=0"])


# The tests that also run against three nodes.
ONE_AND_THREE = pytest.mark.parametrize("where", ["shared", "shared_cluster"])


# -- running the Go programs ---------------------------------------------------------------

def go_program(name):
    path = GO_BIN / name
    if not path.exists():
        pytest.fail(f"{path} does not exist: build the Go programs with tests/go/install.sh")
    return str(path)


def unsupported_requests(broker, client_id):
    """(api, version) of every request the broker logged as at an unsupported version for
    `client_id`, without repeats, in the order first seen."""
    text = "".join(pathlib.Path(p).read_text(errors="replace") for p in broker.log_paths)
    seen = []
    for api, version, client in UNSUPPORTED.findall(text):
        if client == client_id and (api, int(version)) not in seen:
            seen.append((api, int(version)))
    return seen


def collapse(text, limit=40):
    """A client's stderr with repeated lines shown once, with their count: a client that
    retries a refused request logs the same line many times."""
    counts = {}
    for line in text.splitlines():
        counts[line] = counts.get(line, 0) + 1
    lines = [line if n == 1 else f"{line}  (x{n})" for line, n in counts.items()]
    return "\n".join(lines[-limit:])


def run_go(broker, name, cmd, *args, client_id, timeout=RUN_TIMEOUT_S):
    """Runs `name cmd -bootstrap ... -client-id client_id args`, asserts it exited 0 and
    printed exactly one line of JSON, and returns that JSON. A failure shows the program's
    stderr and the requests the broker refused from this client id."""
    # One seed broker (the programs take one address): a client finds the others from it.
    seed = broker.bootstrap.split(",")[0]
    argv = [go_program(name), cmd, "-bootstrap", seed, "-client-id", client_id,
            *map(str, args)]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        pytest.fail(f"{name} {cmd} did not finish within {timeout}s; stderr:\n"
                    f"{collapse(err or '')}\nrequests the broker refused as unsupported from "
                    f"{client_id!r}: {unsupported_requests(broker, client_id)}")
    if out.returncode != 0:
        pytest.fail(f"{name} {cmd} exited {out.returncode}; stderr:\n{collapse(out.stderr)}\n"
                    f"requests the broker refused as unsupported from {client_id!r}: "
                    f"{unsupported_requests(broker, client_id)}")
    lines = out.stdout.splitlines()
    assert len(lines) == 1, f"{name} {cmd}: expected one line of JSON, got {out.stdout!r}"
    return json.loads(lines[0])


# -- what the tests check with confluent-kafka ---------------------------------------------

def expected(tag, n):
    """The (key, value) pairs the Go programs produce for `tag` (tests/go/*: check.Key/Value)."""
    return [(f"k-{i % 17}", f"{tag}-{i:06d}") for i in range(n)]


def create_topic(broker, name, partitions=PARTITIONS):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions)])[name].result(WAIT_S)


def produce(broker, topic, pairs):
    """Produces `pairs` with confluent-kafka, idempotent, so in order per partition."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for k, v in pairs:
        p.produce(topic, key=k.encode(), value=v.encode())
    assert p.flush(WAIT_S) == 0


def read_all(broker, topic, isolation="read_uncommitted"):
    """Every record of `topic` from the start of each partition to its end (the last stable
    offset for read_committed), read with confluent-kafka: sorted (partition, offset, key,
    value) tuples."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "python-reader",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": isolation})
    try:
        parts = sorted(c.list_topics(topic, timeout=WAIT_S).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        done, out = set(), []
        while len(done) < len(parts):
            m = c.poll(WAIT_S)
            assert m is not None, f"no record or end of partition within {WAIT_S}s"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                done.add(m.partition())
                continue
            out.append((m.partition(), m.offset(), m.key().decode(), m.value().decode()))
        return sorted(out)
    finally:
        c.close()


def as_tuples(records):
    """The Go programs' {"p", "o", "k", "v"} records as sorted tuples."""
    return sorted((r["p"], r["o"], r["k"], r["v"]) for r in records)


def end_offsets(records):
    """Per partition (as a string, as in the programs' JSON), one past the last offset."""
    ends = {}
    for p, o, _, _ in records:
        ends[str(p)] = max(ends.get(str(p), 0), o + 1)
    return ends


def committed(broker, group, topic, partitions=PARTITIONS):
    """The group's committed offsets on `topic` as confluent-kafka reads them (partitions
    with no commit left out), keyed as the Go programs report them."""
    return {str(p): o for p, o in crosscheck.committed(broker, group, topic, partitions).items()}


def check_log(consumed, pairs):
    """`consumed` holds each of `pairs` exactly once, at dense offsets from 0 in each
    partition, each key in one partition only, and each partition's records in the order
    they were produced."""
    assert sorted((k, v) for _, _, k, v in consumed) == sorted(pairs)
    order = {kv: i for i, kv in enumerate(pairs)}
    partitions = {p for p, _, _, _ in consumed}
    assert len(partitions) > 1, "keyed records should spread over partitions"
    key_partition = {}
    for p in partitions:
        in_p = [(o, k, v) for q, o, k, v in consumed if q == p]
        assert [o for o, _, _ in in_p] == list(range(len(in_p))), f"offsets of partition {p}"
        idx = [order[(k, v)] for _, k, v in in_p]
        assert idx == sorted(idx), f"partition {p} is not in production order"
        for _, k, _ in in_p:
            assert key_partition.setdefault(k, p) == p, f"key {k} in two partitions"


# -- produce and group-consume, one scenario for every client -----------------------------

# (program, extra flags, client id): the same round trip through each client.
ROUND_TRIP_CLIENTS = {
    "franz-go": ("franz", [], "go-franz"),
    "sarama-default-version": ("sarama", [], "go-sarama-default"),
    "sarama-kafka-4.0": ("sarama", ["-version", "4.0.0"], "go-sarama-4.0"),
    "kafka-go": ("kafkago", [], "go-kafka-go"),
    "confluent-kafka-go": ("confluentgo", [], "go-confluent"),
}


@pytest.mark.parametrize("client,where", [(c, "shared") for c in ROUND_TRIP_CLIENTS] + [
    (c, "shared_cluster") for c in ("franz-go", "sarama-kafka-4.0", "kafka-go")])
def test_go_client_produce_and_group_consume_round_trip(request, client, where):
    """The client's producer (acks=all) gets every record stored once, in order per key, at
    the partition and offset it was told (where the client reports them); a group member of
    the same client then reads exactly what was stored and commits the end offsets, which
    confluent-kafka reads back as the group's committed offsets. Every client on one node;
    franz-go, sarama and kafka-go on three too."""
    shared = request.getfixturevalue(where)
    program, flags, client_id = ROUND_TRIP_CLIENTS[client]
    topic, group, n = f"rt-{client}", f"rt-{client}-group", 60
    create_topic(shared, topic)
    pairs = expected(program, n)

    produced = run_go(shared, program, "produce", "-topic", topic, "-n", n, "-tag", program,
                      *flags, client_id=client_id)
    stored = read_all(shared, topic)
    check_log(stored, pairs)
    if "records" in produced:
        assert as_tuples(produced["records"]) == stored
    else:  # kafka-go's Writer reports no offsets, only how many it wrote.
        assert produced == {"written": n}

    consumed = run_go(shared, program, "consume", "-topic", topic, "-group", group, "-n", n,
                      *flags, client_id=client_id)
    assert as_tuples(consumed["records"]) == stored
    if "committed" in consumed:
        assert consumed["committed"] == end_offsets(stored)
    assert committed(shared, group, topic) == end_offsets(stored)


# -- franz-go: transactions ----------------------------------------------------------------

@ONE_AND_THREE
def test_franz_transaction_commit_is_visible_and_abort_is_not(request, where):
    """A franz-go transactional producer's committed transaction is what read_committed
    readers see, at the offsets franz-go was told; its aborted transaction stays in the log
    (read_uncommitted sees it) but never reaches read_committed readers. On one node and on
    three."""
    shared = request.getfixturevalue(where)
    topic, n = "franz-txn", 20
    create_topic(shared, topic)
    out = run_go(shared, "franz", "txn", "-topic", topic, "-txid", "franz-txn-id", "-n", n,
                 "-tag", "franz-txn", client_id="go-franz-txn")
    committed_records = as_tuples(out["committed"])
    aborted_records = as_tuples(out["aborted"])
    assert sorted((k, v) for _, _, k, v in committed_records) == sorted(
        expected("franz-txn-committed", n))
    assert sorted((k, v) for _, _, k, v in aborted_records) == sorted(
        expected("franz-txn-aborted", n))

    assert read_all(shared, topic, "read_committed") == committed_records
    assert read_all(shared, topic, "read_uncommitted") == sorted(
        committed_records + aborted_records)


@ONE_AND_THREE
def test_franz_group_transact_session_copies_exactly_once(request, where):
    """franz-go's GroupTransactSession (consume in a group, produce, commit the offsets in the
    same transaction) copies every input record to the output exactly once, and the group's
    committed offsets are the input's end offsets. On one node and on three."""
    shared = request.getfixturevalue(where)
    src, dst, group, n = "franz-eos-in", "franz-eos-out", "franz-eos-group", 40
    create_topic(shared, src)
    create_topic(shared, dst)
    pairs = expected("eos-input", n)
    produce(shared, src, pairs)
    source = read_all(shared, src)
    check_log(source, pairs)

    out = run_go(shared, "franz", "eos", "-in", src, "-out", dst, "-group", group,
                 "-txid", "franz-eos-id", "-n", n, client_id="go-franz-eos")
    assert out["copied"] == n and out["transactions"] >= 1

    copied = read_all(shared, dst, "read_committed")
    assert sorted((k, v) for _, _, k, v in copied) == sorted((k, "eos:" + v) for k, v in pairs)
    assert committed(shared, group, src) == end_offsets(source)


# -- admin clients -------------------------------------------------------------------------

def test_kadm_topics_configs_groups_offsets_records(shared):
    """franz-go's kadm creates a topic with a config, lists topics (without the internal
    ones, which Metadata marks internal), describes it, alters configs incrementally, lists and describes a group that consumed and left, fetches and commits
    its offsets, computes its lag, deletes records and deletes the topic, each answer as
    Kafka gives it, and confluent-kafka sees the same state."""
    topic, group = "kadm-topic", "kadm-group"
    # Both internal topics exist when kadm lists topics: __consumer_offsets once its group
    # has committed, __transaction_state from a transactional producer's first request.
    Producer({"bootstrap.servers": shared.bootstrap,
              "transactional.id": "kadm-make-txn-state"}).init_transactions(WAIT_S)
    out = run_go(shared, "franz", "admin", "-topic", topic, "-group", group, "-tag", "kadm",
                 client_id="go-kadm")
    assert out == {
        "created_partitions": 2,
        "listed_partitions": 2,
        "listed_double_underscore_topics": [],
        "internal_topics": ["__consumer_offsets", "__transaction_state"],
        "retention_created": {"value": "3600000", "source": "DYNAMIC_TOPIC_CONFIG"},
        "retention_altered": {"value": "7200000", "source": "DYNAMIC_TOPIC_CONFIG"},
        "cleanup_policy_altered": {"value": "compact,delete", "source": "DYNAMIC_TOPIC_CONFIG"},
        "end_offsets": {"0": 10, "1": 5},
        "listed_group": {"protocol_type": "consumer", "state": "Empty"},
        "described_group": {"state": "Empty", "protocol_type": "consumer", "members": 0},
        "group_offsets": {"0": 10, "1": 5},
        "lag_after_rewind": {"0": 0, "1": 3},
        "low_watermark": 4,
        "start_offsets": {"0": 4, "1": 0},
    }
    # What kadm did, as another client sees it.
    assert committed(shared, group, topic, 2) == {"0": 10, "1": 2}
    c = Consumer({"bootstrap.servers": shared.bootstrap, "group.id": "kadm-check"})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=WAIT_S) == (4, 10)
        assert c.get_watermark_offsets(TopicPartition(topic, 1), timeout=WAIT_S) == (0, 5)
    finally:
        c.close()

    deleted = run_go(shared, "franz", "delete", "-topic", topic, client_id="go-kadm")
    assert deleted == {"listed_after_delete": False}
    admin = AdminClient({"bootstrap.servers": shared.bootstrap})
    assert topic not in admin.list_topics(timeout=WAIT_S).topics


def test_sarama_cluster_admin_basics(shared):
    """IBM/sarama's ClusterAdmin creates a topic with a config, lists and describes it,
    alters and describes its config, lists and describes a group that consumed and left,
    lists the group's offsets, deletes records and deletes the topic, with the answers
    Kafka gives."""
    topic, group = "sarama-admin-topic", "sarama-admin-group"
    out = run_go(shared, "sarama", "admin", "-topic", topic, "-group", group,
                 "-tag", "sarama-admin", client_id="go-sarama-admin")
    assert out == {
        "listed_partitions": 2,
        "listed_retention": "3600000",
        "described_partitions": 2,
        # sarama's name for DYNAMIC_TOPIC_CONFIG.
        "retention_altered": {"value": "7200000", "source": "Topic"},
        "listed_group_protocol_type": "consumer",
        "described_group": {"state": "Empty", "protocol_type": "consumer", "members": 0},
        "group_offsets": {"0": 10, "1": 5},
        "start_offsets": {"0": 4, "1": 0},
        "listed_after_delete": False,
    }
    admin = AdminClient({"bootstrap.servers": shared.bootstrap})
    assert topic not in admin.list_topics(timeout=WAIT_S).topics


def test_kafka_go_conn_and_client_create_topics_and_read_metadata(shared):
    """segmentio/kafka-go creates topics both through a Conn (to the controller it finds in
    the metadata) and through its Client, and both its Conn and Client read back the
    partition counts, which confluent-kafka sees too."""
    t1, t2 = "kafka-go-conn-created", "kafka-go-client-created"
    out = run_go(shared, "kafkago", "create", "-topic", t1, "-topic2", t2,
                 client_id="go-kafka-go-admin")
    assert out == {"conn_partitions": {t1: 3, t2: 2}, "client_partitions": {t1: 3, t2: 2},
                   "brokers": 1}
    md = AdminClient({"bootstrap.servers": shared.bootstrap}).list_topics(timeout=WAIT_S)
    assert len(md.topics[t1].partitions) == 3
    assert len(md.topics[t2].partitions) == 2
