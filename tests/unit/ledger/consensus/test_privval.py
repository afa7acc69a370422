"""The sign-state: never two different signatures for one (height, round, step), across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.consensus.crash import SIGNED_NOT_PERSISTED, CrashAt, SimulatedCrash
from ledger.consensus.errors import DoubleSignError
from ledger.consensus.messages import Proposal, Step, Vote
from ledger.consensus.privval import SignState
from ledger.keys import sha256
from tests.unit.ledger.consensus.helpers import CHAIN, KEYS, PKS

K, PK = KEYS[0], PKS[0]
HA, HB = sha256(b"A"), sha256(b"B")


def _vote(h: int, r: int, step: Step, block_hash: bytes | None, ts: int = 1) -> Vote:
    return Vote(step, h, r, block_hash, ts, PK)


def test_refuses_a_different_vote_for_the_same_step_even_after_reopening(tmp_path: Path) -> None:
    """A prevote for A is durable: after a restart a prevote for B at that step is refused."""
    ss = SignState(tmp_path)
    signed = ss.sign_vote(K, CHAIN, _vote(5, 0, Step.PREVOTE, HA))
    signed.verify(CHAIN)
    ss.close()
    again = SignState(tmp_path)
    assert again.last == (5, 0, int(Step.PREVOTE))
    with pytest.raises(DoubleSignError) as err:
        again.sign_vote(K, CHAIN, _vote(5, 0, Step.PREVOTE, HB))
    assert err.value.last == (5, 0, 1)


def test_same_vote_again_returns_the_stored_signature(tmp_path: Path) -> None:
    """Re-signing the identical vote, or one differing only in time, returns the first one."""
    ss = SignState(tmp_path)
    first = ss.sign_vote(K, CHAIN, _vote(5, 0, Step.PREVOTE, HA, ts=10))
    assert ss.sign_vote(K, CHAIN, _vote(5, 0, Step.PREVOTE, HA, ts=10)) == first
    later = ss.sign_vote(K, CHAIN, _vote(5, 0, Step.PREVOTE, HA, ts=99))
    assert later == first
    assert later.timestamp_ms == 10


def test_earlier_steps_are_refused_and_later_ones_allowed(tmp_path: Path) -> None:
    """Signing moves only forward in (height, round, step)."""
    ss = SignState(tmp_path)
    ss.sign_vote(K, CHAIN, _vote(5, 1, Step.PREVOTE, HA))
    with pytest.raises(DoubleSignError):
        ss.sign_proposal(K, CHAIN, Proposal(5, 1, -1, HA, 1, PK, b"A"))
    for h, r in [(5, 0), (4, 9)]:
        with pytest.raises(DoubleSignError):
            ss.sign_vote(K, CHAIN, _vote(h, r, Step.PRECOMMIT, HA))
    ss.sign_vote(K, CHAIN, _vote(5, 1, Step.PRECOMMIT, None))
    ss.sign_proposal(K, CHAIN, Proposal(5, 2, 1, HB, 1, PK, b"B")).verify(CHAIN)
    assert ss.last == (5, 2, 0)


def test_proposal_for_another_block_same_round_is_refused(tmp_path: Path) -> None:
    """A proposer restarted mid-round cannot propose a different block in that round."""
    ss = SignState(tmp_path)
    ss.sign_proposal(K, CHAIN, Proposal(3, 0, -1, HA, 1, PK, b"A"))
    with pytest.raises(DoubleSignError):
        ss.sign_proposal(K, CHAIN, Proposal(3, 0, -1, HB, 2, PK, b"B"))


def test_crash_before_persisting_leaves_no_record(tmp_path: Path) -> None:
    """A crash after signing but before persisting: the signature never left, nothing stored."""
    ss = SignState(tmp_path, crash=CrashAt(SIGNED_NOT_PERSISTED))
    with pytest.raises(SimulatedCrash):
        ss.sign_vote(K, CHAIN, _vote(5, 0, Step.PREVOTE, HA))
    ss.close()
    again = SignState(tmp_path)
    assert again.last is None
    again.sign_vote(K, CHAIN, _vote(5, 0, Step.PREVOTE, HB)).verify(CHAIN)
