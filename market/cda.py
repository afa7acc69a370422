"""Continuous double auction for local ancillary services: CDA, NCDA, OCDA (docs/spec/cda.md).

Seed 003 (Troncia et al. 2019) §2.2: balancing responsible parties (BRPs) post *shouts* — asks
for reserve and offers of reserve — into two independent pools, AS+ (upward: more injection) and
AS− (downward: less injection). A round takes the *outstanding ask* (highest price, then oldest)
and fills it from the *suitable offers* (price <= the ask's price) until it is satisfied or the
suitable set is exhausted; every partial fill is a peer-to-peer trade priced at the mean of the
two prices. Residual demand rests in the book for later rounds of the same service window;
cleared shouts leave the book. The three mechanisms differ only in how suitable offers are
ordered:

* CDA  — price first, then time first (seed 003 §2.2, "price first and time first");
* NCDA — nearest offeror first, distance along the lines from the operator's topology
  (:mod:`market.topology`), then price, then time;
* OCDA — the operator's ranking first (computed off-ledger with an OPF, recorded as data), then
  price, then time; a pair the ranking omits is not matched, and its cap bounds the volume.

Everything is integer or exact rational: quantities [Wh], prices [ECT/kWh] as
:class:`~fractions.Fraction` with at most 6 decimals, amounts [µECT] rounded half-to-even.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from market.cda_types import (
    ANY_ASKER,
    MAX_ID_CHARS,
    MAX_QUANTITY_WH,
    MAX_RESTING_PER_BOOK,
    PRICE_PLACES,
    UECT_PER_WH_ECT_PER_KWH,
    BookFullError,
    BookSnapshot,
    Mechanism,
    NotOwnerError,
    Pool,
    RankEntry,
    Ranking,
    Shout,
    Side,
    TopologyMissingError,
    Trade,
    UnknownShoutError,
    Unmatched,
    WindowClosedError,
    check_int,
)
from market.errors import InvalidInput
from market.topology import Topology

__all__ = [
    "ANY_ASKER",
    "MAX_ID_CHARS",
    "MAX_QUANTITY_WH",
    "MAX_RESTING_PER_BOOK",
    "PRICE_PLACES",
    "UECT_PER_WH_ECT_PER_KWH",
    "BookFullError",
    "BookSnapshot",
    "Market",
    "Mechanism",
    "NotOwnerError",
    "Pool",
    "RankEntry",
    "Ranking",
    "Shout",
    "Side",
    "TopologyMissingError",
    "Trade",
    "UnknownShoutError",
    "Unmatched",
    "WindowClosedError",
    "total_uect",
]


@dataclass(slots=True)
class _Resting:
    shout: Shout
    remaining_wh: int


@dataclass(slots=True)
class _Book:
    asks: dict[str, _Resting] = field(default_factory=dict)
    offers: dict[str, _Resting] = field(default_factory=dict)
    caps: dict[tuple[str, str], int] = field(default_factory=dict)  # OCDA caps left [Wh]
    ranking: Ranking | None = None

    def size(self) -> int:
        return len(self.asks) + len(self.offers)


class Market:
    """All open (window, pool) books of one mechanism; deterministic and single-threaded.

    Every mutating call runs the matching rounds it makes possible and returns the new trades,
    so the book is always left with no outstanding ask that still has a matchable offer.
    """

    def __init__(
        self,
        mechanism: Mechanism,
        topology: Topology | None = None,
        max_resting_per_book: int = MAX_RESTING_PER_BOOK,
    ) -> None:
        self.mechanism = mechanism
        self.topology = topology
        self.max_resting_per_book = max_resting_per_book
        self.open_from = 0  # windows below this are closed
        self.last_timestamp = -1
        self.trades: list[Trade] = []  # made through this object
        self.next_trade_seq = 0  # a restored market continues the ledger's numbering
        self._books: dict[tuple[int, Pool], _Book] = {}
        self._where: dict[str, tuple[int, Pool]] = {}

    def place(self, shout: Shout) -> list[Trade]:
        """Add a shout and run the rounds it enables (seed 003 §2.2).

        Raises:
            InvalidInput: duplicate id, or timestamp not after the previous shout's.
            WindowClosedError, BookFullError, TopologyMissingError: see their docstrings.
        """
        if shout.timestamp <= self.last_timestamp:
            raise InvalidInput(
                "shout.timestamp", shout.timestamp, f"must exceed {self.last_timestamp}"
            )
        if shout.shout_id in self._where:
            raise InvalidInput("shout.shout_id", shout.shout_id, "already resting in a book")
        if shout.window < self.open_from:
            raise WindowClosedError(shout.window, self.open_from)
        if self.mechanism is Mechanism.NCDA:
            if self.topology is None:
                raise TopologyMissingError()
            if shout.bus not in self.topology.buses:
                raise InvalidInput("shout.bus", shout.bus, "not a bus of the published topology")
        key = (shout.window, shout.pool)
        book = self._books.setdefault(key, _Book())
        if book.size() >= self.max_resting_per_book:
            raise BookFullError(shout.window, shout.pool, self.max_resting_per_book)
        side = book.asks if shout.side is Side.ASK else book.offers
        side[shout.shout_id] = _Resting(shout, shout.quantity_wh)
        self._where[shout.shout_id] = key
        self.last_timestamp = shout.timestamp
        return self._run_rounds(book)

    def cancel(self, shout_id: str, brp: str) -> Unmatched:
        """Withdraw what is left of a resting shout; only its own BRP may do so.

        Raises:
            UnknownShoutError: no resting shout has this id.
            NotOwnerError: the shout belongs to another BRP.
        """
        key = self._where.get(shout_id)
        if key is None:
            raise UnknownShoutError(shout_id)
        book = self._books[key]
        resting = book.asks.get(shout_id) or book.offers[shout_id]
        if resting.shout.brp != brp:
            raise NotOwnerError(shout_id, brp)
        self._remove(book, resting.shout)
        return Unmatched(resting.shout, resting.remaining_wh)

    def publish_topology(self, topology: Topology) -> list[Trade]:
        """Replace the topology (NCDA) and run any rounds it makes possible."""
        self.topology = topology
        trades: list[Trade] = []
        for key in sorted(self._books):
            trades += self._run_rounds(self._books[key])
        return trades

    def record_ranking(self, ranking: Ranking) -> list[Trade]:
        """Install the operator's OCDA ranking for one book (resets its caps) and match.

        Raises:
            WindowClosedError: the ranking is for a closed window.
        """
        if ranking.window < self.open_from:
            raise WindowClosedError(ranking.window, self.open_from)
        book = self._books.setdefault((ranking.window, ranking.pool), _Book())
        book.ranking = ranking
        book.caps = {pair: e.cap_wh for pair, e in ranking.entries.items() if e.cap_wh is not None}
        return self._run_rounds(book)

    def close_window(self, window: int) -> list[Unmatched]:
        """Close every window <= ``window``; what is left rests with external resources.

        Returns:
            The unmatched remainders (residual demand and unsold offers), in book then
            time order.
        """
        left: list[Unmatched] = []
        for key in sorted(k for k in self._books if k[0] <= window):
            book = self._books.pop(key)
            for resting in sorted(
                [*book.asks.values(), *book.offers.values()], key=lambda r: r.shout.timestamp
            ):
                del self._where[resting.shout.shout_id]
                left.append(Unmatched(resting.shout, resting.remaining_wh))
        self.open_from = max(self.open_from, window + 1)
        return left

    def resting(self, window: int, pool: Pool) -> list[Unmatched]:
        """Resting shouts of one book with what is left of each, in time order."""
        book = self._books.get((window, pool))
        if book is None:
            return []
        rows = [*book.asks.values(), *book.offers.values()]
        return [Unmatched(r.shout, r.remaining_wh) for r in sorted(rows, key=_by_time)]

    def books(self) -> list[tuple[int, Pool]]:
        """Keys (window, pool) of the open books, sorted."""
        return sorted(self._books)

    def book_snapshot(self, window: int, pool: Pool) -> BookSnapshot:
        """Everything one book holds, for storing it outside the engine (the ledger state)."""
        book = self._books.get((window, pool), _Book())
        caps = tuple(sorted(book.caps.items()))
        return BookSnapshot(window, pool, tuple(self.resting(window, pool)), book.ranking, caps)

    def restore_book(self, snap: BookSnapshot) -> None:
        """Put back a book taken by :meth:`book_snapshot` (replacing any book of that key).

        Raises:
            InvalidInput: a shout is duplicated, belongs to another book or has nothing left.
        """
        key = (snap.window, snap.pool)
        if key in self._books:
            for r in self.resting(*key):
                del self._where[r.shout.shout_id]
        book = _Book(ranking=snap.ranking, caps=dict(snap.caps))
        for i, u in enumerate(snap.resting):
            s = u.shout
            path = f"book.resting[{i}]"
            if (s.window, s.pool) != key or s.shout_id in self._where:
                raise InvalidInput(path, s.shout_id, "duplicate, or not of this book")
            check_int(f"{path}.remaining_wh", u.remaining_wh, 1, s.quantity_wh)
            side = book.asks if s.side is Side.ASK else book.offers
            side[s.shout_id] = _Resting(s, u.remaining_wh)
            self._where[s.shout_id] = key
            self.last_timestamp = max(self.last_timestamp, s.timestamp)
        self._books[key] = book

    def _run_rounds(self, book: _Book) -> list[Trade]:
        """One pass over the asks in priority order, each filled from its suitable offers.

        A single pass suffices: a round only consumes offers, so an ask already passed cannot
        gain a suitable offer later in the same pass.
        """
        trades: list[Trade] = []
        for ask in sorted(book.asks.values(), key=_ask_priority):
            for offer in self._suitable_offers(book, ask.shout):
                if offer.remaining_wh == 0 or self._cap_left(book, ask.shout, offer.shout) == 0:
                    continue  # consumed earlier in this round, or the operator's cap is used up
                trades.append(self._fill(book, ask, offer))
                if ask.remaining_wh == 0:
                    break
        return trades

    def _suitable_offers(self, book: _Book, ask: Shout) -> list[_Resting]:
        """The offers ``ask`` may match, best first for this market's mechanism."""
        rows: list[tuple[tuple[int | Fraction, ...], _Resting]] = []
        for offer in book.offers.values():
            o = offer.shout
            if o.price > ask.price or o.brp == ask.brp:
                continue  # not good enough, or a BRP trading with itself
            first = self._network_key(book, ask, o)
            if first is None:
                continue
            rows.append(((*first, o.price, o.timestamp), offer))
        rows.sort(key=lambda row: row[0])
        return [offer for _, offer in rows]

    def _network_key(self, book: _Book, ask: Shout, offer: Shout) -> tuple[int, ...] | None:
        """The mechanism's leading sort key, or ``None`` when the pair may not trade."""
        if self.mechanism is Mechanism.CDA:
            return ()
        if self.mechanism is Mechanism.NCDA:
            assert self.topology is not None  # place() refuses NCDA shouts without one
            if offer.bus not in self.topology.buses or ask.bus not in self.topology.buses:
                return None  # a bus dropped by a later topology
            distance = self.topology.distance_m(ask.bus, offer.bus)
            return None if distance is None else (distance,)
        pair = _rank_pair(book, ask, offer)
        if pair is None or self._cap_left(book, ask, offer) == 0:
            return None
        assert book.ranking is not None  # _rank_pair found an entry in it
        return (book.ranking.entries[pair].score,)

    @staticmethod
    def _cap_left(book: _Book, ask: Shout, offer: Shout) -> int:
        """Energy the pair may still trade under the OCDA ranking's cap [Wh]."""
        pair = _rank_pair(book, ask, offer)
        return MAX_QUANTITY_WH if pair is None else book.caps.get(pair, MAX_QUANTITY_WH)

    def _fill(self, book: _Book, ask: _Resting, offer: _Resting) -> Trade:
        pair = _rank_pair(book, ask.shout, offer.shout)
        quantity = min(
            ask.remaining_wh, offer.remaining_wh, self._cap_left(book, ask.shout, offer.shout)
        )
        ask.remaining_wh -= quantity
        offer.remaining_wh -= quantity
        if pair is not None and pair in book.caps:
            book.caps[pair] -= quantity
        price = (ask.shout.price + offer.shout.price) / 2
        trade = Trade(
            seq=self.next_trade_seq,
            window=ask.shout.window,
            pool=ask.shout.pool,
            ask_id=ask.shout.shout_id,
            offer_id=offer.shout.shout_id,
            asker=ask.shout.brp,
            offeror=offer.shout.brp,
            asker_bus=ask.shout.bus,
            offeror_bus=offer.shout.bus,
            quantity_wh=quantity,
            price=price,
            amount_uect=round(quantity * price * UECT_PER_WH_ECT_PER_KWH),  # half-to-even
        )
        self.trades.append(trade)
        self.next_trade_seq += 1
        for resting in (ask, offer):
            if resting.remaining_wh == 0:
                self._remove(book, resting.shout)
        return trade

    def _remove(self, book: _Book, shout: Shout) -> None:
        (book.asks if shout.side is Side.ASK else book.offers).pop(shout.shout_id)
        del self._where[shout.shout_id]


def _rank_pair(book: _Book, ask: Shout, offer: Shout) -> tuple[str, str] | None:
    """The ranking key that governs this pair: its own entry, else the offeror's "*" row."""
    if book.ranking is None:
        return None
    for pair in ((ask.bus, offer.bus), (ANY_ASKER, offer.bus)):
        if pair in book.ranking.entries:
            return pair
    return None


def _ask_priority(resting: _Resting) -> tuple[Fraction, int]:
    """Outstanding ask first: highest price, then oldest (seed 003 §2.2)."""
    return (-resting.shout.price, resting.shout.timestamp)


def _by_time(resting: _Resting) -> int:
    return resting.shout.timestamp


def total_uect(trades: Iterable[Trade]) -> int:
    """Sum of trade amounts [µECT] (what askers pay and offerors receive in total)."""
    return sum(t.amount_uect for t in trades)
