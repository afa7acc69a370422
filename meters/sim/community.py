"""The Lugaggia Innovation Community as simulated meters (seed 000 §5; simulator.md §Pilot).

The pilot near Lugano (46.06 °N, 8.96 °E) has 18 houses and a kindergarten. Four houses carry
rooftop PV totalling 37 kWp; the kindergarten has 27 kWp of PV and a 60 kWh battery. Annual
consumptions, which houses have PV and the register start values are drawn from the seed, so a
demo community is the same on every run with the same seed.
"""

from __future__ import annotations

import functools
import random

from meters.sim.meter import MeterSpec
from meters.sim.table import DEFAULT_TABLE, ProfileTable

__all__ = ["KINDERGARTEN_ID", "PV_HOUSES_WP", "default_table", "pilot_community"]

PV_HOUSES_WP = (7_500, 8_500, 9_500, 11_500)
"""Peak power of the four PV houses [Wp]; they total the pilot's 37 kWp."""

KINDERGARTEN_ID = "lic-kg"
_HOUSES = 18


@functools.cache
def default_table() -> ProfileTable:
    """The shipped Lugaggia profile table (loaded once per process, ≈0.3 MB in memory)."""
    return ProfileTable.load_file(DEFAULT_TABLE)


def pilot_community(seed: int) -> list[MeterSpec]:
    """The 19 meters of the Lugaggia pilot: 18 houses then the kindergarten.

    Args:
        seed: selects annual demands, which houses have PV, noise, clouds and start registers.

    Returns:
        Specs with ids ``lic-h01`` … ``lic-h18`` and ``lic-kg``, in that order.
    """
    rng = random.Random(seed)
    pv_houses = rng.sample(range(_HOUSES), len(PV_HOUSES_WP))
    specs = []
    for n in range(_HOUSES):
        pv_wp = PV_HOUSES_WP[pv_houses.index(n)] if n in pv_houses else 0
        specs.append(
            MeterSpec(
                meter_id=f"lic-h{n + 1:02d}",
                # Swiss households: 2.5–6.5 MWh/a; PV owners tend to the larger homes.
                annual_kwh=rng.randint(4_000, 7_000) if pv_wp else rng.randint(2_500, 6_500),
                load_profile="h0",
                pv_wp=pv_wp,
                seed=rng.getrandbits(32),
                initial_import_wh=rng.randint(1_000, 40_000) * 1000 + rng.randint(0, 999),
                initial_export_wh=rng.randint(100, 20_000) * 1000 if pv_wp else 0,
            )
        )
    specs.append(
        MeterSpec(
            meter_id=KINDERGARTEN_ID,
            annual_kwh=rng.randint(14_000, 20_000),
            load_profile="g1",
            pv_wp=27_000,
            battery_wh=60_000,
            battery_w=20_000,
            seed=rng.getrandbits(32),
            initial_import_wh=rng.randint(10_000, 80_000) * 1000,
            initial_export_wh=rng.randint(5_000, 40_000) * 1000,
            noise_permille=200,
        )
    )
    return specs
