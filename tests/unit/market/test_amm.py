"""Examples and edge cases of the AMM settlement (market/amm.py, docs/spec/settlement.md).

Golden figures come from seed 000 Algorithm 1 (exact rationals; the paper prints the admin's
share as 9.78 ECT, the exact value is 9.8 ECT) and from hand calculations written out below.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from market.amm import (
    MAX_SLOT_ENERGY_WH,
    InvalidSettlementInput,
    MarketParams,
    MemberEnergy,
    settle_period,
    settle_slot,
)
from market.errors import InvalidInput, MarketError

ALG1 = {"p_buy_bau": "21", "p_sell_bau": "6", "p_buy_lem": "16", "p_sell_lem": "9", "beta": "0"}


def params(**overrides: str) -> MarketParams:
    return MarketParams.from_strings({**ALG1, **overrides})


def test_algorithm_1_golden() -> None:
    """Seed 000 Algorithm 1: p_b 18.2, p_s 9, N1 −45.5, N2 +12.6, grid 23.1, admin 9.8 ECT."""
    slot = settle_slot(
        params(), {"N1": MemberEnergy(import_wh=2500), "N2": MemberEnergy(export_wh=1400)}
    )
    assert (slot.e_c_wh, slot.e_p_wh, slot.e_local_wh, slot.e_net_wh) == (2500, 1400, 1400, 1100)
    assert slot.p_buy == Fraction("18.2")
    assert slot.p_sell == Fraction(9)
    assert slot.gdi == Fraction(-1100, 3900)
    assert slot.postings_uect == {"N1": -45_500_000, "N2": 12_600_000}
    assert slot.grid_uect == 23_100_000
    assert slot.admin_uect == 9_800_000
    assert slot.lem_surplus_uect == Fraction(9_800_000)
    assert slot.lpm_surplus_uect == 0


def test_local_power_market_by_hand() -> None:
    """beta 0.5 ECT/kWh², N1 imports 2 kWh, N2 exports 1 kWh: N1 pays 1 ECT, N2 gets 0.5 ECT."""
    # pLEM_buy = pLEM_sell = 10: the LEM leaves the admin nothing, only the LPM term does.
    flat = params(p_buy_lem="10", p_sell_lem="10", beta="0.5")
    slot = settle_slot(flat, {"N1": MemberEnergy(2000, 0), "N2": MemberEnergy(0, 1000)})
    # p_b = (2·21 − 1·11)/2 = 15.5, p_s = (1·6 + 1·4)/1 = 10; LPM with E = 1 kWh:
    # N1 −2·15.5 − 0.5·1·2 = −32 ECT, N2 +1·10 + 0.5·1·1 = +10.5 ECT.
    assert (slot.p_buy, slot.p_sell) == (Fraction("15.5"), 10)
    assert slot.postings_uect == {"N1": -32_000_000, "N2": 10_500_000}
    assert slot.grid_uect == 21_000_000  # 1 kWh net import at 21
    assert slot.lpm_surplus_uect == Fraction(500_000)  # beta·E² = 0.5 ECT
    assert slot.admin_uect == 500_000


def test_no_consumption_has_no_buying_price() -> None:
    """E_c = 0: p_buy is None, producers get pBAU_sell, the grid pays the community."""
    slot = settle_slot(params(), {"P": MemberEnergy(export_wh=1000)})
    assert slot.p_buy is None
    assert slot.p_sell == 6
    assert slot.gdi == 1
    assert slot.postings_uect == {"P": 6_000_000}
    assert slot.grid_uect == -6_000_000
    assert slot.admin_uect == 0


def test_no_production_has_no_selling_price() -> None:
    """E_p = 0: p_sell is None, consumers pay pBAU_buy, all of it to the grid."""
    slot = settle_slot(params(), {"C": MemberEnergy(import_wh=500)})
    assert slot.p_sell is None
    assert slot.p_buy == 21
    assert slot.gdi == -1
    assert slot.postings_uect == {"C": -10_500_000}
    assert (slot.grid_uect, slot.admin_uect) == (10_500_000, 0)


def test_empty_slot_has_no_prices_and_moves_no_money() -> None:
    """A slot without any measurement: no prices, no GDI, zero amounts."""
    slot = settle_slot(params(), {})
    assert (slot.p_buy, slot.p_sell, slot.gdi) == (None, None, None)
    assert (slot.postings_uect, slot.admin_uect, slot.grid_uect) == ({}, 0, 0)


def test_member_with_zero_energy_posts_zero() -> None:
    """A member measured at 0/0 is listed with a 0 posting; the GDI stays undefined."""
    slot = settle_slot(params(), {"Z": MemberEnergy()})
    assert slot.postings_uect == {"Z": 0}
    assert slot.gdi is None


def test_member_importing_and_exporting_in_one_slot() -> None:
    """Both registers count: the member pays its import at p_b and is paid its export at p_s."""
    slot = settle_slot(
        params(), {"B": MemberEnergy(import_wh=1000, export_wh=400), "C": MemberEnergy(600, 0)}
    )
    # E_c 1600, E_p 400: p_b = (1.6·21 − 0.4·5)/1.6 = 19.75, p_s = (0.4·6 + 0.4·3)/0.4 = 9.
    assert slot.p_buy == Fraction("19.75")
    assert slot.p_sell == 9
    assert slot.postings_uect == {"B": -19_750_000 + 3_600_000, "C": -11_850_000}
    assert slot.grid_uect == 25_200_000  # 1.2 kWh at 21
    assert slot.admin_uect == 2_800_000  # 0.4 kWh · (16 − 9)


def test_rounding_is_half_to_even_and_admin_absorbs_residue() -> None:
    """0.5 µECT rounds to 0 and 1.5 µECT to 2; the admin takes what rounding leaves."""
    tiny = params(p_buy_bau="0.0005", p_buy_lem="0.0005", p_sell_bau="0", p_sell_lem="0")
    slot = settle_slot(tiny, {"A": MemberEnergy(1, 0), "B": MemberEnergy(3, 0)})
    assert slot.postings_uect == {"A": 0, "B": -2}  # −0.5 -> 0, −1.5 -> −2
    assert slot.grid_uect == 2  # 4 Wh at 0.0005 ECT/kWh = 2 µECT exactly
    assert slot.admin_uect == 0
    odd = settle_slot(tiny, {"A": MemberEnergy(1, 0), "B": MemberEnergy(1, 0)})
    assert odd.postings_uect == {"A": 0, "B": 0}
    assert (odd.grid_uect, odd.admin_uect) == (1, -1)  # the admin pays the 1 µECT residue


def test_period_sums_slots_and_reports_shares() -> None:
    """Period postings, totals and both local shares over two slots, exactly."""
    slots = [
        {"N1": MemberEnergy(2500, 0), "N2": MemberEnergy(0, 1400)},
        {"N2": MemberEnergy(0, 600)},  # N1 not measured in this slot
    ]
    period = settle_period(params(), slots)
    assert period.slot_count == 2
    assert period.postings_uect == {"N1": -45_500_000, "N2": 12_600_000 + 3_600_000}
    assert period.grid_uect == 23_100_000 - 3_600_000
    assert period.admin_uect == 9_800_000
    assert (period.e_c_wh, period.e_p_wh, period.e_local_wh) == (2500, 2000, 1400)
    assert period.self_consumption == Fraction(1400, 2500)
    assert period.production_used_locally == Fraction(1400, 2000)


def test_zero_slot_period() -> None:
    """A period without slots settles to zeros; ratios are undefined; listed members get 0."""
    period = settle_period(params(), [], members=["N1", "N2"])
    assert period.slots == ()
    assert period.slot_count == 0
    assert period.postings_uect == {"N1": 0, "N2": 0}
    assert (period.admin_uect, period.grid_uect) == (0, 0)
    assert (period.self_consumption, period.production_used_locally) == (None, None)


def test_keep_slots_false_keeps_the_sums() -> None:
    """keep_slots=False drops the per-slot records but not a single µECT of the sums."""
    slots = [{"A": MemberEnergy(700, 50), "B": MemberEnergy(0, 333)}] * 3
    full = settle_period(params(beta="0.01"), slots)
    lean = settle_period(params(beta="0.01"), iter(slots), keep_slots=False)
    assert lean.slots == ()
    assert lean.slot_count == 3
    assert lean.postings_uect == full.postings_uect
    assert (lean.admin_uect, lean.grid_uect) == (full.admin_uect, full.grid_uect)


@pytest.mark.parametrize(
    ("overrides", "field", "value"),
    [
        ({"p_buy_bau": "1e3"}, "p_buy_bau", "1e3"),
        ({"p_buy_bau": " 21"}, "p_buy_bau", " 21"),
        ({"p_sell_bau": "6."}, "p_sell_bau", "6."),
        ({"p_sell_bau": "NaN"}, "p_sell_bau", "NaN"),
        ({"p_buy_lem": 16.0}, "p_buy_lem", 16.0),
        ({"p_buy_lem": 16}, "p_buy_lem", 16),
        ({"p_sell_bau": "-1"}, "p_sell_bau", "-1"),
        ({"beta": "-0.1"}, "beta", "-0.1"),
        ({"p_buy_lem": "21.5"}, "p_buy_lem", "21.5"),
        ({"p_sell_lem": "5.99"}, "p_sell_lem", "5.99"),
        ({"p_buy_leem": "16"}, "p_buy_leem", "16"),
    ],
)
def test_bad_parameters_are_refused_naming_field_and_value(
    overrides: dict[str, object], field: str, value: object
) -> None:
    """Non-decimal, negative, out-of-order or unknown parameters are refused naming field, value."""
    with pytest.raises(InvalidSettlementInput) as caught:
        MarketParams.from_strings({**ALG1, **overrides})  # type: ignore[dict-item]
    assert caught.value.field == field
    assert caught.value.value == value
    assert field in str(caught.value)


def test_missing_parameter_is_refused_but_beta_defaults_to_zero() -> None:
    """A missing price is an error; a missing beta means no local power market."""
    without_beta = {k: v for k, v in ALG1.items() if k != "beta"}
    assert MarketParams.from_strings(without_beta).beta == 0
    with pytest.raises(InvalidSettlementInput, match="p_sell_lem: missing"):
        MarketParams.from_strings({k: v for k, v in ALG1.items() if k != "p_sell_lem"})


def test_parameters_round_trip_as_strings() -> None:
    """to_strings gives back exact decimal text that from_strings reads to the same values."""
    p = params(p_buy_lem="0.2735", beta="0.000125")
    assert MarketParams.from_strings(p.to_strings()) == p
    assert p.to_strings()["beta"] == "0.000125"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"import_wh": -1}, "import_wh"),
        ({"export_wh": -5}, "export_wh"),
        ({"import_wh": 1.5}, "import_wh"),
        ({"export_wh": True}, "export_wh"),
        ({"import_wh": "100"}, "import_wh"),
        ({"export_wh": MAX_SLOT_ENERGY_WH + 1}, "export_wh"),
    ],
)
def test_bad_energy_is_refused(kwargs: dict[str, object], field: str) -> None:
    """Negative, non-integer, boolean or absurd energies raise an error naming field and value."""
    with pytest.raises(InvalidSettlementInput) as caught:
        MemberEnergy(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert caught.value.value == next(iter(kwargs.values()))


def test_unknown_member_is_refused_with_slot_and_member() -> None:
    """With a member list, a measurement of anyone else fails, naming the slot and member."""
    slots = [{"N1": MemberEnergy(1, 0)}, {"N1": MemberEnergy(1, 0), "X9": MemberEnergy(2, 0)}]
    with pytest.raises(InvalidSettlementInput) as caught:
        settle_period(params(), slots, members=["N1", "N2"])
    assert (caught.value.slot, caught.value.member, caught.value.field) == (1, "X9", "member")
    assert str(caught.value).startswith("slot 1, member 'X9': member:")


def test_measure_values_and_names_are_checked() -> None:
    """A value that is neither a MemberEnergy nor a pair, or an empty name, is refused."""
    with pytest.raises(InvalidSettlementInput) as caught:
        settle_slot(params(), {"N1": [2500, 0]})  # type: ignore[dict-item]
    assert (caught.value.member, caught.value.field) == ("N1", "measure")
    with pytest.raises(InvalidSettlementInput, match="non-empty strings"):
        settle_slot(params(), {"": MemberEnergy()})


def test_errors_share_the_market_base() -> None:
    """Every refusal is an InvalidInput and a MarketError, so callers catch one base."""
    with pytest.raises(MarketError):
        MemberEnergy(-1, 0)
    assert issubclass(InvalidSettlementInput, InvalidInput)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ((-1, 0), "import_wh"),
        ((0, True), "export_wh"),
        ((1.5, 0), "import_wh"),
        ((0, 10**9 + 1), "export_wh"),
        ((1, 2, 3), "measure"),
    ],
)
def test_a_bad_plain_pair_is_refused_naming_member_and_field(bad: tuple, field: str) -> None:
    """Bulk-checked (import_wh, export_wh) pairs still name the member and field at fault."""
    measures = {"OK": (100, 0), "N7": bad}
    with pytest.raises(InvalidSettlementInput) as info:
        settle_slot(params(), measures)  # type: ignore[arg-type]
    assert info.value.member == "N7"
    assert info.value.field == field
