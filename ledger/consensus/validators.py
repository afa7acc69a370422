"""The validator set: voting power, quorum thresholds and weighted round-robin proposers.

Spec: docs/spec/consensus.md §Validators. Proposer selection follows CometBFT's priority
scheme (spec/consensus/proposer-selection): every selection adds each validator's power to its
priority, picks the highest priority (ties broken by the smaller public key) and subtracts the
total power from the winner. Over many selections a validator proposes in proportion to its
power. All arithmetic is on ints, so every node computes the same sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ledger.consensus.errors import ConsensusError
from ledger.keys import PUBLIC_KEY_BYTES

MAX_TOTAL_POWER = 1 << 60
"""Bound on the summed power, so priorities stay far inside 64 bits."""

_WINDOW_FACTOR = 2
"""Priorities are rescaled when their spread exceeds this multiple of the total power."""


@dataclass(frozen=True, slots=True)
class Validator:
    """A validator: public key, voting power (> 0) and proposer priority."""

    pubkey: bytes
    power: int
    priority: int = 0


class ValidatorSet:
    """An immutable validator set with the priorities in force at one height.

    The priorities stored are those *before* the selection of round 0; :meth:`proposer`
    replays ``round + 1`` selections on a copy.
    """

    __slots__ = ("_by_key", "_prios", "_proposers", "total_power", "validators")

    def __init__(self, validators: Iterable[Validator]) -> None:
        vals = tuple(sorted(validators, key=lambda v: v.pubkey))
        if not vals:
            raise ConsensusError("a validator set needs at least one validator")
        keys = [v.pubkey for v in vals]
        if len(set(keys)) != len(keys):
            raise ConsensusError("duplicate validator key")
        for v in vals:
            if len(v.pubkey) != PUBLIC_KEY_BYTES or v.power <= 0:
                raise ConsensusError(f"validator {v.pubkey.hex()[:16]}: bad key or power <= 0")
        self.validators = vals
        self.total_power = sum(v.power for v in vals)
        if self.total_power > MAX_TOTAL_POWER:
            raise ConsensusError(f"total power {self.total_power} exceeds {MAX_TOTAL_POWER}")
        self._by_key = {v.pubkey: v for v in vals}
        self._proposers: list[bytes] = []
        self._prios: dict[bytes, int] = {}

    @classmethod
    def from_powers(cls, powers: Mapping[bytes, int]) -> ValidatorSet:
        """A genesis set: given powers, all priorities zero."""
        return cls(Validator(k, p) for k, p in powers.items())

    def power_of(self, pubkey: bytes) -> int:
        """Voting power of ``pubkey`` (0 when it is not a validator)."""
        v = self._by_key.get(pubkey)
        return v.power if v else 0

    def __contains__(self, pubkey: object) -> bool:
        return pubkey in self._by_key

    def __len__(self) -> int:
        return len(self.validators)

    def powers(self) -> dict[bytes, int]:
        """Public key → power."""
        return {v.pubkey: v.power for v in self.validators}

    def is_quorum(self, power: int) -> bool:
        """True when ``power`` is more than 2/3 of the total (Alg. 1's 2f+1)."""
        return 3 * power > 2 * self.total_power

    def is_one_third(self, power: int) -> bool:
        """True when ``power`` is more than 1/3 of the total (Alg. 1's f+1)."""
        return 3 * power > self.total_power

    def proposer(self, round_: int) -> bytes:
        """Public key of the proposer of ``round_`` at this set's height."""
        if round_ < 0:
            raise ConsensusError(f"round {round_} < 0 has no proposer")
        if not self._proposers:
            self._prios = _centered({v.pubkey: v.priority for v in self.validators}, self)
        while len(self._proposers) <= round_:
            self._proposers.append(_select(self._prios, self))
        return self._proposers[round_]

    def next_height(self, powers: Mapping[bytes, int] | None = None) -> ValidatorSet:
        """The set for the next height: one selection done, then ``powers`` applied.

        New validators start at priority −1.125·total (they do not jump the queue), removed
        ones vanish, re-weighted ones keep their priority.
        """
        prios = _centered({v.pubkey: v.priority for v in self.validators}, self)
        _select(prios, self)
        if powers is None:
            return ValidatorSet(Validator(k, self._by_key[k].power, p) for k, p in prios.items())
        new_total = sum(p for p in powers.values() if p > 0)
        start = -(new_total + (new_total >> 3))
        return ValidatorSet(
            Validator(k, p, prios.get(k, start)) for k, p in powers.items() if p > 0
        )

    def to_value(self) -> list[list[object]]:
        """Canonical value ``[[pubkey, power, priority], …]`` (sorted by key) for storage."""
        return [[v.pubkey, v.power, v.priority] for v in self.validators]

    @classmethod
    def from_value(cls, value: list[list[object]]) -> ValidatorSet:
        """Inverse of :meth:`to_value`."""
        vals = []
        for item in value:
            key, power, prio = item
            if not isinstance(key, bytes) or not isinstance(power, int):
                raise ConsensusError("stored validator entry is not [bytes, int, int]")
            if not isinstance(prio, int):
                raise ConsensusError("stored validator priority is not an int")
            vals.append(Validator(key, power, prio))
        return cls(vals)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ValidatorSet) and self.validators == other.validators

    def __hash__(self) -> int:
        return hash(self.validators)

    def __repr__(self) -> str:
        return f"ValidatorSet(n={len(self)}, total_power={self.total_power})"


def _centered(prios: dict[bytes, int], vset: ValidatorSet) -> dict[bytes, int]:
    """Rescale priorities into a window of 2·total and shift their mean to zero."""
    total = vset.total_power
    spread = max(prios.values()) - min(prios.values())
    window = _WINDOW_FACTOR * total
    if spread > window:
        ratio = -(-spread // window)  # ceiling division
        prios = {k: p // ratio for k, p in prios.items()}
    mean = sum(prios.values()) // len(prios)
    return {k: p - mean for k, p in prios.items()}


def _select(prios: dict[bytes, int], vset: ValidatorSet) -> bytes:
    """One selection step in place: add powers, pick the maximum, charge it the total."""
    for key in prios:
        prios[key] += vset.power_of(key)
    # Highest priority wins; among equals the smallest key, so the choice is total.
    winner = min(prios, key=lambda k: (-prios[k], k))
    prios[winner] -= vset.total_power
    return winner
