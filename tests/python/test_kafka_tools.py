"""Kafka's own command-line tools (kafka-tools 4.4.0 from Maven Central, run unchanged as
`java -cp 'lib/*' MAIN_CLASS`) against sluice: TopicCommand, ConfigCommand, the console
producer and consumer, ConsumerGroupCommand, DeleteRecordsCommand and the producer and consumer
perf tests. Their printed output is parsed strictly and checked against what confluent-kafka
(librdkafka) sees. One broker serves the module, then a three-node cluster (the tools
bootstrap from every node; leadership, coordinators and DeleteRecords reach the right
brokers through them); every test uses its own topics and groups.
"""

import collections
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

from conftest import running_broker, running_cluster
from test_java_clients import (classpath, confluent_committed, confluent_read, create_topic,
                               ensure_internal_topics, java_installed,  # noqa: F401 (a fixture)
                               run_jvm, watermarks)

TOOLS = "tools-4.4.0"
TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
CONFIG_COMMAND = "org.apache.kafka.tools.ConfigCommand"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
DELETE_RECORDS = "org.apache.kafka.tools.DeleteRecordsCommand"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"


@pytest.fixture(scope="module", params=["one node", "three nodes"])
def tools_broker(request, tmp_path_factory, java_installed):
    """One broker for the module, then a three-node cluster (the tools get every node as
    their bootstrap servers, and topics three replicas); groups rebalance at once when their
    first member joins."""
    args = ["--set", "group.initial.rebalance.delay.ms=0"]
    where = tmp_path_factory.mktemp("kafka-tools")
    if request.param == "one node":
        yield from running_broker(where, args)
    else:
        yield from running_cluster(where, args)


def nodes_of(broker):
    """How many nodes serve: the replication factor the tests' topics get."""
    return len(getattr(broker, "nodes", [broker]))


def placement(broker, topic):
    """{partition: (leader, replicas, isr)} as librdkafka's metadata reports them, in
    TopicCommand's notation (node ids, comma-separated)."""
    meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
    join = ",".join
    return {p: (str(m.leader), join(map(str, m.replicas)), join(map(str, m.isrs)))
            for p, m in meta.topics[topic].partitions.items()}


def tool(broker, main, *args, stdin=None, ok=True):
    """Runs one of Kafka's tools against `broker`; asserts on its exit status."""
    run = run_jvm(broker, classpath(TOOLS, classes=False), main, "--bootstrap-server",
                  broker.bootstrap, *args, stdin=stdin)
    assert (run.returncode == 0) == ok, run.explain()
    return run


def produce(broker, topic, values_by_partition):
    """Writes the values with librdkafka (acks=all); asserts each was acknowledged."""
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for partition, values in values_by_partition.items():
        for v in values:
            p.produce(topic, value=v.encode(), partition=partition,
                      on_delivery=lambda err, _msg: err and errors.append(err))
    assert p.flush(30) == 0 and errors == [], errors


def partition_count(broker, topic):
    meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    return len(meta.topics[topic].partitions) if topic in meta.topics else None


def wait_for(what, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def parse_describe_line(line):
    """One line of TopicCommand --describe: {key: value} of its tab-separated `Key: value`
    fields."""
    fields = {}
    for part in line.strip().split("\t"):
        key, _, value = part.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def parse_describe(run):
    """TopicCommand --describe output for one topic: its topic line and its partition lines."""
    out = [parse_describe_line(line) for line in run.lines]
    return out[0], out[1:]


def test_topic_command_creates_describes_alters_and_deletes_a_topic(tools_broker):
    """TopicCommand creates a topic with a config and one replica per node (and refuses a
    second create with TopicExistsException, exit 1), describes it (two partitions, their
    leader, replicas and ISR as librdkafka's metadata has them, every replica in sync, the
    config override listed), adds partitions (librdkafka then sees four) and deletes it
    (librdkafka then sees it gone)."""
    b, topic = tools_broker, "tools-topic"
    rf = str(nodes_of(b))
    run = tool(b, TOPIC_COMMAND, "--create", "--topic", topic, "--partitions", "2",
               "--replication-factor", rf, "--config", "retention.ms=3600000")
    assert run.lines == [f"Created topic {topic}."], run.explain()
    run = tool(b, TOPIC_COMMAND, "--create", "--topic", topic, "--partitions", "2",
               "--replication-factor", rf, ok=False)
    assert run.returncode == 1
    assert "org.apache.kafka.common.errors.TopicExistsException" in run.stderr, run.explain()

    run = tool(b, TOPIC_COMMAND, "--describe", "--topic", topic)
    head, parts = parse_describe(run)
    assert (head["Topic"], head["PartitionCount"], head["ReplicationFactor"]) == (topic, "2", rf)
    assert "retention.ms=3600000" in head["Configs"].split(","), run.explain()
    assert len(head["TopicId"]) == 22 and head["TopicId"] != "A" * 22, run.explain()
    placed = placement(b, topic)
    assert [(p["Topic"], p["Partition"], p["Leader"], p["Replicas"], p["Isr"]) for p in parts] == \
        [(topic, str(i), *placed[i]) for i in range(2)], run.explain()
    assert all(len(p["Isr"].split(",")) == nodes_of(b) for p in parts), run.explain()

    tool(b, TOPIC_COMMAND, "--alter", "--topic", topic, "--partitions", "4")
    assert partition_count(b, topic) == 4

    tool(b, TOPIC_COMMAND, "--delete", "--topic", topic)
    wait_for(f"{topic} to disappear", lambda: partition_count(b, topic) is None)


def test_topic_command_lists_and_describes_the_internal_topics(tools_broker):
    """TopicCommand --list shows the user's topics and both internal topics (once they
    exist), as with Kafka; --describe of the internal topics shows each with 50 partitions,
    one replica per node (their replication factor defaults to 3, capped by the brokers
    there are), leaders, replicas and ISR as librdkafka's metadata has them, and
    cleanup.policy=compact."""
    b = tools_broker
    ensure_internal_topics(b)
    create_topic(b, "tools-listed", 1)
    run = tool(b, TOPIC_COMMAND, "--list")
    assert {"tools-listed", "internal-trigger", "__consumer_offsets",
            "__transaction_state"} <= set(run.lines), run.explain()

    run = tool(b, TOPIC_COMMAND, "--describe", "--topic", "__consumer_offsets|__transaction_state")
    placed = {t: placement(b, t) for t in ("__consumer_offsets", "__transaction_state")}
    heads = {}
    for line in run.lines:
        fields = parse_describe_line(line)
        if not line.startswith("\t"):
            heads[fields["Topic"]] = fields
            continue
        assert (fields["Leader"], fields["Replicas"], fields["Isr"]) == \
            placed[fields["Topic"]][int(fields["Partition"])], line
    assert set(heads) == {"__consumer_offsets", "__transaction_state"}, run.explain()
    for name, head in heads.items():
        assert (head["PartitionCount"], head["ReplicationFactor"]) == \
            ("50", str(nodes_of(b))), run.explain()
        assert "cleanup.policy=compact" in head["Configs"].split(","), run.explain()
    assert len([line for line in run.lines if line.startswith("\t")]) == 100, run.explain()


def parse_config_describe(run, topic):
    """ConfigCommand --describe output: {name: (value, first synonym)}."""
    assert run.lines[0] == f"Dynamic configs for topic {topic} are:", run.explain()
    out = {}
    for line in run.lines[1:]:
        name_value, rest = line.strip().split(" sensitive=false synonyms={", 1)
        name, value = name_value.split("=", 1)
        out[name] = (value, rest.rstrip("}").split(", ")[0])
    return out


def test_config_command_alters_and_describes_topic_configs(tools_broker):
    """ConfigCommand adds two topic configs and describes exactly those two as dynamic topic
    configs (first synonym DYNAMIC_TOPIC_CONFIG with the value), then deletes one; librdkafka
    then reads the remaining override and the deleted one back at its default."""
    b, topic = tools_broker, "tools-cfg"
    create_topic(b, topic, 1)
    run = tool(b, CONFIG_COMMAND, "--alter", "--entity-type", "topics", "--entity-name", topic,
               "--add-config", "retention.ms=3600000,max.message.bytes=2000000")
    assert run.lines == [f"Completed updating config for topic {topic}."], run.explain()
    run = tool(b, CONFIG_COMMAND, "--describe", "--entity-type", "topics", "--entity-name", topic)
    assert parse_config_describe(run, topic) == {
        "retention.ms": ("3600000", "DYNAMIC_TOPIC_CONFIG:retention.ms=3600000"),
        "max.message.bytes": ("2000000", "DYNAMIC_TOPIC_CONFIG:max.message.bytes=2000000"),
    }, run.explain()

    run = tool(b, CONFIG_COMMAND, "--alter", "--entity-type", "topics", "--entity-name", topic,
               "--delete-config", "retention.ms")
    assert run.lines == [f"Completed updating config for topic {topic}."], run.explain()
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    seen = admin.describe_configs([res])[res].result(30)
    assert (seen["max.message.bytes"].value, seen["max.message.bytes"].source) == \
        ("2000000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert (seen["retention.ms"].value, seen["retention.ms"].source) == \
        ("604800000", ConfigSource.DEFAULT_CONFIG.value)


def test_console_producer_and_consumer_round_trip_keyed_messages(tools_broker):
    """The console producer (keys parsed from `key:value` lines, acks=all) writes 20 records;
    the console consumer in a group prints them all with partition, offset and key, each once;
    records of one key share a partition and keep their input order; librdkafka reads the same
    records, and the group's offsets (committed when the console consumer closes) are at the
    log end."""
    b, topic, group = tools_broker, "tools-console", "tools-console-group"
    create_topic(b, topic, 2)
    lines = [(f"key-{i % 5}", f"value-{i:02d}") for i in range(20)]
    tool(b, CONSOLE_PRODUCER, "--topic", topic, "--reader-property", "parse.key=true",
         "--reader-property", "key.separator=:", "--command-property", "acks=all",
         stdin="".join(f"{k}:{v}\n" for k, v in lines))

    run = tool(b, CONSOLE_CONSUMER, "--topic", topic, "--from-beginning", "--max-messages", "20",
               "--group", group, "--timeout-ms", "30000",
               "--formatter-property", "print.partition=true",
               "--formatter-property", "print.offset=true",
               "--formatter-property", "print.key=true")
    assert "Processed a total of 20 messages" in run.stderr, run.explain()
    consumed = []
    for line in run.lines:
        partition, offset, key, value = line.split("\t")
        assert partition.startswith("Partition:") and offset.startswith("Offset:"), line
        consumed.append((int(partition[10:]), int(offset[7:]), key, value))
    assert sorted((k, v) for _, _, k, v in consumed) == sorted(lines), run.explain()
    by_key = collections.defaultdict(list)
    for p, o, k, v in sorted(consumed):
        by_key[k].append((p, v))
    for k, got in by_key.items():
        assert len({p for p, _ in got}) == 1, f"{k} in two partitions: {got}"
        assert [v for _, v in got] == [v for kk, v in lines if kk == k], f"{k} out of order"
    assert sorted((p, o, v) for p, o, _, v in consumed) == confluent_read(b, topic, 2)

    ends = collections.Counter(p for p, _, _, _ in consumed)
    assert confluent_committed(b, group, topic, 2) == {p: ends[p] for p in range(2)}


def parse_table(run):
    """ConsumerGroupCommand's table: a list of {COLUMN: value} rows."""
    rows = [line.split() for line in run.lines if line.strip() and not line.startswith("Error: ")]
    header, body = rows[0], rows[1:]
    assert all(len(r) == len(header) for r in body), run.explain()
    return [dict(zip(header, r)) for r in body]


def test_consumer_group_command_describes_a_live_group_and_resets_offsets(tools_broker):
    """ConsumerGroupCommand --describe shows a live group's committed offsets, log end
    offsets, zero lag and its member (id, host, client id) per partition; --reset-offsets
    --to-earliest --execute is refused while the group has a member (offsets unchanged), and
    once the member has left resets every partition to 0, which librdkafka then reads back."""
    b, topic, group = tools_broker, "tools-groups", "tools-groups-g"
    create_topic(b, topic, 2)
    produce(b, topic, {0: [f"a{i}" for i in range(5)], 1: [f"b{i}" for i in range(3)]})
    member = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                       "client.id": "cg-member", "auto.offset.reset": "earliest",
                       "enable.auto.commit": False})
    try:
        member.subscribe([topic])
        got = 0
        deadline = time.monotonic() + 60
        while got < 8:
            assert time.monotonic() < deadline, f"the member consumed {got} of 8"
            m = member.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                got += 1
        member.commit(asynchronous=False)

        run = tool(b, GROUP_COMMAND, "--describe", "--group", group)
        rows = parse_table(run)
        member_id = member.memberid()
        assert [(r["GROUP"], r["TOPIC"], r["PARTITION"], r["CURRENT-OFFSET"],
                 r["LOG-END-OFFSET"], r["LAG"], r["CONSUMER-ID"], r["HOST"], r["CLIENT-ID"])
                for r in sorted(rows, key=lambda r: r["PARTITION"])] == [
            (group, topic, "0", "5", "5", "0", member_id, "/127.0.0.1", "cg-member"),
            (group, topic, "1", "3", "3", "0", member_id, "/127.0.0.1", "cg-member"),
        ], run.explain()

        run = tool(b, GROUP_COMMAND, "--reset-offsets", "--to-earliest", "--execute",
                   "--group", group, "--topic", topic)
        assert (f"Error: Assignments can only be reset if the group '{group}' is inactive, "
                f"but the current state is Stable.") in run.lines, run.explain()
        assert parse_table(run) == [], run.explain()
        assert confluent_committed(b, group, topic, 2) == {0: 5, 1: 3}
    finally:
        member.close()

    run = tool(b, GROUP_COMMAND, "--reset-offsets", "--to-earliest", "--execute",
               "--group", group, "--topic", topic)
    rows = parse_table(run)
    assert sorted((r["GROUP"], r["TOPIC"], r["PARTITION"], r["NEW-OFFSET"]) for r in rows) == \
        [(group, topic, "0", "0"), (group, topic, "1", "0")], run.explain()
    assert confluent_committed(b, group, topic, 2) == {0: 0, 1: 0}


def test_delete_records_command_moves_the_log_start_offset(tools_broker, tmp_path):
    """DeleteRecordsCommand deletes the records before offset 4 of one partition and reports
    the new low watermark; librdkafka sees watermarks (4, 10) and reads offsets 4 to 9 only."""
    b, topic = tools_broker, "tools-delete"
    create_topic(b, topic, 1)
    produce(b, topic, {0: [f"d{i}" for i in range(10)]})
    spec = tmp_path / "delete.json"
    spec.write_text('{"partitions":[{"topic":"%s","partition":0,"offset":4}],"version":1}' % topic)
    run = tool(b, DELETE_RECORDS, "--offset-json-file", str(spec))
    assert run.lines == ["Executing records delete operation",
                         "Records delete operation completed:",
                         f"partition: {topic}-0\tlow_watermark: 4"], run.explain()
    assert watermarks(b, topic, 0) == (4, 10)
    assert confluent_read(b, topic, 1) == [(0, o, f"d{o}") for o in range(4, 10)]


def test_producer_and_consumer_performance_tools(tools_broker):
    """ProducerPerformance sends 20,000 100-byte records with acks=all and reports all of them
    sent; the partitions then hold exactly 20,000 records; ConsumerPerformance reads 20,000
    messages (2,000,000 bytes) back."""
    b, topic, n = tools_broker, "tools-perf", 20_000
    create_topic(b, topic, 2)
    run = run_jvm(b, classpath(TOOLS, classes=False), PRODUCER_PERF, "--topic", topic,
                  "--num-records", n, "--record-size", 100, "--throughput", -1,
                  "--command-property", f"bootstrap.servers={b.bootstrap}", "acks=all")
    assert run.returncode == 0, run.explain()
    summary = run.lines[-1]
    assert summary.startswith(f"{n} records sent, "), run.explain()
    assert sum(watermarks(b, topic, p)[1] for p in range(2)) == n
    assert all(watermarks(b, topic, p)[0] == 0 for p in range(2))

    run = tool(b, CONSUMER_PERF, "--topic", topic, "--num-records", n, "--timeout", 30000)
    header = [h.strip() for h in run.lines[-2].split(",")]
    values = [v.strip() for v in run.lines[-1].split(",")]
    stats = dict(zip(header, values))
    assert stats["data.consumed.in.nMsg"] == str(n), run.explain()
    assert float(stats["data.consumed.in.MB"]) == pytest.approx(n * 100 / (1024 * 1024), abs=1e-4)
