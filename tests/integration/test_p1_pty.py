"""The DSMR P1 driver reading pushed telegrams from a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meters.errors import ChecksumError, MeterTimeoutError, PortUnavailableError
from meters.iec62056_21 import encode_7e1
from meters.p1 import P1Config, P1Driver
from meters.reading import Reading

TELEGRAMS = Path("/work/shared/testdata/telegrams")


class Pusher:
    """The meter side of a P1 port: writes telegram bytes into the pty master."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def push(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        os.close(self.master)
        os.close(self.slave)


async def read_after_push(driver: P1Driver, pusher: Pusher, data: bytes) -> asyncio.Task[Reading]:
    """Start a read, wait until the port is open (opening flushes the input), then push."""
    task = asyncio.create_task(driver.read())
    async with asyncio.timeout(5):
        while not driver.link.is_open:  # noqa: ASYNC110 - the driver has no "opened" event
            await asyncio.sleep(0.01)
    pusher.push(data)
    return task


async def read_until_not_timeout(driver: P1Driver) -> Reading:
    """Read until something other than a timeout happens (the pump reports a lost port)."""
    while True:
        try:
            return await driver.read()
        except MeterTimeoutError:
            continue


@pytest.fixture
async def pusher() -> AsyncIterator[Pusher]:
    p = Pusher()
    yield p
    for fd in (p.master, p.slave):
        with contextlib.suppress(OSError):  # already closed by unplug()
            os.close(fd)


async def test_pushed_telegrams_become_readings(pusher: Pusher) -> None:
    """A DSMR 5 telegram is read; a corrupted one is a CRC error; split telegrams reassemble."""
    driver = P1Driver(P1Config(port=pusher.path, telegram_timeout_s=2.0))
    try:
        first = await (
            await read_after_push(
                driver, pusher, TELEGRAMS.joinpath("telegram_v5.txt").read_bytes()
            )
        )
        assert (first.meter_id, first.import_wh, first.export_wh) == (
            "K8EG004046395507",
            6825,
            2444,
        )
        bad = (TELEGRAMS / "telegram_v5.txt").read_bytes().replace(b"000004.426", b"000004.999")
        pusher.push(bad)
        with pytest.raises(ChecksumError):
            await driver.read()
        fluvius = (TELEGRAMS / "telegram_fluvius_v171.txt").read_bytes()
        pusher.push(b"line noise" + fluvius[:300])
        await asyncio.sleep(0.05)
        pusher.push(fluvius[300:])
        reading = await driver.read()
        assert (reading.import_wh, reading.export_wh) == (15_792, 11)
        assert driver.telegrams == 2
        assert driver.rejected == 1
    finally:
        await driver.close()


async def test_newest_telegram_wins(pusher: Pusher) -> None:
    """Several telegrams buffered between polls: the read returns the newest one."""
    driver = P1Driver(P1Config(port=pusher.path, telegram_timeout_s=2.0))
    try:
        await (
            await read_after_push(
                driver, pusher, TELEGRAMS.joinpath("telegram_v5.txt").read_bytes()
            )
        )
        pusher.push((TELEGRAMS / "telegram_v4_2.txt").read_bytes())
        pusher.push((TELEGRAMS / "telegram_v5_two_mbus.txt").read_bytes())
        await asyncio.sleep(0.2)
        assert (await driver.read()).import_wh == 2_375_582
    finally:
        await driver.close()


async def test_dsmr22_at_9600_7e1(pusher: Pusher) -> None:
    """A DSMR 2.2 meter's 7E1 characters (parity in bit 7 through this pty) parse."""
    driver = P1Driver(P1Config(port=pusher.path, baudrate=9600, meter_id="cabinet-7"))
    try:
        telegram = encode_7e1((TELEGRAMS / "telegram_v2_2.txt").read_bytes())
        reading = await (await read_after_push(driver, pusher, telegram))
    finally:
        await driver.close()
    assert (reading.meter_id, reading.import_wh, reading.export_wh) == ("cabinet-7", 2002, 2002)


async def test_silence_then_unplug(pusher: Pusher) -> None:
    """No telegram: timeout error; port gone: PortUnavailableError, never a hang."""
    driver = P1Driver(P1Config(port=pusher.path, telegram_timeout_s=0.3))
    try:
        with pytest.raises(MeterTimeoutError, match="P1 telegram"):
            await driver.read()
        pusher.unplug()
        async with asyncio.timeout(5):
            with pytest.raises(PortUnavailableError):
                await read_until_not_timeout(driver)
    finally:
        await driver.close()
