"""Invariants of the AMM settlement under random communities (hypothesis; issue 2's list).

The reference here is the paper's formulas evaluated with plain ``Fraction`` arithmetic per
member, independent of the engine's common-denominator integer path.
"""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from market.amm import MarketParams, MemberEnergy, SlotSettlement, settle_period, settle_slot

NAMES = [f"N{i}" for i in range(12)]


@st.composite
def market_params(draw: st.DrawFn) -> MarketParams:
    """Prices with up to 4 decimals that respect the bounds; beta sometimes zero."""

    def price(low: int = 0, high: int = 500_000) -> int:
        return draw(st.integers(low, high))

    buy_bau = price(0)
    buy_lem = price(0, buy_bau)
    sell_bau = price(0)
    sell_lem = price(sell_bau, sell_bau + 500_000)
    beta = draw(st.sampled_from([0, 0, 1, 37, 10_000, 123_457]))
    return MarketParams(
        *(Fraction(v, 10_000) for v in (buy_bau, sell_bau, buy_lem, sell_lem)),
        beta=Fraction(beta, 1_000_000),
    )


energy = st.one_of(st.just(0), st.integers(0, 3_000), st.integers(0, 200_000))
member_energy = st.builds(MemberEnergy, energy, energy)
slot_measures = st.dictionaries(st.sampled_from(NAMES), member_energy, max_size=len(NAMES))


def reference(params: MarketParams, measures: dict[str, MemberEnergy]) -> dict[str, Fraction]:
    """Each member's exact posting [µECT] from eq. 1 and eq. 6, one Fraction at a time."""
    e_c = sum(m.import_wh for m in measures.values())
    e_p = sum(m.export_wh for m in measures.values())
    low = min(e_c, e_p)
    p_b = (e_c * params.p_buy_bau - low * (params.p_buy_bau - params.p_buy_lem)) / e_c if e_c else 0
    p_s = (
        (e_p * params.p_sell_bau + low * (params.p_sell_lem - params.p_sell_bau)) / e_p
        if e_p
        else 0
    )
    big_e = Fraction(e_c - e_p, 1000)  # kWh
    out = {}
    for name, m in measures.items():
        kwh_c, kwh_p = Fraction(m.import_wh, 1000), Fraction(m.export_wh, 1000)
        ect = kwh_p * p_s - kwh_c * p_b - params.beta * big_e * (kwh_c - kwh_p)
        out[name] = ect * 1_000_000
    return out


def conserves(slot: SlotSettlement) -> bool:
    return sum(slot.postings_uect.values()) + slot.admin_uect + slot.grid_uect == 0


@settings(max_examples=150, deadline=None)
@given(market_params(), slot_measures)
def test_postings_are_the_exact_values_rounded_half_even(
    params: MarketParams, measures: dict[str, MemberEnergy]
) -> None:
    """Each posting equals the paper's exact value rounded half-to-even to 1 µECT."""
    slot = settle_slot(params, measures)
    expected = {name: round(value) for name, value in reference(params, measures).items()}
    assert slot.postings_uect == expected


@settings(max_examples=150, deadline=None)
@given(market_params(), slot_measures)
def test_slot_conserves_money_and_prices_stay_in_bounds(
    params: MarketParams, measures: dict[str, MemberEnergy]
) -> None:
    """Σ postings + admin + grid = 0; pLEM_buy <= p_b <= pBAU_buy; pBAU_sell <= p_s <= pLEM_sell."""
    slot = settle_slot(params, measures)
    assert conserves(slot)
    if slot.p_buy is not None:
        assert params.p_buy_lem <= slot.p_buy <= params.p_buy_bau
    if slot.p_sell is not None:
        assert params.p_sell_bau <= slot.p_sell <= params.p_sell_lem
    if slot.gdi is not None:
        assert -1 <= slot.gdi <= 1


@settings(max_examples=150, deadline=None)
@given(market_params(), slot_measures)
def test_admin_share_is_the_surplus_up_to_rounding(
    params: MarketParams, measures: dict[str, MemberEnergy]
) -> None:
    """admin = min(E_c,E_p)·(pLEM_buy − pLEM_sell) + beta·E², within (members + 1)/2 µECT.

    Exactly, admin = −(Σ exact postings + exact grid); each of the n postings and the grid
    amount is rounded by at most 1/2 µECT, so the admin differs by at most (n + 1)/2 µECT.
    """
    slot = settle_slot(params, measures)
    exact_lem = Fraction(slot.e_local_wh, 1000) * (params.p_buy_lem - params.p_sell_lem) * 10**6
    exact_lpm = params.beta * Fraction(slot.e_net_wh, 1000) ** 2 * 10**6
    assert slot.lem_surplus_uect == exact_lem
    assert slot.lpm_surplus_uect == exact_lpm >= 0
    assert 2 * abs(slot.admin_uect - (exact_lem + exact_lpm)) <= len(measures) + 1


@settings(max_examples=100, deadline=None)
@given(market_params(), slot_measures)
def test_local_power_market_total_is_beta_e_squared(
    params: MarketParams, measures: dict[str, MemberEnergy]
) -> None:
    """The members' LPM terms beta·E·e_i sum to beta·E² >= 0 (seed 000 eq. 7)."""
    with_lpm = settle_slot(params, measures)
    no_lpm = MarketParams(params.p_buy_bau, params.p_sell_bau, params.p_buy_lem, params.p_sell_lem)
    without = reference(no_lpm, measures)
    lpm_paid = sum(without.values()) - sum(reference(params, measures).values())
    assert lpm_paid == with_lpm.lpm_surplus_uect >= 0


@settings(max_examples=100, deadline=None)
@given(market_params(), slot_measures, st.randoms(use_true_random=False))
def test_result_does_not_depend_on_member_order(
    params: MarketParams, measures: dict[str, MemberEnergy], rnd: object
) -> None:
    """Shuffling the members changes no posting, price or total."""
    items = list(measures.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    a = settle_slot(params, measures)
    b = settle_slot(params, dict(items))
    assert a == b


@settings(max_examples=60, deadline=None)
@given(market_params(), st.lists(slot_measures, max_size=6))
def test_period_equals_its_slots_one_by_one(
    params: MarketParams, slots: list[dict[str, MemberEnergy]]
) -> None:
    """A period's figures are the sums of settle_slot over its slots; each slot conserves."""
    period = settle_period(params, slots)
    singles = [settle_slot(params, s) for s in slots]
    assert period.slots == tuple(singles)
    sums: dict[str, int] = {}
    for single in singles:
        for name, amount in single.postings_uect.items():
            sums[name] = sums.get(name, 0) + amount
    assert period.postings_uect == sums
    assert period.admin_uect == sum(s.admin_uect for s in singles)
    assert period.grid_uect == sum(s.grid_uect for s in singles)
    assert sum(period.postings_uect.values()) + period.admin_uect + period.grid_uect == 0
    assert all(conserves(s) for s in period.slots)


@settings(max_examples=100, deadline=None)
@given(market_params(), st.lists(slot_measures, max_size=4))
def test_plain_pairs_settle_exactly_like_member_energy(
    params: MarketParams, slots: list[dict[str, MemberEnergy]]
) -> None:
    """The ledger's (import_wh, export_wh) pairs give the same period as MemberEnergy values."""
    as_pairs = [{name: (me.import_wh, me.export_wh) for name, me in slot.items()} for slot in slots]
    assert settle_period(params, as_pairs) == settle_period(params, slots)
