"""Modbus targets from config / command line text."""

from __future__ import annotations

import pytest

from meters.modbus import ModbusConfigError, SerialTarget, TcpTarget, parse_target


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("192.168.1.50", TcpTarget("192.168.1.50", 502)),
        ("meter.local:1502", TcpTarget("meter.local", 1502)),
        ("tcp://10.0.0.7:502", TcpTarget("10.0.0.7", 502)),
        ("/dev/serial/by-id/usb-FTDI-if00", SerialTarget("/dev/serial/by-id/usb-FTDI-if00", 9600)),
        ("rtu:///dev/ttyUSB0", SerialTarget("/dev/ttyUSB0", 9600)),
    ],
)
def test_targets_parse(text: str, target: TcpTarget | SerialTarget) -> None:
    """host[:port], tcp:// and rtu:// or absolute paths map to TCP or RTU targets."""
    assert parse_target(text) == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("meter:99999", "port must be"),
        ("udp://meter:502", "use tcp://"),
        ("rtu://ttyUSB0", "absolute path"),
        (":502", "no host"),
    ],
)
def test_bad_targets_say_why(text: str, message: str) -> None:
    """A bad target is refused with the text and the reason."""
    with pytest.raises(ModbusConfigError, match=message):
        parse_target(text)
