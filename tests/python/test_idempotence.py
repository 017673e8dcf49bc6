"""Idempotent producers through a proxy that cuts TCP connections at random.

The broker advertises the proxy's address, so every client connection goes through it. The
proxy drops connections mid-stream, the way a flaky network does: requests are lost,
responses are lost after the broker acted on the request, and the producer retries. With
enable.idempotence=true every message must end up in the log exactly once, in order.
The seed is printed; replay with SLUICE_PROXY_SEED.
"""

import os
import random
import socket
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import make_broker

MESSAGES = 50_000
PARTITIONS = 3
PAD = b"x" * 90


class CuttingProxy:
    """Forwards 127.0.0.1:port to the broker; while `cutting`, closes each connection after a
    random number of bytes in either direction."""

    def __init__(self, rng):
        self.rng = rng
        self.target = None
        self.cutting = threading.Event()
        self.cuts = 0
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            # Each connection carries between 20 KB and 500 KB: room for whole requests (at
            # most 16 KB per partition batch below), while tens of connections get cut.
            budget = [self.rng.randrange(20_000, 500_000)]
            lock = threading.Lock()
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, client, upstream, budget, lock),
                                 daemon=True).start()

    def _pump(self, src, dst, client, upstream, budget, lock):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.cutting.is_set():
                    with lock:
                        budget[0] -= len(data)
                        cut = budget[0] <= 0
                    if cut:
                        # Forward part of it, then drop both sides.
                        dst.sendall(data[: len(data) // 2])
                        self.cuts += 1
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (client, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.stopped = True
        self.server.close()


def test_idempotent_producer_writes_each_message_once_through_a_cutting_proxy(tmp_path):
    seed = int(os.environ.get("SLUICE_PROXY_SEED", random.SystemRandom().randrange(2**32)))
    print(f"\nproxy seed {seed}")
    rng = random.Random(seed)
    proxy = CuttingProxy(rng)
    broker = make_broker(tmp_path, ["--advertised-listener", f"127.0.0.1:{proxy.port}"])
    broker.start()
    proxy.target = ("127.0.0.1", broker.port)
    try:
        bootstrap = f"127.0.0.1:{proxy.port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("idem", PARTITIONS, 1)])["idem"].result(30)
        proxy.cutting.set()
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                      "linger.ms": 2, "message.timeout.ms": 120_000, "batch.size": 16384,
                      "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 200})
        failed = []
        for i in range(MESSAGES):
            while True:
                try:
                    p.produce("idem", value=b"%d:" % i + PAD, key=b"%d" % (i % 97),
                              partition=i % PARTITIONS,
                              on_delivery=lambda e, m: e and failed.append(e))
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        assert p.flush(180) == 0
        proxy.cutting.clear()
        assert not failed, failed[:3]
        print(f"{proxy.cuts} connections cut")
        assert proxy.cuts > 0, "the proxy never cut a connection"

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "idem-check",
                      "enable.auto.commit": False, "enable.partition.eof": True})
        c.assign([TopicPartition("idem", p, 0) for p in range(PARTITIONS)])
        seen = {p: [] for p in range(PARTITIONS)}
        ended = set()
        deadline = time.monotonic() + 120
        while len(ended) < PARTITIONS and time.monotonic() < deadline:
            m = c.poll(1)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:
                    ended.add(m.partition())
                continue
            seen[m.partition()].append(int(m.value().split(b":")[0]))
        c.close()
        for part in range(PARTITIONS):
            want = list(range(part, MESSAGES, PARTITIONS))
            assert seen[part] == want, (
                f"partition {part}: {len(seen[part])} messages, "
                f"{len(seen[part]) - len(set(seen[part]))} duplicates")
    finally:
        proxy.cutting.clear()
        try:
            broker.stop()
        finally:
            broker.kill()
            proxy.close()
