"""Values of the ancillary-service CDA: shouts, trades, the OCDA ranking, and their errors.

The matching engine is :mod:`market.cda` (which re-exports every name here); this module holds
the records it consumes and produces, each validated on construction (docs/spec/cda.md §1, §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from market.decimals import format_decimal, parse_decimal
from market.errors import InvalidInput, MarketError

#: Prices carry at most this many decimals [ECT/kWh], so a mean price is exact with one more.
PRICE_PLACES = 6
#: µECT per (Wh · ECT/kWh): 1 Wh at 1 ECT/kWh is 1/1000 ECT = 1000 µECT.
UECT_PER_WH_ECT_PER_KWH = 1000
#: Default bound on resting shouts per (window, pool) book; a full book refuses new shouts.
MAX_RESTING_PER_BOOK = 1024
MAX_QUANTITY_WH = 10**12  # 1 TWh: far above any MV node, catches unit mistakes
MAX_ID_CHARS = 128
#: Asker bus of an OCDA ranking row that applies to every asker; its cap is shared by all.
ANY_ASKER = "*"


class Side(StrEnum):
    """Whether a shout asks for reserve or offers it (seed 003: "shout type")."""

    ASK = "ask"
    OFFER = "offer"


class Pool(StrEnum):
    """The two independent pools, named from the grid's point of view (seed 003 §2.2)."""

    UP = "AS+"
    DOWN = "AS-"


class Mechanism(StrEnum):
    """How suitable offers are ordered for the outstanding ask."""

    CDA = "cda"
    NCDA = "ncda"
    OCDA = "ocda"


class UnknownShoutError(MarketError):
    """A cancellation names a shout that is not resting in any open book."""

    def __init__(self, shout_id: str) -> None:
        super().__init__(f"shout {shout_id!r} is not resting in any open book")
        self.shout_id = shout_id


class NotOwnerError(MarketError):
    """A BRP tried to cancel another BRP's shout."""

    def __init__(self, shout_id: str, brp: str) -> None:
        super().__init__(f"shout {shout_id!r} does not belong to BRP {brp!r}")
        self.shout_id = shout_id
        self.brp = brp


class WindowClosedError(MarketError):
    """A shout or ranking for a service window that has already been closed."""

    def __init__(self, window: int, open_from: int) -> None:
        super().__init__(f"window {window} is closed (windows before {open_from} are closed)")
        self.window = window
        self.open_from = open_from


class BookFullError(MarketError):
    """The (window, pool) book already holds its maximum number of resting shouts."""

    def __init__(self, window: int, pool: Pool, limit: int) -> None:
        super().__init__(f"book window={window} pool={pool} is full ({limit} resting shouts)")
        self.window = window
        self.pool = pool
        self.limit = limit


class TopologyMissingError(MarketError):
    """NCDA needs the operator's topology before it can accept shouts."""

    def __init__(self) -> None:
        super().__init__("NCDA needs a published topology before shouts are accepted")


@dataclass(frozen=True, slots=True)
class Shout:
    """One ask or offer (seed 003 §2.2: BRP id, timestamp, type, quantity, price, service time).

    Attributes:
        shout_id: unique id (on the ledger: the hash of the PlaceShout tx).
        brp: id of the balancing responsible party that placed it.
        bus: network bus where the BRP's resource is connected (used by NCDA and OCDA).
        timestamp: submission order, strictly increasing per market (time-first key).
        side: ask or offer.
        pool: AS+ or AS−.
        quantity_wh: reserve asked or offered over the window [Wh], > 0.
        price: willingness to pay (ask) or price asked (offer) [ECT/kWh], >= 0, <= 6 decimals.
        window: index of the service window (the Δt in which the service is delivered).
    """

    shout_id: str
    brp: str
    bus: str
    timestamp: int
    side: Side
    pool: Pool
    quantity_wh: int
    price: Fraction
    window: int

    def __post_init__(self) -> None:
        _validate_shout(self)

    @classmethod
    def from_data(cls, data: object, timestamp: int) -> Shout:
        """Build from plain data (``price`` as a decimal string), validating every field.

        Args:
            data: map with shout_id, brp, bus, side, pool, quantity_wh, price, window.
            timestamp: submission order assigned by the caller (the state machine).

        Raises:
            InvalidInput: a field is missing or malformed, named as ``shout.<field>``.
        """
        if not isinstance(data, Mapping):
            raise InvalidInput("shout", data, "must be a map")
        missing = [k for k in _SHOUT_KEYS if k not in data]
        if missing:
            raise InvalidInput("shout", sorted(data), f"missing fields {missing}")
        side, pool = data["side"], data["pool"]
        if side not in Side.__members__.values():
            raise InvalidInput("shout.side", side, "must be 'ask' or 'offer'")
        if pool not in Pool.__members__.values():
            raise InvalidInput("shout.pool", pool, "must be 'AS+' or 'AS-'")
        return cls(
            shout_id=data["shout_id"],
            brp=data["brp"],
            bus=data["bus"],
            timestamp=timestamp,
            side=Side(side),
            pool=Pool(pool),
            quantity_wh=data["quantity_wh"],
            price=parse_decimal("shout.price", data["price"]),
            window=data["window"],
        )

    def to_data(self) -> dict[str, object]:
        """Plain data with the price as an exact decimal string (inverse of :meth:`from_data`)."""
        return {
            "shout_id": self.shout_id,
            "brp": self.brp,
            "bus": self.bus,
            "side": self.side.value,
            "pool": self.pool.value,
            "quantity_wh": self.quantity_wh,
            "price": format_decimal(self.price, PRICE_PLACES),
            "window": self.window,
        }


_SHOUT_KEYS = ("shout_id", "brp", "bus", "side", "pool", "quantity_wh", "price", "window")


@dataclass(frozen=True, slots=True)
class Trade:
    """One peer-to-peer match: the offeror reserves ``quantity_wh`` for the asker.

    Attributes:
        seq: position of the trade in the market's history (0, 1, ...).
        window: service window.
        pool: AS+ or AS−.
        ask_id: id of the ask shout.
        offer_id: id of the offer shout.
        asker: BRP that pays.
        offeror: BRP that is paid and must deliver.
        asker_bus: bus of the asker.
        offeror_bus: bus of the offeror.
        quantity_wh: matched quantity [Wh].
        price: (ask price + offer price) / 2 [ECT/kWh], exact.
        amount_uect: quantity_wh · price in µECT, rounded half-to-even [µECT].
    """

    seq: int
    window: int
    pool: Pool
    ask_id: str
    offer_id: str
    asker: str
    offeror: str
    asker_bus: str
    offeror_bus: str
    quantity_wh: int
    price: Fraction
    amount_uect: int


@dataclass(frozen=True, slots=True)
class RankEntry:
    """The operator's verdict on one (asker bus, offeror bus) pair for OCDA.

    Attributes:
        score: lower is preferred (e.g. marginal losses [W/MW] from the operator's OPF).
        cap_wh: most energy [Wh] the pair may trade while this ranking is in force; ``None``
            means unbounded.
    """

    score: int
    cap_wh: int | None = None


@dataclass(frozen=True)
class Ranking:
    """The operator's OCDA ranking for one (window, pool) book (docs/spec/cda.md §4).

    Attributes:
        window: service window it applies to.
        pool: pool it applies to.
        entries: ``(asker_bus, offeror_bus) -> RankEntry``. ``(ANY_ASKER, offeror_bus)`` is a
            row for every asker without its own entry, its cap shared by all of them. A pair
            with neither is not matched.
    """

    window: int
    pool: Pool
    entries: Mapping[tuple[str, str], RankEntry]

    def __post_init__(self) -> None:
        check_int("ranking.window", self.window, 0, 2**63 - 1)
        for (a, o), entry in self.entries.items():
            path = f"ranking[{a!r},{o!r}]"
            _check_id(f"{path}.asker_bus", a)
            _check_id(f"{path}.offeror_bus", o)
            check_int(f"{path}.score", entry.score, -(2**63), 2**63 - 1)
            if entry.cap_wh is not None:
                check_int(f"{path}.cap_wh", entry.cap_wh, 0, MAX_QUANTITY_WH)


@dataclass(frozen=True, slots=True)
class Unmatched:
    """What was left of a shout when its window closed or it was cancelled [Wh]."""

    shout: Shout
    remaining_wh: int


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """One (window, pool) book as values: resting shouts, the OCDA ranking and caps left."""

    window: int
    pool: Pool
    resting: tuple[Unmatched, ...]
    ranking: Ranking | None = None
    caps: tuple[tuple[tuple[str, str], int], ...] = ()


def _check_id(path: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InvalidInput(path, value, f"must be a non-empty string of <= {MAX_ID_CHARS} chars")


def check_int(path: str, value: object, low: int, high: int) -> None:
    """Raise InvalidInput unless ``value`` is an int (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(path, value, "must be an integer")
    if not low <= value <= high:
        raise InvalidInput(path, value, f"must be in {low}..{high}")


def _validate_shout(s: Shout) -> None:
    for name in ("shout_id", "brp", "bus"):
        _check_id(f"shout.{name}", getattr(s, name))
    if s.bus == ANY_ASKER:
        raise InvalidInput("shout.bus", s.bus, "reserved for OCDA ranking rows")
    check_int("shout.timestamp", s.timestamp, 0, 2**63 - 1)
    check_int("shout.window", s.window, 0, 2**63 - 1)
    check_int("shout.quantity_wh", s.quantity_wh, 1, MAX_QUANTITY_WH)
    if not isinstance(s.side, Side):
        raise InvalidInput("shout.side", s.side, "must be Side.ASK or Side.OFFER")
    if not isinstance(s.pool, Pool):
        raise InvalidInput("shout.pool", s.pool, "must be Pool.UP or Pool.DOWN")
    if not isinstance(s.price, Fraction):
        raise InvalidInput("shout.price", s.price, "must be an exact Fraction [ECT/kWh]")
    if s.price < 0 or (s.price * 10**PRICE_PLACES).denominator != 1:
        raise InvalidInput(
            "shout.price", format_decimal(s.price, 12), f">= 0 with <= {PRICE_PLACES} decimals"
        )
    if s.price > 10**6:
        raise InvalidInput("shout.price", format_decimal(s.price), "above 1e6 ECT/kWh")
