"""DSMR P1: dsmr_parser profile choice, CRC, mapping to Wh, framing of the byte stream."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meters.errors import ChecksumError, MeterError, MissingRegisterError, ParseError
from meters.p1 import TelegramFramer, parse_telegram, select_profile

TELEGRAMS = Path("/work/shared/testdata/telegrams")

# (profile, import Wh, export Wh, power W), read off each telegram by hand (see test_obis.py).
EXPECTED = {
    "telegram_esy5q3da1004_v304.txt": ("q3d", 32_549_506, None, 1688),
    "telegram_esy5q3db1024_v304.txt": ("q3d", 52_185_782, 19_949_322, 2125),
    "telegram_fluvius_v171.txt": ("fluvius", 15_792, 11, 0),
    "telegram_fluvius_v171_alt.txt": ("fluvius", 571_562, 5, 338),
    "telegram_iskra_ie.txt": ("iskra_ie", 20_363, 20_563, -100),
    "telegram_sagemcom_t210_d_r.txt": ("sagemcom", 6_545_766, 58, 286),
    "telegram_v2_2.txt": ("v2.2", 2002, 2002, 1010),
    "telegram_v3.txt": ("v2.2", 24_691_356, 24_691_356, 1190),
    "telegram_v4_2.txt": ("v4", 3_016_829, 0, 2027),
    "telegram_v5.txt": ("v5", 6825, 2444, 244),
    "telegram_v5_eon_hu.txt": ("eon_hu", 173_640, 627_177, -2601),
    "telegram_v5_two_mbus.txt": ("v5", 2_375_582, 0, 111),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_telegram_through_dsmr_parser(name: str) -> None:
    """dsmr_parser (profile by header/version) and the OBIS parser agree on the expected Wh."""
    telegram = parse_telegram((TELEGRAMS / name).read_bytes())
    profile, import_wh, export_wh, power_w = EXPECTED[name]
    assert telegram.profile == profile
    assert (telegram.import_wh, telegram.export_wh, telegram.power_w) == (
        import_wh,
        export_wh,
        power_w,
    )


def test_heat_meter_is_a_missing_register_error() -> None:
    """The heat meter telegram (CRC fine, GJ only) raises MissingRegisterError."""
    data = (TELEGRAMS / "telegram_unpadded_crc.txt").read_bytes()
    assert select_profile(data) == "v5"
    with pytest.raises(MissingRegisterError, match="no electricity energy register"):
        parse_telegram(data)


def test_iskra_ie_crc_only_accepted_under_its_profile() -> None:
    """The Iskra IE.x CRC is known wrong: forced to DSMR 5 rules the telegram is rejected."""
    with pytest.raises(ChecksumError, match="CRC16"):
        parse_telegram((TELEGRAMS / "telegram_iskra_ie.txt").read_bytes(), profile="v5")


def test_crc_catches_a_changed_digit() -> None:
    """One digit changed in a DSMR 5 telegram: CRC16 mismatch, no reading."""
    data = (TELEGRAMS / "telegram_v5.txt").read_bytes().replace(b"000002.399", b"000002.398")
    with pytest.raises(ChecksumError):
        parse_telegram(data)


def test_garbled_line_without_crc_names_the_line() -> None:
    """DSMR 2.2 has no CRC: a garbled line still rejects the telegram and says where."""
    data = (TELEGRAMS / "telegram_v2_2.txt").read_bytes().replace(b"1.8.2(00001", b"1.8.2(0x001")
    with pytest.raises(ParseError, match="line 5"):
        parse_telegram(data)


def test_unknown_profile() -> None:
    """A profile name that is not configured is an error naming the valid ones."""
    with pytest.raises(ParseError, match="unknown P1 profile"):
        parse_telegram(b"/X\r\n!\r\n", profile="v9")


def _stream() -> tuple[bytes, list[bytes]]:
    telegrams = [(TELEGRAMS / n).read_bytes() for n in sorted(EXPECTED)]
    # The EasyMeter files carry bytes after the end line; the framer cuts at "!…CRLF".
    cut = [
        t[: t.index(b"\n!") + 1] + t[t.index(b"\n!") + 1 :].split(b"\n", 1)[0] + b"\n"
        for t in telegrams
    ]
    return b"noise".join(telegrams), cut


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=40))
def test_framer_reassembles_any_chunking(sizes: list[int]) -> None:
    """However the UART splits the stream, each telegram comes out once, whole."""
    stream, expected = _stream()
    framer, out, pos, i = TelegramFramer(), [], 0, 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        out += framer.feed(stream[pos : pos + size])
        pos, i = pos + size, i + 1
    assert out == expected


def test_framer_buffer_is_bounded() -> None:
    """A start without an end never grows the buffer past its bound."""
    framer = TelegramFramer(max_bytes=1000)
    assert framer.feed(b"/" + b"x" * 5000) == []
    assert framer.dropped_bytes >= 4000
    assert framer.feed(b"/A5B\r\n\r\n1.8.0(1*kWh)\r\n!\r\n") == [
        b"/A5B\r\n\r\n1.8.0(1*kWh)\r\n!\r\n"
    ]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_telegram_parser_only_raises_meter_errors(data: bytes) -> None:
    """Garbage never escapes as anything but a MeterError."""
    with contextlib.suppress(MeterError):
        parse_telegram(b"/ISk5\\2MT382-1000\r\n\r\n" + data + b"\r\n!\r\n")
