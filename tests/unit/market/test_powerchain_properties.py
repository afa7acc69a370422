"""Properties of the PowerChain engine (hypothesis): finite-step equilibrium, order limits."""

from __future__ import annotations

import itertools
from fractions import Fraction
from math import ceil

from hypothesis import given, settings
from hypothesis import strategies as st

from market import powerchain as pc
from market import powerchain_book as book

DECIMALS = st.sampled_from(["0.01", "0.05", "0.1", "0.25", "0.5", "0.75", "1"])


@settings(max_examples=60, deadline=None)
@given(
    d0_uent=st.integers(1, 30_000_000),
    excess_tokens=st.booleans(),
    c=st.sampled_from(["0.01", "0.05", "0.2", "0.5"]),
    cap=DECIMALS,
    pattern=st.lists(st.tuples(st.booleans(), st.integers(1000, 5000)), min_size=1, max_size=6),
)
def test_tokens_return_to_stored_energy_within_eq_4_4_steps(
    d0_uent: int,
    excess_tokens: bool,
    c: str,
    cap: str,
    pattern: list[tuple[bool, int]],
) -> None:
    """After an imbalance D0, productions/consumptions of >= 1 kWh each bring ENT back to the
    stored kWh in at most ⌈n_0⌉ = ⌈D0 / min(R, M, B)⌉ events (eq. 4.4), |D| never grows and
    R stays fixed until equilibrium."""
    params = pc.parse_params({"C": c, "M": cap, "B": cap})
    stored = 10**9  # Wh: enough that consumption never empties storage
    start = pc.Imbalance(stored, stored * 1000)
    if excess_tokens:  # tokens without energy (a loss, as in §6.4)
        imb = pc.settle(start, params, 0, d0_uent)
    else:  # energy without tokens (an actual-energy report above the booked content)
        imb = pc.settle(start, params, d0_uent // 1000 + 1, 0)
    r0, d_start = imb.r, abs(imb.difference_uent)
    bound = ceil(Fraction(d_start, pc.UENT_PER_ENT) / min(r0, params.m, params.b))
    steps = 0
    for produce, energy_wh in itertools.cycle(pattern):  # a repeating mix of events
        if imb.difference_uent == 0 or steps > bound:
            break
        if produce:
            imb = pc.settle(imb, params, energy_wh, pc.mint_uent(imb, params, energy_wh))
        else:
            imb = pc.settle(imb, params, -energy_wh, -pc.burn_uent(imb, params, energy_wh))
        steps += 1
        assert abs(imb.difference_uent) <= d_start
        assert imb.r in (r0, 0)
    assert imb.difference_uent == 0
    assert imb.r == 0
    assert steps <= bound


ORDERS = st.lists(
    st.tuples(st.integers(1, 2000), st.integers(1, 50), st.text("xyz", min_size=1, max_size=1)),
    max_size=12,
)


@settings(max_examples=80, deadline=None)
@given(
    buy=st.booleans(),
    limit_ticks=st.integers(1, 2000),
    lots=st.integers(1, 200),
    resting=ORDERS,
)
def test_an_order_never_executes_beyond_its_limit(
    buy: bool, limit_ticks: int, lots: int, resting: list[tuple[int, int, str]]
) -> None:
    """Every fill is at the resting order's price, within the arriving order's limit and the
    resting order's size; fills follow price-time priority; quantities and amounts add up."""
    side = book.Side.BUY if buy else book.Side.SELL
    other = book.Side.SELL if buy else book.Side.BUY
    makers = sorted(
        (
            book.Order(i, owner, other, ticks * book.TICK_UEUR, n * book.LOT_UENT)
            for i, (ticks, n, owner) in enumerate(resting)
        ),
        key=book.priority,
    )
    incoming = book.Order(
        len(makers), "t", side, limit_ticks * book.TICK_UEUR, lots * book.LOT_UENT
    )
    fills, left = book.match(incoming, makers)
    by_id = {m.order_id: m for m in makers}
    assert [f.maker_id for f in fills] == [m.order_id for m in makers[: len(fills)]]
    for f in fills:
        maker = by_id[f.maker_id]
        assert f.price_ueur == maker.price_ueur
        if buy:
            assert f.price_ueur <= incoming.price_ueur
            # what the buyer pays never exceeds what its limit locked for the same quantity
            assert f.amount_ueur <= book.notional_ueur(f.qty_uent, incoming.price_ueur)
        else:
            assert f.price_ueur >= incoming.price_ueur
        assert 0 < f.qty_uent <= maker.qty_uent
        assert f.amount_ueur == f.qty_uent * f.price_ueur // pc.UENT_PER_ENT
    assert left + sum(f.qty_uent for f in fills) == incoming.qty_uent
    if left and len(fills) < len(makers):  # the rest rests only if the next maker doesn't cross
        assert not book.crosses(incoming, makers[len(fills)])
