"""Transactions across a three-node cluster: the transaction coordinator is the leader of the
transactional id's `__transaction_state` partition (three replicas), and the partitions a
transaction writes are led by other brokers, which it reaches with WriteTxnMarkers; their
leaders check each transactional write with it (AddPartitionsToTxn v4, verify only: KIP-890).

Properties proven here, with confluent-kafka (librdkafka) as the transactional producer and
as read_committed / read_uncommitted readers:
- Transactions whose partitions are led by every broker, committed and aborted in turn,
  together with offsets sent to a consumer group whose coordinator is yet another broker
  than the transaction's: read_committed readers see exactly the committed transactions'
  records, each once, in order, and none of the aborted ones; read_uncommitted readers see
  every record once; the history checker (`history.py`, Jepsen's anomalies: aborted read,
  lost write, duplicate, ...) finds nothing in the sends and those reads; the group's committed offsets are the last committed transaction's;
  every replica of every partition holds the same bytes.
- A transaction whose coordinator dies (kill -9) between its PrepareCommit record and its
  markers (a partition leader is held with SIGSTOP so that its marker cannot be written,
  and the coordinator is killed once the Prepare record is on every live replica of its
  partition): the broker that takes over the coordinator's partition reloads the
  transaction and writes every marker, so the transaction commits whole, everywhere; the
  producer is then fenced by a successor with the same transactional id, whose own
  transaction commits. Repeated with SLUICE_CLUSTER_SEEDS seeds (printed).

Waiting is polling with a deadline, never a fixed sleep.
"""

import os
import random
import signal
import struct
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from history import History, assert_valid
from test_cluster import scrape, start_all, start_cluster, stop_all, wait_for
from test_cluster_data import admin, agreed_leaders, converged, leaders, log_ends
from test_groups import kstr, request
from test_java_clients import classpath, java_installed, run_jvm  # noqa: F401 (a fixture)
from test_transactions import describe_transactions, read_all, values

WAIT_S = 60
NOT_COORDINATOR = 16
TOPIC, PARTITIONS = "txn-out", 3
FAULT_SEEDS = int(os.environ.get("SLUICE_CLUSTER_SEEDS", "2"))


def find_coordinator(node, key, key_type):
    """FindCoordinator v1 through `node`: (error, node id)."""
    r = request(node, 10, 1, kstr(key) + struct.pack(">b", key_type))
    _throttle, error = struct.unpack(">ih", r[:6])
    at = 6
    (msg_len,) = struct.unpack(">h", r[at:at + 2])
    at += 2 + max(msg_len, 0)
    (node_id,) = struct.unpack(">i", r[at:at + 4])
    return error, node_id


def txn_coordinator(nodes, txn_id):
    """The broker every live node names as `txn_id`'s transaction coordinator, once they
    agree."""
    def check():
        named = set()
        for n in nodes:
            error, node_id = find_coordinator(n, txn_id, 1)
            if error != 0:
                return None
            named.add(node_id)
        return named.pop() if len(named) == 1 else None
    return wait_for(f"the coordinator of {txn_id}", check)


def group_coordinator(nodes, group):
    def check():
        named = {find_coordinator(n, group, 0) for n in nodes}
        if len(named) != 1:
            return None
        error, node_id = named.pop()
        return node_id if error == 0 else None
    return wait_for(f"the coordinator of {group}", check)


def cluster_with_topic(tmp_path, ids, extra=()):
    nodes = start_cluster(tmp_path, ids, extra=["--set", "replica.lag.time.max.ms=2000",
                                                *extra])
    start_all(nodes, ids)
    a = admin(nodes[1])  # kept until the answer
    a.create_topics([NewTopic(TOPIC, PARTITIONS, 3, config={
        "min.insync.replicas": "2"})])[TOPIC].result(WAIT_S)
    view = wait_for("every broker to list the leaders",
                    agreed_leaders(nodes.values(), TOPIC, PARTITIONS))
    return nodes, view


def txn_producer(nodes, txn_id):
    p = Producer({"bootstrap.servers": ",".join(n.bootstrap for n in nodes.values()),
                  "transactional.id": txn_id, "acks": "all", "linger.ms": 5,
                  "transaction.timeout.ms": 60000})
    p.init_transactions(WAIT_S)
    return p


class TxnHistory:
    """Every transactional send with its transaction and its acknowledgement, for the
    history checker."""

    def __init__(self):
        self.history = History()

    def produce(self, producer, value, partition, txn):
        self.history.send(value, txn=txn)

        def delivered(err, msg):
            if err is None:
                self.history.ok(msg.value(), msg.partition(), msg.offset())
            else:
                self.history.failed(msg.value())
        producer.produce(TOPIC, value=value, partition=partition, on_delivery=delivered)


def assert_exactly(nodes, committed, everything, txns):
    """read_committed readers (through every broker) see exactly `committed`
    ({partition: [values]}, in order); read_uncommitted readers see `everything` (each value
    once, in order); the history checker finds no anomaly in the sends of `txns` and those
    reads (Jepsen's aborted read among them) against the read_uncommitted log; every replica
    holds the same bytes."""
    history = txns.history
    for n in nodes.values():
        got = read_all(n, TOPIC, PARTITIONS, "read_committed")
        assert {p: values(v) for p, v in got.items()} == committed, f"through {n.bootstrap}"
        history.poll(f"read_committed@{n.bootstrap}",
                     [(p, o, v) for p, recs in got.items() for o, v in recs],
                     restart=True, read_committed=True,
                     positions={p: 0 for p in range(PARTITIONS)})
    got = read_all(nodes[1], TOPIC, PARTITIONS, "read_uncommitted")
    for p in range(PARTITIONS):
        assert values(got[p]) == everything[p], (
            f"partition {p}: missing {set(everything[p]) - set(values(got[p]))}, "
            f"extra {set(values(got[p])) - set(everything[p])}")
    # The final log is the data records; the offsets of control records (markers) are not
    # in it, so jumping over them is no skip.
    final_log = {(p, o): v for p, recs in got.items() for o, v in recs}
    for p, recs in got.items():
        history.poll("read_uncommitted", [(p, o, v) for o, v in recs], restart=True)
    assert_valid(history, final_log, require_all_seen=True)
    wait_for("every replica to hold the same log",
             converged(nodes.values(), TOPIC, PARTITIONS), timeout=WAIT_S)


def test_transactions_span_partitions_led_by_other_brokers(
        tmp_path, java_installed):  # noqa: F811 (a fixture)
    """Transactions whose partitions, offsets and coordinator sit on different brokers
    commit and abort whole (read_committed readers and the history checker agree), the
    offsets they carry are committed with them, and only the coordinator describes them."""
    ids = [1, 2, 3]
    nodes, view = cluster_with_topic(tmp_path, ids)
    try:
        # The partitions' leaders are spread over all three brokers, so whichever broker
        # coordinates the transaction, most of its partitions are led elsewhere.
        assert {leader for leader, _ in view.values()} == set(ids), view
        txn_id = "spanning"
        producer = txn_producer(nodes, txn_id)
        coordinator = txn_coordinator(nodes.values(), txn_id)
        state_rf = {len(r) for _, r in leaders(nodes[1], "__transaction_state").values()}
        assert state_rf == {3}, state_rf
        # A group whose coordinator is not the transaction's: the offsets' partition is led
        # elsewhere too, and its leader verifies the offsets with the transaction's
        # coordinator.
        group = next(g for g in (f"sink-{i}" for i in range(200))
                     if group_coordinator(nodes.values(), g) != coordinator)
        committed = {p: [] for p in range(PARTITIONS)}
        everything = {p: [] for p in range(PARTITIONS)}
        txns = TxnHistory()
        for t in range(6):
            producer.begin_transaction()
            batch = {p: [f"t{t}-p{p}-{i}".encode() for i in range(5)] for p in range(PARTITIONS)}
            for p, vs in batch.items():
                for v in vs:
                    txns.produce(producer, v, p, f"t{t}")
                everything[p] += vs
            consumer_offsets = [TopicPartition(TOPIC, p, 100 * (t + 1) + p)
                                for p in range(PARTITIONS)]
            producer.send_offsets_to_transaction(
                consumer_offsets, _group_metadata(nodes, group), WAIT_S)
            if t % 3 == 2:
                # Flushed first, so the aborted records are in the log (an abort purges
                # what the producer still holds), for read_committed readers to skip.
                assert producer.flush(WAIT_S) == 0
                producer.abort_transaction(WAIT_S)
                txns.history.abort(f"t{t}")
            else:
                producer.commit_transaction(WAIT_S)
                last_offsets = {tp.partition: tp.offset for tp in consumer_offsets}
                for p, vs in batch.items():
                    committed[p] += vs
        assert producer.flush(WAIT_S) == 0
        assert_exactly(nodes, committed, everything, txns)
        c = Consumer({"bootstrap.servers": nodes[1].bootstrap, "group.id": group})
        found = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)],
                            timeout=WAIT_S)
        c.close()
        assert {tp.partition: tp.offset for tp in found} == last_offsets
        # DescribeTransactions is the coordinator's to answer: another broker says
        # NOT_COORDINATOR (16), as Kafka's does, and Kafka's `kafka-transactions.sh describe`
        # through that broker finds the coordinator and describes the transaction.
        other = next(i for i in ids if i != coordinator)
        described = describe_transactions(nodes[coordinator], [txn_id])[txn_id]
        # (The last of the six, t5, was aborted.)
        assert (described["error"], described["state"]) == (0, "CompleteAbort"), described
        assert describe_transactions(nodes[other], [txn_id])[txn_id]["error"] == 16
        run = run_jvm(nodes[other], classpath("tools-4.4.0", classes=False),
                      "org.apache.kafka.tools.TransactionsCommand",
                      "--bootstrap-server", nodes[other].bootstrap,
                      "describe", "--transactional-id", txn_id)
        assert run.returncode == 0, run.explain()
        header, row = (line.split() for line in run.lines[-2:])
        table = dict(zip(header, row))
        assert (table["CoordinatorId"], table["TransactionalId"], table["TransactionState"]) \
            == (str(coordinator), txn_id, "CompleteAbort"), run.explain()
        # The markers crossed brokers, and so did the verifications of transactional writes.
        served = {api: sum(scrape(n).get(f'sluice_requests_total{{api="{api}"}}', 0)
                           for n in nodes.values())
                  for api in ("WriteTxnMarkers", "AddPartitionsToTxn")}
        assert served["WriteTxnMarkers"] > 0, served
        print(f"requests between brokers and clients: {served}")
    finally:
        stop_all(nodes)


def _group_metadata(nodes, group):
    """The consumer group metadata librdkafka sends with offsets (a consumer that never
    joins: TxnOffsetCommit carries generation -1, as Kafka accepts)."""
    c = Consumer({"bootstrap.servers": nodes[1].bootstrap, "group.id": group})
    meta = c.consumer_group_metadata()
    c.close()
    return meta


def test_a_transaction_commits_whole_when_its_coordinator_dies_between_prepare_and_markers(
        tmp_path):
    for round_ in range(FAULT_SEEDS):
        seed = int(os.environ.get("SLUICE_CLUSTER_SEED", random.SystemRandom().randrange(2**32)))
        print(f"txn-coordinator-kill round {round_} seed {seed}")
        rng = random.Random(seed)
        run_dir = tmp_path / f"round{round_}"
        run_dir.mkdir()
        _coordinator_dies_between_prepare_and_markers(run_dir, rng)


def _coordinator_dies_between_prepare_and_markers(tmp_path, rng):
    ids = [1, 2, 3]
    nodes, view = cluster_with_topic(tmp_path, ids)
    try:
        # A transactional id whose coordinator leads none of the partitions the seed picks
        # to hold back: its marker there must cross brokers.
        txn_id = f"dying-{rng.randrange(10**6)}"
        producer = txn_producer(nodes, txn_id)
        coordinator = txn_coordinator(nodes.values(), txn_id)
        others = [i for i in ids if i != coordinator]
        held = rng.choice(others)
        assert any(leader == held for leader, _ in view.values()), view
        # One committed transaction first, so the partitions hold data before and after.
        committed = {p: [] for p in range(PARTITIONS)}
        everything = {p: [] for p in range(PARTITIONS)}
        txns = TxnHistory()

        def one_transaction(prod, tag, commit=True):
            prod.begin_transaction()
            for p in range(PARTITIONS):
                vs = [f"{tag}-p{p}-{i}".encode() for i in range(rng.randrange(1, 20))]
                for v in vs:
                    txns.produce(prod, v, p, tag)
                everything[p] += vs
                if commit:
                    committed[p] += vs
            return prod

        one_transaction(producer, "before").commit_transaction(WAIT_S)
        # The transaction to be caught half-ended: every record written and acknowledged...
        one_transaction(producer, "caught")
        assert producer.flush(WAIT_S) == 0
        # ...then the leader `held` paused, so that no marker can reach its partitions.
        nodes[held].proc.send_signal(signal.SIGSTOP)
        outcome = {}

        def commit():
            try:
                producer.commit_transaction(120)
                outcome["ok"] = True
            except KafkaException as e:
                outcome["error"] = e

        committer = threading.Thread(target=commit, daemon=True)
        try:
            committer.start()
            wait_for("the coordinator to prepare the commit", lambda: describe_transactions(
                nodes[coordinator], [txn_id]).get(txn_id, {}).get("state") == "PrepareCommit",
                timeout=WAIT_S)
            # The Prepare record on every live replica of its partition: whoever takes over
            # must find it.
            survivor = next(i for i in others if i != held)

            def prepare_replicated():
                ends_c = log_ends(nodes[coordinator], "__transaction_state")
                ends_s = log_ends(nodes[survivor], "__transaction_state")
                return ends_c and all(ends_s.get(p, (None,))[0] == e
                                      for p, (e, _) in ends_c.items())
            wait_for("the Prepare record on the surviving replica", prepare_replicated,
                     timeout=WAIT_S)
            still = describe_transactions(nodes[coordinator], [txn_id])[txn_id]["state"]
            assert still == "PrepareCommit", still
            nodes[coordinator].kill()
        finally:
            nodes[held].proc.send_signal(signal.SIGCONT)
        # The survivor leads the coordinator's partition now, reloads, and finishes it.
        wait_for("another broker to coordinate the transaction", lambda: find_coordinator(
            nodes[survivor], txn_id, 1) in ((0, survivor), (0, held)))
        nodes[coordinator].start()
        committer.join(180)
        assert not committer.is_alive(), "commit_transaction never returned"
        print(f"the first producer's commit: {outcome}")
        # A successor with the same transactional id fences the first producer and commits.
        successor = txn_producer(nodes, txn_id)
        one_transaction(successor, "after").commit_transaction(WAIT_S)
        assert_exactly(nodes, committed, everything, txns)
    finally:
        stop_all(nodes)
