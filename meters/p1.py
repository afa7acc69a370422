"""DSMR P1 push telegrams (NL/BE/LU/HU/IE smart meters, EasyMeter Q3D): framing, parsing, driver.

A P1 port pushes a telegram every 1–10 s (DSMR 5.0.2 §6: 115200 8N1, every second; DSMR 2.2 and 3:
9600 7E1, every 10 s). A telegram runs from ``/`` to ``!`` plus, from DSMR 4 on, a CRC16 and CRLF.
Each telegram is parsed twice, on purpose:

1. :func:`meters.obis.parse_readout` checks every line strictly (a garbled line rejects the whole
   telegram, so a DSMR 2.2/3 telegram without CRC is never half-used) and verifies the CRC16;
2. dsmr_parser (a telegram specification picked by header and version, CRC checked where the
   specification has one) yields the registers we turn into energy.

Both must agree on import/export; they always do for well-formed telegrams, and a disagreement
means one of the parsers misread a line, which is an error, not a reading.
Spec: docs/spec/meters.md "DSMR P1".
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from dsmr_parser import telegram_specifications as specs
from dsmr_parser.exceptions import InvalidChecksumError
from dsmr_parser.exceptions import ParseError as DsmrParseError
from dsmr_parser.parsers import TelegramParser

from meters.errors import (
    MeterError,
    MeterTimeoutError,
    ParseError,
    PortUnavailableError,
)
from meters.obis import (
    ENERGY_UNITS,
    POWER_UNITS,
    Readout,
    parse_readout,
    raise_first_error,
    to_reading,
)
from meters.reading import Reading
from meters.serial_link import P1_DSMR2, P1_DSMR4, Backoff, LineSettings, SerialLink

MAX_TELEGRAM_BYTES = 16 * 1024  # DSMR 5 telegrams are ~1 kB; more without an end is noise

# The specifications we pick from. The Sagemcom T210-D-R spec expects an encrypted frame; its
# plaintext form (Luxembourg, Austria) is the same objects without the cipher.
PROFILES: dict[str, dict[str, Any]] = {
    "v2.2": specs.V2_2,
    "v3": specs.V3,
    "v4": specs.V4,
    "v5": specs.V5,
    "fluvius": specs.BELGIUM_FLUVIUS,
    "q3d": specs.Q3D,
    "sagemcom": {**specs.SAGEMCOM_T210_D_R, "general_global_cipher": False},
    # Iskra IE.x firmware sends a CRC that does not match (dsmr_parser PR #126 disables it too).
    "iskra_ie": specs.ISKRA_IE,
    "eon_hu": specs.EON_HUNGARY,
}
_HEADER_HINTS: tuple[tuple[str, str], ...] = (
    ("/FLU", "fluvius"),
    ("/ESY", "q3d"),
    ("/ISk5\\2MIE", "iskra_ie"),
    ("/EST5", "sagemcom"),
    ("/SAG5", "eon_hu"),
)
_VERSION_RE = re.compile(rb"^1-3:0\.2\.8\((\d+)\)", re.MULTILINE)
_END_RE = re.compile(rb"\r?\n!([0-9A-Fa-f]{0,4})\r?\n")
_TARIFFS = (1, 2, 3, 4)
_IMPORT = ("ELECTRICITY_IMPORTED_TOTAL", *(f"ELECTRICITY_USED_TARIFF_{i}" for i in _TARIFFS))
_EXPORT = ("ELECTRICITY_EXPORTED_TOTAL", *(f"ELECTRICITY_DELIVERED_TARIFF_{i}" for i in _TARIFFS))


@dataclass(frozen=True, slots=True)
class Telegram:
    """A verified P1 telegram: our strict readout plus the values dsmr_parser extracted."""

    profile: str
    readout: Readout
    import_wh: int | None
    export_wh: int | None
    power_w: int | None


def select_profile(data: bytes) -> str:
    """Pick the dsmr_parser specification: by header first, then by the P1 version line."""
    header = data.split(b"\n", 1)[0].decode("ascii", errors="replace")
    for prefix, name in _HEADER_HINTS:
        if header.startswith(prefix):
            return name
    version = _VERSION_RE.search(data)
    if version is not None:
        return "v5" if version.group(1).startswith(b"5") else "v4"
    end = _END_RE.search(data)
    return "v4" if end is not None and end.group(1) else "v2.2"


def parse_telegram(
    data: bytes, *, profile: str | None = None, tz: str = "Europe/Amsterdam"
) -> Telegram:
    """Parse one telegram ``/ … !CRC``.

    Raises:
        ParseError: a malformed line (named), or the two parsers disagree.
        ChecksumError: the CRC16 does not match.
        MissingRegisterError: no electricity register at all (e.g. a heat meter).
    """
    name = profile or select_profile(data)
    spec = PROFILES.get(name)
    if spec is None:
        raise ParseError(f"unknown P1 profile {name!r}; one of {', '.join(PROFILES)}")
    readout = parse_readout(data, tz=tz, verify_crc=bool(spec["checksum_support"]))
    raise_first_error(readout)
    text = data.decode("ascii", errors="replace")
    if "\r\n" not in text:
        text = text.replace("\n", "\r\n")  # dsmr_parser's line patterns end in CRLF
    try:
        parsed = TelegramParser(spec).parse(text, throw_ex=True)
    except InvalidChecksumError as exc:
        raise ParseError(f"dsmr_parser ({name}): {exc}") from exc
    except (DsmrParseError, ValueError, ArithmeticError, IndexError, TypeError) as exc:
        raise ParseError(f"dsmr_parser ({name}) rejected the telegram: {exc}") from exc
    telegram = Telegram(
        name,
        readout,
        _energy(parsed, _IMPORT),
        _energy(parsed, _EXPORT),
        _power(parsed),
    )
    for what, ours, theirs in (
        ("import", readout.import_wh, telegram.import_wh),
        ("export", readout.export_wh, telegram.export_wh),
    ):
        if ours != theirs:
            raise ParseError(f"{what}: OBIS parser {ours} Wh, dsmr_parser ({name}) {theirs} Wh")
    return telegram


def _value(obj: Any, units: dict[str, int]) -> Fraction:
    value, unit = obj.value, obj.unit
    if not isinstance(value, Decimal) or unit not in units:
        raise ParseError(f"dsmr_parser value {value!r} {unit!r} is not in {'/'.join(units)}")
    return Fraction(value) * units[unit]


def _energy(parsed: Any, names: tuple[str, ...]) -> int | None:
    """Total register if present, else the sum of tariffs; floored to Wh once (obis.py)."""
    total = getattr(parsed, names[0], None)
    parts = [total] if total is not None else [getattr(parsed, n, None) for n in names[1:]]
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return int(sum((_value(p, ENERGY_UNITS) for p in present), Fraction(0)))


def _power(parsed: Any) -> int | None:
    usage = getattr(parsed, "CURRENT_ELECTRICITY_USAGE", None)
    delivery = getattr(parsed, "CURRENT_ELECTRICITY_DELIVERY", None)
    if usage is None and delivery is None:
        return None
    plus = _value(usage, POWER_UNITS) if usage is not None else Fraction(0)
    minus = _value(delivery, POWER_UNITS) if delivery is not None else Fraction(0)
    return round(plus - minus)


class TelegramFramer:
    """Cut telegrams ``/ … !CRC CRLF`` out of a byte stream; bounded buffer."""

    def __init__(self, max_bytes: int = MAX_TELEGRAM_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_bytes
        self.dropped_bytes = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add received bytes; return the telegrams completed by them."""
        self._buffer.extend(chunk)
        out: list[bytes] = []
        while True:
            start = self._buffer.find(b"/")
            if start < 0:
                self.dropped_bytes += len(self._buffer)
                self._buffer.clear()
                return out
            if start:
                self.dropped_bytes += start
                del self._buffer[:start]
            end = _END_RE.search(self._buffer)
            if end is None:
                if len(self._buffer) > self._max:  # no end in sight: resynchronise
                    self.dropped_bytes += 1
                    del self._buffer[:1]
                    continue
                return out
            out.append(bytes(self._buffer[: end.end()]))
            del self._buffer[: end.end()]


@dataclass(frozen=True, slots=True)
class P1Config:
    """P1 driver settings; times in [s]."""

    port: str
    baudrate: int = 115200  # 115200 8N1 (DSMR 4/5); 9600 means 7E1 (DSMR 2.2/3)
    profile: str | None = None  # None: pick per telegram (header, version)
    meter_id: str | None = None  # fallback when the telegram carries no id (Sagemcom T210-D-R)
    telegram_timeout_s: float = 12.0  # > the slowest push interval (10 s)
    max_age_s: float = 15.0
    tz: str = "Europe/Amsterdam"
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0


class P1Driver:
    """:class:`meters.reading.MeterDriver` for a P1 port; a named task keeps the latest telegram."""

    def __init__(
        self,
        config: P1Config,
        *,
        link: SerialLink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        settings: LineSettings = P1_DSMR4 if config.baudrate == 115200 else P1_DSMR2
        if config.baudrate not in (115200, 9600):
            settings = LineSettings(config.baudrate, 8, "N", software_parity=False)
        backoff = Backoff(config.backoff_initial_s, config.backoff_max_s)
        self.link = link or SerialLink(config.port, settings, backoff=backoff)
        self._clock = clock
        self._framer = TelegramFramer()
        self._latest: tuple[float, Reading | MeterError] | None = None
        self._fresh = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._export_seen = False
        self.telegrams = 0
        self.rejected = 0

    async def read(self) -> Reading:
        """The newest telegram (waiting for the next one if none is fresh); raises its error."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._pump(), name=f"p1 {self.config.port}")
        latest = self._latest
        if latest is None or self._clock() - latest[0] > self.config.max_age_s:
            self._fresh.clear()
            try:
                async with asyncio.timeout(self.config.telegram_timeout_s):
                    await self._fresh.wait()
            except TimeoutError:
                raise MeterTimeoutError("P1 telegram", self.config.telegram_timeout_s) from None
            latest = self._latest
        assert latest is not None
        self._latest = None  # each telegram is returned once
        if isinstance(latest[1], MeterError):
            raise latest[1]
        return latest[1]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.link.close()

    def _publish(self, result: Reading | MeterError) -> None:
        self._latest = (self._clock(), result)
        self._fresh.set()

    async def _pump(self) -> None:
        """Read the port forever: frame, parse, keep the newest; reopen with backoff."""
        while True:
            try:
                await self.link.open()
                chunk = await self.link.read_until(len, "P1 data", self.config.telegram_timeout_s)
            except PortUnavailableError as exc:
                self._publish(exc)
                await asyncio.sleep(max(exc.retry_in_s, 0.05))
                continue
            except MeterTimeoutError:
                continue  # read() reports the silence with its own timeout
            for raw in self._framer.feed(chunk):
                self._publish(self._decode(raw))

    def _decode(self, raw: bytes) -> Reading | MeterError:
        try:
            telegram = parse_telegram(raw, profile=self.config.profile, tz=self.config.tz)
            reading = to_reading(
                telegram.readout, meter_id=self.config.meter_id, export_seen=self._export_seen
            )
        except MeterError as exc:
            self.rejected += 1
            return exc
        self.telegrams += 1
        self._export_seen |= telegram.export_wh is not None
        return reading
