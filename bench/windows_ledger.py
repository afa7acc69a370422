"""A market window through the real ledger (signatures, state machine, LMDB); print figures.

Run:

    .venv/bin/python bench/windows_ledger.py                 # 500 members
    .venv/bin/python bench/windows_ledger.py --members 1000

N members each own a meter; the buyers first earn 60 ECT each in an AMM period (so that
validation moves tokens), then every member places one request (half buy, half sell, seeded
prices) in one block; then ClearWindow in its own block; then every member's four
delivery-slot measurements (blocks of at most MAX_BLOCK_TXS), and ValidateWindow. Each phase
prints its wall time (prepare + validate + commit of its blocks, i.e. what a single validator
does; signing the txs is outside the timed part). The store is a temporary LMDB directory with
durable=False, so fsync cost is not in the figures.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from ledger import state
from ledger import tx as txm
from ledger.app import App
from ledger.apps.windows import k_window
from ledger.block import MAX_BLOCK_TXS
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey
from ledger.store import Store

CHAIN = "bench-windows"
HOUR = 3_600_000
SLOT = 900_000
W = 1_790_035_200_000
AMM = {"p_buy_bau": "21", "p_sell_bau": "6", "p_buy_lem": "16", "p_sell_lem": "9", "beta": "0"}


def commit(app: App, val: SigningKey, raws: list[bytes], time_ms: int) -> float:
    """Prepare, validate and commit one block; returns the wall time [s]."""
    t = time.perf_counter()
    prepared = app.prepare(app.height + 1, time_ms, val.public_key, raws, None)
    assert not prepared.dropped, prepared.dropped[0][1]
    assert len(raws) <= MAX_BLOCK_TXS, "the proposer would leave txs out"
    app.commit_block(prepared.block_bytes, [[val.public_key, b"\x00" * 64]])
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=500, help="at most MAX_BLOCK_TXS")
    args = parser.parse_args()
    rnd = random.Random(7)
    admin, val = SigningKey(b"a" * 32), SigningKey(b"v" * 32)
    members = [SigningKey(i.to_bytes(4, "big") * 8) for i in range(args.members)]
    g = Genesis(
        chain_id=CHAIN,
        genesis_time_ms=W - 2 * HOUR,
        validators=((val.public_key, 1),),
        admins=(admin.public_key,),
        governance_keys=(admin.public_key,),
        governance_threshold=1,
        meters={f"m{i}": k.public_key for i, k in enumerate(members)},
        periods=(Period("p0", W - 2 * HOUR, W - HOUR, AMM),),
    )
    seq = dict.fromkeys(range(args.members), 0)

    def signed(i: int, kind: str, body: object) -> bytes:
        seq[i] += 1
        return txm.make(members[i], CHAIN, seq[i] - 1, kind, body)

    def measure(i: int, slot_ms: int, import_wh: int, export_wh: int) -> bytes:
        body = {
            "meter_id": f"m{i}",
            "slot_start_ms": slot_ms,
            "import_wh": import_wh,
            "export_wh": export_wh,
            "quality": 0,
        }
        return signed(i, "SetMeasure", body)

    with tempfile.TemporaryDirectory() as tmp:
        app = App(Store(Path(tmp), g, durable=False))
        config = {"length_ms": HOUR, "tolerance": "0.05"}
        funding = [measure(i, W - 2 * HOUR, 0, 10_000) for i in range(1, args.members, 2)]
        configure = txm.make(admin, CHAIN, 0, "ConfigureWindows", config)
        commit(app, val, [configure, *funding], W - 2 * HOUR + SLOT)
        commit(app, val, [txm.make(val, CHAIN, 0, "SolveMarkets", {"period_id": "p0"})], W - 1)
        requests = [
            signed(
                i,
                "PlaceRequest",
                {
                    "window_start_ms": W,
                    "side": "buy" if i % 2 else "sell",
                    "energy_wh": rnd.randint(500, 5_000),
                    "price": f"0.{rnd.randint(100, 400)}",
                },
            )
            for i in range(args.members)
        ]
        t_place = commit(app, val, requests, W + 1_000)
        clear = txm.make(val, CHAIN, 1, "ClearWindow", {"window_start_ms": W})
        t_clear = commit(app, val, [clear], W + HOUR)
        measures = [
            measure(i, W + HOUR + s * SLOT, 1_500 * (i % 2), 1_500 * (1 - i % 2))
            for i in range(args.members)
            for s in range(4)
        ]
        validate = txm.make(val, CHAIN, 2, "ValidateWindow", {"window_start_ms": W})
        t_measures = sum(
            commit(app, val, measures[i : i + MAX_BLOCK_TXS], W + 2 * HOUR + i)
            for i in range(0, len(measures), MAX_BLOCK_TXS)
        )
        t_validate = commit(app, val, [validate], W + 2 * HOUR + len(measures))
        with app.store.state_reader() as base:
            rec = state.Overlay(base).get_value(k_window(W))
        app.store.close()
    accepted = sum(1 for status, _ in rec["outcomes"] if status == "accepted")
    print(
        f"{args.members} requests in one block: {t_place * 1e3:.0f} ms; "
        f"ClearWindow: {t_clear * 1e3:.0f} ms -> {len(rec['trades'])} trades at "
        f"{rec['price']} ECT/kWh"
    )
    print(
        f"{len(measures)} SetMeasure in {-(-len(measures) // MAX_BLOCK_TXS)} block(s): "
        f"{t_measures * 1e3:.0f} ms; "
        f"ValidateWindow: {t_validate * 1e3:.0f} ms ({accepted}/{len(rec['outcomes'])} accepted)"
    )


if __name__ == "__main__":
    main()
