"""Weighted tallies of the votes of one (height, round, step).

Spec: docs/spec/consensus.md §Votes. A validator counts once per (round, step): its first vote
is counted, a later different one is kept only as proof of equivocation.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.consensus.messages import Vote
from ledger.consensus.validators import ValidatorSet


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two different signed votes of one validator for one (height, round, step)."""

    first: Vote
    second: Vote


class VoteSet:
    """Votes of one round and step, tallied by voting power."""

    __slots__ = ("_by_hash", "_by_validator", "_valset", "total")

    def __init__(self, valset: ValidatorSet) -> None:
        self._valset = valset
        self._by_validator: dict[bytes, Vote] = {}
        self._by_hash: dict[bytes | None, int] = {}
        self.total = 0
        """Power of all counted votes, for any value or nil."""

    def add(self, vote: Vote) -> Conflict | None:
        """Count ``vote``; returns a :class:`Conflict` if the validator already voted otherwise.

        The caller has checked the signature and that the signer is a validator.
        """
        old = self._by_validator.get(vote.validator)
        if old is not None:
            if old.block_hash != vote.block_hash:
                return Conflict(old, vote)
            return None  # the same vote again (maybe another timestamp): counted once
        power = self._valset.power_of(vote.validator)
        self._by_validator[vote.validator] = vote
        self._by_hash[vote.block_hash] = self._by_hash.get(vote.block_hash, 0) + power
        self.total += power
        return None

    def power_for(self, block_hash: bytes | None) -> int:
        """Power that voted for ``block_hash`` (None: nil)."""
        return self._by_hash.get(block_hash, 0)

    def has_quorum_for(self, block_hash: bytes | None) -> bool:
        """More than 2/3 of the power voted for ``block_hash``."""
        return self._valset.is_quorum(self.power_for(block_hash))

    def has_quorum_any(self) -> bool:
        """More than 2/3 of the power voted (for anything, nil included)."""
        return self._valset.is_quorum(self.total)

    def quorum_hash(self) -> bytes | None:
        """The non-nil hash with > 2/3 of the power, if any."""
        for block_hash, power in self._by_hash.items():
            if block_hash is not None and self._valset.is_quorum(power):
                return block_hash
        return None

    def votes_for(self, block_hash: bytes | None) -> list[Vote]:
        """The counted votes for ``block_hash``, sorted by validator key."""
        return sorted(
            (v for v in self._by_validator.values() if v.block_hash == block_hash),
            key=lambda v: v.validator,
        )

    def all(self) -> list[Vote]:
        """Every counted vote."""
        return list(self._by_validator.values())
