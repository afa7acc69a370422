"""Evidence of equivocation (a validator signing two different votes for one step).

Spec: docs/spec/ledger.md §3; Buchman, Kwon, Milosevic 2018 §"Evidence". The vote format belongs
to consensus, so the ledger judges a pair only through the ``EvidenceVerifier`` given to the app.
Evidence is recorded once per (validator, height, round); removing the offender is a governance
decision (SetValidators), not automatic, because in a small permissioned community a key leak and
a crash-restart bug look alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger import codec, keys, state
from ledger.errors import LedgerError, Reason
from ledger.registry import Context, TxKind, fields, register, reject
from ledger.tx import Tx

MAX_VOTE_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Evidence:
    vote_a: bytes
    vote_b: bytes


def _decode(value: codec.Value) -> Evidence:
    body = fields(value, "Evidence", ("vote_a", "vote_b"))
    a, b = body["vote_a"], body["vote_b"]
    for name, v in (("vote_a", a), ("vote_b", b)):
        if not isinstance(v, bytes) or not 0 < len(v) <= MAX_VOTE_BYTES:
            raise reject(Reason.MALFORMED, f"Evidence.{name} must be 1..{MAX_VOTE_BYTES} bytes")
    # Order-independent: (a, b) and (b, a) are the same evidence.
    return Evidence(*sorted((a, b)))


def _key(validator: bytes, height: int, round_: int) -> bytes:
    return f"evid/{validator.hex()}/{height:012d}/{round_:06d}".encode()


def _validate(ctx: Context, tx: Tx, body: Evidence) -> None:
    if not state.is_validator(ctx.state, tx.signer):
        raise reject(Reason.NOT_PERMITTED, "Evidence is reported by validators")
    if ctx.evidence_verifier is None:
        raise reject(Reason.EVIDENCE_UNSUPPORTED, "this node has no evidence verifier")
    try:
        found = ctx.evidence_verifier(ctx.chain_id, body.vote_a, body.vote_b)
    except (ValueError, LedgerError) as exc:
        raise reject(Reason.BAD_EVIDENCE, f"not a double sign: {exc}") from exc
    if not state.is_validator(ctx.state, found.validator):
        raise reject(Reason.BAD_EVIDENCE, "the accused key is not a validator")
    if ctx.state.get(_key(found.validator, found.height, found.round)) is not None:
        raise reject(Reason.DUPLICATE_EVIDENCE, "this double sign is already recorded")


def _apply(ctx: Context, tx: Tx, body: Evidence) -> None:
    assert ctx.evidence_verifier is not None
    found = ctx.evidence_verifier(ctx.chain_id, body.vote_a, body.vote_b)
    ctx.state.put_value(
        _key(found.validator, found.height, found.round),
        {
            "reported_by": tx.signer,
            "recorded_height": ctx.height,
            "votes": [keys.sha256(body.vote_a), keys.sha256(body.vote_b)],
        },
    )


register(TxKind("Evidence", _decode, _validate, _apply))
