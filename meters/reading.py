"""What every meter driver returns, and the port the daemon polls through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class MeterError(Exception):
    """Base of every error the meters package raises on purpose."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One read of a meter's cumulative registers.

    Attributes:
        meter_id: the meter's identification (serial / equipment id, e.g. OBIS 0.0.0 or 96.1.1).
        import_wh: cumulative active energy imported from the grid, A+ (OBIS 1.8.0) [Wh].
        export_wh: cumulative active energy exported to the grid, A− (OBIS 2.8.0) [Wh].
        power_w: instantaneous active power, positive when importing [W]; None if not given.
        meter_time: the meter's own clock (timezone-aware UTC) if it reports one.
    """

    meter_id: str
    import_wh: int
    export_wh: int
    power_w: int | None = None
    meter_time: datetime | None = None


class MeterDriver(Protocol):
    """An async meter connection. ``read`` raises :class:`MeterError` subclasses on failure."""

    async def read(self) -> Reading: ...

    async def close(self) -> None: ...
