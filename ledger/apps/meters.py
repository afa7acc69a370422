"""Allowed-meters list (seed 000 §4.4 AM; Table 2 addMeterFromList / removeMeterFromList).

Spec: docs/spec/ledger.md §3. Only an admin edits the list; each entry binds a certified meter's
id to the account of the prosumer that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger import codec, privacy, state
from ledger.errors import Reason
from ledger.registry import Context, TxKind, fields, id_field, key_field, register, reject
from ledger.tx import Tx


@dataclass(frozen=True, slots=True)
class AddMeter:
    meter_id: str
    account: bytes


@dataclass(frozen=True, slots=True)
class RemoveMeter:
    meter_id: str


def require_admin(ctx: Context, tx: Tx) -> None:
    """Raise ``not_permitted`` unless the signer holds an admin key."""
    if not state.is_admin(ctx.state, tx.signer):
        raise reject(Reason.NOT_PERMITTED, f"{tx.kind} needs an admin key")


def _decode_add(value: codec.Value) -> AddMeter:
    body = fields(value, "AddMeter", ("meter_id", "account"))
    return AddMeter(id_field(body, "AddMeter", "meter_id"), key_field(body, "AddMeter", "account"))


def _validate_add(ctx: Context, tx: Tx, body: AddMeter) -> None:
    require_admin(ctx, tx)
    if privacy.mode(ctx.state) is privacy.Mode.PSEUDONYMOUS and not privacy.is_pseudonym(
        body.meter_id
    ):
        # The message must not echo the id: it may be a serial number sent by mistake, and
        # rejection messages reach logs and API answers (docs/spec/privacy.md §2).
        raise reject(Reason.NOT_PSEUDONYM, "AddMeter.meter_id must be a pseudonym 'ps-' + 32 hex")
    if state.meter_owner(ctx.state, body.meter_id) is not None:
        raise reject(Reason.METER_EXISTS, f"meter {body.meter_id!r} is already on the list")


def _apply_add(ctx: Context, tx: Tx, body: AddMeter) -> None:
    ctx.state.put_value(state.k_meter(body.meter_id), body.account)
    ctx.state.put_value(state.k_owned(body.account, body.meter_id), True)


def _decode_remove(value: codec.Value) -> RemoveMeter:
    body = fields(value, "RemoveMeter", ("meter_id",))
    return RemoveMeter(id_field(body, "RemoveMeter", "meter_id"))


def _validate_remove(ctx: Context, tx: Tx, body: RemoveMeter) -> None:
    require_admin(ctx, tx)
    if state.meter_owner(ctx.state, body.meter_id) is None:
        raise reject(Reason.UNKNOWN_METER, f"meter {body.meter_id!r} is not on the list")


def _apply_remove(ctx: Context, tx: Tx, body: RemoveMeter) -> None:
    # Measurements already recorded stay (they are settled with their period); only new
    # SetMeasure txs for this meter are refused from now on.
    owner = state.meter_owner(ctx.state, body.meter_id)
    assert owner is not None
    ctx.state.delete(state.k_meter(body.meter_id))
    ctx.state.delete(state.k_owned(owner, body.meter_id))


register(TxKind("AddMeter", _decode_add, _validate_add, _apply_add))
register(TxKind("RemoveMeter", _decode_remove, _validate_remove, _apply_remove))
