"""Invariants of the CDA engines under random shout sequences (hypothesis, docs/spec/cda.md §3).

The engine runs one pass over the asks per event; the reference model below instead searches the
whole book for the best (ask, offer) pair again after every single fill. Both must produce the
same trades, which pins price-time priority, NCDA's nearest-first rule and OCDA's ranking.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.cda import (
    Market,
    Mechanism,
    NotOwnerError,
    Pool,
    RankEntry,
    Ranking,
    Shout,
    Side,
    Trade,
    UnknownShoutError,
)
from market.topology import Line, Topology

BUSES = ("a", "b", "c", "d", "e")  # e is an island
TOPO = Topology(BUSES, (Line("a", "b", 300), Line("b", "c", 100), Line("c", "d", 100)))
PRICES = [Fraction(p, 100) for p in range(30, 41)] + [Fraction("0.355555")]


@dataclass
class Op:
    kind: str  # place | cancel | close
    side: Side = Side.ASK
    pool: Pool = Pool.UP
    window: int = 0
    brp: str = "x"
    bus: str = "a"
    qty: int = 1
    price: Fraction = Fraction(0)
    target: int = 0


def random_ops(rnd: random.Random, n: int) -> list[Op]:
    """Uniform random events: Hypothesis' own draws favour 'simple' values, which here means
    every shout an ask of one BRP at one price, and books that never cross."""
    out = []
    for _ in range(n):
        kind = rnd.choices(["place", "cancel", "close"], weights=[12, 2, 1])[0]
        out.append(
            Op(
                kind=kind,
                side=rnd.choice(list(Side)),
                pool=rnd.choice([Pool.UP, Pool.UP, Pool.UP, Pool.DOWN]),
                window=rnd.choice([0, 0, 0, 1]),  # offset from the oldest open window
                brp=rnd.choice(["", "b0"]),  # a cancel by the owner ("") or by b0
                bus=rnd.choice(BUSES),
                qty=rnd.randint(1, 60),
                price=rnd.choice(PRICES),
                target=rnd.randint(0, 40),
            )
        )
    return out


op_lists = st.builds(random_ops, st.randoms(use_true_random=True), st.integers(0, 40))
rankings = st.dictionaries(
    st.tuples(st.sampled_from(("*", *BUSES)), st.sampled_from(BUSES)),
    st.builds(RankEntry, st.integers(-3, 3), st.one_of(st.none(), st.integers(0, 80))),
)


class Reference:
    """A deliberately naive matcher: after every fill, search all pairs again."""

    def __init__(self, mech: Mechanism, entries: dict[tuple[str, str], RankEntry]) -> None:
        self.mech, self.entries = mech, entries
        self.left: dict[str, int] = {}
        self.shouts: dict[str, Shout] = {}
        self.used: dict[tuple[int, Pool, str, str], int] = {}  # OCDA volume per book and pair

    def key(self, ask: Shout, o: Shout) -> tuple[object, ...] | None:
        if o.price > ask.price or o.brp == ask.brp or o.pool != ask.pool or o.window != ask.window:
            return None
        if self.mech is Mechanism.NCDA:
            d = TOPO.distance_m(ask.bus, o.bus)
            return None if d is None else (d, o.price, o.timestamp)
        if self.mech is Mechanism.OCDA:
            pair = self.pair(ask, o)
            if pair is None or self.cap_left(ask, o) == 0:
                return None
            return (self.entries[pair].score, o.price, o.timestamp)
        return (o.price, o.timestamp)

    def pair(self, ask: Shout, o: Shout) -> tuple[str, str] | None:
        """The asker's own entry wins over the offeror's "*" row."""
        if (ask.bus, o.bus) in self.entries:
            return (ask.bus, o.bus)
        return ("*", o.bus) if ("*", o.bus) in self.entries else None

    def cap_left(self, ask: Shout, o: Shout) -> int:
        pair = self.pair(ask, o)
        if self.mech is not Mechanism.OCDA or pair is None or self.entries[pair].cap_wh is None:
            return 10**9
        cap = self.entries[pair].cap_wh
        assert cap is not None
        return cap - self.used.get((ask.window, ask.pool, *pair), 0)

    def settle(self) -> list[tuple[str, str, int]]:
        fills = []
        while True:
            asks = sorted(
                (s for i, s in self.shouts.items() if s.side is Side.ASK and self.left[i]),
                key=lambda s: (-s.price, s.timestamp),
            )
            best = None
            for ask in asks:
                cands = [
                    (k, o)
                    for i, o in self.shouts.items()
                    if o.side is Side.OFFER and self.left[i] and (k := self.key(ask, o))
                ]
                if cands:
                    best = (ask, min(cands, key=lambda c: c[0])[1])  # type: ignore[arg-type,return-value]
                    break
            if best is None:
                return fills
            ask, o = best
            q = min(self.left[ask.shout_id], self.left[o.shout_id], self.cap_left(ask, o))
            self.left[ask.shout_id] -= q
            self.left[o.shout_id] -= q
            if self.mech is Mechanism.OCDA and (pair := self.pair(ask, o)) is not None:
                book_pair = (ask.window, ask.pool, *pair)
                self.used[book_pair] = self.used.get(book_pair, 0) + q
            fills.append((ask.shout_id, o.shout_id, q))


def run(
    mech: Mechanism, ops: list[Op], entries: dict, withdrawn: dict[str, int]
) -> tuple[Market, list[Shout], Reference]:
    """Feed ``ops`` to the engine and the reference; ``withdrawn`` gets cancelled/closed rests.

    ``Op.window`` is an offset from the oldest open window; "close" closes that window.
    OCDA gets the same ranking for every book the ops can reach.
    """
    market = Market(mech, TOPO if mech is Mechanism.NCDA else None)
    ref = Reference(mech, entries)
    if mech is Mechanism.OCDA:
        for window in range(len(ops) + 2):
            for pool in Pool:
                assert market.record_ranking(Ranking(window, pool, entries)) == []
    placed: list[Shout] = []
    for op in ops:
        engine_fills: list[Trade] = []
        if op.kind == "place":
            s = Shout(
                f"s{len(placed)}",
                f"b{len(placed) % 3}",  # BRPs rotate: self-trades possible but not the norm
                op.bus,
                len(placed),
                op.side,
                op.pool,
                op.qty,
                op.price,
                market.open_from + op.window,
            )
            placed.append(s)
            ref.shouts[s.shout_id], ref.left[s.shout_id] = s, s.quantity_wh
            engine_fills = market.place(s)
        elif op.kind == "cancel" and placed:
            s = placed[op.target % len(placed)]
            try:
                withdrawn[s.shout_id] = market.cancel(s.shout_id, op.brp or s.brp).remaining_wh
            except (UnknownShoutError, NotOwnerError):
                assert ref.left[s.shout_id] == 0 or op.brp not in ("", s.brp)
                continue
            ref.left[s.shout_id] = 0
        elif op.kind == "close":
            closing = market.open_from
            for u in market.close_window(closing):
                withdrawn[u.shout.shout_id] = u.remaining_wh
            for s in placed:
                if s.window == closing:
                    ref.left[s.shout_id] = 0
        got = [(t.ask_id, t.offer_id, t.quantity_wh) for t in engine_fills]
        assert got == ref.settle()
        if mech is Mechanism.CDA:
            assert_uncrossed(market)
    return market, placed, ref


def assert_uncrossed(market: Market) -> None:
    """After every event no resting ask can still match a resting offer of another BRP."""
    for window in (market.open_from, market.open_from + 1):
        for pool in Pool:
            rows = [u.shout for u in market.resting(window, pool)]
            asks = [s for s in rows if s.side is Side.ASK]
            offers = [s for s in rows if s.side is Side.OFFER]
            assert not any(o.price <= a.price and o.brp != a.brp for a in asks for o in offers)


@pytest.mark.parametrize("mech", list(Mechanism))
@settings(max_examples=40, deadline=None)
@given(ops=op_lists, entries=rankings)
def test_engine_matches_reference_and_conserves(
    mech: Mechanism, ops: list[Op], entries: dict
) -> None:
    """Same trades as the naive model; matched + left = placed; prices inside [offer, ask]."""
    withdrawn: dict[str, int] = {}
    market, placed, ref = run(mech, ops, entries, withdrawn)
    by_id = {s.shout_id: s for s in placed}
    matched = dict.fromkeys(by_id, 0)
    for t in market.trades:
        ask, offer = by_id[t.ask_id], by_id[t.offer_id]
        assert ask.side is Side.ASK
        assert offer.side is Side.OFFER
        assert (ask.pool, ask.window) == (offer.pool, offer.window) == (t.pool, t.window)
        assert offer.price <= t.price <= ask.price
        assert t.price == (ask.price + offer.price) / 2
        assert t.amount_uect == round(t.quantity_wh * t.price * 1000)
        assert t.quantity_wh > 0
        matched[t.ask_id] += t.quantity_wh
        matched[t.offer_id] += t.quantity_wh
    for sid, s in by_id.items():
        assert matched[sid] + ref.left[sid] + withdrawn.get(sid, 0) == s.quantity_wh
    windows = range(market.open_from, market.open_from + 2)
    resting = {
        u.shout.shout_id: u.remaining_wh
        for w in windows
        for p in Pool
        for u in market.resting(w, p)
    }
    assert resting == {sid: left for sid, left in ref.left.items() if left}
