"""Which frame may write which row of a source's GPU row store (streamer.gpu.rows.RowLedger): the bookkeeping
that keeps a row from being overwritten while a batch may still copy it, in any order of writers."""

from __future__ import annotations

import threading

import pytest

from streamer.gpu.rows import RowLedger

TIMEOUT = 10.0


class Event:
    """Stands in for a CUDA event: records that someone waited for it."""

    def __init__(self) -> None:
        self.waited = 0

    def synchronize(self) -> None:
        self.waited += 1


def never() -> bool:
    return False


def test_the_first_round_of_rows_is_free_and_a_row_is_reused_only_after_its_frame_let_go() -> None:
    ledger = RowLedger(4)
    for i in range(4):
        assert ledger.claim(i, never)
    got: list[bool] = []
    writer = threading.Thread(target=lambda: got.append(ledger.claim(5, never)))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive() and not got  # frame 1 still holds row 1
    ledger.release(1)
    writer.join(TIMEOUT)
    assert got == [True]


def test_a_claim_waits_for_the_event_of_the_batch_that_copied_the_previous_frame() -> None:
    ledger = RowLedger(2)
    assert ledger.claim(0, never)
    batch = Event()
    ledger.release(0, batch)
    assert ledger.claim(2, never)
    assert batch.waited == 1
    ledger.release(2)
    assert ledger.claim(4, never)
    assert batch.waited == 1  # frame 2 was dropped, not batched: nothing to wait for


def test_writers_out_of_order_get_rows_in_frame_order() -> None:
    """A decoder far ahead (frame 9) waits for frames 1 and 5 of its row, whoever writes them."""
    ledger = RowLedger(4)
    done: list[int] = []
    ahead = threading.Thread(target=lambda: (ledger.claim(9, never), done.append(9)))
    ahead.start()
    assert ledger.claim(1, never)
    ledger.release(1)
    assert ledger.claim(5, never)
    ahead.join(0.3)
    assert ahead.is_alive() and not done
    ledger.release(5)
    ahead.join(TIMEOUT)
    assert done == [9]


def test_a_skipped_frame_releases_a_row_it_never_claimed_and_double_releases_are_ignored() -> None:
    ledger = RowLedger(3)
    ledger.release(0)  # frame 0 was never delivered by its decoder
    assert ledger.claim(3, never)
    ledger.release(3)
    ledger.release(3)
    assert ledger.claim(6, never)


def test_a_waiting_writer_gives_up_when_stopped_or_closed() -> None:
    ledger = RowLedger(2)
    assert ledger.claim(0, never)
    stop = threading.Event()
    got: list[bool] = []
    writer = threading.Thread(target=lambda: got.append(ledger.claim(2, stop.is_set)))
    writer.start()
    stop.set()
    writer.join(TIMEOUT)
    assert got == [False]
    closer = threading.Thread(target=lambda: got.append(ledger.claim(2, never)))
    closer.start()
    ledger.close()
    closer.join(TIMEOUT)
    assert got == [False, False]


def test_claiming_a_row_twice_is_a_bug_said_at_once() -> None:
    ledger = RowLedger(2)
    assert ledger.claim(0, never)
    with pytest.raises(RuntimeError, match="claimed twice"):
        ledger.claim(0, never)


def test_claiming_many_rows_waits_once_per_distinct_batch_event() -> None:
    ledger = RowLedger(4)
    assert ledger.claim_many([0, 1, 2, 3], never)
    first, second = Event(), Event()
    for index, event in ((0, first), (1, first), (2, first), (3, second)):
        ledger.release(index, event)
    assert ledger.claim_many([4, 5, 6, 7], never)
    assert (first.waited, second.waited) == (1, 1)  # three rows of one batch: one wait
    with pytest.raises(RuntimeError, match="claimed twice"):
        ledger.claim_many([5], never)
