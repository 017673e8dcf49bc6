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
  NOT_COORDINATOR. That topic has three replicas; when the coordinator is killed (-9) the
  group's offsets are served by the new leader of its partition, which reloads the groups,
  and they survive a restart of the whole cluster.
- A topic deleted while a broker is down is removed from its disk when it returns, and one
  created meanwhile is created there; a deletion through any broker removes the logs
  everywhere.
- A single node keeps its topics across restarts, in a higher leader epoch each time, and
  fences a fetch naming an older one.
- Leaders go back to their preferred replicas: through Kafka's `kafka-leader-election.sh`
  (ElectLeaders), and by the controller itself (auto.leader.rebalance.enable).
- Replication (RF=3, min.insync.replicas=2, an idempotent acks=all producer through every
  broker, checked by the history checker with Jepsen's anomalies, seeds printed): kill -9
  and SIGSTOP of a partition leader, and a leader cut off from the other brokers by a
  network partition (network namespaces) while clients still reach it (an in-sync follower
  takes over; the old leader truncates and catches up), kill -9 and restart of a follower
  (it catches up and rejoins the ISR), and a rolling restart of all three brokers; every
  replica ends with the same log, and no acknowledged record is lost, duplicated or moved.
- A follower whose leader's log starts past its end (DeleteRecords while it was down), and
  a new replica a reassignment adds, start their logs at the leader's log start; every
  follower's log start follows its leader's. Every broker checkpoints its high watermarks.

Waiting is polling with a deadline, never a fixed sleep.
"""

import hashlib
import json
import os
import random
import signal
import struct
import time
import urllib.request
import uuid

import pytest

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import Broker, sluice_cli
from crosscheck import fetch_batches
from history import History, assert_valid
from test_cluster import free_port, scrape, start_all, start_cluster, stop_all, wait_for
from test_hostile import connect, frame, recv_frame
from test_java_clients import classpath, java_installed, run_jvm  # noqa: F401 (a fixture)

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


def isrs(node, topic):
    """{partition: ISR} of `topic` in `node`'s Metadata ({} if absent)."""
    md = admin(node).list_topics(timeout=WAIT_S)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return {}
    return {p: tuple(m.isrs) for p, m in t.partitions.items()}


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


def log_bytes(node, topic, partition):
    """The digest of a partition's segment files on `node`'s disk, concatenated in order:
    replicas that hold the same batches (followers copy them as they are) have the same."""
    h = hashlib.sha256()
    for f in sorted((node.data_dir / f"{topic}-{partition}").glob("*.log")):
        h.update(f.read_bytes())
    return h.hexdigest()


def converged(nodes, topic, partitions):
    """A check for `wait_for`: every node holds every partition to the same end, with its
    high watermark there too, and the same bytes in its segment files."""
    def check():
        views = [log_ends(n, topic) for n in nodes]
        if any(len(v) != partitions for v in views):
            return None
        if any(v != views[0] for v in views) or any(e != h for e, h in views[0].values()):
            return None
        for p in range(partitions):
            if len({log_bytes(n, topic, p) for n in nodes}) != 1:
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
TOPIC, PARTITIONS = "replicated", 3


class Load:
    """An idempotent acks=all producer writing unique values to TOPIC through every broker,
    recording each send and its outcome in a History."""

    def __init__(self, nodes, seed, **config):
        self.seed, self.sent, self.history = seed, 0, History()
        bootstrap = ",".join(n.bootstrap for n in nodes.values())
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                  "enable.idempotence": True, "linger.ms": 5,
                                  "message.timeout.ms": 90000, **config})

    def _delivered(self, err, msg):
        if err is None:
            self.history.ok(msg.value(), msg.partition(), msg.offset())
        else:
            self.history.failed(msg.value())

    def run_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            value = f"{self.seed}-{self.sent}".encode()
            self.history.send(value)
            self.producer.produce(TOPIC, value=value, key=str(self.sent % 11).encode(),
                                  on_delivery=self._delivered)
            self.sent += 1
            self.producer.poll(0.002)

    def check(self, nodes, reader):
        """Flushes, waits for every replica to hold the same log, reads it all through
        `reader` and runs the history checker over it."""
        assert self.producer.flush(120) == 0, "the producer did not finish"
        assert any(s.outcome == "ok" for s in self.history.sends.values())
        ends = wait_for("every replica to hold the same log",
                        converged(nodes.values(), TOPIC, PARTITIONS), timeout=60)
        records = read_everything(reader, TOPIC, PARTITIONS,
                                  {p: e for p, (e, _) in ends.items()})
        self.history.poll("reader", records, restart=True,
                          positions={p: 0 for p in range(PARTITIONS)})
        assert_valid(self.history, {(p, o): v for p, o, v in records},
                     require_all_seen=True)


def under_load(tmp_path, name, scenario, make_cluster=None, producer_config=None):
    """Runs `scenario(nodes, view, load, rng)` on a fresh three-node cluster with TOPIC (RF=3,
    min.insync.replicas=2) under an acks=all load, for SLUICE_CLUSTER_SEEDS seeds (printed;
    SLUICE_CLUSTER_SEED replays one), then checks the history. `make_cluster(run_dir, ids,
    extra)` returns the nodes (three on 127.0.0.1 by default)."""
    for round_ in range(FAULT_SEEDS):
        seed = int(os.environ.get("SLUICE_CLUSTER_SEED", random.SystemRandom().randrange(2**32)))
        print(f"{name} round {round_} seed {seed}")
        rng = random.Random(seed)
        run_dir = tmp_path / f"round{round_}"
        run_dir.mkdir()
        ids = [1, 2, 3]
        nodes = (make_cluster or start_cluster)(
            run_dir, ids, extra=["--set", "replica.lag.time.max.ms=2000"])
        try:
            start_all(nodes, ids)
            a = admin(nodes[1])
            a.create_topics([NewTopic(TOPIC, PARTITIONS, 3, config={
                "min.insync.replicas": "2"})])[TOPIC].result(WAIT_S)
            view = wait_for("every broker to list the leaders",
                            agreed_leaders(nodes.values(), TOPIC, PARTITIONS))
            load = Load(nodes, seed, **(producer_config or {}))
            load.run_for(rng.uniform(0.5, 2.0))
            reader = scenario(nodes, view, load, rng)
            # A scenario may name the brokers that end up holding the replicas.
            reader, members = reader if isinstance(reader, tuple) else (reader, list(nodes))
            load.run_for(rng.uniform(0.5, 1.5))
            load.check({i: nodes[i] for i in members}, reader)
            assert agreed_leaders([nodes[i] for i in members], TOPIC, PARTITIONS)() is not None
        finally:
            stop_all(nodes)


def new_leader(node, victim):
    """A check for `wait_for`: partition 0 is led by a broker other than `victim`."""
    return lambda: (leaders(node, TOPIC) or {}).get(0, (-1,))[0] not in (-1, victim)


class NamespacedClusters:
    """Makes three-node clusters for `under_load` whose brokers each run in a network
    namespace of their own (netns.py), reachable by clients in the root namespace; one at a
    time, the last one's namespaces removed when the next is made and by `close`."""

    def __init__(self):
        self.net = None

    def __call__(self, run_dir, ids, extra):
        from netns import Net
        self.close()  # the last round's, whose nodes have stopped
        self.net = net = Net(ids)
        voters = ",".join(f"{i}@{net.host[i]}:19093" for i in ids)
        return {i: Broker(run_dir / f"node{i}", run_dir / f"node{i}.log", [
            "--node-id", str(i), "--set", f"controller.quorum.voters={voters}",
            "--set", f"listeners=PLAINTEXT://{net.host[i]}:19092,"
                     f"CONTROLLER://{net.host[i]}:19093",
            "--set", "broker.session.timeout.ms=2000",
            "--set", "broker.heartbeat.interval.ms=200",
            "--set", "controller.quorum.election.timeout.ms=300", *extra],
            host=net.host[i], wrapper=net.wrapper(i)) for i in ids}

    def close(self):
        if self.net is not None:
            self.net.close()
            self.net = None


@pytest.mark.parametrize("fault", ["kill", "pause", "cut"])
def test_acknowledged_records_survive_the_loss_of_a_partition_leader(tmp_path, fault):
    """RF=3, min.insync.replicas=2, acks=all with an idempotent producer: the leader of
    partition 0 is killed (-9), paused (SIGSTOP) or cut off from the other two brokers
    while records are produced, at a moment the seed picks. The controller fences it and
    elects an in-sync follower; the producer goes on there; the old leader returns
    (restart, SIGCONT, or the network healed), truncates whatever it held that the new
    leader does not, and catches up. Every replica ends with the same log, and the history
    checker finds no acknowledged record lost, duplicated or moved, and no record seen that
    was not sent. Seeds: SLUICE_CLUSTER_SEEDS (default 2), printed.

    The cut: each broker runs in a network namespace of its own and every packet between
    the leader and the other two is dropped (replication, transaction markers and the
    metadata quorum alike), while clients, in the root namespace, still reach it. It can
    acknowledge nothing more: its followers no longer fetch, and the controller that would
    shrink its ISR is out of reach (or, if it leads the quorum, cannot commit without a
    majority); what it appends meanwhile is truncated when it rejoins."""
    clusters = NamespacedClusters() if fault == "cut" else None

    def scenario(nodes, view, load, rng):
        victim = view[0][0]
        if fault == "kill":
            nodes[victim].kill()
        elif fault == "pause":
            nodes[victim].proc.send_signal(signal.SIGSTOP)
        else:
            clusters.net.isolate(victim)
        try:
            load.run_for(rng.uniform(1.0, 3.0))
            survivor = nodes[next(i for i in nodes if i != victim)]
            wait_for("an in-sync follower to take over partition 0",
                     new_leader(survivor, victim))
            load.run_for(rng.uniform(1.0, 2.0))
        finally:
            if fault == "kill":
                nodes[victim].start()
            elif fault == "pause":
                nodes[victim].proc.send_signal(signal.SIGCONT)
            else:
                clusters.net.isolate(victim, cut=False)
        return survivor
    try:
        # Requests a cut-off leader holds time out soon, and the producer goes elsewhere.
        under_load(tmp_path, fault, scenario, make_cluster=clusters,
                   producer_config={"request.timeout.ms": 5000} if clusters else None)
    finally:
        if clusters:
            clusters.close()


def test_a_killed_follower_restarts_catches_up_and_rejoins_the_isr(tmp_path):
    """A follower of partition 0 is killed (-9) under load: with min.insync.replicas=2 the
    leader goes on acknowledging with the other follower once the dead one has left the ISR
    (replica.lag.time.max.ms); restarted, it fetches what it missed, and the leader adds it
    back to the ISR. No acknowledged record is lost. The replication metrics say so: the
    leader's under-replicated partitions rise above 0 and its ISR changes grow while the
    follower is away, its replica lag names the follower, and once it is back no broker
    reports a partition under-replicated and the follower has timed its fetches."""
    def scenario(nodes, view, load, rng):
        leader, replicas = view[0]
        victim = next(r for r in replicas if r != leader)
        changes_before = scrape(nodes[leader])["sluice_isr_changes_total"]
        lag_label = f'follower="{victim}"'
        assert any(lag_label in k for k in scrape(nodes[leader])
                   if k.startswith("sluice_replica_lag{")), "no replica lag for the follower"
        nodes[victim].kill()
        load.run_for(rng.uniform(2.5, 4.0))
        wait_for("the leader to report an under-replicated partition", lambda: scrape(
            nodes[leader])["sluice_under_replicated_partitions"] >= 1)
        assert scrape(nodes[leader])["sluice_isr_changes_total"] > changes_before
        # The leader went on acknowledging with two replicas in the ISR.
        acked_before = sum(1 for v in load.history.sends.values() if v.outcome == "ok")
        load.run_for(0.5)
        assert load.producer.flush(60) == 0
        acked_after = sum(1 for v in load.history.sends.values() if v.outcome == "ok")
        assert acked_after > acked_before, "nothing acknowledged while the follower was down"
        nodes[victim].start()
        load.run_for(rng.uniform(0.5, 1.5))
        wait_for("the restarted follower back in every ISR", lambda: all(
            len(isr) == 3 for isr in isrs(nodes[leader], TOPIC).values()))
        wait_for("no broker to report an under-replicated partition", lambda: all(
            scrape(n)["sluice_under_replicated_partitions"] == 0 for n in nodes.values()))
        timed = scrape(nodes[victim])
        assert all(timed[f'sluice_replica_fetch_phase_duration_seconds_count{{phase="{p}"}}']
                   > 0 for p in ("call", "append", "fsync")), "the follower timed no fetch"
        return nodes[leader]
    under_load(tmp_path, "follower", scenario)


def test_a_rolling_restart_of_every_broker_loses_nothing(tmp_path):
    """Each broker in turn is stopped cleanly (SIGTERM: a controlled shutdown moves its
    leaderships away first) and started again under load, the next one only once the
    restarted broker is back in every ISR. No acknowledged record is lost or duplicated."""
    def scenario(nodes, view, load, rng):
        for i in sorted(nodes):
            nodes[i].stop()
            load.run_for(rng.uniform(0.5, 1.5))
            nodes[i].start()
            other = nodes[next(j for j in nodes if j != i)]
            wait_for(f"broker {i} back in every ISR", lambda: all(
                len(isr) == 3 for isr in isrs(other, TOPIC).values()))
            load.run_for(rng.uniform(0.3, 1.0))
        return nodes[1]
    under_load(tmp_path, "rolling", scenario)


def test_a_group_keeps_its_committed_offsets_when_its_coordinator_dies(tmp_path):
    """`__consumer_offsets` has three replicas on three brokers (offsets.topic.replication.
    factor, default 3): a group commits offsets, its coordinator is killed (-9), the
    leadership of the group's partition moves to an in-sync follower, whose coordinator
    reloads the groups from that log; the group's offsets read back through another broker
    are exactly those committed, the group goes on committing there, and the offsets are
    intact after a restart of the whole cluster. (That a commit is answered only once its
    in-sync replicas hold it is not observable from outside here: followers fetch within
    milliseconds, long before the kill.)"""
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids)
    try:
        start_all(nodes, ids)
        topic = "grouped"
        a = admin(nodes[1])
        a.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[
            topic].result(WAIT_S)
        p = Producer({"bootstrap.servers": nodes[1].bootstrap, "acks": "all"})
        for i in range(90):
            p.produce(topic, value=f"m{i}".encode(), partition=i % 3)
        assert p.flush(WAIT_S) == 0
        group = "survivors"
        c = Consumer({"bootstrap.servers": nodes[2].bootstrap, "group.id": group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        got = 0
        deadline = time.monotonic() + WAIT_S
        while got < 45 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got += 1
        committed = {tp.partition: tp.offset for tp in c.commit(asynchronous=False)
                     if tp.offset >= 0}
        c.close()
        assert sum(committed.values()) == 45, committed
        offsets_rf = {len(r) for _, r in wait_for(
            "the offsets topic in the metadata",
            lambda: leaders(nodes[1], "__consumer_offsets")).values()}
        assert offsets_rf == {3}, offsets_rf
        coordinator = [i for i in ids if coordinator_error(nodes[i], group) != NOT_COORDINATOR]
        assert len(coordinator) == 1, coordinator
        dead = coordinator[0]
        nodes[dead].kill()
        survivor = nodes[next(i for i in ids if i != dead)]

        def moved():
            errors = {i: coordinator_error(nodes[i], group) for i in ids if i != dead}
            return [i for i, e in errors.items() if e != NOT_COORDINATOR] or None
        wait_for("another broker to coordinate the group", moved)
        reader = Consumer({"bootstrap.servers": survivor.bootstrap, "group.id": group})
        found = reader.committed([TopicPartition(topic, q) for q in committed], timeout=WAIT_S)
        reader.close()
        assert {tp.partition: tp.offset for tp in found} == committed
        again = Consumer({"bootstrap.servers": survivor.bootstrap, "group.id": group,
                          "enable.auto.commit": False})
        moved_on = [TopicPartition(topic, q, o + 1) for q, o in committed.items()]
        again.commit(offsets=moved_on, asynchronous=False)
        after = again.committed([TopicPartition(topic, q) for q in committed], timeout=WAIT_S)
        again.close()
        assert {tp.partition: tp.offset for tp in after} == {q: o + 1 for q, o in
                                                               committed.items()}
        nodes[dead].start()
        # A whole-cluster restart: every coordinator loads its partitions to their log
        # end (their high watermarks start from nothing), and the offsets are there.
        stop_all(nodes)
        start_all(nodes, ids)
        reader = Consumer({"bootstrap.servers": nodes[dead].bootstrap, "group.id": group})
        final = reader.committed([TopicPartition(topic, q) for q in committed], timeout=WAIT_S)
        reader.close()
        assert {tp.partition: tp.offset for tp in final} == {q: o + 1 for q, o in
                                                               committed.items()}
    finally:
        stop_all(nodes)


REASSIGN_COMMAND = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"


def add_broker(nodes, run_dir, node_id, extra=()):
    """Starts a broker-only node (`process.roles=broker`) that joins the running cluster
    of `nodes` (the same voters), and waits until every node sees it unfenced."""
    voters = next(a.split("=", 1)[1] for a in nodes[1].extra_args
                  if a.startswith("controller.quorum.voters="))
    port = free_port()
    args = ["--node-id", str(node_id), "--set", "process.roles=broker",
            "--set", f"controller.quorum.voters={voters}",
            "--set", f"listeners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{port}",
            "--set", "broker.session.timeout.ms=2000",
            "--set", "broker.heartbeat.interval.ms=200",
            "--set", "replica.lag.time.max.ms=2000", *extra]
    node = Broker(run_dir / f"node{node_id}", run_dir / f"node{node_id}.log", args)
    nodes[node_id] = node
    node.start()

    def registered():
        md = admin(nodes[1]).list_topics(timeout=WAIT_S)
        return node_id in md.brokers
    wait_for(f"broker {node_id} to register unfenced", registered)
    return node


def reassign(nodes, at, plan, tmp_dir, *flags, topic=TOPIC):
    """Runs Kafka's `kafka-reassign-partitions.sh` through broker `at` with `plan`
    ({partition: replicas} of `topic`) and `flags` (--execute, --verify, --cancel)."""
    path = tmp_dir / "reassignment.json"
    path.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": p, "replicas": r} for p, r in sorted(plan.items())]}))
    return run_jvm(nodes[at], classpath("tools-4.4.0", classes=False), REASSIGN_COMMAND,
                   "--bootstrap-server", nodes[at].bootstrap,
                   "--reassignment-json-file", str(path), *flags)


def test_a_broker_added_under_load_takes_over_the_partitions_of_a_drained_one(
        tmp_path, java_installed):  # noqa: F811 (a fixture)
    """Under the acks=all load, broker 4 joins the cluster (`process.roles=broker`) and
    Kafka's own `kafka-reassign-partitions.sh --execute` moves every replica broker 1 holds
    onto it (AlterPartitionReassignments): broker 4 catches up as a follower, joins the ISR,
    and only then does broker 1 leave each partition (a leadership it held goes to a target
    replica in a new leader epoch); `--verify` (ListPartitionReassignments) reports every
    partition complete; broker 1's logs of the topic then hold no records, and
    `kafka-log-dirs.sh` (DescribeLogDirs) lists every partition on broker 4 and none on
    broker 1. Broker 1 then stops. The history checker finds no acknowledged
    record lost or duplicated, and brokers 2, 3 and 4 hold the same bytes."""
    def scenario(nodes, view, load, rng):
        run_dir = nodes[1].data_dir.parent
        add_broker(nodes, run_dir, 4)
        load.run_for(rng.uniform(0.3, 1.0))
        plan = {p: [4 if b == 1 else b for b in replicas] for p, (_, replicas) in view.items()}
        run = reassign(nodes, 2, plan, run_dir, "--execute")
        assert run.returncode == 0, run.explain()
        load.run_for(rng.uniform(0.5, 1.5))

        def complete():
            load.producer.poll(0)
            now = leaders(nodes[2], TOPIC) or {}
            return now if all(tuple(plan[p]) == r for p, (_, r) in now.items()) else None
        moved = wait_for("every partition on its target replicas", complete, timeout=60)
        assert all(leader != 1 for leader, _ in moved.values()), moved
        run = reassign(nodes, 3, plan, run_dir, "--verify")
        assert run.returncode == 0, run.explain()
        assert sum("is completed" in line for line in run.lines) == PARTITIONS, run.explain()
        # Broker 1 holds no replica of the topic now: its logs of it lose their records (as
        # Kafka deletes a stray replica's log), and Kafka's `kafka-log-dirs.sh --describe`
        # (DescribeLogDirs) lists none of its partitions there, all of them on broker 4.
        wait_for("broker 1's logs of the topic to hold no records",
                 lambda: record_bytes(nodes[1], TOPIC) == 0, timeout=30)
        listed = described_log_dirs(nodes, 2, [1, 4], TOPIC)
        assert listed == {1: [], 4: list(range(PARTITIONS))}, listed
        load.run_for(rng.uniform(0.3, 1.0))
        nodes[1].stop()
        return nodes[4], [2, 3, 4]
    under_load(tmp_path, "reassign", scenario)


def record_bytes(node, topic):
    """Bytes of the segment files of `topic`'s partition logs on `node`."""
    return sum(f.stat().st_size for d in log_dirs(node, topic)
               for f in (node.data_dir / d).glob("*.log"))


def described_log_dirs(nodes, at, brokers, topic):
    """The partitions of `topic` that Kafka's `kafka-log-dirs.sh --describe`, run through
    broker `at`, lists on each of `brokers`."""
    run = run_jvm(nodes[at], classpath("tools-4.4.0", classes=False),
                  "org.apache.kafka.tools.LogDirsCommand",
                  "--bootstrap-server", nodes[at].bootstrap, "--describe",
                  "--broker-list", ",".join(map(str, brokers)), "--topic-list", topic)
    assert run.returncode == 0, run.explain()
    (line,) = [line for line in run.lines if line.startswith("{")]
    return {b["broker"]: sorted(int(p["partition"].rsplit("-", 1)[1])
                                for d in b["logDirs"] for p in d["partitions"])
            for b in json.loads(line)["brokers"]}


def broker_config(node, broker_id, key):
    """A broker config's value as DescribeConfigs reports it through `node`, or None when
    it is not listed (a dynamic-only config that is not set)."""
    a = admin(node)
    resource = ConfigResource(ConfigResource.Type.BROKER, str(broker_id))
    entry = a.describe_configs([resource])[resource].result(WAIT_S).get(key)
    return None if entry is None else entry.value


def test_a_throttled_reassignment_copies_no_faster_than_its_rate(
        tmp_path, java_installed):  # noqa: F811 (a fixture)
    """`kafka-reassign-partitions.sh --execute --throttle RATE` moves a partition holding
    about 3 MB onto a broker that joined empty: the tool sets the leader and follower
    throttle rates (dynamic broker configs, IncrementalAlterConfigs on BROKER resources)
    and the topic's throttled-replica lists, and the new replica, out of sync, copies no
    faster than RATE: from its first record to its last, moving B bytes takes at least
    (B - 2 RATE) / RATE seconds (the meter allows about a second's worth at once). Once in
    the ISR, the reassignment completes; `--verify` reports it and removes every throttle
    (DescribeConfigs no longer lists the rates), and the moved replica holds the same
    bytes as the one it replaced."""
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids, extra=["--set", "replica.lag.time.max.ms=2000"])
    topic, rate, records, size = "throttled", 500_000, 3000, 1000
    try:
        start_all(nodes, ids)
        a = admin(nodes[1])
        a.create_topics([NewTopic(topic, num_partitions=1,
                                  replica_assignment=[[1, 2]])])[topic].result(WAIT_S)
        wait_for("the topic's leader", lambda: leaders(nodes[1], topic))
        p = Producer({"bootstrap.servers": nodes[1].bootstrap, "acks": "all",
                      "linger.ms": 20})
        for i in range(records):
            p.produce(topic, value=bytes([i % 256]) * size, partition=0)
            p.poll(0)
        assert p.flush(WAIT_S) == 0
        add_broker(nodes, tmp_path, 4)
        run = reassign(nodes, 2, {0: [4, 2]}, tmp_path, "--execute", "--throttle", str(rate),
                       topic=topic)
        assert run.returncode == 0, run.explain()
        value = broker_config(nodes[2], 4, "follower.replication.throttled.rate")
        assert value == str(rate), value
        # Broker 4's log end, sampled: when the first records arrived, and when the last.
        first = last = None
        deadline = time.monotonic() + 120
        while last is None:
            assert time.monotonic() < deadline, "the new replica never caught up"
            end = log_ends(nodes[4], topic).get(0, (0, 0))[0]
            now = time.monotonic()
            if first is None and end > 0:
                first = (now, end)
            if end >= records:
                last = (now, end)
            time.sleep(0.05)
        copied = (last[1] - first[1]) * size
        took = last[0] - first[0]
        print(f"copied {copied} bytes in {took:.2f} s under a {rate} B/s throttle")
        assert took >= (copied - 2 * rate) / rate, (copied, took)
        wait_for("the reassignment to complete", lambda: (
            leaders(nodes[2], topic) or {}).get(0, (None, ()))[1] == (4, 2), timeout=60)
        run = reassign(nodes, 3, {0: [4, 2]}, tmp_path, "--verify", topic=topic)
        assert run.returncode == 0, run.explain()
        assert any("is completed" in line for line in run.lines), run.explain()
        for broker in (1, 2, 4):
            value = broker_config(nodes[3], broker, "leader.replication.throttled.rate")
            assert value is None, (broker, value)
        assert wait_for("the same bytes on both replicas",
                        converged([nodes[2], nodes[4]], topic, 1), timeout=WAIT_S)
    finally:
        stop_all(nodes)


def test_sluice_cluster_moves_a_partition_cancels_a_move_and_elects_leaders(tmp_path):
    """`sluice cluster reassign --move` starts a reassignment (AlterPartitionReassignments);
    while its new replica's broker is down the move cannot finish, and `sluice cluster
    reassignments` (ListPartitionReassignments, through another broker) lists it with the
    replicas being added and removed; `--cancel` puts the partition back on its original
    replicas. With the broker back, the move completes, its leadership going to the first
    target replica; `sluice cluster elect-leaders` then finds it led by its preferred
    replica."""
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids)
    topic = "cli-moved"
    try:
        start_all(nodes, ids)
        a = admin(nodes[1])
        a.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[1, 2]])])[
            topic].result(WAIT_S)
        wait_for("the topic's leader", lambda: leaders(nodes[1], topic))
        nodes[3].stop()
        sluice_cli(nodes[1], "cluster", "reassign", "--move", f"{topic}:0=3,2")
        listed = json.loads(sluice_cli(nodes[2], "cluster", "reassignments", "--output", "json"))
        assert listed == [{"topic": topic, "partition": 0, "replicas": "3,2,1",
                           "adding": "3", "removing": "1"}], listed
        sluice_cli(nodes[2], "cluster", "reassign", "--cancel", f"{topic}:0")
        # Back on its original replicas, still led by 1 (in the order the reassignment left
        # them, target first, as Kafka's cancellation does).
        leader, replicas = leaders(nodes[1], topic)[0]
        assert (leader, sorted(replicas)) == (1, [1, 2]), (leader, replicas)
        assert json.loads(sluice_cli(nodes[1], "cluster", "reassignments",
                                     "--output", "json")) == []
        out = sluice_cli(nodes[1], "cluster", "reassign", "--cancel", f"{topic}:0", ok=False)
        assert "NO_REASSIGNMENT_IN_PROGRESS" in out, out
        nodes[3].start()
        wait_for("broker 3 back", lambda: 3 in admin(nodes[1]).list_topics(
            timeout=WAIT_S).brokers)
        sluice_cli(nodes[1], "cluster", "reassign", "--move", f"{topic}:0=3,2")
        moved = wait_for("the move to complete", lambda: (
            (leaders(nodes[2], topic) or {}).get(0) == (3, (3, 2))), timeout=WAIT_S)
        assert moved
        elected = json.loads(sluice_cli(nodes[3], "cluster", "elect-leaders", "--partition",
                                        f"{topic}:0", "--output", "json"))
        assert elected == [{"topic": topic, "partition": 0,
                            "result": "already led by its preferred replica"}], elected
    finally:
        stop_all(nodes)


LEADER_ELECTION_COMMAND = "org.apache.kafka.tools.LeaderElectionCommand"


def move_leadership_away(nodes, view, partition):
    """Stops the leader of `partition` cleanly (a controlled shutdown moves its leaderships
    to in-sync followers), waits until another broker leads it, and starts it again;
    returns it once it is back in every ISR."""
    leader = view[partition][0]
    other = nodes[next(i for i in nodes if i != leader)]
    nodes[leader].stop()
    wait_for(f"another broker to lead partition {partition}", lambda: (
        (leaders(other, TOPIC) or {}).get(partition, (-1,))[0] not in (-1, leader)))
    nodes[leader].start()
    wait_for(f"broker {leader} back in every ISR",
             lambda: all(len(isr) == 3 for isr in isrs(other, TOPIC).values()))
    return leader


def test_kafka_leader_election_tool_moves_leaders_back_to_preferred_replicas(
        tmp_path, java_installed):  # noqa: F811 (a fixture)
    """After a broker's controlled shutdown and return, its partitions are led by others
    (auto.leader.rebalance.enable=false here); Kafka's own `kafka-leader-election.sh
    --election-type PREFERRED --all-topic-partitions` (ElectLeaders through any broker)
    gives every partition back to its preferred (first) replica."""
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids, extra=["--set", "auto.leader.rebalance.enable=false"])
    try:
        start_all(nodes, ids)
        a = admin(nodes[1])
        a.create_topics([NewTopic(TOPIC, PARTITIONS, 3)])[TOPIC].result(WAIT_S)
        view = wait_for("leaders", agreed_leaders(nodes.values(), TOPIC, PARTITIONS))
        assert all(l == r[0] for l, r in view.values()), view
        moved = move_leadership_away(nodes, view, 0)
        now = leaders(nodes[1], TOPIC)
        assert now[0][0] != moved, now
        run = run_jvm(nodes[2], classpath("tools-4.4.0", classes=False),
                      LEADER_ELECTION_COMMAND, "--bootstrap-server", nodes[2].bootstrap,
                      "--election-type", "PREFERRED", "--all-topic-partitions")
        assert run.returncode == 0, run.explain()
        after = wait_for("every partition led by its preferred replica", lambda: (
            lambda v: v if v and all(l == r[0] for l, r in v.values()) else None)(
                agreed_leaders(nodes.values(), TOPIC, PARTITIONS)()))
        assert after[0][0] == moved
    finally:
        stop_all(nodes)


def test_the_controller_gives_leaderships_back_to_preferred_replicas_by_itself(tmp_path):
    """With auto.leader.rebalance.enable (Kafka's default) and a short
    leader.imbalance.check.interval.seconds, a broker that returns from a controlled
    shutdown gets its preferred leaderships back without anyone asking."""
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids,
                          extra=["--set", "leader.imbalance.check.interval.seconds=1"])
    try:
        start_all(nodes, ids)
        a = admin(nodes[1])
        a.create_topics([NewTopic(TOPIC, PARTITIONS, 3)])[TOPIC].result(WAIT_S)
        view = wait_for("leaders", agreed_leaders(nodes.values(), TOPIC, PARTITIONS))
        moved = move_leadership_away(nodes, view, 0)
        wait_for("the returned broker to lead its preferred partitions again", lambda: (
            (leaders(nodes[1], TOPIC) or {}).get(0, (-1,))[0] == moved))
    finally:
        stop_all(nodes)


def log_starts(node, topic):
    """{partition: log start offset} of `topic` on `node`, from its metrics."""
    out = {}
    text = urllib.request.urlopen(node.admin_url + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("sluice_log_start_offset{") and f'topic="{topic}"' in line:
            p = int(line.split('partition="')[1].split('"')[0])
            out[p] = int(float(line.rsplit(" ", 1)[1]))
    return out


def test_a_replica_behind_its_leaders_log_start_starts_there_and_catches_up(tmp_path):
    """A follower (broker 3, the preferred leader) is killed (-9); records are produced and
    acknowledged without it, then DeleteRecords (librdkafka's admin client) moves the
    log start past everything it holds. The in-sync follower's log start follows the
    leader's (the Fetch response's log start offset). Restarted, broker 3 is answered
    OFFSET_OUT_OF_RANGE: it empties its log, starts it at the leader's log start (at the
    batch holding it, which the leader sends whole), copies the rest, rejoins the ISR and
    takes the leader's log start. Led by it again (`sluice cluster elect-leaders`), it
    serves exactly the acknowledged records from the log start on. A broker that joins
    empty and is reassigned the partition (`sluice cluster reassign`) starts there too,
    and the reassignment completes: with the old segments deleted, it could not copy
    them."""
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids, extra=["--set", "replica.lag.time.max.ms=2000",
                                                "--set", "auto.leader.rebalance.enable=false"])
    topic = "trimmed"
    acked = {}

    def delivered(err, msg):
        assert err is None, err
        acked[msg.offset()] = msg.value()

    def produce(n):
        base = len(acked)
        for i in range(n):
            p.produce(topic, value=f"{base + i:06d}".encode() * 16, partition=0,
                      on_delivery=delivered)
            p.poll(0)
        assert p.flush(WAIT_S) == 0
    try:
        start_all(nodes, ids)
        a = admin(nodes[1])
        a.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[3, 1, 2]],
                                  config={"segment.bytes": "16384"})])[topic].result(WAIT_S)
        wait_for("broker 3 to lead", lambda: (leaders(nodes[1], topic) or {}).get(0, (-1,))[0]
                 == 3)
        bootstrap = ",".join(n.bootstrap for n in nodes.values())
        # Batches of at most 50 records: the one holding the log start begins within 50
        # offsets below it.
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                      "enable.idempotence": True, "batch.num.messages": 50})
        produce(300)
        nodes[3].kill()
        wait_for("broker 3 out of the ISR", lambda: isrs(nodes[1], topic).get(0) in
                 ((1, 2), (2, 1)))
        produce(1500)
        end = len(acked)
        assert sorted(acked) == list(range(end))
        cut = 1001
        low = a.delete_records([TopicPartition(topic, 0, cut)])
        assert next(iter(low.values())).result(WAIT_S).low_watermark == cut
        wait_for("the in-sync follower to take the leader's log start", lambda: all(
            log_starts(nodes[i], topic).get(0) == cut for i in (1, 2)))
        nodes[3].start()
        wait_for("broker 3 back in the ISR", lambda: len(isrs(nodes[1], topic).get(0, ())) == 3)
        wait_for("broker 3 at the leader's log start and end", lambda: (
            log_starts(nodes[3], topic).get(0) == cut
            and log_ends(nodes[3], topic).get(0) == (end, end)))
        # Its log starts at the batch holding the log start: nothing of what it held before.
        first = min(int(f.stem) for f in (nodes[3].data_dir / f"{topic}-0").glob("*.log"))
        assert cut - 50 < first <= cut, first
        elected = json.loads(sluice_cli(nodes[1], "cluster", "elect-leaders", "--partition",
                                        f"{topic}:0", "--output", "json"))
        assert elected == [{"topic": topic, "partition": 0, "result": "elected"}], elected
        wait_for("broker 3 to lead again", lambda: (leaders(nodes[2], topic) or {}).get(
            0, (-1,))[0] == 3)
        c = Consumer({"bootstrap.servers": nodes[3].bootstrap, "group.id": "trimmed-reader",
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, -2)])  # OFFSET_BEGINNING: the log start
        read = {}
        deadline = time.monotonic() + WAIT_S
        while len(read) < end - cut:
            assert time.monotonic() < deadline, f"read {len(read)} of {end - cut}"
            m = c.poll(0.5)
            if m is not None and not m.error():
                read[m.offset()] = m.value()
        c.close()
        assert read == {o: v for o, v in acked.items() if o >= cut}
        add_broker(nodes, tmp_path, 4)
        sluice_cli(nodes[1], "cluster", "reassign", "--move", f"{topic}:0=3,1,4")
        wait_for("the move onto broker 4 to complete", lambda: (
            (leaders(nodes[1], topic) or {}).get(0, (-1, ()))[1] == (3, 1, 4)), timeout=60)
        assert log_starts(nodes[4], topic).get(0) == cut
        assert log_ends(nodes[4], topic).get(0) == (end, end)
    finally:
        stop_all(nodes)


def checkpointed_high_watermark(node, topic, partition):
    """The high watermark of one partition in `node`'s replication-offset-checkpoint (Kafka's
    format: version, count, then `topic partition offset` lines), or None."""
    path = node.data_dir / "replication-offset-checkpoint"
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    assert lines[0] == "0" and int(lines[1]) == len(lines) - 2, lines
    for line in lines[2:]:
        t, p, offset = line.rsplit(" ", 2)
        if (t, int(p)) == (topic, partition):
            return int(offset)
    return None


def test_every_broker_checkpoints_the_high_watermarks_it_holds(tmp_path):
    """RF=3: every broker writes the high watermark of each replica it holds to
    replication-offset-checkpoint in Kafka's format, every
    replica.high.watermark.checkpoint.interval.ms, leader and followers alike. After kill -9 of
    all three and a restart the checkpoint is read (a restarted replica starts its high
    watermark there; the partition layer's unit tests prove what it changes) and every
    acknowledged record is read back."""
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids, extra=[
        "--set", "replica.high.watermark.checkpoint.interval.ms=200"])
    topic, count = "checkpointed", 200
    try:
        start_all(nodes, ids)
        a = admin(nodes[1])
        a.create_topics([NewTopic(topic, num_partitions=1,
                                  replica_assignment=[[1, 2, 3]])])[topic].result(WAIT_S)
        wait_for("the topic's leader", lambda: leaders(nodes[1], topic))
        p = Producer({"bootstrap.servers": nodes[1].bootstrap, "acks": "all"})
        for i in range(count):
            p.produce(topic, value=f"v{i}".encode(), partition=0)
            p.poll(0)
        assert p.flush(WAIT_S) == 0
        wait_for("every broker to checkpoint the high watermark", lambda: all(
            checkpointed_high_watermark(nodes[i], topic, 0) == count for i in ids))
        for i in ids:
            nodes[i].kill()
        start_all(nodes, ids)
        wait_for("the topic's leader", lambda: leaders(nodes[2], topic))
        c = Consumer({"bootstrap.servers": nodes[2].bootstrap, "group.id": "checkpointed",
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, 0)])
        read = []
        deadline = time.monotonic() + WAIT_S
        while len(read) < count:
            assert time.monotonic() < deadline, f"read {len(read)} of {count}"
            m = c.poll(0.5)
            if m is not None and not m.error():
                read.append(m.value())
        c.close()
        assert read == [f"v{i}".encode() for i in range(count)]
    finally:
        stop_all(nodes)


TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"


def describe_partition(node, topic):
    """Partition 0's line of Kafka's `kafka-topics.sh --describe` (DescribeTopicPartitions)
    through `node`: {field: value}."""
    run = run_jvm(node, classpath("tools-4.4.0", classes=False), TOPIC_COMMAND,
                  "--bootstrap-server", node.bootstrap, "--describe", "--topic", topic)
    assert run.returncode == 0, run.explain()
    line = next(x for x in run.lines if "Partition: 0" in x)
    fields = {}
    for part in line.strip().split("\t"):
        key, _, value = part.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def test_an_eligible_leader_replica_takes_over_from_the_last_in_sync_replica(
        tmp_path, java_installed):  # noqa: F811 (a fixture)
    """KIP-966, RF=3 and min.insync.replicas=2, on brokers 4, 5 and 6 (broker-only nodes
    beside the three that hold the metadata quorum, which stays up). Broker 6 dies: the ISR
    shrinks to {4, 5}, still the minimum. Broker 5 dies: the ISR is {4}, below the minimum,
    so 5 (which held every committed record when it left) becomes an eligible leader
    replica, as Kafka's `kafka-topics.sh --describe` shows (Elr: 5), and leader 4's high
    watermark stands still: records it acknowledges with acks=1 from then on are not
    readable. Broker 4, the last in-sync replica, dies too; broker 5 returns and is elected
    cleanly, alone, where without KIP-966 the partition would wait for broker 4. Through
    broker 5 (its high watermark restored from its checkpoint) a consumer reads exactly the
    records acknowledged with acks=all, and nothing of the acks=1 tail that was never
    committed. Brokers 4 and 6 return, truncate what the new
    leader does not hold, and every replica ends with the same log."""
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids, extra=["--set", "replica.lag.time.max.ms=2000",
                                                "--set", "auto.leader.rebalance.enable=false"])
    topic = "eligible"
    try:
        start_all(nodes, ids)
        for b in (4, 5, 6):
            add_broker(nodes, tmp_path, b,
                       ["--set", "replica.high.watermark.checkpoint.interval.ms=200"])
        a = admin(nodes[1])
        a.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[4, 5, 6]],
                                  config={"min.insync.replicas": "2"})])[topic].result(WAIT_S)
        wait_for("broker 4 to lead", lambda: (leaders(nodes[1], topic) or {}).get(
            0, (-1,))[0] == 4)

        def produce(acks, values):
            p = Producer({"bootstrap.servers": nodes[4].bootstrap, "acks": acks,
                          "linger.ms": 5})
            for v in values:
                p.produce(topic, value=v, partition=0)
            assert p.flush(WAIT_S) == 0
        committed = [f"all-{i}".encode() for i in range(100)]
        produce("all", committed)
        nodes[6].kill()
        wait_for("the ISR to shrink to {4, 5}", lambda: sorted(
            isrs(nodes[1], topic).get(0, ())) == [4, 5])
        assert describe_partition(nodes[1], topic).get("Elr", "") == "", "at the minimum"
        # Broker 5 returns knowing what was committed (its checkpointed high watermark):
        # alone in the ISR, below the minimum, its high watermark cannot move.
        wait_for("broker 5 to checkpoint the high watermark", lambda: (
            checkpointed_high_watermark(nodes[5], topic, 0) == len(committed)))
        nodes[5].kill()
        wait_for("the ISR to shrink to {4}", lambda: isrs(nodes[1], topic).get(0) == (4,))
        described = describe_partition(nodes[1], topic)
        assert (described["Isr"], described["Elr"]) == ("4", "5"), described
        produce("1", [f"one-{i}".encode() for i in range(20)])
        c = Consumer({"bootstrap.servers": nodes[1].bootstrap, "group.id": "eligible"})
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=WAIT_S)
        c.close()
        assert (low, high) == (0, len(committed)), "the high watermark stands still"
        nodes[4].kill()
        nodes[5].start()
        wait_for("broker 5, eligible, to be elected", lambda: (
            leaders(nodes[1], topic) or {}).get(0, (-1,))[0] == 5)
        described = describe_partition(nodes[2], topic)
        assert (described["Isr"], described["Elr"]) == ("5", "4"), described
        c = Consumer({"bootstrap.servers": nodes[1].bootstrap, "group.id": "eligible",
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, 0)])
        read = []
        deadline = time.monotonic() + WAIT_S
        while len(read) < len(committed):
            assert time.monotonic() < deadline, f"read {len(read)} of {len(committed)}"
            m = c.poll(0.5)
            if m is not None and not m.error():
                read.append(m.value())
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=WAIT_S)
        c.close()
        assert read == committed and high == len(committed), (read[-3:], high)
        nodes[4].start()
        nodes[6].start()
        wait_for("every replica back in the ISR", lambda: len(
            isrs(nodes[1], topic).get(0, ())) == 3, timeout=60)
        assert wait_for("the same log on every replica", converged(
            [nodes[b] for b in (4, 5, 6)], topic, 1), timeout=60)
    finally:
        stop_all(nodes)
