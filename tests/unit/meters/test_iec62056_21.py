"""IEC 62056-21 framing: messages byte for byte, BCC, 7E1 parity, identification parsing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meters.errors import ChecksumError, ParseError, ProtocolError
from meters.iec62056_21 import (
    ack_option,
    check_block,
    choose_baud_char,
    command,
    data_block,
    decode_7e1,
    encode_7e1,
    parse_ack_option,
    parse_ident_message,
    parse_r2_answer,
    sign_on,
)
from meters.obis import block_check


def test_break_command_is_the_textbook_bytes() -> None:
    """B0 is SOH 'B' '0' ETX 'q': 0x42 ^ 0x30 ^ 0x03 = 0x71."""
    assert command("B0") == b"\x01B0\x03q"


def test_r2_command_bcc_by_hand() -> None:
    """R2 of 1.8.0: BCC is the XOR of everything after SOH up to and including ETX."""
    body = b"R2\x021.8.0()\x03"
    expected = 0
    for byte in body:
        expected ^= byte
    assert command("R2", "1.8.0()") == b"\x01" + body + bytes([expected])


def test_sign_on_and_option_messages() -> None:
    """Sign-on with/without address; option select for programming at 9600 baud."""
    assert sign_on() == b"/?!\r\n"
    assert sign_on("12345678") == b"/?12345678!\r\n"
    with pytest.raises(ValueError, match="device address"):
        sign_on("bad/addr")
    assert ack_option("5", "1") == b"\x06051\r\n"
    assert parse_ack_option(b"\x06051\r\n") == ("0", "5", "1")
    assert parse_ack_option(b"\x06091\r\n") is None


def test_parity_bits_by_hand() -> None:
    """Even parity in bit 7: '/' (5 ones) → 0xAF, '?' (6) → 0x3F, CR (3) → 0x8D, LF (2) → 0x0A."""
    assert encode_7e1(b"/?\r\n") == bytes([0xAF, 0x3F, 0x8D, 0x0A])
    assert decode_7e1(bytes([0xAF, 0x3F, 0x8D, 0x0A])) == (b"/?\r\n", 0)
    assert decode_7e1(bytes([0x2F, 0xBF])) == (b"/?", 2)  # both parity bits wrong


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64).map(lambda b: bytes(x & 0x7F for x in b)))
def test_parity_round_trip_and_bcc_ignores_parity(data: bytes) -> None:
    """Every encoded byte has an even count of ones; decoding restores the 7-bit data; the BCC
    of the line bytes equals the BCC of the characters (parity bits are masked off)."""
    line = encode_7e1(data)
    assert all(b.bit_count() % 2 == 0 for b in line)
    assert decode_7e1(line) == (data, 0)
    assert block_check(line) == block_check(data)


def test_identification_parse() -> None:
    """Manufacturer, baud character and ident; enhanced '\\2' marker; mode A/B rejected."""
    ident = parse_ident_message(b"/ISk5MT174-0001\r\n")
    assert (ident.manufacturer, ident.baud_char, ident.ident) == ("ISk", "5", "MT174-0001")
    enhanced = parse_ident_message(b"/LGZ4\\2ZMD3104407.B32\r\n")
    assert (enhanced.baud_char, enhanced.enhanced, enhanced.ident) == ("4", "2", "ZMD3104407.B32")
    with pytest.raises(ProtocolError, match="not mode C"):
        parse_ident_message(b"/ABCEident\r\n")
    with pytest.raises(ProtocolError, match="expected an identification"):
        parse_ident_message(b"garbage\r\n")


def test_choose_baud_char() -> None:
    """The fastest rate both the meter and the configuration allow."""
    assert choose_baud_char("6", 9600) == "5"
    assert choose_baud_char("3", 9600) == "3"
    assert choose_baud_char("5", 300) == "0"


def test_check_block() -> None:
    """A good block is unpacked; a wrong BCC is a ChecksumError with both values."""
    block = data_block(b"1.8.0(001234.567*kWh)")
    assert check_block(block) == (None, b"1.8.0(001234.567*kWh)")
    assert check_block(command("P0", "(12345678)")) == ("P0", b"(12345678)")
    with pytest.raises(ChecksumError) as err:
        check_block(block[:-1] + bytes([block[-1] ^ 1]))
    assert err.value.computed == block[-1]
    assert err.value.expected == block[-1] ^ 1
    with pytest.raises(ProtocolError):
        check_block(b"xx\x03a")


def test_r2_answer_with_and_without_address() -> None:
    """Answers carry the address or only the value groups; a foreign address is rejected."""
    full = parse_r2_answer("1.8.0", b"1.8.0(001234.567*kWh)")
    short = parse_r2_answer("1.8.0", b"(001234.567*kWh)")
    assert full.groups == short.groups
    assert full.code.key == "1.8.0"
    with pytest.raises(ParseError, match=r"answered 2\.8\.0"):
        parse_r2_answer("1.8.0", b"2.8.0(1*kWh)")
