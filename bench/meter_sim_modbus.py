"""Bench: CPU per 5-s poll for the simulated and Modbus drivers, bytes per Modbus poll, and the
memory of a process that runs only the simulated meter (no pandas on the runtime path).

Run: ``.venv/bin/python bench/meter_sim_modbus.py [--polls N]``. Prints figures; asserts none.

* CPU per poll is the polling thread's own CPU time (``time.thread_time``) divided by the number
  of polls; for Modbus the device server runs on another thread with its own event loop, so its
  work is not counted against the driver (it is printed separately).
* Bytes per poll are counted by the device server (Modbus TCP ADUs with the 7-byte MBAP header;
  TCP/IP headers are extra) and, for RTU, on the pty null-modem line.
* Memory: a child process imports ``meters.sim.meter``, loads the shipped profile table and reads
  the kindergarten meter for a simulated day; it reports USS/RSS and whether pandas, numpy, pvlib
  or demandlib got imported. A second child imports pandas + pvlib for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meters.devices.modbus_server import ModbusMeterServer, PtyNullModem  # noqa: E402
from meters.integrator import Integrator  # noqa: E402
from meters.modbus import ModbusMeter, SerialTarget, TcpTarget  # noqa: E402
from meters.modbus_maps import BUILTIN_MAPS  # noqa: E402
from meters.sim.clock import ManualClock  # noqa: E402
from meters.sim.community import default_table, pilot_community  # noqa: E402
from meters.sim.meter import SimulatedMeter  # noqa: E402

T0 = datetime(2026, 6, 15, 9, tzinfo=UTC)
POLL_S = 5

_CHILD_SIM = """
import json, sys
from datetime import UTC, datetime
import psutil
from meters.sim.clock import ManualClock
from meters.sim.community import default_table, pilot_community
from meters.sim.meter import SimulatedMeter
clock = ManualClock(datetime(2026, 6, 15, tzinfo=UTC))
meter = SimulatedMeter(pilot_community(1)[-1], default_table(), clock)
for _ in range(17280):  # one simulated day of 5-s polls
    meter.read_at(clock.now())
    clock.advance(5)
mem = psutil.Process().memory_full_info()
heavy = sorted(m for m in ("pandas", "numpy", "pvlib", "demandlib") if m in sys.modules)
print(json.dumps({"uss": mem.uss, "rss": mem.rss, "heavy": heavy}))
"""

_CHILD_BARE = """
import json, psutil
mem = psutil.Process().memory_full_info()
print(json.dumps({"uss": mem.uss, "rss": mem.rss, "heavy": []}))
"""

_CHILD_MODBUS = """
import json, sys, psutil
import meters.modbus, meters.integrator
mem = psutil.Process().memory_full_info()
heavy = sorted(m for m in ("pandas", "numpy", "pvlib", "demandlib") if m in sys.modules)
print(json.dumps({"uss": mem.uss, "rss": mem.rss, "heavy": heavy}))
"""

_CHILD_HEAVY = """
import json, sys, psutil, pandas, pvlib, demandlib
mem = psutil.Process().memory_full_info()
heavy = sorted(m for m in ("pandas", "numpy", "pvlib", "demandlib") if m in sys.modules)
print(json.dumps({"uss": mem.uss, "rss": mem.rss, "heavy": heavy}))
"""


def bench_sim(polls: int) -> None:
    """CPU per poll of the simulated meter driver (and of the integrator fed by it)."""
    clock = ManualClock(T0)
    meter = SimulatedMeter(pilot_community(1)[-1], default_table(), clock)
    integrator = Integrator()

    async def run() -> tuple[float, float]:
        read_cpu = feed_cpu = 0.0
        for i in range(polls):
            t = time.thread_time()
            reading = await meter.read()
            u = time.thread_time()
            integrator.feed(reading, clock.now(), i * POLL_S)
            read_cpu += u - t
            feed_cpu += time.thread_time() - u
            clock.advance(POLL_S)
        return read_cpu, feed_cpu

    read_cpu, feed_cpu = asyncio.run(run())
    print(f"sim driver      : {1e6 * read_cpu / polls:8.1f} µs CPU per 5-s poll ({polls} polls)")
    print(f"slot integrator : {1e6 * feed_cpu / polls:8.1f} µs CPU per reading")


def _serve(server_box: queue.Queue[object], stop: threading.Event, name: str) -> None:
    """Device server thread: its own event loop, so its CPU is not the driver's."""

    async def main() -> None:
        clock = ManualClock(T0)
        sim = SimulatedMeter(pilot_community(1)[0], default_table(), clock)
        server = ModbusMeterServer(sim, BUILTIN_MAPS[name], clock)
        port = await server.start()
        cpu0 = time.thread_time()
        server_box.put((port, server))
        await asyncio.to_thread(stop.wait)
        server_box.put(time.thread_time() - cpu0)
        await server.stop()

    asyncio.run(main())


def bench_modbus_tcp(polls: int) -> None:
    """CPU per poll of the Modbus TCP driver and bytes per poll, for each built-in map."""
    for name in ("sdm630", "sdm120", "em24", "sunspec"):
        box: queue.Queue[object] = queue.Queue()
        stop = threading.Event()
        thread = threading.Thread(target=_serve, args=(box, stop, name), daemon=True)
        thread.start()
        port, server = box.get(timeout=10)  # type: ignore[misc]

        async def run(port: int = port, name: str = name) -> float:
            driver = ModbusMeter(TcpTarget("127.0.0.1", port), BUILTIN_MAPS[name], meter_id="b")
            await driver.read()  # connect and (SunSpec) discover outside the measurement
            cpu = time.thread_time()
            for _ in range(polls):
                await driver.read()
            cpu = time.thread_time() - cpu
            await driver.close()
            return cpu

        rx0, tx0, n0 = server.rx_bytes, server.tx_bytes, server.requests  # type: ignore[attr-defined]
        cpu = asyncio.run(run())
        rx = server.rx_bytes - rx0  # type: ignore[attr-defined]
        tx = server.tx_bytes - tx0  # type: ignore[attr-defined]
        requests = server.requests - n0 - 1  # type: ignore[attr-defined]
        stop.set()
        server_cpu = box.get(timeout=10)
        thread.join(timeout=10)
        per = polls + 1
        print(
            f"modbus tcp {name:8s}: {1e6 * cpu / polls:7.1f} µs driver CPU per poll, "
            f"{requests / polls:.0f} request(s), {rx / per:.0f} B up + {tx / per:.0f} B down "
            f"Modbus/TCP per poll (+~2×52 B TCP/IP headers); server thread "
            f"{1e6 * float(server_cpu) / per:.0f} µs per poll"  # type: ignore[arg-type]
        )


def bench_modbus_rtu(polls: int) -> None:
    """Bytes on the serial line per RTU poll (SDM630 over a pty null modem)."""

    async def run() -> tuple[int, int, float]:
        link = PtyNullModem()
        link.start()
        clock = ManualClock(T0)
        sim = SimulatedMeter(pilot_community(1)[0], default_table(), clock)
        server = ModbusMeterServer(sim, BUILTIN_MAPS["sdm630"], clock)
        await server.start_serial(link.device_port)
        driver = ModbusMeter(SerialTarget(link.host_port), BUILTIN_MAPS["sdm630"], meter_id="b")
        await driver.read()
        up, down, t = link.to_device_bytes, link.to_host_bytes, time.perf_counter()
        for _ in range(polls):
            await driver.read()
        wall = time.perf_counter() - t
        await driver.close()
        await server.stop()
        result = (link.to_device_bytes - up, link.to_host_bytes - down, wall)
        link.close()
        return result

    up, down, wall = asyncio.run(run())
    line_s = (up + down) * 10 / 9600 / polls  # 8N1 = 10 bits per byte at 9600 Bd
    print(
        f"modbus rtu sdm630  : {up / polls:.0f} B request + {down / polls:.0f} B answer per poll "
        f"on the serial line; {1000 * line_s:.0f} ms line time at 9600 Bd 8N1; "
        f"{1000 * wall / polls:.1f} ms wall per poll on the pty"
    )


def bench_memory() -> None:
    """USS/RSS of a process running only the simulated meter, vs bare Python and pandas+pvlib."""
    for label, code in (
        ("bare python + psutil", _CHILD_BARE),
        ("sim meter (runtime path)", _CHILD_SIM),
        ("modbus driver + integrator", _CHILD_MODBUS),
        ("pandas + pvlib + demandlib", _CHILD_HEAVY),
    ):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        )
        doc = json.loads(out.stdout)
        print(
            f"memory {label:27s}: USS {doc['uss'] / 2**20:5.1f} MiB, RSS {doc['rss'] / 2**20:5.1f}"
            f" MiB, heavy modules loaded: {doc['heavy'] or 'none'}"
        )


def main() -> int:
    """Run every part and print the figures."""
    parser = argparse.ArgumentParser(description="meter simulator / Modbus bench")
    parser.add_argument("--polls", type=int, default=500)
    args = parser.parse_args()
    print(f"# bench/meter_sim_modbus.py, Python {sys.version.split()[0]}, {time.ctime()}")
    bench_sim(args.polls * 10)
    bench_modbus_tcp(args.polls)
    bench_modbus_rtu(min(args.polls, 200))
    bench_memory()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
