"""Signed proposals, votes, commits and evidence: wire round trips and every rejection."""

from __future__ import annotations

import dataclasses

import pytest

from ledger import codec
from ledger.consensus import wire
from ledger.consensus.commit import block_time_ms, verify_commit
from ledger.consensus.errors import CommitError, EvidenceError, MessageError
from ledger.consensus.evidence import Evidence, ledger_verifier, verify_evidence
from ledger.consensus.messages import Commit, CommitSig, Proposal, Step, Vote
from ledger.keys import sha256
from tests.unit.ledger.consensus.helpers import CHAIN, KEYS, PKS, proposal, valset, vote

H = sha256(b"block")


def test_vote_and_proposal_round_trip_through_the_wire() -> None:
    """Encoding then decoding gives the same signed message, which verifies."""
    v = vote(Step.PRECOMMIT, 2, H, 1)
    back = wire.decode(CHAIN, wire.encode_vote(CHAIN, v))
    assert back == v
    assert isinstance(back, Vote)
    back.verify(CHAIN)
    p = proposal(valset(4), 1, b"block", pol=0)
    back_p = wire.decode(CHAIN, wire.encode_proposal(CHAIN, p))
    assert back_p == p
    assert isinstance(back_p, Proposal)
    back_p.verify(CHAIN)


def test_tampered_or_foreign_messages_are_refused_with_a_reason() -> None:
    """Wrong chain, bad signature, a block not matching its hash and junk each name a reason."""
    v = vote(Step.PREVOTE, 0, H, 0)
    with pytest.raises(MessageError) as err:
        wire.decode(CHAIN, wire.encode_vote("other", v))
    assert err.value.reason == "wrong_chain"
    forged = dataclasses.replace(v, block_hash=sha256(b"x"))
    with pytest.raises(MessageError) as err:
        forged.verify(CHAIN)
    assert err.value.reason == "bad_signature"
    p = dataclasses.replace(proposal(valset(4), 0, b"block"), block=b"other")
    with pytest.raises(MessageError) as err:
        p.verify(CHAIN)
    assert err.value.reason == "bad_block_hash"
    for junk in [b"\xc1", codec.encode(["vote", CHAIN, b"x", b"y"]), codec.encode([1, 2, 3])]:
        with pytest.raises(MessageError) as err:
            wire.decode(CHAIN, junk)
        assert err.value.reason == "malformed"


def test_proposal_pol_round_must_precede_its_round() -> None:
    """A proposal claiming a valid round ≥ its own round is malformed."""
    p = Proposal(1, 2, 2, H, 1, PKS[0], b"block").signed(KEYS[0], CHAIN)
    with pytest.raises(MessageError, match="pol_round"):
        wire.decode(CHAIN, wire.encode_proposal(CHAIN, p))


def _commit(signers: list[int], height: int = 1) -> Commit:
    return Commit.from_votes([vote(Step.PRECOMMIT, 0, H, i, height) for i in signers])


def test_verify_commit_accepts_a_quorum_and_returns_its_power() -> None:
    """Precommits of > 2/3 of the power prove the block."""
    assert verify_commit(CHAIN, valset(4), 1, H, _commit([0, 1, 2])) == 3
    c = Commit.decode(_commit([0, 1, 2]).encode())
    assert verify_commit(CHAIN, valset(4), 1, H, c) == 3


def test_verify_commit_refuses_every_kind_of_bad_commit() -> None:
    """Too little power, a stranger, a bad signature, wrong height or hash: CommitError."""
    vs = valset(4)
    with pytest.raises(CommitError, match="not > 2/3"):
        verify_commit(CHAIN, vs, 1, H, _commit([0, 1]))
    with pytest.raises(CommitError, match="not a validator"):
        verify_commit(CHAIN, vs, 1, H, _commit([0, 1, 5]))
    good = _commit([0, 1, 2])
    bad_sig = dataclasses.replace(good.sigs[0], timestamp_ms=good.sigs[0].timestamp_ms + 1)
    tampered = dataclasses.replace(good, sigs=(bad_sig, *good.sigs[1:]))
    with pytest.raises(CommitError, match="bad signature"):
        verify_commit(CHAIN, vs, 1, H, tampered)
    with pytest.raises(CommitError, match="expected height 2"):
        verify_commit(CHAIN, vs, 2, H, good)
    with pytest.raises(CommitError):
        verify_commit(CHAIN, vs, 1, sha256(b"other"), good)


def test_commit_encoding_is_canonical() -> None:
    """Unsorted or repeated signers are malformed: one encoding per commit."""
    good = _commit([0, 1, 2]).to_value()
    good[3] = list(reversed(good[3]))
    with pytest.raises(MessageError, match="sorted"):
        Commit.from_value(good)


def test_block_time_is_the_power_weighted_median() -> None:
    """The weighted median ignores outliers held by less than half of the signed power."""
    vs = valset(4, [1, 1, 1, 5])
    sigs = tuple(
        sorted(
            (CommitSig(PKS[i], ts, b"\0" * 64) for i, ts in enumerate([10, 20, 9_999, 15])),
            key=lambda s: s.validator,
        )
    )
    assert block_time_ms(Commit(1, 0, H, sigs), vs) == 15
    assert block_time_ms(Commit(1, 0, H, sigs), valset(4)) == 20  # upper median of 4 equal


def test_evidence_round_trip_and_verification() -> None:
    """Two signed conflicting votes are evidence; its key ignores which pair was caught."""
    a, b = vote(Step.PREVOTE, 0, H, 1), vote(Step.PREVOTE, 0, None, 1)
    ev = Evidence(a, b)
    back = Evidence.decode(ev.encode())
    verify_evidence(CHAIN, valset(4), back)
    assert back.key == Evidence(b, a).key
    assert back.encode() == Evidence(b, a).encode()
    c = vote(Step.PREVOTE, 0, sha256(b"c"), 1)
    assert Evidence(a, c).key == ev.key


def test_non_evidence_is_refused() -> None:
    """Same value, other signer, other step, or a stranger: EvidenceError."""
    vs = valset(4)
    a = vote(Step.PREVOTE, 0, H, 1)
    cases = [
        Evidence(a, vote(Step.PREVOTE, 0, H, 1)),
        Evidence(a, vote(Step.PREVOTE, 0, None, 2)),
        Evidence(a, vote(Step.PRECOMMIT, 0, None, 1)),
        Evidence(vote(Step.PREVOTE, 0, H, 6), vote(Step.PREVOTE, 0, None, 6)),
    ]
    for ev in cases:
        with pytest.raises(EvidenceError):
            verify_evidence(CHAIN, vs, ev)
    with pytest.raises(EvidenceError):
        Evidence.decode(b"junk")


def test_ledger_verifier_accepts_a_double_sign_and_refuses_the_rest() -> None:
    """The ledger's EvidenceVerifier names the offender; non-evidence is a ValueError."""
    a, b = vote(Step.PRECOMMIT, 3, H, 2, height=7), vote(Step.PRECOMMIT, 3, None, 2, height=7)
    vote_a, vote_b = Evidence(a, b).encode_pair()
    found = ledger_verifier(CHAIN, vote_a, vote_b)
    assert (found.validator, found.height, found.round) == (PKS[2], 7, 3)
    assert ledger_verifier(CHAIN, vote_b, vote_a) == found
    with pytest.raises(ValueError, match="agree"):
        ledger_verifier(CHAIN, vote_a, vote_a)
    with pytest.raises(ValueError, match="signature"):
        ledger_verifier("other-chain", vote_a, vote_b)
    with pytest.raises(ValueError, match="evidence message"):
        ledger_verifier(CHAIN, b"junk", vote_b)
