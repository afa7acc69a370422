"""A serial port for meter drivers: exclusive open by stable path, reconnect backoff, buffered
reads with per-step timeouts, optional software 7E1 parity.

Used by the IEC 62056-21 and DSMR P1 drivers. Spec: docs/spec/meters.md "Serial link".
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass

import serial
import serial_asyncio_fast

from meters.errors import MeterTimeoutError, PortUnavailableError
from meters.iec62056_21 import decode_7e1, encode_7e1


@dataclass(frozen=True, slots=True)
class LineSettings:
    """UART framing. ``software_parity`` opens the port 8N1 and carries 7E1 in bit 7 (for
    USB adapters without 7-bit support); the drivers then see 7-bit characters either way."""

    baudrate: int
    bytesize: int = serial.SEVENBITS
    parity: str = serial.PARITY_EVEN
    stopbits: float = serial.STOPBITS_ONE
    software_parity: bool | None = None  # None: hardware 7E1, software if termios refuses it


IEC_300_7E1 = LineSettings(300)
P1_DSMR4 = LineSettings(
    115200, serial.EIGHTBITS, serial.PARITY_NONE, software_parity=False
)  # DSMR 4/5 (§6.2)
P1_DSMR2 = LineSettings(9600)  # DSMR 2.2 / 3: 9600 7E1


class Backoff:
    """Exponential backoff with jitter: attempt n waits min(max, initial·2ⁿ)·U(0.5, 1) [s].

    The jitter keeps a cabinet full of nodes that lost their probes in one power dip from
    retrying in lockstep.
    """

    def __init__(
        self, initial_s: float = 1.0, max_s: float = 60.0, rng: random.Random | None = None
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """Delay before the next attempt after one more failure [s]."""
        base = min(self.max_s, self.initial_s * float(2**self.failures))
        self.failures += 1
        return base * (0.5 + self._rng.random() / 2)

    def reset(self) -> None:
        self.failures = 0


class SerialLink:
    """One serial port, opened on demand and reopened with backoff after it vanishes."""

    def __init__(
        self,
        path: str,
        settings: LineSettings,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        exclusive: bool = True,
    ) -> None:
        self.path = path
        self.settings = settings
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._exclusive = exclusive
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()
        self._next_attempt = 0.0
        self._last_reason = ""
        self.parity_errors = 0
        self.echo = False  # half-duplex probe: what we send comes back first (set by drivers)
        self._echo_pending = bytearray()
        self.software_parity = bool(settings.software_parity)
        self.bytes_tx = 0
        self.bytes_rx = 0
        self.opens = 0

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        """Open the port unless open; raise PortUnavailableError while backing off."""
        if self._writer is not None:
            return
        now = self._clock()
        if now < self._next_attempt:
            raise PortUnavailableError(self.path, self._last_reason, self._next_attempt - now)
        try:
            self._reader, self._writer = await self._connect()
        except (OSError, serial.SerialException, termios.error, ValueError) as exc:
            self._schedule_retry(f"cannot open: {exc}")
            raise PortUnavailableError(
                self.path, self._last_reason, self._next_attempt - now
            ) from exc
        self.backoff.reset()
        self._buffer.clear()
        self.opens += 1

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        s = self.settings
        software = bool(s.software_parity)
        try:
            port = await loop.run_in_executor(None, self._open_blocking, software)
        except termios.error:
            if s.software_parity is not None or s.bytesize == serial.EIGHTBITS:
                raise
            # Auto: this port (a pty, some USB bridges) refuses 7E1 in termios; carry the
            # parity in bit 7 of 8N1 instead. Logged through ``parity_mode`` for status.
            software = True
            port = await loop.run_in_executor(None, self._open_blocking, software)
        self.software_parity = software
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await serial_asyncio_fast.connection_for_serial(loop, lambda: protocol, port)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    def _open_blocking(self, software: bool) -> serial.Serial:
        s = self.settings
        port = serial.Serial()
        port.port = self.path
        port.baudrate = s.baudrate
        port.bytesize = serial.EIGHTBITS if software else s.bytesize
        port.parity = serial.PARITY_NONE if software else s.parity
        port.stopbits = s.stopbits
        port.exclusive = self._exclusive  # flock: a second process cannot share the probe
        port.open()
        try:
            # Non-blocking reads for the asyncio transport. Some ptys take CS7 at open and
            # refuse it on this second termios write, so it is checked here, not later.
            port.timeout = 0
        except termios.error:
            port.close()
            raise
        return port

    @property
    def parity_mode(self) -> str:
        """ "hardware" (UART does 7E1), "software" (bit 7 of 8N1) or "none" (8N1 line)."""
        if self.settings.bytesize == serial.EIGHTBITS and not self.settings.software_parity:
            return "none"
        return "software" if self.software_parity else "hardware"

    def _schedule_retry(self, reason: str) -> None:
        self._last_reason = reason
        self._next_attempt = self._clock() + self.backoff.next_delay()

    def lost(self, reason: str) -> PortUnavailableError:
        """Close after an I/O failure; the next :meth:`open` is tried at once, later ones back
        off. Returns the error for the caller to raise."""
        self._drop()
        self._last_reason = reason
        self._next_attempt = self._clock()
        return PortUnavailableError(self.path, reason, 0.0)

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._buffer.clear()
        self._echo_pending.clear()

    async def close(self) -> None:
        writer = self._writer
        self._drop()
        if writer is not None:
            # A port that is already gone has nothing left to release.
            with contextlib.suppress(OSError, serial.SerialException, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def set_baudrate(self, baudrate: int) -> None:
        """Switch the UART speed (IEC 62056-21 §6.4.4 baud rate change)."""
        transport = self._writer.transport if self._writer else None
        port = getattr(transport, "serial", None)
        if port is None:
            raise self.lost("port closed before the baud rate switch")
        try:
            port.baudrate = baudrate
        except (OSError, serial.SerialException) as exc:
            raise self.lost(f"baud switch failed: {exc}") from exc

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet taken as a message."""
        return len(self._buffer)

    def discard_input(self) -> None:
        """Drop what was received so far (stale bytes before a new request)."""
        self._buffer.clear()
        self._echo_pending.clear()

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            raise self.lost("port not open")
        if self.echo:
            self._echo_pending.extend(data)
        out = encode_7e1(data) if self.software_parity else data
        try:
            self._writer.write(out)
            await asyncio.wait_for(self._writer.drain(), 2.0)
        except (OSError, serial.SerialException, ConnectionError, TimeoutError) as exc:
            raise self.lost(f"write failed: {exc}") from exc
        self.bytes_tx += len(out)

    async def read_until(self, done: Callable[[bytes], int], step: str, timeout_s: float) -> bytes:
        """Read until ``done(buffer)`` returns the length of a complete message (0: not yet).

        Partial messages are kept across chunks, so a block split by the UART or the probe
        is reassembled. Returns the message and keeps any bytes after it.

        Raises:
            MeterTimeoutError: nothing complete within ``timeout_s``.
            PortUnavailableError: the port vanished (probe unplugged).
        """
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    self._strip_echo()
                    end = done(bytes(self._buffer))
                    if end:
                        message = bytes(self._buffer[:end])
                        del self._buffer[:end]
                        return message
                    await self._read_chunk()
        except TimeoutError:
            raise MeterTimeoutError(step, timeout_s) from None

    def _strip_echo(self) -> None:
        """Drop the echo of our own bytes from the head of the buffer (``echo`` mode)."""
        pending, buf = self._echo_pending, self._buffer
        n = min(len(pending), len(buf))
        if not n:
            return
        if buf[:n] != pending[:n]:
            pending.clear()  # the echo did not come back as sent: stop expecting it
            return
        del buf[:n]
        del pending[:n]

    async def _read_chunk(self) -> None:
        if self._reader is None:
            raise self.lost("port not open")
        try:
            chunk = await self._reader.read(4096)
        except (OSError, serial.SerialException, ConnectionError) as exc:
            raise self.lost(f"read failed: {exc}") from exc
        if not chunk:
            raise self.lost("end of file: device disconnected")
        self.bytes_rx += len(chunk)
        if self.software_parity:
            chunk, bad = decode_7e1(chunk)
            self.parity_errors += bad
        self._buffer.extend(chunk)
