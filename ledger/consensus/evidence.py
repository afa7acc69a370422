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
from ledger.registry import DoubleSign


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

    def encode_pair(self) -> tuple[bytes, bytes]:
        """The two messages as separate canonical byte strings (the ledger's ``vote_a`` and
        ``vote_b``), each ``[kind, body, sig]``, in canonical order."""
        kind, body_a, sig_a, body_b, sig_b = self.to_value()
        return codec.encode([kind, body_a, sig_a]), codec.encode([kind, body_b, sig_b])

    @classmethod
    def decode_pair(cls, a: bytes, b: bytes) -> Evidence:
        """Inverse of :meth:`encode_pair`."""
        try:
            va, vb = codec.decode(a), codec.decode(b)
        except CodecError as exc:
            raise EvidenceError(f"evidence message: {exc}") from exc
        ok = all(isinstance(v, list) and len(v) == 3 for v in (va, vb))
        if not ok or va[0] != vb[0]:
            raise EvidenceError("evidence messages must be [kind, body, sig] of one kind")
        return cls.decode(codec.encode([va[0], va[1], va[2], vb[1], vb[2]]))

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


def verify_evidence(chain_id: str, validators: ValidatorSet | None, evidence: Evidence) -> None:
    """Check that ``evidence`` proves an equivocation (by a member of ``validators``, unless
    None: the ledger checks membership against its own state).

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
    if validators is not None and signer not in validators:
        raise EvidenceError(f"signer {signer.hex()[:16]}… is not a validator")
    kind = "vote" if isinstance(a, Vote) else "proposal"
    for m in (a, b):
        try:
            verify(signer, chain_id, kind, m.body(), m.signature)
        except SignatureError as exc:
            raise EvidenceError(f"bad {kind} signature in evidence") from exc


def ledger_verifier(chain_id: str, vote_a: bytes, vote_b: bytes) -> DoubleSign:
    """The ledger's ``EvidenceVerifier`` (docs/spec/ledger.md §1): ``vote_a`` and ``vote_b``
    (from :meth:`Evidence.encode_pair`) are validly signed by one key for one (height, round,
    step) with different blocks. Validator membership is checked by the ledger's own state.

    Raises:
        ValueError: not a double sign (the reason in the message).
    """
    try:
        ev = Evidence.decode_pair(vote_a, vote_b)
        verify_evidence(chain_id, None, ev)
    except EvidenceError as exc:
        raise ValueError(str(exc)) from exc
    return DoubleSign(ev.signer, ev.first.height, ev.first.round)
