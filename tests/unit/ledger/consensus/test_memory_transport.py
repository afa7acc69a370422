"""The in-memory transport: seeded, reproducible drops, duplicates, reorders and partitions."""

from __future__ import annotations

import asyncio

import pytest

from ledger.consensus.clock import LoopClock, VirtualClock
from ledger.transport.base import Message, TransportError
from ledger.transport.memory import LinkFaults, MemoryNetwork


def _run(seed: int, faults: LinkFaults) -> tuple[list[tuple[int, str, bytes]], dict[str, int]]:
    clock = VirtualClock()
    net = MemoryNetwork(clock, seed=seed, faults=faults)
    got: list[tuple[int, str, bytes]] = []
    for name in ("a", "b", "c"):
        net.attach(name, lambda m, n=name: got.append((clock.now_ms(), n, m.payload)))
    for i in range(200):
        net.publish("a", "consensus", str(i).encode())
    clock.run_until(clock.now_ms() + 10_000)
    return got, dict(net.stats)


FAULTY = LinkFaults(drop_rate=0.2, duplicate_rate=0.1, reorder_rate=0.1, max_delay_ms=20)


def test_same_seed_same_run_other_seed_other_run() -> None:
    """A seed fixes every fault decision and delivery time."""
    assert _run(1, FAULTY) == _run(1, FAULTY)
    assert _run(1, FAULTY)[0] != _run(2, FAULTY)[0]


def test_fault_rates_are_applied() -> None:
    """About 20% of 400 deliveries drop, duplicates and reorders happen, sender excluded."""
    got, stats = _run(3, FAULTY)
    assert 50 <= stats["dropped"] <= 110
    assert stats["duplicated"] > 10
    assert stats["reordered"] > 10
    assert {n for _, n, _ in got} == {"b", "c"}
    order_b = [int(p) for _, n, p in got if n == "b"]
    assert order_b != sorted(order_b)


def test_partition_blocks_across_groups_until_healed() -> None:
    """Nodes in different groups do not hear each other; healing restores delivery."""
    clock = VirtualClock()
    net = MemoryNetwork(clock)
    got: list[str] = []
    for name in ("a", "b", "c"):
        net.attach(name, lambda m, n=name: got.append(n))
    net.partition({"a", "b"}, {"c"})
    net.publish("a", "tx", b"1")
    clock.run_until(clock.now_ms() + 100)
    assert got == ["b"]
    net.heal()
    net.publish("a", "tx", b"2", to="c")
    clock.run_until(clock.now_ms() + 100)
    assert got == ["b", "c"]
    with pytest.raises(TransportError):
        net.publish("a", "nope", b"")


async def test_async_transport_implements_the_port() -> None:
    """MemoryTransport delivers through messages() on the event loop and ends on close()."""
    net = MemoryNetwork(LoopClock(), faults=LinkFaults(min_delay_ms=0, max_delay_ms=2))
    a, b = net.transport("a"), net.transport("b")
    await a.publish("block", b"hello")
    await a.publish("sync_resp", b"only-b", to="b")
    received: list[Message] = []

    async def reader() -> None:
        async for m in b.messages():
            received.append(m)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    await b.close()
    await asyncio.wait_for(task, 1)
    assert received == [Message("block", "a", b"hello"), Message("sync_resp", "a", b"only-b")]
    await a.close()
    with pytest.raises(TransportError):
        await a.publish("tx", b"late")
