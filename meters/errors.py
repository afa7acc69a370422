"""Typed errors of the meters package; all derive from :class:`meters.reading.MeterError`.

The daemon catches ``MeterError`` at the polling boundary: a failed read is logged and counted,
never turned into energy. The subclasses carry what went wrong and where, so a technician (or
``lemctl meter``) can say which line, which byte or which step failed.
"""

from __future__ import annotations

from meters.reading import MeterError

__all__ = [
    "ChecksumError",
    "MeterError",
    "MeterIdMismatchError",
    "MeterTimeoutError",
    "MissingRegisterError",
    "ParseError",
    "PortUnavailableError",
    "ProtocolError",
    "RegisterError",
]


class ParseError(MeterError):
    """A readout or telegram line that does not follow the OBIS / IEC 62056-21 grammar.

    Attributes:
        line: 1-based line number in the readout, or None when the whole frame is at fault.
        reason: why the line was rejected.
    """

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.line = line
        self.reason = reason
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{reason}")


class ChecksumError(MeterError):
    """A block check character (IEC 62056-21) or CRC16 (DSMR P1) does not match.

    Attributes:
        kind: "BCC" or "CRC16".
        expected: the check value received on the line.
        computed: the check value computed over the received bytes.
    """

    def __init__(self, kind: str, expected: int, computed: int) -> None:
        self.kind = kind
        self.expected = expected
        self.computed = computed
        super().__init__(f"{kind} mismatch: received 0x{expected:02X}, computed 0x{computed:02X}")


class MissingRegisterError(MeterError):
    """The readout holds no register the driver needs (e.g. a heat meter: no 1.8.x at all)."""


class RegisterError(MeterError):
    """The meter answered a register request with an error (e.g. ``(ERROR)`` to an R2 read)."""


class ProtocolError(MeterError):
    """The meter answered with bytes the protocol step does not allow."""


class MeterTimeoutError(MeterError):
    """A protocol step got no (complete) answer within its timeout.

    Attributes:
        step: the step that timed out (e.g. "identification", "R2 1.8.0").
        timeout_s: the step's timeout [s].
    """

    def __init__(self, step: str, timeout_s: float) -> None:
        self.step = step
        self.timeout_s = timeout_s
        super().__init__(f"no answer to {step} within {timeout_s:g} s")


class PortUnavailableError(MeterError):
    """The serial port cannot be opened or vanished (probe unplugged).

    Attributes:
        port: the configured port path.
        retry_in_s: seconds until the driver tries to reopen it [s] (0 when it tries on next read).
    """

    def __init__(self, port: str, reason: str, retry_in_s: float = 0.0) -> None:
        self.port = port
        self.retry_in_s = retry_in_s
        super().__init__(f"serial port {port}: {reason} (next attempt in {retry_in_s:.1f} s)")


class MeterIdMismatchError(MeterError):
    """The meter reports a different id than configured (meter swapped or wrong probe)."""
