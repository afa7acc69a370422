"""BFT mode: every commit feeds lem_ledger_commit_seconds and wakes the submitter (edge/bft.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.bft import BftLedger
from edge.clock import DaemonClock
from edge.health import Health
from edge.metrics import Metrics
from ledger.consensus.clock import LoopClock
from ledger.consensus.engine import EngineConfig
from ledger.node import Node
from ledger.transport.memory import MemoryNetwork
from tests.unit.ledger.helpers import ADMIN, N1, VAL, Signer, genesis


async def test_a_commit_observes_the_metric_and_wakes_listeners(tmp_path: Path) -> None:
    """One committed block: one lem_ledger_commit_seconds observation and one wake-up of each
    registered listener, right at the commit (no polling)."""
    g = genesis()
    transport = MemoryNetwork(LoopClock()).transport("v")
    node = Node.open(
        tmp_path, g, transport, key=VAL, config=EngineConfig(g.chain_id), durable=False
    )
    ledger = BftLedger(node, transport, Health(), DaemonClock(1.0))
    metrics = Metrics()
    ledger.on_commit = metrics.commit_seconds.observe
    woken = asyncio.Event()
    ledger.add_commit_listener(woken.set)
    task = asyncio.create_task(node.run())
    await asyncio.sleep(0)
    ledger.submit(Signer(ADMIN)("AddMeter", {"meter_id": "M7", "account": N1.public_key}))
    await asyncio.wait_for(woken.wait(), 10)
    await node.close()
    await task
    text = metrics.render().decode()
    assert "lem_ledger_commit_seconds_count 1.0" in text
    assert node.app.height == 1
