"""Reliability under abuse: clients that never read, that tie up memory with large frames or
descriptors with idle connections, Metadata requests that name thousands of new topics, and
topics with the longest legal names. Each test proves the broker stays bounded and usable."""

import os
import resource
import signal
import socket
import struct
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, make_broker, running_broker
from test_hostile import connect, frame, recv_frame, rss_kib
from test_metrics import scrape_until, value

MIB = 1 << 20


def produce_bytes(bootstrap, topic, total, size=16 << 10):
    """Produces `total` bytes of values to partition 0 of `topic`, acks=all."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                  "batch.size": 1 << 20, "compression.type": "none"})
    value = os.urandom(size)
    for _ in range(total // size):
        while True:
            try:
                p.produce(topic, value, partition=0)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def fetch_v4(topic, corr, offset, max_bytes, partition_max, max_wait=0, min_bytes=0):
    body = struct.pack(">iiiib", -1, max_wait, min_bytes, max_bytes, 0)
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, offset, partition_max)
    return frame(1, 4, corr, body)


def fetch_reads(samples):
    return value(samples, "sluice_fetch_phase_duration_seconds_count", phase="read")


def test_pipelined_fetches_nobody_reads_hold_no_records(broker):
    """64 pipelined Fetch requests for 55 MiB each, on a connection that never reads its
    answers, cost the broker almost nothing: the records stay in the segment files until the
    socket takes them (each fetch here finds 16 MiB, so holding them would take 1 GiB). The
    broker keeps serving everyone else meanwhile, and frees the connection when it closes."""
    produce_bytes(broker.bootstrap, "big", 16 * MIB)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    before = fetch_reads(scrape_until(broker, "metrics", lambda s: True))
    rss_before = rss_kib(broker)
    s = connect(broker)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    s.sendall(b"".join(fetch_v4(b"big", corr, 0, 55 * MIB, 55 * MIB) for corr in range(64)))
    # Every one of the 64 fetches has been answered by the broker (and waits to be sent).
    scrape_until(broker, "64 fetches read", lambda m: fetch_reads(m) >= before + 64)
    grown_mib = (rss_kib(broker) - rss_before) / 1024
    assert grown_mib < 64, f"the broker grew by {grown_mib:.0f} MiB for unread fetches"
    # Others are served meanwhile.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("big", 0, 0)])
    msg = c.poll(30)
    assert msg is not None and msg.error() is None
    c.close()
    s.close()
    assert admin.list_topics(timeout=30).topics["big"].error is None


@pytest.fixture
def request_limited(tmp_path):
    yield from running_broker(tmp_path, ["--set", f"queued.max.request.bytes={32 * MIB}",
                                         "--set", f"socket.request.max.bytes={100 * MIB}"])


def send_until_stuck(s, data, idle_s):
    """Sends `data` until done or until the socket takes nothing for `idle_s` seconds (the
    broker stopped reading). Returns the bytes sent."""
    s.setblocking(False)
    sent = 0
    view = memoryview(data)
    last_progress = time.monotonic()
    while sent < len(data):
        try:
            n = s.send(view[sent:sent + MIB])
            sent += n
            last_progress = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - last_progress > idle_s:
                break
            time.sleep(0.01)
    return sent


def test_large_frames_wait_for_request_memory(request_limited):
    """Ten connections each announcing a 100 MiB request and sending 30 MiB of it: with
    queued.max.request.bytes at 32 MiB, one is read (a request larger than the limit gets
    through alone) and the other nine wait unread, so the broker holds about 30 MiB, not 300.
    Small requests still get through, and the broker serves normally once they hang up."""
    b = request_limited
    rss_before = rss_kib(b)
    body = os.urandom(30 * MIB)
    header = struct.pack(">i", 100 * MIB)
    socks = []
    first = connect(b)
    socks.append(first)
    first.sendall(header)
    assert send_until_stuck(first, body, idle_s=10) == len(body)
    stuck = []
    for _ in range(9):
        s = connect(b)
        socks.append(s)
        s.sendall(header)
        stuck.append(send_until_stuck(s, body, idle_s=1.5))
    assert all(n < 16 * MIB for n in stuck), f"a waiting connection was read: {stuck}"
    grown_mib = (rss_kib(b) - rss_before) / 1024
    assert grown_mib < 100, f"ten half-sent frames took {grown_mib:.0f} MiB"
    samples = scrape_until(b, "request bytes reserved",
                           lambda m: value(m, "sluice_request_queue_bytes") >= 100 * MIB)
    assert value(samples, "sluice_request_queue_bytes") < 101 * MIB
    # A small request on a new connection is answered meanwhile.
    s = connect(b)
    s.sendall(frame(18, 0, 9))
    assert struct.unpack(">ih", recv_frame(s)[:6]) == (9, 0)
    s.close()
    for s in socks:
        s.close()
    scrape_until(b, "request bytes released",
                 lambda m: value(m, "sluice_request_queue_bytes") == 0)


FD_LIMIT = 256


def limit_open_files():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_running_out_of_descriptors_is_temporary(tmp_path):
    """With the open-file limit at 256, a producer keeps rolling segments while idle
    connections pile up to far beyond the limit: connections past the descriptor budget are
    closed on accept (logged once per interval, not once per attempt), segment rolls keep
    their descriptors, and once the idle connections go every produce is acknowledged: the
    log directory never went offline."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    b = Broker(tmp_path / "data", tmp_path / "broker.log", preexec_fn=limit_open_files)
    b.start()
    idle = []
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("rolls", 1, 1, config={"segment.bytes": "2048"})])[
            "rolls"].result(30)
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0,
                      "message.timeout.ms": 20000})
        delivered, failed = [], []

        def report(err, msg):
            (failed if err else delivered).append(err or msg.offset())

        def produce(n):
            for i in range(n):
                p.produce("rolls", os.urandom(1500), callback=report)
                p.poll(0)
            p.flush(60)

        produce(20)
        assert not failed, failed
        for _ in range(FD_LIMIT + 200):
            try:
                idle.append(socket.create_connection(("127.0.0.1", b.port), timeout=5))
            except OSError:
                break  # the kernel's accept queue is full: the broker is not accepting
        produce(30)  # every message rolls a segment
        for s in idle:
            s.close()
        idle.clear()
        delivered.clear()
        failed.clear()
        produce(50)
        assert not failed, f"produce failed after the idle connections left: {failed[:3]}"
        assert len(delivered) == 50
        log = b.log_text()
        assert "taken offline" not in log
        lines = sum(1 for line in open(b.log_path, errors="replace")
                    if "closing connection" in line or "accept failed" in line)
        assert lines <= 10, f"{lines} log lines about refused connections"
    finally:
        for s in idle:
            s.close()
        b.stop()


def metadata_v4(corr, names):
    body = struct.pack(">i", len(names))
    for n in names:
        body += struct.pack(">h", len(n)) + n
    body += b"\x01"  # allow_auto_topic_creation
    return frame(3, 4, corr, body)


def parse_metadata_v4_topic_errors(resp):
    """(correlation id, {topic: error code}) of a Metadata v4 response."""
    corr, _throttle, nbrokers = struct.unpack(">iii", resp[:12])
    at = 12
    for _ in range(nbrokers):
        at += 4
        (hl,) = struct.unpack(">h", resp[at:at + 2])
        at += 2 + hl + 4
        (rl,) = struct.unpack(">h", resp[at:at + 2])
        at += 2 + max(rl, 0)
    (cl,) = struct.unpack(">h", resp[at:at + 2])
    at += 2 + max(cl, 0) + 4  # cluster id, controller id
    (ntopics,) = struct.unpack(">i", resp[at:at + 4])
    at += 4
    errors = {}
    for _ in range(ntopics):
        (err, nl) = struct.unpack(">hh", resp[at:at + 4])
        at += 4
        name = resp[at:at + nl].decode()
        at += nl + 1  # is_internal
        (nparts,) = struct.unpack(">i", resp[at:at + 4])
        at += 4
        for _ in range(nparts):
            at += 2 + 4 + 4 + 4  # error, index, leader, leader epoch
            for _ in range(3):  # replicas, isr, offline
                (k,) = struct.unpack(">i", resp[at:at + 4])
                at += 4 + 4 * max(k, 0)
        errors[name] = err
    return corr, errors


UNKNOWN_TOPIC_OR_PARTITION = 3


def test_a_metadata_request_for_20000_new_topics_is_answered_at_once(tmp_path):
    """A Metadata request naming 20,000 unknown topics is answered without waiting for any of
    them to be created, every one UNKNOWN_TOPIC_OR_PARTITION as Kafka 4 answers; only the
    first `auto.create.topics.max.per.request` are queued for creation. SIGTERM during the
    creations stops the broker within shutdown.timeout.ms. After a restart every created
    topic is whole, none beyond the limit was created, and nothing else is on disk."""
    b = make_broker(tmp_path, ["--set", "auto.create.topics.max.per.request=10000",
                               "--set", "shutdown.timeout.ms=5000"])
    b.start()
    names = [b"auto-%05d" % i for i in range(20000)]
    s = connect(b)
    s.settimeout(30)
    started = time.monotonic()
    s.sendall(metadata_v4(1, names))
    corr, errors = parse_metadata_v4_topic_errors(recv_frame(s))
    answered_s = time.monotonic() - started
    s.close()
    assert corr == 1 and len(errors) == 20000
    assert [errors[n.decode()] for n in names] == [UNKNOWN_TOPIC_OR_PARTITION] * 20000
    stopping = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    code = b.proc.wait(60)
    stopped_s = time.monotonic() - stopping
    b._reap()
    assert code == 0, b.log_text()
    assert stopped_s < 5 + 5, f"SIGTERM took {stopped_s:.1f} s (answered in {answered_s:.1f} s)"
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        listed = admin.list_topics(timeout=30).topics
        topics = {t for t in listed if t.startswith("auto-")}
        assert topics <= {n.decode() for n in names[:10000]}
        assert all(len(listed[t].partitions) == 1 for t in topics)
        dirs = {d[:-2] for d in os.listdir(b.data_dir) if d.startswith("auto-")}
        assert dirs == topics, "partition directories match the recorded topics exactly"
    finally:
        b.stop()


def test_a_topic_with_a_249_character_name_is_deleted_for_good(broker):
    """Deleting a topic whose name has Kafka's maximum of 249 characters removes its data;
    after a restart a topic re-created under the name is empty."""
    name = "n" * 249
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(10):
        p.produce(name, b"old-%d" % i)
    assert p.flush(30) == 0
    admin.delete_topics([name])[name].result(30)
    assert not [d for d in os.listdir(broker.data_dir) if d.startswith("nnn")]
    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g"})
    low, high = c.get_watermark_offsets(TopicPartition(name, 0), timeout=30)
    c.close()
    assert (low, high) == (0, 0)


def metadata_v1_all(corr):
    return frame(3, 1, corr, struct.pack(">i", -1))  # topics: null = all


def test_unread_responses_stop_the_reader_at_the_connection_limit(tmp_path):
    """A client that pipelines 1,000 all-topic Metadata requests (about 30 KiB of answer each,
    30 MiB in all) and reads nothing: once its unsent answers reach
    queued.max.response.bytes.per.connection (256 KiB here) the broker stops reading its
    requests, so what it holds stays near the limit (the kernel's socket buffers take several
    MiB more) instead of growing with every request; when the client reads, every answer
    arrives, in order."""
    n = 1000
    b = make_broker(tmp_path, ["--set", "queued.max.response.bytes.per.connection=262144",
                               "--set", f"queued.max.requests.per.connection={n}"])
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        names = [f"{'t' * 236}{i:03d}" for i in range(120)]
        for f in admin.create_topics([NewTopic(t, 1, 1) for t in names]).values():
            f.result(60)
        before = value(scrape_until(b, "metrics", lambda m: True),
                       "sluice_requests_total", api="Metadata")
        s = connect(b)
        s.sendall(b"".join(metadata_v1_all(corr) for corr in range(n)))
        samples = scrape_until(b, "the connection's answers to pile up",
                               lambda m: value(m, "sluice_response_queue_bytes") >= 256 << 10)
        read = value(samples, "sluice_requests_total", api="Metadata") - before
        held = value(samples, "sluice_response_queue_bytes")
        assert read < n / 2, f"{read:.0f} of {n} requests were read while unanswered"
        assert held < (256 << 10) + 64 * 1024, f"{held} bytes of answers held"
        s.settimeout(30)
        corrs = [struct.unpack(">i", recv_frame(s)[:4])[0] for _ in range(n)]
        assert corrs == list(range(n))
        s.close()
    finally:
        b.stop()


def test_a_connection_has_at_most_its_queued_requests_in_flight(tmp_path):
    """With queued.max.requests.per.connection at 16, a client that pipelines 200 long-poll
    Fetch requests (30 s, on an empty partition) gets 16 of them read, and no more while
    those wait; one record answers them, the next 16 are read, and so on: all 200 are
    answered, in order, long before their 30 s."""
    n, depth = 200, 16
    b = make_broker(tmp_path, ["--set", f"queued.max.requests.per.connection={depth}"])
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("waits", 1, 1)])["waits"].result(30)
        requests = lambda m: value(m, "sluice_requests_total", api="Fetch")
        before = requests(scrape_until(b, "metrics", lambda m: True))
        s = connect(b)
        s.sendall(b"".join(fetch_v4(b"waits", corr, 0, 1 << 20, 1 << 20,
                                    max_wait=30_000, min_bytes=1) for corr in range(n)))
        scrape_until(b, f"{depth} fetches read", lambda m: requests(m) >= before + depth)
        # All 200 were sent before the first was read: a reader not held at the limit
        # would have read far more by now.
        for _ in range(5):
            read = requests(scrape_until(b, "metrics", lambda m: True)) - before
            assert read == depth, f"{read:.0f} fetches read with {depth} allowed in flight"
        p = Producer({"bootstrap.servers": b.bootstrap})
        p.produce("waits", b"wake")
        assert p.flush(30) == 0
        s.settimeout(25)
        corrs = [struct.unpack(">i", recv_frame(s)[:4])[0] for _ in range(n)]
        assert corrs == list(range(n))
        s.close()
    finally:
        b.stop()


def test_partitions_past_the_open_file_limit_keep_their_files_within_a_share(tmp_path):
    """With the open-file limit at 256, 100 partitions each roll four segments (500 segment
    files, twice the limit): every produce succeeds, because storage keeps at most its share
    of the limit open (half of what the reserve leaves: 96) and reopens the rest on use; the
    directory stays online and every record reads back. (Before the bounded handle cache, a
    roll ran out of descriptors here.)"""
    b = Broker(tmp_path / "data", tmp_path / "broker.log", preexec_fn=limit_open_files)
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("wide", 100, 1, config={"segment.bytes": "100"})])[
            "wide"].result(30)
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0,
                      "message.timeout.ms": 10000, "retries": 0})
        failed = []
        most_open = 0
        for round_ in range(5):  # every message rolls a segment of its partition
            for part in range(100):
                p.produce("wide", b"%d-%d" % (round_, part) + b"x" * 200, partition=part,
                          callback=lambda err, msg: err and failed.append(err))
            p.flush(60)
            most_open = max(most_open, metric(b, "sluice_partition_open_files"))
        assert not failed, failed[:3]
        assert 0 < most_open <= 96, f"{most_open} segment files open"
        assert "taken offline" not in b.log_text()
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "wide-reader",
                      "enable.auto.commit": False})
        c.assign([TopicPartition("wide", part, 0) for part in range(100)])
        got = set()
        deadline = time.monotonic() + 60
        while len(got) < 500 and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None and not m.error():
                got.add(m.value()[:m.value().index(b"x")])
        c.close()
        assert got == {b"%d-%d" % (r, q) for r in range(5) for q in range(100)}
        status, _, body = urllib_get(b.admin_url + "/health/ready")
        assert status == 200, body
    finally:
        b.stop()


def metric(b, name):
    """The value of an unlabelled gauge on the broker's /metrics."""
    _, _, text = urllib_get(b.admin_url + "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def urllib_get(url):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()
