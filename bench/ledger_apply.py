"""Ledger throughput and footprint: signed SetMeasure txs per second, bytes per tx, store growth.

Usage: .venv/bin/python bench/ledger_apply.py [--members 19] [--slots 2976] [--durable]

Simulates a community of ``--members`` meters writing one SetMeasure per 15-min slot for
``--slots`` slots (2,976 = 31 days), one block per slot, then solves the month. Prints:
- tx bytes on the wire (one SetMeasure envelope);
- execution rate: txs decoded, signature-checked, validated and applied per second on one core
  (overlay only, no disk);
- block rate including the LMDB commit (Merkle buckets, indexes; fsync only with --durable);
- store size and growth per member per month; SolveMarkets time for the month.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import state
from ledger import tx as txm
from ledger.app import App
from ledger.execute import execute_tx
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey
from ledger.registry import Context
from ledger.store import Store

SLOT = 900_000
T0 = 1_793_491_200_000  # 2026-11-01T00:00Z
PARAMS = {
    "p_buy_bau": "0.21",
    "p_sell_bau": "0.06",
    "p_buy_lem": "0.16",
    "p_sell_lem": "0.09",
    "beta": "0",
}


def _txs(members: list[SigningKey], slot: int, h: int) -> list[bytes]:
    return [
        txm.make(
            k,
            "lem-bench",
            h,
            "SetMeasure",
            {
                "meter_id": f"meter-{i:02d}",
                "slot_start_ms": T0 + slot * SLOT,
                "import_wh": (slot * 37 + i * 11) % 600,
                "export_wh": (slot * 13 + i * 7) % 400 if i % 3 == 0 else 0,
                "quality": 0,
            },
        )
        for i, k in enumerate(members)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=19)
    ap.add_argument("--slots", type=int, default=2976)
    ap.add_argument("--durable", action="store_true", help="fsync every block (eMMC-like)")
    args = ap.parse_args()
    members = [SigningKey(bytes([i + 1]) * 32) for i in range(args.members)]
    admin = SigningKey(b"\xaa" * 32)
    genesis = Genesis(
        chain_id="lem-bench",
        genesis_time_ms=T0 - 1,
        validators=((admin.public_key, 1),),
        admins=(admin.public_key,),
        governance_keys=(admin.public_key,),
        governance_threshold=1,
        meters={f"meter-{i:02d}": k.public_key for i, k in enumerate(members)},
        periods=(Period("2026-11", T0, T0 + args.slots * SLOT, PARAMS),),
    )
    print(f"python {sys.version.split()[0]}, {args.members} members x {args.slots} slots")
    sample = _txs(members, 0, 0)[0]
    print(f"SetMeasure tx on the wire: {len(sample)} bytes")

    with tempfile.TemporaryDirectory() as tmp:
        app = App(Store(Path(tmp) / "exec", genesis, durable=False))
        batch = [t for s in range(50) for t in _txs(members, s, s)]
        app.check_tx(batch[0])  # warm up: imports the tx-kind modules
        with app.store.state_reader() as base:
            ctx = Context(state.Overlay(base), "lem-bench", 1, T0 + 60 * SLOT)
            t = time.perf_counter()
            for raw in batch:
                execute_tx(ctx, raw)
            dt = time.perf_counter() - t
        print(f"execute (decode+verify+validate+apply, no disk): {len(batch) / dt:,.0f} tx/s")
        app.store.close()

        path = Path(tmp) / "store"
        app = App(Store(path, genesis, durable=args.durable))
        size0 = app.store.size_bytes()
        sign_s = commit_s = 0.0
        for s in range(args.slots):
            t = time.perf_counter()
            txs = _txs(members, s, s)
            sign_s += time.perf_counter() - t
            t = time.perf_counter()
            raw = app.prepare_block(
                app.height + 1, T0 + (s + 1) * SLOT, admin.public_key, txs, None
            )
            app.commit_block(raw, [s])
            commit_s += time.perf_counter() - t
        n = args.slots * args.members
        print(
            f"blocks of {args.members} txs, prepare+validate+commit"
            f"{' (fsync)' if args.durable else ''}: {n / commit_s:,.0f} tx/s, "
            f"{1000 * commit_s / args.slots:.1f} ms/block (signing, client side: "
            f"{1000 * sign_s / args.slots:.1f} ms/block)"
        )
        t = time.perf_counter()
        solve = txm.make(admin, "lem-bench", 0, "SolveMarkets", {"period_id": "2026-11"})
        raw = app.prepare_block(
            app.height + 1, T0 + (args.slots + 1) * SLOT, admin.public_key, [solve], None
        )
        app.commit_block(raw, [0])
        print(f"SolveMarkets of the whole period: {time.perf_counter() - t:.2f} s")
        size = app.store.size_bytes()
        month = 2976 / args.slots
        growth = (size - size0) * month / args.members
        print(f"store: {size / 2**20:.1f} MiB after {app.height} blocks")
        per_slot = growth / 2976
        print(
            f"store growth per member per month: {growth / 2**20:.2f} MiB ({per_slot:,.0f} B/slot)"
        )
        app.store.close()


if __name__ == "__main__":
    main()
