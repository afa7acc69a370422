"""OBIS readout parsing: the real telegrams, both line forms, exact Wh, ids, errors, fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meters.errors import ChecksumError, MissingRegisterError, ParseError
from meters.obis import (
    ValueGroup,
    block_check,
    crc16,
    parse_readout,
    to_reading,
)

TELEGRAMS = Path("/work/shared/testdata/telegrams")

# Worked out by reading each telegram: import = 1.8.0, else 1.8.1 + 1.8.2 (kWh × 1000, floored),
# export likewise with 2.8.x; power = 1.7.0 − 2.7.0; id from 96.1.1 / 96.1.0 / 0.0.0 (channel 0).
EXPECTED: dict[str, tuple[int, int | None, int, str | None]] = {
    # EasyMeter: 32549.5061662 kWh floors to 32549506 Wh; no 2.8.x at all (import-only meter)
    "telegram_esy5q3da1004_v304.txt": (32_549_506, None, 1688, "1336001560"),
    # 52185.7825309 kWh, 19949.3221493 kWh; 2124.86 W rounds to 2125
    "telegram_esy5q3db1024_v304.txt": (52_185_782, 19_949_322, 2125, "0272031312565"),
    "telegram_fluvius_v171.txt": (34 + 15_758, 0 + 11, 0, "1SAG3101021605"),
    "telegram_fluvius_v171_alt.txt": (301_548 + 270_014, 5, 338, "1SAG3100721326"),
    # T210-D-R gives Wh directly and no equipment id line
    "telegram_sagemcom_t210_d_r.txt": (6_545_766, 58, 286, None),
    "telegram_v2_2.txt": (2002, 2002, 1010, None),  # id 00000000000000 is "not set"
    "telegram_v3.txt": (24_691_356, 24_691_356, 1190, "K8EG004046395507"),
    # 96.1.1 is digits that do not decode to printable ASCII: kept as sent
    "telegram_v4_2.txt": (1_581_123 + 1_435_706, 0, 2027, "3960221976967177082151037881335713"),
    "telegram_v5.txt": (4426 + 2399, 2444, 244, "K8EG004046395507"),
    "telegram_v5_eon_hu.txt": (173_640, 627_177, -2601, "890082200002160"),
    "telegram_v5_two_mbus.txt": (2_130_115 + 245_467, 0, 111, "E0044007382246019"),
}


def readout_of(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_telegram_parses_to_expected_wh(name: str) -> None:
    """Each captured telegram gives the cumulative import/export Wh read off it by hand."""
    readout = parse_readout((TELEGRAMS / name).read_bytes())
    import_wh, export_wh, power_w, meter_id = EXPECTED[name]
    assert readout.errors == ()
    assert (readout.import_wh, readout.export_wh) == (import_wh, export_wh)
    assert readout.power_w == power_w
    assert readout.meter_id == meter_id


def test_every_telegram_file_is_covered() -> None:
    """No telegram in the shared test data escapes the table (heat meter and Iskra IE aside)."""
    names = {p.name for p in TELEGRAMS.glob("*.txt")}
    assert names == set(EXPECTED) | {"telegram_unpadded_crc.txt", "telegram_iskra_ie.txt"}


def test_heat_meter_is_a_clear_error_not_energy() -> None:
    """The heat meter (GJ, no 1.8.x/2.8.x) yields a missing-register error and no energy."""
    readout = parse_readout((TELEGRAMS / "telegram_unpadded_crc.txt").read_bytes())
    assert readout.checksum == "CRC16"  # the 3-digit (unpadded) CRC is verified
    assert readout.import_wh is None
    assert readout.export_wh is None
    assert "no electricity energy register" in readout.errors[0].reason
    with pytest.raises(MissingRegisterError, match="no electricity"):
        to_reading(readout, meter_id="x")


def test_iskra_ie_crc_does_not_match_its_bytes() -> None:
    """The Iskra IE telegram's CRC (0xAD3B) fails over its bytes; no energy unless CRC is off."""
    data = (TELEGRAMS / "telegram_iskra_ie.txt").read_bytes()
    strict = parse_readout(data)
    assert strict.errors[0].check == ("CRC16", 0xAD3B, 0xF2A8)
    assert strict.errors[0].line == 28
    assert strict.import_wh is None
    with pytest.raises(ChecksumError):
        to_reading(strict)
    lenient = parse_readout(data, verify_crc=False)
    assert (lenient.import_wh, lenient.export_wh) == (10_181 + 10_182, 10_281 + 10_282)
    assert lenient.power_w == 170 - 270


def test_both_line_forms_and_star_255() -> None:
    """``1.8.0(…)``, ``1-0:1.8.0(…)`` and ``1-0:1.8.0*255(…)`` all give the same Wh."""
    for line in (
        "1.8.0(001234.567*kWh)",
        "1-0:1.8.0(001234.567*kWh)",
        "1-0:1.8.0*255(1234.567*kWh)",
    ):
        assert parse_readout(readout_of(line + "\n")).import_wh == 1_234_567


def test_historical_values_are_not_current() -> None:
    """A billing-period value ``1.8.0*01`` is never taken for the current register."""
    r = parse_readout(readout_of("1.8.0*01(000100.000*kWh)\n1.8.0(000200.000*kWh)\n"))
    assert r.import_wh == 200_000
    assert r.get("1.8.0*1") is not None


def test_tariffs_summed_only_without_total() -> None:
    """1.8.1 + 1.8.2 (exact, then floored once) when 1.8.0 is absent; 1.8.0 wins otherwise."""
    tariffs = "1.8.1(000001.0005*kWh)\n1.8.2(000002.0005*kWh)\n"
    assert parse_readout(readout_of(tariffs)).import_wh == 3001  # 3001.0 exactly, not 3000
    both = tariffs + "1.8.0(000005.000*kWh)\n"
    assert parse_readout(readout_of(both)).import_wh == 5000


@pytest.mark.parametrize(
    ("value", "wh"),
    [
        ("00000000.0009999*kWh", 0),
        ("1.9999999*kWh", 1999),
        ("99999999.999*kWh", 99_999_999_999),
        ("006545766*Wh", 6_545_766),
        ("1.5*MWh", 1_500_000),
    ],
)
def test_energy_is_exact_and_floored(value: str, wh: int) -> None:
    """kWh/Wh/MWh become integer Wh exactly, floored (never rounded up)."""
    assert parse_readout(readout_of(f"1.8.0({value})\n")).import_wh == wh


def test_multiple_value_groups_and_continuation_line() -> None:
    """Gas lines keep all groups; a DSMR 2.2 ``(value)`` line continues the line above."""
    r = parse_readout((TELEGRAMS / "telegram_v2_2.txt").read_bytes())
    gas = r.get("0-1:24.3.0")
    assert gas is not None
    assert gas.groups[-1].value == "00001.001"
    assert len(gas.groups) == 7
    r2 = parse_readout(readout_of("0-1:24.2.1(101209112500W)(12785.123*m3)\n1.8.0(1*kWh)\n"))
    gas2 = r2.get("0-1:24.2.1")
    assert gas2 is not None
    assert gas2.groups == (ValueGroup("101209112500W"), ValueGroup("12785.123", "m3"))


def test_meter_id_rules() -> None:
    """96.1.x hex ids decode when printable; 0.0.0 never; zeros and M-Bus channels are skipped."""
    assert parse_readout(readout_of("0-0:96.1.1(3131)\n")).meter_id == "11"
    assert parse_readout(readout_of("0.0.0(3131)\n")).meter_id == "3131"
    assert parse_readout(readout_of("0-0:96.1.1(0000)\n0.0.0(77)\n")).meter_id == "77"
    assert parse_readout(readout_of("0-1:96.1.1(3131)\n")).meter_id is None


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("1.8.0(001234.567*kWh)\n1-0:1.8.1(00001.0x1*kWh)\n", 2, "not a decimal number"),
        ("1.8.0(001234.567)\n", 1, "exactly one value with a unit"),
        ("1.8.0(12.5*m3)\n", 1, "expected Wh/kWh/MWh"),
        ("1.8.0(-12.5*kWh)\n", 1, "negative"),
        ("1.8.0(12.5*kWh\n", 1, "unbalanced"),
        ("1.8.0(1*kWh)\n1.8.0(2*kWh)\n", 2, "already on line 1"),
        ("hello\n", 1, "no OBIS code"),
        ("1.8.0(1*kWh)\n(5)\n\n(6)\n", 4, "no data line before it"),
        ("1.8.0(1*kW h)\n", 1, "malformed unit"),
    ],
)
def test_malformed_line_is_named_and_never_energy(text: str, line: int, why: str) -> None:
    """A bad line yields an error with its number and reason, and no energy at all."""
    r = parse_readout(readout_of(text))
    assert r.import_wh is None
    assert r.export_wh is None
    assert any(e.line == line and why in e.reason for e in r.errors), r.errors
    with pytest.raises(ParseError, match=f"line {line}"):
        to_reading(r, meter_id="m")


def test_truncated_or_corrupted_telegram_is_rejected() -> None:
    """A telegram without its end line, or with a changed digit, gives no energy."""
    data = (TELEGRAMS / "telegram_v5.txt").read_bytes()
    assert "truncated" in str(parse_readout(data[: data.index(b"!")]).errors[0])
    corrupted = data.replace(b"000004.426", b"000004.427")
    with pytest.raises(ChecksumError, match="CRC16"):
        to_reading(parse_readout(corrupted))


def test_crc16_matches_the_dsmr_check_value() -> None:
    """CRC-16/ARC of "123456789" is 0xBB3D (the catalogue check value)."""
    assert crc16(b"123456789") == 0xBB3D


def test_iec_data_block_bcc_verified() -> None:
    """An STX…ETX BCC readout is checked; a flipped BCC is an error, not energy."""
    body = b"1.8.0(001234.567*kWh)\r\n2.8.0(000001.000*kWh)\r\n!\r\n\x03"
    good = b"/LGZ5ZMD\r\n\x02" + body + bytes([block_check(body)])
    r = parse_readout(good)
    assert (r.checksum, r.import_wh, r.export_wh) == ("BCC", 1_234_567, 1000)
    assert r.identification is not None
    assert r.identification.manufacturer == "LGZ"
    bad = parse_readout(good[:-1] + bytes([good[-1] ^ 0x10]))
    assert bad.errors[0].check is not None
    assert bad.import_wh is None
    assert "no ETX" in str(parse_readout(b"\x02" + body[:-1]).errors[0])


def test_meter_time_uses_the_dst_flag() -> None:
    """DSMR local time with S/W flag becomes UTC (CEST −2 h, CET −1 h)."""
    summer = parse_readout(readout_of("0-0:1.0.0(200512135409S)\n1.8.0(1*kWh)\n"))
    winter = parse_readout(readout_of("0-0:1.0.0(231102121548W)\n1.8.0(1*kWh)\n"))
    assert summer.meter_time == datetime(2020, 5, 12, 11, 54, 9, tzinfo=UTC)
    assert winter.meter_time == datetime(2023, 11, 2, 11, 15, 48, tzinfo=UTC)
    bad = parse_readout(readout_of("0-0:1.0.0(2305X)\n1.8.0(1*kWh)\n"))
    assert "YYMMDDhhmmss" in bad.errors[0].reason


def test_to_reading_export_rules() -> None:
    """Import-only meter → export 0; a 2.8.x that was seen before and is now gone → error."""
    r = parse_readout(readout_of("0.0.0(9)\n1.8.0(1*kWh)\n"))
    assert to_reading(r).export_wh == 0
    with pytest.raises(MissingRegisterError, match="export"):
        to_reading(r, export_seen=True)
    with pytest.raises(MissingRegisterError, match="meter id"):
        to_reading(parse_readout(readout_of("1.8.0(1*kWh)\n")))


_LINE_CHARS = st.sampled_from(list("0123456789.-:*()!/ \r\nkWhm3ABCF\x02\x03"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_bytes_never_raise(data: bytes) -> None:
    """Arbitrary bytes give a readout (maybe with errors), never an exception."""
    r = parse_readout(data)
    if r.errors:
        assert r.import_wh is None
        assert r.export_wh is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(_LINE_CHARS, max_size=40), max_size=12))
def test_fuzz_obis_like_lines_never_raise(lines: list[str]) -> None:
    """OBIS-shaped garbage never raises, and energy only comes from an error-free readout."""
    r = parse_readout("\r\n".join(lines).encode("ascii"))
    assert r.import_wh is None or (not r.errors and r.import_wh >= 0)


@settings(max_examples=200, deadline=None)
@given(
    st.decimals(min_value=0, max_value=Decimal("99999999.9999999"), places=7),
    st.decimals(min_value=0, max_value=Decimal("99999999.999"), places=3),
)
def test_tariff_sum_is_floor_of_exact_sum(t1: Decimal, t2: Decimal) -> None:
    """import_wh == ⌊(t1 + t2) × 1000⌋ exactly, for any 7- and 3-decimal kWh registers."""
    r = parse_readout(readout_of(f"1.8.1({t1:f}*kWh)\n1.8.2({t2:f}*kWh)\n"))
    assert r.import_wh == int((t1 + t2) * 1000)
