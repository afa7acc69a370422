"""Retained memory per committed block, by component (tracemalloc, one process).

Four validators and one member (real LMDB stores without fsync, real ed25519, in-memory
transport on the event loop; ``tests/support/growth.py``) commit blocks carrying
``--txs-per-block`` signed admin txs. At each of ``--heights`` (every node committed that far)
the script collects garbage and takes a tracemalloc snapshot; it prints the traced total,
the bytes gained per block between samples, and the gain per source file and per line, so a
structure that keeps something per block shows up by name (docs/spec/daemon.md §Memory bounds).
Figures are for all five nodes together (divide by 5 for one node).

Usage::

    .venv/bin/python bench/memory_growth.py [--heights 500,1500,3000] [--txs-per-block 2]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from ledger import tx as txm  # noqa: E402
from tests.support.growth import Sample, growth_by_file, growth_by_line, run_growth  # noqa: E402

NODES = 5


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heights", default="500,1500,3000", help="sample heights, increasing")
    p.add_argument("--txs-per-block", type=int, default=2, help="signed txs offered per height")
    p.add_argument("--files", type=int, default=12, help="source files listed per interval")
    p.add_argument("--lines", type=int, default=8, help="source lines listed per interval")
    return p.parse_args()


def _report(a: Sample, b: Sample, files: int, lines: int) -> None:
    blocks = b.height - a.height
    gained = b.traced - a.traced
    per_block = gained / blocks
    print(
        f"\nheight {a.height} -> {b.height}: {gained / 1e3:+.1f} kB retained, "
        f"{per_block:+.0f} B/block for {NODES} nodes ({per_block / NODES:+.0f} B/block/node)"
    )
    print(f"  {'kB':>9}  {'B/block/node':>12}  file")
    for name, size in list(growth_by_file(a, b, str(ROOT) + "/").items())[:files]:
        print(f"  {size / 1e3:>9.1f}  {size / blocks / NODES:>12.1f}  {name}")
    print(f"  {'kB':>9}  {'blocks':>12}  line")
    for where, size, count in growth_by_line(a, b, lines):
        print(f"  {size / 1e3:>9.1f}  {count:>12}  {where.removeprefix(str(ROOT) + '/')}")


def main() -> None:
    args = _parse()
    heights = sorted({int(h) for h in args.heights.split(",")})
    t0 = time.monotonic()
    samples = run_growth(heights, txs_per_block=args.txs_per_block)
    wall = time.monotonic() - t0
    print(
        f"{NODES} nodes (4 validators, 1 member), {args.txs_per_block} txs per height, "
        f"{heights[-1]} blocks in {wall:.0f} s"
    )
    for s in samples:
        print(f"  height {s.height:>6}: traced {s.traced / 1e6:7.2f} MB")
    for a, b in itertools.pairwise(samples):
        _report(a, b, args.files, args.lines)
    print(f"\ntx caches at the end (process-wide): {txm.cache_sizes()}")


if __name__ == "__main__":
    main()
