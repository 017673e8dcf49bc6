"""Topics in the cluster metadata, and clients routed to partition leaders, across three real
`sluice` processes on 127.0.0.1, each with its own data directory.

Properties proven here:
- A topic created through one broker (librdkafka's admin client) is created by the active
  controller in the metadata log: every broker's Metadata lists the same leaders, leader
  epochs and replicas, the leaders spread over all three brokers, and each broker has the
  topic's logs on disk.
- A producer bootstrapped at one broker (acks=all) and a consumer bootstrapped at another
  move every record through the leaders Metadata names: the history checker finds no lost,
  duplicated, reordered or unseen record.
- A broker that does not lead a partition answers a Produce to it with
  NOT_LEADER_OR_FOLLOWER, and so does its Fetch; the leader answers a Fetch naming an
  older leader epoch with FENCED_LEADER_EPOCH and a newer one with UNKNOWN_LEADER_EPOCH.
- A consumer group bootstrapped at any broker commits and reads its offsets: FindCoordinator
  names the leader of the group's `__consumer_offsets` partition, the other brokers answer
  NOT_COORDINATOR.
- A topic deleted while a broker is down is removed from its disk when it returns, and one
  created meanwhile is created there; a deletion through any broker removes the logs
  everywhere.

Waiting is polling with a deadline, never a fixed sleep.
"""

import os
import random
import signal
import struct
import time
import urllib.request
import uuid

import pytest

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from crosscheck import fetch_batches
from history import History, assert_valid
from test_cluster import start_all, start_cluster, stop_all, wait_for
from test_hostile import connect, frame, recv_frame

WAIT_S = 30
NOT_LEADER_OR_FOLLOWER = 6
NOT_COORDINATOR = 16
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75


def admin(node):
    return AdminClient({"bootstrap.servers": node.bootstrap})


def create(node, name, partitions):
    """Creates a topic through `node` with librdkafka's admin client (kept alive until the
    answer)."""
    a = admin(node)
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(WAIT_S)


def delete(node, name):
    a = admin(node)
    a.delete_topics([name])[name].result(WAIT_S)


def leaders(node, topic):
    """{partition: (leader, replicas)} of `topic` in `node`'s Metadata, or None if absent."""
    md = admin(node).list_topics(timeout=WAIT_S)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return {p: (m.leader, tuple(m.replicas)) for p, m in t.partitions.items()}


def agreed_leaders(nodes, topic, partitions):
    """A check for `wait_for`: every node lists `topic` with all its partitions led, and the
    same leaders."""
    def check():
        views = [leaders(n, topic) for n in nodes]
        if any(v is None or len(v) != partitions for v in views):
            return None
        if any(v != views[0] for v in views) or any(l < 0 for l, _ in views[0].values()):
            return None
        return views[0]
    return check


def log_dirs(node, topic):
    return sorted(p.name for p in node.data_dir.glob(f"{topic}-*") if p.is_dir()
                  and not p.name.endswith("-delete"))


def raw(node, api, version, body):
    s = connect(node)
    try:
        s.sendall(frame(api, version, 7, body, client_id=b"cluster-test"))
        return recv_frame(s)
    finally:
        s.close()


def produce_error(node, topic, partition):
    """The error code of a Produce v3 (acks=1, no records) to one partition."""
    name = topic.encode()
    body = struct.pack(">hhi", -1, 1, 5000)
    body += struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
    body += struct.pack(">i", 1) + struct.pack(">ii", partition, -1)
    resp = raw(node, 0, 3, body)
    at = 4 + 4 + 2 + len(name) + 4  # correlation id, topic count, name, partition count
    _p, error = struct.unpack(">ih", resp[at:at + 6])
    return error


def fetch_error(node, topic, partition, leader_epoch=-1):
    """The error code of a Fetch v9 (which carries the client's current leader epoch) of
    one partition."""
    name = topic.encode()
    body = struct.pack(">iiiibii", -1, 0, 1, 1 << 20, 0, 0, -1)
    body += struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
    body += struct.pack(">i", 1) + struct.pack(">iiqqi", partition, leader_epoch, 0, -1, 1 << 20)
    body += struct.pack(">i", 0) + struct.pack(">h", 0)  # forgotten topics, rack id
    resp = raw(node, 1, 9, body)
    # correlation id, throttle, error, session id, topic count, name, partition count
    at = 4 + 4 + 2 + 4 + 4 + 2 + len(name) + 4
    _p, error = struct.unpack(">ih", resp[at:at + 6])
    return error


def coordinator_error(node, group):
    """The error code of a Heartbeat v0 for `group` (an unknown member, but the coordinator
    check comes first)."""
    g, m = group.encode(), b"nobody"
    body = struct.pack(">h", len(g)) + g + struct.pack(">i", 1) + struct.pack(">h", len(m)) + m
    resp = raw(node, 12, 0, body)
    (error,) = struct.unpack(">h", resp[4:6])
    return error


def test_topics_are_created_by_the_controller_and_clients_follow_the_leaders(tmp_path):
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids)
    try:
        start_all(nodes, ids)
        n1, n2, n3 = (nodes[i] for i in ids)
        topic, partitions = "spread", 6
        create(n1, topic, partitions)
        view = wait_for("every broker to list the same leaders",
                        agreed_leaders(nodes.values(), topic, partitions))
        assert {l for l, _ in view.values()} == set(ids), view
        assert all(r == (l,) for l, r in view.values()), view
        for n in nodes.values():
            wait_for(f"node {n.data_dir.name} to hold the logs",
                     lambda n=n: log_dirs(n, topic) == sorted(f"{topic}-{p}"
                                                            for p in range(partitions)))

        # Clients: produce through broker 2's bootstrap, consume through broker 3's.
        history = History()
        producer = Producer({"bootstrap.servers": n2.bootstrap, "acks": "all",
                             "enable.idempotence": True})

        def delivered(err, msg):
            if err is None:
                history.ok(msg.value(), msg.partition(), msg.offset())
            else:
                history.failed(msg.value())
        for i in range(600):
            value = f"v{i}".encode()
            history.send(value)
            producer.produce(topic, value=value, key=str(i % 37).encode(), on_delivery=delivered)
            producer.poll(0)
        assert producer.flush(WAIT_S) == 0
        consumer = Consumer({"bootstrap.servers": n3.bootstrap, "group.id": "spread-readers",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([topic])
        seen = []
        deadline = time.monotonic() + WAIT_S
        while len(seen) < 600 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None or m.error():
                continue
            seen.append((m.partition(), m.offset(), m.value()))
            history.poll("reader", [(m.partition(), m.offset(), m.value())])
        consumer.commit(asynchronous=False)
        consumer.close()
        final = {(p, o): v for p, o, v in seen}
        assert_valid(history, final, require_all_seen=True)

        # The group's offsets, committed through its coordinator, read back through another
        # broker's bootstrap.
        reader = Consumer({"bootstrap.servers": n1.bootstrap, "group.id": "spread-readers"})
        committed = reader.committed([TopicPartition(topic, p) for p in range(partitions)],
                                     timeout=WAIT_S)
        reader.close()
        ends = {}
        for p, o, _ in seen:
            ends[p] = max(ends.get(p, 0), o + 1)
        assert {tp.partition: tp.offset for tp in committed} == ends
        # Exactly one broker coordinates the group; the others say NOT_COORDINATOR.
        errors = sorted(coordinator_error(n, "spread-readers") for n in nodes.values())
        assert errors.count(NOT_COORDINATOR) == 2, errors

        # Stale routing: a broker that does not lead a partition refuses it; the leader
        # checks the leader epoch a Fetch names.
        p, (leader, _) = next(iter(view.items()))
        others = [nodes[i] for i in ids if i != leader]
        for n in others:
            assert produce_error(n, topic, p) == NOT_LEADER_OR_FOLLOWER
            assert fetch_error(n, topic, p) == NOT_LEADER_OR_FOLLOWER
        # The epoch the leader stamped on the partition's batches is the one it serves in.
        end = max(o for q, o, _ in seen if q == p) + 1
        epoch = {b["leader_epoch"] for b in fetch_batches(nodes[leader], topic, p, end)}
        assert len(epoch) == 1, epoch
        epoch = epoch.pop()
        assert fetch_error(nodes[leader], topic, p) == 0
        assert fetch_error(nodes[leader], topic, p, epoch) == 0
        assert fetch_error(nodes[leader], topic, p, epoch + 1) == UNKNOWN_LEADER_EPOCH
    finally:
        stop_all(nodes)


def test_a_broker_that_was_down_follows_deletions_and_creations_when_it_returns(tmp_path):
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids)
    try:
        start_all(nodes, ids)
        n1, n2, n3 = (nodes[i] for i in ids)
        for name in ("doomed", "kept"):
            create(n1, name, 3)
        wait_for("node 3 to hold both topics' logs",
                 lambda: log_dirs(n3, "doomed") and log_dirs(n3, "kept"))
        n3.stop()
        delete(n1, "doomed")
        create(n2, "born", 2)
        for n in (n1, n2):
            wait_for("the live nodes to remove the deleted topic's logs",
                     lambda n=n: not log_dirs(n, "doomed"))
        assert log_dirs(n3, "doomed"), "the stopped node's logs are only removed once it runs"
        n3.start()
        wait_for("the returning node to remove the deleted topic and create the new one",
                 lambda: not log_dirs(n3, "doomed") and log_dirs(n3, "born")
                 == ["born-0", "born-1"] and len(log_dirs(n3, "kept")) == 3)
        wait_for("the returning node to list the cluster's topics",
                 lambda: leaders(n3, "doomed") is None and leaders(n3, "born") is not None)
    finally:
        stop_all(nodes)


def test_a_single_node_keeps_its_topics_across_restarts_in_higher_leader_epochs(broker):
    """A cluster of one: topics survive restarts (their logs and their metadata agree), and
    each restart elects the broker again in a higher leader epoch, which its batches carry;
    a Fetch naming an epoch from before the restarts is fenced."""
    name = f"solo-{uuid.uuid4().hex[:6]}"
    create(broker, name, 2)
    for round_ in range(3):
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        p.produce(name, value=f"r{round_}".encode(), partition=0)
        assert p.flush(WAIT_S) == 0
        if round_ < 2:
            broker.stop()
            broker.start()
    batches = fetch_batches(broker, name, 0, 3)
    epochs = [b["leader_epoch"] for b in batches]
    assert len(epochs) == 3 and epochs == sorted(set(epochs)), epochs
    assert fetch_error(broker, name, 0, epochs[-1]) == 0
    assert fetch_error(broker, name, 0, epochs[0]) == FENCED_LEADER_EPOCH
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "solo",
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(name, 0, 0)])
    values = []
    deadline = time.monotonic() + WAIT_S
    while len(values) < 3 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            values.append(m.value())
    c.close()
    assert values == [b"r0", b"r1", b"r2"]


# -- replication -------------------------------------------------------------------------

def log_ends(node, topic):
    """{partition: (log end offset, high watermark)} of `topic` on `node`, from its metrics."""
    out = {}
    text = urllib.request.urlopen(node.admin_url + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        for metric, slot in (("sluice_log_end_offset{", 0), ("sluice_log_high_watermark{", 1)):
            if line.startswith(metric) and f'topic="{topic}"' in line:
                p = int(line.split('partition="')[1].split('"')[0])
                out.setdefault(p, [None, None])[slot] = int(float(line.rsplit(" ", 1)[1]))
    return {p: tuple(v) for p, v in out.items()}


def converged(nodes, topic, partitions):
    """A check for `wait_for`: every node holds every partition to the same end, with its
    high watermark there too."""
    def check():
        views = [log_ends(n, topic) for n in nodes]
        if any(len(v) != partitions for v in views):
            return None
        if any(v != views[0] for v in views) or any(e != h for e, h in views[0].values()):
            return None
        return views[0]
    return check


def read_everything(node, topic, partitions, ends):
    """Every record of `topic` up to `ends` ({partition: end}), read through `node` by a
    consumer that assigns itself each partition from the start: [(partition, offset, value)]."""
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, done = [], {p for p in range(partitions) if ends[p] == 0}
    deadline = time.monotonic() + WAIT_S
    while len(done) < partitions:
        assert time.monotonic() < deadline, f"could not read {topic} to its end: {done}"
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        out.append((m.partition(), m.offset(), m.value()))
        if m.offset() + 1 >= ends[m.partition()]:
            done.add(m.partition())
    c.close()
    return out


FAULT_SEEDS = int(os.environ.get("SLUICE_CLUSTER_SEEDS", "2"))


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_acknowledged_records_survive_the_loss_of_a_partition_leader(tmp_path, fault):
    """RF=3, min.insync.replicas=2, acks=all with an idempotent producer: the leader of
    partition 0 is killed (-9) or paused (SIGSTOP) while records are produced, at a moment
    the seed picks. The controller fences it and elects an in-sync follower; the producer
    goes on there; the old leader returns (restart, or SIGCONT), truncates whatever it held
    that the new leader does not, and catches up. Every replica ends with the same log, and
    the history checker finds no acknowledged record lost, duplicated or moved, and no
    record seen that was not sent. Seeds: SLUICE_CLUSTER_SEEDS (default 2), printed."""
    for round_ in range(FAULT_SEEDS):
        seed = int(os.environ.get("SLUICE_CLUSTER_SEED", random.SystemRandom().randrange(2**32)))
        print(f"{fault} round {round_} seed {seed}")
        rng = random.Random(seed)
        run_dir = tmp_path / f"round{round_}"
        run_dir.mkdir()
        ids = [1, 2, 3]
        nodes = start_cluster(run_dir, ids, extra=["--set", "replica.lag.time.max.ms=2000"])
        try:
            start_all(nodes, ids)
            topic, partitions = "replicated", 3
            a = admin(nodes[1])
            a.create_topics([NewTopic(topic, partitions, 3,
                                      config={"min.insync.replicas": "2"})])[topic].result(WAIT_S)
            view = wait_for("every broker to list the leaders",
                            agreed_leaders(nodes.values(), topic, partitions))
            victim = view[0][0]
            bootstrap = ",".join(n.bootstrap for n in nodes.values())
            history = History()
            producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                 "enable.idempotence": True, "linger.ms": 5,
                                 "message.timeout.ms": 60000})

            def delivered(err, msg):
                if err is None:
                    history.ok(msg.value(), msg.partition(), msg.offset())
                else:
                    history.failed(msg.value())

            sent = 0

            def produce_for(seconds):
                nonlocal sent
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    value = f"{seed}-{sent}".encode()
                    history.send(value)
                    producer.produce(topic, value=value, key=str(sent % 11).encode(),
                                     on_delivery=delivered)
                    sent += 1
                    producer.poll(0.002)

            produce_for(rng.uniform(0.5, 2.0))
            if fault == "kill":
                nodes[victim].kill()
            else:
                nodes[victim].proc.send_signal(signal.SIGSTOP)
            try:
                produce_for(rng.uniform(1.0, 3.0))
                survivor = nodes[next(i for i in ids if i != victim)]
                wait_for("an in-sync follower to take over partition 0",
                         lambda: (leaders(survivor, topic) or {}).get(0, (-1,))[0]
                         not in (-1, victim))
                produce_for(rng.uniform(1.0, 2.0))
            finally:
                if fault == "kill":
                    nodes[victim].start()
                else:
                    nodes[victim].proc.send_signal(signal.SIGCONT)
            produce_for(rng.uniform(1.0, 2.0))
            assert producer.flush(90) == 0, "the producer did not finish"
            acked = sum(1 for s in history.sends.values() if s.outcome == "ok")
            assert acked > 0
            ends = wait_for("every replica to hold the same log",
                            converged(nodes.values(), topic, partitions), timeout=60)
            records = read_everything(nodes[ids[0] if ids[0] != victim else ids[1]], topic,
                                      partitions, {p: e for p, (e, _) in ends.items()})
            history.poll("reader", records, restart=True,
                         positions={p: 0 for p in range(partitions)})
            final = {(p, o): v for p, o, v in records}
            assert_valid(history, final, require_all_seen=True)
            new_view = agreed_leaders(nodes.values(), topic, partitions)()
            assert new_view is not None
        finally:
            stop_all(nodes)
