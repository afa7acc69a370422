"""k-of-n governance: proposals and votes that change validators, admins, prices, governance.

Spec: docs/spec/ledger.md §3 "Governance actions". A proposal passes when approvals from current
governance keys reach the threshold k; its action executes inside the tx that reaches k (so a
threshold of 1 executes at Propose). Validator-set changes take effect for the next height.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger import codec, keys, state
from ledger.apps.amm import (
    SetMarketParameters,
    check_period_bounds,
    decode_params,
    write_period,
)
from ledger.errors import Reason
from ledger.registry import Context, TxKind, fields, id_field, int_field, register, reject
from ledger.tx import Tx

MAX_VALIDATORS = 64
MAX_POWER = 1 << 32
MAX_DEADLINE_MS = 90 * 24 * 3600 * 1000
"""A proposal lives at most 90 days [ms]."""


@dataclass(frozen=True, slots=True)
class Propose:
    action: str
    args: Any
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class Vote:
    proposal_id: int


def _key_list(value: Any, where: str) -> list[bytes]:
    if not isinstance(value, list) or not value:
        raise reject(Reason.MALFORMED, f"{where} must be a non-empty list of keys")
    for k in value:
        if not isinstance(k, bytes) or len(k) != keys.PUBLIC_KEY_BYTES:
            raise reject(Reason.MALFORMED, f"{where} holds something that is not a 32-byte key")
    if len(set(value)) != len(value):
        raise reject(Reason.BAD_VALUE, f"{where} lists a key twice")
    return sorted(value)


def _args_validators(v: Any) -> Any:
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_VALIDATORS:
        raise reject(Reason.MALFORMED, f"SetValidators needs 1..{MAX_VALIDATORS} entries")
    for item in v:
        ok = isinstance(item, list) and len(item) == 2 and isinstance(item[1], int)
        if not ok or isinstance(item[1], bool) or not 1 <= item[1] <= MAX_POWER:
            raise reject(Reason.MALFORMED, "SetValidators entries are [key, power 1..2^32]")
    _key_list([k for k, _ in v], "SetValidators keys")
    return sorted(v)


def _args_governance(v: Any) -> Any:
    body = fields(v, "SetGovernance", ("keys", "threshold"))
    ks = _key_list(body["keys"], "SetGovernance.keys")
    return {"keys": ks, "threshold": int_field(body, "SetGovernance", "threshold", 1, len(ks))}


def _args_params(v: Any) -> Any:
    k = "SetMarketParameters"
    body = fields(v, k, ("period_id", "start_ms", "end_ms", "params"))
    return SetMarketParameters(
        id_field(body, k, "period_id"),
        int_field(body, k, "start_ms", 0, (1 << 53) - 1),
        int_field(body, k, "end_ms", 0, (1 << 53) - 1),
        decode_params(body["params"], k),
    )


_ARGS: dict[str, Callable[[Any], Any]] = {
    "SetValidators": _args_validators,
    "SetAdmins": lambda v: _key_list(v, "SetAdmins"),
    "SetGovernance": _args_governance,
    "SetMarketParameters": _args_params,
}


def _check_action(st: state.Overlay, action: str, args: Any) -> None:
    """State-dependent checks of an action, at Propose and again when it executes."""
    if action == "SetMarketParameters":
        old = st.get_value(state.k_period(args.period_id))
        if old is not None and old["solved"]:
            raise reject(Reason.PERIOD_SOLVED, f"period {args.period_id!r} is solved")
        check_period_bounds(st, args.period_id, args.start_ms, args.end_ms)


def _execute(st: state.Overlay, action: str, args: Any) -> None:
    _check_action(st, action, args)
    if action == "SetValidators":
        st.put_value(state.K_VALIDATORS, args)
    elif action == "SetAdmins":
        st.put_value(state.K_ADMINS, args)
    elif action == "SetGovernance":
        st.put_value(state.K_GOVERNANCE, args)
    else:
        write_period(st, args)


def _k_proposal(pid: int) -> bytes:
    return b"gov/p/" + f"{pid:010d}".encode()


def _require_governor(ctx: Context, tx: Tx) -> None:
    if not state.is_governor(ctx.state, tx.signer):
        raise reject(Reason.NOT_PERMITTED, f"{tx.kind} needs a governance key")


def _decode_propose(value: codec.Value) -> Propose:
    body = fields(value, "Propose", ("action", "args", "deadline_ms"))
    action = body["action"]
    if action not in _ARGS:
        raise reject(Reason.MALFORMED, f"Propose.action must be one of {sorted(_ARGS)}")
    args = _ARGS[action](body["args"])
    return Propose(action, args, int_field(body, "Propose", "deadline_ms", 0, (1 << 53) - 1))


def _validate_propose(ctx: Context, tx: Tx, body: Propose) -> None:
    _require_governor(ctx, tx)
    if body.deadline_ms <= ctx.time_ms:
        raise reject(Reason.PROPOSAL_EXPIRED, "Propose.deadline_ms is not after the block time")
    if body.deadline_ms > ctx.time_ms + MAX_DEADLINE_MS:
        raise reject(Reason.BAD_VALUE, "Propose.deadline_ms is more than 90 days ahead")
    _check_action(ctx.state, body.action, body.args)


def _stored_args(body: Propose) -> Any:
    a = body.args
    if isinstance(a, SetMarketParameters):
        return {
            "period_id": a.period_id,
            "start_ms": a.start_ms,
            "end_ms": a.end_ms,
            "params": a.params,
        }
    return a


def _apply_propose(ctx: Context, tx: Tx, body: Propose) -> None:
    st = ctx.state
    pid = st.get_int(b"gov/next")
    st.put_value(b"gov/next", pid + 1)
    rec = {
        "proposer": tx.signer,
        "action": body.action,
        "args": _stored_args(body),
        "deadline_ms": body.deadline_ms,
        "approvals": [tx.signer],
        "passed_height": None,
    }
    _maybe_pass(ctx, rec, body.args)
    st.put_value(_k_proposal(pid), rec)


def _maybe_pass(ctx: Context, rec: dict[str, Any], args: Any) -> None:
    gov_keys, threshold = state.governance(ctx.state)
    if sum(1 for a in rec["approvals"] if a in gov_keys) >= threshold:
        _execute(ctx.state, rec["action"], args)
        rec["passed_height"] = ctx.height


def _decode_vote(value: codec.Value) -> Vote:
    body = fields(value, "Vote", ("proposal_id",))
    return Vote(int_field(body, "Vote", "proposal_id", 0, (1 << 63) - 1))


def _validate_vote(ctx: Context, tx: Tx, body: Vote) -> None:
    _require_governor(ctx, tx)
    rec = ctx.state.get_value(_k_proposal(body.proposal_id))
    if rec is None:
        raise reject(Reason.UNKNOWN_PROPOSAL, f"no proposal {body.proposal_id}")
    if rec["passed_height"] is not None:
        raise reject(Reason.BAD_VALUE, f"proposal {body.proposal_id} has already passed")
    if ctx.time_ms > rec["deadline_ms"]:
        raise reject(Reason.PROPOSAL_EXPIRED, f"proposal {body.proposal_id} has expired")
    if tx.signer in rec["approvals"]:
        raise reject(Reason.ALREADY_VOTED, f"already approved proposal {body.proposal_id}")


def _apply_vote(ctx: Context, tx: Tx, body: Vote) -> None:
    key = _k_proposal(body.proposal_id)
    rec = ctx.state.get_value(key)
    rec["approvals"] = sorted([*rec["approvals"], tx.signer])
    _maybe_pass(ctx, rec, _ARGS[rec["action"]](rec["args"]))
    ctx.state.put_value(key, rec)


register(TxKind("Propose", _decode_propose, _validate_propose, _apply_propose))
register(TxKind("Vote", _decode_vote, _validate_vote, _apply_vote))
