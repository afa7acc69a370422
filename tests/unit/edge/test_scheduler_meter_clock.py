"""Period scheduler (due periods, own backlog first, counted once), meter loop, daemon clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.clock import DaemonClock
from edge.config import load_config
from edge.health import Health
from edge.ledger_node import SingleLedger
from edge.meter import CHECKPOINT_KEY, MeterLoop
from edge.metrics import Metrics
from edge.node_factory import open_ledger
from edge.outbox import Outbox, OutboxRecord
from edge.scheduler import STAGGER_STEP_MS, PeriodScheduler
from edge.submitter import TxSigner
from ledger.access import Queries
from meters.errors import MeterTimeoutError
from meters.reading import Reading
from tests.support.lemd import SIM_START, make_node

HOUR_MS = 3_600_000


class StepClock(DaemonClock):
    """A daemon clock set by hand [simulated ms]."""

    def __init__(self, now_ms: int) -> None:
        super().__init__()
        self.ms = now_ms

    def time_s(self) -> float:
        return self.ms / 1000

    def monotonic(self) -> float:
        return self.ms / 1000  # no clock steps in these tests


@pytest.fixture
async def sched(tmp_path: Path) -> AsyncIterator[tuple[PeriodScheduler, SingleLedger, Outbox]]:
    nd = make_node(tmp_path / "n1", speed=1.0, period_hours=6)
    config = load_config(nd.config)
    start_ms = int(SIM_START.timestamp() * 1000)
    clock = StepClock(start_ms)
    node, _, closers = await open_ledger(config, nd.key, clock, Health())
    assert isinstance(node, SingleLedger)
    outbox = Outbox(tmp_path / "outbox")
    signer = TxSigner(nd.key, node, Metrics(), resign_timeout_s=30, monotonic=lambda: 0.0)
    metrics = Metrics()
    s = PeriodScheduler(
        signer, Queries(node.app.store), clock, outbox, grace_s=600, metrics=metrics
    )
    yield s, node, outbox
    outbox.close()
    for close in closers:
        close()


async def test_a_period_is_due_only_after_end_grace_and_stagger(
    sched: tuple[PeriodScheduler, SingleLedger, Outbox],
) -> None:
    """p0 (0–6 h) is due at 6 h + 600 s + this node's stagger, not a millisecond before."""
    s, _, _ = sched
    assert isinstance(s.clock, StepClock)
    due_ms = int(SIM_START.timestamp() * 1000) + 6 * HOUR_MS + 600_000 + s.stagger_ms
    assert 0 <= s.stagger_ms <= 15 * STAGGER_STEP_MS
    s.clock.ms = due_ms - 1
    assert s.due() == []
    s.clock.ms = due_ms
    assert s.due() == ["p0"]


async def test_own_waiting_records_hold_back_their_period(
    sched: tuple[PeriodScheduler, SingleLedger, Outbox],
) -> None:
    """A period with this node's records still in the outbox is not settled yet."""
    s, _, outbox = sched
    assert isinstance(s.clock, StepClock)
    start_s = int(SIM_START.timestamp())
    outbox.put(OutboxRecord("lic-h03", start_s + 3600, 10, 0))
    s.clock.ms = (start_s + 13 * 3600) * 1000 + s.stagger_ms
    assert s.due() == ["p1"]  # p0 waits for its record, p1 (6–12 h) is free
    outbox.mark_committed("lic-h03", start_s + 3600)
    assert s.due() == ["p0", "p1"]


async def test_solve_is_submitted_once_and_counted_when_committed(
    sched: tuple[PeriodScheduler, SingleLedger, Outbox],
) -> None:
    """One SolveMarkets per due period (none while in flight); solved periods are counted once."""
    s, node, _ = sched
    assert isinstance(s.clock, StepClock)
    s.clock.ms = int(SIM_START.timestamp() * 1000) + 7 * HOUR_MS + s.stagger_ms
    assert s.step() == ["p0"]
    assert s.step() == []  # in flight
    await node.node.make_block()
    assert s.queries.periods()["p0"]["solved"]
    s.step()
    s.step()
    assert s.metrics.registry.get_sample_value("lem_periods_solved_total") == 1


class ScriptedMeter:
    """Readings from a list; a MeterTimeoutError where the list holds None."""

    def __init__(self, clock: StepClock, registers: list[int | None]) -> None:
        self.clock = clock
        self.registers = registers

    async def read(self) -> Reading:
        value = self.registers.pop(0)
        if value is None:
            raise MeterTimeoutError("identification", 2.0)
        if value < 0:
            raise OSError(5, "Input/output error")  # a driver bug lets a raw error escape
        return Reading("lic-h03", value, 0, power_w=100)

    async def close(self) -> None:
        return None


async def test_meter_loop_writes_slots_with_checkpoint_and_survives_failures(
    tmp_path: Path,
) -> None:
    """Failed reads are counted and produce nothing; closed slots and the checkpoint land in one
    write; a new loop on the same outbox continues from the checkpoint without losing energy."""
    outbox = Outbox(tmp_path / "outbox")
    start_ms = int(SIM_START.timestamp() * 1000)
    clock = StepClock(start_ms + 60_000)
    meter = ScriptedMeter(clock, [1000, None, -1, 1100, 1300])
    metrics, health = Metrics(), Health()
    loop = MeterLoop(meter, outbox, clock, poll_interval_s=5, health=health, metrics=metrics)
    assert await loop.poll_once() == []  # baseline
    clock.ms += 60_000
    assert await loop.poll_once() == []  # timeout
    assert loop.last_error
    assert await loop.poll_once() == []  # a raw OSError from the driver: counted, not fatal
    assert "Input/output error" in loop.last_error
    clock.ms = start_ms + 900_000 + 60_000
    [first] = await loop.poll_once()  # crosses the 00:15 boundary
    assert first.slot_start_s * 1000 == start_ms
    assert outbox.load_meta(CHECKPOINT_KEY)["last_import_wh"] == 1100
    # A restart: a new loop restores the checkpoint and the next slot holds the rest.
    again = MeterLoop(meter, outbox, clock, poll_interval_s=5, health=health, metrics=metrics)
    clock.ms = start_ms + 1_800_000 + 60_000
    [second] = await again.poll_once()
    # Linear split at the boundaries: 100 Wh over 60–960 s gives 93 before 900 s; 200 Wh over
    # 960–1860 s gives 186 before 1800 s, so slot 2 is 7 + 186 and 14 Wh wait in the open slot.
    assert (first.import_wh, second.import_wh, _open_slot(outbox)) == (93, 193, 14)
    assert outbox.depth() == 2
    assert sum(r.import_wh for r in outbox.pending()) + _open_slot(outbox) == 1300 - 1000
    failures = metrics.registry.get_sample_value(
        "lem_meter_read_failures_total", {"reason": "MeterTimeoutError"}
    )
    assert failures == 1
    assert (
        metrics.registry.get_sample_value("lem_meter_read_failures_total", {"reason": "OSError"})
        == 1
    )
    outbox.close()


def _open_slot(outbox: Outbox) -> int:
    """Energy already assigned to the still open slot (in the checkpoint) [Wh]."""
    return int(outbox.load_meta(CHECKPOINT_KEY)["slot_import_wh"])


def test_daemon_clock_runs_speed_times_faster_from_the_anchor() -> None:
    """sim = start + speed × (wall − anchor); the monotonic scale agrees with the wall scale."""
    wall, mono = [1000.0], [50.0]
    start = datetime(2025, 6, 21, tzinfo=UTC)
    anchor = datetime.fromtimestamp(990.0, tz=UTC)
    clock = DaemonClock(60.0, start, anchor, wall=lambda: wall[0], monotonic=lambda: mono[0])
    assert clock.now() == start + timedelta(seconds=600)  # 10 real s after the anchor
    m0 = clock.monotonic()
    mono[0] += 2.0
    assert clock.now() == start + timedelta(seconds=720)
    assert clock.monotonic() - m0 == pytest.approx(120.0)
    assert clock.now_ms() == int((start + timedelta(seconds=720)).timestamp() * 1000)


def test_real_time_clock_follows_wall_clock_steps() -> None:
    """Without start the clock is the host's wall clock, steps included (NTP after boot)."""
    wall = [1_000.0]
    clock = DaemonClock(wall=lambda: wall[0], monotonic=lambda: 5.0)
    assert clock.time_s() == 1_000.0
    wall[0] = 1_750_000_000.0  # NTP steps a Pi that booted without RTC
    assert clock.now_ms() == 1_750_000_000_000


_ = asyncio


@pytest.mark.parametrize(
    ("driver", "port", "options", "meter_id", "message"),
    [
        (
            "iec",
            "/dev/ttyUSB0",
            {"baud": 9600},
            "",
            "unknown key meter.options.baud for driver iec",
        ),
        ("iec", "/dev/ttyUSB0", {"max_baud": 1234}, "", "meter.options: max_baud 1234"),
        ("p1", "/dev/ttyUSB0", {"speed": 1}, "", "unknown key meter.options.speed for driver p1"),
        ("modbus", "tcp://h:502", {"slave": 1}, "", "unknown key meter.options.slave"),
        ("sim", "", {}, "nobody", "meter.meter_id = 'nobody': not a pilot meter"),
        ("sim", "", {"pv_wp": "big"}, "lic-h01", "meter.options.pv_wp = 'big': must be int"),
    ],
)
def test_driver_options_are_checked_and_named(
    driver: str, port: str, options: dict[str, object], meter_id: str, message: str
) -> None:
    """A wrong driver option stops start-up with the option named (no silent default)."""
    from edge.config import ConfigError, MeterConfig
    from edge.meter import build_driver

    config = MeterConfig(driver=driver, port=port, options=options, meter_id=meter_id)
    with pytest.raises(ConfigError, match=message):
        build_driver(config, DaemonClock())


def test_sim_driver_plays_the_pilot_meter_from_the_config() -> None:
    """driver = "sim" with a pilot id gives that pilot meter (seeded), registers from its spec."""
    from edge.config import MeterConfig
    from edge.meter import build_driver
    from meters.sim.community import pilot_community

    config = MeterConfig(driver="sim", meter_id="lic-kg", options={"community_seed": 7})
    driver = build_driver(config, DaemonClock())
    spec = {s.meter_id: s for s in pilot_community(7)}["lic-kg"]
    assert driver.spec == spec  # type: ignore[attr-defined]
