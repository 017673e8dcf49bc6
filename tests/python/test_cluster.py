"""The metadata quorum and brokers' membership, through real `sluice` processes.

Properties proven here:
- A node started with no configuration is a cluster of one: the only voter of its metadata
  quorum, its leader, and a registered, unfenced broker; a restart, clean or after kill -9,
  registers the new process with a higher broker epoch at once (no wait for the old
  process's session to expire).
- Three nodes started with Kafka's config names (`node.id`, `controller.quorum.voters`,
  `listeners` with a CONTROLLER listener) elect one leader and register and unfence all
  three brokers; when the leader is killed (-9) the other two elect a new leader in a
  higher term and fence the dead broker once `broker.session.timeout.ms` has passed; the
  dead node, restarted after the leader's log has been purged past its own end, catches up
  by installing a snapshot and is unfenced with a new, higher epoch; all nodes end with the
  same image.
- Dedicated controllers (`process.roles=controller`) and broker-only nodes
  (`process.roles=broker`): only brokers register; brokers follow the metadata log as
  learners, find a new quorum leader after a kill -9 and stay unfenced; a killed broker is
  fenced in the other broker's image.
- SIGSTOP of the quorum's leader: a new leader in a higher term fences the paused node's
  broker; after SIGCONT the old leader follows the new term and its broker is unfenced. A
  history of every node's answers, polled throughout, has no two leaders in one term and no
  term or broker epoch going back on any node (the checker is tested to find each anomaly).
- Kafka's `kafka-metadata-quorum.sh` and `sluice cluster` describe the quorum through any
  broker, and the metrics agree with the admin API.
- Configurations Kafka refuses are refused at start-up with a message naming the setting.

Waiting is polling the admin API with a deadline, never a fixed sleep.
"""

import json
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BIN, Broker, sluice_cli
from test_java_clients import classpath, java_installed, run_jvm  # noqa: F401 (a fixture)

DEADLINE_S = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def membership(broker):
    with urllib.request.urlopen(f"{broker.admin_url}/api/v1/cluster", timeout=10) as r:
        return json.load(r)["membership"]


def wait_for(what, check, timeout=DEADLINE_S):
    """Polls `check` (returning a true value when done) until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as e:  # the admin listener is not up yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


def scrape(broker):
    """The node's /metrics as {name{labels}: value} for the sluice_ samples."""
    with urllib.request.urlopen(f"{broker.admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("sluice_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def registered(m, broker_id):
    return next((b for b in m["brokers"] if b["broker_id"] == broker_id), None)


def test_one_node_is_a_cluster_of_one_and_restarts_register_at_once(tmp_path):
    b = Broker(tmp_path / "data", tmp_path / "broker.log")
    b.start()
    try:
        def unfenced():
            m = membership(b)
            me = registered(m, 0)
            if m["quorum"]["leader"] == 0 and me and not me["fenced"] \
                    and not m["broker"]["fenced"]:
                return m
        m = wait_for("the single node to lead and be unfenced", unfenced)
        assert m["quorum"]["voters"] == [0]
        assert m["quorum"]["state"] == "Leader"
        assert m["controller_listener"] is None
        assert m["configured_voters"] == {}
        assert (tmp_path / "data" / "__cluster_metadata-0" / "quorum.log").exists()
        epochs = [m["broker"]["broker_epoch"]]
        for how in ("clean", "kill -9"):
            if how == "clean":
                b.stop()
            else:
                b.kill()
            started = time.monotonic()
            b.start()
            m = wait_for(f"registration after a {how} restart",
                         lambda: (lambda m: m if m["broker"]["broker_epoch"] is not None
                                  and not m["broker"]["fenced"] else None)(membership(b)))
            # The old process's session (9 s by default) is not waited out: the new
            # controller has never heard from it.
            assert time.monotonic() - started < 9, f"registration took too long after {how}"
            assert m["broker"]["broker_epoch"] > epochs[-1], (how, m, epochs)
            epochs.append(m["broker"]["broker_epoch"])
            # One registration: the replaced one is gone from the image.
            assert [x["broker_id"] for x in m["brokers"]] == [0]
    finally:
        b.stop()
        b.kill()


def start_cluster(tmp_path, ids, extra=()):
    controller_ports = {i: free_port() for i in ids}
    voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in controller_ports.items())
    nodes = {}
    for i in ids:
        args = ["--node-id", str(i),
                "--set", f"controller.quorum.voters={voters}",
                "--set", f"listeners=PLAINTEXT://127.0.0.1:0,"
                         f"CONTROLLER://127.0.0.1:{controller_ports[i]}",
                "--set", "broker.session.timeout.ms=2000",
                "--set", "broker.heartbeat.interval.ms=200",
                "--set", "controller.quorum.election.timeout.ms=300",
                *extra]
        nodes[i] = Broker(tmp_path / f"node{i}", tmp_path / f"node{i}.log", args)
    return nodes


def start_all(nodes, ids):
    """Starts every node, then waits for one leader and every broker unfenced; returns the
    leader and every node's view."""
    for n in nodes.values():
        n.start()
    return wait_for("one leader and every broker unfenced", lambda: agreed_leader(nodes, ids))


def stop_all(nodes):
    """Stops every node cleanly (asserting exit 0), killing any that does not stop; the last
    started first, so that brokers find their controllers for a controlled shutdown."""
    for n in reversed(list(nodes.values())):
        try:
            n.stop()
        finally:
            n.kill()


def agreed_leader(nodes, alive):
    """The leader every live node names, once they agree and it sees every live broker
    unfenced; else None."""
    views = {i: membership(nodes[i]) for i in alive}
    leaders = {m["quorum"]["leader"] for m in views.values()}
    if len(leaders) != 1 or None in leaders:
        return None
    leader = leaders.pop()
    if leader not in alive:
        return None
    for m in views.values():
        for i in alive:
            b = registered(m, i)
            if b is None or b["fenced"] or m["broker"]["fenced"]:
                return None
    return leader, views


def agreed_and(nodes, alive, condition):
    """A check for `wait_for`: the live nodes agree on a leader and `condition(leader, views)`
    holds."""
    def check():
        found = agreed_leader(nodes, alive)
        return found if found and condition(*found) else None
    return check


def test_three_voters_fail_over_fence_the_dead_and_catch_up_from_a_snapshot(tmp_path):
    ids = [1, 2, 3]
    # A snapshot after every entry, the log before it purged: a node that misses anything
    # must install a snapshot to catch up.
    nodes = start_cluster(tmp_path, ids, ["--set", "metadata.log.snapshot.interval.entries=1"])
    try:
        leader, views = start_all(nodes, ids)
        assert sorted(views[leader]["quorum"]["voters"]) == ids
        assert views[leader]["controller_listener"] is not None
        # The metrics say the same: one active controller, three active brokers.
        for i in ids:
            metrics = scrape(nodes[i])
            assert metrics["sluice_metadata_quorum_leader"] == leader, (i, metrics)
            assert metrics["sluice_controller_active"] == (1 if i == leader else 0), i
            assert metrics['sluice_cluster_brokers{state="active"}'] == 3, (i, metrics)
            assert metrics["sluice_broker_fenced"] == 0, i
        term = views[leader]["quorum"]["term"]
        old_epoch = registered(views[leader], leader)["broker_epoch"]
        dead_end = views[leader]["quorum"]["last_log_index"]

        nodes[leader].kill()
        alive = [i for i in ids if i != leader]
        started = time.monotonic()

        def fenced_the_dead(new, views):
            m = views[new]
            return m["quorum"]["term"] > term and registered(m, leader)["fenced"] \
                and m["quorum"]["purged"] is not None and m["quorum"]["purged"] > dead_end
        new, views = wait_for("a new leader that fenced the dead broker",
                              agreed_and(nodes, alive, fenced_the_dead))
        assert new != leader
        metrics = scrape(nodes[new])
        assert metrics['sluice_cluster_brokers{state="fenced"}'] == 1, metrics
        assert metrics["sluice_metadata_quorum_term"] > term, metrics
        # Fencing waits for the session timeout (2 s), counted from the new controller's start.
        assert time.monotonic() - started >= 2.0 - 0.5

        nodes[leader].start()

        def caught_up(_, views):
            applied = {views[i]["quorum"]["last_applied"] for i in ids}
            return views[leader]["quorum"]["snapshots_installed"] >= 1 and len(applied) == 1
        _, views = wait_for("the restarted node to catch up from a snapshot",
                            agreed_and(nodes, ids, caught_up))
        back = registered(views[leader], leader)
        assert back["broker_epoch"] > old_epoch
        assert scrape(nodes[leader])['sluice_metadata_snapshots_total{origin="installed"}'] >= 1
        # Every node replayed the same image.
        images = {json.dumps(sorted(views[i]["brokers"], key=lambda b: b["broker_id"]),
                             sort_keys=True) for i in ids}
        assert len(images) == 1, images
    finally:
        stop_all(nodes)


@pytest.mark.parametrize("args, message", [
    (["--node-id", "5", "--set", "controller.quorum.voters=1@127.0.0.1:1"], "not in"),
    (["--set", "process.roles=broker"], "process.roles=broker needs"),
    (["--node-id", "4", "--set", "process.roles=broker", "--set",
      "controller.quorum.voters=1@127.0.0.1:1"], "controller listener"),
    (["--set", "process.roles=broker,leader"], "unknown role"),
    (["--set", "controller.quorum.voters=1@127.0.0.1"], "controller.quorum.voters"),
    (["--set", "listeners=PLAINTEXT://127.0.0.1:0,EXTERNAL://127.0.0.1:0"], "listeners"),
])
def test_settings_kafka_refuses_are_refused_at_start(tmp_path, args, message):
    run = subprocess.run([BIN, "serve", "--data-dir", str(tmp_path / "d"), "--listen",
                          "127.0.0.1:0", "--admin-listen", "off", *args],
                         capture_output=True, timeout=60)
    assert run.returncode != 0
    assert message in (run.stdout + run.stderr).decode(errors="replace")


def test_a_data_directory_belongs_to_the_node_id_that_joined_with_it(tmp_path):
    """Once a node has joined its cluster, its data directory names its node.id (as Kafka's
    meta.properties does): started again under another node.id it refuses to start, saying
    which id it belongs to, instead of taking every replica it holds for one placed
    elsewhere and emptying it; under its own id it starts and still holds its records."""
    b = Broker(tmp_path / "data", tmp_path / "broker.log", ["--node-id", "3"])
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("kept", 1, 1)])["kept"].result(30)
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
        p.produce("kept", b"v")
        assert p.flush(30) == 0
        wait_for("the data directory to join its cluster",
                 lambda: (b.data_dir / "metadata-migrated").exists())
    finally:
        b.stop()
    run = subprocess.run([BIN, "serve", "--data-dir", str(b.data_dir), "--listen",
                          "127.0.0.1:0", "--admin-listen", "off", "--node-id", "4"],
                         capture_output=True, timeout=60)
    assert run.returncode != 0
    assert "belongs to node 3" in (run.stdout + run.stderr).decode(errors="replace")
    b.start()
    try:
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "kept-reader"})
        low, high = c.get_watermark_offsets(TopicPartition("kept", 0), timeout=30)
        c.close()
        assert (low, high) == (0, 1)
    finally:
        b.stop()


# -- Kafka's own tool: kafka-metadata-quorum.sh ----------------------------------------------

QUORUM_COMMAND = "org.apache.kafka.tools.MetadataQuorumCommand"


def quorum_tool(broker, *args):
    """Runs `kafka-metadata-quorum.sh --bootstrap-server B describe ARGS` (Kafka's tools
    4.4.0, unchanged); asserts it succeeded."""
    run = run_jvm(broker, classpath("tools-4.4.0", classes=False), QUORUM_COMMAND,
                  "--bootstrap-server", broker.bootstrap, "describe", *args)
    assert run.returncode == 0, run.explain()
    return run


def status_of(run):
    """`describe --status`'s `Name: value` lines."""
    fields = {}
    for line in run.lines:
        name, sep, value = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            fields[name.strip()] = value.strip()
    return fields


def replication_of(run):
    """`describe --replication`'s rows: node id -> (log end offset, status)."""
    rows = {}
    header = None
    for line in run.lines:
        cols = line.split()
        if cols[:1] == ["NodeId"]:
            header = cols
            continue
        if header and cols and cols[0].isdigit():
            rows[int(cols[0])] = (int(cols[header.index("LogEndOffset")]), cols[-1])
    return rows


def test_kafka_metadata_quorum_tool_describes_the_quorum_through_any_broker(
        tmp_path, java_installed):  # noqa: F811 (a fixture)
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids)
    try:
        leader, views = start_all(nodes, ids)
        follower = next(i for i in ids if i != leader)
        # A broker forwards DescribeQuorum to the quorum's leader, as Kafka's do.
        for asked in (follower, leader):
            status = status_of(quorum_tool(nodes[asked], "--status"))
            assert int(status["LeaderId"]) == leader, status
            assert int(status["LeaderEpoch"]) == views[leader]["quorum"]["term"], status
            assert int(status["HighWatermark"]) >= 1, status
            voters = json.loads(status["CurrentVoters"])
            assert sorted(v["id"] for v in voters) == ids, status
        # `sluice cluster` tells the same through any broker.
        ours = json.loads(sluice_cli(nodes[follower], "cluster", "--output", "json"))["quorum"]
        assert ours["quorum_leader_id"] == leader, ours
        assert ours["leader_epoch"] == views[leader]["quorum"]["term"], ours
        assert sorted(v["voter_id"] for v in ours["voters"]) == ids, ours
        assert [v["voter_id"] for v in ours["voters"] if v["status"] == "Leader"] == [leader]
        rows = replication_of(quorum_tool(nodes[follower], "--replication"))
        assert sorted(rows) == ids, rows
        assert [i for i, (_, s) in rows.items() if s == "Leader"] == [leader], rows
        assert all(s == "Follower" for i, (_, s) in rows.items() if i != leader), rows
        # The leader's log end is the furthest.
        assert rows[leader][0] == max(end for end, _ in rows.values()), rows

        term = views[leader]["quorum"]["term"]
        nodes[leader].kill()
        alive = [i for i in ids if i != leader]
        found = wait_for("a new leader", lambda: agreed_leader(nodes, alive))
        status = status_of(quorum_tool(nodes[alive[0]], "--status"))
        assert int(status["LeaderId"]) == found[0] != leader, status
        assert int(status["LeaderEpoch"]) > term, status
    finally:
        stop_all(nodes)


# -- dedicated controllers and broker-only nodes ----------------------------------------------

def test_dedicated_controllers_and_broker_only_nodes_follow_the_quorum(tmp_path):
    """Three `process.roles=controller` voters and two `process.roles=broker` nodes (one
    finding the controllers through `controller.quorum.bootstrap.servers`): only the
    brokers register; the brokers follow the metadata log as learners (Kafka's observers)
    and see the same image; when the quorum's leader is killed (-9) the brokers find the new
    one and stay unfenced; a killed broker is fenced, and the other broker's image shows it."""
    controllers, brokers = [1, 2, 3], [4, 5]
    ports = {i: free_port() for i in controllers + brokers}
    voters = ",".join(f"{i}@127.0.0.1:{ports[i]}" for i in controllers)
    bootstrap = ",".join(f"127.0.0.1:{ports[i]}" for i in controllers)
    nodes = {}
    for i in controllers + brokers:
        role = "controller" if i in controllers else "broker"
        listeners = f"CONTROLLER://127.0.0.1:{ports[i]}" if role == "controller" else \
            f"PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{ports[i]}"
        # Broker 5 names no voters: it finds the controllers through bootstrap servers.
        quorum = f"controller.quorum.bootstrap.servers={bootstrap}" if i == 5 else \
            f"controller.quorum.voters={voters}"
        args = ["--node-id", str(i), "--set", f"process.roles={role}",
                "--set", quorum,
                "--set", f"listeners={listeners}",
                "--set", "broker.session.timeout.ms=2000",
                "--set", "broker.heartbeat.interval.ms=200",
                "--set", "controller.quorum.election.timeout.ms=300"]
        nodes[i] = Broker(tmp_path / f"node{i}", tmp_path / f"node{i}.log", args)
    try:
        for n in nodes.values():
            n.start()
        everyone = controllers + brokers

        def settled(alive_brokers, alive):
            views = {i: membership(nodes[i]) for i in alive}
            leaders = {m["quorum"]["leader"] for m in views.values()}
            applied = {m["quorum"]["last_applied"] for m in views.values()}
            if len(leaders) != 1 or not leaders <= set(controllers) & set(alive) \
                    or len(applied) != 1:
                return None
            for m in views.values():
                registered_ids = sorted(b["broker_id"] for b in m["brokers"])
                if not set(registered_ids) <= set(brokers):
                    pytest.fail(f"a dedicated controller registered as a broker: {m}")
                if any(registered(m, b) is None or registered(m, b)["fenced"]
                       for b in alive_brokers):
                    return None
            return leaders.pop(), views

        leader, views = wait_for("two unfenced brokers following the quorum",
                                 lambda: settled(brokers, everyone))
        for b in brokers:
            assert views[b]["quorum"]["state"] == "Learner", views[b]["quorum"]
            assert sorted(views[b]["quorum"]["voters"]) == controllers
            assert views[b]["broker"]["fenced"] is False
        for c in controllers:
            assert views[c]["broker"]["broker_epoch"] is None  # never registered
        # The quorum as a Kafka client sees it, through a broker-only node.
        ours = json.loads(sluice_cli(nodes[4], "cluster", "--output", "json"))["quorum"]
        assert ours["quorum_leader_id"] == leader
        assert sorted(v["voter_id"] for v in ours["voters"]) == controllers

        nodes[leader].kill()
        alive = [i for i in everyone if i != leader]
        new, _ = wait_for("a new leader the brokers follow, both still unfenced",
                          lambda: settled(brokers, alive))
        assert new != leader

        nodes[5].kill()
        alive.remove(5)
        wait_for("broker 5 fenced, as broker 4's own image shows",
                 lambda: (registered(membership(nodes[4]), 5) or {}).get("fenced"))
    finally:
        stop_all(nodes)


# -- a paused leader, checked over the whole history ----------------------------------------

def observe(nodes, alive, history, timeout=0.5):
    """Polls every live node's membership once, appending (node, term, leader, {broker:
    (epoch, fenced)}) to `history`; a node that does not answer in time is skipped."""
    for i in alive:
        try:
            with urllib.request.urlopen(f"{nodes[i].admin_url}/api/v1/cluster",
                                        timeout=timeout) as r:
                m = json.load(r)["membership"]
        except OSError:
            continue
        history.append((i, m["quorum"]["term"], m["quorum"]["leader"],
                        {b["broker_id"]: (b["broker_epoch"], b["fenced"]) for b in m["brokers"]}))


def check_history(history):
    """Raft's and the controller's safety over what every node said: one leader per term
    (election safety), terms that never go back on a node, broker epochs that never go back
    in a node's image. Returns the anomalies found."""
    anomalies = []
    leader_of_term = {}
    last_term, last_epoch = {}, {}
    for node, term, leader, brokers in history:
        if leader is not None and leader_of_term.setdefault(term, leader) != leader:
            anomalies.append(f"term {term} has leaders {leader_of_term[term]} and {leader}")
        if term < last_term.get(node, term):
            anomalies.append(f"node {node} went back from term {last_term[node]} to {term}")
        last_term[node] = term
        for broker, (epoch, _) in brokers.items():
            if epoch < last_epoch.get((node, broker), epoch):
                anomalies.append(f"node {node} saw broker {broker}'s epoch go back to {epoch}")
            last_epoch[(node, broker)] = epoch
    return anomalies


def moved_on(nodes, polled, majority, history, term, lost):
    """A check for `wait_for` that records the `polled` nodes' answers in `history`: the
    `majority` agree on a leader in a term after `term` that has fenced node `lost`'s broker."""
    def check():
        observe(nodes, polled, history)
        found = agreed_leader(nodes, majority)
        if found and found[1][found[0]]["quorum"]["term"] > term \
                and registered(found[1][found[0]], lost)["fenced"]:
            return found
    return check


def test_check_history_finds_the_anomalies_it_names():
    """The checker can fail: two leaders in a term, a term or an epoch going back."""
    assert check_history([(1, 2, 1, {1: (3, False)}), (2, 2, 1, {1: (3, False)})]) == []
    assert len(check_history([(1, 2, 1, {}), (2, 2, 3, {})])) == 1
    assert len(check_history([(1, 3, 1, {}), (1, 2, 1, {})])) == 1
    assert len(check_history([(1, 3, 1, {4: (5, False)}), (1, 3, 1, {4: (4, False)})])) == 1


def test_a_paused_leader_steps_down_and_its_broker_rejoins(tmp_path):
    """SIGSTOP of the quorum's leader: the other two elect a new leader and fence the paused
    node's broker; on SIGCONT the old leader follows the new term and its broker is unfenced
    again. Every node's answers, polled throughout, are checked for two leaders in a term and
    for terms or broker epochs going back."""
    ids = [1, 2, 3]
    nodes = start_cluster(tmp_path, ids)
    history = []
    try:
        leader, views = start_all(nodes, ids)
        term = views[leader]["quorum"]["term"]
        nodes[leader].proc.send_signal(signal.SIGSTOP)
        alive = [i for i in ids if i != leader]
        try:
            new, _ = wait_for("a new leader that fenced the paused node's broker",
                              moved_on(nodes, alive, alive, history, term, leader))
            assert new != leader
        finally:
            nodes[leader].proc.send_signal(signal.SIGCONT)

        def rejoined():
            observe(nodes, ids, history)
            found = agreed_leader(nodes, ids)
            return found if found and found[1][leader]["quorum"]["term"] > term else None
        _, views = wait_for("the paused node to follow the new term, its broker unfenced",
                            rejoined)
        assert views[leader]["quorum"]["state"] == "Follower", views[leader]["quorum"]
        anomalies = check_history(history)
        assert anomalies == [], anomalies
        assert len(history) > 10, "too few observations to check"
    finally:
        stop_all(nodes)


# -- a leader cut off from the majority -------------------------------------------------------

def test_a_leader_cut_off_from_the_majority_stops_acknowledging_and_rejoins(tmp_path):
    """Every node reaches every other through its own proxy (its own
    controller.quorum.voters, as in Kafka each node has its own). The quorum's leader is cut
    off both ways: its controller stops acknowledging (its own broker's heartbeats fail),
    the majority elects a new leader in a higher term and fences the cut-off node's broker;
    healed, the old leader follows the new term, its broker is unfenced, and all three hold
    the same image. Every node's answers, polled throughout, pass the history check."""
    from netfault import Mesh
    ids = [1, 2, 3]
    listen = {i: free_port() for i in ids}
    mesh = Mesh(listen)
    nodes = {}
    for i in ids:
        voters = ",".join(f"{j}@127.0.0.1:{listen[j] if j == i else mesh.port(i, j)}"
                          for j in ids)
        args = ["--node-id", str(i), "--set", f"controller.quorum.voters={voters}",
                "--set", f"listeners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{listen[i]}",
                "--set", "broker.session.timeout.ms=2000",
                "--set", "broker.heartbeat.interval.ms=200",
                "--set", "controller.quorum.election.timeout.ms=300"]
        nodes[i] = Broker(tmp_path / f"node{i}", tmp_path / f"node{i}.log", args)
    history = []
    try:
        leader, views = start_all(nodes, ids)
        term = views[leader]["quorum"]["term"]
        mesh.isolate(leader)
        majority = [i for i in ids if i != leader]

        new, _ = wait_for("the majority to elect a leader and fence the cut-off broker",
                          moved_on(nodes, ids, majority, history, term, leader))
        assert new != leader
        fenced_seen_ms = time.time() * 1000
        # The cut-off node acknowledges nothing: its own broker's requests fail, and no
        # acknowledgement it ever received is later than the majority's fencing of it.
        def failing():
            observe(nodes, ids, history)
            broker = membership(nodes[leader])["broker"]
            return broker if broker["last_error"] else None
        cut_off = wait_for("the cut-off node's broker to see its requests fail", failing)
        assert cut_off["last_ack_ms"] is not None and cut_off["last_ack_ms"] <= fenced_seen_ms, \
            (cut_off, fenced_seen_ms)

        mesh.isolate(leader, cut=False)

        def healed():
            observe(nodes, ids, history)
            found = agreed_leader(nodes, ids)
            if not found:
                return None
            applied = {found[1][i]["quorum"]["last_applied"] for i in ids}
            if found[1][leader]["quorum"]["term"] > term and len(applied) == 1:
                return found
        _, views = wait_for("the cut-off node to rejoin, its broker unfenced", healed)
        assert views[leader]["broker"]["last_ack_ms"] > fenced_seen_ms, "acks did not resume"
        images = {json.dumps(sorted(views[i]["brokers"], key=lambda b: b["broker_id"]),
                             sort_keys=True) for i in ids}
        assert len(images) == 1, images
        anomalies = check_history(history)
        assert anomalies == [], anomalies
        assert len(history) > 10, "too few observations to check"
    finally:
        stop_all(nodes)
        mesh.close()
