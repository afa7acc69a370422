"""IEC 62056-21 (formerly IEC 1107) mode C: message framing, block check and 7E1 parity.

Pure functions shared by the driver (:mod:`meters.iec_driver`) and the device simulator
(:mod:`meters.devices.iec_endpoint`). Section numbers refer to IEC 62056-21:2002.

Messages (§6.3):
- request (sign-on)     ``/ ? [address] ! CR LF``
- identification        ``/ XXX Z [\\W] ident CR LF`` (XXX manufacturer, Z baud character)
- acknowledgement/option ``ACK V Z Y CR LF`` (V protocol 0, Z baud char, Y 0 readout / 1 prog.)
- data block            ``STX data ETX BCC``
- command               ``SOH C D STX data ETX BCC`` (e.g. R2 read, P1 password) or
  ``SOH B 0 ETX BCC`` (break)

The BCC is the XOR of every character after the first SOH or STX up to and including ETX
(§6.3.3). The line is 7 data bits, even parity, 1 stop bit; when a port cannot do 7E1 in
hardware, :func:`encode_7e1` / :func:`decode_7e1` put the parity in bit 7 of 8N1 bytes.
"""

from __future__ import annotations

import re

from meters.errors import ChecksumError, ParseError, ProtocolError
from meters.obis import Identification, Register, block_check, parse_identification, parse_line

SOH, STX, ETX, EOT, ACK, NAK = 0x01, 0x02, 0x03, 0x04, 0x06, 0x15
CRLF = b"\r\n"

# Mode C baud characters (§6.3.14, item 13 b)).
BAUD_RATES: dict[str, int] = {
    "0": 300,
    "1": 600,
    "2": 1200,
    "3": 2400,
    "4": 4800,
    "5": 9600,
    "6": 19200,
}
OPTION_READOUT = "0"
OPTION_PROGRAMMING = "1"
_ADDRESS_RE = re.compile(r"[0-9A-Za-z ]{0,32}")


def even_parity_bit(byte: int) -> int:
    """The parity bit (0 or 1) that makes the count of ones in the 7 data bits plus it even."""
    return (byte & 0x7F).bit_count() & 1


def encode_7e1(data: bytes) -> bytes:
    """7-bit characters with their even-parity bit in bit 7, for a port opened 8N1."""
    return bytes((b & 0x7F) | (even_parity_bit(b) << 7) for b in data)


def decode_7e1(data: bytes) -> tuple[bytes, int]:
    """Strip bit 7 of 8N1 bytes carrying 7E1 characters.

    Returns:
        (the 7-bit characters, how many bytes had a wrong parity bit).
    """
    bad = sum(1 for b in data if (b >> 7) != even_parity_bit(b))
    return bytes(b & 0x7F for b in data), bad


def sign_on(address: str = "") -> bytes:
    """Request message ``/?[address]!CRLF`` (§6.3.1); address up to 32 characters."""
    if not _ADDRESS_RE.fullmatch(address):
        raise ValueError(f"device address {address!r}: up to 32 characters of 0-9 A-Z a-z space")
    return b"/?" + address.encode("ascii") + b"!" + CRLF


def ack_option(baud_char: str, option: str, protocol: str = "0") -> bytes:
    """Acknowledgement/option select ``ACK V Z Y CRLF`` (§6.3.5)."""
    if baud_char not in BAUD_RATES or option not in (OPTION_READOUT, OPTION_PROGRAMMING):
        raise ValueError(f"bad option select: baud {baud_char!r}, option {option!r}")
    return bytes([ACK]) + f"{protocol}{baud_char}{option}".encode("ascii") + CRLF


def parse_ack_option(message: bytes) -> tuple[str, str, str] | None:
    """(protocol, baud char, option) of an ``ACK V Z Y CRLF`` message, None if it is not one."""
    if len(message) != 6 or message[0] != ACK or not message.endswith(CRLF):
        return None
    v, z, y = (chr(b) for b in message[1:4])
    if z not in BAUD_RATES or y not in "0123456789":
        return None
    return v, z, y


def parse_ident_message(line: bytes) -> Identification:
    """Parse the meter's identification message (§6.3.2) and check it is mode C.

    Raises:
        ProtocolError: not an identification, or a baud character that is not mode C.
    """
    text = line.rstrip(b"\r\n").decode("ascii", errors="replace")
    ident = parse_identification(text[1:]) if text.startswith("/") else None
    if ident is None:
        raise ProtocolError(f"expected an identification '/XXXZident', got {text[:40]!r}")
    if ident.baud_char not in BAUD_RATES:
        raise ProtocolError(
            f"baud character {ident.baud_char!r} of {text!r} is not mode C (0-6); "
            "mode A/B meters are not supported"
        )
    return ident


def choose_baud_char(meter_char: str, max_baud: int) -> str:
    """The fastest baud character both the meter and our configuration allow."""
    allowed = [c for c, rate in BAUD_RATES.items() if rate <= max_baud and c <= meter_char]
    return max(allowed) if allowed else "0"


def command(code: str, data: str | None = None) -> bytes:
    """Programming command ``SOH C D [STX data] ETX BCC`` (§6.3.7), e.g. ``command("R2",
    "1.8.0()")`` or ``command("B0")`` = ``\\x01B0\\x03q``."""
    if len(code) != 2 or not code.isascii() or not code.isalnum():
        raise ValueError(f"command {code!r} must be two characters like 'R2'")
    body = code.encode("ascii")
    if data is not None:
        body += bytes([STX]) + data.encode("ascii")
    body += bytes([ETX])
    return bytes([SOH]) + body + bytes([block_check(body)])


def data_block(payload: bytes) -> bytes:
    """Data message ``STX payload ETX BCC`` (§6.3.6/6.3.8)."""
    body = payload + bytes([ETX])
    return bytes([STX]) + body + bytes([block_check(body)])


def check_block(raw: bytes) -> tuple[str | None, bytes]:
    """Verify a framed message ending in ``ETX BCC``.

    Args:
        raw: ``SOH C D [STX data] ETX BCC`` or ``STX data ETX BCC`` (7-bit characters).

    Returns:
        (command code such as "R2" or "P0", or None for a plain data block; the data).

    Raises:
        ProtocolError: the frame does not start with SOH/STX or does not end ``ETX BCC``.
        ChecksumError: the BCC does not match.
    """
    if len(raw) < 3 or raw[0] not in (SOH, STX) or raw[-2] != ETX:
        raise ProtocolError(f"not a framed block: {raw[:24]!r}")
    received, computed = raw[-1] & 0x7F, block_check(raw[1:-1])
    if received != computed:
        raise ChecksumError("BCC", received, computed)
    inner = raw[1:-2]
    if raw[0] == STX:
        return None, inner
    code, _, data = inner.partition(bytes([STX]))
    return code.decode("ascii", errors="replace"), data


def parse_r2_answer(address: str, data: bytes) -> Register:
    """Parse the data of an R2 answer: ``1.8.0(001234.567*kWh)`` or just ``(001234.567*kWh)``.

    Raises:
        ParseError: the answer is not a data line, or it is for another address.
    """
    text = data.decode("ascii", errors="replace").strip()
    if text.startswith("("):
        text = address + text  # many meters answer with the value groups only
    reg = parse_line(text, 1)
    if reg.code.key != parse_line(address + "()", 1).code.key:
        raise ParseError(f"asked for {address}, the meter answered {reg.code.key}")
    return reg
