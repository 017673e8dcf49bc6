"""aiokafka (the asyncio Kafka client, PyPI) against sluice: an idempotent producer with lz4,
a consumer in a group (commit, seek_to_beginning, end_offsets, offsets_for_times), a
transactional producer (commit, abort, send_offsets_to_transaction) read back with
isolation_level read_committed, and the admin client's topic operations.

What aiokafka reports is checked against expectations computed from the inputs, and against
what librdkafka (confluent-kafka) and a raw Fetch see. The tests share one broker; each uses
its own topics and groups. Each runs its client code in its own event loop (asyncio.run),
bounded by RUN_TIMEOUT_S.
"""

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from conftest import check_round_trip, expected_messages, running_broker
from crosscheck import (broker_ids, check_wire_batches, committed, create_topic, end_offsets,
                        read_all, topic_configs, topic_partitions, watermarks)

RUN_TIMEOUT_S = 90
WAIT_S = 30
# DescribeConfigs' config source numbers (Kafka's ConfigSource).
DYNAMIC_TOPIC_CONFIG = 1


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One broker for the module; a group's first rebalance does not wait for more members."""
    yield from running_broker(tmp_path_factory.mktemp("aiokafka"),
                              ["--set", "group.initial.rebalance.delay.ms=0"])


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, RUN_TIMEOUT_S))


async def read_records(consumer, n, what):
    """Polls `consumer` until it has returned `n` records (bounded); returns them in delivery
    order."""
    out = []
    deadline = time.monotonic() + WAIT_S
    while len(out) < n:
        assert time.monotonic() < deadline, f"{what}: {len(out)} of {n} records in {WAIT_S}s"
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            out.extend(records)
    return out


def as_tuples(records):
    """aiokafka ConsumerRecords as (partition, offset, key, value, headers, timestamp),
    sorted, comparable with librdkafka's Msg tuples through `stored_tuples`."""
    return sorted((r.partition, r.offset, r.key, r.value, list(r.headers), r.timestamp)
                  for r in records)


def stored_tuples(stored):
    return sorted((m.partition, m.offset, m.key, m.value, m.headers, m.timestamp)
                  for m in stored)


def check_acks(acked, pairs, stored):
    """Each record's acknowledgement (RecordMetadata) names the partition and offset where
    librdkafka finds it."""
    where = {(m.key, m.value): (m.partition, m.offset) for m in stored}
    assert [(md.partition, md.offset) for md in acked] == [where[kv] for kv in pairs]


# -- idempotent producer and a group consumer ----------------------------------------------

def test_aiokafka_idempotent_lz4_producer_and_group_consumer(shared):
    """An idempotent aiokafka producer (acks all, lz4, headers, explicit timestamps) in five
    rounds gets every record acknowledged at the partition and offset where librdkafka reads
    it, once, dense, in order per partition, one partition per key, with its headers and
    timestamp; the stored batches keep lz4, its one producer id and sequences from 0. A group
    consumer reads exactly those records, commits, and reads its committed offsets back (also
    through the admin client and librdkafka); end_offsets, beginning_offsets and
    offsets_for_times answer what the stored records imply; after seek_to_beginning it reads a
    partition again, identically; once it has left, the admin client describes the group as
    Empty."""
    topic, group, partitions, n, rounds = "aio-idem", "aio-idem-group", 3, 150, 5
    create_topic(shared, topic, partitions)
    pairs = expected_messages("lz4", n)
    base = int(time.time() * 1000) - 60_000

    def headers_of(codec, seq):
        return [("seq", str(seq).encode()), ("codec", codec.encode())]

    def timestamp_of(codec, seq):
        return base + 10 * seq, base + 10 * seq

    async def produce():
        producer = AIOKafkaProducer(bootstrap_servers=shared.bootstrap, client_id="aio-idem",
                                    enable_idempotence=True, acks="all", compression_type="lz4")
        await producer.start()
        try:
            acked, per_round = [], n // rounds
            for start in range(0, n, per_round):
                futures = [await producer.send(topic, key=k, value=v,
                                               headers=headers_of("lz4", i),
                                               timestamp_ms=timestamp_of("lz4", i)[0])
                           for i, (k, v) in enumerate(pairs[start:start + per_round], start)]
                acked += [await f for f in futures]
            return acked
        finally:
            await producer.stop()

    acked = run(produce())
    stored = read_all(shared, topic)
    check_round_trip(stored, {"lz4": pairs}, partitions, headers_of=headers_of,
                     timestamp_of=timestamp_of)
    check_acks(acked, pairs, stored)
    # The broker answered log_append_time -1 (the topic keeps CreateTime). aiokafka then
    # reports the first record's timestamp for the rest of its batch too (its own bug, in
    # MessageBatch.done), so the per-record timestamps are checked on the stored records.
    assert {md.timestamp_type for md in acked} == {0}
    wire = check_wire_batches(shared, topic, stored, lambda p, o: "lz4")
    for p, batches in wire.items():  # the sequence check spans batches
        assert len(batches) >= rounds, f"partition {p}: {batches}"

    ends = end_offsets(stored)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    at = timestamp_of("lz4", n // 2)[0] + 5  # between two records

    async def consume():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=shared.bootstrap,
                                    client_id="aio-group", group_id=group,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            got = await read_records(consumer, n, "group consumer")
            out = {"records": got, "assignment": consumer.assignment()}
            await consumer.commit()
            out["committed"] = {tp.partition: await consumer.committed(tp) for tp in tps}
            out["positions"] = {tp.partition: await consumer.position(tp) for tp in tps}
            out["end_offsets"] = await consumer.end_offsets(tps)
            out["beginning_offsets"] = await consumer.beginning_offsets(tps)
            out["offsets_for_times"] = await consumer.offsets_for_times({tp: at for tp in tps})
            await consumer.seek_to_beginning(tps[0])
            out["again"] = await read_records(consumer, ends[0], "after seek_to_beginning")
        finally:
            await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=shared.bootstrap, client_id="aio-group")
        await admin.start()
        try:
            out["admin_offsets"] = await admin.list_consumer_group_offsets(group)
            [described] = await admin.describe_consumer_groups([group])
            out["described"] = described.to_object()
            out["listed_groups"] = await admin.list_consumer_groups()
        finally:
            await admin.close()
        return out

    out = run(consume())
    assert as_tuples(out["records"]) == stored_tuples(stored)
    assert len(out["records"]) == len(stored), "a record was delivered twice"
    for p in range(partitions):
        offsets = [r.offset for r in out["records"] if r.partition == p]
        assert offsets == sorted(offsets), f"partition {p} delivered out of order"
    assert out["assignment"] == set(tps)
    assert out["committed"] == ends
    assert out["positions"] == ends
    assert committed(shared, group, topic, partitions) == ends
    assert {tp.partition: om.offset for tp, om in out["admin_offsets"].items()
            if tp.topic == topic} == ends
    assert out["end_offsets"] == {tp: ends[tp.partition] for tp in tps}
    assert out["beginning_offsets"] == {tp: 0 for tp in tps}

    def at_or_after(p):
        found = [m for m in stored if m.partition == p and m.timestamp >= at]
        return min(((m.offset, m.timestamp) for m in found), default=None)

    assert {tp.partition: (None if ot is None else (ot.offset, ot.timestamp))
            for tp, ot in out["offsets_for_times"].items()} == \
        {p: at_or_after(p) for p in range(partitions)}
    assert as_tuples(out["again"]) == [t for t in stored_tuples(stored) if t[0] == 0]

    [g] = out["described"]["groups"]
    assert (g["error_code"], g["group"], g["state"], g["protocol_type"], g["members"]) == \
        (0, group, "Empty", "consumer", [])
    assert (group, "consumer") in out["listed_groups"]


# -- transactions --------------------------------------------------------------------------

def test_aiokafka_transactions_commit_abort_send_offsets_and_read_committed(shared):
    """An aiokafka transactional producer (gzip) commits a transaction carrying group offsets
    (send_offsets_to_transaction), aborts one carrying other offsets and commits a third:
    every record is acknowledged where librdkafka finds it, each transaction closed by a
    control batch in every partition; a read_committed aiokafka consumer returns exactly the
    committed records and its position still reaches the end of every partition (past the
    aborted records and the markers); read_uncommitted returns all; the group's offsets are
    those of the committed transactions only, as aiokafka and librdkafka read them."""
    topic, source, group, partitions = "aio-txn", "aio-txn-source", "aio-txn-group", 3
    create_topic(shared, topic, partitions)
    create_topic(shared, source, partitions)
    transactions = [("commit", "first", {0: 5, 1: 7}),
                    ("abort", "aborted", {0: 50, 1: 70, 2: 90}),
                    ("commit", "second", {2: 11})]

    def messages(label):
        return [(i % partitions, f"{label}-k{i}".encode(), f"{label}-{i:03d}".encode())
                for i in range(3 * partitions)]

    expected_offsets = {}
    for action, _, offsets in transactions:
        if action == "commit":
            expected_offsets.update(offsets)
    values = {a: sorted(v for action, label, _ in transactions if action == a
                        for _, _, v in messages(label)) for a in ("commit", "abort")}

    async def produce():
        producer = AIOKafkaProducer(bootstrap_servers=shared.bootstrap, client_id="aio-txn",
                                    transactional_id="aio-txn-id", compression_type="gzip")
        await producer.start()
        try:
            acked = []
            for action, label, offsets in transactions:
                await producer.begin_transaction()
                futures = [await producer.send(topic, key=k, value=v, partition=p)
                           for p, k, v in messages(label)]
                acked.append([await f for f in futures])
                await producer.send_offsets_to_transaction(
                    {TopicPartition(source, p): o for p, o in offsets.items()}, group)
                if action == "commit":
                    await producer.commit_transaction()
                else:
                    await producer.abort_transaction()
            return acked
        finally:
            await producer.stop()

    acked = run(produce())
    everything = read_all(shared, topic, "read_uncommitted")
    assert sorted(m.value for m in everything) == sorted(values["commit"] + values["abort"])
    for (_, label, _), txn_acked in zip(transactions, acked):
        check_acks(txn_acked, [(k, v) for _, k, v in messages(label)], everything)
    wire = check_wire_batches(shared, topic, everything, lambda p, o: "gzip",
                              transactional=True)
    for p, batches in wire.items():
        # Each transaction: its data batch, then its marker.
        assert [b["control"] for b in batches] == [False, True] * len(transactions), \
            f"partition {p}: {batches}"
    committed_log = read_all(shared, topic, "read_committed")
    assert sorted(m.value for m in committed_log) == values["commit"]
    assert committed_log == [m for m in everything if m.value in values["commit"]]
    high = {p: watermarks(shared, topic, p)[1] for p in range(partitions)}
    tps = [TopicPartition(topic, p) for p in range(partitions)]

    async def consume(isolation, n):
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=shared.bootstrap,
                                    client_id=f"aio-txn-{isolation}",
                                    group_id=f"aio-txn-{isolation}", isolation_level=isolation,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            got = await read_records(consumer, n, isolation)
            # The markers after the last records are skipped too: poll (bounded) until the
            # position is at the end of every partition, checking nothing more arrives.
            deadline = time.monotonic() + WAIT_S
            positions = {}
            while True:
                positions = {tp.partition: await consumer.position(tp) for tp in tps}
                if positions == high or time.monotonic() > deadline:
                    break
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got.extend(records)
            return got, positions, await consumer.end_offsets(tps)
        finally:
            await consumer.stop()

    got, positions, ends = run(consume("read_committed", len(values["commit"])))
    assert as_tuples(got) == stored_tuples(committed_log)
    assert positions == high
    assert ends == {tp: high[tp.partition] for tp in tps}  # no transaction open: LSO = HW
    got, positions, _ = run(consume("read_uncommitted", len(everything)))
    assert as_tuples(got) == stored_tuples(everything)
    assert positions == high

    async def group_offsets():
        consumer = AIOKafkaConsumer(bootstrap_servers=shared.bootstrap, client_id="aio-txn",
                                    group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            found = {p: await consumer.committed(TopicPartition(source, p))
                     for p in range(partitions)}
            return {p: o for p, o in found.items() if o is not None}
        finally:
            await consumer.stop()

    assert run(group_offsets()) == expected_offsets
    assert committed(shared, group, source, partitions) == expected_offsets


# -- admin ---------------------------------------------------------------------------------

def test_aiokafka_admin_creates_describes_grows_and_deletes_topics(shared):
    """aiokafka's admin client creates two topics (one with a config) and is told the first
    exists when it asks again; describe_topics lists their partitions led by the broker;
    describe_configs shows the config as a dynamic topic config and another at its default,
    as librdkafka sees them; list_topics lists both; create_partitions grows one, as
    librdkafka then sees; delete_topics removes both from list_topics and from librdkafka's
    metadata."""
    t1, t2 = "aio-admin-1", "aio-admin-2"
    names = ["retention.ms", "cleanup.policy"]
    configs = {"retention.ms": "3600000"}
    [leader] = broker_ids(shared)

    async def admin_ops():
        admin = AIOKafkaAdminClient(bootstrap_servers=shared.bootstrap, client_id="aio-admin")
        await admin.start()
        out = {}
        try:
            def errors(resp):
                return {t["topic"]: t["error_code"] for t in resp.to_object()["topic_errors"]}

            resp = await admin.create_topics(
                [NewTopic(t1, 3, 1, topic_configs=configs), NewTopic(t2, 1, 1)])
            out["created"] = errors(resp)
            # Kafka answers a created topic with a null message (aiokafka sends v3).
            out["created_messages"] = {t["topic"]: t["error_message"]
                                       for t in resp.to_object()["topic_errors"]}
            out["created_again"] = errors(await admin.create_topics([NewTopic(t1, 3, 1)]))
            out["described"] = await admin.describe_topics([t1, t2])
            [resp] = await admin.describe_configs([ConfigResource(
                ConfigResourceType.TOPIC, t1, {n: None for n in names})])
            out["configs"] = resp.to_object()["resources"]
            out["librdkafka_configs"] = await asyncio.to_thread(topic_configs, shared, t1,
                                                                names)
            out["listed"] = await admin.list_topics()
            out["grown"] = errors(await admin.create_partitions({t2: NewPartitions(4)}))
            out["described_grown"] = await admin.describe_topics([t2])
            out["librdkafka_grown"] = await asyncio.to_thread(topic_partitions, shared, t2)
            resp = await admin.delete_topics([t1, t2])
            out["deleted"] = {t["topic"]: t["error_code"]
                              for t in resp.to_object()["topic_error_codes"]}
            out["listed_after_delete"] = await admin.list_topics()
        finally:
            await admin.close()
        return out

    out = run(admin_ops())
    assert out["created"] == {t1: 0, t2: 0}
    assert out["created_messages"] == {t1: None, t2: None}
    assert out["created_again"] == {t1: TopicAlreadyExistsError.errno}

    def partitions(n):
        return [{"error_code": 0, "partition": p, "leader": leader, "replicas": [leader],
                 "isr": [leader], "offline_replicas": []} for p in range(n)]

    described = sorted(out["described"], key=lambda t: t["topic"])
    assert described == [
        {"error_code": 0, "topic": t1, "is_internal": False, "partitions": partitions(3)},
        {"error_code": 0, "topic": t2, "is_internal": False, "partitions": partitions(1)}]

    [resource] = out["configs"]
    assert (resource["error_code"], resource["resource_type"], resource["resource_name"]) == \
        (0, int(ConfigResourceType.TOPIC), t1)
    seen = {e["config_names"]: (e["config_value"], e["config_source"])
            for e in resource["config_entries"]}
    rdkafka = out["librdkafka_configs"]
    assert seen == {n: (v, s) for n, (v, s, _) in rdkafka.items()}
    assert rdkafka["retention.ms"][:2] == (configs["retention.ms"], DYNAMIC_TOPIC_CONFIG)
    assert rdkafka["cleanup.policy"][2] is True, "cleanup.policy was left at its default"

    assert {t1, t2} <= set(out["listed"])
    assert out["grown"] == {t2: 0}
    assert sorted(out["described_grown"][0]["partitions"], key=lambda p: p["partition"]) == \
        partitions(4)
    assert out["librdkafka_grown"] == list(range(4))
    assert out["deleted"] == {t1: 0, t2: 0}
    assert not {t1, t2} & set(out["listed_after_delete"])
    assert topic_partitions(shared, t1) is None and topic_partitions(shared, t2) is None
