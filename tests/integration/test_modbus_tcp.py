"""The Modbus driver against a real pymodbus TCP server serving the simulated meter."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meters.devices.modbus_server import ModbusMeterServer
from meters.errors import MeterTimeoutError
from meters.integrator import Integrator, Quality
from meters.modbus import (
    ModbusExceptionError,
    ModbusMeter,
    ModbusUnavailableError,
    SunSpecError,
    TcpTarget,
)
from meters.modbus_maps import BUILTIN_MAPS, Field, RegisterMap, load_map_toml, register_map
from meters.reading import Reading
from meters.sim.clock import ManualClock
from meters.sim.community import default_table, pilot_community
from meters.sim.meter import MeterSpec, SimulatedMeter

NOON = datetime(2026, 6, 15, 10, tzinfo=UTC)
SPEC = MeterSpec("sim-1", 4500, pv_wp=8500, seed=4, initial_import_wh=1_234_567,
                 initial_export_wh=345_678)  # fmt: skip
CUSTOM_MAP = Path(__file__).with_name("custom_meter_map.toml")
REPO = Path(__file__).resolve().parents[2]


class Rig:
    """A simulated meter, its Modbus TCP server and a driver pointed at it."""

    def __init__(self, rmap: RegisterMap, **server_kw: int) -> None:
        self.clock = ManualClock(NOON)
        self.sim = SimulatedMeter(SPEC, default_table(), self.clock)
        self.server = ModbusMeterServer(self.sim, rmap, self.clock, **server_kw)
        self.map = rmap

    async def start(self, **driver_kw: object) -> ModbusMeter:
        port = await self.server.start()
        kw: dict[str, object] = {"timeout_s": 1.0, "backoff_initial_s": 0.02,
                                 "rng": random.Random(1), **driver_kw}  # fmt: skip
        return ModbusMeter(TcpTarget("127.0.0.1", port), self.map, meter_id="sim-1", **kw)  # type: ignore[arg-type]

    def truth(self) -> Reading:
        return self.sim.read_at(self.clock.now())


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        await rig.server.stop()


@pytest.mark.parametrize("name", ["sdm630", "sdm120", "sunspec", "custom"])
async def test_driver_reads_exactly_what_the_simulator_holds(name: str, rigs: list[Rig]) -> None:
    """SDM630, SDM120, SunSpec 203 and a TOML map read back the simulator's Wh and W exactly."""
    rmap = register_map(str(CUSTOM_MAP)) if name == "custom" else BUILTIN_MAPS[name]
    rig = Rig(rmap)
    rigs.append(rig)
    driver = await rig.start()
    for _ in range(3):
        got = await driver.read()
        truth = rig.truth()
        assert (got.import_wh, got.export_wh, got.power_w) == (
            truth.import_wh, truth.export_wh, truth.power_w)  # fmt: skip
        rig.clock.advance(5)
    assert got.export_wh > SPEC.initial_export_wh  # a PV house exports at summer noon
    await driver.close()


async def test_em24_reads_the_simulator_at_its_100_wh_resolution(rigs: list[Rig]) -> None:
    """EM24 registers hold kWh·10: the driver sees the simulator's energy truncated to 100 Wh."""
    rig = Rig(BUILTIN_MAPS["em24"])
    rigs.append(rig)
    driver = await rig.start()
    got, truth = await driver.read(), rig.truth()
    assert got.import_wh == truth.import_wh // 100 * 100
    assert got.export_wh == truth.export_wh // 100 * 100
    assert got.power_w == truth.power_w
    await driver.close()


async def test_sunspec_scale_factors_served_and_applied(rigs: list[Rig]) -> None:
    """With TotWh_SF=1 and W_SF=1 the driver applies 10^SF: 10 Wh / 10 W resolution."""
    rig = Rig(BUILTIN_MAPS["sunspec"], sunspec_wh_sf=1, sunspec_w_sf=1)
    rigs.append(rig)
    driver = await rig.start()
    got, truth = await driver.read(), rig.truth()
    assert got.import_wh == truth.import_wh // 10 * 10
    assert truth.power_w is not None
    assert abs((got.power_w or 0) - truth.power_w) <= 5
    await driver.close()


async def test_one_request_per_poll_and_bytes_on_the_wire(rigs: list[Rig]) -> None:
    """An SDM630 poll is one 12-byte request and one 57-byte answer (24 registers)."""
    rig = Rig(BUILTIN_MAPS["sdm630"])
    rigs.append(rig)
    driver = await rig.start()
    await driver.read()
    rx, tx, n = rig.server.rx_bytes, rig.server.tx_bytes, rig.server.requests
    await driver.read()
    assert (rig.server.requests - n, rig.server.rx_bytes - rx, rig.server.tx_bytes - tx) == (
        1, 12, 9 + 2 * 24)  # fmt: skip
    await driver.close()


async def test_server_disappears_then_returns(rigs: list[Rig]) -> None:
    """A vanished meter gives a clear ModbusUnavailableError; after the backoff it reconnects."""
    now = [1000.0]
    rig = Rig(BUILTIN_MAPS["sdm630"])
    rigs.append(rig)
    driver = await rig.start(monotonic=lambda: now[0], backoff_initial_s=10.0)
    await driver.read()
    await rig.server.stop()
    with pytest.raises(ModbusUnavailableError, match=r"tcp://127\.0\.0\.1:\d+.*closed") as err:
        await driver.read()
    assert 5.0 <= err.value.retry_in_s <= 10.0  # full jitter over [0.5, 1] × 10 s
    await rig.server.start()  # the meter is back on the same port ...
    now[0] += 4.0
    with pytest.raises(ModbusUnavailableError, match="next attempt in") as err:
        await driver.read()  # ... but the driver waits out its backoff instead of hammering
    assert err.value.retry_in_s > 0
    now[0] += 7.0
    got = await driver.read()
    assert got.import_wh == rig.truth().import_wh
    await driver.close()


async def test_refused_connection_backs_off_exponentially() -> None:
    """Each failed connect doubles the delay (with jitter) up to the cap."""
    now = [0.0]
    driver = ModbusMeter(TcpTarget("127.0.0.1", 1), BUILTIN_MAPS["sdm630"], meter_id="x",
                         backoff_initial_s=1.0, backoff_max_s=8.0, rng=random.Random(3),
                         monotonic=lambda: now[0])  # fmt: skip
    delays = []
    for _ in range(6):
        with pytest.raises(ModbusUnavailableError, match="connect failed") as err:
            await driver.read()
        delays.append(err.value.retry_in_s)
        now[0] += err.value.retry_in_s
    caps = [1, 2, 4, 8, 8, 8]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))


async def test_silent_device_times_out_with_the_step_named() -> None:
    """A TCP peer that accepts but never answers gives MeterTimeoutError naming the request."""

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    driver = ModbusMeter(TcpTarget("127.0.0.1", port), BUILTIN_MAPS["sdm630"], meter_id="x",
                         timeout_s=0.3)  # fmt: skip
    with pytest.raises(MeterTimeoutError, match=r"read input registers 52\+24"):
        await driver.read()
    await driver.close()
    server.close()


async def test_missing_register_is_a_modbus_exception_naming_it(rigs: list[Rig]) -> None:
    """Reading a map the device does not serve: exception code 2 with the address in the text."""
    rig = Rig(BUILTIN_MAPS["sdm120"])
    rigs.append(rig)
    wrong = RegisterMap("probe", (Field("import_wh", 0x0156, "float32"),
                                  Field("export_wh", 0x0158, "float32")))  # fmt: skip
    driver = await rig.start()
    driver.register_map = wrong
    with pytest.raises(ModbusExceptionError, match=r"input registers 342\.\.345 \(0x0156\)") as e:
        await driver.read()
    assert e.value.code == 2
    await driver.close()


async def test_sunspec_without_marker_is_reported(rigs: list[Rig]) -> None:
    """A SunSpec map against a plain SDM630 finds no 'SunS' marker and says where it looked."""
    rig = Rig(BUILTIN_MAPS["sdm630"])
    rigs.append(rig)
    driver = await rig.start()
    driver.register_map = BUILTIN_MAPS["sunspec"]
    with pytest.raises(SunSpecError, match="no SunSpec marker"):
        await driver.read()
    await driver.close()


async def test_meter_swap_is_counted_and_flagged_by_the_integrator(rigs: list[Rig]) -> None:
    """A register that jumps backwards is reported by the driver and gives RESET, no energy."""
    rig = Rig(BUILTIN_MAPS["sdm630"])
    rigs.append(rig)
    driver = await rig.start()
    integ = Integrator()
    first = await driver.read()
    integ.feed(first, rig.clock.now(), 0.0)
    swapped = MeterSpec("sim-1", 4500, pv_wp=8500, seed=4)  # new meter, registers from 0
    rig.sim = SimulatedMeter(swapped, default_table(), rig.clock)
    rig.server._source = rig.sim  # the device behind the port was replaced
    rig.clock.advance(5)
    second = await driver.read()
    integ.feed(second, rig.clock.now(), 5.0)
    assert second.import_wh < first.import_wh
    assert driver.backward_jumps == 1
    state = integ.state
    assert state is not None
    assert Quality.RESET in state.slot_flags
    assert state.slot_import_wh == 0
    await driver.close()


def test_custom_map_file_is_valid() -> None:
    """The TOML map used above parses (so the end-to-end test exercises a real custom map)."""
    rmap = load_map_toml(CUSTOM_MAP.read_text(), str(CUSTOM_MAP))
    assert {f.function for f in rmap.fields} == {"holding", "input"}


async def test_standalone_device_server_serves_a_pilot_meter() -> None:
    """`python -m meters.devices.modbus_server` serves a pilot meter a real driver can read."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meters.devices.modbus_server", "--meter", "lic-kg",
        "--map", "sunspec", "--port", "0", "--start", "2026-06-21T10:00:00+00:00",
        stdout=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        port = int(line.rsplit(":", 1)[1])
        driver = ModbusMeter(TcpTarget("127.0.0.1", port), BUILTIN_MAPS["sunspec"],
                             meter_id="lic-kg")  # fmt: skip
        got = await driver.read()
        await driver.close()
        kg = pilot_community(1)[-1]
        assert got.import_wh >= kg.initial_import_wh
        assert got.export_wh >= kg.initial_export_wh
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert b"stopped after" in out


class FixedSource:
    """A device whose registers never change (for register values the simulator cannot make)."""

    def __init__(self, reading: Reading) -> None:
        self.reading = reading

    def read_at(self, when: datetime) -> Reading:
        return self.reading


async def test_unimplemented_sunspec_power_leaves_energy_readable() -> None:
    """W = 0x8000 ("not implemented" in SunSpec) gives power None, energy still read."""
    clock = ManualClock(NOON)
    source = FixedSource(Reading("fixed", 1200, 340, power_w=-0x8000))
    server = ModbusMeterServer(source, BUILTIN_MAPS["sunspec"], clock)
    port = await server.start()
    driver = ModbusMeter(TcpTarget("127.0.0.1", port), BUILTIN_MAPS["sunspec"], meter_id="f")
    try:
        got = await driver.read()
    finally:
        await driver.close()
        await server.stop()
    assert (got.import_wh, got.export_wh, got.power_w) == (1200, 340, None)
