"""PowerChain's ENT/eEuro order book: limit orders with locked funds, matched on arrival.

Spec: docs/spec/powerchain.md §5. Source: seed 004 §4.2.5 (continuous double auction, price
first then time first), §5.2 (Add/Remove Order) and §6.5 (C sells 1.9 ENT at 0.5, A buys 10 at
1: 1.9 ENT change hands for 0.95 eEuro, A's order rests with 8.1 ENT).

A buy order locks quantity × limit eEuro, a sell order locks its ENT. An arriving order trades
with the resting orders of the other side that cross it, best price first and, at one price,
oldest first, always at the *resting* order's price; the buyer's lock beyond what it paid is
returned at once. What is left rests in the book until filled or cancelled (cancel returns the
remaining lock).

Exactness without rounding: quantities are whole multiples of :data:`LOT_UENT` (1 mENT, the
token of 1 Wh) and prices whole multiples of :data:`TICK_UEUR` (0.001 eEuro per ENT), so every
notional q·p is a whole number of µeEuro.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from market.decimals import parse_decimal
from market.errors import InvalidInput
from market.powerchain import MAX_AMOUNT, UENT_PER_ENT, UEUR_PER_EUR

LOT_UENT = 1_000
"""Quantity step [µENT] (1 mENT)."""
TICK_UEUR = 1_000
"""Price step [µeEuro per ENT] (0.001 eEuro/ENT)."""
MAX_PRICE_UEUR = 10**6 * UEUR_PER_EUR
"""Highest limit [µeEuro per ENT] (10^6 eEuro/ENT); with MAX_AMOUNT keeps notionals bounded."""


class Side(StrEnum):
    """Whether an order buys or sells ENT."""

    BUY = "buy"
    SELL = "sell"


@dataclass(frozen=True, slots=True)
class Order:
    """A resting or arriving limit order.

    Attributes:
        order_id: unique, increasing with arrival (time priority).
        owner: account id of the order's owner.
        side: buy or sell ENT.
        price_ueur: limit [µeEuro per ENT].
        qty_uent: quantity still open [µENT].
    """

    order_id: int
    owner: str
    side: Side
    price_ueur: int
    qty_uent: int


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade: ``qty_uent`` ENT for ``amount_ueur`` eEuro at the resting order's price."""

    maker_id: int
    maker: str
    taker: str
    buyer: str
    seller: str
    qty_uent: int
    price_ueur: int
    amount_ueur: int


def parse_price(field: str, text: object) -> int:
    """A limit price from decimal text [eEuro/ENT] to µeEuro per ENT.

    Raises:
        InvalidInput: not a plain decimal, not positive, above the maximum, or finer than the
            0.001 eEuro tick.
    """
    value = parse_decimal(field, text) * UEUR_PER_EUR
    if value.denominator != 1 or int(value) % TICK_UEUR:
        raise InvalidInput(field, text, "must be a multiple of 0.001 eEuro/ENT")
    if not 0 < value <= MAX_PRICE_UEUR:
        raise InvalidInput(field, text, f"must lie in (0, {MAX_PRICE_UEUR // UEUR_PER_EUR}]")
    return int(value)


def check_quantity(field: str, qty_uent: int) -> int:
    """``qty_uent`` if it is a positive whole number of lots within bounds.

    Raises:
        InvalidInput: otherwise.
    """
    if not 0 < qty_uent <= MAX_AMOUNT or qty_uent % LOT_UENT:
        raise InvalidInput(field, qty_uent, f"must be a positive multiple of {LOT_UENT} µENT")
    return qty_uent


def notional_ueur(qty_uent: int, price_ueur: int) -> int:
    """qty × price [µeEuro]; exact because of the lot and tick sizes."""
    value = Fraction(qty_uent * price_ueur, UENT_PER_ENT)
    assert value.denominator == 1, (qty_uent, price_ueur)
    return int(value)


def locked_for(side: Side, qty_uent: int, price_ueur: int) -> int:
    """What an order locks: its ENT [µENT] when selling, qty × limit [µeEuro] when buying."""
    return qty_uent if side is Side.SELL else notional_ueur(qty_uent, price_ueur)


def crosses(incoming: Order, resting: Order) -> bool:
    """True when ``resting`` (other side) can trade with ``incoming`` at the resting price."""
    if incoming.side is Side.BUY:
        return resting.side is Side.SELL and resting.price_ueur <= incoming.price_ueur
    return resting.side is Side.BUY and resting.price_ueur >= incoming.price_ueur


def priority(order: Order) -> tuple[int, int]:
    """Sort key among resting orders of one side: best price first, then oldest."""
    price = order.price_ueur if order.side is Side.SELL else -order.price_ueur
    return price, order.order_id


def match(incoming: Order, resting: Iterable[Order]) -> tuple[list[Fill], int]:
    """Trade ``incoming`` against ``resting`` (other side, in :func:`priority` order).

    Stops at the first resting order that does not cross (the rest cannot either).

    Returns:
        (fills in order, quantity of ``incoming`` left open [µENT]).
    """
    fills: list[Fill] = []
    left = incoming.qty_uent
    for maker in resting:
        if left == 0 or not crosses(incoming, maker):
            break
        qty = min(left, maker.qty_uent)
        buy = incoming.side is Side.BUY
        fills.append(
            Fill(
                maker_id=maker.order_id,
                maker=maker.owner,
                taker=incoming.owner,
                buyer=incoming.owner if buy else maker.owner,
                seller=maker.owner if buy else incoming.owner,
                qty_uent=qty,
                price_ueur=maker.price_ueur,
                amount_ueur=notional_ueur(qty, maker.price_ueur),
            )
        )
        left -= qty
    return fills, left
