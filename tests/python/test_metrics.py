"""The broker's /metrics endpoint (OpenMetrics text on the admin listener) against real
clients: counters move by exactly what confluent-kafka produced, consumed and committed, the
per-partition log gauges agree with the bytes appended, errors are counted by API and Kafka
error name, the cleaner's activity shows, and `metrics.enabled=false` turns it all off.

Waits are bounded polls of the endpoint for a condition, never fixed sleeps."""

import json
import re
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import running_broker

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
DEADLINE_S = 30


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def scrape(broker):
    """Every sample of the exposition, keyed by (name, frozenset of label pairs)."""
    status, content_type, text = fetch(broker.admin_url + "/metrics")
    assert status == 200
    assert content_type.startswith("application/openmetrics-text"), content_type
    assert text.endswith("# EOF\n"), "an OpenMetrics exposition ends with # EOF"
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not an OpenMetrics sample line: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples, name, **labels):
    """Sum of every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def scrape_until(broker, what, condition):
    """Scrapes until `condition(samples)` holds (timings are recorded just after a response
    is written, so a client can be a moment ahead of them); fails after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        samples = scrape(broker)
        if condition(samples):
            return samples
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


def answered_all(api):
    """Every request of `api` received so far has been answered and timed."""
    return lambda s: value(s, "sluice_request_duration_seconds_count", api=api) == \
        value(s, "sluice_requests_total", api=api)


def create_topic(bootstrap, name, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(30)


def test_counters_follow_produce_consume_and_commit(broker):
    """Producing N records adds exactly N to the topic's messages-in counter and exactly the
    bytes the partitions grew by to its bytes-in counter; every produce request is answered
    and timed in all four phases; consuming them moves the out counters; a commit 7 short of
    a partition's end shows as lag 7 for that group and partition; a DeleteTopics of an
    unknown topic is counted under its API and error name."""
    create_topic(broker.bootstrap, "metered", 2)
    before = scrape(broker)

    n = 2000
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})
    for i in range(n):
        producer.produce("metered", key=f"k{i}", value=f"value-{i}" * (1 + i % 5),
                         partition=i % 2)
    assert producer.flush(30) == 0
    after = scrape_until(broker, "every produce request to be timed", answered_all("Produce"))

    assert value(after, "sluice_topic_messages_in_total", topic="metered") == n
    appended = sum(value(after, "sluice_log_size_bytes", topic="metered", partition=str(p))
                   for p in range(2))
    assert appended > 0
    assert value(after, "sluice_topic_in_bytes_total", topic="metered") == appended, \
        "bytes in are the batches appended, stored as received"
    ends = [value(after, "sluice_log_end_offset", topic="metered", partition=str(p))
            for p in range(2)]
    assert sum(ends) == n
    produced = (value(after, "sluice_requests_total", api="Produce")
                - value(before, "sluice_requests_total", api="Produce"))
    assert produced >= 1
    for phase in ("queue", "append", "fsync", "send"):
        timed = (value(after, "sluice_produce_phase_duration_seconds_count", phase=phase)
                 - value(before, "sluice_produce_phase_duration_seconds_count", phase=phase))
        assert timed == produced, phase
    assert value(after, "sluice_fsync_duration_seconds_count") > \
        value(before, "sluice_fsync_duration_seconds_count"), "acks=all appends were fsynced"
    assert value(after, "sluice_connections") >= 1, "the producer is still connected"
    assert value(after, "sluice_process_resident_memory_bytes") > 0

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "metered-g",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["metered"])
    seen = 0
    deadline = time.monotonic() + DEADLINE_S
    while seen < n and time.monotonic() < deadline:
        m = consumer.poll(1.0)
        if m is not None and m.error() is None:
            seen += 1
    assert seen == n
    consumer.commit(offsets=[TopicPartition("metered", 0, int(ends[0]) - 7),
                             TopicPartition("metered", 1, int(ends[1]))], asynchronous=False)
    consumed = scrape(broker)
    assert value(consumed, "sluice_topic_messages_out_total", topic="metered") >= n
    assert value(consumed, "sluice_topic_out_bytes_total", topic="metered") >= appended
    lag = dict(group="metered-g", topic="metered")
    assert value(consumed, "sluice_group_lag", partition="0", **lag) == 7
    assert value(consumed, "sluice_group_lag", partition="1", **lag) == 0
    assert value(consumed, "sluice_group_committed_offset", partition="0", **lag) == ends[0] - 7
    assert value(consumed, "sluice_group_members", group="metered-g") == 1
    consumer.close()
    producer = None

    # With the consumer gone its last long poll has ended: each fetch recorded each phase.
    fetched = scrape_until(broker, "every fetch to be timed", answered_all("Fetch"))
    fetches = value(fetched, "sluice_requests_total", api="Fetch")
    assert fetches > 0
    for phase in ("queue", "read", "wait", "send"):
        assert value(fetched, "sluice_fetch_phase_duration_seconds_count", phase=phase) == \
            fetches, phase

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with pytest.raises(KafkaException):
        admin.delete_topics(["no-such-topic"])["no-such-topic"].result(30)
    errors = scrape(broker)
    assert value(errors, "sluice_request_errors_total", api="DeleteTopics",
                 error="UNKNOWN_TOPIC_OR_PARTITION") == 1


def test_cleaner_activity_is_counted(tmp_path):
    """A compacted topic full of overwrites is cleaned, and the cleaner counters show it:
    runs, bytes read and written (written smaller than read), records removed."""
    gen = running_broker(tmp_path, ["--set", "log.cleaner.backoff.ms=100"])
    broker = next(gen)
    try:
        create_topic(broker.bootstrap, "table", 1, {
            "cleanup.policy": "compact", "segment.bytes": str(16 << 10), "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.01"})
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        for i in range(5000):
            producer.produce("table", key=f"key-{i % 10}", value=f"v{i}" * 8)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + DEADLINE_S
        samples = scrape(broker)
        while value(samples, "sluice_cleaner_runs_total") == 0 and time.monotonic() < deadline:
            # Roll the active segment (segment.ms is 100) so its records become cleanable.
            producer.produce("table", key="roll", value="x")
            producer.flush(10)
            samples = scrape(broker)
        assert value(samples, "sluice_cleaner_runs_total") >= 1, "the cleaner never ran"
        read = value(samples, "sluice_cleaner_read_bytes_total")
        written = value(samples, "sluice_cleaner_written_bytes_total")
        assert 0 < written < read
        assert value(samples, "sluice_cleaner_records_removed_total") > 0
        assert value(samples, "sluice_cleaner_duration_seconds_count") == \
            value(samples, "sluice_cleaner_runs_total")
        assert value(samples, "sluice_cleaner_errors_total") == 0
    finally:
        for _ in gen:
            pass


def test_metrics_can_be_turned_off(tmp_path):
    """With metrics.enabled=false, /metrics answers 404 with a JSON error, the broker still
    serves clients, and the live stats report no traffic."""
    gen = running_broker(tmp_path, ["--set", "metrics.enabled=false"])
    broker = next(gen)
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            fetch(broker.admin_url + "/metrics")
        assert e.value.code == 404
        assert json.loads(e.value.read())["code"] == "not_found"
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        producer.produce("unmetered", value=b"x")
        assert producer.flush(30) == 0
        _, _, body = fetch(broker.admin_url + "/api/v1/stats")
        stats = json.loads(body)
        assert stats["bytes_in"] == 0 and stats["messages_in"] == 0
        assert any(t["name"] == "unmetered" and t["size_bytes"] > 0 for t in stats["topics"])
    finally:
        for _ in gen:
            pass
