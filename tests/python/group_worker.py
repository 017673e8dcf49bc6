"""One consumer-group member in a process of its own, so that a test can SIGKILL it.

    python group_worker.py CLIENT BOOTSTRAP GROUP TOPIC ASSIGNOR [INSTANCE_ID]

CLIENT is `confluent` (confluent-kafka) or `kafka-python`. The worker subscribes, consumes,
and commits what it consumed every COMMIT_INTERVAL_S with synchronous, explicit offsets. It
prints one JSON object per line:

    {"ev": "assignment", "parts": [...], "callbacks": n}   after every rebalance callback
    {"ev": "msg", "p": partition, "o": offset}              for every message it consumed
    {"ev": "commit", "p": partition, "o": next offset}       after a commit of it succeeded

It stops cleanly (closing the consumer, which leaves the group) when its stdin closes.
"""

import json
import sys
import threading
import time

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 1000
COMMIT_INTERVAL_S = 0.3

client, bootstrap, group, topic, assignor = sys.argv[1:6]
instance = sys.argv[6] if len(sys.argv) > 6 else None

stop = threading.Event()
out_lock = threading.Lock()
assigned = set()
callbacks = 0
pending = {}  # partition -> next offset to commit


def emit(**event):
    with out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def watch_stdin():
    sys.stdin.read()
    stop.set()


def on_change(added, removed):
    global callbacks
    callbacks += 1
    # What was consumed from a revoked partition is not ours to commit any more: the new
    # owner starts from the last commit, and a later commit of ours would skip past
    # messages it redelivers.
    for p in removed:
        pending.pop(p, None)
    assigned.difference_update(removed)
    assigned.update(added)
    emit(ev="assignment", parts=sorted(assigned), callbacks=callbacks)


threading.Thread(target=watch_stdin, daemon=True).start()


def consumed(p, o):
    emit(ev="msg", p=p, o=o)
    pending[p] = o + 1


if client == "confluent":
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_MS,
        "partition.assignment.strategy": assignor,
    }
    if instance:
        conf["group.instance.id"] = instance
    consumer = Consumer(conf)
    incremental = assignor == "cooperative-sticky"

    def assign_cb(c, parts):
        if not incremental:
            assigned.clear()
        on_change({tp.partition for tp in parts}, set())

    def revoke_cb(c, parts):
        on_change(set(), {tp.partition for tp in parts} if incremental else set(assigned))

    consumer.subscribe([topic], on_assign=assign_cb, on_revoke=revoke_cb, on_lost=revoke_cb)

    def poll():
        for m in consumer.consume(num_messages=200, timeout=0.2):
            if m.error() is None:
                consumed(m.partition(), m.offset())

    def commit(offsets):
        try:
            result = consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException:
            return []
        return [(tp.partition, tp.offset) for tp in result if tp.error is None]

else:
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    strategies = {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "sticky": StickyPartitionAssignor,
    }
    kwargs = {}
    if instance:
        kwargs["group_instance_id"] = instance
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
        partition_assignment_strategy=[strategies[assignor]],
        **kwargs,
    )

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            on_change(set(), {tp.partition for tp in revoked})

        def on_partitions_assigned(self, parts):
            on_change({tp.partition for tp in parts}, set())

    consumer.subscribe(topics=[topic], listener=Listener())

    def poll():
        for records in consumer.poll(timeout_ms=200, max_records=200).values():
            for r in records:
                consumed(r.partition, r.offset)

    def commit(offsets):
        try:
            consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1)
                             for p, o in offsets.items()})
        except KafkaError:
            return []
        return list(offsets.items())


last_commit = time.monotonic()
while not stop.is_set():
    poll()
    if pending and time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
        for p, o in commit(dict(pending)):
            emit(ev="commit", p=p, o=o)
            if pending.get(p) == o:
                del pending[p]
        last_commit = time.monotonic()
consumer.close()
