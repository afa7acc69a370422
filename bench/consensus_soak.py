"""Consensus soak: the agreement property over many seeded chaos schedules (minutes, not CI).

Each seed picks 4 or 7 validators and link faults (drop 0–30 %, duplicates, reorders), runs a
random schedule of txs, crashes (at most f down), restarts and partitions on the virtual clock,
then heals everything and requires every node to gain 2 heights. Prints one line per failing
seed and a summary: runs, agreement violations, double signs, stuck runs, real time.

Usage: .venv/bin/python bench/consensus_soak.py [--first 0] [--count 200] [--steps 12]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from ledger.consensus.sim import Simulation
from ledger.transport.memory import LinkFaults


def one(seed: int, steps: int) -> str:
    """Run one seeded schedule; returns "" or what went wrong."""
    rng = random.Random(seed)
    n = rng.choice([4, 7])
    faults = LinkFaults(
        drop_rate=rng.choice([0.0, 0.1, 0.3]),
        duplicate_rate=rng.choice([0.0, 0.2]),
        reorder_rate=rng.choice([0.0, 0.2]),
        max_delay_ms=80,
    )
    with tempfile.TemporaryDirectory() as tmp:
        sim = Simulation(Path(tmp), validators=n, seed=seed, faults=faults)
        sim.chaos(rng, steps)
        try:
            sim.check_agreement()
            sim.check_no_double_sign()
        except AssertionError as exc:
            return f"during faults: {exc}"
        healed = sim.heal_all(2)
        try:
            sim.check_agreement()
            sim.check_no_double_sign()
        except AssertionError as exc:
            return f"after healing: {exc}"
        return "" if healed else f"stuck at {[x.height for x in sim.nodes.values()]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    started = time.perf_counter()
    failures = 0
    for seed in range(args.first, args.first + args.count):
        problem = one(seed, args.steps)
        if problem:
            failures += 1
            print(f"seed {seed}: {problem}")
    elapsed = time.perf_counter() - started
    print(f"{args.count} seeded schedules, {failures} failing, {elapsed:.0f} s real time")


if __name__ == "__main__":
    main()
