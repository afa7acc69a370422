"""Cyclic garbage-collector settings for a long-running node (docs/spec/daemon.md §10).

A node allocates a few dozen short-lived containers per transaction (decoded envelopes, state
overlays, message tuples), and nearly all of them are freed by reference counting; the cyclic
collector only has to find the rare cycle. With CPython's defaults (a young collection every 700
net allocations, older ones every 10) it runs thousands of times a minute under load and each
older collection walks every live object: the mempool, the decoded-tx and signature caches, the
state overlays, some 10⁵ objects. Measured on a validator at 2,000 tx/s that is ≈ 6 µs of CPU per
tx (bench/consensus_mqtt_throughput.py, ``LEM_BENCH_CPU_SPLIT=1``, stage ``gc``).

So, once start-up is done: everything alive then (modules, configuration, the genesis, the
store's tree) is moved to the permanent generation, where no collection looks at it again, and
young collections run every :data:`YOUNG_THRESHOLD` allocations. Cycles are still collected;
they only live a little longer.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Net container allocations between young collections (CPython's default: 700)."""

OLDER_THRESHOLD = 10
"""Collections of a generation between collections of the next one (CPython's default)."""


def settle_after_startup() -> None:
    """Collect once, freeze what survives start-up, and space out young collections."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
