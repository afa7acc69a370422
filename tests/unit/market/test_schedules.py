"""market.schedules: asset-bounded forward schedules and imbalance settlement (seed 002 §IV.C–D)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.errors import InvalidInput
from market.schedules import (
    Asset,
    AssetKind,
    MemberDay,
    Prices,
    Refusal,
    ScheduleError,
    check_gate,
    check_schedule,
    settle_day,
    settle_member,
)

PRICES = Prices(
    forward=Fraction("0.20"),
    imbalance_short=Fraction("0.30"),
    imbalance_long=Fraction("0.10"),
    grid_buy=Fraction("0.25"),
    grid_sell=Fraction("0.08"),
)
LOAD = Asset(AssetKind.LOAD, import_capacity_w=8_000, export_capacity_w=0)
PV = Asset(AssetKind.GENERATION, import_capacity_w=0, export_capacity_w=4_000)
BATTERY = Asset(AssetKind.STORAGE, import_capacity_w=4_000, export_capacity_w=4_000)


@pytest.mark.parametrize(
    ("asset", "schedule", "refusal", "slot"),
    [
        (LOAD, [100, -1, 0, 0], Refusal.PRODUCTION_NOT_ALLOWED, 1),
        (PV, [0, 0, 5, 0], Refusal.CONSUMPTION_NOT_ALLOWED, 2),
        (LOAD, [2_001, 0, 0, 0], Refusal.OVER_IMPORT_CAPACITY, 0),
        (BATTERY, [0, 0, 0, -1_001], Refusal.OVER_EXPORT_CAPACITY, 3),
        (LOAD, [0, 0, 0], Refusal.WRONG_LENGTH, None),
    ],
)
def test_asset_attributes_bound_the_schedule(
    asset: Asset, schedule: list[int], refusal: Refusal, slot: int | None
) -> None:
    """Load-only cannot give, generation-only cannot take, capacity [W] × 0.25 h caps each slot."""
    with pytest.raises(ScheduleError) as info:
        check_schedule("m", asset, schedule, slots=4)
    assert (info.value.refusal, info.value.slot, info.value.member) == (refusal, slot, "m")


def test_schedules_at_the_capacity_limit_are_admitted() -> None:
    """8 kW for 15 min is exactly 2000 Wh; a 4 kW battery may give 1000 Wh and take 1000 Wh."""
    check_schedule("m", LOAD, [2_000, 0, 0, 0], slots=4)
    check_schedule("m", BATTERY, [1_000, -1_000, 0, 0], slots=4)
    check_schedule("m", PV, [-1_000, 0, 0, 0], slots=4)


def test_gate_closes_before_the_day() -> None:
    """Submissions close gate_closure_s before the delivery day starts."""
    check_gate("m", day_start_s=86_400, gate_closure_s=3_600, now_s=82_799)
    with pytest.raises(ScheduleError) as info:
        check_gate("m", day_start_s=86_400, gate_closure_s=3_600, now_s=82_800)
    assert info.value.refusal is Refusal.GATE_CLOSED


def test_worked_two_member_day() -> None:
    """Hand-computed day: forward, short and long deviations, grid leg and supervisor margin."""
    # Slot 0: house took 600 of 500 scheduled (short 100); pv gave 900 of 1000 (short 100).
    # Slot 1: house took 300 of 500 (long 200); pv gave 1200 of 1000 (long 200).
    house = MemberDay("house", (500, 500), (600, 300), (0, 0))
    pv = MemberDay("pv", (-1_000, -1_000), (0, 0), (900, 1_200))
    day = settle_day([house, pv], PRICES, slots=2)
    h, p = day.members
    # house: forward 1000 Wh × 0.20 = 200000; short 100 × 0.30 = 30000; long −200 × 0.10 = −20000
    assert (h.forward_uect, h.imbalance_uect, h.posting_uect) == (200_000, 10_000, -210_000)
    assert (h.short_wh, h.long_wh, h.scheduled_wh, h.metered_wh) == (100, 200, 1_000, 900)
    # pv: forward −2000 × 0.20 = −400000; short 100 × 0.30 = 30000; long −200 × 0.10 = −20000
    assert (p.forward_uect, p.imbalance_uect, p.posting_uect) == (-400_000, 10_000, 390_000)
    # grid: slot 0 net −300 Wh (export, −300 × 0.08 = −24000), slot 1 net −900 (−72000)
    assert (day.grid_import_wh, day.grid_export_wh, day.grid_uect) == (0, 1_200, -96_000)
    assert day.supervisor_uect == -(-210_000 + 390_000 - 96_000)
    postings = dict(day.postings("sup", "grid"))
    assert postings == {"house": -210_000, "pv": 390_000, "sup": -84_000, "grid": -96_000}
    assert sum(postings.values()) == 0


def test_member_without_schedule_pays_its_whole_profile_as_imbalance() -> None:
    """No schedule means zero scheduled: every Wh taken is a short deviation."""
    result = settle_member(MemberDay("m", (0,), (1_000,), (0,)), PRICES)
    assert (result.forward_uect, result.imbalance_uect, result.short_wh) == (0, 300_000, 1_000)


def test_prices_must_be_non_negative_and_long_not_above_short() -> None:
    """A long price above the short one, or a negative price, is refused by name."""
    with pytest.raises(InvalidInput, match="imbalance_long"):
        Prices(Fraction(1), Fraction(1), Fraction(2), Fraction(1), Fraction(1))
    with pytest.raises(InvalidInput, match="grid_sell"):
        Prices(Fraction(1), Fraction(1), Fraction(0), Fraction(1), Fraction(-1))


def test_bad_profiles_are_refused_by_field() -> None:
    """Wrong series length, negative metered energy and duplicate members name the field."""
    with pytest.raises(InvalidInput, match=r"m\.import_wh"):
        settle_day([MemberDay("m", (0, 0), (1,), (0, 0))], PRICES, slots=2)
    with pytest.raises(InvalidInput, match=r"m\.export_wh\[1\]"):
        settle_day([MemberDay("m", (0, 0), (1, 1), (0, -1))], PRICES, slots=2)
    twice = MemberDay("m", (0,), (0,), (0,))
    with pytest.raises(InvalidInput, match="more than once"):
        settle_day([twice, twice], PRICES, slots=1)


def test_rounding_half_to_even_goes_to_the_supervisor() -> None:
    """1 Wh at 0.0005 ECT/kWh (0.5 µECT) rounds to 0; the supervisor keeps the day at zero sum."""
    prices = Prices(*(Fraction("0.0005"),) * 2, Fraction(0), Fraction("0.0015"), Fraction(0))
    day = settle_day([MemberDay("m", (1,), (1,), (0,))], prices, slots=1)
    assert day.members[0].forward_uect == 0
    assert day.grid_uect == 2  # 1.5 µECT → 2
    assert day.supervisor_uect == -2


# ----------------------------------------------------------------------------- properties

SLOTS = 4
MEMBER_DAYS = st.lists(
    st.tuples(
        st.lists(st.integers(-3_000, 3_000), min_size=SLOTS, max_size=SLOTS),
        st.lists(st.integers(0, 3_000), min_size=SLOTS, max_size=SLOTS),
        st.lists(st.integers(0, 3_000), min_size=SLOTS, max_size=SLOTS),
    ),
    min_size=1,
    max_size=6,
)
PRICE = st.integers(0, 5_000).map(lambda n: Fraction(n, 10_000))


@settings(max_examples=150, deadline=None)
@given(MEMBER_DAYS, PRICE, PRICE, PRICE, PRICE, PRICE)
def test_settlement_conserves_money_and_bounds_the_residue(
    rows: list[tuple[list[int], list[int], list[int]]],
    forward: Fraction,
    short: Fraction,
    long_: Fraction,
    grid_buy: Fraction,
    grid_sell: Fraction,
) -> None:
    """Σ postings is exactly 0; the supervisor is within ½ µECT per rounding of its exact value."""
    prices = Prices(forward, max(short, long_), min(short, long_), grid_buy, grid_sell)
    days = [
        MemberDay(f"m{i}", tuple(s), tuple(im), tuple(ex)) for i, (s, im, ex) in enumerate(rows)
    ]
    day = settle_day(days, prices, slots=SLOTS)
    assert sum(v for _, v in day.postings("sup", "grid")) == 0
    exact_members = Fraction(0)
    for d in days:
        for s, im, ex in zip(d.schedule_wh, d.import_wh, d.export_wh, strict=True):
            dev = im - ex - s
            rate = prices.imbalance_short if dev > 0 else prices.imbalance_long
            exact_members += (s * prices.forward + dev * rate) * 1000
    exact_grid = Fraction(0)
    for slot in range(SLOTS):
        net = sum(d.import_wh[slot] - d.export_wh[slot] for d in days)
        exact_grid += net * (prices.grid_buy if net > 0 else prices.grid_sell) * 1000
    exact_supervisor = exact_members - exact_grid
    roundings = 2 * SLOTS * len(days) + SLOTS
    assert abs(day.supervisor_uect - exact_supervisor) <= Fraction(roundings, 2)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-3_000, 3_000), min_size=SLOTS, max_size=SLOTS), st.integers(0, 500))
def test_following_the_schedule_exactly_costs_no_imbalance(schedule: list[int], both: int) -> None:
    """A member whose metered net equals its schedule in every slot has zero imbalance."""
    imported = tuple(max(0, s) + both for s in schedule)
    exported = tuple(max(0, -s) + both for s in schedule)
    result = settle_member(MemberDay("m", tuple(schedule), imported, exported), PRICES)
    assert (result.imbalance_uect, result.short_wh, result.long_wh) == (0, 0, 0)
    assert result.forward_uect == round(sum(schedule) * PRICES.forward * 1000)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(10**7), 10**7),
    st.integers(-(10**6), 10**6),
    st.sampled_from([1, 2, 3, 8, 10, 1_000, 10_000, 7 * 10**9]),
)
def test_slot_amounts_round_exactly_half_to_even(energy_wh: int, num: int, den: int) -> None:
    """A slot's forward amount is round(price · Wh · 1000) of the exact rational, ties to even."""
    price = Fraction(abs(num), den)
    prices = Prices(price, price, Fraction(0), Fraction(0), Fraction(0))
    result = settle_member(MemberDay("m", (energy_wh,), (max(energy_wh, 0),), (0,)), prices)
    assert result.forward_uect == round(price * energy_wh * 1000)
