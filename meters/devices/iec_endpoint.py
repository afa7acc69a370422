"""An IEC 62056-21 mode C meter on a pseudo-terminal (the device side of the protocol).

The endpoint opens a pty pair, serves the slave path (optionally through a stable symlink, like
udev's /dev/serial/by-id/...), and answers sign-on, option select, readout and programming mode
(P0 prompt, P1 password, R1/R2 reads, NAK repeat, B0 break) from a :class:`RegisterSource`.
A pty carries bytes, not baud rates or parity: the endpoint records each option select so tests
can check the driver asked for the switch, and counts the bytes that a real line would carry.

Fault hooks for tests are constructor options of this simulated device: ``corrupt_bcc`` (send
that many data blocks with a wrong BCC), ``silent`` (never answer), ``vanish_after_r2`` (close the
pty on that R2 request, like a probe pulled mid-read), ``require_wakeup`` (a battery meter that
ignores a sign-on not preceded by NUL bytes), ``chunk_size`` (split answers into pieces),
``echo`` (a half-duplex probe that returns what the driver sends), ``inactivity_timeout_s``
(programming mode ends after that much silence, as meters do).

``parity_bit`` (default True) puts each character's even-parity bit in bit 7, which is what a
7E1 line looks like through an 8N1 port; this kernel's pty refuses CS7/PARENB in termios, so the
driver's software-parity path is what runs end to end here.
Spec: docs/spec/meters.md "IEC endpoint".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tty
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from meters.errors import ChecksumError, ProtocolError
from meters.iec62056_21 import (
    ACK,
    BAUD_RATES,
    CRLF,
    ETX,
    NAK,
    OPTION_PROGRAMMING,
    OPTION_READOUT,
    SOH,
    check_block,
    command,
    data_block,
    decode_7e1,
    encode_7e1,
    parse_ack_option,
)
from meters.reading import Reading


class RegisterSource(Protocol):
    """Where the endpoint gets register values: OBIS address → value group text without
    parentheses, e.g. ``{"1.8.0": "001234.567*kWh", "0.0.0": "12345678"}``."""

    async def registers(self) -> Mapping[str, str]: ...


class ReadingDriver(Protocol):
    async def read(self) -> Reading: ...


@dataclass
class StaticRegisters:
    """A fixed (test-mutable) register table."""

    values: dict[str, str]

    async def registers(self) -> Mapping[str, str]:
        return dict(self.values)


@dataclass
class ReadingRegisters:
    """Serve any driver-like object with ``async read() -> Reading`` (e.g. the simulated meter)
    as 0.0.0, 1.8.0 / 2.8.0 [kWh, 3 decimals: exact for integer Wh], 1.7.0 / 2.7.0 [kW]."""

    driver: ReadingDriver

    async def registers(self) -> Mapping[str, str]:
        return reading_registers(await self.driver.read())


def _kilo(value: int, width: int) -> str:
    return f"{value // 1000:0{width}d}.{value % 1000:03d}"


def reading_registers(reading: Reading) -> dict[str, str]:
    """The register table of a :class:`Reading` (energy exactly: Wh = kWh with 3 decimals)."""
    power = reading.power_w or 0
    return {
        "0.0.0": reading.meter_id,
        "1.8.0": f"{_kilo(reading.import_wh, 6)}*kWh",
        "2.8.0": f"{_kilo(reading.export_wh, 6)}*kWh",
        "1.7.0": f"{_kilo(max(power, 0), 2)}*kW",
        "2.7.0": f"{_kilo(max(-power, 0), 2)}*kW",
    }


@dataclass
class EndpointCounters:
    bytes_rx: int = 0
    bytes_tx: int = 0
    sign_ons: int = 0
    wakeup_nuls: int = 0
    r2_requests: int = 0
    naks_received: int = 0
    naks_sent: int = 0
    parity_errors: int = 0
    ack_options: list[tuple[str, str, str]] = field(default_factory=list)


class IecEndpoint:
    """A simulated IEC 62056-21 mode C meter on a pty."""

    def __init__(
        self,
        source: RegisterSource,
        *,
        manufacturer: str = "LEM",
        baud_char: str = "5",
        ident: str = "SIM62056",
        address: str = "",
        serial_number: str = "12345678",
        password: str | None = None,
        link_path: str | None = None,
        corrupt_bcc: int = 0,
        silent: bool = False,
        vanish_after_r2: int | None = None,
        require_wakeup: bool = False,
        chunk_size: int | None = None,
        parity_bit: bool = True,
        echo: bool = False,
        inactivity_timeout_s: float | None = None,
    ) -> None:
        if baud_char not in BAUD_RATES:
            raise ValueError(f"baud_char {baud_char!r} is not a mode C character")
        self.source = source
        self._ident_line = f"/{manufacturer}{baud_char}{ident}".encode("ascii") + CRLF
        self.address = address
        self.serial_number = serial_number
        self.password = password
        self.link_path = link_path
        self._corrupt_left = corrupt_bcc
        self.silent = silent
        self._vanish_after_r2 = vanish_after_r2
        self.require_wakeup = require_wakeup
        self._chunk_size = chunk_size
        self.parity_bit = parity_bit
        self.echo = echo
        self.inactivity_timeout_s = inactivity_timeout_s
        self._last_rx = 0.0
        self.counters = EndpointCounters()
        self._master: int | None = None
        self._slave: int | None = None
        self.path = ""
        self._rx = bytearray()
        self._state = "idle"
        self._awake = False
        self._last_sent = b""
        self._last_may_corrupt = False
        self._authorised = password is None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Open the pty and serve; return the path drivers open (the symlink if configured)."""
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation before the driver sets its own mode
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.path = os.ttyname(slave)
        if self.link_path:
            tmp = f"{self.link_path}.new"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self.path, tmp)
            os.replace(tmp, self.link_path)  # atomic re-point, like udev
        asyncio.get_running_loop().add_reader(master, self._on_readable)
        self._task = asyncio.create_task(self._serve(), name=f"iec-endpoint {self.path}")
        return self.link_path or self.path

    async def close(self) -> None:
        """Stop serving and close the pty (the slave path disappears, like an unplugged probe)."""
        self._vanish()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _vanish(self) -> None:
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        link = self.link_path
        if link and os.path.islink(link) and os.readlink(link) == self.path:
            os.unlink(link)  # udev removes the by-id link when the probe is pulled
        self._wakeup.set()

    def _on_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return  # EIO while no process holds the slave open: nothing to read
        self.counters.bytes_rx += len(data)
        if self.echo:  # a half-duplex probe hands our own bytes straight back
            with contextlib.suppress(BlockingIOError):
                os.write(self._master, data)
        if self.parity_bit:
            data, bad = decode_7e1(data)
            self.counters.parity_errors += bad
        self._rx.extend(data)
        self._wakeup.set()

    def _send(self, data: bytes, *, may_corrupt: bool = False) -> None:
        if self._master is None:
            return
        # A NAK gets the message repeated (corrupted again while corrupt_bcc lasts).
        self._last_sent, self._last_may_corrupt = data, may_corrupt
        if may_corrupt:
            data = self._corrupt(data)
        if self.parity_bit:
            data = encode_7e1(data)
        step = self._chunk_size or len(data)
        for i in range(0, len(data), step):
            try:
                os.write(self._master, data[i : i + step])
            except BlockingIOError:
                return  # nobody drains the line (driver gone): a real meter talks into the void
        self.counters.bytes_tx += len(data)

    async def _serve(self) -> None:
        while self._master is not None:
            message = self._take()
            if message is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self.silent:
                await self._handle(message)

    def _take(self) -> bytes | None:
        """Cut one complete master message from the receive buffer."""
        buf = self._rx
        while buf[:1] == b"\0":
            del buf[:1]
            self.counters.wakeup_nuls += 1
            self._awake = True
        if not buf:
            return None
        first = buf[0]
        if first in (ord("/"), ACK):
            end = buf.find(b"\n") + 1
        elif first == NAK:
            end = 1
        elif first == SOH:
            etx = buf.find(bytes([ETX]))
            end = etx + 2 if 0 <= etx < len(buf) - 1 else 0
        else:
            end = 1  # line noise: drop it
        if not end:
            return None
        message = bytes(buf[:end])
        del buf[:end]
        return message

    async def _handle(self, message: bytes) -> None:
        now = asyncio.get_running_loop().time()
        idle_s, self._last_rx = now - self._last_rx, now
        timeout = self.inactivity_timeout_s
        if self._state == "programming" and timeout is not None and idle_s > timeout:
            self._state = "idle"  # §6.4.6: the meter left programming mode silently
        if message.startswith(b"/?"):
            self._on_sign_on(message)
        elif message[0] == ACK and self._state == "ack_wait":
            await self._on_option(message)
        elif message == bytes([NAK]):
            self.counters.naks_received += 1
            if self._state == "programming" and self._last_sent:
                self._send(self._last_sent, may_corrupt=self._last_may_corrupt)
        elif message[0] == SOH and self._state == "programming":
            await self._on_command(message)

    def _on_sign_on(self, message: bytes) -> None:
        address = message[2:].split(b"!")[0].decode("ascii", errors="replace")
        if not message.endswith(b"!" + CRLF) or address not in ("", self.address):
            self._state = "idle"
            return
        if self.require_wakeup and not self._awake:
            return  # asleep: a battery meter ignores a sign-on without wake-up
        self._awake = False
        self.counters.sign_ons += 1
        self._state = "ack_wait"
        self._authorised = self.password is None
        self._send(self._ident_line)

    async def _on_option(self, message: bytes) -> None:
        option = parse_ack_option(message)
        if option is None:
            self._state = "idle"
            return
        self.counters.ack_options.append(option)
        if option[2] == OPTION_READOUT:
            self._state = "idle"
            self._send(data_block(await self._readout_text()), may_corrupt=True)
        elif option[2] == OPTION_PROGRAMMING:
            self._state = "programming"
            self._send(command("P0", f"({self.serial_number})"))

    async def _readout_text(self) -> bytes:
        values = await self.source.registers()
        lines = "".join(f"{address}({value})\r\n" for address, value in values.items())
        return (lines + "!\r\n").encode("ascii")

    def _corrupt(self, block: bytes) -> bytes:
        if self._corrupt_left <= 0:
            return block
        self._corrupt_left -= 1
        return block[:-1] + bytes([block[-1] ^ 0x01])

    async def _on_command(self, message: bytes) -> None:
        try:
            code, data = check_block(message)
        except (ChecksumError, ProtocolError):
            self.counters.naks_sent += 1
            self._send(bytes([NAK]))
            return
        text = data.decode("ascii", errors="replace")
        if code == "B0":
            self._state = "idle"
        elif code == "P1":
            if text == f"({self.password})":
                self._authorised = True
                self._send(bytes([ACK]))
            else:
                self._state = "idle"
                self._send(command("B0"))
        elif code in ("R1", "R2"):
            await self._on_read(text)
        else:
            self._send(data_block(b"(ERROR)"))

    async def _on_read(self, text: str) -> None:
        self.counters.r2_requests += 1
        if self._vanish_after_r2 is not None and self.counters.r2_requests >= self._vanish_after_r2:
            self._vanish()
            return
        address = text.split("(")[0]
        value = (await self.source.registers()).get(address) if self._authorised else None
        payload = f"{address}({value})" if value is not None else "(ERROR)"
        self._send(data_block(payload.encode("ascii")), may_corrupt=True)


async def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="serve a simulated IEC 62056-21 meter on a pty")
    parser.add_argument("--link", required=True, help="symlink to create for the pty")
    parser.add_argument("--import-wh", type=int, default=1_234_567)
    parser.add_argument("--export-wh", type=int, default=89_012)
    parser.add_argument("--power-w", type=int, default=1_250)
    parser.add_argument("--meter-id", default="12345678")
    args = parser.parse_args(argv)
    reading = Reading(args.meter_id, args.import_wh, args.export_wh, args.power_w)
    endpoint = IecEndpoint(StaticRegisters(reading_registers(reading)), link_path=args.link)
    print(await endpoint.start(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await endpoint.close()
    c = endpoint.counters
    counters = {"bytes_rx": c.bytes_rx, "bytes_tx": c.bytes_tx, "sign_ons": c.sign_ons}
    counters |= {"r2_requests": c.r2_requests, "naks_received": c.naks_received}
    print(json.dumps(counters), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
