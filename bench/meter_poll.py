"""CPU time per 5-s poll cycle of the IEC 62056-21 driver, and bytes on the serial line per cycle.

The simulated meter (meters/devices/iec_endpoint.py) runs in its own process on a real pty, so
this process's CPU time is the driver's alone. The driver polls back to back (the 5-s pause
costs no CPU); bytes are counted by the driver's serial link per cycle and checked against the
endpoint's own totals. Line time is what those bytes take at the real baud rates (10 bits per
7E1 character). Also: CPU per DSMR P1 telegram (both parsers), for meters that push every 1 s.

    .venv/bin/python bench/meter_poll.py [--cycles 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meters.iec_driver import IecConfig, IecDriver  # noqa: E402
from meters.p1 import parse_telegram  # noqa: E402

TELEGRAM = Path("/work/shared/testdata/telegrams/telegram_v5.txt")
REGISTERS = ("1.8.0", "2.8.0", "1.7.0", "2.7.0")


def start_endpoint(link: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "meters.devices.iec_endpoint", "--link", str(link)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # the path: the endpoint is serving
    return proc


def stop_endpoint(proc: subprocess.Popen[str]) -> dict[str, int]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    counters: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return counters


async def poll(link: Path, cycles: int, keep_session: bool) -> dict[str, float]:
    config = IecConfig(
        port=str(link), registers=REGISTERS, switch_delay_s=0.0, keep_session=keep_session
    )
    driver = IecDriver(config)
    cpu, line_bytes = [], []
    for _ in range(cycles):
        c0, b0 = time.process_time(), driver.link.bytes_tx + driver.link.bytes_rx
        await driver.read()
        cpu.append(time.process_time() - c0)
        line_bytes.append(driver.link.bytes_tx + driver.link.bytes_rx - b0)
    await driver.close()  # sends the break B0 when the session was kept
    ident = driver.identification
    # Sign-on request (5), identification ("/" + text + CRLF), ACK option (6) go at 300 baud.
    slow = 5 + (len(ident.text) + 3 if ident else 0) + 6
    steady = sorted(cpu[1:])
    return {
        "first_cpu_ms": cpu[0] * 1e3,
        "median_cpu_ms": steady[len(steady) // 2] * 1e3,
        "p95_cpu_ms": steady[int(len(steady) * 0.95)] * 1e3,
        "first_bytes": line_bytes[0],
        "steady_bytes": line_bytes[-1],
        "total_bytes": driver.link.bytes_tx + driver.link.bytes_rx,
        "slow_bytes": slow,
    }


def run_iec(cycles: int) -> None:
    for keep in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            link = Path(tmp) / "probe"
            proc = start_endpoint(link)
            try:
                r = asyncio.run(poll(link, cycles, keep))
            finally:
                counters = stop_endpoint(proc)
        seen = counters["bytes_rx"] + counters["bytes_tx"]
        agree = "agrees" if seen == r["total_bytes"] else f"DISAGREES ({seen})"
        name = "R2, session kept" if keep else "R2, sign-on + B0 every cycle"
        # 7E1: 10 bits per character. Sign-on and identification run at 300 baud.
        fast = r["steady_bytes"] - (0 if keep else r["slow_bytes"])
        line_s = fast * 10 / 9600 + (0 if keep else r["slow_bytes"] * 10 / 300 + 0.3)
        print(f"IEC 62056-21 {name}, {len(REGISTERS)} registers, {cycles} cycles:")
        print(
            f"  CPU per cycle: median {r['median_cpu_ms']:.2f} ms, p95 {r['p95_cpu_ms']:.2f} ms,"
            f" first (sign-on + id) {r['first_cpu_ms']:.2f} ms"
        )
        print(
            f"  bytes per cycle: {r['steady_bytes']} steady, {r['first_bytes']} first;"
            f" endpoint count {agree}"
        )
        print(
            f"  line time of a steady cycle (300 baud sign-on, 0.3 s switch, 9600 baud R2):"
            f" {line_s * 1e3:.0f} ms"
        )
        print(f"  CPU share of a 5-s cycle: {r['median_cpu_ms'] / 5000 * 100:.3f} %")


def run_p1(n: int) -> None:
    data = TELEGRAM.read_bytes()
    c0 = time.process_time()
    for _ in range(n):
        parse_telegram(data)
    per = (time.process_time() - c0) / n
    print(f"DSMR P1 telegram ({len(data)} bytes, strict OBIS + dsmr_parser v5), {n} parses:")
    print(f"  CPU per telegram: {per * 1e3:.2f} ms; at one telegram per second: {per * 100:.2f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=300)
    args = parser.parse_args()
    run_iec(args.cycles)
    run_p1(args.cycles)


if __name__ == "__main__":
    main()
