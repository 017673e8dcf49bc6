"""Crash test: a confluent-kafka producer writes with acks=all while the broker is killed with
SIGKILL at random moments, and a consumer tails the topic throughout. The history of both goes
through the history checker (history.py) after every restart: no acknowledged message lost,
none stored twice or at another offset than acknowledged, no two values at one offset, and the
tailing consumer's reads in order, skipping nothing; at the end it has seen every message.

The seed is printed; replay with SLUICE_CRASH_SEED=<seed>. Producer retries are off so an
unacknowledged send is never written twice: any duplicate would be the broker's doing. A send
that fails may still have been stored (the broker died before answering): its outcome is
unknown.
"""

import os
import random
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from history import History, assert_valid

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

    history = History()
    acked = {}  # value -> (partition, offset)
    lock = threading.Condition()
    stats = []
    tail_stop = threading.Event()
    tail_seen = [0]
    tail_errors = []

    def tail():
        """Reads every partition from the start for the whole test, across the kills."""
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "crash-tail",
                      "enable.auto.commit": False, "auto.offset.reset": "error",
                      "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100})
        c.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        restart = True
        while not tail_stop.is_set():
            batch = c.consume(500, 0.2)
            records = []
            for m in batch:
                if m.error():
                    # An offset reset or any other error the tail sees is a failure: the
                    # broker restarting must not move a consumer's position.
                    tail_errors.append(str(m.error()))
                    continue
                records.append((m.partition(), m.offset(), m.value()))
            if records:
                with lock:
                    positions = {p: 0 for p in range(PARTITIONS)} if restart else None
                    history.poll("tail", records, restart=restart, positions=positions)
                    tail_seen[0] += len(records)
                    lock.notify_all()
                restart = False
        c.close()

    tailer = threading.Thread(target=tail)
    tailer.start()
    try:
        for round_no in range(ROUNDS):
            stats.append(one_round(broker, rng, round_no, history, acked, lock))
            stored = read_log(broker.bootstrap)
            with lock:
                assert_valid(history, stored)
        # Let the tailing consumer reach the end, then require that it saw everything.
        with lock:
            caught_up = lock.wait_for(lambda: tail_seen[0] >= len(stored), timeout=60)
    finally:
        tail_stop.set()
        tailer.join(30)
    assert caught_up, f"the tailing consumer saw {tail_seen[0]} of {len(stored)} records"
    assert not tail_errors, f"the tailing consumer got errors: {tail_errors[:5]}"
    with lock:
        assert_valid(history, stored, require_all_seen=True)

    for round_no, kill_after, ok, bad, total in stats:
        print(f"round {round_no}: killed after >= {kill_after} acks; acked {ok}, "
              f"failed {bad}, log holds {total}")
    assert sum(s[2] for s in stats) >= ROUNDS * 200


def one_round(broker, rng, round_no, history, acked, lock):
    """Produces until a random number of acks, kills the broker, restarts it, and resolves
    every send."""
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
                history.ok(msg.value(), msg.partition(), msg.offset())
                acked[msg.value()] = (msg.partition(), msg.offset())
                acked_this_round[0] += 1
                lock.notify_all()
            else:
                history.unknown(msg.value())
                failed[0] += 1

    stop = threading.Event()

    def produce():
        i = 0
        while not stop.is_set():
            value = f"round{round_no}-{i}".encode()
            try:
                with lock:
                    history.send(value)
                producer.produce(TOPIC, key=str(i % 31).encode(), value=value,
                                 on_delivery=on_delivery)
                i += 1
            except BufferError:
                with lock:
                    del history.sends[value]
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
    total = len(read_log(broker.bootstrap))
    return (round_no, kill_after, acked_this_round[0], failed[0], total)
