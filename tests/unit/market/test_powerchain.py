"""market.powerchain and market.powerchain_book: eq. 4.1–4.4, sessions, eq. 5.1, the order book.

Figures from seed 004 (PowerChain thesis) §4.2.3, §5.3, §5.4, §6.4, §6.5; where the thesis's
printed formulas and its definitions disagree the pinned behaviour is explained in
docs/spec/powerchain.md §2.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from market import powerchain as pc
from market import powerchain_book as book
from market.errors import InvalidInput

P = pc.DEFAULT_PARAMS
ENT = pc.UENT_PER_ENT


def loss(d_uent: int, stored_wh: int = 7000) -> pc.Imbalance:
    """Totals after a loss of ``d_uent`` that set R = |D|·C (as the §6.4 over-consumption)."""
    before = pc.Imbalance(stored_wh, stored_wh * 1000)
    return pc.settle(before, P, 0, d_uent)


def test_defaults_are_the_thesis_parameters() -> None:
    """§5.3 / Fig. 6.2: M = B = 0.5 ENT/kWh, C = 0.05, H = 7200 s, F = 0.2."""
    assert pc.params_text(P) == {"M": "0.5", "B": "0.5", "C": "0.05", "H": "7200", "F": "0.2"}
    assert pc.parse_params(pc.params_text(P)) == P


@pytest.mark.parametrize(
    ("name", "text"),
    [("C", "0"), ("C", "1"), ("M", "1.5"), ("B", "-0.1"), ("F", "2"), ("H", "1.5"), ("X", "1")],
)
def test_parameter_ranges(name: str, text: str) -> None:
    """A parameter outside its range (or unknown) is refused naming it."""
    with pytest.raises(InvalidInput, match="params"):
        pc.parse_parameter(name, text)


def test_equilibrium_mints_and_burns_at_par() -> None:
    """D = 0, R = 0: 1 ENT per kWh each way; the fee F splits a mint 80/20 (§6.4: 8 and 2)."""
    imb = pc.Imbalance(0, 0)
    assert pc.mint_uent(imb, P, 10_000) == 10 * ENT
    assert pc.burn_uent(imb, P, 1000) == ENT
    assert pc.split_fee(10 * ENT, P) == (8 * ENT, 2 * ENT)


def test_r_is_set_when_the_difference_grows_and_kept_while_it_shrinks() -> None:
    """§4.2.3.1: R = |D|·C on an increase, unchanged on a decrease, 0 at equilibrium."""
    imb = loss(ENT)  # D0 = 1 ENT
    assert imb.r == Fraction(1, 20)
    shrunk = pc.settle(imb, P, 10_000, pc.mint_uent(imb, P, 10_000))
    assert (shrunk.difference_uent, shrunk.r) == (500_000, Fraction(1, 20))  # D_t1 = 0.5
    grown = pc.settle(shrunk, P, 0, 100_000)
    assert grown.r == Fraction(600_000, ENT) * P.c  # increase: recomputed from |D| = 0.6
    assert pc.settle(shrunk, P, 500, 0).r == 0  # D reaches 0 exactly


def test_steps_to_equilibrium_eq_4_4() -> None:
    """n_0 = D0/(D0·C) = 1/C = 20 kWh (§6.4), and D_t2 = 0.15 leaves 3 kWh."""
    assert pc.steps_to_equilibrium_kwh(loss(ENT), P.b) == 20
    at_t2 = pc.Imbalance(10_000, 10_150_000, Fraction(1, 20))
    assert pc.steps_to_equilibrium_kwh(at_t2, P.b) == 3


def test_cost_stops_at_equilibrium() -> None:
    """§6.4: 7.857 kWh at D = 0.15: 3 kWh at 1.05 then par, 8.007 ENT, never past D = 0."""
    imb = pc.Imbalance(10_000, 10_150_000, Fraction(1, 20))
    assert pc.burn_uent(imb, P, 7857) == 8_007_000
    assert pc.settle(imb, P, -7857, -8_007_000) == pc.Imbalance(2143, 2_143_000, Fraction(0))


def test_cost_rounds_up_to_the_uent() -> None:
    """A fractional cost is rounded up, so a costed event always moves D by >= 1 µENT."""
    imb = pc.Imbalance(1000, 1_000_007, Fraction(7, 20 * ENT))  # R = 7e-6·0.05 ENT/kWh
    assert pc.cost_uent(imb, P.b, 1000) == 1  # exact 0.35 µENT -> 1
    assert pc.burn_uent(imb, P, 1000) == 1_000_001


def test_pinned_cap_is_on_the_cost_not_the_rate() -> None:
    """Eq. 4.2 prints "B otherwise" (a burn *rate* of 0.5 < 1) but B is the maximum *cost*
    (§4.2.3.1, §5.3): with R >= B we burn 1 + B = 1.5 per kWh and mint 1 − M."""
    big = loss(20 * ENT, stored_wh=100_000)  # R = 20·0.05 = 1 ENT/kWh > M = B = 0.5
    assert big.r == 1
    assert pc.burn_uent(big, P, 1000) == 1_500_000  # literal eq. 4.2 would give 500_000
    m3 = pc.Params(m=Fraction(3, 10))
    assert pc.mint_uent(big, m3, 1000) == 700_000  # literal eq. 4.1 would give M = 300_000


def test_pinned_surplus_mirrors_the_correction() -> None:
    """Energy in excess (D < 0, not treated by the thesis): mint 1 + R, burn 1 − R, so |D|
    shrinks; the literal 1 − R mint would grow it by R per kWh."""
    surplus = pc.settle(pc.Imbalance(8000, 8 * ENT), P, 1000, 0)  # 9 kWh, 8 ENT
    assert surplus.difference_uent == -ENT
    assert surplus.r == Fraction(1, 20)
    assert pc.mint_uent(surplus, P, 1000) == 1_050_000
    assert pc.burn_uent(surplus, P, 1000) == 950_000
    after = pc.settle(surplus, P, 1000, pc.mint_uent(surplus, P, 1000))
    assert after.difference_uent == -950_000


def test_session_sizing_and_rounding_pin() -> None:
    """§6.4: 7.35 ENT / 1.05 = 7 kWh; 8.25 / 1.05 = 7.857142… kWh is floored to 7857 Wh. The
    thesis's 8.007 ENT burned / 0.243 returned are the figures of 7857 Wh; the exact 7.857142…
    kWh of its formula would burn 8.0071428… and return 0.2428571… ENT."""
    imb = pc.Imbalance(17_000, 17_500_000, Fraction(1, 20))
    assert pc.session_energy_wh(7_350_000, imb, P) == 7000
    assert pc.session_energy_wh(8_250_000, imb, P) == 7857
    exact_kwh = Fraction(825, 105)  # 8.25 / 1.05 as the formula gives it
    exact_burn = 3 * Fraction(105, 100) + (exact_kwh - 3)
    assert (exact_burn, Fraction(825, 100) - exact_burn) == (Fraction(1121, 140), Fraction(17, 70))
    assert pc.burn_uent(pc.Imbalance(10_000, 10_150_000, Fraction(1, 20)), P, 7857) == 8_007_000
    with pytest.raises(InvalidInput, match="less than 1 Wh"):
        pc.open_session(999, pc.Imbalance(), P, 10_000, 0)
    with pytest.raises(InvalidInput, match="free"):
        pc.open_session(3 * ENT, pc.Imbalance(), P, 2000, 0)


def test_over_consumption_burns_only_the_lock() -> None:
    """§6.4: 2 kWh on a session with 1 kWh / 1 ENT left: 1 ENT burned, session ends, 8 vs 7."""
    imb = pc.Imbalance(9000, 9 * ENT)
    session = pc.Session(1000, ENT, 0, 7_200_000)
    done = pc.consume(session, imb, P, 2000)
    assert (done.burned_uent, done.session, done.refund_uent) == (ENT, None, 0)
    assert done.imbalance == pc.Imbalance(7000, 8 * ENT, Fraction(1, 20))


def test_partial_consumption_keeps_the_session() -> None:
    """1 kWh of a 2 kWh session: 1 ENT burned, 1 kWh and 1 ENT left, nothing refunded."""
    done = pc.consume(pc.Session(2000, 2 * ENT, 0, 1), pc.Imbalance(10_000, 10 * ENT), P, 1000)
    assert done.session == pc.Session(1000, ENT, 0, 1)
    assert (done.burned_uent, done.refund_uent, done.released_wh) == (ENT, 0, 0)


def test_voting_eq_5_1_and_flip() -> None:
    """Passed when V+/N > 0.5; a re-send flips the sender's vote; non-voters do not count."""
    voters = {"a", "b", "c"}
    votes = pc.cast({}, "a")
    assert not pc.passed(votes, voters)
    votes = pc.cast(votes, "b")
    assert pc.passed(votes, voters)
    assert pc.cast(votes, "b") == {"a": True, "b": False}
    assert not pc.passed(pc.cast(votes, "b"), voters)
    assert pc.cast(pc.cast(votes, "b"), "b") == votes
    assert not pc.passed({"a": True, "x": True}, voters)
    assert pc.passed({"a": True}, {"a"})  # a lone voter passes alone (§6.3)
    assert not pc.passed({"a": True}, {"a", "b"})  # 1/2 is not > 0.5


def test_book_chapter_6_5() -> None:
    """C sells 1.9 ENT at 0.5, A buys 10 at 1: 1.9 ENT for 0.95 eEuro at the resting price."""
    sell = book.Order(0, "C", book.Side.SELL, book.parse_price("p", "0.5"), 1_900_000)
    buy = book.Order(1, "A", book.Side.BUY, book.parse_price("p", "1"), 10 * ENT)
    fills, left = book.match(buy, [sell])
    assert left == 8_100_000
    [f] = fills
    assert (f.buyer, f.seller, f.qty_uent, f.price_ueur, f.amount_ueur) == (
        "A",
        "C",
        1_900_000,
        500_000,
        950_000,
    )
    assert book.locked_for(book.Side.BUY, 10 * ENT, 1_000_000) == 10_000_000


def test_book_price_time_priority_and_stop() -> None:
    """Best price first, oldest first at one price; matching stops at the first non-crossing."""
    asks = [
        book.Order(5, "x", book.Side.SELL, 400_000, 1000),
        book.Order(7, "y", book.Side.SELL, 400_000, 1000),
        book.Order(2, "z", book.Side.SELL, 600_000, 1000),
    ]
    assert sorted(asks, key=book.priority)[0].order_id == 5
    bid = book.Order(9, "b", book.Side.BUY, 500_000, 5000)
    fills, left = book.match(bid, sorted(asks, key=book.priority))
    assert [f.maker_id for f in fills] == [5, 7]
    assert left == 3000


@pytest.mark.parametrize("text", ["0.0005", "0", "-1", "1e3", "2000000"])
def test_book_refuses_bad_prices(text: str) -> None:
    """Prices off the 0.001 tick, not positive, not plain decimals or too high are refused."""
    with pytest.raises(InvalidInput, match="price"):
        book.parse_price("price", text)


def test_book_refuses_bad_quantities() -> None:
    """Quantities must be whole lots of 1 mENT."""
    with pytest.raises(InvalidInput, match="qty"):
        book.check_quantity("qty", 1500)
    assert book.check_quantity("qty", 2000) == 2000
