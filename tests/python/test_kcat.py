"""kcat (librdkafka, Debian's package) against sluice: auto-created topics, produce in every
codec with acks=all, consume, ListOffsets by timestamp, restart; the round trip runs against
one node and against a three-node cluster (conftest.Cluster: replicas on all three, a
rolling restart)."""

import json
import subprocess
import time

import pytest

from conftest import (CODECS, Msg, check_round_trip, expected_messages,
                      first_offset_at_or_after, running_broker, running_cluster)

N = 10_000
PARTITIONS = 3


def kcat(bootstrap, *args, stdin=None, timeout=180):
    out = subprocess.run(["kcat", "-b", bootstrap, *args], input=stdin, capture_output=True,
                         timeout=timeout)
    assert out.returncode == 0, f"kcat {args} failed: {out.stderr.decode(errors='replace')}"
    return out.stdout


def consume_all(bootstrap, topic):
    fmt = "%p\t%o\t%k\t%s\t%T\t%h\n"
    raw = kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", fmt)
    msgs = []
    for line in raw.split(b"\n"):
        if not line:
            continue
        p, o, k, v, t, h = line.split(b"\t")
        headers = tuple(tuple(kv.split(b"=", 1)) for kv in h.split(b",")) if h else ()
        msgs.append(Msg(int(p), int(o), k, v, headers, int(t)))
    return msgs


@pytest.fixture(params=["one node", "three nodes"])
def broker3(request, tmp_path):
    # kcat cannot create topics; it gets them auto-created with num.partitions.
    args = ["--set", f"num.partitions={PARTITIONS}"]
    if request.param == "one node":
        yield from running_broker(tmp_path, args)
    else:
        yield from running_cluster(tmp_path, args)


def test_kcat_round_trip_in_every_codec_survives_restart(broker3):
    topic = "kcat-orders"
    produced, windows = {}, {}
    for codec in CODECS:
        msgs = expected_messages(codec, N)
        produced[codec] = msgs
        data = b"".join(k + b"\t" + v + b"\n" for k, v in msgs)
        before = int(time.time() * 1000)
        kcat(broker3.bootstrap, "-P", "-t", topic, "-K", "\t", "-z", codec,
             "-X", "acks=all", "-H", f"codec={codec}", "-H", "src=kcat", stdin=data)
        windows[codec] = (before, int(time.time() * 1000))

    meta = json.loads(kcat(broker3.bootstrap, "-L", "-t", topic, "-J"))
    assert len(meta["topics"][0]["partitions"]) == PARTITIONS

    consumed = consume_all(broker3.bootstrap, topic)
    check_round_trip(
        consumed, produced, PARTITIONS,
        headers_of=lambda codec, i: ((b"codec", codec.encode()), (b"src", b"kcat")),
        timestamp_of=lambda codec, i: windows[codec],
    )

    # ListOffsets by timestamp: the first message of the lz4 run, and one past the end.
    target = windows["lz4"][0]
    for p in range(PARTITIONS):
        out = kcat(broker3.bootstrap, "-Q", "-t", f"{topic}:{p}:{target}").decode()
        assert f"offset {first_offset_at_or_after(consumed, p, target)}" in out, out
    future = windows["zstd"][1] + 60_000
    out = kcat(broker3.bootstrap, "-Q", "-t", f"{topic}:0:{future}").decode()
    assert "offset -1" in out, out

    broker3.restart()
    assert sorted(consume_all(broker3.bootstrap, topic)) == sorted(consumed)
