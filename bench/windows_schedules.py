"""Time the market-window auction, its validation and a day of schedule settlement; print figures.

Run:

    .venv/bin/python bench/windows_schedules.py
    .venv/bin/python bench/windows_schedules.py --requests 10000 --meters 2000

Inputs are seeded pseudo-random (random.Random(7)), so runs are comparable. Each figure is the
best of three runs of the pure engine (market.windows, market.schedules): the ledger adds state
reads and writes around the same calls.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from fractions import Fraction

from market.decimals import format_decimal
from market.schedules import SLOTS_PER_DAY, MemberDay, Prices, settle_day
from market.windows import Request, Side, clear, validate_trades


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """Shortest wall time of ``runs`` calls [s]."""
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def window_inputs(n: int, rnd: random.Random) -> list[Request]:
    return [
        Request(
            f"m{i}",
            Side.BUY if i % 2 else Side.SELL,
            rnd.randint(100, 10_000),
            Fraction(rnd.randint(100, 400), 1000),
            i,
        )
        for i in range(n)
    ]


def day_inputs(n: int, rnd: random.Random) -> list[MemberDay]:
    days = []
    for i in range(n):
        schedule = tuple(rnd.randint(-500, 1_500) for _ in range(SLOTS_PER_DAY))
        net = [s + rnd.randint(-200, 200) for s in schedule]
        days.append(
            MemberDay(
                f"m{i}",
                schedule,
                tuple(max(0, x) for x in net),
                tuple(max(0, -x) for x in net),
            )
        )
    return days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1_000, help="requests in one window")
    parser.add_argument("--meters", type=int, default=1_000, help="meters settled in one day")
    args = parser.parse_args()
    rnd = random.Random(7)

    requests = window_inputs(args.requests, rnd)
    clearing = clear(requests)
    t_clear = best_of(3, lambda: clear(requests))
    metered = {r.member: r.energy_wh for r in requests}
    funds = {r.member: rnd.randint(0, 10**9) for r in requests}
    t_validate = best_of(3, lambda: validate_trades(clearing.trades, metered, metered, funds))
    price = "none" if clearing.price is None else format_decimal(clearing.price)
    print(
        f"window: {args.requests} requests -> {len(clearing.trades)} trades, "
        f"{clearing.quantity_wh} Wh at {price} ECT/kWh; "
        f"clear {t_clear * 1e3:.1f} ms, validate {t_validate * 1e3:.1f} ms"
    )

    days = day_inputs(args.meters, rnd)
    prices = Prices(
        Fraction("0.20"), Fraction("0.30"), Fraction("0.10"), Fraction("0.25"), Fraction("0.08")
    )
    t_day = best_of(3, lambda: settle_day(days, prices))
    result = settle_day(days, prices)
    print(
        f"schedules: {args.meters} meters x {SLOTS_PER_DAY} slots settled in "
        f"{t_day * 1e3:.0f} ms; supervisor {result.supervisor_uect} uECT, "
        f"grid {result.grid_uect} uECT"
    )


if __name__ == "__main__":
    main()
