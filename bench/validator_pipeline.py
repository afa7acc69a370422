"""CPU per tx of one validator's ledger pipeline, by stage, without network or consensus.

Usage: .venv/bin/python bench/validator_pipeline.py [--block 1500] [--blocks 16] [--repeat 3]
       [--no-durable] [--growth N]

What one validator of bench/consensus_mqtt_throughput.py does for each signed ``AddMeter`` tx,
in one process on a real LMDB store (fsync on unless ``--no-durable``):

* admit: mempool admission in gossip batches of 50 (decode, ed25519, stateful checks);
* prepare: the proposer's block building (every tx executed on an overlay);
* validate: a second validation of the same block bytes (what a non-proposer's
  ``validate_block`` costs is ``prepare`` here; this line shows the cache hit);
* commit: ``commit_block`` (state, state tree, indexes, one LMDB write transaction);
* update: the mempool's post-commit re-check.

Each tx adds two state keys, so the state grows with the run (``--blocks`` × ``--block`` × 2
keys) and the state tree with it. Figures are CPU time (``time.process_time``) per tx; the
run is repeated ``--repeat`` times in fresh stores and the fastest repeat is printed, since
other load on this shared machine only ever adds time.

``--growth N`` shows how the commit's cost follows the state instead: one run, and for every N
blocks the commit's CPU per tx and the bytes the process wrote to disk per tx during the
commits (``write_bytes`` of /proc/self/io: what reaches the eMMC, page copies included). The
CPU is split into the tx index records, the state with its tree, and the rest (mostly the LMDB
transaction's commit: page writes and fsync) where the store has those parts as methods.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import tx as txm
from ledger.app import App
from ledger.keys import SigningKey, sha256
from ledger.mempool import Mempool
from ledger.store import Store
from tests.unit.ledger.helpers import ADMIN, N1, T0, VAL, Signer, genesis

STAGES = ("admit", "prepare", "validate", "commit", "update")
GOSSIP_BATCH = 50
ADMINS = [SigningKey(sha256(f"bench-admin-{i}".encode())) for i in range(64)]


def _txs(chain_id: str, count: int) -> list[bytes]:
    signers = [Signer(k, chain_id) for k in ADMINS]
    txs = [
        signers[i % len(signers)]("AddMeter", {"meter_id": f"T{i}", "account": N1.public_key})
        for i in range(count)
    ]
    txm.forget(txs)  # tx.make left them in the decode cache; gossip arrives undecoded
    return txs


def _written_bytes() -> int:
    """Bytes this process has caused to be written to storage (Linux)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("write_bytes"))


class _CommitParts:
    """Times the named parts of ``Store.commit`` (instrumentation for ``--growth``); a store
    without such a method (older code) is timed as a whole."""

    NAMES = ("_write_tx_index", "_write_state")

    def __init__(self) -> None:
        self.spent = dict.fromkeys(self.NAMES, 0.0)
        for name in self.NAMES:
            method = getattr(Store, name, None)
            if method is not None:
                setattr(Store, name, self._timed(name, method))

    def _timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.spent[name] += time.process_time() - started

        return timed

    def take(self) -> dict[str, float]:
        """CPU [s] per part since the last call."""
        spent, self.spent = self.spent, dict.fromkeys(self.NAMES, 0.0)
        return spent


Commit = tuple[float, int, dict[str, float]]
"""One block's commit: CPU [s], bytes written, CPU [s] per timed part."""


def run_once(
    txs: list[bytes], block: int, durable: bool, commits: list[Commit] | None = None
) -> dict[str, float]:
    """Seconds of CPU per stage for the whole run, in a fresh store; with ``commits``, each
    block's commit (:data:`Commit`) is appended to it."""
    parts = _CommitParts() if commits is not None else None
    g = genesis(admins=(ADMIN.public_key, *(k.public_key for k in ADMINS)))
    spent = dict.fromkeys(STAGES, 0.0)
    with tempfile.TemporaryDirectory(prefix="lem-pipe-") as tmp:
        app = App(Store(Path(tmp), g, durable=durable))
        pool = Mempool(app)
        for start in range(0, len(txs), block):
            chunk = txs[start : start + block]
            t0 = time.process_time()
            for i in range(0, len(chunk), GOSSIP_BATCH):
                result = pool.add_many(chunk[i : i + GOSSIP_BATCH])
                if result.rejected:
                    raise SystemExit(f"refused: {result.rejected[0][1]}")
            t1 = time.process_time()
            prepared = app.prepare(
                app.height + 1, T0 + 1000 * (app.height + 1), VAL.public_key, pool.reap(),
                app.commit(app.height),
            )  # fmt: skip
            t2 = time.process_time()
            app.validate_block(prepared.block_bytes)
            written = _written_bytes() if commits is not None else 0
            t3 = time.process_time()
            app.commit_block(prepared.block_bytes, [[VAL.public_key, b"\x00" * 64]])
            t4 = time.process_time()
            if commits is not None and parts is not None:
                commits.append((t4 - t3, _written_bytes() - written, parts.take()))
            pool.update(app.decode_block(prepared.block_bytes).txs)
            t5 = time.process_time()
            marks = (t0, t1, t2, t3, t4, t5)
            for stage, a, b in zip(STAGES, marks[:-1], marks[1:], strict=True):
                spent[stage] += b - a
        app.store.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--block", type=int, default=1500, help="txs per block")
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-durable", dest="durable", action="store_false")
    parser.add_argument("--growth", type=int, metavar="N", help="commit cost per N blocks")
    args = parser.parse_args()
    g = genesis(admins=(ADMIN.public_key, *(k.public_key for k in ADMINS)))
    txs = _txs(g.chain_id, args.block * args.blocks)
    if args.growth:
        _print_growth(txs, args.block, args.durable, args.growth)
        return
    runs = []
    for _ in range(args.repeat):
        runs.append(run_once(txs, args.block, args.durable))
        txm.forget(txs)  # the next repeat decodes and verifies afresh too
    best = min(runs, key=lambda r: sum(r.values()))
    n = len(txs)
    parts = ", ".join(f"{s} {best[s] / n * 1e6:.1f}" for s in STAGES)
    print(
        f"{n} AddMeter txs in {args.blocks} blocks of {args.block}, durable={args.durable},"
        f" best of {args.repeat}"
    )
    print(f"  CPU per tx [µs]: {parts}; total {sum(best.values()) / n * 1e6:.1f}")
    print(f"  all repeats, total [µs/tx]: {[round(sum(r.values()) / n * 1e6, 1) for r in runs]}")


def _print_growth(txs: list[bytes], block: int, durable: bool, every: int) -> None:
    commits: list[Commit] = []
    run_once(txs, block, durable, commits)
    print(f"{len(txs)} AddMeter txs in blocks of {block}, durable={durable}: commit per tx")
    for first in range(0, len(commits), every):
        part = commits[first : first + every]
        n = len(part) * block
        cpu, written = sum(c[0] for c in part) / n * 1e6, sum(c[1] for c in part) / n / 1024
        index, tree = (sum(c[2][name] for c in part) / n * 1e6 for name in _CommitParts.NAMES)
        keys = (first + len(part)) * block * 2
        print(
            f"  blocks {first:4d}-{first + len(part) - 1:4d} (state ≤ {keys:,} keys):"
            f" CPU {cpu:6.1f} µs (tx index {index:4.1f}, state and tree {tree:5.1f}, rest"
            f" {cpu - index - tree:5.1f}), written {written:6.1f} KiB"
        )


if __name__ == "__main__":
    main()
