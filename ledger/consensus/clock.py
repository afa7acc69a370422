"""Clocks that drive consensus timeouts: a virtual one for simulations, the event loop's for nodes.

Spec: docs/spec/consensus.md §Clock. Times are integer milliseconds since the Unix epoch [ms].
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    """A scheduled call that can be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the engine needs from time: the current time and delayed calls."""

    def now_ms(self) -> int:
        """Current time [ms since epoch]."""
        ...

    def call_later(self, delay_ms: int, fn: Callable[[], None]) -> TimerHandle:
        """Run ``fn`` after ``delay_ms`` [ms]."""
        ...


class _VirtualTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """Discrete-event time: calls run in (time, scheduling order); nothing waits for real.

    Deterministic: the same schedule of calls gives the same order of execution.
    """

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00Z
        self._now = start_ms
        self._queue: list[tuple[int, int, _VirtualTimer, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.executed = 0
        """Number of calls run so far."""

    def now_ms(self) -> int:
        return self._now

    def call_later(self, delay_ms: int, fn: Callable[[], None]) -> _VirtualTimer:
        return self.call_at(self._now + max(0, delay_ms), fn)

    def call_at(self, when_ms: int, fn: Callable[[], None]) -> _VirtualTimer:
        """Run ``fn`` at ``when_ms`` (now, if that is in the past)."""
        timer = _VirtualTimer()
        heapq.heappush(self._queue, (max(when_ms, self._now), next(self._seq), timer, fn))
        return timer

    def step(self) -> bool:
        """Run the next due call; False when nothing is scheduled."""
        while self._queue:
            when, _, timer, fn = heapq.heappop(self._queue)
            if timer.cancelled:
                continue
            self._now = when
            self.executed += 1
            fn()
            return True
        return False

    def run_until(self, when_ms: int, stop: Callable[[], bool] | None = None) -> bool:
        """Run calls up to ``when_ms`` (then set the time to it), or until ``stop()`` is true.

        Returns:
            True if ``stop`` became true, else False.
        """
        while self._queue and self._queue[0][0] <= when_ms:
            if stop is not None and stop():
                return True
            self.step()
        if stop is not None and stop():
            return True
        self._now = max(self._now, when_ms)
        return False

    def pending(self) -> int:
        """Scheduled calls not yet run (cancelled ones included)."""
        return len(self._queue)


class LoopClock:
    """Wall-clock time with delayed calls on the running asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def call_later(self, delay_ms: int, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return self._loop.call_later(max(0, delay_ms) / 1000, fn)
