"""A history checker for Kafka-like logs, in Jepsen's vocabulary.

Tests record what real clients did: every send (its value, and whether it was acknowledged,
at which partition and offset, or failed, or ended unknown) and every poll (which consumer saw
which records, in order, and whether it had just been assigned or had sought, which restarts
its order). After the run, `check` reads the history against a final complete read of the
log and reports each anomaly by name:

- lost-write: an acknowledged record that is not in the final log where it was acknowledged,
  or a record a consumer read that the final log no longer holds at that offset;
- duplicate: one sent value stored at more than one offset;
- inconsistent-offsets: two different values seen at one (partition, offset);
- offset-mismatch: a record seen at an offset other than the one its send was acknowledged at;
- nonmonotonic-poll: a consumer's successive records of one partition whose offsets do not
  increase;
- poll-skip: a consumer that jumps over an offset the final log holds between two records it
  saw, or between the position it was assigned or sought to and its first record (a poll
  marked as a restart without a position may start anywhere); a read_committed consumer
  jumps over records of aborted transactions by design, so those are not skips for it;
- aborted-read: a read_committed consumer that saw a value of an aborted transaction (G1a);
- phantom: a value seen that no send produced;
- unseen: an acknowledged value no consumer polled, though the final log has it (reported as
  a count; an anomaly only where a test requires consumers to read everything).

Values must be unique per send; a test generates them (e.g. "p3-17").
"""

import collections
import dataclasses


@dataclasses.dataclass
class Send:
    value: bytes
    outcome: str = "pending"  # "ok", "failed" or "unknown"
    partition: int | None = None
    offset: int | None = None
    txn: str | None = None


@dataclasses.dataclass
class Poll:
    consumer: str
    records: list  # [(partition, offset, value)] in the order received
    restart: bool = False  # the consumer was (re)assigned or sought before this poll
    read_committed: bool = False
    positions: dict | None = None  # with restart: {partition: the offset it starts from}


class History:
    def __init__(self):
        self.sends = {}
        self.polls = []
        self.aborted_txns = set()

    def send(self, value, txn=None):
        assert value not in self.sends, f"value {value!r} sent twice: values must be unique"
        self.sends[value] = Send(value, txn=txn)

    def ok(self, value, partition, offset):
        s = self.sends[value]
        s.outcome, s.partition, s.offset = "ok", partition, offset

    def failed(self, value):
        self.sends[value].outcome = "failed"

    def unknown(self, value):
        self.sends[value].outcome = "unknown"

    def abort(self, txn):
        self.aborted_txns.add(txn)

    def poll(self, consumer, records, restart=False, read_committed=False, positions=None):
        self.polls.append(Poll(consumer, list(records), restart, read_committed, positions))


def aborted_value(history, value):
    """Whether `value` was sent in a transaction that aborted."""
    send = history.sends.get(value)
    return send is not None and send.txn in history.aborted_txns


def check(history, final_log):
    """`final_log` maps (partition, offset) to the value stored there, read completely after
    the run (with read_uncommitted where transactions are involved: a read_committed final read
    leaves out aborted records, and a consumer that read one would show as a lost write). Returns {anomaly: [description]} with an empty list for each anomaly not found,
    and "unseen" as a list of values."""
    found = {name: [] for name in (
        "lost-write", "duplicate", "inconsistent-offsets", "offset-mismatch",
        "nonmonotonic-poll", "poll-skip", "aborted-read", "phantom", "unseen")}

    places = collections.defaultdict(set)  # value -> {(partition, offset)}
    for place, value in final_log.items():
        places[value].add(place)
    seen_at = {}  # (partition, offset) -> value seen by some consumer
    polled = set()
    for poll in history.polls:
        for partition, offset, value in poll.records:
            place = (partition, offset)
            places[value].add(place)
            polled.add(value)
            other = seen_at.setdefault(place, value)
            if other != value:
                found["inconsistent-offsets"].append(
                    f"{place}: {other!r} and {value!r} ({poll.consumer})")
            stored = final_log.get(place)
            if stored is None:
                found["lost-write"].append(
                    f"{value!r} read by {poll.consumer} at {place}, gone from the final log")
            elif stored != value:
                found["inconsistent-offsets"].append(
                    f"{place}: {poll.consumer} saw {value!r}, the log holds {stored!r}")

    for value, send in history.sends.items():
        if send.outcome == "ok":
            place = (send.partition, send.offset)
            if final_log.get(place) != value:
                found["lost-write"].append(
                    f"{value!r} acknowledged at {place}, the log holds {final_log.get(place)!r}")
            wrong = sorted(p for p in places.get(value, ()) if p != place)
            if wrong:
                found["offset-mismatch"].append(f"{value!r} acknowledged at {place}, seen at {wrong}")
            if value not in polled and final_log.get(place) == value:
                found["unseen"].append(value)
    for value, where in places.items():
        if len(where) > 1:
            found["duplicate"].append(f"{value!r} at {sorted(where)}")
        if value not in history.sends:
            found["phantom"].append(f"{value!r} at {sorted(where)}")

    last = {}  # (consumer, partition) -> last offset seen
    for poll in history.polls:
        if poll.restart:
            for key in [k for k in last if k[0] == poll.consumer]:
                del last[key]
            for partition, position in (poll.positions or {}).items():
                # As if it had just read the offset before its position.
                last[(poll.consumer, partition)] = position - 1
        for partition, offset, value in poll.records:
            key = (poll.consumer, partition)
            before = last.get(key)
            if before is not None:
                if offset <= before:
                    found["nonmonotonic-poll"].append(
                        f"{poll.consumer} read {partition}/{offset} after {partition}/{before}")
                else:
                    skipped = [o for o in range(before + 1, offset)
                               if (partition, o) in final_log
                               and not (poll.read_committed
                                        and aborted_value(history, final_log[(partition, o)]))]
                    if skipped:
                        found["poll-skip"].append(
                            f"{poll.consumer} jumped from {partition}/{before} to "
                            f"{partition}/{offset} over {skipped}")
            last[key] = offset
            send = history.sends.get(value)
            if poll.read_committed and send is not None and send.txn in history.aborted_txns:
                found["aborted-read"].append(
                    f"{poll.consumer} read {value!r} of aborted transaction {send.txn}")
    return found


def assert_valid(history, final_log, require_all_seen=False):
    """Fails with every anomaly found; prints a one-line summary either way."""
    found = check(history, final_log)
    outcomes = collections.Counter(s.outcome for s in history.sends.values())
    print(f"history: {dict(outcomes)} sends, {len(history.polls)} polls, "
          f"{len(final_log)} records in the final log; "
          + ", ".join(f"{k} {len(v)}" for k, v in found.items()))
    errors = {k: v for k, v in found.items() if v and (k != "unseen" or require_all_seen)}
    assert not errors, "history anomalies:\n" + "\n".join(
        f"{k}: {v[:5]}{' ...' if len(v) > 5 else ''}" for k, v in errors.items())
    return found
