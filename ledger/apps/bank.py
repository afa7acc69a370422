"""Voluntary transfers of ECT between accounts (the wallets of seed 000 §4.4).

Spec: docs/spec/ledger.md §3. Settlement never goes through here (it is posted by SolveMarkets);
a Transfer moves the signer's own positive balance, e.g. a member paying the community.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger import codec, keys, state
from ledger.errors import Reason
from ledger.registry import Context, TxKind, fields, int_field, register, reject
from ledger.tx import Tx

MAX_AMOUNT_UECT = 1 << 62


@dataclass(frozen=True, slots=True)
class Transfer:
    to: str
    """Account id: a member key's hex, or ``community``."""
    amount_uect: int


def _decode(value: codec.Value) -> Transfer:
    body = fields(value, "Transfer", ("to", "amount_uect"))
    to = body["to"]
    if isinstance(to, bytes) and len(to) == keys.PUBLIC_KEY_BYTES:
        account = state.account_id(to)
    elif to == state.COMMUNITY:
        account = state.COMMUNITY
    else:
        raise reject(Reason.MALFORMED, "Transfer.to must be a 32-byte key or 'community'")
    amount = body["amount_uect"]
    if isinstance(amount, int) and not isinstance(amount, bool) and amount <= 0:
        raise reject(Reason.BAD_AMOUNT, f"Transfer.amount_uect must be positive, got {amount}")
    return Transfer(account, int_field(body, "Transfer", "amount_uect", 1, MAX_AMOUNT_UECT))


def _validate(ctx: Context, tx: Tx, body: Transfer) -> None:
    st = ctx.state
    if not (state.is_admin(st, tx.signer) or state.is_prosumer(st, tx.signer)):
        raise reject(Reason.NOT_PERMITTED, "Transfer needs an admin or prosumer key")
    own = state.account_id(tx.signer)
    if body.to == own:
        raise reject(Reason.BAD_VALUE, "Transfer to oneself")
    balance = st.get_int(state.k_balance(own))
    if balance < body.amount_uect:
        raise reject(
            Reason.INSUFFICIENT_FUNDS,
            f"balance {balance} µECT is below the amount {body.amount_uect} µECT",
        )


def _apply(ctx: Context, tx: Tx, body: Transfer) -> None:
    state.add_balance(ctx.state, state.account_id(tx.signer), -body.amount_uect)
    state.add_balance(ctx.state, body.to, body.amount_uect)


register(TxKind("Transfer", _decode, _validate, _apply))
