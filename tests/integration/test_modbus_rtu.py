"""The Modbus RTU driver over a real serial line: two ptys wired back to back (null modem)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from meters.devices.modbus_server import ModbusMeterServer, PtyNullModem
from meters.modbus import ModbusMeter, SerialTarget
from meters.modbus_maps import BUILTIN_MAPS
from meters.sim.clock import ManualClock
from meters.sim.community import default_table
from meters.sim.meter import MeterSpec, SimulatedMeter

SPEC = MeterSpec("rtu-1", 3800, pv_wp=7500, seed=8, initial_import_wh=2_500_001)


@pytest.fixture
async def link() -> AsyncIterator[PtyNullModem]:
    modem = PtyNullModem()
    modem.start()
    yield modem
    modem.close()


@pytest.mark.parametrize("name", ["sdm630", "em24"])
async def test_rtu_poll_reads_the_simulator_with_crc_framing(name: str, link: PtyNullModem) -> None:
    """An RTU poll over the pty returns the simulated registers; one 8-byte request per poll."""
    clock = ManualClock(datetime(2026, 6, 15, 11, tzinfo=UTC))
    sim = SimulatedMeter(SPEC, default_table(), clock)
    server = ModbusMeterServer(sim, BUILTIN_MAPS[name], clock)
    await server.start_serial(link.device_port)
    driver = ModbusMeter(SerialTarget(link.host_port, 9600), BUILTIN_MAPS[name],
                         meter_id="rtu-1", timeout_s=2.0)  # fmt: skip
    try:
        got = await driver.read()
        truth = sim.read_at(clock.now())
        resolution = 100 if name == "em24" else 1
        assert got.import_wh == truth.import_wh // resolution * resolution
        assert got.power_w == truth.power_w
        before = (link.to_device_bytes, link.to_host_bytes)
        await driver.read()
        registers = 24 if name == "sdm630" else 40
        # request: id, fc, addr(2), count(2), crc(2); answer: id, fc, n, data, crc(2)
        assert (link.to_device_bytes - before[0], link.to_host_bytes - before[1]) == (
            8, 5 + 2 * registers)  # fmt: skip
    finally:
        await driver.close()
        await server.stop()
