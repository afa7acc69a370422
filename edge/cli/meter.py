"""``lemctl meter``: parse, read, probe and watch meters (the field technician's tool).

- ``meter parse FILE [--json]``: parse a raw IEC 62056-21 readout or DSMR telegram file.
- ``meter read --driver iec|p1|modbus|sim --port PATH_OR_HOST [...] [--json]``: one read.
- ``meter probe PORT``: which protocol and line settings answer on a serial port.
- ``meter watch --driver ... [--interval 5]``: a line per reading until Ctrl-C.

Exit status: 0 ok, 1 the meter or file gave an error (printed), 2 bad arguments.
Spec: docs/spec/meters.md "lemctl meter".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from meters.errors import MeterError
from meters.iec_driver import IecConfig, IecDriver
from meters.obis import NUMBER_RE, Readout, ValueGroup, parse_readout
from meters.p1 import PROFILES, P1Config, P1Driver
from meters.probe import probe
from meters.reading import MeterDriver, Reading

EXIT_METER = 1
EXIT_USAGE = 2
DRIVERS = ("iec", "p1", "modbus", "sim")


def register(subparsers: Any) -> None:
    """Add the ``meter`` command group to ``lemctl``'s parser."""
    meter = subparsers.add_parser("meter", help="parse, read, probe and watch smart meters")
    sub = meter.add_subparsers(dest="meter_command", required=True, metavar="ACTION")

    parse = sub.add_parser("parse", help="parse a raw readout or telegram file")
    parse.add_argument("file", metavar="FILE", help="readout/telegram file, or - for stdin")
    parse.add_argument("--json", action="store_true", help="print JSON")
    parse.add_argument(
        "--no-crc", action="store_true", help="ignore a CRC16 (meters known to send a wrong one)"
    )
    parse.add_argument("--tz", default="Europe/Amsterdam", help="zone of the meter clock")
    parse.set_defaults(func=run_parse)

    read = sub.add_parser("read", help="read the meter once")
    _driver_arguments(read)
    read.add_argument("--json", action="store_true", help="print JSON")
    read.set_defaults(func=run_read)

    watch = sub.add_parser("watch", help="read every few seconds until Ctrl-C")
    _driver_arguments(watch)
    watch.add_argument("--interval", type=float, default=5.0, help="seconds between reads")
    watch.add_argument("--count", type=int, default=0, help="stop after N reads (0: never)")
    watch.set_defaults(func=run_watch)

    probe_p = sub.add_parser("probe", help="find which protocol answers on a serial port")
    probe_p.add_argument("port", metavar="PORT", help="serial port, e.g. /dev/serial/by-id/…")
    probe_p.add_argument("--iec-timeout", type=float, default=2.0, help="[s]")
    probe_p.add_argument("--p1-timeout", type=float, default=11.0, help="[s]")
    probe_p.add_argument("--json", action="store_true", help="print JSON")
    probe_p.set_defaults(func=run_probe)


def _driver_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--driver", required=True, choices=DRIVERS)
    parser.add_argument("--port", help="serial port path, or HOST[:PORT] for Modbus TCP")
    parser.add_argument("--meter-id", help="expected (iec) or fallback (p1, modbus, sim) id")
    iec = parser.add_argument_group("iec")
    iec.add_argument("--address", default="", help="device address for the sign-on")
    iec.add_argument("--mode", choices=("programming", "readout"), default="programming")
    iec.add_argument("--registers", default="1.8.0,2.8.0,1.7.0,2.7.0", help="R2 list")
    iec.add_argument("--password", help="P1 password if the meter asks for one")
    iec.add_argument("--max-baud", type=int, default=9600)
    iec.add_argument("--switch-delay", type=float, default=0.3, help="[s] before baud switch")
    iec.add_argument("--wakeup", type=int, default=0, help="NUL bytes before sign-on")
    p1 = parser.add_argument_group("p1")
    p1.add_argument("--baud", type=int, default=None, help="p1: 115200 or 9600; modbus RTU")
    p1.add_argument("--profile", choices=sorted(PROFILES), help="dsmr_parser specification")
    other = parser.add_argument_group("modbus / sim")
    other.add_argument("--map", default="sdm630", help="modbus register map or .toml")
    other.add_argument("--unit", type=int, default=1, help="modbus unit id")
    other.add_argument("--annual-kwh", type=int, default=4500, help="sim load [kWh/a]")
    other.add_argument("--pv-wp", type=int, default=0, help="sim PV peak power [Wp]")
    other.add_argument("--seed", type=int, default=1, help="sim seed")


class UsageError(Exception):
    """Arguments that cannot make a driver."""


def build_driver(args: argparse.Namespace) -> MeterDriver:
    """The driver the arguments describe (imports Modbus and sim lazily: heavy and optional)."""
    if args.driver in ("iec", "p1", "modbus") and not args.port:
        raise UsageError(f"--driver {args.driver} needs --port")
    if args.driver == "iec":
        registers = tuple(r.strip() for r in args.registers.split(",") if r.strip())
        return IecDriver(
            IecConfig(
                port=args.port,
                address=args.address,
                mode=args.mode,
                registers=registers,
                meter_id=args.meter_id,
                password=args.password,
                max_baud=args.max_baud,
                switch_delay_s=args.switch_delay,
                wakeup_nul_count=args.wakeup,
            )
        )
    if args.driver == "p1":
        baud = args.baud or 115200
        return P1Driver(
            P1Config(port=args.port, baudrate=baud, profile=args.profile, meter_id=args.meter_id)
        )
    if args.driver == "modbus":
        return _modbus_driver(args)
    return _sim_driver(args)


def _modbus_driver(args: argparse.Namespace) -> MeterDriver:
    from meters.modbus import ModbusMeter, SerialTarget, TcpTarget
    from meters.modbus_maps import register_map

    target: TcpTarget | SerialTarget
    if args.port.startswith("/"):
        target = SerialTarget(args.port, baudrate=args.baud or 9600)
    else:
        host, _, port = args.port.partition(":")
        target = TcpTarget(host, int(port) if port else 502)
    meter_id = args.meter_id or str(target)
    return ModbusMeter(target, register_map(args.map), meter_id=meter_id, device_id=args.unit)


def _sim_driver(args: argparse.Namespace) -> MeterDriver:
    from meters.sim.clock import SystemClock
    from meters.sim.community import default_table
    from meters.sim.meter import MeterSpec, SimulatedMeter

    spec = MeterSpec(
        meter_id=args.meter_id or "sim-1",
        annual_kwh=args.annual_kwh,
        pv_wp=args.pv_wp,
        seed=args.seed,
    )
    return SimulatedMeter(spec, default_table(), SystemClock())


def _reading_dict(driver: str, reading: Reading) -> dict[str, object]:
    return {
        "driver": driver,
        "meter_id": reading.meter_id,
        "import_wh": reading.import_wh,
        "export_wh": reading.export_wh,
        "power_w": reading.power_w,
        "meter_time": reading.meter_time.isoformat() if reading.meter_time else None,
    }


def _reading_line(reading: Reading) -> str:
    power = f"{reading.power_w} W" if reading.power_w is not None else "power n/a"
    return (
        f"{reading.meter_id}: import {reading.import_wh} Wh, export {reading.export_wh} Wh, {power}"
    )


def run_parse(args: argparse.Namespace) -> int:
    """Parse ``args.file`` and print the registers and energy; status 1 if it has errors."""
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"lemctl meter parse: {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    readout = parse_readout(data, tz=args.tz, verify_crc=not args.no_crc)
    out = describe(readout)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"id: {out['id']}  identification: {out['identification']}")
        for key, reg in out["registers"].items():  # type: ignore[attr-defined]
            unit = f" {reg['unit']}" if reg["unit"] else ""
            print(f"  {key:<16} {reg['value']}{unit}")
        print(f"import: {out['import_wh']} Wh  export: {out['export_wh']} Wh")
        for error in out["errors"]:  # type: ignore[attr-defined]
            print(f"error: {error}", file=sys.stderr)
    return EXIT_METER if readout.errors else 0


def run_read(args: argparse.Namespace) -> int:
    """Read once and print the reading."""
    try:
        driver = build_driver(args)
    except (UsageError, MeterError, ValueError) as exc:
        print(f"lemctl meter read: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        reading = asyncio.run(_read_once(driver))
    except MeterError as exc:
        print(f"lemctl meter read: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_METER
    print(json.dumps(_reading_dict(args.driver, reading)) if args.json else _reading_line(reading))
    return 0


async def _read_once(driver: MeterDriver) -> Reading:
    try:
        return await driver.read()
    finally:
        await driver.close()


def run_watch(args: argparse.Namespace) -> int:
    """Print one line per reading (errors too) every ``--interval`` s until Ctrl-C."""
    try:
        driver = build_driver(args)
    except (UsageError, MeterError, ValueError) as exc:
        print(f"lemctl meter watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a technician ends the watch
        asyncio.run(_watch(driver, args.interval, args.count))
    return 0


async def _watch(driver: MeterDriver, interval_s: float, count: int) -> None:
    done = 0
    try:
        while count == 0 or done < count:
            started = time.monotonic()
            stamp = time.strftime("%H:%M:%S")
            try:
                line = _reading_line(await driver.read())
            except MeterError as exc:
                line = f"error {type(exc).__name__}: {exc}"
            print(f"{stamp} {line}", flush=True)
            done += 1
            if count == 0 or done < count:
                await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    finally:
        await driver.close()


def run_probe(args: argparse.Namespace) -> int:
    """Try IEC and P1 on the port; status 0 if something answered, 1 if nothing did."""
    results = asyncio.run(
        probe(args.port, iec_timeout_s=args.iec_timeout, p1_timeout_s=args.p1_timeout)
    )
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        for r in results:
            mark = "ANSWERS" if r.answered else "no"
            print(f"{r.protocol:<36} {r.line:<28} {mark:<8} {r.detail}")
    return 0 if any(r.answered for r in results) else EXIT_METER


def describe(readout: Readout) -> dict[str, object]:
    """The JSON shape of ``lemctl meter parse`` (docs/spec/meters.md "lemctl meter")."""
    registers: dict[str, dict[str, object]] = {}
    for reg in readout.registers:
        last = reg.groups[-1] if reg.groups else ValueGroup("")
        entry: dict[str, object] = {"value": _display(last), "unit": last.unit}
        if len(reg.groups) > 1:
            entry["groups"] = [{"value": _display(g), "unit": g.unit} for g in reg.groups]
        registers[reg.code.key] = entry
    ident = readout.identification
    return {
        "id": readout.meter_id,
        "identification": ident.text if ident else None,
        "checksum": readout.checksum,
        "registers": registers,
        "import_wh": readout.import_wh,
        "export_wh": readout.export_wh,
        "power_w": readout.power_w,
        "meter_time": readout.meter_time.isoformat() if readout.meter_time else None,
        "errors": [str(e) for e in readout.errors],
        "notes": list(readout.notes),
    }


def _display(group: ValueGroup) -> str:
    """Measured values lose their leading zeros ("001234.567" → "1234.567"); ids do not."""
    m = NUMBER_RE.fullmatch(group.value)
    if group.unit is None or m is None:
        return group.value
    whole = m.group(2).lstrip("0") or "0"
    frac = f".{m.group(3)}" if m.group(3) else ""
    return f"{m.group(1)}{whole}{frac}"
