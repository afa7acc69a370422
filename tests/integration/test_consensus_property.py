"""Agreement as a property: random seeded fault schedules, checked after every run.

Also shows the checks can fail: a validator whose sign-state is wiped is caught double-signing.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.consensus.sim import Simulation
from ledger.transport.memory import LinkFaults


def _chaos(sim: Simulation, rng: random.Random, steps: int) -> None:
    """Random txs, crashes (at most f nodes down), restarts, partitions and heals."""
    ids = sorted(sim.nodes)
    f = (len(ids) - 1) // 3
    for _ in range(steps):
        sim.submit(count=rng.randint(1, 3))
        event = rng.random()
        down = [i for i in ids if not sim.nodes[i].alive]
        if event < 0.25 and len(down) < f:
            sim.crash(rng.choice([i for i in ids if sim.nodes[i].alive]))
        elif event < 0.5 and down:
            sim.restart(rng.choice(down))
        elif event < 0.65:
            cut = rng.randint(1, len(ids) - 1)
            shuffled = rng.sample(ids, len(ids))
            sim.network.partition(shuffled[:cut], shuffled[cut:])
        elif event < 0.8:
            sim.network.heal()
        sim.run_for(rng.randint(50, 4000))


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 2**32),
    n=st.sampled_from([4, 7]),
    drop=st.sampled_from([0.0, 0.1, 0.3]),
    dup=st.sampled_from([0.0, 0.2]),
    reorder=st.sampled_from([0.0, 0.2]),
)
def test_random_fault_schedules_keep_agreement_and_heal(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    n: int,
    drop: float,
    dup: float,
    reorder: float,
) -> None:
    """Under any seeded mix of faults no two nodes commit different blocks, no honest validator
    double-signs, and once faults heal every node reaches the same new height."""
    faults = LinkFaults(drop_rate=drop, duplicate_rate=dup, reorder_rate=reorder, max_delay_ms=80)
    sim = Simulation(tmp_path_factory.mktemp("sim"), validators=n, seed=seed, faults=faults)
    _chaos(sim, random.Random(seed), steps=8)
    sim.check_agreement()
    sim.check_no_double_sign()
    sim.network.heal()
    sim.network.set_faults(LinkFaults())
    for node_id, node in sim.nodes.items():
        if not node.alive:
            sim.restart(node_id)
    target = max(node.height for node in sim.nodes.values()) + 2
    for _ in range(2):
        sim.submit(count=1)
        sim.run_for(3_000)
    assert sim.run_until(sim.all_reach(target), 120_000), [x.height for x in sim.nodes.values()]
    sim.check_agreement()
    sim.check_no_double_sign()


def test_wiped_sign_state_is_caught_double_signing(tmp_path: Path) -> None:
    """The double-sign check is real: a validator restarted without its sign-state and WAL
    signs the same step again with another timestamp, and the check reports it."""
    sim = Simulation(tmp_path, validators=4, seed=43)
    sim.network.partition({"v0", "v1"}, {"v2", "v3"})
    sim.submit("v1", 1)
    sim.run_for(5_000)
    sim.check_no_double_sign()
    sim.crash("v1")
    shutil.rmtree(tmp_path / "v1" / "privval")
    shutil.rmtree(tmp_path / "v1" / "cs")
    sim.restart("v1")
    sim.submit("v1", 1)
    sim.run_for(5_000)
    with pytest.raises(AssertionError, match="double-signed"):
        sim.check_no_double_sign()
