"""``lemctl meter``: parse files, read/watch/probe a simulated meter served on a real pty."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.cli.main import main
from edge.cli.meter import describe
from meters.obis import parse_readout

TELEGRAMS = Path("/work/shared/testdata/telegrams")
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[str]:
    """A simulated IEC meter in its own process, reachable through a by-id style symlink."""
    link = tmp_path / "usb-probe-if00"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meters.devices.iec_endpoint", "--link", str(link)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == str(link)
    yield str(link)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    proc.stdout.close()


def test_parse_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    """``meter parse FILE --json`` prints id, registers {value, unit}, import/export Wh."""
    assert main(["meter", "parse", str(TELEGRAMS / "telegram_v5.txt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["id"] == "K8EG004046395507"
    assert out["registers"]["1-0:1.8.1"] == {"value": "4.426", "unit": "kWh"}
    assert (out["import_wh"], out["export_wh"], out["errors"]) == (6825, 2444, [])


def test_parse_heat_meter_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    """A file without electricity registers: status 1, errors say why, no energy."""
    assert main(["meter", "parse", str(TELEGRAMS / "telegram_unpadded_crc.txt"), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["import_wh"] is None
    assert "no electricity energy register" in out["errors"][0]


def test_parse_no_crc_and_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    """--no-crc reads the Iskra IE telegram; a missing file is a usage error (2)."""
    iskra = str(TELEGRAMS / "telegram_iskra_ie.txt")
    assert main(["meter", "parse", iskra, "--json"]) == 1
    assert "CRC16 mismatch" in json.loads(capsys.readouterr().out)["errors"][0]
    assert main(["meter", "parse", iskra, "--json", "--no-crc"]) == 0
    assert json.loads(capsys.readouterr().out)["import_wh"] == 20_363
    assert main(["meter", "parse", "/nonexistent/telegram.txt"]) == 2


def test_read_iec_json(endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``meter read --driver iec --port LINK --json`` reads the simulated meter end to end."""
    args = ["meter", "read", "--driver", "iec", "--port", endpoint, "--switch-delay", "0.01"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "driver": "iec",
        "meter_id": "12345678",
        "import_wh": 1_234_567,
        "export_wh": 89_012,
        "power_w": 1250,
        "meter_time": None,
    }


def test_watch_prints_a_line_per_reading(endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``meter watch`` prints one line per read."""
    args = ["meter", "watch", "--driver", "iec", "--port", endpoint, "--switch-delay", "0.01"]
    assert main([*args, "--interval", "0", "--count", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert all("12345678: import 1234567 Wh, export 89012 Wh, 1250 W" in line for line in lines)


def test_probe_finds_the_iec_meter(endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``meter probe`` reports the IEC identification and that P1 stays silent."""
    assert main(["meter", "probe", endpoint, "--p1-timeout", "0.2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["answered"] for r in results] == [True, True, False, False]
    assert "manufacturer LEM, up to 9600 baud" in results[0]["detail"]
    assert results[2]["line"] == "115200 8N1"


def test_probe_nothing_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A port that does not exist: nothing answers, status 1, each attempt says why."""
    missing = str(tmp_path / "ttyNONE")
    assert main(["meter", "probe", missing, "--iec-timeout", "0.1", "--p1-timeout", "0.1"]) == 1
    assert capsys.readouterr().out.count("cannot open") == 4


def test_read_sim_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """The sim driver reads without a port; iec without --port is a usage error."""
    assert main(["meter", "read", "--driver", "sim", "--meter-id", "demo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["meter_id"] == "demo"
    assert main(["meter", "read", "--driver", "iec"]) == 2
    assert "needs --port" in capsys.readouterr().err


def test_read_error_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing port: status 1 and the typed error on stderr."""
    assert main(["meter", "read", "--driver", "p1", "--port", str(tmp_path / "nope")]) == 1
    assert "PortUnavailableError" in capsys.readouterr().err


def test_read_modbus_tcp_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``meter read --driver modbus --port HOST:PORT`` reads a real pymodbus server (SunSpec)."""
    from datetime import UTC, datetime

    from meters.devices.modbus_server import ModbusMeterServer
    from meters.modbus_maps import register_map
    from meters.sim.clock import ManualClock
    from meters.sim.community import default_table
    from meters.sim.meter import MeterSpec, SimulatedMeter

    noon = datetime(2026, 6, 15, 10, tzinfo=UTC)
    sim = SimulatedMeter(MeterSpec("sim-9", 4500, seed=3, initial_import_wh=1_234_567),
                         default_table(), ManualClock(noon))  # fmt: skip
    expected = sim.read_at(noon)
    loop = asyncio.new_event_loop()
    server = ModbusMeterServer(sim, register_map("sunspec"), ManualClock(noon))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        args = ["meter", "read", "--driver", "modbus", "--port", f"127.0.0.1:{port}"]
        assert main([*args, "--map", "sunspec", "--meter-id", "sim-9", "--json"]) == 0
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
    out = json.loads(capsys.readouterr().out)
    assert (out["driver"], out["meter_id"]) == ("modbus", "sim-9")
    assert (out["import_wh"], out["export_wh"]) == (expected.import_wh, expected.export_wh)


def readout_of(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


def test_describe_matches_the_cli_contract() -> None:
    """JSON: id, registers {obis: {value, unit}}, import_wh, export_wh, errors."""
    out = describe(parse_readout(readout_of("0.0.0(12345678)\n1.8.0(001234.567*kWh)\n")))
    assert out["id"] == "12345678"
    assert out["registers"] == {
        "0.0.0": {"value": "12345678", "unit": None},
        "1.8.0": {"value": "1234.567", "unit": "kWh"},
    }
    assert (out["import_wh"], out["export_wh"], out["errors"]) == (1_234_567, None, [])
