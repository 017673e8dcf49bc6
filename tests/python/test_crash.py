"""Crash test: a confluent-kafka producer writes with acks=all while the broker is killed with
SIGKILL at random moments. After every restart, each acknowledged message must be in the log
exactly once, at the offset it was acknowledged with.

The seed is printed; replay with SLUICE_CRASH_SEED=<seed>. Producer retries are off so an
unacknowledged send is never written twice: any duplicate would be the broker's doing.
"""

import os
import random
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROUNDS = 6
PARTITIONS = 3
TOPIC = "crash"


def read_log(bootstrap):
    """Every stored message as {(partition, offset): value}."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-check",
                  "enable.auto.commit": False})
    ends = {p: c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1]
            for p in range(PARTITIONS)}
    c.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS) if ends[p] > 0])
    stored, done = {}, {p for p in range(PARTITIONS) if ends[p] == 0}
    deadline = time.monotonic() + 60
    while len(done) < PARTITIONS and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        stored[(m.partition(), m.offset())] = m.value()
        if m.offset() + 1 >= ends[m.partition()]:
            done.add(m.partition())
    c.close()
    assert len(done) == PARTITIONS, f"could not read to the end: {ends}, got {len(stored)}"
    return stored


def test_acknowledged_messages_survive_sigkill(broker):
    seed = int(os.environ.get("SLUICE_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"crash test seed {seed}")
    rng = random.Random(seed)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics(
        [NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])[TOPIC].result(30)

    acked = {}  # value -> (partition, offset)
    lock = threading.Condition()
    stats = []
    for round_no in range(ROUNDS):
        producer = Producer({
            "bootstrap.servers": broker.bootstrap, "acks": "all",
            "enable.idempotence": False, "message.send.max.retries": 0,
            "linger.ms": rng.choice([0, 1, 5]), "message.timeout.ms": 15000,
            "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100,
        })
        acked_this_round = [0]
        failed = [0]

        def on_delivery(err, msg):
            with lock:
                if err is None:
                    acked[msg.value()] = (msg.partition(), msg.offset())
                    acked_this_round[0] += 1
                    lock.notify_all()
                else:
                    failed[0] += 1

        stop = threading.Event()

        def produce():
            i = 0
            while not stop.is_set():
                value = f"round{round_no}-{i}".encode()
                try:
                    producer.produce(TOPIC, key=str(i % 31).encode(), value=value,
                                     on_delivery=on_delivery)
                    i += 1
                except BufferError:
                    producer.poll(0.01)
                producer.poll(0)

        writer = threading.Thread(target=produce)
        writer.start()
        kill_after = rng.randrange(200, 4000)
        with lock:
            reached = lock.wait_for(lambda: acked_this_round[0] >= kill_after, timeout=60)
        assert reached, f"round {round_no}: only {acked_this_round[0]} acks in 60 s"
        broker.kill()
        stop.set()
        writer.join(30)
        broker.start()
        remaining = producer.flush(30)
        assert remaining == 0, f"round {round_no}: {remaining} messages never resolved"

        stored = read_log(broker.bootstrap)
        with lock:
            snapshot = dict(acked)
        by_value = {}
        for place, value in stored.items():
            by_value.setdefault(value, []).append(place)
        for value, place in snapshot.items():
            assert stored.get(place) == value, (
                f"seed {seed} round {round_no}: acknowledged {value!r} at {place}, "
                f"log has {stored.get(place)!r}")
            assert by_value[value] == [place], (
                f"seed {seed} round {round_no}: {value!r} stored at {by_value[value]}")
        stats.append((round_no, kill_after, acked_this_round[0], failed[0], len(stored)))

    for round_no, kill_after, ok, bad, total in stats:
        print(f"round {round_no}: killed after >= {kill_after} acks; acked {ok}, "
              f"failed {bad}, log holds {total}")
    assert sum(s[2] for s in stats) >= ROUNDS * 200
