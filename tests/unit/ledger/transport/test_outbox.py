"""The bounded outgoing queue: drop-oldest, re-queue in publish order, expiry, idle tracking."""

from __future__ import annotations

import asyncio

import pytest

from ledger.transport.outbox import Outbox


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _drain(box: Outbox, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        item = await box.get()
        out.append(item.payload)
        box.done(item)
    return out


async def test_full_queue_drops_the_oldest_and_counts() -> None:
    """Capacity 3, five puts: the newest three remain, two drops counted."""
    box = Outbox(3, 60.0, FakeClock())
    for i in range(5):
        box.put("t", b"%d" % i)
    assert (len(box), box.dropped) == (3, 2)
    assert await _drain(box, 3) == [b"2", b"3", b"4"]


async def test_requeued_message_goes_first() -> None:
    """A message whose PUBACK never came is sent again before the newer ones."""
    box = Outbox(10, 60.0, FakeClock())
    box.put("t", b"a")
    box.put("t", b"b")
    first = await box.get()
    box.requeue(first)
    assert await _drain(box, 2) == [b"a", b"b"]


@pytest.mark.parametrize("timeout_order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
async def test_messages_requeued_in_any_order_go_out_in_publish_order(
    timeout_order: tuple[int, int, int],
) -> None:
    """In-flight messages whose PUBACK waits end in any order keep their publish order."""
    box = Outbox(10, 60.0, FakeClock())
    for name in (b"s0", b"s1", b"s2", b"s3"):
        box.put("t", name)
    in_flight = [await box.get() for _ in range(3)]
    for index in timeout_order:
        box.requeue(in_flight[index])
    assert await _drain(box, 4) == [b"s0", b"s1", b"s2", b"s3"]


async def test_requeue_into_a_full_queue_drops_the_oldest_which_is_the_requeued_one() -> None:
    """Re-queue never grows the queue past its bound."""
    box = Outbox(2, 60.0, FakeClock())
    box.put("t", b"old")
    taken = await box.get()
    box.put("t", b"n1")
    box.put("t", b"n2")
    box.requeue(taken)
    assert (len(box), box.dropped) == (2, 1)
    assert await _drain(box, 2) == [b"n1", b"n2"]


async def test_stale_messages_expire_instead_of_being_sent() -> None:
    """After an outage longer than max_age_s the stale votes are dropped and counted."""
    clock = FakeClock()
    box = Outbox(10, 30.0, clock)
    box.put("t", b"stale")
    clock.now = 20.0
    box.put("t", b"fresh")
    clock.now = 40.0
    assert await _drain(box, 1) == [b"fresh"]
    assert box.expired == 1


async def test_join_waits_for_acknowledgement_not_just_for_get() -> None:
    """join() returns only when every taken message is done (or requeued and then done)."""
    box = Outbox(10, 60.0, FakeClock())
    await asyncio.wait_for(box.join(), 1)  # idle when empty
    box.put("t", b"x")
    item = await box.get()
    waiter = asyncio.create_task(box.join())
    await asyncio.sleep(0)
    assert not waiter.done()
    box.done(item)
    await asyncio.wait_for(waiter, 1)


@pytest.mark.parametrize(("size", "age"), [(0, 1.0), (1, 0.0)])
def test_nonsense_bounds_are_refused(size: int, age: float) -> None:
    """A zero capacity or zero age is a configuration error, not an unbounded queue."""
    with pytest.raises(ValueError, match="outbox"):
        Outbox(size, age)


async def test_urgent_messages_go_out_before_queued_bulk_messages() -> None:
    """A vote queued behind a tx backlog is handed out first; txs keep their own order."""
    box = Outbox(10, 60.0, FakeClock())
    for i in range(4):
        box.put("tx", b"tx%d" % i, bulk=True)
    box.put("consensus", b"vote")
    assert await _drain(box, 5) == [b"vote", b"tx0", b"tx1", b"tx2", b"tx3"]


async def test_full_queue_drops_bulk_before_any_urgent_message() -> None:
    """Capacity 4: a flood of txs after two votes evicts only txs; the votes all survive."""
    box = Outbox(4, 60.0, FakeClock())
    box.put("consensus", b"v0")
    box.put("consensus", b"v1")
    for i in range(10):
        box.put("tx", b"tx%d" % i, bulk=True)
    box.put("consensus", b"v2")
    assert (len(box), box.dropped, box.dropped_urgent) == (4, 9, 0)
    assert await _drain(box, 4) == [b"v0", b"v1", b"v2", b"tx9"]


async def test_urgent_overflow_drops_the_oldest_urgent_when_no_bulk_is_left() -> None:
    """Only urgent messages queued: the old drop-oldest rule applies and is counted as urgent."""
    box = Outbox(2, 60.0, FakeClock())
    for i in range(3):
        box.put("consensus", b"v%d" % i)
    assert (box.dropped, box.dropped_urgent) == (1, 1)
    assert await _drain(box, 2) == [b"v1", b"v2"]


async def test_requeued_bulk_message_returns_to_the_bulk_lane_in_order() -> None:
    """An unacknowledged tx goes back before later txs but still after queued votes."""
    box = Outbox(10, 60.0, FakeClock())
    box.put("tx", b"tx0", bulk=True)
    box.put("tx", b"tx1", bulk=True)
    first = await box.get()
    box.put("consensus", b"vote")
    box.requeue(first)
    assert await _drain(box, 3) == [b"vote", b"tx0", b"tx1"]
