"""The fast part of the fault matrix: node processes, a real mosquitto, a proxy per node.

Each case runs one scenario of tests/support/fault_scenarios.py on a fresh cluster of 4
validator processes + 1 member process (the consensus node lemd runs, durable LMDB stores) and
then checks, from the stores and the consensus messages recorded at the broker: the same block
hash and app hash on every node at every common height, no honest key signed two messages for
one (height, round, step), every submitted tx committed on every node, progress after healing.
The whole matrix (SIGSTOP, delays, twins, 7 validators) is bench/fault_matrix.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import fault_scenarios, lemd_faults

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


async def _run(name: str, tmp_path: Path, seed: int) -> dict[str, object]:
    return await fault_scenarios.run(name, tmp_path, validators=4, members=1, seed=seed)


async def test_kill_9_of_the_proposer_then_restart(tmp_path: Path) -> None:
    """kill -9 of the next height's proposer: decided in round >= 1 by the 3 others; the
    restarted proposer catches up; invariants hold."""
    row = await _run("kill -9 proposer", tmp_path, 11)
    assert "decided in round" in str(row["outcome"])
    assert row["double_signers"] == 0


@pytest.mark.parametrize(
    "scenario",
    ["crash: signed, not persisted", "crash: persisted, not sent", "crash: block stored"],
)
async def test_crash_points_then_restart(tmp_path: Path, scenario: str) -> None:
    """A validator process dies (os._exit) exactly at a crash point, is restarted from its
    stores, never double-signs, catches up; all nodes agree."""
    row = await _run(scenario, tmp_path, 12)
    assert row["double_signers"] == 0
    assert len(set(row["heights"].values())) == 1  # type: ignore[attr-defined]


async def test_link_cut_then_heal(tmp_path: Path) -> None:
    """A validator's broker link is cut for two blocks; after healing it syncs at once."""
    row = await _run("node-broker link cut", tmp_path, 13)
    assert row["double_signers"] == 0


async def test_partition_2_2_commits_nothing_then_resumes(tmp_path: Path) -> None:
    """Two groups of two validators on two brokers: no commit while split; progress after."""
    row = await _run("partition 2+2 (no quorum)", tmp_path, 14)
    assert "no commit" in str(row["outcome"])


async def test_replayed_old_messages_change_nothing(tmp_path: Path) -> None:
    """Every recorded consensus message re-published shuffled (old, duplicated, reordered)."""
    row = await _run("old/duplicate/reordered messages replayed", tmp_path, 15)
    assert row["double_signers"] == 0


async def test_broker_killed_and_restarted(tmp_path: Path) -> None:
    """mosquitto killed -9 and restarted on its port: every node reconnects, blocks follow."""
    row = await _run("broker killed and restarted", tmp_path, 16)
    assert row["double_signers"] == 0


async def test_double_prevote_becomes_committed_evidence(tmp_path: Path) -> None:
    """A validator double-prevotes: an Evidence tx is committed on every node; the recorder
    saw exactly that one key double-sign."""
    row = await _run("double prevote", tmp_path, 17)
    assert row["double_signers"] == 1


async def test_f_plus_one_byzantine_fork_is_detected(tmp_path: Path) -> None:
    """2 of 4 keys run twice across a partition: both sides commit; after healing a node
    raises ForkError (or halts); the nodes that did not must still agree."""
    row = await _run("f+1 byzantine (twins)", tmp_path, 18)
    assert str(row["outcome"]).startswith("both sides committed")  # run() checked detection
    assert int(row["double_signers"]) >= 2  # type: ignore[call-overload]  # the twinned keys


async def test_lemd_processes_validator_link_cut(tmp_path: Path) -> None:
    """Real lemd processes (lemctl testnet init, 4 validators + 2 members with simulated
    meters): a validator's broker link is cut for 2 blocks and healed; it syncs; every store
    agrees (lemctl ledger show at the top common height); nobody double-signed."""
    row = await lemd_faults.run("lemd: node-broker link cut", tmp_path, 4, 6, seed=19)
    assert row["double_signers"] == 0
    assert int(row["common"]) >= 3
