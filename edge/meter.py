"""The meter task: poll the driver, integrate 15-min slots, store closed slots in the outbox.

Spec: docs/spec/daemon.md §Meter loop. Each poll is one ``driver.read()`` under a timeout; the
reading goes to the pure slot integrator (meters/integrator.py), and every slot record it closes
is written to the LMDB outbox in ONE transaction together with the integrator checkpoint (and
the simulated meter's state), so after a power cut the daemon resumes exactly where the stored
records end: no slot is lost, none is produced twice. A failed read is counted, logged
(rate-limited) and never becomes energy; the loop goes on, the ledger never notices.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from edge.clock import DaemonClock
from edge.config import ConfigError, MeterConfig
from edge.health import Health
from edge.metrics import Metrics
from edge.outbox import Outbox, OutboxRecord
from meters.integrator import CheckpointError, Integrator, SlotRecord, wall_to_ms
from meters.reading import MeterDriver, MeterError, Reading

log = logging.getLogger("lemd.meter")

CHECKPOINT_KEY = "integrator"
SIM_STATE_KEY = "sim_state"
HEALTH_NAME = "meter"


def build_driver(config: MeterConfig, clock: DaemonClock, sim_state: Any = None) -> MeterDriver:
    """The driver ``config`` describes.

    Args:
        config: the ``[meter]`` section.
        clock: the daemon clock (the simulated meter follows it).
        sim_state: a stored ``SimState.to_dict()`` to continue a simulated meter from.

    Raises:
        ConfigError: an unknown or invalid ``meter.options`` entry (named).
    """
    try:
        if config.driver == "iec":
            from meters.iec_driver import IecConfig, IecDriver

            opts = _options(config, IecConfig, exclude=("port",))
            return IecDriver(IecConfig(port=config.port, meter_id=config.meter_id or None, **opts))
        if config.driver == "p1":
            from meters.p1 import P1Config, P1Driver

            opts = _options(config, P1Config, exclude=("port",))
            return P1Driver(P1Config(port=config.port, meter_id=config.meter_id or None, **opts))
        if config.driver == "modbus":
            return _modbus(config)
        return _sim(config, clock, sim_state)
    except (ValueError, TypeError, MeterError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"meter.options: {exc}") from exc


def _options(config: MeterConfig, cls: type, exclude: tuple[str, ...]) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)} - set(exclude) - {"meter_id"}
    for name in config.options:
        if name not in known:
            raise ConfigError(
                f"unknown key meter.options.{name} for driver {config.driver} "
                f"(known: {', '.join(sorted(known))})"
            )
    opts = dict(config.options)
    for name, value in opts.items():
        if isinstance(value, list):
            opts[name] = tuple(value)
    return opts


def _modbus(config: MeterConfig) -> MeterDriver:
    from meters.modbus import ModbusMeter, parse_target
    from meters.modbus_maps import register_map

    allowed = {"map", "unit", "baudrate", "timeout_s"}
    for name in config.options:
        if name not in allowed:
            raise ConfigError(
                f"unknown key meter.options.{name} for driver modbus "
                f"(known: {', '.join(sorted(allowed))})"
            )
    o = config.options
    target = parse_target(config.port, int(o.get("baudrate", 9600)))
    return ModbusMeter(
        target,
        register_map(str(o.get("map", "sdm630"))),
        meter_id=config.meter_id or str(target),
        device_id=int(o.get("unit", 1)),
        timeout_s=float(o.get("timeout_s", 2.0)),
    )


def _sim(config: MeterConfig, clock: DaemonClock, sim_state: Any) -> MeterDriver:
    from meters.sim.community import default_table, pilot_community
    from meters.sim.meter import MeterSpec, SimState, SimulatedMeter

    opts = dict(config.options)
    community_seed = opts.pop("community_seed", 2025)
    if type(community_seed) is not int:
        raise ConfigError(f"meter.options.community_seed = {community_seed!r}: must be int")
    known = {f.name for f in dataclasses.fields(MeterSpec)} - {"meter_id"}
    for name, value in opts.items():
        if name not in known:
            raise ConfigError(
                f"unknown key meter.options.{name} for driver sim "
                f"(known: community_seed, {', '.join(sorted(known))})"
            )
        if name != "load_profile" and type(value) is not int:
            raise ConfigError(f"meter.options.{name} = {value!r}: must be int")
    meter_id = config.meter_id or "sim-1"
    pilot = {s.meter_id: s for s in pilot_community(community_seed)}
    if meter_id in pilot:
        spec = dataclasses.replace(pilot[meter_id], **opts)
    elif "annual_kwh" in opts:
        spec = MeterSpec(meter_id=meter_id, **opts)
    else:
        raise ConfigError(
            f"meter.meter_id = {meter_id!r}: not a pilot meter (lic-h01..lic-h18, lic-kg); "
            "give meter.options.annual_kwh for a custom simulated meter"
        )
    state = SimState.from_dict(sim_state) if isinstance(sim_state, dict) else None
    return SimulatedMeter(spec, default_table(), clock, state)


def to_outbox(record: SlotRecord, created_s: int) -> OutboxRecord:
    """The outbox form of an integrator record (slot start in whole UTC seconds)."""
    return OutboxRecord(
        record.meter_id,
        wall_to_ms(record.slot_start) // 1000,
        record.import_wh,
        record.export_wh,
        tuple(record.flags.names()),
        created_s,
    )


class MeterLoop:
    """Polls one meter for the life of the daemon.

    Args:
        driver: the meter driver.
        outbox: where closed slots go.
        clock: the daemon clock (wall and monotonic on one scale).
        poll_interval_s: real seconds between reads [s].
        health: beaten after every poll attempt, good or failed.
        metrics: counters and gauges.
        expected_meter_id: if set, readings of another meter are refused.
        read_timeout_s: bound on one read [s].
        wall_clock: real UTC time [s] for the records' creation time.
        on_records: called after closed slots were stored (wakes the submitter).
    """

    def __init__(
        self,
        driver: MeterDriver,
        outbox: Outbox,
        clock: DaemonClock,
        *,
        poll_interval_s: float,
        health: Health,
        metrics: Metrics,
        expected_meter_id: str = "",
        read_timeout_s: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
        on_records: Callable[[], None] | None = None,
    ) -> None:
        self.driver = driver
        self.outbox = outbox
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.health = health
        self.metrics = metrics
        self.expected_meter_id = expected_meter_id
        self.read_timeout_s = read_timeout_s
        self._wall = wall_clock
        self._on_records = on_records
        self.integrator = self._restore()
        self.last_reading: Reading | None = None
        self.last_read_s: float | None = None  # daemon-clock time of the last good read
        self.last_error = ""
        self.tried = asyncio.Event()
        self.records_written = 0

    def _restore(self) -> Integrator:
        # Sample intervals are real poll intervals times the clock speed; scale the gap and
        # clock-step thresholds with it so an accelerated demo is not flagged everywhere.
        speed = self.clock.speed
        gap_s = max(60, int(3 * self.poll_interval_s * speed))
        tolerance_ms = max(2_000, int(2_000 * speed))
        data = self.outbox.load_meta(CHECKPOINT_KEY)
        if data is None:
            return Integrator(gap_s=gap_s, clock_tolerance_ms=tolerance_ms)
        try:
            # A restart (even of the process alone) restarts our monotonic scale.
            return Integrator.from_checkpoint(
                data, same_boot=False, gap_s=gap_s, clock_tolerance_ms=tolerance_ms
            )
        except CheckpointError as exc:
            # The stored records stay; only the open slot's partial energy is unknown.
            log.error("integrator checkpoint unusable, starting a fresh baseline", exc_info=exc)
            return Integrator(gap_s=gap_s, clock_tolerance_ms=tolerance_ms)

    async def run(self) -> None:
        """Poll every ``poll_interval_s`` until cancelled."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.poll_once()
            next_at += self.poll_interval_s
            delay = next_at - loop.time()
            if delay < 0:  # a slow read: do not burst to catch up
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)

    async def poll_once(self) -> list[OutboxRecord]:
        """One read → integrator → outbox; returns the records stored by this poll."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.read_timeout_s):
                reading = await self.driver.read()
            if self.expected_meter_id and reading.meter_id != self.expected_meter_id:
                raise MeterError(
                    f"meter reports id {reading.meter_id!r}, config expects "
                    f"{self.expected_meter_id!r}"
                )
        except (MeterError, TimeoutError) as exc:
            self._failed(exc)
            return []
        except (OSError, ValueError) as exc:
            # A driver that lets a raw I/O or parse error escape is a driver bug, but a meter
            # must never take the ledger down: count it, log it with its traceback, go on.
            self._failed(exc)
            log.error("meter driver raised an unexpected error", exc_info=exc)
            return []
        finally:
            self.tried.set()
            self.health.beat(HEALTH_NAME)
        self.metrics.meter_read_seconds.observe(time.perf_counter() - started)
        return self._account(reading)

    def _failed(self, exc: Exception) -> None:
        reason = type(exc).__name__
        self.metrics.meter_read_failures.labels(reason=reason).inc()
        self.last_error = str(exc) or reason
        log.warning("meter read failed", extra={"reason": reason, "detail": self.last_error})

    def _account(self, reading: Reading) -> list[OutboxRecord]:
        wall, mono = self.clock.now(), self.clock.monotonic()
        self.last_reading, self.last_read_s, self.last_error = reading, self.clock.time_s(), ""
        self.metrics.meter_reads.inc()
        self.metrics.meter_last_read_timestamp.set(self.clock.time_s())
        if reading.power_w is not None:
            self.metrics.meter_power.set(reading.power_w)
        closed = self.integrator.feed(reading, wall, mono)
        if not closed:
            return []
        created_s = int(self._wall())
        records = [to_outbox(r, created_s) for r in closed]
        self.outbox.put_many(records, meta=self._checkpoint())
        self.records_written += len(records)
        if self._on_records is not None:
            self._on_records()  # wake the submitter
        for r in records:
            self.metrics.slots_closed.inc()
            self.metrics.slot_import.set(r.import_wh)
            self.metrics.slot_export.set(r.export_wh)
        log.info(
            "slots closed",
            extra={"count": len(records), "last_slot_s": records[-1].slot_start_s},
        )
        return records

    def _checkpoint(self) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        state = self.integrator.state
        if state is not None:
            meta[CHECKPOINT_KEY] = state.to_dict()
        sim_state = getattr(self.driver, "state", None)
        if sim_state is not None and hasattr(sim_state, "to_dict"):
            meta[SIM_STATE_KEY] = sim_state.to_dict()
        return meta

    def flush(self) -> None:
        """Persist the checkpoint (shutdown): the next start continues the open slot."""
        meta = self._checkpoint()
        if meta:
            self.outbox.put_many([], meta=meta)
