"""First-boot meter discovery: which serial port has a meter, which protocol it speaks, its id.

Spec: docs/spec/join.md §4 (phase ``joining``). edge/provision.py calls :func:`discover_meter`
with the configured port or :func:`default_ports`; each port is tried with IEC 62056-21 (optical
probe, mode C) and then DSMR P1 until one meter gives its id.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from meters.errors import MeterError

log = logging.getLogger("lemd.join")


class MeterNotFoundError(Exception):
    """No meter answered on any candidate port; the message lists each port and why."""


@dataclass(frozen=True)
class MeterFound:
    """The meter discovery result: driver name, port, the meter's id and identification."""

    driver: str
    port: str
    meter_id: str
    identification: str


def default_ports() -> list[str]:
    """Candidate serial ports: stable udev names first, then USB adapters and the RS-485 UART."""
    by_id = sorted(glob.glob("/dev/serial/by-id/*"))
    raw = sorted(glob.glob("/dev/ttyUSB*") + glob.glob("/dev/ttyACM*"))
    real = {os.path.realpath(p) for p in by_id}
    return by_id + [p for p in raw if p not in real]


async def _read_iec(port: str, timeout_s: float) -> MeterFound:
    from meters.iec_driver import IecConfig, IecDriver
    from meters.probe import probe_iec

    probe = await probe_iec(port, timeout_s=timeout_s)
    if not probe.answered:
        raise MeterError(f"IEC 62056-21: {probe.detail}")
    ident = probe.detail.split(":", 1)[0]
    driver = IecDriver(IecConfig(port=port, retries=1, backoff_initial_s=0.0))
    try:
        async with asyncio.timeout(60.0):
            reading = await driver.read()
    finally:
        await driver.close()
    return MeterFound("iec", port, reading.meter_id, ident)


async def _read_p1(port: str, timeout_s: float) -> MeterFound:
    from meters.p1 import P1Config, P1Driver

    driver = P1Driver(P1Config(port=port, telegram_timeout_s=timeout_s, backoff_initial_s=0.0))
    try:
        async with asyncio.timeout(timeout_s + 2.0):
            reading = await driver.read()
    finally:
        await driver.close()
    return MeterFound("p1", port, reading.meter_id, "DSMR P1 telegram")


_READERS = {"iec": (_read_iec, 2.0), "p1": (_read_p1, 12.0)}


async def discover_meter(
    ports: Sequence[str], *, drivers: Sequence[str] = ("iec", "p1")
) -> MeterFound:
    """Try each port with each protocol until a meter gives its id.

    Raises:
        MeterNotFoundError: listing every port and protocol tried and what happened.
    """
    if not ports:
        raise MeterNotFoundError("no serial port found (is the optical probe plugged in?)")
    tried: list[str] = []
    for port in ports:
        for name in drivers:
            reader, timeout_s = _READERS[name]
            try:
                found = await reader(port, timeout_s)
            except (MeterError, OSError, TimeoutError) as exc:
                tried.append(f"{port} {name}: {exc or type(exc).__name__}")
                continue
            # No meter id in the log: on a pseudonymous chain it is a serial (privacy.md §3).
            log.info("meter found", extra={"port": port, "driver": name})
            return found
    raise MeterNotFoundError("; ".join(tried))
