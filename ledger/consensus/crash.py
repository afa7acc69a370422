"""Injected crash points: named places where a test may stop a validator mid-step.

Spec: docs/spec/consensus.md §Crash recovery. Production code passes :data:`NO_CRASH`; tests pass
a :class:`CrashAt` to the constructor of the sign-state or the engine (never a global switch).
"""

from __future__ import annotations

SIGNED_NOT_PERSISTED = "signed_not_persisted"
"""A signature exists in memory but the sign-state has not recorded it (it never left)."""
PERSISTED_NOT_SENT = "persisted_not_sent"
"""The sign-state recorded a signature that was not yet published."""
BLOCK_STORED = "block_stored"
"""The application committed the block; consensus has not moved to the next height."""
POINTS = (SIGNED_NOT_PERSISTED, PERSISTED_NOT_SENT, BLOCK_STORED)


class SimulatedCrash(Exception):  # noqa: N818 — it is an event, not an error condition
    """Raised at a crash point: the caller must drop the node's memory and restart it."""


class CrashPoints:
    """No-op crash points (production)."""

    def hit(self, point: str) -> None:
        """Called when execution passes ``point``; does nothing here."""


NO_CRASH = CrashPoints()


class CrashAt(CrashPoints):
    """Raise :class:`SimulatedCrash` the ``nth`` time execution passes ``point``."""

    def __init__(self, point: str, nth: int = 1) -> None:
        if point not in POINTS:
            raise ValueError(f"unknown crash point {point!r}; known: {POINTS}")
        self.point = point
        self.remaining = nth
        self.fired = False

    def hit(self, point: str) -> None:
        if point != self.point or self.fired:
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.fired = True
            raise SimulatedCrash(point)
