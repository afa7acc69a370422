"""Modbus TCP / RTU meter driver on pymodbus 3.16 (docs/spec/modbus.md).

One :class:`ModbusMeter` polls one meter through a register map (:mod:`meters.modbus_maps`).
It owns its connection: every request sits inside ``asyncio.timeout``; after a failure the
client is closed and the next connection attempt waits an exponentially growing, jittered
delay, so a dead meter costs one cheap refusal per poll instead of a connect storm. Errors name
the register, the function and why. A register that goes backwards is passed on (the slot
integrator flags it and counts no energy) and counted in :attr:`ModbusMeter.backward_jumps`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from meters.errors import MeterTimeoutError, RegisterError
from meters.modbus_maps import (
    SUNSPEC_MARKER,
    Field,
    ReadBlock,
    RegisterMap,
    RegisterValueError,
    decode_field,
    plan_reads,
)
from meters.reading import MeterError, Reading

__all__ = [
    "ModbusConfigError",
    "ModbusExceptionError",
    "ModbusMeter",
    "ModbusUnavailableError",
    "SerialTarget",
    "SunSpecError",
    "TcpTarget",
    "parse_target",
]

log = logging.getLogger(__name__)


class ModbusUnavailableError(MeterError):
    """The meter cannot be reached (connection refused, lost, or still backing off).

    Attributes:
        target: where the meter is expected.
        retry_in_s: time until the next connection attempt [s].
    """

    def __init__(self, target: str, reason: str, retry_in_s: float) -> None:
        self.target = target
        self.retry_in_s = retry_in_s
        super().__init__(f"modbus {target}: {reason} (next attempt in {retry_in_s:.1f} s)")


class ModbusExceptionError(RegisterError):
    """The device answered a read with a Modbus exception (e.g. 2 = illegal data address).

    Attributes:
        function: ``input`` or ``holding``.
        address: first register of the refused request.
        count: number of registers requested.
        code: the Modbus exception code.
    """

    def __init__(self, function: str, address: int, count: int, code: int) -> None:
        self.function, self.address, self.count, self.code = function, address, count, code
        super().__init__(
            f"{function} registers {address}..{address + count - 1} "
            f"(0x{address:04X}): device answered exception code {code}"
        )


class SunSpecError(MeterError):
    """No SunSpec marker or no model of the wanted kind where the map expects one."""


class ModbusConfigError(MeterError):
    """A Modbus target or option in the configuration is invalid (says which and why)."""


class _LinkLostError(Exception):
    """Internal: the connection broke during a request (becomes ModbusUnavailableError)."""


@dataclass(frozen=True, slots=True)
class TcpTarget:
    """A Modbus TCP endpoint (or a TCP gateway in front of an RS-485 bus)."""

    host: str
    port: int = 502

    def __str__(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SerialTarget:
    """A Modbus RTU line on a serial port (use a stable /dev/serial/by-id/ path)."""

    port: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    def __str__(self) -> str:
        return f"rtu://{self.port}@{self.baudrate}/{self.bytesize}{self.parity}{self.stopbits}"


def parse_target(text: str, baudrate: int = 9600) -> TcpTarget | SerialTarget:
    """A target from config or the command line.

    ``tcp://host[:port]`` or ``host[:port]`` is Modbus TCP (default port 502); ``rtu:///dev/x``
    or a path starting with ``/`` is RTU on that serial device.

    Raises:
        ModbusConfigError: an empty text, a bad port number or an unknown scheme.
    """
    value = text.strip()
    if value.startswith("rtu://"):
        value = value[len("rtu://") :]
        if not value.startswith("/"):
            raise ModbusConfigError(f"modbus target {text!r}: rtu:// needs an absolute path")
        return SerialTarget(value, baudrate)
    if value.startswith("/"):
        return SerialTarget(value, baudrate)
    if "://" in value and not value.startswith("tcp://"):
        raise ModbusConfigError(f"modbus target {text!r}: use tcp://host:port or rtu:///dev/...")
    value = value.removeprefix("tcp://")
    host, sep, port_text = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if not host:
        raise ModbusConfigError(f"modbus target {text!r}: no host")
    if not sep:
        return TcpTarget(host)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ModbusConfigError(f"modbus target {text!r}: port must be 1..65535")
    return TcpTarget(host, int(port_text))


class ModbusMeter:
    """Reads cumulative import/export and power from a Modbus meter (MeterDriver port).

    Args:
        target: TCP endpoint or RTU serial line.
        register_map: where the values are.
        meter_id: the id reported in every :class:`Reading`.
        device_id: Modbus unit / slave id.
        timeout_s: bound on each connect and each request [s].
        sunspec_bases: where to look for the "SunS" marker (SunSpec maps only).
        backoff_initial_s: first reconnect delay after a failure [s].
        backoff_max_s: cap of the doubling reconnect delay [s].
        rng: jitter source (seed it in tests).
        monotonic: clock for the backoff schedule [s].
    """

    def __init__(
        self,
        target: TcpTarget | SerialTarget,
        register_map: RegisterMap,
        *,
        meter_id: str,
        device_id: int = 1,
        timeout_s: float = 2.0,
        sunspec_bases: tuple[int, ...] = (40000, 50000, 0),
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.register_map = register_map
        self.meter_id = meter_id
        self.device_id = device_id
        self.timeout_s = timeout_s
        self._sunspec_bases = sunspec_bases
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._monotonic = monotonic
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._last_error = ""
        self._base: int | None = None  # SunSpec model start, found once per connection
        self._last: tuple[int, int] | None = None
        self._inflight: asyncio.Future[Any] | None = None
        self._link_lost = False
        self.backward_jumps = 0
        """How many readings had a register lower than the previous reading."""

    async def read(self) -> Reading:
        """One poll: connect if needed, read the map's registers, convert to a Reading.

        Raises:
            ModbusUnavailableError: not connected and the backoff has not expired, or connect
                failed, or the connection dropped during the read.
            MeterTimeoutError: a request got no answer within ``timeout_s``.
            ModbusExceptionError: the device refused a request.
            RegisterValueError / SunSpecError: the registers hold no valid energy.
        """
        client = await self._connected()
        try:
            reading = await self._poll(client)
        except _LinkLostError as exc:
            self._fail(str(exc))
            raise ModbusUnavailableError(str(self.target), str(exc), self._retry_in()) from exc
        except MeterTimeoutError as exc:  # a silent peer: drop the link, reconnect later
            self._fail(str(exc))
            raise
        self._failures = 0
        self._note_direction(reading)
        return reading

    async def close(self) -> None:
        """Close the connection (MeterDriver port)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _connected(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is not None:
            if self._client.connected:
                return self._client
            self._client.close()  # dropped between polls: start over with a fresh client
            self._client = None
        wait = self._next_attempt - self._monotonic()
        if wait > 0:
            raise ModbusUnavailableError(str(self.target), self._last_error or "down", wait)
        client = self._make_client()
        try:
            async with asyncio.timeout(self.timeout_s):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            client.close()
            self._fail("connect failed")
            raise ModbusUnavailableError(str(self.target), "connect failed", self._retry_in())
        self._client, self._base, self._link_lost = client, None, False
        log.info("modbus %s connected", self.target)
        return client

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # reconnect_delay=0: pymodbus must not reconnect behind our back; retries=0: one
        # request per poll, our own backoff decides when to try again.
        if isinstance(self.target, TcpTarget):
            return AsyncModbusTcpClient(
                self.target.host,
                port=self.target.port,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
                trace_connect=self._on_link,
            )
        return AsyncModbusSerialClient(
            self.target.port,
            baudrate=self.target.baudrate,
            parity=self.target.parity,
            stopbits=self.target.stopbits,
            bytesize=self.target.bytesize,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
            trace_connect=self._on_link,
        )

    def _on_link(self, up: bool) -> None:
        """pymodbus callback on connect/disconnect; a pending request would otherwise wait
        for its timeout, so a dropped link cancels it at once."""
        if not up:
            self._link_lost = True
            if self._inflight is not None and not self._inflight.done():
                self._inflight.cancel()

    def _fail(self, reason: str) -> None:
        """Drop the connection and schedule the next attempt (exponential, full jitter)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        delay = min(self._backoff_max_s, self._backoff_initial_s * 2 ** min(self._failures, 16))
        self._failures += 1
        self._next_attempt = self._monotonic() + delay * self._rng.uniform(0.5, 1.0)
        self._last_error = reason
        log.warning("modbus %s: %s; retry in %.1f s", self.target, reason, self._retry_in())

    def _retry_in(self) -> float:
        return max(0.0, self._next_attempt - self._monotonic())

    async def _poll(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> Reading:
        rmap = self.register_map
        base, extra = 0, tuple[ReadBlock, ...]()
        if rmap.sunspec_model is not None:
            base = await self._sunspec_base(client)
            extra = (ReadBlock("holding", base, 2),)  # re-check the model id every poll
        cache: dict[int, int] = {}
        for block in plan_reads(rmap.fields, base, extra):
            chunk = await self._request(client, block)
            cache.update(zip(range(block.address, block.address + block.count), chunk, strict=True))
        if rmap.sunspec_model is not None and cache[base] != rmap.sunspec_model:
            self._base = None
            raise SunSpecError(f"model at {base} is {cache[base]}, expected {rmap.sunspec_model}")
        energy: dict[str, int] = {}
        power_w: int | None = None
        for field in rmap.fields:
            if field.quantity != "power_w":
                energy[field.quantity] = self._decode(field, base, cache)
                continue
            try:
                power_w = self._decode(field, base, cache)
            except RegisterValueError as exc:
                # Power is informative only: an unimplemented power register must not cost
                # the energy reading.
                log.debug("modbus %s: %s", self.target, exc)
        return Reading(
            meter_id=self.meter_id,
            import_wh=energy["import_wh"],
            export_wh=energy["export_wh"],
            power_w=power_w,
            meter_time=None,
        )

    @staticmethod
    def _decode(field: Field, base: int, cache: dict[int, int]) -> int:
        start = base + field.address
        regs = [cache[a] for a in range(start, start + field.count)]
        sf = 0
        if field.sf_offset is not None:
            raw_sf = cache[base + field.sf_offset]
            sf = raw_sf - 0x10000 if raw_sf & 0x8000 else raw_sf
        try:
            return decode_field(field, regs, sf)
        except RegisterValueError as exc:  # report the absolute address, not the offset
            raise RegisterValueError(field.quantity, start, exc.reason) from None

    async def _request(
        self, client: AsyncModbusTcpClient | AsyncModbusSerialClient, block: ReadBlock
    ) -> list[int]:
        reader = (
            client.read_input_registers
            if block.function == "input"
            else client.read_holding_registers
        )
        step = f"read {block.function} registers {block.address}+{block.count}"
        if self._link_lost:
            raise _LinkLostError(f"{step}: connection closed by the device")
        request = asyncio.ensure_future(
            reader(block.address, count=block.count, device_id=self.device_id)
        )
        self._inflight = request
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await request
        except TimeoutError:
            raise MeterTimeoutError(step, self.timeout_s) from None
        except ModbusException as exc:  # connection lost / no response inside pymodbus
            raise _LinkLostError(f"{step}: {exc}") from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._link_lost and task is not None and not task.cancelling():
                raise _LinkLostError(f"{step}: connection closed by the device") from None
            raise
        finally:
            self._inflight = None
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise ModbusExceptionError(block.function, block.address, block.count, code)
        registers = list(response.registers)
        if len(registers) != block.count:
            raise _LinkLostError(f"{step}: got {len(registers)} registers")
        return registers

    async def _sunspec_base(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> int:
        """Walk the SunSpec model chain from the "SunS" marker to the map's model."""
        if self._base is not None:
            return self._base
        wanted = self.register_map.sunspec_model
        for marker_at in self._sunspec_bases:
            try:
                marker = await self._request(client, ReadBlock("holding", marker_at, 2))
            except ModbusExceptionError:
                continue
            if tuple(marker) != SUNSPEC_MARKER:
                continue
            address = marker_at + 2
            for _ in range(64):  # a device has a handful of models; bound the walk
                model_id, length = await self._request(client, ReadBlock("holding", address, 2))
                if model_id == wanted:
                    self._base = address
                    return address
                if model_id == 0xFFFF:
                    break
                address += 2 + length
            raise SunSpecError(f"SunSpec device at {marker_at} has no model {wanted}")
        raise SunSpecError(f"no SunSpec marker 'SunS' at {list(self._sunspec_bases)}")

    def _note_direction(self, reading: Reading) -> None:
        now = (reading.import_wh, reading.export_wh)
        if self._last is not None and (now[0] < self._last[0] or now[1] < self._last[1]):
            self.backward_jumps += 1
            log.warning(
                "modbus %s: register went backwards: import %d -> %d Wh, export %d -> %d Wh",
                self.target, self._last[0], now[0], self._last[1], now[1],
            )  # fmt: skip
        self._last = now
