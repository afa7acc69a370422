"""Commit verification and BFT block time, pure functions for sync, members and the app.

Spec: docs/spec/consensus.md §Commit.
"""

from __future__ import annotations

from ledger.consensus.errors import CommitError, MessageError
from ledger.consensus.messages import Commit
from ledger.consensus.validators import ValidatorSet


def verify_commit(
    chain_id: str, validators: ValidatorSet, height: int, block_hash: bytes, commit: Commit
) -> int:
    """Check that ``commit`` proves ``block_hash`` at ``height`` under ``validators``.

    Every signature must verify and come from a distinct member of ``validators``, and the
    signers must hold more than 2/3 of the total power.

    Returns:
        The power that signed [voting power units].

    Raises:
        CommitError: wrong height or hash, unknown or repeated signer, bad signature, or
            not more than 2/3 of the power.
    """
    if commit.height != height or commit.block_hash != block_hash:
        raise CommitError(
            f"commit is for height {commit.height} block {commit.block_hash.hex()[:16]}…, "
            f"expected height {height} block {block_hash.hex()[:16]}…"
        )
    seen: set[bytes] = set()
    power = 0
    for vote in commit.votes():
        if vote.validator in seen:
            raise CommitError(f"validator {vote.validator.hex()[:16]}… signed twice")
        seen.add(vote.validator)
        if vote.validator not in validators:
            raise CommitError(f"signer {vote.validator.hex()[:16]}… is not a validator")
        try:
            vote.verify(chain_id)
        except MessageError as exc:
            raise CommitError(f"height {height}: {exc}") from exc
        power += validators.power_of(vote.validator)
    if not validators.is_quorum(power):
        raise CommitError(
            f"height {height}: signed power {power} is not > 2/3 of {validators.total_power}"
        )
    return power


def block_time_ms(commit: Commit, validators: ValidatorSet) -> int:
    """BFT time: the power-weighted median of the commit's precommit timestamps [ms].

    The timestamps sorted ascending; the result is the first one at which the cumulative
    power of signers exceeds half of the commit's signed power. Fewer than 1/3 of the power
    (the faulty ones) cannot move it outside the range of correct validators' clocks.
    """
    stamps = sorted((s.timestamp_ms, validators.power_of(s.validator)) for s in commit.sigs)
    total = sum(power for _, power in stamps)
    if total == 0:
        raise CommitError("commit has no signer in the validator set")
    acc = 0
    for ts, power in stamps:
        acc += power
        if 2 * acc > total:
            return ts
    raise AssertionError("unreachable: cumulative power exceeds half of the total")
