"""Liveness on an idle chain does not depend on the slow heartbeat (docs/spec/consensus.md §7).

Deterministic simulation (virtual clock): a validator that missed a decision while the chain
idles learns it is behind from the rotating idle re-announcement of the latest commit.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ledger.consensus import wire
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


def test_idle_tip_is_a_small_commit_without_the_block(tmp_path: Path) -> None:
    """While idle the chain publishes only tips: commits of a few hundred bytes, about one
    per period (not one per validator), never the block."""
    sim = Simulation(tmp_path, validators=4, seed=9, heartbeat_ms=3_600_000, tip_ms=20_000)
    _commit_one(sim, ["v0", "v1", "v2", "v3"])
    sim.run_for(5_000)
    sent: list[tuple[str, bytes]] = []
    sim.network.add_tap(lambda s, c, p, t: sent.append((c, p)))
    sim.run_for(100_000)
    kinds = {wire.decode(sim.chain_id, p).__class__.__name__ for c, p in sent if c == "block"}
    assert kinds == {"Tip"}
    tips = [p for c, p in sent if c == "block"]
    assert 3 <= len(tips) <= 7  # 100 s / 20 s periods
    assert max(len(p) for p in tips) < 600  # 4 signatures + framing [bytes]
    assert {c for c, _ in sent} == {"block"}


def test_forged_tip_is_ignored(tmp_path: Path) -> None:
    """A tip whose commit does not verify (a broker may inject anything) is counted and
    triggers no sync request."""
    sim = Simulation(tmp_path, validators=4, seed=9, heartbeat_ms=3_600_000)
    _commit_one(sim, ["v0", "v1", "v2", "v3"])
    sim.run_for(10_000)
    node = sim.nodes["v1"]
    assert node.engine is not None
    real = node.engine.last_commit
    assert real is not None
    forged = replace(real, height=real.height + 5)  # signatures no longer match
    before = node.engine.stats["sync_requests"]
    node.engine.receive("block", "x", wire.encode_tip(sim.chain_id, forged))
    assert node.engine.stats["bad_tip"] == 1
    sim.run_for(10_000)
    assert node.engine.stats["sync_requests"] == before
