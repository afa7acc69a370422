"""Evidence of equivocation: two signed conflicting messages from one validator.

Spec: docs/spec/consensus.md §Evidence. Evidence is handed to the application as a tx of kind
``evidence`` whose payload is :meth:`Evidence.encode`; the ledger commits each (validator,
height, round, step) offence once, keyed by :attr:`Evidence.key`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import codec
from ledger.consensus.errors import EvidenceError, MessageError
from ledger.consensus.messages import Proposal, Vote
from ledger.consensus.validators import ValidatorSet
from ledger.errors import CodecError, SignatureError
from ledger.keys import sha256, verify


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two conflicting signed votes, or two conflicting signed proposals, of one signer."""

    first: Vote | Proposal
    second: Vote | Proposal

    @property
    def signer(self) -> bytes:
        """The equivocating validator's public key."""
        m = self.first
        return m.validator if isinstance(m, Vote) else m.proposer

    @property
    def key(self) -> bytes:
        """Identity of the offence: sha256 of [signer, height, round, step].

        Two evidences of the same offence (other pairs of messages) share it, so the ledger
        records each offence once.
        """
        return sha256(codec.encode([self.signer, *self.first.hrs]))

    def to_value(self) -> list[Any]:
        """``[kind, body1, sig1, body2, sig2]`` with the two messages in a canonical order."""
        a, b = sorted((self.first, self.second), key=lambda m: m.body())
        kind = "vote" if isinstance(a, Vote) else "proposal"
        return [kind, a.body(), a.signature, b.body(), b.signature]

    def encode(self) -> bytes:
        """Canonical bytes (the payload of the evidence tx)."""
        return codec.encode(self.to_value())

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        """Parse :meth:`encode` output (signatures not checked: see :func:`verify_evidence`)."""
        try:
            value = codec.decode(data)
        except CodecError as exc:
            raise EvidenceError(f"evidence: {exc}") from exc
        if not isinstance(value, list) or len(value) != 5 or value[0] not in ("vote", "proposal"):
            raise EvidenceError("evidence must be [kind, body, sig, body, sig]")
        try:
            if value[0] == "vote":
                return cls(Vote.from_body(value[1], value[2]), Vote.from_body(value[3], value[4]))
            # The blocks are not part of the evidence: the signed hashes suffice.
            return cls(
                Proposal.from_body(value[1], value[2], b""),
                Proposal.from_body(value[3], value[4], b""),
            )
        except MessageError as exc:
            raise EvidenceError(f"evidence message: {exc}") from exc


def verify_evidence(chain_id: str, validators: ValidatorSet, evidence: Evidence) -> None:
    """Check that ``evidence`` proves an equivocation by a member of ``validators``.

    Raises:
        EvidenceError: different signers or (height, round, step), identical hashes, a
            signer outside the set, or a bad signature.
    """
    a, b = evidence.first, evidence.second
    if type(a) is not type(b) or a.hrs != b.hrs:
        raise EvidenceError("the two messages are not for one (height, round, step)")
    signer = evidence.signer
    other = b.validator if isinstance(b, Vote) else b.proposer
    if other != signer:
        raise EvidenceError("the two messages have different signers")
    if a.block_hash == b.block_hash:
        raise EvidenceError("the two messages agree on the block: no equivocation")
    if signer not in validators:
        raise EvidenceError(f"signer {signer.hex()[:16]}… is not a validator")
    kind = "vote" if isinstance(a, Vote) else "proposal"
    for m in (a, b):
        try:
            verify(signer, chain_id, kind, m.body(), m.signature)
        except SignatureError as exc:
            raise EvidenceError(f"bad {kind} signature in evidence") from exc
