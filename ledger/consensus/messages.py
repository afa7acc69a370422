"""Signed consensus messages: proposals, votes, commits, and their wire envelopes.

Spec: docs/spec/consensus.md §Messages. Every signature covers the canonical encoding of a
fixed array (the *body*) under the domain ``lem/1/<chain_id>/<kind>/`` (ledger/keys.py), with
kind ``"proposal"`` or ``"vote"``. Bodies carry no float; timestamps are integer milliseconds
since the Unix epoch [ms].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from ledger import codec
from ledger.consensus.errors import MessageError
from ledger.errors import CodecError, SignatureError
from ledger.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, SigningKey, sha256, verify

HASH_BYTES = 32
MAX_BLOCK_BYTES = 1 << 20
"""Largest block a proposal may carry [bytes] (the codec's message bound)."""


class Step(IntEnum):
    """The step of a round; also the third component of a sign-state (height, round, step)."""

    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_bytes(value: Any, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


@dataclass(frozen=True, slots=True)
class Vote:
    """A prevote or precommit (Alg. 1 ⟨PREVOTE/PRECOMMIT, h, r, id(v)⟩).

    Attributes:
        step: :attr:`Step.PREVOTE` or :attr:`Step.PRECOMMIT`.
        height: block height (>= 1).
        round: round within the height (>= 0).
        block_hash: SHA-256 of the block voted for, or None for nil.
        timestamp_ms: the signer's clock when voting [ms since epoch].
        validator: the signer's 32-byte ed25519 public key.
        signature: 64-byte signature over :meth:`body` (empty until signed).
    """

    step: Step
    height: int
    round: int
    block_hash: bytes | None
    timestamp_ms: int
    validator: bytes
    signature: bytes = b""

    def body(self) -> bytes:
        """The signed bytes: ``[step, height, round, block_hash|nil, timestamp_ms, validator]``."""
        return codec.encode(
            [
                int(self.step),
                self.height,
                self.round,
                self.block_hash,
                self.timestamp_ms,
                self.validator,
            ]
        )

    @property
    def hrs(self) -> tuple[int, int, int]:
        """(height, round, step), the sign-state key."""
        return (self.height, self.round, int(self.step))

    def signed(self, key: SigningKey, chain_id: str) -> Vote:
        """Return this vote signed by ``key`` (whose public key must be :attr:`validator`)."""
        return replace(self, signature=key.sign(chain_id, "vote", self.body()))

    def verify(self, chain_id: str) -> None:
        """Raise :class:`MessageError` unless the signature is the validator's."""
        try:
            verify(self.validator, chain_id, "vote", self.body(), self.signature)
        except SignatureError as exc:
            raise MessageError("bad_signature", str(exc)) from exc

    @classmethod
    def from_body(cls, body: bytes, signature: bytes) -> Vote:
        """Parse a received body; raises :class:`MessageError` when malformed."""
        fields = _decode_fields(body, 6, "vote")
        step, height, round_, block_hash, ts, validator = fields
        if step not in (Step.PREVOTE, Step.PRECOMMIT) or not _is_int(height, 1):
            raise MessageError("malformed", f"vote step {step!r} / height {height!r}")
        if not _is_int(round_) or not _is_int(ts):
            raise MessageError("malformed", "vote round and timestamp must be ints >= 0")
        if block_hash is not None and not _is_bytes(block_hash, HASH_BYTES):
            raise MessageError("malformed", "vote block hash must be 32 bytes or nil")
        if not _is_bytes(validator, PUBLIC_KEY_BYTES) or not _is_bytes(signature, SIGNATURE_BYTES):
            raise MessageError("malformed", "vote validator key or signature has a wrong size")
        return cls(Step(step), height, round_, block_hash, ts, validator, signature)


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposal (Alg. 1 ⟨PROPOSAL, h, r, v, vr⟩); the signature covers the block hash.

    Attributes:
        height: block height (>= 1).
        round: round (>= 0).
        pol_round: the proposer's valid round ``vr`` (-1 when none).
        block_hash: the id of :attr:`block` (the application's ``block_id``).
        timestamp_ms: proposer's clock [ms since epoch].
        proposer: 32-byte public key of the proposer.
        block: the proposed block bytes (opaque to consensus).
        signature: 64-byte signature over :meth:`body`.
    """

    height: int
    round: int
    pol_round: int
    block_hash: bytes
    timestamp_ms: int
    proposer: bytes
    block: bytes
    signature: bytes = b""

    def body(self) -> bytes:
        """The signed bytes: ``[height, round, pol_round, block_hash, timestamp_ms, proposer]``."""
        return codec.encode(
            [
                self.height,
                self.round,
                self.pol_round,
                self.block_hash,
                self.timestamp_ms,
                self.proposer,
            ]
        )

    @property
    def hrs(self) -> tuple[int, int, int]:
        """(height, round, PROPOSE), the sign-state key."""
        return (self.height, self.round, int(Step.PROPOSE))

    def signed(self, key: SigningKey, chain_id: str) -> Proposal:
        """Return this proposal signed by ``key``."""
        return replace(self, signature=key.sign(chain_id, "proposal", self.body()))

    def verify(self, chain_id: str, block_id: Callable[[bytes], bytes] = sha256) -> None:
        """Raise :class:`MessageError` on a bad signature or a block whose id is not
        :attr:`block_hash` (``block_id``: the application's block identity)."""
        if block_id(self.block) != self.block_hash:
            raise MessageError("bad_block_hash", "proposal block does not hash to block_hash")
        self.verify_signature(chain_id)

    def verify_signature(self, chain_id: str) -> None:
        """Raise :class:`MessageError` unless the signature over :meth:`body` is the
        proposer's (the block itself is not looked at: a compact proposal checks it once
        rebuilt)."""
        try:
            verify(self.proposer, chain_id, "proposal", self.body(), self.signature)
        except SignatureError as exc:
            raise MessageError("bad_signature", str(exc)) from exc

    @classmethod
    def from_body(cls, body: bytes, signature: bytes, block: bytes) -> Proposal:
        """Parse a received body; raises :class:`MessageError` when malformed."""
        height, round_, pol_round, block_hash, ts, proposer = _decode_fields(body, 6, "proposal")
        if not _is_int(height, 1) or not _is_int(round_) or not _is_int(ts):
            raise MessageError("malformed", "proposal height/round/timestamp out of range")
        if not _is_int(pol_round, -1) or pol_round >= round_:
            raise MessageError("malformed", f"proposal pol_round {pol_round!r} not in [-1, round)")
        if not _is_bytes(block_hash, HASH_BYTES) or not _is_bytes(proposer, PUBLIC_KEY_BYTES):
            raise MessageError("malformed", "proposal hash or proposer key has a wrong size")
        if not _is_bytes(signature, SIGNATURE_BYTES) or not isinstance(block, bytes):
            raise MessageError("malformed", "proposal signature or block has a wrong type")
        return cls(height, round_, pol_round, block_hash, ts, proposer, block, signature)


@dataclass(frozen=True, slots=True)
class CommitSig:
    """One precommit inside a commit: who signed, when, and the signature."""

    validator: bytes
    timestamp_ms: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """Proof that a block was decided: > 2/3 of the power precommitted its hash in one round.

    Spec: docs/spec/consensus.md §Commit. Stored as ``last_commit`` in the next block and
    sent with blocks during sync. Signatures are sorted by validator key (one encoding per value).
    """

    height: int
    round: int
    block_hash: bytes
    sigs: tuple[CommitSig, ...]

    def votes(self) -> list[Vote]:
        """The precommits this commit carries, reconstructed for verification."""
        return [
            Vote(
                Step.PRECOMMIT,
                self.height,
                self.round,
                self.block_hash,
                s.timestamp_ms,
                s.validator,
                s.signature,
            )
            for s in self.sigs
        ]

    def to_value(self) -> list[Any]:
        """The canonical value ``[height, round, block_hash, [[key, ts, sig], …]]``."""
        return [
            self.height,
            self.round,
            self.block_hash,
            [[s.validator, s.timestamp_ms, s.signature] for s in self.sigs],
        ]

    def encode(self) -> bytes:
        """Canonical bytes of :meth:`to_value`."""
        return codec.encode(self.to_value())

    @classmethod
    def from_votes(cls, votes: list[Vote]) -> Commit:
        """Build a commit from precommits for one (height, round, block hash)."""
        first = votes[0]
        assert first.block_hash is not None
        sigs = sorted(
            (CommitSig(v.validator, v.timestamp_ms, v.signature) for v in votes),
            key=lambda s: s.validator,
        )
        return cls(first.height, first.round, first.block_hash, tuple(sigs))

    @classmethod
    def from_value(cls, value: Any) -> Commit:
        """Parse :meth:`to_value` output; raises :class:`MessageError` when malformed."""
        if not isinstance(value, list) or len(value) != 4:
            raise MessageError("malformed", "commit must be a 4-element array")
        height, round_, block_hash, raw = value
        if not _is_int(height, 1) or not _is_int(round_) or not _is_bytes(block_hash, HASH_BYTES):
            raise MessageError("malformed", "commit height/round/hash out of range")
        if not isinstance(raw, list) or not raw:
            raise MessageError("malformed", "commit carries no signatures")
        sigs = []
        for item in raw:
            ok = isinstance(item, list) and len(item) == 3
            if not ok or not _is_bytes(item[0], PUBLIC_KEY_BYTES) or not _is_int(item[1]):
                raise MessageError("malformed", "commit signature entry is not [key, ts, sig]")
            if not _is_bytes(item[2], SIGNATURE_BYTES):
                raise MessageError("malformed", "commit signature is not 64 bytes")
            sigs.append(CommitSig(item[0], item[1], item[2]))
        keys = [s.validator for s in sigs]
        if keys != sorted(set(keys)):
            raise MessageError("malformed", "commit signatures not sorted by unique validator")
        return cls(height, round_, block_hash, tuple(sigs))

    @classmethod
    def decode(cls, data: bytes) -> Commit:
        """Parse canonical commit bytes."""
        try:
            value = codec.decode(data)
        except CodecError as exc:
            raise MessageError("malformed", f"commit: {exc}") from exc
        return cls.from_value(value)


def _decode_fields(body: bytes, count: int, what: str) -> list[Any]:
    try:
        fields = codec.decode(body)
    except CodecError as exc:
        raise MessageError("malformed", f"{what} body: {exc}") from exc
    if not isinstance(fields, list) or len(fields) != count:
        raise MessageError("malformed", f"{what} body must be an array of {count}")
    return fields
