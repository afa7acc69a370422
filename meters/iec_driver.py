"""IEC 62056-21 mode C driver: an optical probe on a serial port, read every 5 s.

Two ways to read (docs/spec/meters.md "IEC 62056-21 driver"):
- ``mode="programming"`` (default, the 5-s cycle): sign-on, option 1, then one R2 read per
  configured OBIS register. A full readout at 300 baud takes minutes on some meters, so the fast
  cycle never depends on it. The session is kept open across cycles (``keep_session``): an R2 read
  costs ~30 bytes, a sign-on ~50 bytes at 300 baud plus the switch delay. Meters end an idle
  programming session after their inactivity timeout (IEC 62056-21 §6.4.6, typically 60–120 s);
  when the first R2 of a reused session gets no answer the driver signs on again in the same
  read. ``keep_session=False`` sends the break ``SOH B0 ETX q`` after every cycle instead.
- ``mode="readout"``: sign-on, option 0, the whole data block (for meters without R2 access).

Every block's BCC is verified; a bad block is answered with NAK and re-read, at most ``retries``
times. Each step has its own timeout. A vanished port raises :class:`PortUnavailableError`, and
the next reads reopen it with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass, field

from meters.errors import (
    ChecksumError,
    MeterError,
    MeterIdMismatchError,
    MeterTimeoutError,
    PortUnavailableError,
    ProtocolError,
    RegisterError,
)
from meters.iec62056_21 import (
    ACK,
    BAUD_RATES,
    ETX,
    NAK,
    OPTION_PROGRAMMING,
    OPTION_READOUT,
    STX,
    ack_option,
    check_block,
    choose_baud_char,
    command,
    parse_ident_message,
    parse_r2_answer,
    sign_on,
)
from meters.obis import Identification, Readout, Register, build_readout, parse_readout, to_reading
from meters.reading import Reading
from meters.serial_link import Backoff, LineSettings, SerialLink

_ACK = "ACK"


@dataclass(frozen=True, slots=True)
class IecConfig:
    """Driver settings (TOML ``[meter]`` with ``driver = "iec"``); times in [s]."""

    port: str  # a stable path such as /dev/serial/by-id/usb-…-if00-port0
    address: str = ""  # device address for the sign-on (empty: any meter on the probe)
    mode: str = "programming"  # "programming" (R2 reads) or "readout"
    registers: tuple[str, ...] = ("1.8.0", "2.8.0", "1.7.0", "2.7.0")
    id_register: str | None = "0.0.0"  # read once per session; None: use meter_id
    meter_id: str | None = None  # expected id; a different one raises MeterIdMismatchError
    password: str | None = None  # P1 password (level 1) if the meter asks for one
    max_baud: int = 9600
    switch_delay_s: float = 0.3  # > 0.2 s: the 6-byte ACK takes 200 ms to leave at 300 baud
    wakeup_nul_count: int = 0  # battery meters: e.g. 70 NULs ≈ 2.3 s at 300 baud 7E1
    wakeup_pause_s: float = 1.5
    ident_timeout_s: float = 2.0
    block_timeout_s: float = 1.5
    readout_timeout_s: float = 300.0
    retries: int = 3
    keep_session: bool = True
    # True: parity in bit 7 of 8N1 (adapters without 7 bits); None: auto (software if refused)
    software_parity: bool | None = None
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    tz: str = "Europe/Amsterdam"

    def __post_init__(self) -> None:
        if self.mode not in ("programming", "readout"):
            raise ValueError(f"mode {self.mode!r}: expected 'programming' or 'readout'")
        if not self.registers and self.mode == "programming":
            raise ValueError("programming mode needs at least one register to read")
        if self.max_baud not in BAUD_RATES.values():
            raise ValueError(f"max_baud {self.max_baud}: one of {sorted(BAUD_RATES.values())}")


@dataclass(slots=True)
class IecStats:
    """Counters for metrics and the bench."""

    cycles: int = 0
    sign_ons: int = 0
    naks_sent: int = 0
    naks_received: int = 0
    timeouts: int = 0
    failures: int = field(default=0)


def _line_end(buf: bytes) -> int:
    return buf.find(b"\n") + 1


def _message_end(buf: bytes) -> int:
    """Length of one complete answer: a lone ACK/NAK, or anything up to ``ETX BCC``."""
    if buf[:1] in (bytes([ACK]), bytes([NAK])):
        return 1
    etx = buf.find(bytes([ETX]))
    return etx + 2 if 0 <= etx < len(buf) - 1 else 0


class IecDriver:
    """:class:`meters.reading.MeterDriver` for IEC 62056-21 mode C meters."""

    def __init__(self, config: IecConfig, *, link: SerialLink | None = None) -> None:
        self.config = config
        settings = LineSettings(300, software_parity=config.software_parity)
        backoff = Backoff(config.backoff_initial_s, config.backoff_max_s)
        self.link = link or SerialLink(config.port, settings, backoff=backoff)
        self.stats = IecStats()
        self.identification: Identification | None = None
        self._session = False
        self._id_register: Register | None = None
        self._export_seen = False

    async def read(self) -> Reading:
        """One poll cycle; raises a :class:`MeterError` subclass, never returns bad energy."""
        await self.link.open()
        self.stats.cycles += 1
        try:
            if self.config.mode == "readout":
                readout = await self._readout_cycle()
            else:
                readout = await self._programming_cycle()
        except PortUnavailableError:
            self._session = False
            self.stats.failures += 1
            raise
        except MeterError:
            self.stats.failures += 1
            await self._abandon_session()
            raise
        reading = to_reading(readout, meter_id=self.config.meter_id, export_seen=self._export_seen)
        self._export_seen |= readout.export_wh is not None
        if self.config.meter_id is not None and reading.meter_id != self.config.meter_id:
            raise MeterIdMismatchError(
                f"meter answers as {reading.meter_id!r}, configured {self.config.meter_id!r}"
            )
        return reading

    async def close(self) -> None:
        """End the session (break) if one is open and release the port."""
        if self._session and self.link.is_open:
            # A vanished port leaves no session to end.
            with contextlib.suppress(PortUnavailableError):
                await self.link.write(command("B0"))
        self._session = False
        await self.link.close()

    async def _readout_cycle(self) -> Readout:
        await self._sign_on(OPTION_READOUT)
        raw = await self.link.read_until(_message_end, "readout", self.config.readout_timeout_s)
        start = raw.find(bytes([STX]))
        if start < 0:
            raise ProtocolError(f"readout without STX: {raw[:24]!r}")
        readout = parse_readout(raw[start:], tz=self.config.tz)
        return dataclasses.replace(readout, identification=self.identification)

    async def _programming_cycle(self) -> Readout:
        reused = self._session
        if reused:
            try:
                # One try only: a kept session the meter has meanwhile ended (inactivity
                # timeout) must cost one block timeout, not the whole retry budget.
                first = await self._r2(self.config.registers[0], timeout_retries=0)
            except MeterTimeoutError:
                self._session = False
                reused = False
        if not reused:
            await self._open_session()
            first = await self._r2(self.config.registers[0])
        registers = [first] + [await self._r2(a) for a in self.config.registers[1:]]
        if not self.config.keep_session:
            await self.link.write(command("B0"))
            self._session = False
        if self._id_register is not None:
            registers.insert(0, self._id_register)
        return build_readout(registers, self.identification, tz=self.config.tz)

    async def _open_session(self) -> None:
        await self._sign_on(OPTION_PROGRAMMING)
        code, _prompt = await self._transact(None, "password prompt P0")
        if code != "P0":
            raise ProtocolError(f"expected the P0 password prompt, got {code!r}")
        if self.config.password is not None:
            code, _ = await self._transact(
                command("P1", f"({self.config.password})"), "password P1"
            )
            if code != _ACK:
                raise ProtocolError(f"password not accepted (meter answered {code!r})")
        self._session = True
        reg_id = self.config.id_register
        self._id_register = await self._r2(reg_id) if reg_id else None

    async def _sign_on(self, option: str) -> None:
        cfg, link = self.config, self.link
        link.set_baudrate(300)
        link.discard_input()
        link.echo = False  # detected afresh at each sign-on
        if cfg.wakeup_nul_count:
            await link.write(bytes(cfg.wakeup_nul_count))
            await asyncio.sleep(cfg.wakeup_pause_s)
        request = sign_on(cfg.address)
        await link.write(request)
        self.identification = await self._read_identification(request)
        baud_char = choose_baud_char(self.identification.baud_char, cfg.max_baud)
        await link.write(ack_option(baud_char, option))
        # Switch only after the ACK has left the UART and the probe (§6.4.4 note).
        await asyncio.sleep(cfg.switch_delay_s)
        link.set_baudrate(BAUD_RATES[baud_char])
        self.stats.sign_ons += 1

    async def _read_identification(self, request: bytes) -> Identification:
        async with asyncio.timeout(self.config.ident_timeout_s + 0.5):
            while True:
                line = await self.link.read_until(
                    _line_end, "identification", self.config.ident_timeout_s
                )
                line = line.lstrip(b"\0")  # wake-up NULs echoed by the probe
                if line == request:
                    # A half-duplex probe echoes what we send: drop the echo from now on.
                    self.link.echo = True
                    continue
                if not line.strip():
                    continue
                return parse_ident_message(line)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _r2(self, address: str, *, timeout_retries: int | None = None) -> Register:
        code, data = await self._transact(
            command("R2", f"{address}()"), f"R2 {address}", timeout_retries
        )
        if code is not None:
            raise ProtocolError(f"R2 {address}: meter answered with command {code!r}")
        text = data.decode("ascii", errors="replace")
        if text.lstrip("(").upper().startswith("ER"):
            raise RegisterError(f"R2 {address}: meter answered {text.strip()!r}")
        return parse_r2_answer(address, data)

    async def _transact(
        self, message: bytes | None, step: str, timeout_retries: int | None = None
    ) -> tuple[str | None, bytes]:
        """Send ``message`` (None: just listen) and return the verified answer.

        A corrupted answer (BCC or parity) is NAKed and re-read; a NAK from the meter makes us
        repeat the message; a timeout repeats it too; at most ``retries`` repetitions (and at
        most ``timeout_retries`` after timeouts).
        """
        cfg, link = self.config, self.link
        to_send = message
        error: MeterError = MeterTimeoutError(step, cfg.block_timeout_s)
        timeouts_left = cfg.retries if timeout_retries is None else timeout_retries
        for _attempt in range(cfg.retries + 1):
            if to_send is not None:
                await link.write(to_send)
            try:
                raw = await link.read_until(_message_end, step, cfg.block_timeout_s)
            except MeterTimeoutError as exc:
                self.stats.timeouts += 1
                if timeouts_left <= 0:
                    raise
                timeouts_left -= 1
                error, to_send = exc, message
                continue
            bad_parity, link.parity_errors = link.parity_errors, 0
            if raw == bytes([NAK]):
                self.stats.naks_received += 1
                error, to_send = ProtocolError(f"{step}: meter sent NAK"), message
                continue
            if raw == bytes([ACK]):
                return _ACK, b""
            try:
                if bad_parity:
                    raise ProtocolError(f"{step}: {bad_parity} character(s) with wrong parity")
                return check_block(raw)
            except (ChecksumError, ProtocolError) as exc:
                self.stats.naks_sent += 1
                error, to_send = exc, bytes([NAK])
        raise error

    async def _abandon_session(self) -> None:
        """After a failed step: best-effort break, then sign on afresh next cycle."""
        if self._session and self.link.is_open:
            with contextlib.suppress(PortUnavailableError):  # the next read reopens the port
                await self.link.write(command("B0"))
        self._session = False
