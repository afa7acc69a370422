"""The fault matrix with separate node processes, a real mosquitto and a proxy per node.

Usage: .venv/bin/python bench/fault_matrix.py [--validators 4] [--seed 1] [--only SUBSTRING]
       [--lemd]

Runs every scenario of tests/support/fault_scenarios.py on a fresh cluster (``--validators``
validator processes + 1 member process; use 7 for the soak) and prints one row per scenario:
outcome, duration, final heights, signers seen double-signing (byzantine keys only), consensus
messages recorded. A row says FAIL with the violated invariant when a check breaks; the exit
status is the number of failed scenarios. The fast subset runs in the default test suite
(tests/e2e/test_fault_matrix.py). ``--lemd`` runs the scenarios of tests/support/lemd_faults.py
instead: a ``lemctl testnet init`` community of real lemd processes (``--validators`` + 2
members with simulated meters), each behind its own proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import fault_scenarios, lemd_faults


async def main_async(args: argparse.Namespace) -> int:
    failed = 0
    table = lemd_faults.LEMD_SCENARIOS if args.lemd else fault_scenarios.SCENARIOS
    names = [n for n in table if args.only.lower() in n.lower()]
    kind = "lemd processes" if args.lemd else "node processes"
    print(f"{args.validators} validators + members ({kind}), seed {args.seed}, mosquitto, proxies")
    print(f"{'scenario':44} {'result':6} {'s':>5}  outcome")
    start = time.monotonic()
    for i, name in enumerate(names):
        with tempfile.TemporaryDirectory(prefix="lem-fault-") as tmp:
            try:
                seed = args.seed * 100 + i
                if args.lemd:
                    row = await lemd_faults.run(
                        name, Path(tmp), args.validators, args.validators + 2, seed
                    )
                else:
                    row = await fault_scenarios.run(name, Path(tmp), args.validators, 1, seed)
            except AssertionError as exc:
                failed += 1
                print(f"{name:44} FAIL         {str(exc)[:300]}", flush=True)
                continue
        found = row.get("heights", {})
        heights = sorted(set(found.values() if isinstance(found, dict) else found))
        detail = f"{row['outcome']}; heights {heights}; double-signers {row.get('double_signers')}"
        if "divergence" in row:
            detail += f"; {row['divergence']}"
        print(f"{name:44} ok     {row['seconds']:5.0f}  {detail}", flush=True)
    print(
        f"{len(names) - failed}/{len(names)} scenarios passed in {time.monotonic() - start:.0f} s"
    )
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    parser.add_argument("--lemd", action="store_true", help="real lemd processes (testnet)")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
