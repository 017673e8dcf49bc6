"""Harness for driving the real `sluice` binary with real Kafka clients.

Every test gets a fresh data directory and a broker on a free loopback port. The broker is
stopped (SIGTERM, then SIGKILL if it hangs) when the test ends, whatever happened.
"""

import collections
import os
import pathlib
import re
import signal
import subprocess
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("SLUICE_BIN", str(ROOT / "target" / "debug" / "sluice"))
LISTENING = re.compile(rb"listening on [0-9.]+:(\d+)")
# Logged before LISTENING: the admin HTTP listener binds before the logs are recovered.
ADMIN_LISTENING = re.compile(rb"admin listening on http://[0-9.]+:(\d+)")
# What a dedicated controller (process.roles=controller, no Kafka listener) logs instead.
CONTROLLER_READY = re.compile(rb"dedicated controller .* controller ready")
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


class Broker:
    """One sluice process at a time over one data directory."""

    def __init__(self, data_dir, log_path, extra_args=(), preexec_fn=None, host="127.0.0.1",
                 wrapper=()):
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_args = list(extra_args)
        # Run in the child before exec (to set resource limits, say).
        self.preexec_fn = preexec_fn
        # The address it listens on, and a command prefix to run it with (a network
        # namespace of its own, say).
        self.host = host
        self.wrapper = list(wrapper)
        self.proc = None
        self.port = 0
        self.admin_port = 0
        self._reader = None

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"

    @property
    def log_paths(self):
        """Where its output goes (a Cluster has one per node)."""
        return [self.log_path]

    @property
    def admin_url(self):
        """Base URL of the admin HTTP listener (metrics, JSON API, console)."""
        return f"http://{self.host}:{self.admin_port}"

    def start(self):
        assert self.proc is None, "broker already running"
        if not os.path.exists(BIN):
            pytest.fail(f"{BIN} does not exist: build it with `cargo build -p sluice` first")
        # After the first start, reuse the ports so clients keep their addresses.
        args = [*self.wrapper, BIN, "serve", "--data-dir", str(self.data_dir),
                "--listen", f"{self.host}:{self.port}",
                "--admin-listen", f"{self.host}:{self.admin_port}", *self.extra_args]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=self.preexec_fn)
        ready = threading.Event()
        found = {}

        def pump(stream, log):
            with open(log, "ab") as out:
                for line in stream:
                    out.write(line)
                    out.flush()
                    a = ADMIN_LISTENING.search(line)
                    if a:
                        found["admin_port"] = int(a.group(1))
                        continue
                    m = LISTENING.search(line)
                    if m and not ready.is_set():
                        found["port"] = int(m.group(1))
                        ready.set()
                    if CONTROLLER_READY.search(line) and not ready.is_set():
                        found["port"] = 0
                        ready.set()
            ready.set()  # the process ended: unblock the waiter either way

        self._reader = threading.Thread(target=pump, args=(self.proc.stdout, self.log_path),
                                        daemon=True)
        self._reader.start()
        if not ready.wait(START_TIMEOUT_S) or "port" not in found:
            self.kill()
            pytest.fail(f"broker did not start; log:\n{self.log_text()}")
        self.port = found["port"]
        self.admin_port = found.get("admin_port", 0)

    def _reap(self):
        # The reader ends when the process's output closes, which its exit guarantees.
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT_S)
        self.proc = None
        self._reader = None

    def stop(self):
        """Clean shutdown; asserts the broker exited 0."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("broker did not stop within the timeout after SIGTERM")
        self._reap()
        assert code == 0, f"broker exited {code}; log:\n{self.log_text()}"

    def kill(self):
        """kill -9: no flush, no checkpoint."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_S)
        self._reap()

    def restart(self):
        self.stop()
        self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            return pathlib.Path(self.log_path).read_text(errors="replace")[-5000:]
        except OSError:
            return "(no log)"


def make_broker(tmp_path, extra_args=()):
    return Broker(tmp_path / "data", tmp_path / "broker.log", extra_args)


def running_broker(tmp_path, extra_args=()):
    """Fixture body: a started broker, stopped cleanly (and killed if that fails) after the
    test, whatever happened."""
    b = make_broker(tmp_path, extra_args)
    b.start()
    yield b
    try:
        b.stop()
    finally:
        b.kill()


@pytest.fixture
def broker(tmp_path):
    yield from running_broker(tmp_path)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Three `sluice` processes on 127.0.0.1 as one cluster (voters of one metadata quorum,
    `default.replication.factor=3`), standing in for a Broker in client tests: `bootstrap`
    names all three, `restart()` restarts each node in turn (a rolling restart)."""

    def __init__(self, tmp_path, extra_args=()):
        ids = [1, 2, 3]
        ports = {i: _free_port() for i in ids}
        # Fixed Kafka ports too, so that clients find the nodes again after a restart.
        kafka = {i: _free_port() for i in ids}
        voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in ports.items())
        self.nodes = [
            Broker(tmp_path / f"node{i}", tmp_path / f"node{i}.log",
                   ["--node-id", str(i), "--set", f"controller.quorum.voters={voters}",
                    "--set", f"listeners=PLAINTEXT://127.0.0.1:{kafka[i]},"
                             f"CONTROLLER://127.0.0.1:{ports[i]}",
                    "--set", "default.replication.factor=3",
                    "--set", "broker.session.timeout.ms=2000",
                    "--set", "broker.heartbeat.interval.ms=200",
                    "--set", "controller.quorum.election.timeout.ms=300", *extra_args])
            for i in ids]

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def log_paths(self):
        return [n.log_path for n in self.nodes]

    def log_text(self):
        """The tail of every node's log, for failure messages."""
        return "\n".join(f"--- node {i}\n{n.log_text()}"
                         for i, n in enumerate(self.nodes, start=1))

    def _serving(self):
        """Whether every node's broker is registered and unfenced in every node's view."""
        import json
        import urllib.request
        for n in self.nodes:
            try:
                body = urllib.request.urlopen(n.admin_url + "/api/v1/cluster", timeout=5).read()
            except OSError:
                return False
            m = json.loads(body)["membership"]
            live = {b["broker_id"] for b in m["brokers"] if not b["fenced"]}
            if live != {1, 2, 3}:
                return False
        return True

    def wait_serving(self):
        import time
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._serving():
            assert time.monotonic() < deadline, "the cluster's brokers were not all unfenced"
            time.sleep(0.05)

    def start(self):
        for n in self.nodes:
            n.start()
        self.wait_serving()

    def restart(self):
        for n in self.nodes:
            n.stop()
            n.start()
            self.wait_serving()

    def stop(self):
        for n in reversed(self.nodes):
            try:
                n.stop()
            finally:
                n.kill()


def running_cluster(tmp_path, extra_args=()):
    """Fixture body: a started three-node cluster, stopped after the test."""
    c = Cluster(tmp_path, extra_args)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(params=["one node", "three nodes"])
def any_broker(request, tmp_path):
    """A single broker, then a three-node cluster: the client round trips run against both."""
    if request.param == "one node":
        yield from running_broker(tmp_path)
    else:
        yield from running_cluster(tmp_path)


# -- what every client test checks --------------------------------------------------------

Msg = collections.namedtuple("Msg", "partition offset key value headers timestamp")


def expected_messages(codec, n):
    """Keyed messages whose values carry the codec and a sequence number."""
    return [(f"key-{i % 97}".encode(), f"{codec}-{i:06d}-{'v' * (i % 50)}".encode())
            for i in range(n)]


def check_round_trip(consumed, produced_by_codec, partitions, headers_of=None, timestamp_of=None):
    """Asserts that `consumed` holds exactly the produced messages, each once, with per-partition
    offsets dense from 0, every partition's messages in production order, one partition per
    key, and headers/timestamps as produced."""
    total = sum(len(m) for m in produced_by_codec.values())
    assert len(consumed) == total, f"consumed {len(consumed)} of {total}"
    by_partition = collections.defaultdict(list)
    for m in consumed:
        by_partition[m.partition].append(m)
    assert set(by_partition) <= set(range(partitions))
    assert len(by_partition) > 1, "keyed messages should spread over partitions"
    key_partition = {}
    for p, msgs in by_partition.items():
        msgs.sort(key=lambda m: m.offset)
        assert [m.offset for m in msgs] == list(range(len(msgs))), f"partition {p} offsets"
        last_seq = {}
        for m in msgs:
            assert key_partition.setdefault(m.key, p) == p, f"key {m.key} in two partitions"
            codec, seq, _ = m.value.decode().split("-", 2)
            seq = int(seq)
            assert seq > last_seq.get(codec, -1), f"partition {p} out of order at {m}"
            last_seq[codec] = seq
    produced = {(k, v) for msgs in produced_by_codec.values() for k, v in msgs}
    got = [(m.key, m.value) for m in consumed]
    assert len(set(got)) == len(got), "a message was delivered twice"
    assert set(got) == produced
    for m in consumed:
        codec, seq, _ = m.value.decode().split("-", 2)
        if headers_of is not None:
            assert m.headers == headers_of(codec, int(seq)), f"headers of {m}"
        if timestamp_of is not None:
            lo, hi = timestamp_of(codec, int(seq))
            assert lo <= m.timestamp <= hi, f"timestamp of {m} not in [{lo}, {hi}]"


def first_offset_at_or_after(consumed, partition, timestamp):
    """The offset ListOffsets must return for `timestamp`, computed from what was consumed."""
    candidates = [m.offset for m in consumed if m.partition == partition and m.timestamp >= timestamp]
    return min(candidates) if candidates else -1


# -- flexible-version wire helpers ----------------------------------------------------------

def uvarint(n):
    """Kafka's unsigned varint."""
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def compact_str(b):
    """A compact (flexible-version) string of bytes."""
    return uvarint(len(b) + 1) + b


def sluice_cli(broker, *args, ok=True, timeout=60):
    """Runs `sluice ARGS --bootstrap <broker>`; asserts on the exit status; returns the
    output (stdout, then stderr)."""
    out = subprocess.run([BIN, *args, "--bootstrap", broker.bootstrap],
                         capture_output=True, text=True, timeout=timeout)
    assert (out.returncode == 0) == ok, out.stderr + out.stdout
    return out.stdout + out.stderr


def log_sizes(broker):
    """{path: size} of the output of `broker` (each node of a Cluster): where to read from
    for what a run causes."""
    sizes = {}
    for path in broker.log_paths:
        try:
            sizes[path] = os.path.getsize(path)
        except OSError:
            sizes[path] = 0
    return sizes


def log_since(sizes):
    """What the logs measured by `log_sizes` gained since, every node's in turn."""
    text = []
    for path, start in sizes.items():
        try:
            with open(path, "rb") as f:
                f.seek(start)
                text.append(f.read().decode(errors="replace"))
        except OSError:
            pass
    return "".join(text)
