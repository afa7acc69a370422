"""Offline generation of the simulator's profile table (docs/spec/simulator.md §Table).

This is the only module of the package that uses pandas, numpy, demandlib and pvlib, and it
imports them inside :func:`build_table` only, so importing it costs nothing and the daemon's
runtime path (``meters.sim.meter``) never loads them. Run it on a development machine with the
``sim`` extra installed::

    python -m meters.sim.profiles --out meters/sim/data/lugaggia-2025.lemprof

Model:

* Load: demandlib's BDEW standard load profiles — ``h0`` is the dynamised household profile
  (``h0_dyn``, daily smoothing polynomial of the BDEW), ``g1`` the weekday 8–18 h commercial
  profile (used for the kindergarten) — scaled to 10⁶ kWh/a. BDEW profiles are given in local
  time; the table treats them as CET (UTC+01:00, no daylight saving) and shifts them to UTC.
* PV: pvlib Ineichen clear-sky irradiance (Linke turbidity from pvlib's climatology) at the
  slot midpoints, transposed to a tilted south-facing plane (isotropic sky), Faiman cell
  temperature with a seasonal ambient temperature, PVWatts DC model (γ = −0.4 %/K), 14 %
  system losses and the PVWatts inverter (96 %). Clouds are not in the table: the meter adds
  seeded clouds at playback.
"""

from __future__ import annotations

import argparse
import math
from array import array
from pathlib import Path

from meters.sim.table import DEFAULT_TABLE, ProfileTable

__all__ = ["LUGAGGIA", "build_table", "main"]

LUGAGGIA = (46.06, 8.96, 400)
"""Latitude [deg], longitude [deg] and altitude [m] of the Lugaggia pilot (seed 000, §5)."""

_LOAD_PROFILES = {"h0": "h0_dyn", "g1": "g1"}
_ANNUAL_KWH = 1_000_000
_SYSTEM_LOSSES = 0.14


def build_table(
    latitude: float = LUGAGGIA[0],
    longitude: float = LUGAGGIA[1],
    *,
    altitude_m: float = LUGAGGIA[2],
    ref_year: int = 2025,
    tilt_deg: float = 30.0,
    azimuth_deg: float = 180.0,
) -> ProfileTable:
    """Generate the integer profile table for a site.

    Args:
        latitude: site latitude [deg], north positive.
        longitude: site longitude [deg], east positive.
        altitude_m: site altitude [m] (clear-sky air mass).
        ref_year: a non-leap reference year.
        tilt_deg: PV module tilt from horizontal [deg].
        azimuth_deg: PV module azimuth [deg], 180 = south.
    """
    if ref_year % 4 == 0:
        raise ValueError("the reference year must not be a leap year (the table has 365 days)")
    load = _load_series(ref_year)
    pv = _pv_series(latitude, longitude, altitude_m, ref_year, tilt_deg, azimuth_deg)
    import demandlib
    import pvlib

    source = (
        f"demandlib {demandlib.__version__} BDEW h0_dyn/g1 at 1e6 kWh/a (CET->UTC); "
        f"pvlib {pvlib.__version__} Ineichen clear sky, tilt {tilt_deg} az {azimuth_deg}, "
        f"PVWatts, losses {_SYSTEM_LOSSES}; site {latitude},{longitude},{altitude_m} m"
    )
    return ProfileTable(
        ref_year=ref_year,
        latitude_e6=round(latitude * 1_000_000),
        longitude_e6=round(longitude * 1_000_000),
        source=source,
        load=load,
        pv=pv,
    )


def _load_series(ref_year: int) -> dict[str, array[int]]:
    import numpy as np
    from demandlib import bdew

    frame = bdew.ElecSlp(ref_year).get_scaled_power_profiles(
        dict.fromkeys(_LOAD_PROFILES.values(), _ANNUAL_KWH)
    )
    out = {}
    for name, column in _LOAD_PROFILES.items():
        watts = np.rint(frame[column].to_numpy() * 1000.0).astype(np.int64)
        # Local CET slot k is UTC slot k − 4: the UTC series starts 4 slots later.
        out[name] = array("i", np.roll(watts, -4).tolist())
    return out


def _pv_series(
    latitude: float,
    longitude: float,
    altitude_m: float,
    ref_year: int,
    tilt_deg: float,
    azimuth_deg: float,
) -> array[int]:
    import numpy as np
    import pandas as pd
    import pvlib

    start = pd.Timestamp(f"{ref_year}-01-01 00:07:30", tz="UTC")  # slot midpoints
    times = pd.date_range(start, periods=365 * 96, freq="15min")
    site = pvlib.location.Location(latitude, longitude, tz="UTC", altitude=altitude_m)
    sun = site.get_solarposition(times)
    sky = site.get_clearsky(times, model="ineichen", solar_position=sun)
    poa = pvlib.irradiance.get_total_irradiance(
        tilt_deg,
        azimuth_deg,
        sun["apparent_zenith"],
        sun["azimuth"],
        sky["dni"],
        sky["ghi"],
        sky["dhi"],
    )["poa_global"].fillna(0.0)
    day = times.dayofyear.to_numpy()
    ambient_c = 12.0 - 10.0 * np.cos(2 * math.pi * (day - 15) / 365.0)
    cell_c = pvlib.temperature.faiman(poa, ambient_c, wind_speed=1.0)
    dc_w = pvlib.pvsystem.pvwatts_dc(poa, cell_c, pdc0=1000.0, gamma_pdc=-0.004)
    dc_w = dc_w * (1.0 - _SYSTEM_LOSSES)
    ac_w = pvlib.inverter.pvwatts(dc_w, pdc0=1000.0 / 0.96)
    milliwatts = np.rint(np.clip(np.nan_to_num(ac_w.to_numpy()), 0.0, None) * 1000.0)
    return array("i", milliwatts.astype(np.int64).tolist())


def main(argv: list[str] | None = None) -> int:
    """Command line: build a table and save it (default: the shipped Lugaggia table)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--lat", type=float, default=LUGAGGIA[0])
    parser.add_argument("--lon", type=float, default=LUGAGGIA[1])
    parser.add_argument("--altitude", type=float, default=LUGAGGIA[2])
    parser.add_argument("--year", type=int, default=2025)
    args = parser.parse_args(argv)
    table = build_table(args.lat, args.lon, altitude_m=args.altitude, ref_year=args.year)
    table.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): {table.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
