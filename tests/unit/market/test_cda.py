"""Golden cases for the CDA / NCDA / OCDA matching rules of seed 003 §2.2 (docs/spec/cda.md)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from market.cda import (
    ANY_ASKER,
    BookFullError,
    BookSnapshot,
    Market,
    Mechanism,
    NotOwnerError,
    Pool,
    RankEntry,
    Ranking,
    Shout,
    Side,
    TopologyMissingError,
    UnknownShoutError,
    Unmatched,
    WindowClosedError,
)
from market.errors import InvalidInput
from market.topology import Line, Topology


class Feed:
    """Builds shouts with increasing timestamps, as the state machine would."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(
        self,
        sid: str,
        side: Side,
        qty: int,
        price: str,
        *,
        brp: str | None = None,
        bus: str = "a",
        pool: Pool = Pool.UP,
        window: int = 0,
    ) -> Shout:
        self.t += 1
        return Shout(sid, brp or sid, bus, self.t, side, pool, qty, Fraction(price), window)


ASK, OFFER = Side.ASK, Side.OFFER


def test_mean_price_and_amount() -> None:
    """A match is priced at the mean of ask and offer; amount = Wh · ECT/kWh · 1000 µECT."""
    m, s = Market(Mechanism.CDA), Feed()
    m.place(s("o", OFFER, 1000, "0.30"))
    (t,) = m.place(s("a", ASK, 1000, "0.40"))
    assert (t.ask_id, t.offer_id, t.quantity_wh) == ("a", "o", 1000)
    assert t.price == Fraction("0.35")
    assert t.amount_uect == 350_000  # 1 kWh at 0.35 ECT/kWh


@pytest.mark.parametrize(
    ("ask", "offer", "uect"),
    [("0.003", "0.002", 2), ("0.004", "0.003", 4), ("0.0015", "0.001", 1)],
)
def test_amount_rounds_half_to_even(ask: str, offer: str, uect: int) -> None:
    """1 Wh at a mean of 0.0025 / 0.0035 / 0.00125 ECT/kWh is 2.5 / 3.5 / 1.25 µECT -> 2 / 4 / 1."""
    m, s = Market(Mechanism.CDA), Feed()
    m.place(s("o", OFFER, 1, offer))
    (t,) = m.place(s("a", ASK, 1, ask))
    assert t.amount_uect == uect


def test_price_first_then_time_first() -> None:
    """The outstanding ask takes the cheapest offer, and the oldest among equal prices."""
    m, s = Market(Mechanism.CDA), Feed()
    m.place(s("o1", OFFER, 100, "0.30"))
    m.place(s("o2", OFFER, 100, "0.30"))
    m.place(s("o3", OFFER, 100, "0.25"))
    m.place(s("o4", OFFER, 100, "0.50"))  # not suitable: above the ask's price
    trades = m.place(s("a", ASK, 250, "0.40"))
    assert [(t.offer_id, t.quantity_wh, t.price) for t in trades] == [
        ("o3", 100, Fraction("0.325")),
        ("o1", 100, Fraction("0.35")),
        ("o2", 50, Fraction("0.35")),
    ]
    left = {u.shout.shout_id: u.remaining_wh for u in m.resting(0, Pool.UP)}
    assert left == {"o2": 50, "o4": 100}  # cleared shouts removed, partial offer rests


def test_outstanding_ask_is_highest_price_then_oldest() -> None:
    """An arriving offer fills the highest-priced ask first, the older one among equals."""
    m, s = Market(Mechanism.CDA), Feed()
    m.place(s("a1", ASK, 100, "0.40"))
    m.place(s("a2", ASK, 100, "0.45"))
    m.place(s("a3", ASK, 100, "0.45"))
    trades = m.place(s("o", OFFER, 150, "0.35"))
    assert [(t.ask_id, t.quantity_wh) for t in trades] == [("a2", 100), ("a3", 50)]


def test_residual_demand_rests_for_later_rounds() -> None:
    """A partly filled ask keeps its residual and is filled by later offers of the window."""
    m, s = Market(Mechanism.CDA), Feed()
    m.place(s("o1", OFFER, 400, "0.30"))
    (t1,) = m.place(s("a", ASK, 1000, "0.40"))
    assert t1.quantity_wh == 400
    assert [(u.shout.shout_id, u.remaining_wh) for u in m.resting(0, Pool.UP)] == [("a", 600)]
    (t2,) = m.place(s("o2", OFFER, 700, "0.38"))
    assert (t2.quantity_wh, t2.price) == (600, Fraction("0.39"))
    assert [(u.shout.shout_id, u.remaining_wh) for u in m.resting(0, Pool.UP)] == [("o2", 100)]


def test_equal_prices_match_and_higher_offer_does_not() -> None:
    """An offer at exactly the ask's price is suitable; one cent above is not."""
    m, s = Market(Mechanism.CDA), Feed()
    assert m.place(s("o1", OFFER, 10, "0.41")) == []
    assert m.place(s("a", ASK, 10, "0.40")) == []
    (t,) = m.place(s("o2", OFFER, 10, "0.40"))
    assert (t.offer_id, t.price) == ("o2", Fraction("0.40"))


def test_pools_and_windows_never_match_across() -> None:
    """AS+ never matches AS−, and window 0 never matches window 1."""
    m, s = Market(Mechanism.CDA), Feed()
    assert m.place(s("o", OFFER, 10, "0.10", pool=Pool.DOWN)) == []
    assert m.place(s("o1", OFFER, 10, "0.10", window=1)) == []
    assert m.place(s("a", ASK, 10, "0.90", pool=Pool.UP)) == []
    (t,) = m.place(s("a2", ASK, 10, "0.90", pool=Pool.DOWN))
    assert (t.offer_id, t.pool) == ("o", Pool.DOWN)


def test_a_brp_does_not_trade_with_itself() -> None:
    """A BRP's ask skips its own offer and takes the next suitable one."""
    m, s = Market(Mechanism.CDA), Feed()
    m.place(s("o1", OFFER, 10, "0.10", brp="x"))
    m.place(s("o2", OFFER, 10, "0.20", brp="y"))
    (t,) = m.place(s("a", ASK, 10, "0.90", brp="x"))
    assert t.offer_id == "o2"


def test_cancel_only_by_owner_and_returns_remainder() -> None:
    """Cancel withdraws what is left; another BRP or an unknown id is refused."""
    m, s = Market(Mechanism.CDA), Feed()
    m.place(s("o", OFFER, 40, "0.30", brp="x"))
    m.place(s("a", ASK, 100, "0.40", brp="y"))
    with pytest.raises(NotOwnerError):
        m.cancel("a", "x")
    assert m.cancel("a", "y").remaining_wh == 60
    assert m.resting(0, Pool.UP) == []
    with pytest.raises(UnknownShoutError):
        m.cancel("a", "y")
    with pytest.raises(UnknownShoutError):
        m.cancel("o", "x")  # fully cleared, so gone


def test_close_window_reports_residuals_and_refuses_late_shouts() -> None:
    """Closing a window returns its unmatched remainders and later shouts for it are refused."""
    m, s = Market(Mechanism.CDA), Feed()
    m.place(s("o", OFFER, 40, "0.30"))
    m.place(s("a", ASK, 100, "0.40"))
    m.place(s("b", ASK, 5, "0.40", window=1))
    left = m.close_window(0)
    assert [(u.shout.shout_id, u.remaining_wh) for u in left] == [("a", 60)]
    with pytest.raises(WindowClosedError):
        m.place(s("late", OFFER, 1, "0.1", window=0))
    assert [u.shout.shout_id for u in m.resting(1, Pool.UP)] == ["b"]


def test_timestamps_must_increase_and_ids_be_unique() -> None:
    """Time-first needs a strict submission order; a resting id cannot be reused."""
    m = Market(Mechanism.CDA)
    p = Fraction("0.3")
    m.place(Shout("x", "b", "a", 5, ASK, Pool.UP, 1, p, 0))
    with pytest.raises(InvalidInput) as err:
        m.place(Shout("y", "b", "a", 5, ASK, Pool.UP, 1, p, 0))
    assert err.value.field == "shout.timestamp"
    with pytest.raises(InvalidInput) as err:
        m.place(Shout("x", "b", "a", 6, ASK, Pool.UP, 1, p, 0))
    assert err.value.field == "shout.shout_id"


def test_book_full_is_refused() -> None:
    """A book at its bound refuses a new shout instead of growing without limit."""
    m, s = Market(Mechanism.CDA, max_resting_per_book=2), Feed()
    m.place(s("a1", ASK, 1, "0.1"))
    m.place(s("a2", ASK, 1, "0.1"))
    with pytest.raises(BookFullError):
        m.place(s("a3", ASK, 1, "0.1"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"quantity_wh": 0}, "shout.quantity_wh"),
        ({"quantity_wh": 1.5}, "shout.quantity_wh"),
        ({"price": "0.1234567"}, "shout.price"),
        ({"price": "-0.1"}, "shout.price"),
        ({"price": 0.3}, "shout.price"),
        ({"price": "1e3"}, "shout.price"),
        ({"side": "bid"}, "shout.side"),
        ({"pool": "AS"}, "shout.pool"),
        ({"brp": ""}, "shout.brp"),
        ({"window": -1}, "shout.window"),
    ],
)
def test_bad_shout_data_names_the_field(change: dict[str, object], field: str) -> None:
    """Malformed shout data is refused with the name of the offending field."""
    data: dict[str, object] = {
        "shout_id": "s",
        "brp": "b",
        "bus": "1",
        "side": "ask",
        "pool": "AS+",
        "quantity_wh": 10,
        "price": "0.35",
        "window": 0,
    }
    data.update(change)
    with pytest.raises(InvalidInput) as err:
        Shout.from_data(data, timestamp=1)
    assert err.value.field == field


def test_shout_round_trips_through_data() -> None:
    """from_data(to_data()) gives the same shout, price kept exact."""
    shout = Shout("s", "b", "1", 3, OFFER, Pool.DOWN, 7, Fraction("0.123456"), 2)
    assert Shout.from_data(shout.to_data(), timestamp=3) == shout


# ---------------------------------------------------------------- NCDA


def chain() -> Topology:
    """a --100-- b --100-- c --100-- d, and e islanded."""
    lines = (Line("a", "b", 100), Line("b", "c", 100), Line("c", "d", 100))
    return Topology(("a", "b", "c", "d", "e"), lines)


def test_ncda_picks_the_nearest_suitable_offer() -> None:
    """NCDA prefers a nearer, dearer suitable offer to a cheaper, farther one."""
    m, s = Market(Mechanism.NCDA, chain()), Feed()
    m.place(s("far_cheap", OFFER, 100, "0.20", bus="d"))
    m.place(s("near_dear", OFFER, 60, "0.38", bus="b"))
    m.place(s("nearest_too_dear", OFFER, 100, "0.45", bus="a"))
    trades = m.place(s("ask", ASK, 100, "0.40", bus="a"))
    assert [(t.offer_id, t.quantity_wh) for t in trades] == [("near_dear", 60), ("far_cheap", 40)]
    assert trades[0].price == Fraction("0.39")


def test_ncda_distance_tie_goes_to_price_then_time() -> None:
    """Among equally near offers NCDA falls back to price first, then time first."""
    m, s = Market(Mechanism.NCDA, chain()), Feed()
    m.place(s("c_older", OFFER, 10, "0.30", bus="c"))
    m.place(s("a_newer", OFFER, 10, "0.30", bus="a"))  # a and c are both 100 m from b
    m.place(s("a_cheap", OFFER, 10, "0.29", bus="a"))
    trades = m.place(s("ask", ASK, 30, "0.40", bus="b"))
    assert [t.offer_id for t in trades] == ["a_cheap", "c_older", "a_newer"]


def test_cda_on_the_same_book_ignores_distance() -> None:
    """The same shouts under plain CDA go price first: the contrast NCDA is built on."""
    m, s = Market(Mechanism.CDA), Feed()
    m.place(s("far_cheap", OFFER, 100, "0.20", bus="d"))
    m.place(s("near_dear", OFFER, 60, "0.38", bus="b"))
    (t,) = m.place(s("ask", ASK, 100, "0.40", bus="a"))
    assert t.offer_id == "far_cheap"


def test_ncda_skips_islanded_offers_and_needs_a_topology() -> None:
    """An offer with no path to the asker is never matched; no topology means no shouts."""
    m, s = Market(Mechanism.NCDA, chain()), Feed()
    m.place(s("island", OFFER, 10, "0.10", bus="e"))
    assert m.place(s("ask", ASK, 10, "0.40", bus="a")) == []
    with pytest.raises(TopologyMissingError):
        Market(Mechanism.NCDA).place(s("x", ASK, 1, "0.1"))
    with pytest.raises(InvalidInput) as err:
        m.place(s("y", ASK, 1, "0.1", bus="zz"))
    assert err.value.field == "shout.bus"


def test_ncda_new_topology_can_unlock_a_match() -> None:
    """Publishing a topology that joins an island lets the resting shouts match at once."""
    m, s = Market(Mechanism.NCDA, chain()), Feed()
    m.place(s("island", OFFER, 10, "0.10", bus="e"))
    m.place(s("ask", ASK, 10, "0.40", bus="a"))
    joined = Topology(chain().buses, (*chain().lines, Line("d", "e", 50)))
    (t,) = m.publish_topology(joined)
    assert (t.ask_id, t.offer_id) == ("ask", "island")


# ---------------------------------------------------------------- OCDA


def test_ocda_follows_ranking_omits_and_caps() -> None:
    """OCDA orders by the operator's score, skips unranked pairs and honours caps."""
    m, s = Market(Mechanism.OCDA), Feed()
    m.place(s("ob", OFFER, 100, "0.20", bus="b"))
    m.place(s("oc", OFFER, 100, "0.30", bus="c"))
    m.place(s("od", OFFER, 100, "0.10", bus="d"))  # cheapest, but the operator omits a<-d
    assert m.place(s("ask", ASK, 150, "0.40", bus="a")) == []  # no ranking yet: waits
    ranking = Ranking(0, Pool.UP, {("a", "c"): RankEntry(1, cap_wh=70), ("a", "b"): RankEntry(5)})
    trades = m.record_ranking(ranking)
    assert [(t.offer_id, t.quantity_wh) for t in trades] == [("oc", 70), ("ob", 80)]
    assert {u.shout.shout_id: u.remaining_wh for u in m.resting(0, Pool.UP)} == {
        "ob": 20,
        "oc": 30,
        "od": 100,
    }


def test_ocda_cap_is_shared_by_all_shouts_of_a_bus_pair() -> None:
    """A pair's cap bounds the total volume between the two buses, across shouts."""
    m, s = Market(Mechanism.OCDA), Feed()
    m.record_ranking(Ranking(0, Pool.UP, {("a", "b"): RankEntry(0, cap_wh=50)}))
    m.place(s("o1", OFFER, 40, "0.20", bus="b"))
    m.place(s("o2", OFFER, 40, "0.20", bus="b"))
    trades = m.place(s("ask", ASK, 100, "0.40", bus="a"))
    assert [(t.offer_id, t.quantity_wh) for t in trades] == [("o1", 40), ("o2", 10)]
    assert m.place(s("ask2", ASK, 100, "0.40", bus="a")) == []


def test_ocda_wildcard_row_shares_its_cap_across_askers() -> None:
    """A "*" row ranks an offeror for every asker; its cap is shared; a pair entry wins."""
    m, s = Market(Mechanism.OCDA), Feed()
    m.place(s("ob", OFFER, 100, "0.20", bus="b"))
    m.place(s("oc", OFFER, 100, "0.30", bus="c"))
    ranking = {
        (ANY_ASKER, "b"): RankEntry(9, cap_wh=30),
        (ANY_ASKER, "c"): RankEntry(1),
        ("d", "b"): RankEntry(0),  # asker d has its own, uncapped, preferred entry for b
    }
    m.record_ranking(Ranking(0, Pool.UP, ranking))
    t1 = m.place(s("a1", ASK, 120, "0.40", bus="a"))
    assert [(t.offer_id, t.quantity_wh) for t in t1] == [("oc", 100), ("ob", 20)]
    t2 = m.place(s("a2", ASK, 50, "0.40", bus="e"))
    assert [(t.offer_id, t.quantity_wh) for t in t2] == [("ob", 10)]  # shared cap: 30 - 20
    t3 = m.place(s("a3", ASK, 50, "0.40", bus="d"))
    assert [(t.offer_id, t.quantity_wh) for t in t3] == [("ob", 50)]


def test_star_is_not_a_shout_bus() -> None:
    """The wildcard asker id of OCDA rankings cannot be used as a shout's bus."""
    with pytest.raises(InvalidInput) as err:
        Feed()("x", ASK, 1, "0.1", bus=ANY_ASKER)
    assert err.value.field == "shout.bus"


def test_ranking_with_bad_cap_names_the_pair() -> None:
    """A negative cap in an operator ranking is refused with the pair in the field name."""
    with pytest.raises(InvalidInput, match="cap_wh"):
        Ranking(0, Pool.UP, {("a", "b"): RankEntry(0, cap_wh=-1)})


def test_snapshot_and_restore_continue_identically() -> None:
    """A book stored and restored into a fresh market matches later shouts exactly as before."""
    s = Feed()
    first = [
        s("o1", OFFER, 100, "0.30", bus="b"),
        s("a1", ASK, 250, "0.40", bus="a"),
        s("o2", OFFER, 80, "0.45", bus="c"),
    ]
    later = [s("o3", OFFER, 500, "0.20", bus="d"), s("a2", ASK, 90, "0.50", bus="a")]
    ranking = Ranking(0, Pool.UP, {(ANY_ASKER, o): RankEntry(1, cap_wh=300) for o in "bcd"})
    original = Market(Mechanism.OCDA)
    original.record_ranking(ranking)
    for shout in first:
        original.place(shout)
    restored = Market(Mechanism.OCDA)
    restored.restore_book(original.book_snapshot(0, Pool.UP))
    restored.next_trade_seq = original.next_trade_seq
    assert restored.book_snapshot(0, Pool.UP) == original.book_snapshot(0, Pool.UP)
    assert restored.last_timestamp == 3
    for shout in later:
        assert restored.place(shout) == original.place(shout)
    assert restored.book_snapshot(0, Pool.UP) == original.book_snapshot(0, Pool.UP)


def test_restore_refuses_a_shout_of_another_book() -> None:
    """A snapshot whose shout belongs to another pool is refused, naming the position."""
    shout = Feed()("x", ASK, 10, "0.3", pool=Pool.DOWN)
    snap = BookSnapshot(0, Pool.UP, (Unmatched(shout, 10),))
    with pytest.raises(InvalidInput) as err:
        Market(Mechanism.CDA).restore_book(snap)
    assert err.value.field == "book.resting[0]"
