"""Hourly market windows with a uniform-price double auction (seed 001, §2.6 and §4.5).

Spec: docs/spec/windows.md. A window opens at ``start_s`` for ``length_s`` seconds (one hour by
default); each member may place one buy or one sell request (energy [Wh], limit price
[ECT/kWh]). At ``close_s`` the window is cleared: buys by decreasing price, sells by increasing
price, ties by submission order, matched while the buyer's limit is at least the seller's ask;
every trade is at the ask of the marginal matched seller. The next ``length_s`` seconds are the
delivery period (IN_PROGRESS); afterwards each trade is validated in clearing order against the
metered export of the seller, the metered import of the buyer and the buyer's balance, and is
ACCEPTED (tokens move) or REJECTED (nothing moves).

Times are integer seconds since the Unix epoch, UTC; on the ledger they are block times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from fractions import Fraction

from market.errors import MarketError

SLOT_S = 900
"""Measurement slot [s]; a window covers whole slots so delivery can be checked from them."""

DEFAULT_LENGTH_S = 3600
"""Window length of the source document [s]: one hour open, one hour in progress."""

UECT_PER_KWH_AT_1_ECT = 1000
"""µECT that 1 Wh costs at 1 ECT/kWh: 10^6 µECT/ECT divided by 1000 Wh/kWh."""

MAX_ENERGY_WH = 10**9
"""Largest energy one request may name [Wh] (1 GWh): keeps every amount inside 64 bits."""

MAX_PRICE_ECT_PER_KWH = 10**6
"""Highest limit price a request may name [ECT/kWh]: keeps every amount inside 64 bits."""


class Side(StrEnum):
    """Whether a request buys or sells energy."""

    BUY = "buy"
    SELL = "sell"


class WindowStatus(StrEnum):
    """Life cycle of a window (seed 001 §4.5, Figure 12)."""

    OPEN = "open"
    CLEARED = "cleared"
    IN_PROGRESS = "in_progress"
    VALIDATED = "validated"


class TradeStatus(StrEnum):
    """Outcome of one trade after delivery (seed 001 §4.5.3)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Reason(StrEnum):
    """Why a request or a trade was refused; the value is what the ledger records."""

    WINDOW_NOT_OPEN = "window_not_open"
    WINDOW_CLOSED = "window_closed"
    DUPLICATE_MEMBER = "duplicate_member"
    NON_POSITIVE_QUANTITY = "non_positive_quantity"
    NON_POSITIVE_PRICE = "non_positive_price"
    QUANTITY_TOO_LARGE = "quantity_too_large"
    PRICE_TOO_HIGH = "price_too_high"
    SELLER_EXPORT_SHORT = "seller_export_short"
    BUYER_IMPORT_SHORT = "buyer_import_short"
    INSUFFICIENT_BALANCE = "insufficient_balance"


class WindowError(MarketError):
    """Base of the errors of this module."""


class RequestError(WindowError):
    """A request the window refuses; ``reason`` is the code the ledger records.

    Attributes:
        member: the member who placed the request.
        reason: the refusal code.
    """

    def __init__(self, member: str, reason: Reason, detail: str) -> None:
        super().__init__(f"request of {member!r} rejected: {reason.value}: {detail}")
        self.member = member
        self.reason = reason


class PhaseError(WindowError):
    """An operation asked of a window in the wrong status or before its time."""


@dataclass(frozen=True, slots=True)
class Request:
    """One member's buy or sell request in a window.

    Attributes:
        member: account or member id of the requester.
        side: buy or sell.
        energy_wh: quantity [Wh], > 0.
        price: limit price [ECT/kWh], > 0 (most a buyer pays, least a seller accepts).
        seq: submission order in the window (ties in price go to the lower ``seq``).
    """

    member: str
    side: Side
    energy_wh: int
    price: Fraction
    seq: int


@dataclass(frozen=True, slots=True)
class Trade:
    """A matched quantity between one buyer and one seller at the clearing price.

    Attributes:
        buyer: buying member.
        seller: selling member.
        energy_wh: traded energy [Wh].
        amount_uect: what the buyer pays the seller [µECT], price · energy rounded half-to-even.
    """

    buyer: str
    seller: str
    energy_wh: int
    amount_uect: int


@dataclass(frozen=True, slots=True)
class Clearing:
    """Result of clearing a window.

    Attributes:
        price: uniform clearing price [ECT/kWh], or None when nothing matched.
        quantity_wh: total matched energy [Wh].
        trades: the trades in clearing order (the order validation follows).
    """

    price: Fraction | None
    quantity_wh: int
    trades: tuple[Trade, ...]


@dataclass(frozen=True, slots=True)
class TradeOutcome:
    """Validation outcome of one trade; ``reason`` is None exactly when ACCEPTED."""

    trade: Trade
    status: TradeStatus
    reason: Reason | None


@dataclass(frozen=True, slots=True)
class Validation:
    """Outcomes of a window's validation and the balance changes they cause.

    Attributes:
        outcomes: one per trade, in clearing order.
        postings: (account, change [µECT]) sorted by account, without zero entries; sums to 0.
    """

    outcomes: tuple[TradeOutcome, ...]
    postings: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Window:
    """One market window and everything recorded about it.

    Attributes:
        start_s: opening time [s since epoch, UTC]; a multiple of ``length_s``.
        length_s: open period and delivery period length [s]; a multiple of ``SLOT_S``.
        status: where the window is in its life cycle.
        requests: accepted requests in submission order.
        clearing: set from CLEARED on.
        validation: set once VALIDATED.
    """

    start_s: int
    length_s: int
    status: WindowStatus = WindowStatus.OPEN
    requests: tuple[Request, ...] = ()
    clearing: Clearing | None = None
    validation: Validation | None = None

    @property
    def close_s(self) -> int:
        """End of the open period, start of delivery [s]."""
        return self.start_s + self.length_s

    @property
    def delivery_end_s(self) -> int:
        """End of the delivery period; validation may run from here on [s]."""
        return self.start_s + 2 * self.length_s


def amount_uect(price: Fraction, energy_wh: int) -> int:
    """Value of ``energy_wh`` at ``price`` [ECT/kWh], rounded half-to-even to 1 µECT [µECT].

    The exact value is ``price · energy_wh · 1000`` µECT; Fraction's round() is exact and rounds
    ties to even. Prices with at most three decimals never need rounding.
    """
    return round(price * energy_wh * UECT_PER_KWH_AT_1_ECT)


def open_window(start_s: int, length_s: int = DEFAULT_LENGTH_S) -> Window:
    """Create an empty OPEN window starting at ``start_s``.

    Raises:
        WindowError: the length is not a positive multiple of 15 min, or the start is not
            aligned to it (two windows never overlap; seed 001 §4.5.1 "unique timestamp").
    """
    if length_s <= 0 or length_s % SLOT_S:
        raise WindowError(f"window length {length_s} s is not a positive multiple of {SLOT_S} s")
    if start_s % length_s:
        raise WindowError(f"window start {start_s} is not aligned to its length {length_s} s")
    return Window(start_s=start_s, length_s=length_s)


def check_request(
    window: Window, member: str, side: Side, energy_wh: int, price: Fraction, now_s: int
) -> Request:
    """Admit a request into a window or say why not (seed 001 §4.5.1–4.5.2).

    Args:
        window: the window addressed.
        member: requesting member.
        side: buy or sell.
        energy_wh: quantity [Wh].
        price: limit price [ECT/kWh].
        now_s: the submission time [s] (block time on the ledger).

    Returns:
        The request with its submission order number.

    Raises:
        RequestError: window not open yet or closed, second request of the member,
            non-positive or too large quantity or price.
    """
    if window.status is not WindowStatus.OPEN or now_s >= window.close_s:
        raise RequestError(member, Reason.WINDOW_CLOSED, f"window closed at {window.close_s}")
    if now_s < window.start_s:
        raise RequestError(member, Reason.WINDOW_NOT_OPEN, f"opens at {window.start_s}")
    if any(r.member == member for r in window.requests):
        raise RequestError(member, Reason.DUPLICATE_MEMBER, "one request per member")
    if energy_wh <= 0:
        raise RequestError(member, Reason.NON_POSITIVE_QUANTITY, f"{energy_wh} Wh")
    if energy_wh > MAX_ENERGY_WH:
        raise RequestError(member, Reason.QUANTITY_TOO_LARGE, f"{energy_wh} Wh")
    if price <= 0:
        raise RequestError(member, Reason.NON_POSITIVE_PRICE, f"{price} ECT/kWh")
    if price > MAX_PRICE_ECT_PER_KWH:
        raise RequestError(member, Reason.PRICE_TOO_HIGH, f"{price} ECT/kWh")
    return Request(member, side, energy_wh, price, seq=len(window.requests))


def place_request(
    window: Window, member: str, side: Side, energy_wh: int, price: Fraction, now_s: int
) -> Window:
    """Return the window with the request added (see :func:`check_request` for refusals)."""
    request = check_request(window, member, side, energy_wh, price, now_s)
    return replace(window, requests=(*window.requests, request))


def clear(requests: Iterable[Request]) -> Clearing:
    """Clear a set of requests by the uniform-price double auction of seed 001 §2.6.

    Buys are taken by decreasing limit, sells by increasing ask, equal prices by ``seq``. The
    best remaining buy is matched with the cheapest remaining sell for the smaller of their
    remaining quantities while the buy limit is at least the ask. The clearing price is the
    ask of the last (marginal) matched sell; every trade is at that price, so no buyer pays
    above its limit and no seller gets below its ask.
    """
    buys = sorted((r for r in requests if r.side is Side.BUY), key=lambda r: (-r.price, r.seq))
    sells = sorted((r for r in requests if r.side is Side.SELL), key=lambda r: (r.price, r.seq))
    matches: list[tuple[Request, Request, int]] = []
    b = s = 0
    left_b = buys[0].energy_wh if buys else 0
    left_s = sells[0].energy_wh if sells else 0
    while b < len(buys) and s < len(sells) and buys[b].price >= sells[s].price:
        energy_wh = min(left_b, left_s)
        matches.append((buys[b], sells[s], energy_wh))
        left_b -= energy_wh
        left_s -= energy_wh
        if left_b == 0:
            b += 1
            left_b = buys[b].energy_wh if b < len(buys) else 0
        if left_s == 0:
            s += 1
            left_s = sells[s].energy_wh if s < len(sells) else 0
    if not matches:
        return Clearing(price=None, quantity_wh=0, trades=())
    price = matches[-1][1].price
    trades = tuple(
        Trade(buy.member, sell.member, energy_wh, amount_uect(price, energy_wh))
        for buy, sell, energy_wh in matches
    )
    return Clearing(price=price, quantity_wh=sum(t.energy_wh for t in trades), trades=trades)


def close_window(window: Window, now_s: int) -> Window:
    """Close an OPEN window at or after ``close_s`` and record its clearing (status CLEARED).

    Raises:
        PhaseError: the window is not OPEN or its open period has not ended.
    """
    if window.status is not WindowStatus.OPEN:
        raise PhaseError(f"window {window.start_s} is {window.status.value}, not open")
    if now_s < window.close_s:
        raise PhaseError(f"window {window.start_s} closes at {window.close_s}, now {now_s}")
    return replace(window, status=WindowStatus.CLEARED, clearing=clear(window.requests))


def begin_delivery(window: Window, now_s: int) -> Window:
    """Move a CLEARED window into its delivery period (status IN_PROGRESS).

    Raises:
        PhaseError: the window is not CLEARED or delivery has not started.
    """
    if window.status is not WindowStatus.CLEARED:
        raise PhaseError(f"window {window.start_s} is {window.status.value}, not cleared")
    if now_s < window.close_s:
        raise PhaseError(f"delivery of window {window.start_s} starts at {window.close_s}")
    return replace(window, status=WindowStatus.IN_PROGRESS)


def advance(window: Window, now_s: int) -> Window:
    """Apply every time-driven transition due at ``now_s`` (close, clear, begin delivery).

    Validation is not time-driven alone: it needs the delivery period's measurements.
    """
    if window.status is WindowStatus.OPEN and now_s >= window.close_s:
        window = close_window(window, now_s)
    if window.status is WindowStatus.CLEARED and now_s >= window.close_s:
        window = begin_delivery(window, now_s)
    return window


def validate_trades(
    trades: Sequence[Trade],
    export_wh: Mapping[str, int],
    import_wh: Mapping[str, int],
    balances_uect: Mapping[str, int],
    tolerance: Fraction = Fraction(0),
) -> Validation:
    """Validate trades in clearing order (seed 001 §4.5.3).

    A trade is REJECTED when the seller's metered export over the delivery period covers less
    than ``(1 − tolerance)`` of what it has sold in trades accepted so far plus this one, when
    the buyer's metered import likewise covers less than what it bought, or when the buyer's
    balance after the trades accepted so far cannot pay the amount. Otherwise it is ACCEPTED and
    its amount moves from buyer to seller. Rejected trades move nothing.

    Args:
        trades: trades in clearing order.
        export_wh: metered export per member over the delivery period [Wh].
        import_wh: metered import per member over the delivery period [Wh].
        balances_uect: balance per member before validation [µECT]; absent means 0.
        tolerance: admitted shortfall of metered energy, a fraction in [0, 1).

    Raises:
        WindowError: the tolerance lies outside [0, 1).
    """
    if not 0 <= tolerance < 1:
        raise WindowError(f"tolerance {tolerance} is outside [0, 1)")
    sold: dict[str, int] = {}
    bought: dict[str, int] = {}
    delta: dict[str, int] = {}
    outcomes: list[TradeOutcome] = []
    for trade in trades:
        reason = _refusal(
            trade, export_wh, import_wh, balances_uect, sold, bought, delta, tolerance
        )
        if reason is not None:
            outcomes.append(TradeOutcome(trade, TradeStatus.REJECTED, reason))
            continue
        sold[trade.seller] = sold.get(trade.seller, 0) + trade.energy_wh
        bought[trade.buyer] = bought.get(trade.buyer, 0) + trade.energy_wh
        delta[trade.buyer] = delta.get(trade.buyer, 0) - trade.amount_uect
        delta[trade.seller] = delta.get(trade.seller, 0) + trade.amount_uect
        outcomes.append(TradeOutcome(trade, TradeStatus.ACCEPTED, None))
    postings = tuple(sorted((k, v) for k, v in delta.items() if v))
    return Validation(outcomes=tuple(outcomes), postings=postings)


def _refusal(
    trade: Trade,
    export_wh: Mapping[str, int],
    import_wh: Mapping[str, int],
    balances_uect: Mapping[str, int],
    sold: Mapping[str, int],
    bought: Mapping[str, int],
    delta: Mapping[str, int],
    tolerance: Fraction,
) -> Reason | None:
    """The first check a trade fails, given what was accepted before it; None if it passes."""
    need = 1 - tolerance
    if export_wh.get(trade.seller, 0) < need * (sold.get(trade.seller, 0) + trade.energy_wh):
        return Reason.SELLER_EXPORT_SHORT
    if import_wh.get(trade.buyer, 0) < need * (bought.get(trade.buyer, 0) + trade.energy_wh):
        return Reason.BUYER_IMPORT_SHORT
    if balances_uect.get(trade.buyer, 0) + delta.get(trade.buyer, 0) < trade.amount_uect:
        return Reason.INSUFFICIENT_BALANCE
    return None


def validate_window(
    window: Window,
    now_s: int,
    export_wh: Mapping[str, int],
    import_wh: Mapping[str, int],
    balances_uect: Mapping[str, int],
    tolerance: Fraction = Fraction(0),
) -> Window:
    """Validate an IN_PROGRESS window after its delivery period (status VALIDATED).

    See :func:`validate_trades` for the rules and arguments.

    Raises:
        PhaseError: the window is not IN_PROGRESS or its delivery period has not ended.
    """
    if window.status is not WindowStatus.IN_PROGRESS:
        raise PhaseError(f"window {window.start_s} is {window.status.value}, not in progress")
    if now_s < window.delivery_end_s:
        raise PhaseError(f"delivery of window {window.start_s} ends at {window.delivery_end_s}")
    assert window.clearing is not None  # set by close_window on the way to IN_PROGRESS
    validation = validate_trades(
        window.clearing.trades, export_wh, import_wh, balances_uect, tolerance
    )
    return replace(window, status=WindowStatus.VALIDATED, validation=validation)
