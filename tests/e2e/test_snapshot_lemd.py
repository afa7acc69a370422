"""lemd processes on a retention chain (docs/spec/consensus.md §5b, privacy.md §3.1): three
validators measure, settle, prune and body-prune a period on their own (period and retention
schedulers); a fourth validator's lemd, started later on an empty data directory, joins by
state snapshot and then decides blocks with them. Real processes, real mosquitto, simulated
time (one hour per second). Soak: ≈ 20–30 s."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger import block as blk
from ledger import privacy, state
from ledger import tx as txm
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey
from ledger.store import Store
from tests.support.lemd import PARAMS, SIM_START, NodeDir, make_node
from tests.support.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
METERS = ["lic-h03", "lic-h05", "lic-h07", "lic-h09"]
P0_START_MS = int(SIM_START.timestamp() * 1000)
P0_END_MS = P0_START_MS + 2 * 3_600_000


def _genesis(keys: list[SigningKey], admin: SigningKey) -> Genesis:
    start_ms = P0_START_MS
    return Genesis(
        chain_id="lemd-test",
        genesis_time_ms=start_ms - 60_000,
        validators=tuple((k.public_key, 1) for k in keys),
        admins=(admin.public_key,),
        governance_keys=(admin.public_key,),
        governance_threshold=1,
        meters={m: k.public_key for m, k in zip(METERS, keys, strict=True)},
        periods=(Period("p0", start_ms, start_ms + 2 * 3_600_000, PARAMS),),
        dispute_window_ms=3_600_000,
    )


def _read(node: NodeDir, fn: Callable[[Store], bool]) -> bool:
    try:
        store = Store(node.root / "state" / "ledger", readonly=True)
    except Exception:  # not created yet, or mid-write: ask again
        return False
    try:
        return fn(store)
    finally:
        store.close()


def _height(node: NodeDir) -> int | None:
    heights: list[int] = []

    def note(store: Store) -> bool:
        heights.append(store.height)
        return True

    return heights[0] if _read(node, note) else None


def _raw_p0_heights(store: Store) -> list[int]:
    """Heights whose stored block still holds a whole SetMeasure of a p0 slot."""
    out = []
    for h in range(1, store.height + 1):
        raw = store.block(h)
        if raw is None:
            continue
        for t in blk.decode(raw).txs:
            tx = txm.decode(t)
            slot = int(tx.body["slot_start_ms"]) if tx.kind == "SetMeasure" else -1
            if P0_START_MS <= slot < P0_END_MS:  # earlier slots lie in no period: kept
                out.append(h)
                break
    return out


def _pruned_and_body_pruned(store: Store) -> bool:
    with store.state_reader() as base:
        progress = state.Overlay(base).get_value(privacy.k_pruned("p0"))
    done = progress is not None and progress["done"]
    return (
        done
        and any(store.is_body_pruned(h) for h in range(store.height))
        and (_raw_p0_heights(store) == [])
    )


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"not reached within {timeout_s} s: {what}")


def _start(node: NodeDir) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge.daemon", "--config", str(node.config)],
        cwd=ROOT,
        stdout=(node.root / "lemd.log").open("w"),
        stderr=subprocess.STDOUT,
    )


@pytest.mark.soak
@pytest.mark.timeout(120)
def test_late_validator_lemd_joins_by_snapshot(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    """The fourth validator's lemd logs the fallback and the restore, reaches the others'
    height and app hash, and its store holds no raw SetMeasure of the pruned period."""
    broker = mosquitto_factory()
    keys = [SigningKey.generate() for _ in METERS]
    admin = SigningKey.generate()
    genesis = _genesis(keys, admin)
    anchor = datetime.now(UTC) + timedelta(seconds=3)
    nodes = [
        make_node(
            tmp_path / f"n{i}",
            key=k,
            genesis=genesis,
            admin=admin,
            meter_id=m,
            anchor=anchor,
            speed=3_600.0,
            brokers=(broker.url,),
        )
        for i, (m, k) in enumerate(zip(METERS, keys, strict=True))
    ]
    procs = [_start(n) for n in nodes[:3]]
    try:
        _wait(lambda: _read(nodes[0], _pruned_and_body_pruned), 60, "p0 pruned and body-pruned")
        procs.append(_start(nodes[3]))
        log = nodes[3].root / "lemd.log"
        _wait(lambda: "state snapshot restored" in log.read_text(), 40, "snapshot join")
        assert "switching to state-snapshot sync" in log.read_text()

        def caught_up() -> bool:
            first, late = _height(nodes[0]), _height(nodes[3])
            return first is not None and late is not None and first <= late

        _wait(caught_up, 30, "the late validator reaches the others' height")
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(timeout=20) for proc in procs] == [0, 0, 0, 0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    first = Store(nodes[0].root / "state" / "ledger", readonly=True)
    late = Store(nodes[3].root / "state" / "ledger", readonly=True)
    try:
        height = min(first.height, late.height)
        assert late.app_hash_at(height) == first.app_hash_at(height)
        assert late.meta_value(b"snapbase") is not None
        assert _raw_p0_heights(late) == []
    finally:
        first.close()
        late.close()
