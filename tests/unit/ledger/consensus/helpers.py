"""Shared builders for consensus unit tests: deterministic keys, sets, votes, proposals."""

from __future__ import annotations

from ledger.consensus.core import HeightState, TimeoutConfig
from ledger.consensus.messages import Proposal, Step, Vote
from ledger.consensus.validators import ValidatorSet
from ledger.keys import SigningKey, sha256

CHAIN = "unit"
KEYS = [SigningKey(sha256(f"unit-key-{i}".encode())) for i in range(8)]
PKS = [k.public_key for k in KEYS]
T = TimeoutConfig(1000, 500, 400, 200, 300, 100)


def valset(n: int = 4, powers: list[int] | None = None) -> ValidatorSet:
    """The first ``n`` test keys with ``powers`` (default 1 each)."""
    return ValidatorSet.from_powers(dict(zip(PKS[:n], powers or [1] * n, strict=True)))


def index_of(pubkey: bytes) -> int:
    return PKS.index(pubkey)


def vote(step: Step, rnd: int, block_hash: bytes | None, i: int, height: int = 1) -> Vote:
    """A signed vote of key ``i``."""
    return Vote(step, height, rnd, block_hash, 1000 + i, PKS[i]).signed(KEYS[i], CHAIN)


def proposal(vs: ValidatorSet, rnd: int, block: bytes, pol: int = -1, height: int = 1) -> Proposal:
    """A signed proposal by the rightful proposer of ``rnd``."""
    i = index_of(vs.proposer(rnd))
    p = Proposal(height, rnd, pol, sha256(block), 2000, PKS[i], block)
    return p.signed(KEYS[i], CHAIN)


def core(
    me: int | None, vs: ValidatorSet, valid: set[bytes] | None = None, value: bytes = b"mine"
) -> HeightState:
    """A height-1 core for key ``me``; ``valid``: the blocks the app accepts (None: all)."""
    return HeightState(
        1,
        vs,
        PKS[me] if me is not None else None,
        T,
        (lambda b: True) if valid is None else (lambda b: b in valid),
        lambda r: value,
    )


def non_proposer(vs: ValidatorSet, rnd: int = 0) -> int:
    """A key index that does not propose ``rnd``."""
    return next(i for i in range(len(vs)) if PKS[i] != vs.proposer(rnd))
