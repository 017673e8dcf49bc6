"""One exactly-once consume-transform-produce worker in a process of its own, so that a test can
SIGKILL it in the middle of a transaction.

    python txn_worker.py BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID BATCH

It reads "in-<i>" records from INPUT as a read_committed member of GROUP (static membership,
so a restarted worker takes its predecessor's place at once instead of waiting for its session
to expire), and in one transaction per batch of at most BATCH records writes "out-<i>" to the
same partition of OUTPUT and commits the consumed positions with send_offsets_to_transaction.
The transactional id (and the group instance id derived from it) is the same across restarts,
so a new worker fences the killed one and aborts its open transaction in init_transactions.

It prints one JSON object per line, flushed:

    {"ev": "ready"}                            init_transactions returned
    {"ev": "begin", "n": n}                    a transaction of n records began
    {"ev": "produced", "n": n}                 the broker acknowledged all n output records:
                                               they are in the log, not yet committed
    {"ev": "offsets", "positions": {p: o}}     send_offsets_to_transaction returned
    {"ev": "committed", "n": n, "positions": {p: o}}   commit_transaction returned
    {"ev": "idle"}                             a poll found nothing to transform

After "produced", "offsets" and "committed" it waits for a line on stdin before going on, so
the test decides, with the transaction in a known state, whether to let it continue or to kill
it. When idle it exits cleanly if stdin is closed. Any error ends the process non-zero with a
traceback on stderr.
"""

import json
import queue
import sys
import threading

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

bootstrap, source, sink, group, txn_id, batch = sys.argv[1:7]
batch = int(batch)

commands = queue.Queue()
stdin_closed = threading.Event()


def read_stdin():
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        commands.put(line.strip())
    stdin_closed.set()
    commands.put(None)


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def hold():
    """Waits for the test's go-ahead."""
    if commands.get() is None:
        # The test closes stdin only when the worker is idle; here a transaction is open.
        sys.exit("stdin closed while a transaction was open")


threading.Thread(target=read_stdin, daemon=True).start()

producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5})
producer.init_transactions(60)
emit(ev="ready")

consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": group,
    "group.instance.id": f"{txn_id}-member",
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 30000,
    "heartbeat.interval.ms": 1000,
})
consumer.subscribe([source])

failed = []


def delivered(err, msg):
    if err is not None:
        failed.append(err)


while True:
    msgs = consumer.consume(num_messages=batch, timeout=0.5)
    for m in msgs:
        if m.error() is not None:
            raise KafkaException(m.error())
    if not msgs:
        emit(ev="idle")
        if stdin_closed.is_set():
            break
        continue

    producer.begin_transaction()
    emit(ev="begin", n=len(msgs))
    for m in msgs:
        value = m.value()
        assert value.startswith(b"in-"), value
        producer.produce(sink, key=m.key(), value=b"out-" + value[3:], partition=m.partition(),
                         on_delivery=delivered)
    remaining = producer.flush(60)
    if remaining or failed:
        sys.exit(f"{remaining} records unacknowledged, delivery errors: {failed[:3]}")
    emit(ev="produced", n=len(msgs))
    hold()

    # Logical offsets (partitions not consumed by this process) are left out: their committed
    # offsets stay as they are.
    positions = {tp.partition: tp.offset for tp in consumer.position(consumer.assignment())
                 if tp.offset >= 0}
    producer.send_offsets_to_transaction(
        [TopicPartition(source, p, o) for p, o in positions.items()],
        consumer.consumer_group_metadata(), 60)
    emit(ev="offsets", positions=positions)
    hold()

    producer.commit_transaction(60)
    emit(ev="committed", n=len(msgs), positions=positions)
    hold()

consumer.close()
