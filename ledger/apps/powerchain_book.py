"""PowerChain's ENT/eEuro order book on the ledger: PcPlaceOrder and PcCancelOrder.

Spec: docs/spec/powerchain.md §3, §5; the matching rules are market.powerchain_book (seed 004
§4.2.5, §6.5). Shares the accounts, roles and helpers of :mod:`ledger.apps.powerchain`.

State: ``pc/next`` (next order id), ``pc/ord/<id:012d>`` [owner, side, price_ueur, qty_uent,
locked], ``pc/book/<buy|sell>/<rank:016d>/<id:012d>`` → id, where the rank makes key order the
price-time priority (sells by rising price; buys by falling price; then by id).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ledger import codec, state
from ledger.apps.powerchain import (
    K_NEXT,
    k_book,
    k_order,
    market_call,
    move,
    register_kind,
    require_participant,
)
from ledger.errors import Reason
from ledger.registry import Context, fields, int_field, reject
from ledger.tx import Tx
from market import powerchain as pc
from market import powerchain_book as book


@dataclass(frozen=True, slots=True)
class Place:
    side: book.Side
    qty_uent: int
    price_ueur: int


def _decode_place(value: codec.Value) -> Place:
    body = fields(value, "PcPlaceOrder", ("side", "qty_uent", "price"))
    if body["side"] not in ("buy", "sell"):
        raise reject(Reason.MALFORMED, "PcPlaceOrder.side must be 'buy' or 'sell'")
    qty = int_field(body, "PcPlaceOrder", "qty_uent", 1, pc.MAX_AMOUNT)
    market_call("PcPlaceOrder", lambda: book.check_quantity("qty_uent", qty))
    price = market_call("PcPlaceOrder", lambda: book.parse_price("price", body["price"]))
    return Place(book.Side(body["side"]), qty, price)


def _decode_cancel(value: codec.Value) -> int:
    body = fields(value, "PcCancelOrder", ("order_id",))
    return int_field(body, "PcCancelOrder", "order_id", 0, 10**12 - 1)


# handlers ---------------------------------------------------------------------------------


def _resting(st: state.Overlay, side: book.Side) -> Iterator[book.Order]:
    """Resting orders of ``side`` in price-time priority (the key order)."""
    prefix = f"pc/book/{side.value}/".encode()
    for _, raw in st.scan(prefix, state.prefix_end(prefix)):
        order_id = int(codec.decode_trusted(raw))
        owner, s, price, qty, _ = st.get_value(k_order(order_id))
        yield book.Order(order_id, owner, book.Side(s), price, qty)


def _run_place(ctx: Context, tx: Tx, body: Place) -> None:
    """Add Order (§5.2): lock funds, trade with crossing resting orders, rest the remainder."""
    st = ctx.state
    require_participant(ctx, tx)
    me = state.account_id(tx.signer)
    buy = body.side is book.Side.BUY
    move(
        st,
        me,
        "eEuro" if buy else "ENT",
        -book.locked_for(body.side, body.qty_uent, body.price_ueur),
    )
    order_id = st.get_int(K_NEXT)
    st.put_value(K_NEXT, order_id + 1)
    incoming = book.Order(order_id, me, body.side, body.price_ueur, body.qty_uent)
    other = book.Side.SELL if buy else book.Side.BUY
    fills, left = book.match(incoming, list(_taking(st, other, incoming)))
    for f in fills:
        _settle_fill(st, f, body.price_ueur if buy else None)
    if left:
        locked = book.locked_for(body.side, left, body.price_ueur)
        st.put_value(k_order(order_id), [me, body.side.value, body.price_ueur, left, locked])
        st.put_value(k_book(body.side, body.price_ueur, order_id), order_id)


def _taking(st: state.Overlay, side: book.Side, incoming: book.Order) -> Iterator[book.Order]:
    """Resting orders that cross ``incoming``, enough to fill it (stops reading the book early)."""
    need = incoming.qty_uent
    for order in _resting(st, side):
        if need <= 0 or not book.crosses(incoming, order):
            return
        need -= order.qty_uent
        yield order


def _settle_fill(st: state.Overlay, f: book.Fill, taker_limit: int | None) -> None:
    """Move the tokens of one fill out of the locks; shrink or remove the resting order."""
    owner, s, price, qty, locked = st.get_value(k_order(f.maker_id))
    maker_side = book.Side(s)
    # The maker's lock shrinks by exactly its share: ENT for a sell, qty × its price for a buy.
    taken = f.qty_uent if maker_side is book.Side.SELL else f.amount_ueur
    if qty == f.qty_uent:
        st.delete(k_order(f.maker_id))
        st.delete(k_book(maker_side, price, f.maker_id))
    else:
        st.put_value(k_order(f.maker_id), [owner, s, price, qty - f.qty_uent, locked - taken])
    move(st, f.buyer, "ENT", f.qty_uent)
    move(st, f.seller, "eEuro", f.amount_ueur)
    if taker_limit is not None:  # an arriving buy locked qty × its limit; return what it saved
        move(st, f.buyer, "eEuro", book.notional_ueur(f.qty_uent, taker_limit) - f.amount_ueur)


def _run_cancel(ctx: Context, tx: Tx, order_id: int) -> None:
    """Remove Order (§5.2): the remaining lock goes back to the owner."""
    st = ctx.state
    require_participant(ctx, tx)
    rec = st.get_value(k_order(order_id))
    if rec is None:
        raise reject(Reason.UNKNOWN_ORDER, f"no open order {order_id}")
    owner, s, price, _, locked = rec
    if owner != state.account_id(tx.signer):
        raise reject(Reason.NOT_PERMITTED, f"order {order_id} belongs to another account")
    side = book.Side(s)
    move(st, owner, "eEuro" if side is book.Side.BUY else "ENT", locked)
    st.delete(k_order(order_id))
    st.delete(k_book(side, price, order_id))


register_kind("PcPlaceOrder", _decode_place, _run_place)
register_kind("PcCancelOrder", _decode_cancel, _run_cancel)
