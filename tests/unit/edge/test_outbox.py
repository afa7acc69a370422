"""The LMDB outbox keeps every record until committed, in slot order, across reopen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.outbox import Outbox, OutboxRecord


def rec(slot: int, imp: int = 100, exp: int = 0) -> OutboxRecord:
    return OutboxRecord("MTR1", 1_700_000_100 // 900 * 900 + 900 * slot, imp, exp, ("complete",), 5)


def test_records_survive_reopen_until_committed(tmp_path: Path) -> None:
    """A stored record is there after reopening, and gone only after mark_committed."""
    box = Outbox(tmp_path / "ob")
    for slot in (2, 0, 1):
        box.put(rec(slot))
    box.close()
    box = Outbox(tmp_path / "ob")
    assert [r.slot_start_s for r in box.pending()] == sorted(rec(s).slot_start_s for s in range(3))
    assert box.mark_committed("MTR1", rec(1).slot_start_s)
    assert not box.mark_committed("MTR1", rec(1).slot_start_s)
    assert box.depth() == 2
    box.close()


def test_putting_the_same_slot_twice_keeps_one_record(tmp_path: Path) -> None:
    """A slot re-emitted after a restart does not become a second submission."""
    box = Outbox(tmp_path / "ob")
    box.put(rec(0))
    box.put(rec(0))
    assert box.depth() == 1
    box.close()


def test_meta_is_written_with_the_record(tmp_path: Path) -> None:
    """The integrator checkpoint and the record it produced land in one transaction."""
    box = Outbox(tmp_path / "ob")
    box.put(rec(0), meta={"integrator": {"slot": 7, "import_wh": 12}})
    assert box.load_meta("integrator") == {"slot": 7, "import_wh": 12}
    assert box.load_meta("missing") is None
    box.close()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.booleans()), max_size=40))
def test_pending_is_exactly_put_minus_committed(tmp_path_factory, ops) -> None:
    """Whatever the interleaving, pending = stored slots that were not committed, in order."""
    box = Outbox(tmp_path_factory.mktemp("ob"))
    expected: set[int] = set()
    for slot, commit in ops:
        if commit:
            box.mark_committed("MTR1", rec(slot).slot_start_s)
            expected.discard(slot)
        else:
            box.put(rec(slot))
            expected.add(slot)
    assert [r.slot_start_s for r in box.pending()] == [
        rec(s).slot_start_s for s in sorted(expected)
    ]
    box.close()


def test_acknowledged_records_survive_kill_9(tmp_path: Path) -> None:
    """Records whose put() returned are there after the writer is killed with SIGKILL."""
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
from edge.outbox import Outbox, OutboxRecord
box = Outbox(__import__('pathlib').Path({str(tmp_path / "ob")!r}))
for i in range(200):
    box.put(OutboxRecord("MTR1", 900 * i, i, 0))
    print(i, flush=True)
    if i == 120:
        os.kill(os.getpid(), 9)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9
    acknowledged = [int(line) for line in proc.stdout.split()]
    box = Outbox(tmp_path / "ob")
    stored = {r.slot_start_s // 900 for r in box.pending()}
    assert set(acknowledged) <= stored
    assert box.get("MTR1", 900 * 120) == OutboxRecord("MTR1", 900 * 120, 120, 0)
    box.close()
