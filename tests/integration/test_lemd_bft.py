"""lemd in BFT mode (ledger/node.py): a validator and a member daemon on one transport.

In-process daemons (real stores, tasks, API) on the in-memory transport, whose partition is the
fault switch; and the same pair as real processes on a real mosquitto broker that is stopped
for a while.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.bft import open_bft
from edge.clock import DaemonClock
from edge.config import Config
from edge.health import Health
from edge.node_factory import Opened, open_store
from ledger import block as blk
from ledger import tx as txm
from ledger.app import App
from ledger.consensus.clock import LoopClock
from ledger.consensus.evidence import ledger_verifier
from ledger.keys import SigningKey
from ledger.transport.memory import LinkFaults, MemoryNetwork
from tests.support.lemd import make_community, running_daemon, until

pytestmark = pytest.mark.slow


def on_network(network: MemoryNetwork) -> Any:
    async def factory(
        config: Config, key: SigningKey, clock: DaemonClock, health: Health
    ) -> Opened:
        app = App(open_store(config), evidence_verifier=ledger_verifier)
        transport = network.transport(config.node.name)
        return await open_bft(config, key, clock, health, app, transport=transport)

    return factory


def measures(app: App, meter_id: str) -> list[int]:
    """Slot starts [ms] of every committed SetMeasure for ``meter_id``, in chain order."""
    out = []
    for height in range(1, app.height + 1):
        for raw in blk.decode(app.store.block(height) or b"").txs:
            tx = txm.decode(raw)
            if tx.kind == "SetMeasure" and tx.body["meter_id"] == meter_id:
                out.append(int(tx.body["slot_start_ms"]))
    return out


async def test_member_slots_cross_a_partition_exactly_once(tmp_path: Path) -> None:
    """A member's slots reach the validator's chain; cut off for hours of simulated time, it
    keeps its records and, after healing, every slot is committed once and both nodes agree."""
    nodes, _ = make_community(
        tmp_path, ["lic-h03", "lic-h05"], validators=1, speed=3_600.0, solve_grace_s=172_800
    )  # no settlement here: a period solved while the member is cut off refuses its slots
    network = MemoryNetwork(LoopClock(), seed=7, faults=LinkFaults(min_delay_ms=2, max_delay_ms=2))
    factory = on_network(network)
    async with (
        running_daemon(nodes[0], node_factory=factory) as validator,
        running_daemon(nodes[1], node_factory=factory) as member,
    ):
        v, m = validator.parts, member.parts
        assert v is not None
        assert m is not None
        assert m.meter is not None
        assert (v.node.role, m.node.role) == ("validator", "member")
        await until(lambda: len(measures(v.node.app, "lic-h05")) >= 3, 30, "member slots commit")
        network.partition({"n0"}, {"n1"})
        written = m.meter.records_written
        await until(lambda: m.meter.records_written >= written + 24, 30, "6 h cut off")
        await until(lambda: m.signer.resets >= 1, 10, "in-flight txs re-sent after the timeout")
        network.heal()
        backlog = m.meter.records_written
        await until(
            lambda: len(set(measures(v.node.app, "lic-h05"))) >= backlog, 40, "backlog committed"
        )
        height = v.node.app.height
        await until(lambda: m.node.app.height >= height, 20, "member follows")
        assert v.node.app.store.app_hash_at(height) == m.node.app.store.app_hash_at(height)
        assert m.outbox.rejected() == []
        slots = measures(v.node.app, "lic-h05")
    assert len(slots) == len(set(slots)), "a member slot was committed twice"
    ordered = sorted(slots)
    assert ordered == list(range(ordered[0], ordered[-1] + 900_000, 900_000)), "a slot was lost"
