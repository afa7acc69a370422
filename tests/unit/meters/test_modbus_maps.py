"""Register maps: exact decoding to integer Wh/W, encodings of each meter, custom TOML maps."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meters.modbus_maps import (
    BUILTIN_MAPS,
    Field,
    ReadBlock,
    RegisterMapError,
    RegisterValueError,
    decode_field,
    encode_field,
    load_map_toml,
    plan_reads,
    register_map,
)


def float32_registers(value: float) -> list[int]:
    raw = struct.pack(">f", value)
    return [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")]


def test_sdm_float32_kwh_becomes_exact_integer_wh() -> None:
    """SDM630 import 1234.567 kWh (FLOAT32) reads as 1 234 567 Wh, no float in between."""
    field = BUILTIN_MAPS["sdm630"].field("import_wh")
    assert field is not None
    assert (field.address, field.function) == (0x0048, "input")
    assert decode_field(field, float32_registers(1234.567)) == 1_234_567


def test_em24_int32_is_least_significant_word_first_and_scaled() -> None:
    """EM24 kWh·10 = 123456 stored LSW first decodes to 12 345 600 Wh; W·10 to W."""
    em24 = BUILTIN_MAPS["em24"]
    imp, power = em24.field("import_wh"), em24.field("power_w")
    assert imp is not None
    assert power is not None
    assert (imp.address, power.address) == (0x0034, 0x0028)
    assert decode_field(imp, [123456 & 0xFFFF, 123456 >> 16]) == 12_345_600
    minus = (-45678) & 0xFFFFFFFF  # −4567.8 W
    assert decode_field(power, [minus & 0xFFFF, minus >> 16]) == -4568


def test_sunspec_scale_factors_apply_as_powers_of_ten() -> None:
    """SunSpec 203 TotWhImp (offset 46) scales by 10^TotWh_SF, rounded half to even."""
    imp = BUILTIN_MAPS["sunspec"].field("import_wh")
    assert imp is not None
    assert (imp.address, imp.sf_offset) == (46, 54)
    assert decode_field(imp, [0, 12345], sf=-1) == 1234  # 1234.5 → 1234
    assert decode_field(imp, [0, 12355], sf=-1) == 1236  # 1235.5 → 1236
    assert decode_field(imp, [1, 0], sf=2) == 65536 * 100


@pytest.mark.parametrize(
    ("field", "registers", "sf", "reason"),
    [
        (BUILTIN_MAPS["sdm630"].fields[0], float32_registers(float("nan")), 0, "not a number"),
        (BUILTIN_MAPS["sdm630"].fields[1], float32_registers(-3.5), 0, "negative energy"),
        (BUILTIN_MAPS["sunspec"].fields[2], [0x8000], 0, "not implemented"),
        (BUILTIN_MAPS["sunspec"].fields[0], [0, 5], -0x8000, "scale factor"),
    ],
)
def test_invalid_register_values_are_refused_naming_the_register(
    field: Field, registers: list[int], sf: int, reason: str
) -> None:
    """NaN, negative energy and unimplemented SunSpec values never become energy."""
    with pytest.raises(RegisterValueError, match=reason) as err:
        decode_field(field, registers, sf)
    assert f"register {field.address}" in str(err.value)


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["uint32", "int32", "uint64", "int64"]),
    st.sampled_from(["big", "little"]),
    st.integers(0, 2**31 - 1),
)
def test_integer_encodings_round_trip(kind: str, order: str, value: int) -> None:
    """encode_field then decode_field gives the value back for every integer type/word order."""
    field = Field("import_wh", 0, kind, order)
    assert decode_field(field, encode_field(field, value)) == value


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 8_191_999))
def test_float32_kwh_round_trips_exactly_below_8192_kwh(value_wh: int) -> None:
    """Below 8192 kWh a FLOAT32 kWh register resolves 1 Wh: Wh → kWh → Wh is exact."""
    field = BUILTIN_MAPS["sdm120"].fields[0]
    assert decode_field(field, encode_field(field, value_wh)) == value_wh


def test_em24_encoding_truncates_to_its_100_wh_resolution() -> None:
    """A meter shows what it has counted: 1 234 567 Wh is served as 12345.6 kWh (kWh·10)."""
    field = BUILTIN_MAPS["em24"].fields[0]
    assert decode_field(field, encode_field(field, 1_234_567)) == 1_234_500


def test_reads_are_grouped_into_one_request_per_map() -> None:
    """SDM630 needs one 24-register read (0x0034..0x004B); far-apart ranges split."""
    assert plan_reads(BUILTIN_MAPS["sdm630"].fields) == [ReadBlock("input", 0x34, 24)]
    assert plan_reads(BUILTIN_MAPS["em24"].fields) == [ReadBlock("input", 0x28, 40)]
    sunspec = plan_reads(BUILTIN_MAPS["sunspec"].fields, 40070, [ReadBlock("holding", 40070, 2)])
    assert sunspec == [ReadBlock("holding", 40070, 55)]
    far = [Field("import_wh", 0, "uint32"), Field("export_wh", 1000, "uint32")]
    assert len(plan_reads(far)) == 2


CUSTOM = """
name = "acme-x3"
[registers.import_wh]
address = 0x1000
type = "uint64"
scale = "1"
function = "holding"
[registers.export_wh]
address = 0x1004
type = "uint64"
function = "holding"
[registers.power_w]
address = 0x2000
type = "int32"
word_order = "little"
scale = "0.01"
function = "input"
"""


def test_custom_toml_map_parses() -> None:
    """A TOML map gives fields with addresses, types, word order, exact scales and functions."""
    rmap = load_map_toml(CUSTOM, "acme.toml")
    assert rmap.name == "acme-x3"
    power = rmap.field("power_w")
    assert power == Field("power_w", 0x2000, "int32", "little", Decimal("0.01"), "input")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('type = "uint64"\nscale = "1"', 'type = "uint128"\nscale = "1"'), "import_wh.type"),
        (('scale = "0.01"', "scale = 0.01"), "power_w.scale: give an exact decimal"),
        (("address = 0x1004", "address = 70000"), "export_wh.address"),
        (('word_order = "little"', 'word_order = "middle"'), "power_w.word_order"),
        (('function = "input"', 'function = "coil"'), "power_w.function"),
        (("[registers.export_wh]", "[registers.exported]"), "unknown quantity"),
        (('name = "acme-x3"', 'name = "acme-x3"\n[registers.import_wh.x]'), "import_wh"),
        (("address = 0x1000", "address = 0x1000\nbias = 3"), "unknown key"),
        (("address = 0x1004", "address = 0x1004\ncount = 2"), "export_wh.count: uint64 takes 4"),
    ],
)
def test_bad_custom_map_names_the_key(edit: tuple[str, str], message: str) -> None:
    """Every invalid custom map is refused with the file, table and key in the message."""
    text = CUSTOM.replace(*edit, 1)
    with pytest.raises(RegisterMapError, match=message) as err:
        load_map_toml(text, "acme.toml")
    assert "acme.toml" in str(err.value)


def test_map_selection_by_name_or_file() -> None:
    """Maps are chosen by name (case-insensitive) or by a .toml path; unknown names list options."""
    assert register_map("SDM630") is BUILTIN_MAPS["sdm630"]
    assert register_map("sunspec203") is BUILTIN_MAPS["sunspec"]
    with pytest.raises(RegisterMapError, match="em24"):
        register_map("abb-b23")
    with pytest.raises(RegisterMapError, match="cannot read"):
        register_map("/nonexistent/map.toml")
