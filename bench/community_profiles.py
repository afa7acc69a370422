"""Deterministic synthetic community profiles: per member and 15-minute slot, import/export [Wh].

Used by bench/settle_month.py (a month of 1,000 members) and bench/make_community_day.py
(examples/community_day.json). Not a validated load model: shapes that look like a Swiss
village in May (UTC slots; local time = UTC+2), enough to exercise settlement realistically.

- household load: a daily energy of 4–20 kWh (heavier tail for heat pumps), spread over the day
  with a two-peak residential shape, ±40 % noise per slot, some evening EV charging;
- PV on about 40 % of the homes (3–12 kWp): a clear-sky bell between sunrise (03:45 UTC) and
  sunset (19:00 UTC) times a per-day weather factor and a per-slot cloud factor shared by the
  village;
- the meter's two registers: within 15 minutes a home with PV both draws and feeds in when its
  load fluctuates around its production, so part of min(load, PV) shows on both registers.

Floats are used to shape the curves only; every output value is an ``int`` [Wh].
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

SLOTS_PER_DAY = 96
SUNRISE_H, SUNSET_H = 3.75, 19.0  # UTC, mid-May, 47° N

# Relative residential load per UTC hour (local 02:00 ... 01:00): night base, morning and
# evening peaks.
LOAD_SHAPE = (
    0.55, 0.5, 0.5, 0.5, 0.7, 1.1, 1.3, 1.0, 0.9, 0.9, 1.0, 1.1,
    0.9, 0.8, 0.8, 1.0, 1.4, 1.7, 1.8, 1.6, 1.3, 1.0, 0.8, 0.6,
)  # fmt: skip
_SHAPE_SUM = sum(LOAD_SHAPE)


@dataclass(frozen=True)
class Home:
    """One member's fixed characteristics."""

    name: str
    daily_kwh: float
    pv_kwp: float
    ev: bool


def homes(count: int, rng: random.Random) -> list[Home]:
    """Draw ``count`` homes; names ``M0001`` ... in order."""
    out = []
    for i in range(count):
        daily = min(40.0, rng.lognormvariate(math.log(9.0), 0.4))
        pv = rng.choice((3.0, 4.5, 6.0, 8.0, 10.0, 12.0)) if rng.random() < 0.4 else 0.0
        out.append(Home(f"M{i + 1:04d}", daily, pv, rng.random() < 0.12))
    return out


def clear_sky(slot_of_day: int) -> float:
    """Relative clear-sky PV output [0..1] at the middle of the slot."""
    hour = (slot_of_day + 0.5) / 4
    if not SUNRISE_H < hour < SUNSET_H:
        return 0.0
    return math.sin(math.pi * (hour - SUNRISE_H) / (SUNSET_H - SUNRISE_H)) ** 1.3


def generate(
    count: int, days: int, seed: int
) -> tuple[list[Home], Iterator[tuple[array[int], array[int]]]]:
    """Homes and, per slot, two arrays (import, export) [Wh] in the homes' order.

    The iterator is lazy: one slot's arrays at a time.
    """
    rng = random.Random(seed)
    village = homes(count, rng)
    return village, _slots(village, days, rng)


def _slots(
    village: list[Home], days: int, rng: random.Random
) -> Iterator[tuple[array[int], array[int]]]:
    uniform = rng.random
    for _day in range(days):
        weather = rng.choice((1.0, 0.95, 0.9, 0.75, 0.5, 0.3, 0.15))
        for k in range(SLOTS_PER_DAY):
            sun = clear_sky(k) * weather * (1.0 - 0.3 * uniform() * (1.2 - weather))
            shape = LOAD_SHAPE[k // 4] / _SHAPE_SUM / 4  # share of the day's energy in 15 min
            evening = 72 <= k < 88
            imports, exports = array("q"), array("q")
            for home in village:
                load = home.daily_kwh * 1000 * shape * (0.6 + 0.8 * uniform())
                if home.ev and evening and uniform() < 0.25:
                    load += 2750 * uniform()  # an 11 kW wallbox for part of the slot
                pv = home.pv_kwp * 1000 / 4 * sun * (0.85 + 0.1 * uniform())
                both = min(load, pv) * 0.12 * uniform()
                imports.append(round(max(load - pv, 0.0) + both))
                exports.append(round(max(pv - load, 0.0) + both))
            yield imports, exports
