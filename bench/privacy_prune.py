"""Retention figures: what PruneMeasurements costs and what it frees (docs/spec/privacy.md §3).

Usage: .venv/bin/python bench/privacy_prune.py [--members 19] [--slots 2976]

A pseudonymous community of ``--members`` meters writes one SetMeasure per 15-min slot for
``--slots`` slots (2,976 = 31 days), one block per slot; the period is solved, and after the
dispute window PruneMeasurements txs remove its raw rows, one UTC day per block. Prints the
prune blocks' times, the ``meas/`` rows and the LMDB pages per sub-db before and after (pages in
use, not file size: LMDB reuses freed pages rather than shrinking the file), and the bytes a
member keeps to prove rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import privacy, state
from ledger import tx as txm
from ledger.app import App
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey
from ledger.store import Store

SLOT = 900_000
T0 = 1_793_491_200_000  # 2026-11-01T00:00Z
PARAMS = {"p_buy_bau": "0.21", "p_sell_bau": "0.06", "p_buy_lem": "0.16", "p_sell_lem": "0.09"}
PARAMS["beta"] = "0"
SECRET = bytes(range(32))


def _ids(n: int) -> list[str]:
    return [
        privacy.pseudonym(privacy.member_key(SECRET, "lem-bench", bytes([i]) * 16), f"SER{i:04d}")
        for i in range(n)
    ]


def _pages(store: Store) -> dict[str, int]:
    """Pages in use per sub-db (branch + leaf + overflow), reading LMDB's own statistics."""
    out = {}
    with store._env.begin() as txn:  # bench only: the store has no public page statistics
        for name, db in store._db.items():
            s = txn.stat(db)
            out[name] = s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
    return out


def _count(store: Store, prefix: bytes) -> int:
    with store.state_reader() as base:
        return sum(1 for _ in base.scan(prefix, state.prefix_end(prefix)))


def month_genesis(n_members: int, slots: int) -> tuple[Genesis, list[SigningKey], SigningKey]:
    """A pseudonymous one-period chain of ``n_members`` meters over ``slots`` slots, with a
    dispute window of one slot; returns the genesis, the members' keys and the admin's."""
    members = [SigningKey(bytes([i + 1]) * 32) for i in range(n_members)]
    ids = _ids(n_members)
    admin = SigningKey(b"\xaa" * 32)
    genesis = Genesis(
        chain_id="lem-bench",
        genesis_time_ms=T0 - 1,
        validators=((admin.public_key, 1),),
        admins=(admin.public_key,),
        governance_keys=(admin.public_key,),
        governance_threshold=1,
        meters={ids[i]: k.public_key for i, k in enumerate(members)},
        periods=(Period("month", T0, T0 + slots * SLOT, PARAMS),),
        privacy="pseudonymous",
        dispute_window_ms=SLOT,
    )
    return genesis, members, admin


def slot_txs(members: list[SigningKey], s: int) -> list[bytes]:
    """Every member's SetMeasure of slot ``s`` (sequence ``s``), with varied energies [Wh]."""
    ids = _ids(len(members))
    return [
        txm.make(k, "lem-bench", s, "SetMeasure", {
            "meter_id": ids[i], "slot_start_ms": T0 + s * SLOT,
            "import_wh": (s * 37 + i * 11) % 600, "export_wh": (s * 13 + i * 7) % 400,
            "quality": 0,
        })
        for i, k in enumerate(members)
    ]  # fmt: skip


def _commit(app: App, signer: SigningKey, txs: list[bytes], time_ms: int) -> float:
    t = time.perf_counter()
    prepared = app.prepare(app.height + 1, time_ms, signer.public_key, txs, None)
    if prepared.dropped:
        raise SystemExit(f"a tx was refused: {prepared.dropped[0][1]}")
    app.commit_block(prepared.block_bytes, [app.height + 1])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=19)
    ap.add_argument("--slots", type=int, default=2976)
    args = ap.parse_args()
    genesis, members, admin = month_genesis(args.members, args.slots)
    end = T0 + args.slots * SLOT
    print(f"python {sys.version.split()[0]}, {args.members} members x {args.slots} slots")
    with tempfile.TemporaryDirectory() as tmp:
        app = App(Store(Path(tmp) / "store", genesis, durable=False))
        for s in range(args.slots):
            txs = slot_txs(members, s)
            _commit(app, admin, txs, T0 + (s + 1) * SLOT)
        solve = txm.make(admin, "lem-bench", 0, "SolveMarkets", {"period_id": "month"})
        solve_s = _commit(app, admin, [solve], end + 1)
        rows, before = _count(app.store, b"meas/"), _pages(app.store)
        chunk_s = []
        while True:  # one PruneMeasurements (one UTC day of the period) per block
            seq = app.sequence(admin.public_key)
            prune = txm.make(admin, "lem-bench", seq, "PruneMeasurements", {"period_id": "month"})
            chunk_s.append(_commit(app, admin, [prune], end + 1 + SLOT + len(chunk_s)))
            with app.store.state_reader() as base:
                if state.Overlay(base).get_value(privacy.k_pruned("month"))["done"]:
                    break
        after = _pages(app.store)
        psize = app.store._env.stat()["psize"]
        print(
            f"SolveMarkets block: {solve_s:.2f} s; PruneMeasurements: {len(chunk_s)} blocks "
            f"(one day each), {max(chunk_s) * 1000:.0f} ms the slowest, {sum(chunk_s):.2f} s in all"
        )
        print(f"meas/ rows: {rows:,} -> {_count(app.store, b'meas/'):,}")
        print(f"ptot/ entries kept: {_count(app.store, b'ptot/')}; pruned/ entries: 1")
        for name in ("state", "leaves", "blocks"):
            print(
                f"  {name:7s} pages in use: {before[name]:>6,} -> {after[name]:>6,}"
                f" ({(before[name] - after[name]) * psize / 2**20:+.2f} MiB freed)"
            )
        kept_blocks = after["blocks"] * psize / max(rows, 1)
        print(f"still in the block store: {kept_blocks:.0f} B per row (raw SetMeasure txs)")
        freed = sum(before.values()) - sum(after.values())
        per_row = freed * psize / max(rows, 1)
        print(f"all sub-dbs: {freed * psize / 2**20:.2f} MiB freed, {per_row:.0f} B per pruned row")
        kept = [{"slot_start_ms": T0 + s * SLOT, "meter_id": _ids(1)[0], "import_wh": 1,
                 "export_wh": 1, "quality": 0} for s in range(args.slots)]  # fmt: skip
        print(
            f"a member's kept records for the period as JSON: "
            f"{len(json.dumps(kept)) / 1024:.0f} KiB"
        )
        app.store.close()


if __name__ == "__main__":
    main()
