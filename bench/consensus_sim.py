"""In-process consensus figures: decisions/s, commit latency (virtual and real), traffic per block.

Runs the deterministic simulation (ledger/consensus/sim.py: real ed25519 signatures, real LMDB
sign-states and WALs, virtual network time) for 4, 7 and 31 validators, one tx per height, and
prints per community size:

- decisions/s: heights committed per second of real (CPU) time, all nodes in one process;
- commit latency: tx submission → committed on every node, p50/p99, in virtual ms (network
  delays 1–10 ms, no faults) and in real ms spent computing it;
- messages and bytes per block: publishes (one per broadcast, as on MQTT) and deliveries.

Usage: .venv/bin/python bench/consensus_sim.py [--heights 30] [--sizes 4,7,31] [--durable]
       [--drop 0.0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ledger.consensus.sim import Simulation
from ledger.transport.memory import LinkFaults


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(size: int, heights: int, durable: bool, drop: float) -> dict[str, float]:
    """Commit ``heights`` blocks with ``size`` validators; return the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        faults = LinkFaults(drop_rate=drop, min_delay_ms=1, max_delay_ms=10)
        sim = Simulation(Path(tmp), validators=size, seed=size, faults=faults, durable=durable)
        virtual_ms: list[float] = []
        real_ms: list[float] = []
        stats0 = dict(sim.network.stats)
        wall0 = time.perf_counter()
        for h in range(1, heights + 1):
            t_virtual, t_real = sim.clock.now_ms(), time.perf_counter()
            sim.submit(count=1)
            if not sim.run_until(sim.all_reach(h), 600_000):
                raise SystemExit(f"{size} validators: height {h} not reached")
            virtual_ms.append(sim.clock.now_ms() - t_virtual)
            real_ms.append((time.perf_counter() - t_real) * 1000)
        wall = time.perf_counter() - wall0
        sim.check_agreement()
        sim.check_no_double_sign()
        st = sim.network.stats
        return {
            "decisions_per_s": heights / wall,
            "virtual_p50_ms": statistics.median(virtual_ms),
            "virtual_p99_ms": _pct(virtual_ms, 0.99),
            "real_p50_ms": statistics.median(real_ms),
            "real_p99_ms": _pct(real_ms, 0.99),
            "publishes_per_block": (st["published"] - stats0.get("published", 0)) / heights,
            "published_kb_per_block": (st["published_bytes"] - stats0.get("published_bytes", 0))
            / heights
            / 1024,
            "deliveries_per_block": st["delivered"] / heights,
            "delivered_kb_per_block": st["delivered_bytes"] / heights / 1024,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heights", type=int, default=30)
    parser.add_argument("--sizes", default="4,7,31")
    parser.add_argument("--durable", action="store_true", help="fsync sign-state and WAL")
    parser.add_argument("--drop", type=float, default=0.0, help="message drop rate")
    args = parser.parse_args()
    cols = [
        ("decisions/s", "decisions_per_s", "{:.1f}"),
        ("virt p50 ms", "virtual_p50_ms", "{:.0f}"),
        ("virt p99 ms", "virtual_p99_ms", "{:.0f}"),
        ("real p50 ms", "real_p50_ms", "{:.1f}"),
        ("real p99 ms", "real_p99_ms", "{:.1f}"),
        ("pub msgs/blk", "publishes_per_block", "{:.1f}"),
        ("pub KiB/blk", "published_kb_per_block", "{:.1f}"),
        ("dlv msgs/blk", "deliveries_per_block", "{:.0f}"),
        ("dlv KiB/blk", "delivered_kb_per_block", "{:.1f}"),
    ]
    print(
        f"consensus simulation: {args.heights} heights, 1 tx each, "
        f"durable={args.durable}, drop={args.drop}"
    )
    print(f"{'validators':>10} " + " ".join(f"{c[0]:>12}" for c in cols))
    for size in (int(s) for s in args.sizes.split(",")):
        fig = run(size, args.heights, args.durable, args.drop)
        print(f"{size:>10} " + " ".join(f"{fmt.format(fig[key]):>12}" for _, key, fmt in cols))


if __name__ == "__main__":
    main()
