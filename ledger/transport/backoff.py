"""Reconnect delays: exponential backoff with jitter.

Spec: docs/spec/transport.md §Reconnect. Jitter spreads the reconnects of a whole community
after a broker restart, so 19 nodes on 4G do not hit the broker in the same instant.
"""

from __future__ import annotations

import random


class Backoff:
    """Delay before the next connection attempt.

    The n-th consecutive failure waits ``min(max_s, initial_s * 2**n)`` scaled by a random
    factor in [0.5, 1.0) ("equal jitter").

    Args:
        initial_s: delay after the first failure [s].
        max_s: ceiling of the delay [s].
        rng: random source (seeded in tests).
    """

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self._initial_s = initial_s
        self._max_s = max_s
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay_s(self) -> float:
        """Delay before the next attempt [s]; counts one more consecutive failure."""
        ceiling = min(self._max_s, self._initial_s * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return ceiling * (0.5 + self._rng.random() / 2)

    def reset(self) -> None:
        """A connection succeeded: the next failure starts from ``initial_s`` again."""
        self.failures = 0
