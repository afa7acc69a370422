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
    sim.chaos(random.Random(seed), steps=8)
    sim.check_agreement()
    sim.check_no_double_sign()
    assert sim.heal_all(2), [node.height for node in sim.nodes.values()]
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
