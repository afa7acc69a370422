"""The receive path: topic checks, self-exclusion, size limit, dedup, bounded consumer queue."""

from __future__ import annotations

import asyncio

from ledger.transport.base import Message
from ledger.transport.dedup import DedupCache
from ledger.transport.inbound import Inbound
from ledger.transport.stats import MqttStats


def _inbound(max_messages: int = 10, max_payload_bytes: int = 100) -> tuple[Inbound, MqttStats]:
    stats = MqttStats()
    inbound = Inbound(
        "c",
        "me",
        max_messages=max_messages,
        max_payload_bytes=max_payload_bytes,
        dedup=DedupCache(100, 60.0),
        stats=stats,
    )
    return inbound, stats


async def _take(inbound: Inbound, count: int) -> list[Message]:
    out: list[Message] = []
    async for message in inbound.messages():
        out.append(message)
        if len(out) == count:
            break
    return out


async def test_accepts_broadcasts_and_own_direct_messages() -> None:
    """Peers' broadcasts and messages addressed to this node are queued with channel and sender."""
    inbound, stats = _inbound()
    assert inbound.accept("lem/1/c/consensus/v1", b"vote")
    assert inbound.accept("lem/1/c/sync_resp/to/me/v2", b"block")
    assert await _take(inbound, 2) == [
        Message("consensus", "v1", b"vote"),
        Message("sync_resp", "v2", b"block"),
    ]
    assert stats.messages_in == 2


def test_own_broadcast_and_foreign_topics_are_dropped() -> None:
    """Own echo is skipped silently; other chains, channels or recipients are counted."""
    inbound, stats = _inbound()
    assert not inbound.accept("lem/1/c/tx/me", b"echo")
    assert not inbound.accept("lem/1/other/tx/v1", b"x")
    assert not inbound.accept("lem/1/c/tx/to/you/v1", b"y")
    assert not inbound.accept("lem/1/c/status/v1", b"online")
    assert (stats.foreign_dropped, stats.messages_in, len(inbound)) == (3, 0, 0)
    assert stats.bytes_in > 0  # every received byte is counted, even dropped ones


def test_oversize_payload_is_dropped_and_counted() -> None:
    """Above max_payload_bytes: dropped, counted, never raises."""
    inbound, stats = _inbound(max_payload_bytes=4)
    assert not inbound.accept("lem/1/c/block/v1", b"12345")
    assert inbound.accept("lem/1/c/block/v1", b"1234")
    assert stats.oversize_dropped == 1


def test_duplicates_are_dropped_and_counted() -> None:
    """The same payload from two relayers is delivered once."""
    inbound, stats = _inbound()
    assert inbound.accept("lem/1/c/consensus/v1", b"vote")
    assert not inbound.accept("lem/1/c/consensus/v2", b"vote")
    assert stats.duplicates_dropped == 1


async def test_full_queue_drops_newest_without_remembering_it() -> None:
    """Consumer too slow: the newest is dropped and counted, and may be delivered once re-sent."""
    inbound, stats = _inbound(max_messages=2)
    for payload in (b"a", b"b", b"c"):
        inbound.accept("lem/1/c/tx/v1", payload)
    assert stats.inbox_dropped == 1
    assert [m.payload for m in await _take(inbound, 2)] == [b"a", b"b"]
    assert inbound.accept("lem/1/c/tx/v1", b"c")  # re-published later: not a "duplicate"


async def test_close_ends_iteration_after_queued_messages() -> None:
    """close() lets the consumer finish what is queued, then every iterator ends."""
    inbound, _ = _inbound()
    inbound.accept("lem/1/c/tx/v1", b"last")
    inbound.close()
    got = [m.payload async for m in inbound.messages()]
    again = await asyncio.wait_for(_take(inbound, 1), 1)
    assert got == [b"last"]
    assert again == []
