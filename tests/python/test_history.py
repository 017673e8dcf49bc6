"""The history checker finds each anomaly it names, in a history made to have exactly that
one, and nothing in a history without any: so a fault test that passes it has shown
something."""

import dataclasses

import pytest

from history import History, check


def clean():
    """Two partitions; p0 holds a0 a1 a2, p1 holds b0; one consumer read everything in order."""
    h = History()
    for v in [b"a0", b"a1", b"a2", b"b0", b"x"]:
        h.send(v)
    h.ok(b"a0", 0, 0)
    h.ok(b"a1", 0, 1)
    h.ok(b"a2", 0, 2)
    h.ok(b"b0", 1, 0)
    h.failed(b"x")
    h.poll("c1", [(0, 0, b"a0"), (0, 1, b"a1")], restart=True)
    h.poll("c1", [(1, 0, b"b0"), (0, 2, b"a2")])
    log = {(0, 0): b"a0", (0, 1): b"a1", (0, 2): b"a2", (1, 0): b"b0"}
    return h, log


def only(found):
    return {k for k, v in found.items() if v}


def test_a_clean_history_has_no_anomaly():
    h, log = clean()
    assert only(check(h, log)) == set()


def test_a_record_missing_from_the_log_is_a_lost_write():
    h, log = clean()
    del log[(0, 2)]
    assert only(check(h, log)) == {"lost-write"}


def test_a_value_stored_twice_is_a_duplicate():
    h, log = clean()
    log[(0, 3)] = b"a1"
    assert only(check(h, log)) == {"duplicate", "offset-mismatch"}


def test_two_values_at_one_offset_are_inconsistent_offsets():
    h, log = clean()
    h.send(b"a9")
    h.poll("c2", [(0, 1, b"a9")], restart=True)
    assert "inconsistent-offsets" in only(check(h, log))


def test_offsets_going_back_within_a_consumer_are_a_nonmonotonic_poll():
    h, log = clean()
    h.poll("c1", [(0, 1, b"a1")])
    assert only(check(h, log)) == {"nonmonotonic-poll"}


def test_a_seek_or_assignment_restarts_the_order():
    h, log = clean()
    h.poll("c1", [(0, 1, b"a1")], restart=True)
    assert only(check(h, log)) == set()


def test_jumping_over_a_stored_offset_is_a_poll_skip():
    h, log = clean()
    h.poll("c3", [(0, 0, b"a0")], restart=True)
    h.poll("c3", [(0, 2, b"a2")])
    assert only(check(h, log)) == {"poll-skip"}


def test_reading_an_aborted_transaction_read_committed_is_an_aborted_read():
    h, log = clean()
    h.send(b"t0", txn="tx1")
    h.abort("tx1")
    log[(1, 1)] = b"t0"
    h.poll("c4", [(1, 1, b"t0")], restart=True, read_committed=True)
    assert only(check(h, log)) == {"aborted-read"}


def test_a_read_committed_reader_jumps_over_aborted_records_but_not_committed_ones():
    h, log = clean()
    h.send(b"t0", txn="tx1")
    h.abort("tx1")
    h.send(b"t1", txn="tx2")
    h.send(b"b1")
    log[(1, 1)], log[(1, 2)], log[(1, 3)] = b"t0", b"t1", b"b1"
    h.poll("rc", [(1, 0, b"b0"), (1, 3, b"b1")], restart=True, read_committed=True)
    found = check(h, log)
    assert only(found) == {"poll-skip"}
    assert found["poll-skip"] == ["rc jumped from 1/0 to 1/3 over [2]"], found["poll-skip"]
    h.polls[-1] = dataclasses.replace(h.polls[-1], read_committed=False)
    assert check(h, log)["poll-skip"] == ["rc jumped from 1/0 to 1/3 over [1, 2]"]


def test_a_value_nobody_sent_is_a_phantom():
    h, log = clean()
    log[(1, 1)] = b"zz"
    assert only(check(h, log)) == {"phantom"}


def test_an_acknowledged_value_no_consumer_saw_is_unseen():
    h, log = clean()
    h.polls.pop()
    found = check(h, log)
    assert only(found) == {"unseen"}
    assert sorted(found["unseen"]) == [b"a2", b"b0"]


def test_values_must_be_unique():
    h = History()
    h.send(b"v")
    with pytest.raises(AssertionError):
        h.send(b"v")


def test_a_record_read_then_gone_from_the_log_is_a_lost_write():
    h, log = clean()
    h.send(b"a3")
    h.unknown(b"a3")
    h.poll("c5", [(0, 3, b"a3")], restart=True)
    assert only(check(h, log)) == {"lost-write"}


def test_a_first_read_past_the_assigned_position_is_a_poll_skip():
    h, log = clean()
    h.poll("c6", [(0, 1, b"a1")], restart=True, positions={0: 0})
    assert only(check(h, log)) == {"poll-skip"}
    h2, log2 = clean()
    h2.poll("c6", [(0, 0, b"a0")], restart=True, positions={0: 0})
    assert only(check(h2, log2)) == set()
