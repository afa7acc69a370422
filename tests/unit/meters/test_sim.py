"""The simulated meter: determinism, energy bookkeeping, PV and battery plausibility, clocks."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from meters.reading import Reading
from meters.sim.clock import AcceleratedClock, ManualClock, SystemClock
from meters.sim.community import KINDERGARTEN_ID, PV_HOUSES_WP, default_table, pilot_community
from meters.sim.meter import STEP_MS, MeterSpec, SimError, SimState, SimulatedMeter
from meters.sim.table import ProfileTable, TableError

JUNE = datetime(2026, 6, 15, tzinfo=UTC)
JAN = datetime(2026, 1, 12, tzinfo=UTC)
PV_HOUSE = MeterSpec("pv1", annual_kwh=4500, pv_wp=8500, seed=11, initial_import_wh=123_456)
PLAIN_HOUSE = MeterSpec("h1", annual_kwh=3500, seed=12)


def meter(spec: MeterSpec, t: datetime = JUNE) -> SimulatedMeter:
    return SimulatedMeter(spec, default_table(), ManualClock(t))


def readings(m: SimulatedMeter, start: datetime, step_s: int, count: int) -> list[Reading]:
    return [m.read_at(start + timedelta(seconds=i * step_s)) for i in range(count)]


def test_same_seed_same_readings_and_another_seed_differs() -> None:
    """Two meters with one seed read at the same instants give identical readings."""
    a = readings(meter(PV_HOUSE), JUNE, 5, 2000)
    b = readings(meter(PV_HOUSE), JUNE, 5, 2000)
    c = readings(meter(MeterSpec("pv1", 4500, pv_wp=8500, seed=99, initial_import_wh=123_456)),
                 JUNE, 5, 2000)  # fmt: skip
    assert a == b
    assert a != c


def test_registers_do_not_depend_on_how_often_the_meter_is_read() -> None:
    """Registers at a time are the same whether read every 5 s, every 7 min or only once."""
    often = meter(PV_HOUSE)
    readings(often, JUNE, 5, 12 * 60 * 6)  # six hours of 5-s reads
    rare = meter(PV_HOUSE)
    readings(rare, JUNE, 420, 52)
    once = meter(PV_HOUSE)
    once.read_at(JUNE)
    end = JUNE + timedelta(hours=6)
    assert often.read_at(end) == rare.read_at(end) == once.read_at(end)


def test_registers_are_monotonic_and_start_at_the_spec_values() -> None:
    """Cumulative import/export never decrease; the first read shows the initial registers."""
    rs = readings(meter(PV_HOUSE), JUNE, 60, 2 * 1440)
    assert (rs[0].import_wh, rs[0].export_wh) == (123_456, 0)
    assert all(b.import_wh >= a.import_wh and b.export_wh >= a.export_wh
               for a, b in itertools.pairwise(rs))  # fmt: skip
    assert rs[-1].import_wh > rs[0].import_wh


def test_energy_balance_is_exact_in_millijoules() -> None:
    """import − export equals Σ grid power × step duration, to the mJ."""
    m = meter(MeterSpec("kg", 18000, "g1", pv_wp=27000, battery_wh=60000, battery_w=20000,
                        seed=5))  # fmt: skip
    m.read_at(JUNE)
    total = 0
    for i in range(1, 24 * 60):
        state = m.state
        assert state is not None
        grid = state.grid_w
        m.read_at(JUNE + timedelta(minutes=i))
        total += grid * STEP_MS
    state = m.state
    assert state is not None
    assert state.import_mj - state.export_mj == total


def test_pv_house_exports_around_noon_in_summer_and_never_at_night() -> None:
    """A June week: export grows every day 10–12 UTC and never between 21 and 03 UTC."""
    m = meter(PV_HOUSE)
    for day in range(7):
        d = JUNE + timedelta(days=day)
        night = [m.read_at(d + timedelta(hours=h)) for h in (-3, 3)]
        assert night[1].export_wh == night[0].export_wh
        noon = [m.read_at(d + timedelta(hours=h)) for h in (10, 12)]
        assert noon[1].export_wh - noon[0].export_wh > 500


def test_house_without_pv_never_exports_and_matches_its_annual_demand() -> None:
    """No PV, no export; a year of H0 playback lands within 5 % of the annual demand."""
    m = meter(PLAIN_HOUSE, JAN)
    start = m.read_at(JAN)
    end = m.read_at(JAN + timedelta(days=364))
    assert end.export_wh == 0
    assert abs((end.import_wh - start.import_wh) - 3_500_000) < 175_000


@pytest.mark.parametrize("start", [JUNE, JAN])
def test_battery_stays_within_capacity_and_cycles(start: datetime) -> None:
    """The kindergarten battery never goes below 0 or above 60 kWh, and it is used."""
    spec = next(s for s in pilot_community(3) if s.meter_id == KINDERGARTEN_ID)
    m = meter(spec, start)
    cap = spec.battery_wh * 3_600_000
    socs = []
    for minute in range(0, 4 * 1440, 5):
        m.read_at(start + timedelta(minutes=minute))
        state = m.state
        assert state is not None
        socs.append(state.soc_mj)
    assert min(socs) >= 0
    assert max(socs) <= cap
    assert max(socs) - min(socs) > cap // 10


def test_pilot_community_has_the_published_shape() -> None:
    """18 houses, four with PV totalling 37 kWp, a kindergarten with 27 kWp and 60 kWh."""
    specs = pilot_community(1)
    houses = [s for s in specs if s.meter_id != KINDERGARTEN_ID]
    assert len(houses) == 18
    assert sorted(s.pv_wp for s in houses if s.pv_wp) == sorted(PV_HOUSES_WP)
    assert sum(PV_HOUSES_WP) == 37_000
    kg = specs[-1]
    assert (kg.meter_id, kg.pv_wp, kg.battery_wh, kg.load_profile) == ("lic-kg", 27000, 60000, "g1")
    assert pilot_community(1) == specs
    assert pilot_community(2) != specs
    assert len({s.meter_id for s in specs}) == 19


def test_checkpointed_state_resumes_identically() -> None:
    """A meter restored from SimState.to_dict continues exactly like one never stopped."""
    a = meter(PV_HOUSE)
    a.read_at(JUNE + timedelta(hours=5, seconds=17))
    assert a.state is not None
    b = SimulatedMeter(PV_HOUSE, default_table(), ManualClock(JUNE),
                       SimState.from_dict(a.state.to_dict()))  # fmt: skip
    later = JUNE + timedelta(hours=9, seconds=3)
    assert a.read_at(later) == b.read_at(later)
    with pytest.raises(SimError, match="grid_w"):
        SimState.from_dict({**a.state.to_dict(), "grid_w": 1.5})


def test_reading_in_the_past_does_not_rewind() -> None:
    """A clock stepping back leaves the registers where they were."""
    m = meter(PV_HOUSE)
    late = m.read_at(JUNE + timedelta(hours=13))
    assert m.read_at(JUNE + timedelta(hours=12)) == late


async def test_read_follows_the_injected_clock() -> None:
    """read() uses the clock it was given (MeterDriver port)."""
    clock = ManualClock(JUNE)
    m = SimulatedMeter(PV_HOUSE, default_table(), clock)
    first = await m.read()
    clock.advance(3600)
    second = await m.read()
    assert second.meter_time == JUNE + timedelta(hours=1)
    assert first.meter_time == JUNE
    assert second.import_wh > first.import_wh
    await m.close()


def test_spec_errors_name_the_field() -> None:
    """A bad spec is refused with the field named."""
    with pytest.raises(SimError, match="load_profile"):
        meter(MeterSpec("x", 1000, load_profile="zz"))
    with pytest.raises(SimError, match="pv_wp"):
        meter(MeterSpec("x", 1000, pv_wp=-1))


def test_accelerated_clock_scales_monotonic_time() -> None:
    """sim_time = t0 + speed · (monotonic − m0)."""
    ticks = iter([100.0, 102.5, 103.0])
    clock = AcceleratedClock(JUNE, speed=60, monotonic=lambda: next(ticks))
    assert clock.now() == JUNE + timedelta(seconds=150)
    assert clock.monotonic() == 180.0  # the same scale, for the integrator's step check
    manual = ManualClock(JUNE)
    manual.advance(5)
    manual.set(JUNE + timedelta(hours=1))  # a wall-clock step is not monotonic time
    assert manual.monotonic() == 5.0
    with pytest.raises(ValueError, match="speed"):
        AcceleratedClock(JUNE, speed=0)
    assert SystemClock().now().tzinfo is not None


def test_table_round_trip_and_corruption() -> None:
    """A table survives encode/decode; a damaged file is refused naming the problem."""
    table = default_table()
    again = ProfileTable.decode(table.encode())
    assert again.pv == table.pv
    assert again.load == table.load
    with pytest.raises(TableError, match="not a profile table"):
        ProfileTable.decode(b"garbage")


def test_shipped_table_is_reproducible_from_demandlib_and_pvlib() -> None:
    """meters/sim/profiles.py regenerates the shipped table (so its origin is checkable)."""
    from meters.sim.profiles import build_table

    built = build_table()
    shipped = default_table()
    assert built.load == shipped.load
    assert max(abs(a - b) for a, b in zip(built.pv, shipped.pv, strict=True)) <= 1
    assert 1400 < sum(shipped.pv) / 4 / 1e6 < 1800  # clear-sky kWh per kWp and year


def test_runtime_path_imports_no_pandas_numpy_pvlib_demandlib() -> None:
    """Importing and running the sim meter loads none of the heavy profile libraries."""
    code = (
        "import sys, asyncio\n"
        "from meters.sim.community import pilot_community, default_table\n"
        "from meters.sim.meter import SimulatedMeter\n"
        "from meters.sim.clock import SystemClock\n"
        "m = SimulatedMeter(pilot_community(1)[0], default_table(), SystemClock())\n"
        "asyncio.run(m.read())\n"
        "print(sorted(n for n in ('pandas','numpy','pvlib','demandlib') if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
