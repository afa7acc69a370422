"""The compact profile table the simulated meter plays back (docs/spec/simulator.md §Table).

A table holds, for one reference year at 15-minute resolution in UTC, integer series:

* ``load[name]``: standard load profile ``name`` (``h0``, ``g1``) scaled to 1 GWh per year,
  i.e. the average power of each quarter hour in W for an annual demand of 10⁶ kWh;
* ``pv``: clear-sky AC power of a 1 kWp rooftop system in mW (= W per 1000 kWp).

It is stored as zlib-compressed msgpack with each series as little-endian int32 bytes, so
loading needs neither pandas nor numpy and the series sit in compact ``array('i')`` buffers
(≈140 kB each) instead of lists of Python ints.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from meters.reading import MeterError

__all__ = ["FORMAT", "SLOT_S", "ProfileTable", "TableError"]

FORMAT = "lem-sim-profile/1"
SLOT_S = 900
"""Resolution of every series [s]."""


class TableError(MeterError):
    """A profile table file is missing, corrupt or of an unknown format."""


def _pack(series: array[int]) -> bytes:
    if sys.byteorder == "big":  # the file format is little-endian on every host
        series = array("i", series)
        series.byteswap()
    return series.tobytes()


def _unpack(raw: object, what: str, slots: int) -> array[int]:
    if not isinstance(raw, bytes) or len(raw) != 4 * slots:
        raise TableError(f"series {what!r} must be {4 * slots} bytes of int32")
    series = array("i")
    series.frombytes(raw)
    if sys.byteorder == "big":
        series.byteswap()
    return series


@dataclass(frozen=True)
class ProfileTable:
    """Integer load and PV series for one reference year (see module docstring).

    Attributes:
        ref_year: the calendar year the series were generated for (365 days).
        latitude_e6: site latitude [µdeg], north positive.
        longitude_e6: site longitude [µdeg], east positive.
        source: how the table was made (libraries, versions, parameters).
        load: standard load profiles by name, W at 10⁶ kWh/a, one value per slot.
        pv: AC power of 1 kWp [mW], one value per slot.
    """

    ref_year: int
    latitude_e6: int
    longitude_e6: int
    source: str
    load: Mapping[str, array[int]] = field(repr=False)
    pv: array[int] = field(repr=False)

    @property
    def slots(self) -> int:
        """Number of 15-minute values per series."""
        return len(self.pv)

    def encode(self) -> bytes:
        """The table as compressed bytes (the file format)."""
        doc = {
            "format": FORMAT,
            "ref_year": self.ref_year,
            "latitude_e6": self.latitude_e6,
            "longitude_e6": self.longitude_e6,
            "source": self.source,
            "slot_s": SLOT_S,
            "slots": self.slots,
            "load": {name: _pack(s) for name, s in sorted(self.load.items())},
            "pv": _pack(self.pv),
        }
        return zlib.compress(msgpack.packb(doc, use_bin_type=True), 9)

    @classmethod
    def decode(cls, blob: bytes) -> ProfileTable:
        """Parse bytes written by :meth:`encode`.

        Raises:
            TableError: not a profile table, an unknown format or a malformed series.
        """
        try:
            doc = msgpack.unpackb(zlib.decompress(blob), raw=False)
        except (zlib.error, ValueError, msgpack.ExtraData) as exc:
            raise TableError(f"not a profile table: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise TableError(f"unknown profile table format (expected {FORMAT!r})")
        if doc.get("slot_s") != SLOT_S:
            raise TableError(f"slot length must be {SLOT_S} s, got {doc.get('slot_s')!r}")
        slots = doc.get("slots")
        if slots != 365 * 24 * 4:
            raise TableError(f"a table holds 35040 slots (365 days), got {slots!r}")
        loads = doc.get("load")
        if not isinstance(loads, dict) or not loads:
            raise TableError("table has no load profile")
        return cls(
            ref_year=int(doc["ref_year"]),
            latitude_e6=int(doc["latitude_e6"]),
            longitude_e6=int(doc["longitude_e6"]),
            source=str(doc.get("source", "")),
            load={str(k): _unpack(v, f"load.{k}", slots) for k, v in loads.items()},
            pv=_unpack(doc.get("pv"), "pv", slots),
        )

    def save(self, path: Path) -> None:
        """Write the table to ``path``."""
        path.write_bytes(self.encode())

    @classmethod
    def load_file(cls, path: Path) -> ProfileTable:
        """Read a table written by :meth:`save`.

        Raises:
            TableError: the file is missing or not a valid table (the path is in the message).
        """
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise TableError(f"cannot read profile table {path}: {exc.strerror}") from exc
        try:
            return cls.decode(blob)
        except TableError as exc:
            raise TableError(f"{path}: {exc}") from exc


DEFAULT_TABLE = Path(__file__).with_name("data") / "lugaggia-2025.lemprof"
"""The shipped table for the Lugaggia pilot site (regenerate: ``python -m meters.sim.profiles``)."""
