"""ledger/node.py pieces that need no network: timer error hand-over and configuration checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ledger.consensus.clock import LoopClock
from ledger.consensus.engine import EngineConfig
from ledger.node import Node, _GuardedClock
from ledger.transport.memory import MemoryNetwork
from tests.unit.ledger.helpers import VAL, genesis


async def test_timer_exceptions_reach_the_node_not_the_loop_log() -> None:
    """An exception raised in a consensus timer is handed to the node (which stops with it)."""
    errors: list[BaseException] = []
    clock = _GuardedClock(LoopClock(), errors.append)

    def boom() -> None:
        raise RuntimeError("invariant broken")

    clock.call_later(1, boom)
    await asyncio.sleep(0.05)
    assert [str(e) for e in errors] == ["invariant broken"]


async def test_node_refuses_a_config_of_another_chain(tmp_path: Path) -> None:
    """A node whose engine config names another chain than its genesis does not start."""
    network = MemoryNetwork(LoopClock())
    with pytest.raises(ValueError, match="is not"):
        Node.open(
            tmp_path,
            genesis(),
            network.transport("n"),
            key=VAL,
            config=EngineConfig("other-chain"),
            durable=False,
        )


async def test_commit_listeners_get_each_block_and_cannot_stop_consensus(tmp_path: Path) -> None:
    """Every commit reaches the listeners with its height, hashes, tx count and a latency;
    a listener that raises is logged and counted, and the next listener still runs."""
    from ledger.node import CommitInfo
    from tests.unit.ledger.helpers import ADMIN, N1, Signer

    network = MemoryNetwork(LoopClock())
    g = genesis()
    node = Node.open(
        tmp_path, g, network.transport("v"), key=VAL, config=EngineConfig(g.chain_id), durable=False
    )
    seen: list[CommitInfo] = []

    def broken(info: CommitInfo) -> None:
        raise RuntimeError("metrics exporter down")

    node.add_commit_listener(broken)
    node.add_commit_listener(seen.append)
    task = asyncio.create_task(node.run())
    raw = Signer(ADMIN)("AddMeter", {"meter_id": "M9", "account": N1.public_key})
    await asyncio.sleep(0)
    node.submit_tx(raw)
    for _ in range(200):
        if seen:
            break
        await asyncio.sleep(0.01)
    await node.close()
    await task
    assert [(i.height, i.n_txs, i.txs) for i in seen] == [(1, 1, (raw,))]
    assert seen[0].block_hash == node.app.last_block_hash
    assert seen[0].app_hash == node.app.app_hash
    assert 0.0 <= seen[0].commit_seconds < 60.0
    assert node.stats["commit_listener_errors"] == 1
