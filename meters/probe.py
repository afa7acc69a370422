"""Find out what talks on a serial port: IEC 62056-21 sign-on (with and without wake-up) at
300 baud 7E1, DSMR P1 at 115200 8N1 and 9600 7E1. For ``lemctl meter probe`` at the cabinet.

Spec: docs/spec/meters.md "lemctl meter probe".
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from meters.errors import MeterError, MeterTimeoutError
from meters.iec62056_21 import BAUD_RATES, command, parse_ident_message, sign_on
from meters.p1 import parse_telegram
from meters.serial_link import IEC_300_7E1, P1_DSMR2, P1_DSMR4, Backoff, LineSettings, SerialLink

_TELEGRAM_RE = re.compile(rb"/[^/]*?\r?\n![0-9A-Fa-f]{0,4}\r?\n", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One attempt: which protocol at which line settings, did it answer, and what."""

    protocol: str
    line: str
    answered: bool
    detail: str


def _telegram_end(buf: bytes) -> int:
    m = _TELEGRAM_RE.search(buf)
    return m.end() if m else 0


def _line_end(buf: bytes) -> int:
    return buf.find(b"\n") + 1


async def probe_iec(
    port: str, *, wakeup_nuls: int = 0, wakeup_pause_s: float = 1.5, timeout_s: float = 2.0
) -> ProbeResult:
    """Send the mode C sign-on at 300 baud and report the identification, if any."""
    name = "IEC 62056-21 sign-on" + (" after wake-up" if wakeup_nuls else "")
    link = SerialLink(port, IEC_300_7E1, backoff=Backoff(0.0, 0.0))
    try:
        await link.open()
        if wakeup_nuls:
            await link.write(bytes(wakeup_nuls))
            await asyncio.sleep(wakeup_pause_s)
        request = sign_on()
        await link.write(request)
        line = await link.read_until(_line_end, "identification", timeout_s)
        if line == request:  # echo of a half-duplex probe
            line = await link.read_until(_line_end, "identification", timeout_s)
        await link.write(command("B0"))  # leave the meter idle rather than mid-handshake
    except MeterTimeoutError:
        return ProbeResult(name, "300 7E1", False, f"no answer within {timeout_s:g} s")
    except MeterError as exc:
        return ProbeResult(name, "300 7E1", False, str(exc))
    finally:
        await link.close()
    try:
        ident = parse_ident_message(line.lstrip(b"\0"))
    except MeterError as exc:
        return ProbeResult(name, "300 7E1", True, f"answered, but: {exc}")
    rate = BAUD_RATES[ident.baud_char]
    detail = f"/{ident.text}: manufacturer {ident.manufacturer}, up to {rate} baud"
    return ProbeResult(name, f"300 7E1 ({link.parity_mode} parity)", True, detail)


async def probe_p1(port: str, settings: LineSettings, *, timeout_s: float = 11.0) -> ProbeResult:
    """Listen for a pushed DSMR telegram and report its profile, meter and registers."""
    line = f"{settings.baudrate} {'8N1' if settings.bytesize == 8 else '7E1'}"
    link = SerialLink(port, settings, backoff=Backoff(0.0, 0.0))
    try:
        await link.open()
        raw = await link.read_until(_telegram_end, "P1 telegram", timeout_s)
    except MeterTimeoutError:
        noise = link.pending_bytes
        why = f"{noise} bytes but no telegram (other baud rate?)" if noise else "silence"
        return ProbeResult("DSMR P1", line, False, f"no telegram within {timeout_s:g} s: {why}")
    except MeterError as exc:
        return ProbeResult("DSMR P1", line, False, str(exc))
    finally:
        await link.close()
    raw = raw[raw.rfind(b"/", 0, raw.find(b"\n!")) :]
    try:
        t = parse_telegram(raw)
    except MeterError as exc:
        return ProbeResult("DSMR P1", line, True, f"telegram received, but: {exc}")
    detail = (
        f"profile {t.profile}, meter {t.readout.meter_id}, import {t.import_wh} Wh, "
        f"export {t.export_wh} Wh"
    )
    return ProbeResult("DSMR P1", line, True, detail)


async def probe(
    port: str, *, iec_timeout_s: float = 2.0, p1_timeout_s: float = 11.0
) -> list[ProbeResult]:
    """Try every protocol and line setting in turn (one at a time: the port is exclusive)."""
    return [
        await probe_iec(port, timeout_s=iec_timeout_s),
        await probe_iec(port, wakeup_nuls=70, timeout_s=iec_timeout_s),
        await probe_p1(port, P1_DSMR4, timeout_s=p1_timeout_s),
        await probe_p1(port, P1_DSMR2, timeout_s=p1_timeout_s),
    ]
