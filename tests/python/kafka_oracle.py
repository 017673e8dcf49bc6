"""Apache Kafka 4.4.0 itself, one node in KRaft combined mode (broker and controller in one
JVM), on free loopback ports: the oracle the differential test compares Sluice with.

The jars come from Maven Central through tests/java/install.sh (cached in
tests/java/.cache/kafka-server-4.4.0/lib, quick when already there). Each start formats a fresh
storage directory with `kafka.tools.StorageTool format`, starts `kafka.Kafka`, and waits until
the PLAINTEXT listener answers ApiVersions and Metadata lists this node (never a fixed sleep).
Stopping sends SIGTERM, then SIGKILL; the JVM also gets SIGKILL if the Python process that
started it dies first (PR_SET_PDEATHSIG), and an atexit hook kills any still running, so no
Kafka JVM outlives the test session.
"""

import atexit
import base64
import ctypes
import pathlib
import signal
import socket
import struct
import subprocess
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
JAVA_DIR = ROOT / "tests" / "java"
LIB = JAVA_DIR / ".cache" / "kafka-server-4.4.0" / "lib"
# Small heap, C1 only, serial GC: the broker lives for a minute and handles a few requests.
JVM_FLAGS = ["-Xms256m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
             "-XX:-UsePerfData", "-Xshare:auto", "-Djava.awt.headless=true"]
# What kafka-server-start.sh gives a broker (1 GiB heap, G1, full JIT): for benchmarks.
BENCH_JVM_FLAGS = ["-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                   "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
                   "-Djava.awt.headless=true"]
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${sys:kafka.root.level:-WARN}
rootLogger.appenderRef.stdout.ref = STDOUT
"""

_running = set()


def _kill_leftovers():
    for proc in list(_running):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _running.discard(proc)


atexit.register(_kill_leftovers)


def _die_with_parent():
    """Run in the child before exec: SIGKILL when the process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install():
    """Fetches the Kafka jars if they are not cached yet (seconds when they are)."""
    out = subprocess.run([str(JAVA_DIR / "install.sh")], capture_output=True, text=True,
                         timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(f"tests/java/install.sh failed:\n{out.stdout}\n{out.stderr}")
    if not LIB.is_dir():
        raise RuntimeError(f"{LIB} is missing after tests/java/install.sh")


def _recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def _request(s, api_key, version, body, corr):
    header = struct.pack(">hhih", api_key, version, corr, 6) + b"oracle"
    payload = header + body
    s.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(s, 4))
    resp = _recv_exact(s, size)
    assert struct.unpack(">i", resp[:4])[0] == corr
    return resp[4:]


def _ready(port, node_id):
    """True once the listener answers ApiVersions v0 with no error and Metadata v1 lists this
    node as a broker and as the controller."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(5)
            body = _request(s, 18, 0, b"", 1)
            if struct.unpack(">h", body[:2])[0] != 0:
                return False
            # Metadata v1, topics = [] (no topics): brokers, then controller id.
            body = _request(s, 3, 1, struct.pack(">i", 0), 2)
            (n,) = struct.unpack(">i", body[:4])
            pos, ids = 4, []
            for _ in range(n):
                (nid,) = struct.unpack(">i", body[pos:pos + 4])
                ids.append(nid)
                pos += 4
                (hl,) = struct.unpack(">h", body[pos:pos + 2])
                pos += 2 + hl + 4
                (rl,) = struct.unpack(">h", body[pos:pos + 2])
                pos += 2 + max(rl, 0)
            (controller,) = struct.unpack(">i", body[pos:pos + 4])
            return node_id in ids and controller == node_id
    except (OSError, ConnectionError, struct.error):
        return False


class KafkaOracle:
    """One Apache Kafka 4.4.0 process over a fresh storage directory under `workdir`."""

    def __init__(self, workdir, overrides=None, node_id=1, jvm_flags=None):
        self.workdir = pathlib.Path(workdir)
        self.jvm_flags = list(jvm_flags or JVM_FLAGS)
        self.fixed_port = 0  # 0: a free port at each start
        self.overrides = dict(overrides or {})
        self.node_id = node_id
        self.proc = None
        self.port = 0
        self.controller_port = 0
        self.log_path = self.workdir / "kafka.log"
        self.start_seconds = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def _java(self, *args):
        return ["java", *self.jvm_flags,
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
                "-cp", str(LIB / "*"), *args]

    def _write_config(self):
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": f"{self.node_id}@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        props.update(self.overrides)
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(LOG4J2)
        return path

    def start(self, attempts=3):
        assert self.proc is None, "kafka already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        last = None
        for _ in range(attempts):
            try:
                self._start_once()
                return self
            except _PortTaken as e:  # another process took a port we picked: pick again
                last = e
        raise RuntimeError(f"kafka did not start: {last}")

    def _start_once(self):
        t0 = time.monotonic()
        self.port = self.fixed_port or free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        data = self.workdir / "data"
        if data.exists():
            subprocess.run(["rm", "-rf", str(data)], check=True)
        config = self._write_config()
        # Kafka's Uuid: 16 random bytes in URL-safe base64 without padding. Like Kafka's own
        # Uuid.randomUuid, never one starting with '-': the tool's argument parser would read
        # it as an option (one start in 64 failed with "expected one argument").
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        fmt = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                                        "-c", str(config)),
                             capture_output=True, text=True, timeout=120,
                             preexec_fn=_die_with_parent)
        if fmt.returncode != 0:
            raise RuntimeError(f"StorageTool format failed:\n{fmt.stdout}\n{fmt.stderr}")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self._java("kafka.Kafka", str(config)),
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)
        finally:
            log.close()
        _running.add(self.proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log_text()
                self._reap()
                if "Address already in use" in text:
                    raise _PortTaken(text[-2000:])
                raise RuntimeError(f"kafka exited during start; log:\n{text}")
            if _ready(self.port, self.node_id):
                self.start_seconds = time.monotonic() - t0
                return
            time.sleep(0.1)  # polling interval, not a wait for readiness
        self.kill()
        raise RuntimeError(f"kafka not ready after {START_TIMEOUT_S} s; log:\n{self.log_text()}")

    def _reap(self):
        if self.proc is not None:
            _running.discard(self.proc)
        self.proc = None

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reap()

    def kill(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reap()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return "(no log)"


class _PortTaken(Exception):
    pass


def running_kafka(workdir, overrides=None):
    """Fixture body: a started Kafka, stopped (SIGTERM, then SIGKILL) after, whatever
    happened."""
    install()
    k = KafkaOracle(workdir, overrides)
    try:
        k.start()
        yield k
    finally:
        k.stop()


def main():
    """`python kafka_oracle.py [--port N] [--data DIR] [--set KEY=VALUE]...`: runs Apache
    Kafka 4.4.0 with kafka-server-start.sh's JVM settings until SIGINT or SIGTERM, for
    `sluice-bench --bootstrap` (README, "Benchmarks"). Prints the bootstrap address."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--data", help="work directory (default: a new temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a server.properties override")
    args = parser.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    workdir = args.data or tempfile.mkdtemp(prefix="kafka-bench-")
    install()
    k = KafkaOracle(workdir, overrides, jvm_flags=BENCH_JVM_FLAGS)
    k.fixed_port = args.port
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        k.start(attempts=1)
        print(f"Apache Kafka 4.4.0 on {k.bootstrap} (log: {k.log_path}); Ctrl-C stops it",
              flush=True)
        while not stop and k.alive():
            time.sleep(0.5)  # waiting for a signal
    except KeyboardInterrupt:
        pass
    finally:
        k.stop()


if __name__ == "__main__":
    main()
