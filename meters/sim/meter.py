"""Seeded playback of a simulated household / PV / battery meter (docs/spec/simulator.md).

Pure Python on the daemon's runtime path: it imports no pandas, numpy, pvlib or demandlib. The
meter is a sequential simulation in integer steps of ``STEP_MS``:

* at the start of each step it computes the household load (the table's standard profile,
  linearly interpolated between quarter-hour midpoints, scaled to the annual demand, times
  seeded noise), the PV output (the table's clear-sky power scaled to the peak power, times a
  seeded cloud factor) and the battery's dispatch (self-consumption first);
* within the step those powers are constant, so the energy of any sub-interval is an exact
  integer ``power [W] × duration [ms]`` in mJ. Cumulative registers are kept in mJ and shown in
  Wh by floor division: the remainder is carried, nothing is lost, and the registers never
  decrease.

Every random draw is a hash of ``(seed, stream, index)`` rather than a stateful generator, so
the registers at a given time do not depend on when (or how often) the meter was read.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from meters.reading import MeterError, Reading
from meters.sim.clock import Clock
from meters.sim.table import SLOT_S, ProfileTable

__all__ = ["STEP_MS", "MeterSpec", "SimError", "SimState", "SimulatedMeter"]

STEP_MS = 60_000
"""Simulation step [ms]: load, PV and battery power are constant within a step."""

_MJ_PER_WH = 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MASK64 = (1 << 64) - 1
_CLOUD_BLOCK_MS = 300_000  # cloud factor changes every 5 min on mixed days
_STREAM_LOAD, _STREAM_DAY, _STREAM_CLOUD = 1, 2, 3


class SimError(MeterError):
    """The simulated meter was configured or restored with impossible values."""


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """One simulated connection point.

    Attributes:
        meter_id: identification the meter reports.
        annual_kwh: yearly consumption of the load [kWh].
        load_profile: name of the table's standard load profile (``h0`` household, ``g1``
            commercial weekday).
        pv_wp: rooftop PV peak power [Wp]; 0 for none.
        battery_wh: usable battery capacity [Wh]; 0 for none.
        battery_w: battery charge/discharge power limit [W].
        seed: seed of the noise and cloud draws.
        initial_import_wh: import register when the simulation starts [Wh].
        initial_export_wh: export register when the simulation starts [Wh].
        noise_permille: half-width of the uniform load noise per step [‰ of the load].
        battery_efficiency_permille: share of charging power that is stored [‰].
    """

    meter_id: str
    annual_kwh: int
    load_profile: str = "h0"
    pv_wp: int = 0
    battery_wh: int = 0
    battery_w: int = 0
    seed: int = 0
    initial_import_wh: int = 0
    initial_export_wh: int = 0
    noise_permille: int = 350
    battery_efficiency_permille: int = 920

    def check(self, table: ProfileTable) -> None:
        """Raise :class:`SimError` naming the first impossible field."""
        if self.load_profile not in table.load:
            raise SimError(f"{self.meter_id}: load_profile {self.load_profile!r} not in table")
        for name in ("annual_kwh", "pv_wp", "battery_wh", "battery_w", "initial_import_wh",
                     "initial_export_wh"):  # fmt: skip
            if getattr(self, name) < 0:
                raise SimError(f"{self.meter_id}: {name} must not be negative")
        if not 0 <= self.noise_permille <= 1000:
            raise SimError(f"{self.meter_id}: noise_permille must be within 0..1000")
        if not 1 <= self.battery_efficiency_permille <= 1000:
            raise SimError(f"{self.meter_id}: battery_efficiency_permille must be 1..1000")


@dataclass(frozen=True, slots=True)
class SimState:
    """The meter's integrator state; ints only, so the daemon can checkpoint it.

    Attributes:
        t_ms: simulated time reached [ms since the Unix epoch].
        import_mj: energy imported since the start [mJ].
        export_mj: energy exported since the start [mJ].
        soc_mj: battery state of charge [mJ].
        grid_w: grid power of the current step, positive importing [W].
        battery_w: battery power of the current step as stored, positive charging [W].
        load_w: household load of the current step [W].
        pv_w: PV output of the current step [W].
    """

    t_ms: int
    import_mj: int
    export_mj: int
    soc_mj: int
    grid_w: int
    battery_w: int
    load_w: int
    pv_w: int

    def to_dict(self) -> dict[str, int]:
        """The state as a flat map of ints."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SimState:
        """Restore a state written by :meth:`to_dict`."""
        values = {}
        for name in cls.__slots__:
            value = data.get(name)
            if type(value) is not int:
                raise SimError(f"sim state field {name!r} must be an int, got {value!r}")
            values[name] = value
        return cls(**values)


def _mix(seed: int, stream: int, index: int) -> int:
    """A 64-bit hash of (seed, stream, index): splitmix64's finaliser over a combined key."""
    z = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + index) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class SimulatedMeter:
    """A deterministic simulated meter implementing the ``MeterDriver`` port.

    Args:
        spec: what is connected behind the meter.
        table: the profile table to play back.
        clock: the wall clock the meter follows.
        state: a checkpoint from :attr:`state` to continue from; None starts at the first read
            with the spec's initial registers and a half-full battery.
    """

    def __init__(
        self,
        spec: MeterSpec,
        table: ProfileTable,
        clock: Clock,
        state: SimState | None = None,
    ) -> None:
        spec.check(table)
        self.spec = spec
        self._table = table
        self._load = table.load[spec.load_profile]
        self._clock = clock
        self._state = state
        self._capacity_mj = spec.battery_wh * _MJ_PER_WH
        self._day_cache: tuple[int, int, int] = (-1, 0, 0)  # (epoch day, table day, cloud kind)

    @property
    def state(self) -> SimState | None:
        """The checkpoint value (None before the first read)."""
        return self._state

    async def read(self) -> Reading:
        """Advance to the clock's time and return the registers (MeterDriver port)."""
        return self.read_at(self._clock.now())

    async def close(self) -> None:
        """Nothing to release (MeterDriver port)."""

    def read_at(self, when: datetime) -> Reading:
        """Advance to ``when`` (never backwards) and return the registers at that time."""
        state = self.advance_to((when - _EPOCH) // timedelta(milliseconds=1))
        t = _EPOCH + timedelta(milliseconds=state.t_ms)
        return Reading(
            meter_id=self.spec.meter_id,
            import_wh=self.spec.initial_import_wh + state.import_mj // _MJ_PER_WH,
            export_wh=self.spec.initial_export_wh + state.export_mj // _MJ_PER_WH,
            power_w=state.grid_w,
            meter_time=t,
        )

    def advance_to(self, t_ms: int) -> SimState:
        """Integrate up to ``t_ms`` [ms since epoch]; a time in the past leaves the state as is."""
        state = self._state
        if state is None:
            soc = self._capacity_mj // 2
            state = SimState(t_ms, 0, 0, soc, *self._step_powers(t_ms // STEP_MS, soc))
        if state.t_ms >= t_ms:
            self._state = state
            return state
        # Hot loop on plain ints (a dataclass copy per step would triple the cost).
        now, imp, exp, soc = state.t_ms, state.import_mj, state.export_mj, state.soc_mj
        grid, bat, load, pv = state.grid_w, state.battery_w, state.load_w, state.pv_w
        while now < t_ms:
            step_end = (now // STEP_MS + 1) * STEP_MS
            seg_end = min(step_end, t_ms)
            energy = grid * (seg_end - now)
            if energy > 0:
                imp += energy
            else:
                exp -= energy
            soc += bat * (seg_end - now)
            now = seg_end
            if now == step_end:
                grid, bat, load, pv = self._step_powers(now // STEP_MS, soc)
        self._state = SimState(now, imp, exp, soc, grid, bat, load, pv)
        return self._state

    def _step_powers(self, step: int, soc_mj: int) -> tuple[int, int, int, int]:
        """Grid, stored-battery, load and PV power of ``step`` [W], from profiles and charge."""
        t_ms = step * STEP_MS
        load_w = self._load_w(t_ms, step)
        pv_w = self._pv_w(t_ms)
        stored_w, battery_grid_w = self._dispatch(load_w - pv_w, soc_mj)
        return load_w - pv_w + battery_grid_w, stored_w, load_w, pv_w

    def _dispatch(self, net_w: int, soc_mj: int) -> tuple[int, int]:
        """Self-consumption first: charge from surplus, discharge into deficit.

        Returns:
            (stored power [W], power the battery adds to the grid import [W]); the first is
            what changes the charge, the second what the meter sees.
        """
        spec = self.spec
        if not self._capacity_mj or not spec.battery_w:
            return 0, 0
        if net_w < 0:  # surplus: charge, limited by power and by the room left this step
            room_w = (self._capacity_mj - soc_mj) // STEP_MS
            eff = spec.battery_efficiency_permille
            charge_w = min(-net_w, spec.battery_w, room_w * 1000 // eff)
            return charge_w * eff // 1000, charge_w
        discharge_w = min(net_w, spec.battery_w, soc_mj // STEP_MS)
        return -discharge_w, -discharge_w

    def _table_value(self, series: array[int], t_ms: int) -> int:
        """Linear interpolation between quarter-hour midpoints of the reference year."""
        day_index = self._table_day(t_ms)
        ms_of_day = t_ms % 86_400_000
        slot_ms = SLOT_S * 1000
        pos = day_index * 96 * slot_ms + ms_of_day - slot_ms // 2
        n = self._table.slots
        i, frac = divmod(pos, slot_ms)
        a = series[i % n]
        b = series[(i + 1) % n]
        return int(a + (b - a) * frac // slot_ms)

    def _table_day(self, t_ms: int) -> int:
        """Day of the reference year used for ``t_ms``, on the same weekday (±3 days)."""
        epoch_day = t_ms // 86_400_000
        if self._day_cache[0] != epoch_day:
            day = date(1970, 1, 1) + timedelta(days=epoch_day)
            ref_year = self._table.ref_year
            ref = date(ref_year, day.month, min(day.day, 28 if day.month == 2 else 31))
            shift = (day.weekday() - ref.weekday() + 3) % 7 - 3
            index = min(max((ref - date(ref_year, 1, 1)).days + shift, 0), 364)
            kind = _mix(self.spec.seed, _STREAM_DAY, epoch_day) % 100
            self._day_cache = (epoch_day, index, kind)
        return self._day_cache[1]

    def _load_w(self, t_ms: int, step: int) -> int:
        base = self._table_value(self._load, t_ms) * self.spec.annual_kwh // 1_000_000
        width = self.spec.noise_permille
        if not width:
            return base
        noise = _mix(self.spec.seed, _STREAM_LOAD, step) % (2 * width + 1) - width
        return base * (1000 + noise) // 1000

    def _pv_w(self, t_ms: int) -> int:
        if not self.spec.pv_wp:
            return 0
        clear_w = self._table_value(self._table.pv, t_ms) * self.spec.pv_wp // 1_000_000
        return clear_w * self._cloud_permille(t_ms) // 1000

    def _cloud_permille(self, t_ms: int) -> int:
        """Seeded clear-sky index [‰]: each day is clear, mixed or overcast."""
        self._table_day(t_ms)
        kind = self._day_cache[2]
        draw = _mix(self.spec.seed, _STREAM_CLOUD, t_ms // _CLOUD_BLOCK_MS) % 1000
        if kind < 45:  # clear: thin haze only
            return 900 + draw // 10
        if kind < 80:  # mixed: passing clouds, 5-minute blocks
            return 200 + draw * 4 // 5
        return 150 + draw // 5  # overcast
