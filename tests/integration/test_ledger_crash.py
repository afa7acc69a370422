"""Crash safety: kill -9 a process that commits blocks in a loop, ≥ 50 times, at random moments;
every reopen is consistent (old or new height, never a mix) and the chain verifies by replay.

The child is forked from the test process (imports already done, so 50 kills fit in seconds); it
opens the durable store and commits blocks of 19 SetMeasure txs (one community slot) until killed.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import time
from pathlib import Path

import pytest

from ledger import block as blk
from ledger import tx as txm
from ledger.app import App
from ledger.genesis import Genesis
from ledger.keys import SigningKey
from ledger.store import Store
from ledger.verify import verify_height, verify_store

KILLS = 50
T0 = 1_790_000_100_000 - 1_790_000_100_000 % 900_000
SLOT = 900_000
MEMBERS = [SigningKey(bytes([100 + i]) * 32) for i in range(19)]
VAL = SigningKey(bytes([99]) * 32)


def _genesis() -> Genesis:
    return Genesis(
        chain_id="lem-crash",
        genesis_time_ms=T0,
        validators=((VAL.public_key, 1),),
        admins=(VAL.public_key,),
        governance_keys=(VAL.public_key,),
        governance_threshold=1,
        meters={f"M{i:02d}": k.public_key for i, k in enumerate(MEMBERS)},
    )


def child(path: Path, ready_fd: int) -> None:
    """Commit one block per slot forever (killed from outside)."""
    app = App(Store(path, _genesis(), durable=True))
    os.write(ready_fd, b"r")
    while True:
        h = app.height + 1
        slot = T0 + (h - 1) * SLOT
        txs = [
            txm.make(
                k,
                "lem-crash",
                app.sequence(k.public_key),
                "SetMeasure",
                {
                    "meter_id": f"M{i:02d}",
                    "slot_start_ms": slot,
                    "import_wh": (h * 7 + i) % 900,
                    "export_wh": (h * 3 + i) % 500,
                    "quality": 0,
                },
            )
            for i, k in enumerate(MEMBERS)
        ]
        raw = app.prepare_block(h, slot + SLOT, VAL.public_key, txs, app.commit(h - 1))
        app.commit_block(raw, [h, blk.decode(raw).hash])


def _check_tip(store: Store) -> None:
    """The tip is complete and nothing of a later block exists."""
    tip = store.height
    assert store.app_hash_at(tip) == store.app_hash
    assert store.block(tip + 1) is None
    assert store.app_hash_at(tip + 1) is None
    if tip:
        raw = store.block(tip)
        assert raw is not None
        assert blk.decode(raw).hash == store.last_block_hash
        assert store.height_of(store.last_block_hash) == tip
        assert store.commit_at(tip) is not None


def _run_and_kill(data: Path, after_s: float) -> None:
    """Fork a committing child, SIGKILL it ``after_s`` after its store is open."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_fd)
            child(data, write_fd)
        finally:
            os._exit(1)
    os.close(write_fd)
    try:
        assert os.read(read_fd, 1) == b"r"
        time.sleep(after_s)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(read_fd)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.slow
def test_kill_minus_nine_while_committing(tmp_path: Path) -> None:
    """50 SIGKILLs at random instants: each reopen passes the open-time hash check, has a whole
    tip, and every new block replays to the stored app hash; the full chain verifies at the end."""
    rng = random.Random(20261121)
    data = tmp_path / "ledger"
    heights = []
    with tempfile.TemporaryDirectory() as replay_dir:
        replay = App(Store(Path(replay_dir), _genesis(), durable=False))
        for _ in range(KILLS):
            _run_and_kill(data, rng.uniform(0.0, 0.25))
            store = Store(data, readonly=True)  # raises StoreError on a torn state
            try:
                _check_tip(store)
                for h in range(replay.height + 1, store.height + 1):
                    assert verify_height(store, replay, h) is None
                heights.append(store.height)
            finally:
                store.close()
        replay.store.close()
    assert heights == sorted(heights)
    assert heights[-1] >= KILLS  # blocks were really being committed between kills
    store = Store(data, readonly=True)
    try:
        report = verify_store(store)
    finally:
        store.close()
    assert report.ok, report.problems
