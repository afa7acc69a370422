"""Liveness on an idle chain does not depend on the slow heartbeat (docs/spec/consensus.md §7).

Deterministic simulation (virtual clock): a validator that missed a decision while the chain
idles learns it is behind from the rotating idle re-announcement of the latest commit.
"""

from __future__ import annotations

from pathlib import Path

from ledger.consensus.engine import EngineConfig
from ledger.consensus.sim import Simulation


def _commit_one(sim: Simulation, ids: list[str]) -> None:
    target = max(sim.nodes[i].height for i in ids) + 1
    sim.submit(ids[0], 1)
    assert sim.run_until(sim.all_reach(target, ids), 60_000)


def test_default_heartbeat_is_slow_and_tip_is_periodic() -> None:
    """Defaults for a metered link: an empty block at most every 15 min, a tip every 5 min."""
    config = EngineConfig("c")
    assert config.heartbeat_ms == 900_000
    assert config.tip_ms == 300_000


def test_lagging_validator_catches_up_from_the_idle_tip(tmp_path: Path) -> None:
    """v3 misses height 2 behind a partition; after healing, with no tx and no heartbeat for an
    hour, it reaches height 2 within two tip periods, and no empty block is made meanwhile."""
    sim = Simulation(tmp_path, validators=4, seed=5, heartbeat_ms=3_600_000, tip_ms=20_000)
    _commit_one(sim, ["v0", "v1", "v2", "v3"])
    sim.network.partition({"v0", "v1", "v2"}, {"v3"})
    _commit_one(sim, ["v0", "v1", "v2"])
    sim.run_for(5_000)  # v3's sync requests during the split were lost
    sim.network.heal()
    assert sim.nodes["v3"].height == 1
    assert sim.run_until(sim.all_reach(2), 45_000)
    sim.run_for(60_000)
    assert {n.height for n in sim.nodes.values()} == {2}
    announced = sum(
        n.engine.stats["tip_announced"] for n in sim.nodes.values() if n.engine is not None
    )
    assert 1 <= announced <= 6  # about one per 20 s period, not one per validator
    sim.check_no_double_sign()
    assert sim.check_agreement() == 2


def test_without_tip_the_laggard_waits_for_the_heartbeat(tmp_path: Path) -> None:
    """Negative control: with the tip disabled (period longer than the run) v3 stays behind
    the idle chain, which is why the tip exists."""
    sim = Simulation(tmp_path, validators=4, seed=5, heartbeat_ms=3_600_000, tip_ms=10**9)
    _commit_one(sim, ["v0", "v1", "v2", "v3"])
    sim.network.partition({"v0", "v1", "v2"}, {"v3"})
    _commit_one(sim, ["v0", "v1", "v2"])
    sim.run_for(5_000)
    sim.network.heal()
    sim.run_for(100_000)
    assert sim.nodes["v3"].height == 1
