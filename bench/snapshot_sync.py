"""Body pruning and snapshot figures for a settled, pruned month (docs/spec/privacy.md §3.1,
docs/spec/consensus.md §5b).

Usage: .venv/bin/python bench/snapshot_sync.py [--members 19] [--slots 2976]

Builds the month of bench/privacy_prune.py (one block of ``--members`` SetMeasure per 15-min
slot, no fsync), solves and prunes it (one UTC day per block), then:

- body-prunes the block store in steps of 32 blocks (what a node does after each commit) and
  prints the time per step, the ``blocks`` pages in use and the size of a compacted copy of the
  whole LMDB file before and after (LMDB reuses freed pages but never shrinks the file), and
  whether a pruned SetMeasure's signature bytes are still in the live file / in the copy;
- takes a snapshot from a state view (manifest + every chunk in 64 KiB pieces) and restores it
  into an empty store, printing the sizes, piece count and times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.privacy_prune import SLOT, T0, _commit, _pages, month_genesis, slot_txs
from ledger import codec, privacy, state
from ledger import tx as txm
from ledger.app import App
from ledger.bodyprune import MAX_BLOCKS_PER_STEP, BodyPruner
from ledger.keys import SigningKey
from ledger.snapshot import (
    N_CHUNKS,
    PIECE_BYTES,
    manifest_root,
    verify_chunk,
)
from ledger.store import Store

HEADER_BYTES = 408
"""A verified header update on a member's link (docs/spec/light.md §2, measured) [bytes]."""


def _build(
    path: Path, n_members: int, slots: int, before_solve: Callable[[App], None]
) -> tuple[App, SigningKey, bytes]:
    """The settled and state-pruned month; returns the app, the admin key and the signature of
    one SetMeasure of the month (unique bytes to look for in the file). ``before_solve`` sees
    the store with the whole month's raw rows (the largest snapshot)."""
    genesis, members, admin = month_genesis(n_members, slots)
    end = T0 + slots * SLOT
    app = App(Store(path, genesis, durable=False))
    marker = b""
    for s in range(slots):
        txs = slot_txs(members, s)
        marker = marker or txm.decode(txs[0]).signature
        _commit(app, admin, txs, T0 + (s + 1) * SLOT)
    before_solve(app)
    _commit(app, admin, [txm.make(admin, "lem-bench", 0, "SolveMarkets", {"period_id": "month"})],
            end + 1)  # fmt: skip
    while True:
        seq = app.sequence(admin.public_key)
        prune = txm.make(admin, "lem-bench", seq, "PruneMeasurements", {"period_id": "month"})
        _commit(app, admin, [prune], end + 1 + SLOT + seq)
        with app.store.state_reader() as base:
            if state.Overlay(base).get_value(privacy.k_pruned("month"))["done"]:
                return app, admin, marker


def _compacted_mib(store: Store, where: Path) -> tuple[float, bytes]:
    store.compact_copy(where)
    data = (where / "data.mdb").read_bytes()
    return len(data) / 2**20, data


def _body_prune(app: App, tmp: Path, marker: bytes) -> None:
    store = app.store
    psize = store._env.stat()["psize"]  # bench only: page statistics are not public
    before_pages = _pages(store)["blocks"]
    before_mib, _ = _compacted_mib(store, tmp / "copy-before")
    pruner = BodyPruner(store)
    steps: list[float] = []
    while pruner.cursor <= store.height:
        t = time.perf_counter()
        pruner.step()
        steps.append(time.perf_counter() - t)
    after_pages = _pages(store)["blocks"]
    after_mib, copy = _compacted_mib(store, tmp / "copy-after")
    live = (store.path / "data.mdb").read_bytes()
    print(
        f"body pruning: {pruner.pruned_blocks:,} blocks, {pruner.pruned_txs:,} SetMeasure bodies "
        f"removed in {len(steps)} steps of <= {MAX_BLOCKS_PER_STEP} blocks: "
        f"slowest {max(steps) * 1000:.0f} ms, {sum(steps):.2f} s in all"
    )
    print(
        f"  blocks pages in use: {before_pages:,} -> {after_pages:,} "
        f"({(before_pages - after_pages) * psize / 2**20:.2f} MiB freed)"
    )
    print(f"  compacted copy of the whole store: {before_mib:.2f} MiB -> {after_mib:.2f} MiB")
    print(
        f"  a pruned SetMeasure's signature: in the live file {marker in live}, "
        f"in the compacted copy {marker in copy}"
    )


def _snapshot(app: App, tmp: Path, label: str) -> None:
    print(f"{label}:")
    store = app.store
    t = time.perf_counter()
    view = store.view()
    roots = view.partition_roots()
    manifest_s = time.perf_counter() - t
    chunks: list[list[tuple[bytes, bytes]]] = []
    pieces, largest, wire = 0, 0, 0
    t = time.perf_counter()
    for c in range(N_CHUNKS):
        entries: list[tuple[bytes, bytes]] = []
        after, more = b"", True
        while more:
            piece, more = view.entries(c, after, PIECE_BYTES)
            message = codec.encode(["snap_chunk", "lem-bench", view.height, c, after, 0,
                                    [[k, v] for k, v in piece], more])  # fmt: skip
            pieces, largest, wire = pieces + 1, max(largest, len(message)), wire + len(message)
            entries += piece
            after = piece[-1][0] if piece else after
        chunks.append(entries)
    produce_s = time.perf_counter() - t
    height, app_hash = view.height, view.app_hash
    view.close()
    t = time.perf_counter()
    assert manifest_root(roots) == app_hash
    for c, entries in enumerate(chunks):
        verify_chunk(height, c, entries, roots)
    verify_s = time.perf_counter() - t
    target = Store(tmp / f"restored-{height}", store.genesis, durable=False)
    t = time.perf_counter()
    target.restore(
        (height, store.last_block_hash, store.last_time_ms, app_hash),
        [e for chunk in chunks for e in chunk],
    )
    restore_s = time.perf_counter() - t
    assert target.app_hash == app_hash
    n = sum(len(ch) for ch in chunks)
    print(
        f"snapshot at height {height:,}: {n:,} state entries, {wire / 2**20:.2f} MiB in "
        f"{pieces} chunk pieces (largest message {largest / 1024:.0f} KiB) + a "
        f"{len(codec.encode(roots)) / 1024:.1f} KiB manifest"
    )
    print(
        f"  produce: manifest {manifest_s * 1000:.0f} ms, all pieces {produce_s:.2f} s; "
        f"verify every chunk {verify_s:.2f} s; restore (one LMDB txn) {restore_s:.2f} s; "
        f"restored store {target.size_bytes() / 2**20:.2f} MiB"
    )
    print(
        f"  headers a joiner verifies first: {height:,} x {HEADER_BYTES} B ≈ "
        f"{height * HEADER_BYTES / 2**20:.2f} MiB (sequential from genesis)"
    )
    target.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=19)
    ap.add_argument("--slots", type=int, default=2976)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {args.members} members x {args.slots} slots")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        t = time.perf_counter()
        app, _, marker = _build(
            tmp / "store",
            args.members,
            args.slots,
            lambda a: _snapshot(
                a, tmp, "snapshot at the end of the month, raw rows still in state"
            ),
        )
        print(f"month built, solved and state-pruned in {time.perf_counter() - t:.0f} s "
              f"(height {app.height:,})")  # fmt: skip
        _body_prune(app, tmp, marker)
        _snapshot(app, tmp, "snapshot after the month is solved and pruned")
        app.store.close()


if __name__ == "__main__":
    main()
