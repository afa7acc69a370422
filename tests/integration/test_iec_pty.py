"""The IEC 62056-21 driver against the simulated meter on a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meters.devices.iec_endpoint import (
    IecEndpoint,
    ReadingRegisters,
    StaticRegisters,
    reading_registers,
)
from meters.errors import (
    ChecksumError,
    MeterIdMismatchError,
    MeterTimeoutError,
    PortUnavailableError,
    ProtocolError,
    RegisterError,
)
from meters.iec_driver import IecConfig, IecDriver
from meters.reading import Reading
from meters.serial_link import Backoff, LineSettings, SerialLink

METER = Reading("12345678", 1_234_567, 89_012, -1250)
FAST = {"switch_delay_s": 0.01, "ident_timeout_s": 0.5, "block_timeout_s": 0.3}


@pytest.fixture
async def endpoints(tmp_path: Path) -> AsyncIterator[list[IecEndpoint]]:
    started: list[IecEndpoint] = []
    yield started
    for endpoint in started:
        await endpoint.close()


async def serve(started: list[IecEndpoint], link: Path | None = None, **options: object) -> str:
    registers = StaticRegisters(reading_registers(METER))
    endpoint = IecEndpoint(registers, link_path=str(link) if link else None, **options)
    started.append(endpoint)
    return await endpoint.start()


async def read_once(config: IecConfig) -> tuple[Reading, IecDriver]:
    driver = IecDriver(config)
    try:
        return await driver.read(), driver
    finally:
        await driver.close()


async def test_sign_on_baud_switch_and_r2_reads(endpoints: list[IecEndpoint]) -> None:
    """Sign-on, option select for programming at 9600 (5), R2 of id + 4 registers, exact Wh."""
    port = await serve(endpoints)
    driver = IecDriver(IecConfig(port=port, **FAST))
    try:
        first = await driver.read()
        second = await driver.read()
        serial = driver.link._writer.transport.serial
        assert serial.baudrate == 9600  # the driver switched its UART after the ACK
    finally:
        await driver.close()
    assert first == second == METER
    counters = endpoints[0].counters
    assert counters.ack_options == [("0", "5", "1")]
    assert counters.sign_ons == 1  # the session is kept across cycles
    assert counters.r2_requests == 1 + 4 + 4
    assert driver.identification is not None
    assert driver.identification.manufacturer == "LEM"
    assert driver.link.parity_mode in ("hardware", "software")


async def test_session_closed_each_cycle_when_configured(endpoints: list[IecEndpoint]) -> None:
    """keep_session=False sends B0 after each cycle, so every cycle signs on again."""
    port = await serve(endpoints)
    driver = IecDriver(IecConfig(port=port, keep_session=False, **FAST))
    try:
        assert await driver.read() == METER
        assert await driver.read() == METER
    finally:
        await driver.close()
    assert endpoints[0].counters.sign_ons == 2


async def test_readout_mode_with_partial_blocks(endpoints: list[IecEndpoint]) -> None:
    """Option 0 readout sent 3 bytes at a time is reassembled and its BCC checked."""
    port = await serve(endpoints, chunk_size=3, baud_char="4")
    reading, _ = await read_once(IecConfig(port=port, mode="readout", **FAST))
    assert reading == METER
    assert endpoints[0].counters.ack_options == [("0", "4", "0")]


async def test_corrupted_bcc_is_naked_and_retried(endpoints: list[IecEndpoint]) -> None:
    """One answer with a bad BCC: the driver NAKs, the meter repeats, the read succeeds."""
    port = await serve(endpoints, corrupt_bcc=1)
    reading, driver = await read_once(IecConfig(port=port, **FAST))
    assert reading == METER
    assert driver.stats.naks_sent == 1
    assert endpoints[0].counters.naks_received == 1


async def test_persistent_bad_bcc_is_an_error_not_energy(endpoints: list[IecEndpoint]) -> None:
    """More corrupted answers than retries: ChecksumError after a bounded number of NAKs."""
    port = await serve(endpoints, corrupt_bcc=100)
    driver = IecDriver(IecConfig(port=port, retries=2, **FAST))
    with pytest.raises(ChecksumError, match="BCC"):
        await driver.read()
    await driver.close()
    assert driver.stats.naks_sent == 3


async def test_silent_meter_times_out(endpoints: list[IecEndpoint]) -> None:
    """A meter that never answers gives a timeout error naming the step, not a hang."""
    port = await serve(endpoints, silent=True)
    driver = IecDriver(IecConfig(port=port, **FAST))
    async with asyncio.timeout(10):  # guard only: the driver's own step timeout fires first
        with pytest.raises(MeterTimeoutError, match="identification"):
            await driver.read()
    await driver.close()


async def test_battery_meter_needs_the_wakeup(endpoints: list[IecEndpoint]) -> None:
    """A sleeping meter ignores a plain sign-on and answers after a burst of NULs."""
    port = await serve(endpoints, require_wakeup=True)
    with pytest.raises(MeterTimeoutError):
        await read_once(IecConfig(port=port, **FAST))
    config = IecConfig(port=port, wakeup_nul_count=40, wakeup_pause_s=0.05, **FAST)
    reading, _ = await read_once(config)
    assert reading == METER
    assert endpoints[0].counters.wakeup_nuls == 40


async def test_password_prompt(endpoints: list[IecEndpoint]) -> None:
    """P0 prompt answered with P1: right password reads, wrong one is a protocol error."""
    port = await serve(endpoints, password="secret")
    reading, _ = await read_once(IecConfig(port=port, password="secret", **FAST))
    assert reading == METER
    with pytest.raises(ProtocolError, match="password"):
        await read_once(IecConfig(port=port, password="guess", **FAST))


async def test_unknown_register_and_wrong_meter(endpoints: list[IecEndpoint]) -> None:
    """(ERROR) to an R2 read is a RegisterError; another meter id is a mismatch error."""
    port = await serve(endpoints)
    with pytest.raises(RegisterError, match=r"R2 9\.9\.9"):
        await read_once(IecConfig(port=port, registers=("1.8.0", "9.9.9"), **FAST))
    with pytest.raises(MeterIdMismatchError):
        await read_once(IecConfig(port=port, meter_id="87654321", **FAST))


async def test_port_is_opened_exclusively(endpoints: list[IecEndpoint]) -> None:
    """While the driver holds the probe, a second opener is refused."""
    port = await serve(endpoints)
    driver = IecDriver(IecConfig(port=port, **FAST))
    await driver.read()
    other = SerialLink(port, LineSettings(300))
    with pytest.raises(PortUnavailableError, match="cannot open"):
        await other.open()
    await driver.close()


async def test_unplugged_mid_read_then_reconnect(
    endpoints: list[IecEndpoint], tmp_path: Path
) -> None:
    """Probe vanishes during R2: clear error; reopen attempts back off; new probe at the same
    by-id path is picked up."""
    link = tmp_path / "usb-optical-probe-if00"
    await serve(endpoints, link, vanish_after_r2=3)
    backoff = Backoff(0.05, 0.4, rng=random.Random(7))
    config = IecConfig(port=str(link), **FAST)
    driver = IecDriver(config, link=SerialLink(str(link), LineSettings(300), backoff=backoff))
    with pytest.raises(PortUnavailableError):
        await driver.read()
    assert not link.exists()  # the by-id symlink went with the device
    delays = []
    for _ in range(4):
        with pytest.raises(PortUnavailableError) as err:
            await driver.read()
        delays.append(err.value.retry_in_s)
        await asyncio.sleep(err.value.retry_in_s)
    failures = [d for d in delays if d > 0]
    assert failures == sorted(failures)
    assert len(failures) >= 3
    await serve(endpoints, link)
    await asyncio.sleep(backoff.max_s)
    assert await driver.read() == METER
    assert driver.link.opens == 2
    await driver.close()


class CountingMeter:
    """A driver-like source whose registers grow by 10 Wh per read."""

    def __init__(self) -> None:
        self.n = 0

    async def read(self) -> Reading:
        self.n += 1
        return Reading("sim-1", 1000 + 10 * self.n, 5 * self.n, 400, datetime.now(UTC))


async def test_any_driver_served_as_a_device() -> None:
    """An object with async read() is served through the endpoint; values arrive exactly."""
    endpoint = IecEndpoint(ReadingRegisters(CountingMeter()))
    port = await endpoint.start()
    driver = IecDriver(IecConfig(port=port, **FAST))
    try:
        first = await driver.read()
        second = await driver.read()
    finally:
        await driver.close()
        await endpoint.close()
    assert first.meter_id == "sim-1"
    assert first.power_w == 400
    assert second.import_wh > first.import_wh
    assert second.export_wh > first.export_wh


async def test_kept_session_ended_by_meter_signs_on_again(endpoints: list[IecEndpoint]) -> None:
    """The meter drops programming mode after inactivity: one timeout, then a fresh sign-on."""
    port = await serve(endpoints, inactivity_timeout_s=0.2)
    driver = IecDriver(IecConfig(port=port, **FAST))
    try:
        assert await driver.read() == METER
        await asyncio.sleep(0.4)
        assert await driver.read() == METER
    finally:
        await driver.close()
    assert endpoints[0].counters.sign_ons == 2
    assert driver.stats.timeouts == 1  # only the probe R2, not the whole retry budget


async def test_half_duplex_probe_echo_is_skipped(endpoints: list[IecEndpoint]) -> None:
    """A probe that echoes our bytes: the echo is detected at sign-on and dropped after."""
    port = await serve(endpoints, echo=True)
    reading, driver = await read_once(IecConfig(port=port, **FAST))
    assert reading == METER
    assert driver.link.echo
    assert driver.stats.naks_sent == 0


async def test_simulated_meter_served_over_iec() -> None:
    """The simulated household meter served on the pty reads back exactly, cycle after cycle."""
    from meters.sim.clock import ManualClock
    from meters.sim.community import default_table
    from meters.sim.meter import MeterSpec, SimulatedMeter

    clock = ManualClock(datetime(2026, 6, 15, 10, tzinfo=UTC))
    spec = MeterSpec("lic-h07", 4500, pv_wp=8500, seed=4, initial_import_wh=1_234_567)
    sim = SimulatedMeter(spec, default_table(), clock)
    endpoint = IecEndpoint(ReadingRegisters(sim))
    driver = IecDriver(IecConfig(port=await endpoint.start(), **FAST))
    try:
        for _ in range(3):
            reading = await driver.read()
            expected = sim.read_at(clock.now())
            assert (reading.meter_id, reading.import_wh, reading.export_wh, reading.power_w) == (
                expected.meter_id,
                expected.import_wh,
                expected.export_wh,
                expected.power_w,
            )
            clock.advance(300)
    finally:
        await driver.close()
        await endpoint.close()
    assert reading.export_wh > 0  # noon in June with 8.5 kWp: the meter exports
