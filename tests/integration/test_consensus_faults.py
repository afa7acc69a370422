"""Consensus fault matrix in one process: real keys, signatures and LMDB; virtual time.

Each test drives a seeded :class:`Simulation` and checks the invariants after the run:
identical block hashes at every height on every node, no honest validator ever sent two
different signed messages for one (height, round, step), and progress once faults heal.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ledger.consensus import crash as cp
from ledger.consensus.crash import CrashAt
from ledger.consensus.sim import Simulation
from ledger.keys import sha256
from ledger.transport.base import Message
from ledger.transport.memory import LinkFaults

LOSSY = LinkFaults(
    drop_rate=0.2, duplicate_rate=0.2, reorder_rate=0.2, min_delay_ms=1, max_delay_ms=50
)


def _commit_heights(sim: Simulation, heights: int, max_ms: int = 120_000) -> None:
    """Submit txs and run until every live honest node committed ``heights`` more blocks."""
    target = max(n.height for n in sim.nodes.values()) + heights
    for h in range(target - heights + 1, target + 1):
        sim.submit(count=2)
        assert sim.run_until(sim.all_reach(h), max_ms), [n.height for n in sim.nodes.values()]


def _check(sim: Simulation) -> int:
    sim.check_no_double_sign()
    return sim.check_agreement()


@pytest.mark.parametrize("n", [4, 7])
def test_agreement_under_drop_duplicate_reorder(tmp_path: Path, n: int) -> None:
    """20% drops, duplicates and reorders only delay: all nodes commit the same 8 blocks."""
    sim = Simulation(tmp_path, validators=n, seed=n, faults=LOSSY)
    _commit_heights(sim, 8)
    assert _check(sim) >= 8
    assert sim.network.stats["dropped"] > 50
    assert sim.network.stats["duplicated"] > 50


def test_weighted_powers_make_progress_and_rotate(tmp_path: Path) -> None:
    """Unequal powers (5,1,1,1): blocks commit and the heavy validator proposes most."""
    sim = Simulation(tmp_path, validators=4, seed=3, powers=[5, 1, 1, 1])
    _commit_heights(sim, 8)
    assert _check(sim) >= 8
    proposers = [sim.nodes["v0"].engine.valset.proposer(0)]  # type: ignore[union-attr]
    assert proposers[0] in sim.genesis


def test_partition_two_two_halts_then_heals(tmp_path: Path) -> None:
    """A 2+2 split has no 2/3 side: nothing commits; after healing all progress together."""
    sim = Simulation(tmp_path, validators=4, seed=5)
    _commit_heights(sim, 2)
    sim.network.partition({"v0", "v1"}, {"v2", "v3"})
    sim.submit("v0", 3)
    sim.submit("v3", 3)
    sim.run_for(30_000)
    assert {n.height for n in sim.nodes.values()} == {2}
    sim.network.heal()
    assert sim.run_until(sim.all_reach(3), 60_000)
    _commit_heights(sim, 2)
    assert _check(sim) >= 5


def test_partition_three_one_minority_catches_up(tmp_path: Path) -> None:
    """In a 3+1 split the 3 commit; the isolated node syncs the missed blocks after healing."""
    sim = Simulation(tmp_path, validators=4, seed=6)
    _commit_heights(sim, 1)
    sim.network.partition({"v0", "v1", "v2"}, {"v3"})
    _commit_heights_of(sim, ["v0", "v1", "v2"], 5)
    assert sim.nodes["v3"].height == 1
    sim.network.heal()
    _commit_heights(sim, 1)
    assert sim.nodes["v3"].engine.stats["followed"] >= 5  # type: ignore[union-attr]
    assert _check(sim) >= 7


def _commit_heights_of(sim: Simulation, ids: list[str], heights: int) -> None:
    for _ in range(heights):
        target = max(sim.nodes[i].height for i in ids) + 1
        sim.submit(ids[0], 1)
        assert sim.run_until(sim.all_reach(target, ids), 60_000)


def test_crashed_validator_restarts_from_its_stores(tmp_path: Path) -> None:
    """A validator killed mid-run resumes from its sign-state and WAL, syncs and votes again."""
    sim = Simulation(tmp_path, validators=4, seed=7, faults=LinkFaults(max_delay_ms=30))
    _commit_heights(sim, 2)
    sim.submit("v1", 2)
    sim.run_for(3)  # mid-height: some votes are out
    sim.crash("v1")
    _commit_heights(sim, 3)
    sim.restart("v1")
    _commit_heights(sim, 1)
    assert sim.nodes["v1"].height == sim.nodes["v0"].height
    sim.crash("v2")  # now progress needs v1's votes
    _commit_heights(sim, 3)
    assert sim.nodes["v1"].engine.stats["blocks"] >= 3  # type: ignore[union-attr]
    assert _check(sim) >= 6


@pytest.mark.parametrize("point", cp.POINTS)
@pytest.mark.parametrize("nth", [1, 2, 4])
def test_crash_points_never_cause_double_signing(tmp_path: Path, point: str, nth: int) -> None:
    """A crash right after signing, after persisting, or after storing the block, then a
    restart, never leads to two different signatures for one step nor to disagreement."""
    sim = Simulation(tmp_path, validators=4, seed=11 + nth, faults=LinkFaults(max_delay_ms=20))
    _commit_heights(sim, 1)
    sim.crash("v2")
    sim.restart("v2", CrashAt(point, nth))
    for _ in range(30):
        sim.submit(count=1)
        sim.run_for(400)
        if not sim.nodes["v2"].alive:
            break
    assert not sim.nodes["v2"].alive, "the crash point was never reached"
    sim.restart("v2")
    sim.crash("v3")  # v2 is needed for a 3/4 quorum from here on
    _commit_heights(sim, 3)
    assert _check(sim) >= 4


def test_proposer_crash_mid_round_moves_to_next_round(tmp_path: Path) -> None:
    """The proposer dies after persisting its proposal but before sending: the others decide
    in a later round; restarted, it re-sends only what it had signed and catches up."""
    sim = Simulation(tmp_path, validators=4, seed=13)
    _commit_heights(sim, 2)
    sim.run_for(5_000)  # leftover txs commit; then the next height waits for a tx
    height = sim.nodes["v0"].height + 1
    assert not any(n.engine.core.started for n in sim.nodes.values() if n.engine)
    proposer = sim.proposer(height)
    sim.crash(proposer)
    sim.restart(proposer, CrashAt(cp.PERSISTED_NOT_SENT))
    sim.submit(proposer, 1)
    assert not sim.nodes[proposer].alive
    others = [i for i in sim.nodes if i != proposer]
    assert sim.run_until(sim.all_reach(height, others), 60_000)
    commit = sim.nodes[others[0]].app.commits[height - 1]
    assert commit.round >= 1
    sim.restart(proposer)
    _commit_heights(sim, 2)
    assert _check(sim) >= height + 2


def test_replayed_old_messages_are_harmless(tmp_path: Path) -> None:
    """Every message of earlier heights delivered again, shuffled, changes nothing."""
    sim = Simulation(tmp_path, validators=4, seed=17)
    recorded: list[Message] = []
    sim.network.add_tap(lambda s, c, p, t: recorded.append(Message(c, s, p)))
    _commit_heights(sim, 4)
    rng = random.Random(1)
    rng.shuffle(recorded)
    for message in recorded:
        for target in sim.nodes:
            sim.network.inject(target, message)
    _commit_heights(sim, 2)
    assert _check(sim) >= 6
    stats = sim.nodes["v0"].engine.stats  # type: ignore[union-attr]
    assert stats["old_height"] + stats["old_block"] + stats["duplicate"] > 20


@pytest.mark.parametrize("behaviour", ["double-vote", "double-propose"])
def test_equivocation_becomes_evidence_committed_once(tmp_path: Path, behaviour: str) -> None:
    """A validator sending conflicting votes or proposals is caught: its evidence is committed,
    each offence exactly once, and the honest nodes still agree."""
    sim = Simulation(tmp_path, validators=4, seed=19)
    sim.crash("v0")
    byz = sim.add_node("v0x", sim.keys[0], byzantine=behaviour)
    assert byz.alive
    _commit_heights(sim, 6)
    assert _check(sim) >= 6
    app = sim.nodes["v1"].app
    assert app.evidence_keys, "no evidence was committed"
    assert len(app.evidence_keys) == len(set(app.evidence_keys))
    assert sim.keys[0].public_key in sim.double_signers()


def test_f_twins_are_tolerated(tmp_path: Path) -> None:
    """With f = 2 of 7 keys running on two nodes each (twins), honest nodes stay in agreement."""
    sim = Simulation(tmp_path, validators=7, seed=23, faults=LinkFaults(max_delay_ms=40))
    sim.add_node("v0b", sim.keys[0])
    sim.add_node("v1b", sim.keys[1])
    _commit_heights(sim, 6)
    assert _check(sim) >= 6


def test_f_plus_one_twins_fork_is_detected(tmp_path: Path) -> None:
    """With 2 of 4 keys twinned across a partition both sides can commit different blocks;
    the honest nodes detect the conflicting commits after healing and halt — never silently."""
    sim = Simulation(tmp_path, validators=4, seed=29)
    sim.add_node("v0b", sim.keys[0])
    sim.add_node("v1b", sim.keys[1])
    side_a, side_b = ["v0", "v1", "v2"], ["v0b", "v1b", "v3"]
    sim.network.partition(side_a, side_b)
    sim.submit("v2", 1)
    sim.submit("v3", 1)
    sim.run_until(sim.all_reach(1, ["v2", "v3"]), 60_000)
    v2, v3 = sim.nodes["v2"], sim.nodes["v3"]
    diverged = v2.app.block_hash(1) != v3.app.block_hash(1)
    assert diverged, "the scenario should produce two commits at height 1"
    sim.network.heal()
    sim.run_for(10_000)
    assert v2.fork is not None or v3.fork is not None
    assert not v2.alive or not v3.alive


def test_members_follow_verified_blocks(tmp_path: Path) -> None:
    """Member nodes never vote, yet commit the same blocks by verifying commits."""
    sim = Simulation(tmp_path, validators=4, seed=31, members=2, faults=LOSSY)
    _commit_heights(sim, 5)
    assert _check(sim) >= 5
    member = sim.nodes["m0"]
    assert member.engine is not None
    assert member.engine.stats["followed"] >= 5
    assert {key[0] for key in sim.signed} <= set(sim.genesis)


def test_validator_set_change_applies_at_height_boundary(tmp_path: Path) -> None:
    """Removing v3 after height 3: later commits carry no v3 signature and 3 nodes suffice."""
    sim = Simulation(tmp_path, validators=4, seed=37, changes={3: {0: 1, 1: 1, 2: 1}})
    _commit_heights(sim, 4)
    sim.crash("v3")
    _commit_heights_of(sim, ["v0", "v1", "v2"], 2)
    v3_key = sim.keys[3].public_key
    commits = sim.nodes["v0"].app.commits
    assert all(s.validator != v3_key for c in commits[3:] for s in c.sigs)
    store = sim.nodes["v0"].engine.store  # type: ignore[union-attr]
    assert v3_key in store.load_valset(3)  # type: ignore[operator]
    assert v3_key not in store.load_valset(4)  # type: ignore[operator]
    assert _check(sim) >= 4


def test_blocks_only_with_transactions_or_heartbeat(tmp_path: Path) -> None:
    """Without transactions nothing is proposed until the heartbeat; a tx starts a height."""
    sim = Simulation(tmp_path, validators=4, seed=41, heartbeat_ms=60_000)
    channels: list[str] = []
    sim.network.add_tap(lambda s, c, p, t: channels.append(c))
    sim.run_for(59_000)
    assert {n.height for n in sim.nodes.values()} == {0}
    assert channels == ["sync_req"] * 8  # two start-up probes per node, then silence
    sim.run_for(2_000)
    assert {n.height for n in sim.nodes.values()} == {1}
    sim.submit("v2", 1)
    assert sim.run_until(sim.all_reach(2), 5_000)


def test_lagging_validator_with_a_private_tx_needs_no_heartbeat(tmp_path: Path) -> None:
    """A validator that missed a decision while the chain idled, holding a tx nobody else got,
    catches up (peers send it the block), wakes the others with its votes and re-gossips the
    tx: it is committed in seconds, long before the 60 s heartbeat."""
    sim = Simulation(tmp_path, validators=4, seed=47, heartbeat_ms=60_000)
    _commit_heights(sim, 1)
    sim.network.partition({"v0", "v1", "v2"}, {"v3"})
    _commit_heights_of(sim, ["v0", "v1", "v2"], 1)
    sim.network.heal()
    lagging = sim.nodes["v3"]
    assert lagging.height == 1
    assert lagging.app.add_tx(b"private-tx")  # not gossiped: only v3 has it
    assert lagging.engine is not None
    lagging.engine.notify_tx()
    digest = sha256(b"private-tx")
    assert sim.run_until(
        lambda: all(digest in n.app.committed_txs for n in sim.nodes.values()), 10_000
    )
    assert _check(sim) >= 3
