"""The collector settings lemd applies once started (edge/gc_policy.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import gc, json
from edge.gc_policy import settle_after_startup, YOUNG_THRESHOLD
start_up_state = [object() for _ in range(1000)]
settle_after_startup()
cycle = []
cycle.append(cycle)  # a reference cycle made after start-up must still be collected
import weakref
class Node: pass
a, b = Node(), Node()
a.peer, b.peer = b, a
gone = weakref.ref(a)
del a, b, cycle
gc.collect()
print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "young": YOUNG_THRESHOLD, "cycle_collected": gone() is None}))
"""


def test_settle_freezes_start_up_objects_and_spaces_young_collections() -> None:
    """After settling, start-up objects sit in the permanent generation, young collections run
    every YOUNG_THRESHOLD allocations, and cycles made later are still collected."""
    # In a child process: freezing the test runner's own heap would outlive this test.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout)
    assert seen["threshold"] == [seen["young"], 10, 10]
    assert seen["young"] > 700  # CPython's default, which is what costs CPU under load
    assert seen["frozen"] >= 1000
    assert seen["cycle_collected"] is True
