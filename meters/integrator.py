"""From cumulative meter readings to one record per 15-minute UTC slot (docs/spec/integrator.md).

The integrator is pure: it is fed ``(reading, wall time, monotonic time)`` and returns the slot
records that the reading closed. It never reads a clock, sleeps or touches a disk; its whole
state is a small value object (:class:`IntegratorState`) of ints and strings that the daemon
checkpoints durably and restores after a restart.

Energy rules (all integer Wh):

* The energy of a sample interval is the register difference between two readings. When the
  interval crosses slot boundaries it is split linearly in time, with the cumulative share at
  boundary ``b`` computed as ``floor(ΔE · (b − t_start) / (t_end − t_start))``. The pieces of one
  interval therefore sum exactly to ΔE, and the records of any span between two readings sum
  exactly to the register difference of those readings.
* A register that goes backwards (or a changed meter id) contributes no energy: the interval is
  flagged ``RESET`` and the new value becomes the baseline. Energy is never negative.
* A sample interval longer than ``gap_s`` flags every slot it touches ``GAP``; its energy is
  still spread over the missing slots in proportion to time, so nothing is lost.
* Slot boundaries use UTC wall time; the monotonic clock measures intervals. When the two
  disagree by more than ``clock_tolerance_ms`` the wall clock was stepped: the slots the step
  skipped are closed with zero energy and flagged ``CLOCK_JUMP``; the interval's energy goes to
  the monotonic duration that ends at the new wall time. A backward step freezes the slot cursor
  until wall time catches up (energy goes to the open slot), so no slot is ever reopened.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from meters.reading import MeterError, Reading

__all__ = [
    "SLOT_MS",
    "CheckpointError",
    "Integrator",
    "IntegratorState",
    "Quality",
    "SlotRecord",
    "ms_to_wall",
    "slot_start_ms",
    "wall_to_ms",
]

SLOT_MS = 15 * 60 * 1000
"""Length of a market slot [ms]; slots are aligned to the UTC quarter hour."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHECKPOINT_VERSION = 1


class CheckpointError(MeterError):
    """A stored integrator checkpoint cannot be restored (wrong version, missing or bad field)."""


class Quality(enum.Flag):
    """Quality flags of a slot record (docs/spec/integrator.md §Flags)."""

    NONE = 0
    COMPLETE = enum.auto()
    """No gap, reset, clock step or missing start: the energy is fully measured."""
    INTERPOLATED = enum.auto()
    """At least one boundary share was interpolated between two readings."""
    GAP = enum.auto()
    """A sample interval touching the slot was longer than the gap threshold."""
    RESET = enum.auto()
    """A register went backwards or the meter id changed: that interval counts no energy."""
    CLOCK_JUMP = enum.auto()
    """Wall time and monotonic time disagreed: the wall clock was stepped."""
    PARTIAL = enum.auto()
    """The integrator started inside this slot: energy before the first reading is unknown."""

    def names(self) -> list[str]:
        """The flag names, lower case, in declaration order."""
        return [m.name.lower() for m in Quality if m.name and m in self and m is not Quality.NONE]

    @classmethod
    def from_names(cls, names: str) -> Quality:
        """Parse a comma-separated list of flag names (as written by :meth:`names`)."""
        flags = cls.NONE
        for name in filter(None, names.split(",")):
            try:
                flags |= cls[name.upper()]
            except KeyError:
                raise CheckpointError(f"unknown quality flag {name!r}") from None
        return flags


_PROBLEMS = Quality.GAP | Quality.RESET | Quality.CLOCK_JUMP | Quality.PARTIAL


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """The measured energy of one 15-minute UTC slot.

    Attributes:
        meter_id: the meter the energy was read from.
        slot_start: start of the slot, timezone-aware UTC, aligned to the quarter hour.
        import_wh: energy imported from the grid during the slot [Wh], never negative.
        export_wh: energy exported to the grid during the slot [Wh], never negative.
        readings: number of readings whose wall time fell inside the slot.
        flags: quality flags; ``COMPLETE`` exactly when no problem flag is set.
    """

    meter_id: str
    slot_start: datetime
    import_wh: int
    export_wh: int
    readings: int
    flags: Quality


@dataclass(frozen=True, slots=True)
class IntegratorState:
    """Everything the integrator remembers between readings (the durable checkpoint).

    All times are integers: wall times in ms since the Unix epoch (UTC), monotonic in ms.

    Attributes:
        meter_id: id of the meter of the last reading.
        last_import_wh: import register of the last reading [Wh].
        last_export_wh: export register of the last reading [Wh].
        last_wall_ms: wall time of the last reading as fed (may be behind ``cursor_ms``) [ms].
        last_mono_ms: monotonic time of the last reading, None after a reboot [ms].
        cursor_ms: wall time up to which energy has been assigned; never decreases [ms].
        slot_start_ms: start of the open slot [ms].
        slot_import_wh: import energy assigned to the open slot so far [Wh].
        slot_export_wh: export energy assigned to the open slot so far [Wh].
        slot_readings: readings counted in the open slot.
        slot_flags: quality flags collected for the open slot.
    """

    meter_id: str
    last_import_wh: int
    last_export_wh: int
    last_wall_ms: int
    last_mono_ms: int | None
    cursor_ms: int
    slot_start_ms: int
    slot_import_wh: int
    slot_export_wh: int
    slot_readings: int
    slot_flags: Quality

    def to_dict(self) -> dict[str, int | str]:
        """The checkpoint as a flat map of ints and strings (stable, versioned)."""
        out: dict[str, int | str] = {
            "version": _CHECKPOINT_VERSION,
            "meter_id": self.meter_id,
            "last_import_wh": self.last_import_wh,
            "last_export_wh": self.last_export_wh,
            "last_wall_ms": self.last_wall_ms,
            "cursor_ms": self.cursor_ms,
            "slot_start_ms": self.slot_start_ms,
            "slot_import_wh": self.slot_import_wh,
            "slot_export_wh": self.slot_export_wh,
            "slot_readings": self.slot_readings,
            "slot_flags": ",".join(self.slot_flags.names()),
        }
        if self.last_mono_ms is not None:
            out["last_mono_ms"] = self.last_mono_ms
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> IntegratorState:
        """Restore a checkpoint written by :meth:`to_dict`.

        Raises:
            CheckpointError: wrong version, a missing field or a field of the wrong type.
        """
        if data.get("version") != _CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint version {data.get('version')!r} is not supported")

        def num(key: str) -> int:
            value = data.get(key)
            if type(value) is not int:
                raise CheckpointError(f"checkpoint field {key!r} must be an int, got {value!r}")
            return value

        meter_id, flags = data.get("meter_id"), data.get("slot_flags")
        if not isinstance(meter_id, str) or not isinstance(flags, str):
            raise CheckpointError("checkpoint fields 'meter_id' and 'slot_flags' must be strings")
        state = cls(
            meter_id=meter_id,
            last_import_wh=num("last_import_wh"),
            last_export_wh=num("last_export_wh"),
            last_wall_ms=num("last_wall_ms"),
            last_mono_ms=num("last_mono_ms") if "last_mono_ms" in data else None,
            cursor_ms=num("cursor_ms"),
            slot_start_ms=num("slot_start_ms"),
            slot_import_wh=num("slot_import_wh"),
            slot_export_wh=num("slot_export_wh"),
            slot_readings=num("slot_readings"),
            slot_flags=Quality.from_names(flags),
        )
        if state.slot_start_ms % SLOT_MS or not (
            state.slot_start_ms <= state.cursor_ms <= state.slot_start_ms + SLOT_MS
        ):
            raise CheckpointError("checkpoint cursor is not inside its open slot")
        if min(state.slot_import_wh, state.slot_export_wh, state.slot_readings) < 0:
            raise CheckpointError("checkpoint holds negative slot energy or count")
        return state


def slot_start_ms(wall_ms: int) -> int:
    """Start of the UTC quarter-hour slot that contains ``wall_ms`` [ms since epoch]."""
    return wall_ms - wall_ms % SLOT_MS


def wall_to_ms(wall: datetime) -> int:
    """A timezone-aware datetime as integer ms since the Unix epoch (exact, no float)."""
    if wall.tzinfo is None:
        raise ValueError("wall time must be timezone-aware (UTC)")
    return (wall - _EPOCH) // timedelta(milliseconds=1)


def ms_to_wall(ms: int) -> datetime:
    """Integer ms since the Unix epoch as a UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


@dataclass
class _Interval:
    """One sample interval being assigned to slots (internal working value)."""

    d_import: int
    d_export: int
    start_ms: int
    end_ms: int
    flags: Quality


class Integrator:
    """Turns 5-s cumulative readings into 15-minute slot records (docs/spec/integrator.md).

    Args:
        state: a restored checkpoint, or None to start fresh (the first reading is the baseline).
        gap_s: a sample interval longer than this flags its slots ``GAP`` [s].
        clock_tolerance_ms: allowed disagreement between wall and monotonic deltas [ms]; the
            default absorbs NTP slewing and scheduling jitter, not a step.
    """

    def __init__(
        self,
        state: IntegratorState | None = None,
        *,
        gap_s: int = 60,
        clock_tolerance_ms: int = 2_000,
    ) -> None:
        self._state = state
        self._gap_ms = gap_s * 1000
        self._tolerance_ms = clock_tolerance_ms

    @property
    def state(self) -> IntegratorState | None:
        """The current checkpoint value, None before the first reading."""
        return self._state

    @classmethod
    def from_checkpoint(
        cls, data: Mapping[str, object], *, same_boot: bool = True, **kwargs: int
    ) -> Integrator:
        """Restore from :meth:`IntegratorState.to_dict` output.

        Args:
            data: the stored checkpoint.
            same_boot: False after a reboot, when the monotonic clock restarted: the first
                interval after restoring is then not checked for a clock step.
            **kwargs: ``gap_s`` / ``clock_tolerance_ms`` as for the constructor.
        """
        state = IntegratorState.from_dict(data)
        if not same_boot:
            state = replace(state, last_mono_ms=None)
        return cls(state, **kwargs)

    def feed(self, reading: Reading, wall: datetime, mono_s: float) -> list[SlotRecord]:
        """Account one reading; return the records of the slots it closed (oldest first).

        Args:
            reading: cumulative registers (Wh) as returned by a driver.
            wall: when the reading was taken, timezone-aware UTC wall time.
            mono_s: when the reading was taken, on the monotonic clock [s].
        """
        wall_ms, mono_ms = wall_to_ms(wall), round(mono_s * 1000)
        if self._state is None:
            self._state = self._baseline(reading, wall_ms, mono_ms)
            return []
        state = self._state
        interval = self._interval(state, reading, wall_ms, mono_ms)
        records, state = _assign(state, interval)
        self._state = replace(
            state,
            meter_id=reading.meter_id,
            last_import_wh=reading.import_wh,
            last_export_wh=reading.export_wh,
            last_wall_ms=wall_ms,
            last_mono_ms=mono_ms,
            slot_readings=state.slot_readings + 1,
        )
        return records

    @staticmethod
    def _baseline(reading: Reading, wall_ms: int, mono_ms: int) -> IntegratorState:
        start = slot_start_ms(wall_ms)
        return IntegratorState(
            meter_id=reading.meter_id,
            last_import_wh=reading.import_wh,
            last_export_wh=reading.export_wh,
            last_wall_ms=wall_ms,
            last_mono_ms=mono_ms,
            cursor_ms=wall_ms,
            slot_start_ms=start,
            slot_import_wh=0,
            slot_export_wh=0,
            slot_readings=1,
            slot_flags=Quality.PARTIAL if wall_ms != start else Quality.NONE,
        )

    def _interval(
        self, state: IntegratorState, reading: Reading, wall_ms: int, mono_ms: int
    ) -> _Interval:
        """The energy and time span of the interval since the previous reading."""
        flags = Quality.NONE
        d_import = reading.import_wh - state.last_import_wh
        d_export = reading.export_wh - state.last_export_wh
        if d_import < 0 or d_export < 0 or reading.meter_id != state.meter_id:
            d_import = d_export = 0
            flags |= Quality.RESET
        start_ms = state.cursor_ms
        if state.last_mono_ms is not None:
            d_mono = mono_ms - state.last_mono_ms
            d_wall = wall_ms - state.last_wall_ms
            if abs(d_wall - d_mono) > self._tolerance_ms:
                flags |= Quality.CLOCK_JUMP
                # Trust the new wall time; the interval really lasted d_mono.
                start_ms = max(state.cursor_ms, wall_ms - max(d_mono, 0))
        if wall_ms - start_ms > self._gap_ms:
            flags |= Quality.GAP
        return _Interval(d_import, d_export, start_ms, max(wall_ms, state.cursor_ms), flags)


def _assign(state: IntegratorState, iv: _Interval) -> tuple[list[SlotRecord], IntegratorState]:
    """Distribute one interval over the open slot and any slots it closes."""
    records: list[SlotRecord] = []
    jump = iv.flags & Quality.CLOCK_JUMP
    # A forward clock step leaves [cursor, start) without energy: close those slots empty.
    while state.slot_start_ms + SLOT_MS <= iv.start_ms:
        state = replace(state, slot_flags=state.slot_flags | jump)
        records.append(_record(state))
        state = _open(state, state.slot_start_ms + SLOT_MS, Quality.NONE)
    span = iv.end_ms - iv.start_ms
    given_import = given_export = 0
    while state.slot_start_ms + SLOT_MS <= iv.end_ms:
        boundary = state.slot_start_ms + SLOT_MS
        share_import = iv.d_import * (boundary - iv.start_ms) // span
        share_export = iv.d_export * (boundary - iv.start_ms) // span
        split = Quality.INTERPOLATED if iv.start_ms < boundary < iv.end_ms else Quality.NONE
        state = _add(state, share_import - given_import, share_export - given_export)
        state = replace(state, slot_flags=state.slot_flags | iv.flags | split)
        given_import, given_export = share_import, share_export
        records.append(_record(state))
        state = _open(state, boundary, split)
    state = _add(state, iv.d_import - given_import, iv.d_export - given_export)
    state = replace(state, slot_flags=state.slot_flags | iv.flags, cursor_ms=iv.end_ms)
    return records, state


def _add(state: IntegratorState, import_wh: int, export_wh: int) -> IntegratorState:
    return replace(
        state,
        slot_import_wh=state.slot_import_wh + import_wh,
        slot_export_wh=state.slot_export_wh + export_wh,
    )


def _open(state: IntegratorState, start_ms: int, flags: Quality) -> IntegratorState:
    return replace(
        state,
        slot_start_ms=start_ms,
        slot_import_wh=0,
        slot_export_wh=0,
        slot_readings=0,
        slot_flags=flags,
        cursor_ms=max(state.cursor_ms, start_ms),
    )


def _record(state: IntegratorState) -> SlotRecord:
    flags = state.slot_flags
    if not flags & _PROBLEMS:
        flags |= Quality.COMPLETE
    return SlotRecord(
        meter_id=state.meter_id,
        slot_start=ms_to_wall(state.slot_start_ms),
        import_wh=state.slot_import_wh,
        export_wh=state.slot_export_wh,
        readings=state.slot_readings,
        flags=flags,
    )
