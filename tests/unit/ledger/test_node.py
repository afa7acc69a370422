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
