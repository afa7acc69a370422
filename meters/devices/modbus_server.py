"""A real Modbus TCP meter served by pymodbus 3.16 from a simulated meter's live values.

Each read request runs pymodbus' per-device ``action`` hook, which advances the simulated meter
to the clock's time and writes its registers in the chosen map's encoding (FLOAT32 kWh for
Eastron, INT32 LSW-first ×10 for the EM24, a complete "SunS" model chain with scale factors for
SunSpec 203). The real :class:`meters.modbus.ModbusMeter` driver therefore meets a genuine TCP
server speaking the protocol (docs/spec/modbus.md §Device server). The server counts the bytes
it receives and sends, so benches can report bytes on the wire per poll.

pymodbus 3.16 replaced the datastore contexts with ``SimData`` / ``SimDevice`` (the old
``ModbusServerContext`` is deprecated); this module uses the new API.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tty
from datetime import UTC, datetime
from typing import Protocol

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from meters.modbus_maps import SUNSPEC_MARKER, RegisterMap, encode_field, register_map
from meters.reading import MeterError, Reading
from meters.sim.clock import AcceleratedClock, Clock
from meters.sim.community import default_table, pilot_community
from meters.sim.meter import SimulatedMeter

__all__ = ["ModbusMeterServer", "PtyNullModem", "RegisterSource"]

log = logging.getLogger(__name__)

_FUNCTION_CODES = {3: "holding", 4: "input"}
_COMMON_MODEL_LEN = 66  # SunSpec model 1: Mn, Md, Opt, Vr, SN, DA, Pad
_MODEL_203_LEN = 105


class RegisterSource(Protocol):
    """Anything that yields a meter reading for a given time (the simulated meter does)."""

    def read_at(self, when: datetime) -> Reading: ...


def _text(value: str, registers: int) -> list[int]:
    raw = value.encode("ascii", "replace")[: 2 * registers].ljust(2 * registers, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def _int16(value: int) -> int:
    return value & 0xFFFF


class ModbusMeterServer:
    """Serves one simulated meter over Modbus TCP with a given register map.

    Args:
        source: the meter whose values are served (e.g. :class:`meters.sim.meter.SimulatedMeter`).
        register_map: encoding to serve.
        clock: the time at which each request reads the source.
        host: interface to bind.
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        sunspec_base: address of the "SunS" marker (SunSpec maps).
        sunspec_w_sf: W_SF served with SunSpec (power resolution 10^SF W).
        sunspec_wh_sf: TotWh_SF served with SunSpec (energy resolution 10^SF Wh).
        serial_number: served in the SunSpec common model.
    """

    def __init__(
        self,
        source: RegisterSource,
        register_map: RegisterMap,
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sunspec_base: int = 40000,
        sunspec_w_sf: int = 0,
        sunspec_wh_sf: int = 0,
        serial_number: str = "SIM",
    ) -> None:
        self._source = source
        self._map = register_map
        self._clock = clock
        self._host = host
        self._requested_port = port
        self._sunspec_base = sunspec_base
        self._sf = {"power_w": sunspec_w_sf, "import_wh": sunspec_wh_sf, "export_wh": sunspec_wh_sf}
        self._serial = serial_number
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self.port = 0
        self.rx_bytes = 0
        """Bytes received from clients (Modbus TCP ADUs including the MBAP header)."""
        self.tx_bytes = 0
        """Bytes sent to clients."""
        self.requests = 0
        """Read requests answered."""

    async def start(self) -> int:
        """Bind and start serving in the background; return the TCP port."""
        if self._server is not None:
            raise MeterError("modbus device server already running")
        server = ModbusTcpServer(
            self._device(),
            address=(self._host, self._requested_port),
            trace_packet=self._trace,
        )
        await server.serve_forever(background=True)
        self._server = server
        sockets = server.transport.sockets  # type: ignore[attr-defined]  # an asyncio.Server
        self.port = int(sockets[0].getsockname()[1])
        self._requested_port = self.port  # a restart comes back on the same port
        log.info("modbus device server %s on %s:%d", self._map.name, self._host, self.port)
        return self.port

    async def start_serial(self, port: str, baudrate: int = 9600) -> None:
        """Serve Modbus RTU on a serial device path instead of TCP (e.g. a pty, see
        :class:`PtyNullModem`); 8N1 framing."""
        if self._server is not None:
            raise MeterError("modbus device server already running")
        server = ModbusSerialServer(
            self._device(),
            framer=FramerType.RTU,
            port=port,
            baudrate=baudrate,
            trace_packet=self._trace,
        )
        await server.serve_forever(background=True)
        self._server = server
        log.info("modbus RTU device server %s on %s", self._map.name, port)

    async def stop(self) -> None:
        """Stop listening and drop every client connection (the meter "disappears")."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self.tx_bytes += len(data)
        else:
            self.rx_bytes += len(data)
        return data

    def _device(self) -> SimDevice:
        holding, inputs = self._layout()
        blocks = []
        for registers in (holding, inputs):
            if registers:
                start = min(registers)
                values = [registers.get(a, 0) for a in range(start, max(registers) + 1)]
                blocks.append([SimData(start, values=values, datatype=DataType.REGISTERS)])
            else:
                blocks.append([SimData(0, datatype=DataType.INVALID)])
        no_bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        return SimDevice(
            id=0,  # answer any unit id, like a single meter behind a TCP port
            simdata=(no_bits, list(no_bits), blocks[0], blocks[1]),
            action=self._action,
        )

    def _addresses(self) -> dict[str, int]:
        """Absolute first register of each served quantity."""
        base = self._model_base() if self._map.sunspec_model is not None else 0
        return {f.quantity: base + f.address for f in self._map.fields}

    def _model_base(self) -> int:
        return self._sunspec_base + 2 + 2 + _COMMON_MODEL_LEN

    def _layout(self) -> tuple[dict[int, int], dict[int, int]]:
        """Static register images of the holding and input tables (live values start at 0)."""
        tables: dict[str, dict[int, int]] = {"holding": {}, "input": {}}
        for field in self._map.fields:
            for i in range(field.count):
                tables[field.function][self._addresses()[field.quantity] + i] = 0
        if self._map.sunspec_model is not None:
            tables["holding"].update(self._sunspec_static())
        return tables["holding"], tables["input"]

    def _sunspec_static(self) -> dict[int, int]:
        marker = self._sunspec_base
        model = self._model_base()
        header = [*SUNSPEC_MARKER, 1, _COMMON_MODEL_LEN]
        header += _text("lem-edge", 16) + _text("simulated meter", 16) + _text("", 8)
        header += _text("1.0", 8) + _text(self._serial, 16) + [1, 0]
        regs = {marker + i: v for i, v in enumerate(header)}
        assert len(header) == model - marker  # layout invariant of this module
        regs.update({model + i: 0 for i in range(2 + _MODEL_203_LEN)})
        regs[model], regs[model + 1] = int(self._map.sunspec_model or 0), _MODEL_203_LEN
        for field in self._map.fields:
            if field.sf_offset is not None:
                regs[model + field.sf_offset] = _int16(self._sf[field.quantity])
        end = model + 2 + _MODEL_203_LEN
        regs[end], regs[end + 1] = 0xFFFF, 0
        return regs

    async def _action(
        self,
        function_code: int,
        start_address: int,
        _address: int,
        _count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus hook, run before each request is answered: refresh the live registers."""
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # a meter's measurement registers are read-only
        function = _FUNCTION_CODES.get(function_code)
        if function is None:
            return ExcCodes.ILLEGAL_FUNCTION
        self.requests += 1
        reading = self._source.read_at(self._clock.now())
        values = {
            "import_wh": reading.import_wh,
            "export_wh": reading.export_wh,
            "power_w": reading.power_w or 0,
        }
        addresses = self._addresses()
        for field in self._map.fields:
            if field.function != function:
                continue
            sf = self._sf[field.quantity] if field.sf_offset is not None else 0
            words = encode_field(field, values[field.quantity], sf)
            offset = addresses[field.quantity] - start_address
            registers[offset : offset + len(words)] = words
        return None


class PtyNullModem:
    """Two pseudo-terminals wired back to back, like a null-modem cable between two RS-485
    adapters: what is written to :attr:`device_port` comes out of :attr:`host_port` and back.

    Counts the bytes crossing in each direction, i.e. the bytes on the serial line.
    """

    def __init__(self) -> None:
        self._dev_master, self._dev_slave = os.openpty()
        self._host_master, self._host_slave = os.openpty()
        for fd in (self._dev_slave, self._host_slave):
            tty.setraw(fd)  # no echo, no line editing: the line carries binary RTU frames
        self.device_port = os.ttyname(self._dev_slave)
        self.host_port = os.ttyname(self._host_slave)
        self.to_host_bytes = 0
        self.to_device_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start copying bytes between the two ends (on the running event loop)."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self._dev_master, self._pump, self._dev_master, self._host_master, True)
        loop.add_reader(self._host_master, self._pump, self._host_master, self._dev_master, False)
        self._loop = loop

    def _pump(self, src: int, dst: int, to_host: bool) -> None:
        try:
            data = os.read(src, 4096)
        except OSError:  # EIO while no process holds the other side open
            return
        os.write(dst, data)
        if to_host:
            self.to_host_bytes += len(data)
        else:
            self.to_device_bytes += len(data)

    def close(self) -> None:
        """Stop copying and close every descriptor."""
        if self._loop is not None:
            self._loop.remove_reader(self._dev_master)
            self._loop.remove_reader(self._host_master)
            self._loop = None
        for fd in (self._dev_master, self._dev_slave, self._host_master, self._host_slave):
            os.close(fd)


async def _serve_forever(args: argparse.Namespace) -> int:
    specs = {spec.meter_id: spec for spec in pilot_community(args.seed)}
    if args.meter not in specs:
        print(f"unknown meter {args.meter!r}; pilot meters: {', '.join(specs)}", file=sys.stderr)
        return 2
    start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC)
    if start.tzinfo is None:
        print("--start needs a UTC offset, e.g. 2026-06-21T06:00:00+00:00", file=sys.stderr)
        return 2
    clock = AcceleratedClock(start, args.speed)
    meter = SimulatedMeter(specs[args.meter], default_table(), clock)
    server = ModbusMeterServer(
        meter, register_map(args.map), clock, host=args.host, port=args.port,
        serial_number=args.meter,
    )  # fmt: skip
    port = await server.start()
    print(f"serving {args.meter} as {args.map} on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop()
    print(f"stopped after {server.requests} requests", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Serve one meter of the simulated Lugaggia pilot as a Modbus TCP device (demos, field
    tests): ``python -m meters.devices.modbus_server --meter lic-kg --map sunspec --port 1502``.
    """
    parser = argparse.ArgumentParser(
        description=main.__doc__.split("\n")[0] if main.__doc__ else ""
    )
    parser.add_argument(
        "--meter", default="lic-h01", help="pilot meter id (lic-h01..lic-h18, lic-kg)"
    )
    parser.add_argument("--map", default="sdm630", help="sdm630, sdm120, em24, sunspec or a .toml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1502, help="TCP port; 0 picks a free one")
    parser.add_argument("--seed", type=int, default=1, help="seed of the pilot community")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second")
    parser.add_argument("--start", default="", help="simulated start time, ISO 8601 with offset")
    args = parser.parse_args(argv)
    return asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    raise SystemExit(main())
