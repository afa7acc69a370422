"""market.windows: the uniform-price double auction and the window life cycle (seed 001)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.windows import (
    Clearing,
    PhaseError,
    Reason,
    Request,
    RequestError,
    Side,
    Trade,
    TradeStatus,
    Window,
    WindowError,
    WindowStatus,
    advance,
    amount_uect,
    begin_delivery,
    clear,
    close_window,
    open_window,
    place_request,
    validate_trades,
    validate_window,
)

# Seed 001 §2.6.1, Table 2 (kWh there, Wh here); list order is submission order.
TABLE_2_BUYS = [("A", 7, 25), ("B", 7, 23), ("C", 10, 18), ("D", 6, 16), ("E", 5, 14)]
TABLE_2_SELLS = [
    ("1", 10, 18),
    ("2", 7, 20),
    ("3", 8, 22),
    ("4", 3, 24),
    ("5", 4, 29),
    ("6", 3, 32),
]
HOUR = 3600
T0 = 1_780_000_000 - 1_780_000_000 % HOUR  # an hour boundary


def table_2_requests() -> list[Request]:
    rows = [(Side.BUY, *r) for r in TABLE_2_BUYS] + [(Side.SELL, *r) for r in TABLE_2_SELLS]
    return [
        Request(member, side, kwh * 1000, Fraction(price), seq)
        for seq, (side, member, kwh, price) in enumerate(rows)
    ]


def table_2_window() -> Window:
    window = open_window(T0)
    for request in table_2_requests():
        window = place_request(
            window, request.member, request.side, request.energy_wh, request.price, T0 + 60
        )
    return window


def test_table_2_clears_as_table_3() -> None:
    """The document's example clears at 20 ECT/kWh, 14 kWh, trades A–1 7/140, B–1 3/60, B–2 4/80."""
    clearing = clear(table_2_requests())
    assert clearing == Clearing(
        price=Fraction(20),
        quantity_wh=14_000,
        trades=(
            Trade("A", "1", 7_000, 140_000_000),
            Trade("B", "1", 3_000, 60_000_000),
            Trade("B", "2", 4_000, 80_000_000),
        ),
    )


def test_120_token_buyer_gets_first_trade_accepted_and_second_rejected() -> None:
    """Seed 001 §4.5.3: B holds 120 tokens, pays 60 (ACCEPTED), then 80 (REJECTED)."""
    trades = clear(table_2_requests()).trades
    plenty = dict.fromkeys("AB12", 100000)
    result = validate_trades(trades, plenty, plenty, {"A": 140_000_000, "B": 120_000_000})
    assert [(o.status, o.reason) for o in result.outcomes] == [
        (TradeStatus.ACCEPTED, None),
        (TradeStatus.ACCEPTED, None),
        (TradeStatus.REJECTED, Reason.INSUFFICIENT_BALANCE),
    ]
    assert dict(result.postings) == {"1": 200_000_000, "A": -140_000_000, "B": -60_000_000}


def test_short_seller_export_rejects_only_the_uncovered_trade() -> None:
    """Seller 1 metered 8 of 10 kWh sold: A's 7 pass, B's 3 (cumulative 10) are rejected."""
    trades = clear(table_2_requests()).trades
    plenty = dict.fromkeys("AB12", 100000)
    result = validate_trades(trades, {**plenty, "1": 8_000}, plenty, {"A": 10**9, "B": 10**9})
    assert [o.reason for o in result.outcomes] == [None, Reason.SELLER_EXPORT_SHORT, None]
    assert dict(result.postings) == {
        "1": 140_000_000,
        "2": 80_000_000,
        "A": -140_000_000,
        "B": -80_000_000,
    }


def test_tolerance_admits_a_small_metering_shortfall() -> None:
    """With a 5 % tolerance a buyer metering 6650 Wh of 7000 bought passes; 6649 Wh does not."""
    trade = [Trade("A", "1", 7_000, 140_000_000)]
    export = {"1": 7_000}
    funds = {"A": 140_000_000}
    tol = Fraction(5, 100)
    ok = validate_trades(trade, export, {"A": 6_650}, funds, tol)
    short = validate_trades(trade, export, {"A": 6_649}, funds, tol)
    assert ok.outcomes[0].status is TradeStatus.ACCEPTED
    assert short.outcomes[0].reason is Reason.BUYER_IMPORT_SHORT
    assert short.postings == ()
    with pytest.raises(WindowError, match="tolerance"):
        validate_trades(trade, export, {"A": 7_000}, funds, Fraction(1))


def test_life_cycle_open_cleared_in_progress_validated() -> None:
    """A window goes OPEN → CLEARED → IN_PROGRESS → VALIDATED, each step only at its time."""
    window = table_2_window()
    assert window.status is WindowStatus.OPEN
    with pytest.raises(PhaseError):
        close_window(window, T0 + HOUR - 1)
    cleared = close_window(window, T0 + HOUR)
    assert cleared.status is WindowStatus.CLEARED
    assert cleared.clearing is not None
    assert cleared.clearing.price == 20
    running = begin_delivery(cleared, T0 + HOUR)
    assert running.status is WindowStatus.IN_PROGRESS
    assert advance(window, T0 + HOUR) == running
    plenty = dict.fromkeys("AB12", 10**6)
    with pytest.raises(PhaseError):
        validate_window(running, T0 + 2 * HOUR - 1, plenty, plenty, plenty)
    done = validate_window(running, T0 + 2 * HOUR, plenty, plenty, {"A": 10**9, "B": 10**9})
    assert done.status is WindowStatus.VALIDATED
    assert done.validation is not None
    assert {o.status for o in done.validation.outcomes} == {TradeStatus.ACCEPTED}
    with pytest.raises(PhaseError):
        validate_window(done, T0 + 3 * HOUR, plenty, plenty, plenty)


@pytest.mark.parametrize(
    ("member", "energy_wh", "price", "now_s", "reason"),
    [
        ("Z", 1000, Fraction(20), T0 + HOUR, Reason.WINDOW_CLOSED),
        ("Z", 1000, Fraction(20), T0 - 1, Reason.WINDOW_NOT_OPEN),
        ("A", 1000, Fraction(20), T0 + 60, Reason.DUPLICATE_MEMBER),
        ("Z", 0, Fraction(20), T0 + 60, Reason.NON_POSITIVE_QUANTITY),
        ("Z", -5, Fraction(20), T0 + 60, Reason.NON_POSITIVE_QUANTITY),
        ("Z", 1000, Fraction(0), T0 + 60, Reason.NON_POSITIVE_PRICE),
        ("Z", 1000, Fraction(-1), T0 + 60, Reason.NON_POSITIVE_PRICE),
        ("Z", 10**9 + 1, Fraction(20), T0 + 60, Reason.QUANTITY_TOO_LARGE),
        ("Z", 1000, Fraction(10**6 + 1), T0 + 60, Reason.PRICE_TOO_HIGH),
    ],
)
def test_refused_requests_carry_their_reason(
    member: str, energy_wh: int, price: Fraction, now_s: int, reason: Reason
) -> None:
    """Late, early, second, non-positive and oversized requests are refused with a code."""
    window = table_2_window()
    with pytest.raises(RequestError) as info:
        place_request(window, member, Side.BUY, energy_wh, price, now_s)
    assert info.value.reason is reason
    assert info.value.member == member


def test_a_closed_window_refuses_requests_even_before_its_close_time() -> None:
    """Once cleared, a window takes no request whatever the clock says."""
    cleared = close_window(table_2_window(), T0 + HOUR)
    with pytest.raises(RequestError) as info:
        place_request(cleared, "Z", Side.SELL, 1000, Fraction(1), T0 + 10)
    assert info.value.reason is Reason.WINDOW_CLOSED


def test_windows_are_aligned_whole_slots() -> None:
    """A window length must be whole 15-min slots and its start aligned to the length."""
    with pytest.raises(WindowError):
        open_window(T0, 1000)
    with pytest.raises(WindowError):
        open_window(T0 + 900, HOUR)
    assert open_window(T0 + 900, 900).close_s == T0 + 1800


def test_no_match_gives_no_price() -> None:
    """When the best bid is below the cheapest ask nothing trades and the price is None."""
    requests = [
        Request("b", Side.BUY, 1000, Fraction(10), 0),
        Request("s", Side.SELL, 1000, Fraction(11), 1),
    ]
    assert clear(requests) == Clearing(price=None, quantity_wh=0, trades=())
    assert clear([]) == Clearing(price=None, quantity_wh=0, trades=())


def test_equal_prices_are_served_in_submission_order() -> None:
    """Two buyers at the same limit: the earlier one is filled first."""
    requests = [
        Request("late", Side.BUY, 1000, Fraction(30), 1),
        Request("early", Side.BUY, 1000, Fraction(30), 0),
        Request("s", Side.SELL, 1500, Fraction(10), 2),
    ]
    trades = clear(requests).trades
    assert [(t.buyer, t.energy_wh) for t in trades] == [("early", 1000), ("late", 500)]


def test_amounts_round_half_to_even_per_trade() -> None:
    """1 Wh at 0.0005 ECT/kWh is 0.5 µECT → 0; at 0.0015 it is 1.5 µECT → 2."""
    assert amount_uect(Fraction(5, 10_000), 1) == 0
    assert amount_uect(Fraction(15, 10_000), 1) == 2
    assert amount_uect(Fraction(20), 7_000) == 140_000_000


# ----------------------------------------------------------------------------- properties

PRICES = st.integers(1, 40).map(lambda n: Fraction(n, 2))
REQUESTS = st.lists(
    st.tuples(st.sampled_from(Side), st.integers(1, 20_000), PRICES), min_size=0, max_size=14
)


def as_requests(rows: list[tuple[Side, int, Fraction]]) -> list[Request]:
    return [Request(f"m{i}", side, wh, price, i) for i, (side, wh, price) in enumerate(rows)]


@settings(max_examples=150, deadline=None)
@given(REQUESTS)
def test_clearing_respects_limits_and_quantities(rows: list[tuple[Side, int, Fraction]]) -> None:
    """No buyer pays above its limit, no seller gets below its ask, nobody overfills."""
    requests = as_requests(rows)
    by_member = {r.member: r for r in requests}
    clearing = clear(requests)
    filled: dict[str, int] = {}
    for t in clearing.trades:
        assert clearing.price is not None
        assert by_member[t.buyer].side is Side.BUY
        assert by_member[t.seller].side is Side.SELL
        assert by_member[t.buyer].price >= clearing.price >= by_member[t.seller].price
        assert t.energy_wh > 0
        assert t.amount_uect == amount_uect(clearing.price, t.energy_wh)
        filled[t.buyer] = filled.get(t.buyer, 0) + t.energy_wh
        filled[t.seller] = filled.get(t.seller, 0) + t.energy_wh
    assert all(filled[m] <= by_member[m].energy_wh for m in filled)
    assert clearing.quantity_wh == sum(t.energy_wh for t in clearing.trades)


@settings(max_examples=150, deadline=None)
@given(REQUESTS)
def test_clearing_is_maximal_at_the_uniform_price(rows: list[tuple[Side, int, Fraction]]) -> None:
    """After clearing, no buyer and seller with unfilled quantity could still trade at the price."""
    requests = as_requests(rows)
    clearing = clear(requests)
    filled: dict[str, int] = {}
    for t in clearing.trades:
        filled[t.buyer] = filled.get(t.buyer, 0) + t.energy_wh
        filled[t.seller] = filled.get(t.seller, 0) + t.energy_wh
    left = [r for r in requests if filled.get(r.member, 0) < r.energy_wh]
    if clearing.price is None:
        # Nothing matched: every remaining bid is below every remaining ask.
        bids = [r.price for r in left if r.side is Side.BUY]
        asks = [r.price for r in left if r.side is Side.SELL]
        assert not bids or not asks or max(bids) < min(asks)
        return
    willing_buyers = [r for r in left if r.side is Side.BUY and r.price >= clearing.price]
    willing_sellers = [r for r in left if r.side is Side.SELL and r.price <= clearing.price]
    assert not (willing_buyers and willing_sellers)


@settings(max_examples=100, deadline=None)
@given(REQUESTS, st.randoms(use_true_random=False))
def test_price_and_quantity_do_not_depend_on_submission_order(
    rows: list[tuple[Side, int, Fraction]], rnd: object
) -> None:
    """Reordering submissions may change who is served at equal prices, never price or volume."""
    requests = as_requests(rows)
    shuffled = list(requests)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    reordered = [Request(r.member, r.side, r.energy_wh, r.price, i) for i, r in enumerate(shuffled)]
    a, b = clear(requests), clear(reordered)
    assert (a.price, a.quantity_wh) == (b.price, b.quantity_wh)
    if len({r.price for r in requests}) == len(requests):
        # With all prices distinct there is no tie to break: the fills are identical too.
        assert sorted(a.trades, key=repr) == sorted(b.trades, key=repr)


@settings(max_examples=150, deadline=None)
@given(
    REQUESTS,
    st.dictionaries(st.sampled_from([f"m{i}" for i in range(14)]), st.integers(0, 20_000)),
    st.dictionaries(st.sampled_from([f"m{i}" for i in range(14)]), st.integers(0, 10**9)),
)
def test_validation_conserves_money_and_never_overdraws(
    rows: list[tuple[Side, int, Fraction]], metered: dict[str, int], balances: dict[str, int]
) -> None:
    """Accepted trades sum to zero, no buyer ends below zero, rejected trades move nothing."""
    clearing = clear(as_requests(rows))
    result = validate_trades(clearing.trades, metered, metered, balances)
    assert sum(v for _, v in result.postings) == 0
    postings = dict(result.postings)
    for member, change in postings.items():
        assert balances.get(member, 0) + change >= 0 or change > 0
    accepted = [o.trade for o in result.outcomes if o.status is TradeStatus.ACCEPTED]
    for member in postings:
        expected = sum(t.amount_uect for t in accepted if t.seller == member) - sum(
            t.amount_uect for t in accepted if t.buyer == member
        )
        assert postings[member] == expected
    assert all((o.reason is None) == (o.status is TradeStatus.ACCEPTED) for o in result.outcomes)
