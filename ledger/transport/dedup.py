"""Duplicate suppression for received payloads: a bounded, time-windowed set of SHA-256 digests.

Spec: docs/spec/transport.md §Deduplication. QoS 1 delivers at least once, a publisher that
lost its PUBACK sends again, and consensus re-publishes its latest votes; the consumer needs
each distinct payload once per window. The window is counted from the first sighting and is
never extended by later copies, so a payload re-published after the window passes again (a
node whose consumer dropped it the first time gets another chance).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable


class DedupCache:
    """Remembers digests of recently seen payloads.

    Args:
        max_entries: bound on remembered digests; the oldest is forgotten first [count].
        window_s: how long a digest is remembered after its first sighting [s].
        clock: monotonic time source [s] (injected by tests).
    """

    def __init__(
        self,
        max_entries: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or window_s <= 0:
            raise ValueError(
                f"dedup needs max_entries >= 1 and window_s > 0, got {max_entries}, {window_s}"
            )
        self._max = max_entries
        self._window_s = window_s
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, key: bytes) -> bool:
        """Record ``key``'s digest; return True if it was already seen within the window."""
        digest = hashlib.sha256(key).digest()
        now = self._clock()
        self._expire(now)
        if digest in self._seen:
            return True
        self._seen[digest] = now
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return False

    def _expire(self, now: float) -> None:
        # Insertion order is first-sighting order, so expired entries sit at the front.
        horizon = now - self._window_s
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest > horizon:
                break
            self._seen.popitem(last=False)
