"""OBIS data lines of IEC 62056-21 readouts and DSMR P1 telegrams, parsed strictly.

A readout is a list of data lines ``[A-B:]C.D.E[*F](value[*unit])(...)`` (IEC 62056-21 §6.5 data
set structure; IEC 62056-61 for the OBIS groups A–F), optionally framed by an identification line
``/XXXZ<ident>`` and an end line ``!`` (with a CRC16 in DSMR ≥ 4, DSMR 5.0.2 §6.2), or by the
``STX … ETX BCC`` data block of an IEC readout. :func:`parse_readout` never raises on bad input:
every line it cannot read becomes a :class:`LineError` naming the line and the reason, and no
energy figure is derived from a readout that has any error (see :func:`to_reading`).

Energy is exact: values are parsed as decimal digit strings and converted with integer arithmetic.
Spec: docs/spec/meters.md "OBIS parsing".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

from meters.errors import ChecksumError, MissingRegisterError, ParseError
from meters.reading import Reading

STX, ETX = 0x02, 0x03
MAX_READOUT_BYTES = 256 * 1024  # a full 300-baud readout is a few kB; more is not a meter

_CODE_RE = re.compile(
    r"(?:(?P<a>\d{1,3})-(?P<b>\d{1,3}):)?"
    r"(?P<cde>[0-9A-Z]{1,3}(?:\.[0-9A-Z]{1,3}){1,2})"
    r"(?:[*&](?P<f>\d{1,3}))?"
)
_GROUP_RE = re.compile(r"\(([^()]*)\)")
_UNIT_RE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,7}")
NUMBER_RE = re.compile(r"([+-]?)(\d{1,20})(?:\.(\d{1,12}))?")
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_DSMR_TIME_RE = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})([SW])")

# Scale from the meter's unit to the integer unit we store [Wh] / [W].
ENERGY_UNITS: dict[str, int] = {"Wh": 1, "kWh": 1000, "MWh": 1_000_000}
POWER_UNITS: dict[str, int] = {"W": 1, "kW": 1000, "MW": 1_000_000}
# DSMR equipment ids (96.1.x) are hex-encoded ASCII (DSMR 5.0.2 §6.12); 0.0.0 is a plain string.
_ID_CODES: tuple[tuple[str, bool], ...] = (("96.1.1", True), ("96.1.0", True), ("0.0.0", False))


@dataclass(frozen=True, slots=True)
class ObisCode:
    """An OBIS reduced id: medium A, channel B (both optional), C.D.E and storage F (None or 255
    means the current value; other F are historical values, IEC 62056-61 §5.7)."""

    a: int | None
    b: int | None
    cde: str
    f: int | None = None

    @property
    def key(self) -> str:
        """Canonical text: ``A-B:C.D.E`` as written, ``*F`` only when F is not 255."""
        head = f"{self.a}-{self.b}:" if self.a is not None else ""
        tail = f"*{self.f}" if self.f not in (None, 255) else ""
        return f"{head}{self.cde}{tail}"

    @property
    def is_current(self) -> bool:
        return self.f in (None, 255)


@dataclass(frozen=True, slots=True)
class ValueGroup:
    """One ``(value*unit)`` group; ``value`` is the text as sent."""

    value: str
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Register:
    """One data line (plus DSMR 2.2/3 continuation lines) and where it was."""

    code: ObisCode
    groups: tuple[ValueGroup, ...]
    line: int


@dataclass(frozen=True, slots=True)
class LineError:
    """Why a line (or the frame, line None) was rejected."""

    line: int | None
    reason: str
    missing: bool = False  # no usable register (not a syntax error): MissingRegisterError
    check: tuple[str, int, int] | None = None  # (kind, received, computed) of a bad checksum

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line is not None else self.reason


@dataclass(frozen=True, slots=True)
class Identification:
    """``/XXXZ[\\W]ident`` (IEC 62056-21 §6.3.14): manufacturer, baud character, identity."""

    manufacturer: str
    baud_char: str
    ident: str
    enhanced: str | None = None  # the W of "\\W" (IEC 62056-21 §6.3.14 note; "\\2" = mode E)

    @property
    def text(self) -> str:
        mid = f"\\{self.enhanced}" if self.enhanced is not None else ""
        return f"{self.manufacturer}{self.baud_char}{mid}{self.ident}"


@dataclass(frozen=True, slots=True)
class Readout:
    """A parsed readout. ``import_wh``/``export_wh``/``power_w`` are None when absent or when
    ``errors`` is not empty (nothing is derived from a readout with errors)."""

    identification: Identification | None = None
    registers: tuple[Register, ...] = ()
    errors: tuple[LineError, ...] = ()
    checksum: str | None = None  # "BCC" or "CRC16" when one was present and verified
    meter_id: str | None = None
    import_wh: int | None = None
    export_wh: int | None = None
    power_w: int | None = None
    meter_time: datetime | None = None
    notes: tuple[str, ...] = field(default=())

    def get(self, key: str) -> Register | None:
        """The register whose canonical key is ``key`` (e.g. "1-0:1.8.0" or "1.8.0")."""
        return next((r for r in self.registers if r.code.key == key), None)


def parse_identification(text: str) -> Identification | None:
    """Parse an identification line without its leading ``/`` and line end; None if malformed."""
    if len(text) < 5 or not text[:3].isalpha() or not text.isprintable():
        return None
    enhanced = None
    rest = text[4:]
    if rest.startswith("\\") and len(rest) >= 2:
        enhanced, rest = rest[1], rest[2:]
    return Identification(text[:3], text[3], rest, enhanced)


def crc16(data: bytes) -> int:
    """CRC-16/ARC (poly 0x8005 reflected, init 0) as DSMR ≥ 4 appends after ``!`` [DSMR §6.2]."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def block_check(data: bytes) -> int:
    """IEC 62056-21 §6.3 BCC: XOR of the 7-bit characters (parity bit masked off)."""
    value = 0
    for byte in data:
        value ^= byte & 0x7F
    return value


def parse_line(text: str, line: int) -> Register:
    """Parse one data line; raise :class:`ParseError` naming ``line`` and why."""
    m = _CODE_RE.match(text)
    if m is None:
        raise ParseError(f"no OBIS code at the start of {text[:40]!r}", line)
    groups_text = text[m.end() :]
    if not groups_text.startswith("("):
        raise ParseError(f"expected '(' after OBIS code {m.group(0)!r}", line)
    groups = parse_groups(groups_text, line)
    a, b, f = m.group("a"), m.group("b"), m.group("f")
    code = ObisCode(
        int(a) if a else None, int(b) if b else None, m.group("cde"), int(f) if f else None
    )
    return Register(code, groups, line)


def parse_groups(text: str, line: int) -> tuple[ValueGroup, ...]:
    """Parse ``(v*u)(v)…`` that must make up the whole of ``text``."""
    groups: list[ValueGroup] = []
    pos = 0
    while pos < len(text):
        m = _GROUP_RE.match(text, pos)
        if m is None:
            raise ParseError(
                f"unbalanced or stray text at column {pos + 1}: {text[pos:][:20]!r}", line
            )
        content = m.group(1)
        if not content.isprintable():
            raise ParseError("control character inside a value group", line)
        value, star, unit = content.partition("*")
        if star and not _UNIT_RE.fullmatch(unit):
            raise ParseError(f"malformed unit {unit!r}", line)
        groups.append(ValueGroup(value, unit if star else None))
        pos = m.end()
    return tuple(groups)


def number_scaled(value: str, scale: int, *, signed: bool) -> Fraction:
    """Exact ``value × scale`` of a decimal digit string; ParseError text if it is not a number."""
    m = NUMBER_RE.fullmatch(value)
    if m is None:
        raise ValueError(f"{value!r} is not a decimal number")
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    if sign == "-" and not signed:
        raise ValueError(f"{value!r} is negative; a cumulative register never is")
    numerator = int(whole + frac) * scale
    return Fraction(-numerator if sign == "-" else numerator, 10 ** len(frac))


def _split_frame(data: bytes, errors: list[LineError]) -> tuple[bytes, int, str | None]:
    """Strip an IEC ``STX … ETX BCC`` frame; return (body, line offset of body, checksum)."""
    start = 0 if data[:1] == bytes([STX]) else data.find(b"\n" + bytes([STX])) + 1
    if start == 0 and data[:1] != bytes([STX]):
        return data, 0, None
    head, body = data[:start], data[start + 1 :]
    offset = head.count(b"\n")
    end = body.find(bytes([ETX]))
    if end < 0:
        errors.append(LineError(None, "data block has STX but no ETX: truncated readout"))
        return head + body, 0, None
    if end + 1 >= len(body):
        errors.append(LineError(None, "data block ends at ETX without its BCC"))
        return head + body[:end], 0, None
    received, computed = body[end + 1] & 0x7F, block_check(body[: end + 1])
    if received != computed:
        check = ("BCC", received, computed)
        errors.append(LineError(None, str(ChecksumError(*check)), check=check))
    return head + body[:end], offset, "BCC" if received == computed else None


def _check_crc(raw: bytes, start: int, bang: int, crc_text: str, line: int) -> LineError | None:
    if not re.fullmatch(r"[0-9A-F]{1,4}", crc_text):
        return LineError(line, f"end line carries {crc_text!r}, not a CRC16 in hex")
    computed = crc16(raw[start : bang + 1])
    received = int(crc_text, 16)
    if computed != received:
        check = ("CRC16", received, computed)
        return LineError(line, str(ChecksumError(*check)), check=check)
    return None


def parse_readout(data: bytes, *, tz: str = "Europe/Amsterdam", verify_crc: bool = True) -> Readout:
    """Parse a readout or telegram; never raises on bad input.

    Args:
        data: raw bytes as received (CRLF or LF line ends; an IEC STX…ETX BCC frame allowed).
        tz: zone of the meter's local clock for DSMR ``0-0:1.0.0`` timestamps (DSMR §6.12).
        verify_crc: False only for meter models known to send a wrong CRC16 (Iskra IE.x, see
            docs/spec/meters.md); the CRC is then ignored, never "fixed".

    Returns:
        A :class:`Readout`; its ``errors`` name each rejected line and why.
    """
    errors: list[LineError] = []
    if len(data) > MAX_READOUT_BYTES:
        return Readout(errors=(LineError(None, f"readout of {len(data)} bytes is too long"),))
    body, offset, checksum = _split_frame(data, errors)
    ident: Identification | None = None
    registers: list[Register] = []
    ident_pos: int | None = None
    ended = False
    pos = 0
    for number, raw in enumerate(body.split(b"\n"), start=1 + offset):
        line_pos, pos = pos, pos + len(raw) + 1
        raw_line = raw[:-1] if raw.endswith(b"\r") else raw
        if not raw_line.strip():
            continue
        try:
            text = raw_line.decode("ascii")
        except UnicodeDecodeError as exc:
            errors.append(LineError(number, f"non-ASCII byte at column {exc.start + 1}"))
            continue
        if text.startswith("/"):
            if ident_pos is not None or registers:
                errors.append(LineError(number, "identification line '/' not at the start"))
                continue
            ident_pos, ident = line_pos, parse_identification(text[1:])
            if ident is None:
                errors.append(LineError(number, f"malformed identification {text[:30]!r}"))
            continue
        if text.startswith("!"):
            ended = True
            crc_text = text[1:].strip()
            if crc_text and verify_crc:
                if ident_pos is None:
                    errors.append(LineError(number, "CRC after '!' but no '/' line to check"))
                else:
                    err = _check_crc(body, ident_pos, line_pos, crc_text, number)
                    if err is None:
                        checksum = checksum or "CRC16"
                    else:
                        errors.append(err)
            break  # what follows the end line is not part of the telegram
        _add_line(text, number, registers, errors)
    if ident_pos is not None and not ended:
        errors.append(LineError(None, "telegram truncated: no '!' end line"))
    return _derive(Readout(ident, tuple(registers), tuple(errors), checksum), tz)


def build_readout(
    registers: list[Register],
    identification: Identification | None = None,
    *,
    tz: str = "Europe/Amsterdam",
) -> Readout:
    """A readout from registers read one by one (IEC 62056-21 R2 answers)."""
    return _derive(Readout(identification, tuple(registers)), tz)


def _add_line(text: str, number: int, registers: list[Register], errors: list[LineError]) -> None:
    try:
        if text.startswith("("):  # DSMR 2.2/3: a value group continued on its own line
            if not registers or registers[-1].line < number - 1:
                raise ParseError("value group line with no data line before it", number)
            prev = registers[-1]
            more = parse_groups(text, number)
            registers[-1] = Register(prev.code, prev.groups + more, number)
            return
        reg = parse_line(text, number)
    except ParseError as exc:
        errors.append(LineError(exc.line, exc.reason))
        return
    for other in registers:
        if other.code == reg.code and other.groups != reg.groups:
            errors.append(
                LineError(number, f"{reg.code.key} already on line {other.line}, differs")
            )
            return
    registers.append(reg)


def _derive(readout: Readout, tz: str) -> Readout:
    """Fill meter id, energy, power and time; semantic problems become errors."""
    errors = list(readout.errors)
    regs = [r for r in readout.registers if r.code.is_current]
    notes: list[str] = []
    meter_id = _meter_id(regs)
    values: dict[str, int | None] = {}
    for name, c in (("import", "1"), ("export", "2")):
        try:
            values[name] = _energy_wh(regs, c)
        except ParseError as exc:
            errors.append(LineError(exc.line, exc.reason))
            values[name] = None
    power: int | None = None
    meter_time: datetime | None = None
    try:
        power = _power_w(regs)
        meter_time = _meter_time(regs, tz)
    except ParseError as exc:
        errors.append(LineError(exc.line, exc.reason))
    if values["import"] is None and values["export"] is None and not errors:
        found = ", ".join(sorted({r.code.key for r in regs})[:6])
        reason = f"no electricity energy register (1.8.x / 2.8.x); found {found}"
        errors.append(LineError(None, reason, missing=True))
    elif values["export"] is None and not errors:
        notes.append("no export register (2.8.x): an import-only meter")
    if errors:
        values = {"import": None, "export": None}
        power = None
    return Readout(
        readout.identification,
        readout.registers,
        tuple(errors),
        readout.checksum,
        meter_id,
        values["import"],
        values["export"],
        power,
        meter_time,
        tuple(notes),
    )


def _electric(regs: list[Register], cde: str) -> list[Register]:
    # Electricity is medium A=1 (or unstated in IEC readouts); B is the measurement channel.
    return [r for r in regs if r.code.cde == cde and r.code.a in (None, 1)]


def _unit_value(reg: Register, units: dict[str, int], *, signed: bool) -> Fraction:
    with_unit = [g for g in reg.groups if g.unit is not None]
    if len(with_unit) != 1:
        raise ParseError(f"{reg.code.key} needs exactly one value with a unit", reg.line)
    group = with_unit[0]
    assert group.unit is not None
    scale = units.get(group.unit)
    if scale is None:
        raise ParseError(f"{reg.code.key} in {group.unit!r}; expected {'/'.join(units)}", reg.line)
    try:
        return number_scaled(group.value, scale, signed=signed)
    except ValueError as exc:
        raise ParseError(f"{reg.code.key}: {exc}", reg.line) from exc


def _energy_wh(regs: list[Register], c: str) -> int | None:
    """Total register C.8.0, else the sum of tariff registers C.8.1…C.8.9, floored to Wh.

    Floor (not round) once on the exact total: cumulative registers only grow, and the floor of a
    non-decreasing value is non-decreasing, so differences of consecutive readings are never
    negative (an EasyMeter's 7-decimal kWh carries 0.1 mWh more than our Wh resolution).
    """
    total = _electric(regs, f"{c}.8.0")
    if len(total) > 1:
        raise ParseError(f"{c}.8.0 given on several channels", total[1].line)
    tariffs = [r for e in range(1, 10) for r in _electric(regs, f"{c}.8.{e}")]
    # Every energy register must be well-formed, also the ones the total makes unused.
    values = [_unit_value(r, ENERGY_UNITS, signed=False) for r in total + tariffs]
    if not values:
        return None
    exact = values[0] if total else sum(values, Fraction(0))
    return int(exact)  # int() floors a non-negative Fraction


def _power_w(regs: list[Register]) -> int | None:
    """1.7.0 − 2.7.0 (A+ minus A− instantaneous), else 16.7.0; half-even to [W]."""
    plus, minus = _electric(regs, "1.7.0"), _electric(regs, "2.7.0")
    if not plus and not minus:
        plus = _electric(regs, "16.7.0")
        if not plus:
            return None
    value = Fraction(0)
    for reg in plus[:1]:
        value += _unit_value(reg, POWER_UNITS, signed=True)
    for reg in minus[:1]:
        value -= _unit_value(reg, POWER_UNITS, signed=True)
    return round(value)


def _meter_id(regs: list[Register]) -> str | None:
    for cde, hex_encoded in _ID_CODES:
        for reg in regs:
            if reg.code.cde != cde or reg.code.b not in (None, 0) or not reg.groups:
                continue
            text = reg.groups[0].value.strip()
            if not text or set(text) == {"0"}:
                continue  # an unset id (all zeros) identifies nothing
            return _decode_hex_id(text) if hex_encoded else text
    return None


def _decode_hex_id(text: str) -> str:
    """Decode a hex-encoded ASCII id when it is one (DSMR); otherwise keep the text."""
    if _HEX_RE.fullmatch(text):
        decoded = bytes.fromhex(text)
        if all(0x20 < b < 0x7F for b in decoded):
            return decoded.decode("ascii")
    return text


def _meter_time(regs: list[Register], tz: str) -> datetime | None:
    """DSMR ``0-0:1.0.0(YYMMDDhhmmssX)``: local time, X = S (summer) or W (winter)."""
    reg = next((r for r in regs if r.code.cde == "1.0.0" and r.code.a == 0), None)
    if reg is None or not reg.groups:
        return None
    m = _DSMR_TIME_RE.fullmatch(reg.groups[0].value)
    if m is None:
        raise ParseError(f"timestamp {reg.groups[0].value!r} is not YYMMDDhhmmss[S|W]", reg.line)
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    zone = ZoneInfo(tz)
    try:
        candidates = [datetime(2000 + y, mo, d, h, mi, s, tzinfo=zone, fold=k) for k in (0, 1)]
    except ValueError as exc:
        raise ParseError(f"timestamp {reg.groups[0].value!r}: {exc}", reg.line) from exc
    summer = m.group(7) == "S"
    # The S/W flag picks the right hour in the autumn overlap (fold) where local time repeats.
    match = [c for c in candidates if bool(c.dst()) == summer] or candidates
    return match[0].astimezone(ZoneInfo("UTC"))


def to_reading(
    readout: Readout, *, meter_id: str | None = None, export_seen: bool = False
) -> Reading:
    """Turn a clean readout into a :class:`Reading`; raise instead of guessing.

    Args:
        readout: the parsed readout.
        meter_id: fallback id when the readout carries none (e.g. a Sagemcom T210-D-R).
        export_seen: True when this meter sent an export register before; then a missing 2.8.x is
            a lost line (error), not an import-only meter (export 0).

    Raises:
        ParseError: the readout has errors (the first is named).
        ChecksumError: its CRC16 or BCC did not match.
        MissingRegisterError: no import register, or a previously seen export register is gone.
    """
    raise_first_error(readout)
    if readout.import_wh is None:
        raise MissingRegisterError("no import register (1.8.0 or 1.8.1+1.8.2) in the readout")
    if readout.export_wh is None and export_seen:
        raise MissingRegisterError("export register (2.8.x) missing although the meter sent it")
    mid = readout.meter_id or meter_id
    if mid is None:
        raise MissingRegisterError("no meter id (96.1.1 / 96.1.0 / 0.0.0); configure meter_id")
    return Reading(
        meter_id=mid,
        import_wh=readout.import_wh,
        export_wh=readout.export_wh or 0,
        power_w=readout.power_w,
        meter_time=readout.meter_time,
    )


def raise_first_error(readout: Readout) -> None:
    """Raise the typed error for the readout's first error, if it has any."""
    if not readout.errors:
        return
    first, more = readout.errors[0], len(readout.errors) - 1
    if first.check is not None:
        raise ChecksumError(*first.check)
    if first.missing:
        raise MissingRegisterError(first.reason)
    suffix = f" (and {more} more error(s))" if more else ""
    raise ParseError(first.reason + suffix, first.line)
