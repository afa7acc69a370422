"""Liveness of the daemon: the watchdog is petted only while the loop and essential tasks progress.

A free-running timer would keep petting a daemon whose meter task or ledger task is wedged;
instead every essential task calls :meth:`Health.beat` when it completes a unit of work, and the
watchdog task pets systemd only if the event loop itself is responsive and every essential task
has beaten within its allowed age.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.sdnotify import Notifier


@dataclass
class Health:
    """Progress bookkeeping for the essential tasks (names → last beat, monotonic seconds)."""

    max_age_s: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)

    def require(self, name: str, max_age_s: float) -> None:
        """Declare an essential task that must beat at least every ``max_age_s`` seconds."""
        self.max_age_s[name] = max_age_s
        self._last.setdefault(name, self.clock())

    def beat(self, name: str) -> None:
        self._last[name] = self.clock()

    def stale(self) -> list[str]:
        """Names of essential tasks that have not beaten within their allowed age."""
        now = self.clock()
        return sorted(
            name for name, age in self.max_age_s.items() if now - self._last.get(name, 0.0) > age
        )

    def ages_s(self) -> dict[str, float]:
        now = self.clock()
        return {name: now - last for name, last in self._last.items()}


async def watchdog_loop(
    notifier: Notifier,
    health: Health,
    *,
    interval_s: float,
    max_loop_lag_s: float,
    on_unhealthy: Callable[[list[str], float], None] | None = None,
) -> None:
    """Pet systemd every ``interval_s`` while healthy; stay silent while not.

    Loop lag is measured as how late this coroutine wakes up; a blocked loop wakes late (or not at
    all), so no ping goes out and systemd restarts the service after WatchdogSec.
    """
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        lag_s = max(0.0, loop.time() - expected)
        stale = health.stale()
        if lag_s <= max_loop_lag_s and not stale:
            notifier.watchdog()
        elif on_unhealthy is not None:
            on_unhealthy(stale, lag_s)
