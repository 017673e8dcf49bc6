"""Fetch semantics on the wire (Fetch v4, hand-encoded): long polls woken by new data,
min_bytes with max_wait, whole-batch byte limits, reads starting mid-batch, out-of-range
offsets. Data comes from kcat, one message per batch."""

import socket
import struct
import subprocess
import time

from test_hostile import connect, frame, recv_frame

TOPIC = b"fetchy"


def kcat_produce(broker, values, key=None):
    args = ["kcat", "-b", broker.bootstrap, "-P", "-t", TOPIC.decode(), "-X", "acks=all",
            "-X", "linger.ms=0", "-X", "batch.num.messages=1"]
    subprocess.run(args, input=b"".join(v + b"\n" for v in values), check=True, timeout=60)


def fetch_v4(corr, offset, max_wait=0, min_bytes=0, max_bytes=1 << 20, partition_max=1 << 20):
    body = struct.pack(">iiiib", -1, max_wait, min_bytes, max_bytes, 0)
    body += struct.pack(">i", 1) + struct.pack(">h", len(TOPIC)) + TOPIC
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, offset, partition_max)
    return frame(1, 4, corr, body)


def parse_fetch_v4(resp):
    """Returns (correlation id, error code, high watermark, [(base offset, batch bytes)])."""
    corr, _throttle, _ntopics = struct.unpack(">iii", resp[:12])
    at = 12
    (name_len,) = struct.unpack(">h", resp[at:at + 2])
    at += 2 + name_len + 4  # name, partition count
    _part, error, hw, _lso = struct.unpack(">ihqq", resp[at:at + 22])
    at += 22
    (aborted,) = struct.unpack(">i", resp[at:at + 4])
    at += 4 + max(aborted, 0) * 16
    (length,) = struct.unpack(">i", resp[at:at + 4])
    records = resp[at + 4:at + 4 + max(length, 0)]
    batches, pos = [], 0
    while pos < len(records):
        base, blen = struct.unpack(">qi", records[pos:pos + 12])
        assert pos + 12 + blen <= len(records), "a partial batch was served"
        batches.append((base, records[pos:pos + 12 + blen]))
        pos += 12 + blen
    return corr, error, hw, batches


def test_fetch_semantics_on_the_wire(broker):
    kcat_produce(broker, [b"v%d" % i for i in range(10)])
    s = connect(broker)

    s.sendall(fetch_v4(1, 0))
    corr, error, hw, batches = parse_fetch_v4(recv_frame(s))
    assert (corr, error, hw) == (1, 0, 10)
    assert [b for b, _ in batches] == list(range(10)), "one batch per message, whole batches"
    size = len(batches[0][1])

    # partition_max_bytes cuts at whole batches; a limit below one batch still returns the
    # first batch (KIP-74), so a consumer always progresses.
    s.sendall(fetch_v4(2, 0, partition_max=int(size * 2.5)))
    assert [b for b, _ in parse_fetch_v4(recv_frame(s))[3]] == [0, 1]
    s.sendall(fetch_v4(3, 4, partition_max=1))
    assert [b for b, _ in parse_fetch_v4(recv_frame(s))[3]] == [4]
    s.sendall(fetch_v4(4, 0, max_bytes=size * 3, partition_max=1 << 20))
    assert len(parse_fetch_v4(recv_frame(s))[3]) == 3

    # Past the high watermark: OFFSET_OUT_OF_RANGE (1) with the offsets unknown (-1, as Kafka
    # answers; test_differential.py compares); at it: empty.
    s.sendall(fetch_v4(5, 11))
    assert parse_fetch_v4(recv_frame(s))[1:3] == (1, -1)
    s.sendall(fetch_v4(6, 10))
    assert parse_fetch_v4(recv_frame(s))[1:] == (0, 10, [])

    # min_bytes not reached: the broker waits max_wait, then answers with what it has.
    start = time.monotonic()
    s.sendall(fetch_v4(7, 8, max_wait=400, min_bytes=1 << 20))
    _, _, _, batches = parse_fetch_v4(recv_frame(s))
    assert [b for b, _ in batches] == [8, 9]
    assert time.monotonic() - start >= 0.35

    # A long poll at the log end parks until data arrives, then answers at once.
    s.sendall(fetch_v4(8, 10, max_wait=30_000, min_bytes=1))
    s.settimeout(0.5)
    try:
        recv_frame(s)
        raise AssertionError("a fetch at the log end answered before any data arrived")
    except socket.timeout:
        pass
    s.settimeout(20)
    kcat_produce(broker, [b"late"])
    corr, error, hw, batches = parse_fetch_v4(recv_frame(s))
    assert (corr, error, hw) == (8, 0, 11)
    assert [b for b, _ in batches] == [10]
    s.close()


def test_fetch_from_the_middle_of_a_batch_returns_the_whole_batch(broker):
    subprocess.run(["kcat", "-b", broker.bootstrap, "-P", "-t", TOPIC.decode(),
                    "-X", "acks=all", "-X", "linger.ms=100"],
                   input=b"".join(b"m%d\n" % i for i in range(50)), check=True, timeout=60)
    s = connect(broker)
    s.sendall(fetch_v4(1, 0))
    _, _, hw, batches = parse_fetch_v4(recv_frame(s))
    assert hw == 50
    big = [(base, raw) for base, raw in batches if struct.unpack(">i", raw[23:27])[0] > 0]
    assert big, "kcat batched several messages together"
    base, raw = big[0]
    s.sendall(fetch_v4(2, base + 1))
    _, _, _, again = parse_fetch_v4(recv_frame(s))
    assert again[0] == (base, raw), "the batch holding the offset, byte for byte"
    s.close()
