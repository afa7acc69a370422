"""The daemon's one clock: real UTC time, or simulated time running ``speed`` times faster.

Spec: docs/spec/daemon.md §Clock. The meter, the slot integrator, the ledger's block times and
the period scheduler all read this clock, so an accelerated demo community keeps its slots,
blocks and settlement consistent. Simulated time is ``start + speed * (wall - anchor)``; it is
computed from the monotonic clock after one reading of the wall clock at start-up, so wall and
monotonic readings given to the integrator never disagree (a disagreement would look like a
clock step). Real time (no ``start``, speed 1) reads the host's wall clock on every call.
Timeouts and sleeps stay in real seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from edge.config import ClockConfig, parse_utc

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DaemonClock:
    """Wall and monotonic time on one (possibly accelerated) scale.

    Args:
        speed: simulated seconds per real second (1 = real time).
        start: simulated time at ``anchor``; None = real time.
        anchor: real wall time at which simulated time equals ``start``; None = now.
        wall: the real wall clock [s since epoch] (injectable for tests).
        monotonic: the real monotonic clock [s] (injectable for tests).
    """

    def __init__(
        self,
        speed: float = 1.0,
        start: datetime | None = None,
        anchor: datetime | None = None,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.speed = speed
        self._monotonic = monotonic
        self._wall = wall
        # Real time reads the wall clock every time, so an NTP step (a Pi without RTC boots
        # with a stale clock) reaches the integrator, which flags it as CLOCK_JUMP.
        self._real = start is None and speed == 1.0
        mono0, wall0 = monotonic(), wall()
        if start is None:
            start_s = wall0
            anchor_s = wall0
        else:
            start_s = (start - _EPOCH).total_seconds()
            anchor_s = wall0 if anchor is None else (anchor - _EPOCH).total_seconds()
        # sim(m) = start + speed * ((wall0 + (m - mono0)) - anchor) for monotonic reading m.
        self._offset_s = start_s + speed * (wall0 - anchor_s - mono0)

    @classmethod
    def from_config(cls, config: ClockConfig) -> DaemonClock:
        start = parse_utc(config.start) if config.start else None
        anchor = parse_utc(config.anchor) if config.anchor else None
        return cls(config.speed, start, anchor)

    def time_s(self) -> float:
        """Current (simulated) UTC time [s since epoch]."""
        if self._real:
            return self._wall()
        return self._offset_s + self.speed * self._monotonic()

    def now(self) -> datetime:
        """Current (simulated) UTC time, timezone-aware."""
        return _EPOCH + timedelta(seconds=self.time_s())

    def now_ms(self) -> int:
        """Current (simulated) UTC time [ms since epoch]."""
        return int(self.time_s() * 1000)

    def monotonic(self) -> float:
        """Monotonic time on the simulated scale [s] (feeds the slot integrator)."""
        return self.speed * self._monotonic()


class ScaledLoopClock:
    """Consensus clock: block and vote times on the daemon clock, timers in real time.

    Implements ``ledger.consensus.clock.Clock``: network timeouts stay real (a broker round trip
    does not get faster in a demo), while the times written into votes and blocks follow the
    simulated clock the measurements use.
    """

    def __init__(self, clock: DaemonClock, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._clock = clock
        self._loop = loop or asyncio.get_running_loop()

    def now_ms(self) -> int:
        return self._clock.now_ms()

    def call_later(self, delay_ms: int, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return self._loop.call_later(max(0, delay_ms) / 1000, fn)
