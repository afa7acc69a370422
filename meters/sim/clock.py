"""Injectable clocks for the simulator (docs/spec/simulator.md §Clocks).

The simulated meter never reads the system time itself: it asks a :class:`Clock`. The daemon
passes :class:`SystemClock`; a demo passes :class:`AcceleratedClock` to run a day in minutes;
tests pass :class:`ManualClock` and move time by hand.

Each clock also offers ``monotonic()`` [s] on the same time scale: the slot integrator compares
wall and monotonic deltas to detect clock steps, so under an accelerated clock it must be fed
the accelerated monotonic time, or every interval would look like a clock step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["AcceleratedClock", "Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """A source of timezone-aware UTC wall time."""

    def now(self) -> datetime: ...


class SystemClock:
    """The host's UTC wall clock."""

    def now(self) -> datetime:
        """Current UTC time."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """The host's monotonic clock [s]."""
        return time.monotonic()


class AcceleratedClock:
    """Simulated time running ``speed`` times faster than the monotonic clock.

    ``sim_time = t0 + speed · (monotonic() − m0)``, with ``m0`` taken at construction, so a
    wall-clock step on the host does not disturb the simulation.

    Args:
        t0: simulated time at construction, timezone-aware.
        speed: simulated seconds per real second (1 = real time, 900 = a slot per second).
        monotonic: the monotonic time source [s]; injectable for tests.
    """

    def __init__(
        self, t0: datetime, speed: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if t0.tzinfo is None:
            raise ValueError("t0 must be timezone-aware")
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self._t0 = t0.astimezone(UTC)
        self._speed = speed
        self._monotonic = monotonic
        self._m0 = monotonic()

    def now(self) -> datetime:
        """Current simulated UTC time."""
        return self._t0 + timedelta(seconds=self.monotonic())

    def monotonic(self) -> float:
        """Simulated seconds elapsed since construction: ``speed · (monotonic − m0)`` [s]."""
        return self._speed * (self._monotonic() - self._m0)


class ManualClock:
    """A clock that moves only when told to (tests, deterministic benches).

    Args:
        t: the initial time, timezone-aware.
    """

    def __init__(self, t: datetime) -> None:
        if t.tzinfo is None:
            raise ValueError("t must be timezone-aware")
        self._t = t.astimezone(UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        """The time last set."""
        return self._t

    def monotonic(self) -> float:
        """Total of every :meth:`advance` so far [s]; :meth:`set` (a clock step) leaves it."""
        return self._mono

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` [s]; return the new time."""
        self._t += timedelta(seconds=seconds)
        self._mono += seconds
        return self._t

    def set(self, t: datetime) -> None:
        """Step the wall clock to ``t`` (forwards or backwards), like an NTP step."""
        self._t = t.astimezone(UTC)
