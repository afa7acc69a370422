"""Footprint of the demo community: per-node CPU, USS and RSS; MQTT bytes per node per day.

Issue 6, Benchmarks. Targets: validator USS <= 40 MB, member USS <= 30 MB, CPU <= 0.3 % of one
core (MB = 10^6 bytes here, the stricter reading).

Real time (the footprint figure; at least 10 minutes)::

    .venv/bin/python bench/footprint.py --minutes 15   # a whole slot cycle (>= 10 min asked)

A simulated month of ledger at high speed (does USS grow with the ledger?); choose --minutes so
that the ledger keeps up (19 members sign 1,824 measurements per simulated day)::

    .venv/bin/python bench/footprint.py --month --days 31 --minutes 60

Runs the Lugaggia testnet (19 lemd processes, 4 validators, mosquitto on a free port) with
edge/launch.py, samples every node with psutil every ``--sample`` seconds after a warm-up, and
reads MQTT byte counters from each node's ``/status``. CPU % is process CPU time over wall time
between the first and the last sample. Everything it starts is stopped at the end or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from edge.broker import start_broker
from edge.launch import Community
from edge.testnet import DEFAULT_START, TestnetPlan, free_port_block, init_testnet

MB = 1_000_000
TARGET_USS_MB = {"validator": 40, "member": 30}
TARGET_CPU_PCT = 0.3
MONTH_DAYS = 31


@dataclass
class Series:
    """Samples of one node."""

    name: str
    role: str
    pid: int
    t: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    uss: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    sim_s: list[float] = field(default_factory=list)
    height: list[int] = field(default_factory=list)
    mqtt: list[tuple[float, int, int]] = field(default_factory=list)  # (t, bytes in, out)

    def cpu_pct(self) -> float:
        if len(self.t) < 2:
            return math.nan
        return 100 * (self.cpu_s[-1] - self.cpu_s[0]) / (self.t[-1] - self.t[0])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="sampled duration [real min]")
    p.add_argument("--month", action="store_true", help="--days of ledger in --minutes")
    p.add_argument("--days", type=int, default=MONTH_DAYS, help="simulated days of --month")
    p.add_argument("--speed", type=float, help="simulated s per real s (default 1; --month: fit)")
    p.add_argument("--warmup", type=float, default=60.0, help="unsampled start [real s]")
    p.add_argument("--sample", type=float, default=10.0, help="sampling interval [real s]")
    p.add_argument("--members", type=int, default=19)
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--dir", type=Path, help="keep the testnet here (default: temporary)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    # A background job ignores SIGINT: take SIGTERM as well, so that the finally block below
    # stops the nodes and the broker.
    signal.signal(signal.SIGTERM, _interrupt)
    days = args.days if args.month else 1 + math.ceil(args.minutes / 1440)
    speed = args.speed or (
        days * 86400 / ((args.minutes * 60 + args.warmup) * 0.97) if args.month else 1.0
    )
    # At real time, start so that a slot boundary (every node signs, validators commit a
    # block) falls one minute into the sampled window; the month run starts at midnight.
    start = datetime.fromisoformat(DEFAULT_START)
    if not args.month:
        start += timedelta(hours=12) - timedelta(seconds=args.warmup + 60)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="lem-footprint-"))
    broker = start_broker(workdir / "broker", "mosquitto")
    community = None
    try:
        plan = TestnetPlan(
            validators=args.validators,
            members=args.members,
            out_dir=workdir / "testnet",
            broker=broker.url,
            speed=round(speed, 1),
            chain_id="footprint",
            start=start.isoformat(),
            days=days,
            base_port=free_port_block(2 * args.members),
        )
        community = Community(init_testnet(plan))
        community.anchor(lead_s=3.0)
        community.start()
        print(
            f"{args.members} nodes ({args.validators} validators), speed {plan.speed:g}, "
            f"{days} daily periods; warm-up {args.warmup:g} s, sampling {args.minutes:g} min "
            f"every {args.sample:g} s; testnet {plan.out_dir}",
            flush=True,
        )
        series = asyncio.run(sample(community, args))
        report(series, community, plan.speed, broker.process.pid)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if community is not None:
            community.stop()
        broker.stop()
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def sample(community: Community, args: argparse.Namespace) -> list[Series]:
    await asyncio.sleep(args.warmup)
    series = [
        Series(n.entry.name, n.entry.role, n.process.pid)
        for n in community.nodes
        if n.process is not None
    ]
    procs = [psutil.Process(s.pid) for s in series]
    end = time.monotonic() + args.minutes * 60
    next_print = time.monotonic()
    while True:
        now = time.time()
        for s, proc in zip(series, procs, strict=True):
            cpu = proc.cpu_times()
            mem = proc.memory_full_info()
            s.t.append(now)
            s.cpu_s.append(cpu.user + cpu.system)
            s.uss.append(mem.uss)
            s.rss.append(mem.rss)
        if community.exited():
            raise RuntimeError(f"nodes exited: {community.exited()}")
        last = time.monotonic() >= end
        if last or time.monotonic() >= next_print:
            # /status costs the node a little CPU: ask once a minute, not every sample.
            await read_statuses(community, series)
            progress(series)
            next_print = time.monotonic() + 60
        if last:
            return series
        await asyncio.sleep(args.sample)


async def read_statuses(community: Community, series: list[Series]) -> None:
    now = time.time()
    for s, st in zip(series, await community.statuses(), strict=True):
        if st is not None:
            s.sim_s.append(st["clock"]["now_ms"] / 1000)
            s.height.append(int(st["height"]))
            mqtt = st.get("mqtt") or {}
            s.mqtt.append((now, int(mqtt.get("bytes_in", 0)), int(mqtt.get("bytes_out", 0))))


def progress(series: list[Series]) -> None:
    s0 = series[0]
    sim = datetime.fromtimestamp(s0.sim_s[-1], UTC).strftime("%Y-%m-%d %H:%M") if s0.sim_s else "?"
    heights = [s.height[-1] for s in series if s.height]
    uss = [s.uss[-1] / MB for s in series]
    print(
        f"  sim {sim} | height {min(heights, default=0)}..{max(heights, default=0)} | "
        f"USS {min(uss):.1f}..{max(uss):.1f} MB",
        flush=True,
    )


def report(series: list[Series], community: Community, speed: float, broker_pid: int) -> None:
    print()
    print(f"{'role':<10}{'n':>3}  {'USS MB mean/max':>16}  {'RSS MB mean/max':>16}  "
          f"{'CPU % mean/max':>15}  {'USS growth MB':>13}  target")  # fmt: skip
    for role in ("validator", "member"):
        group = [s for s in series if s.role == role]
        if not group:
            continue
        uss = [statistics.mean(s.uss) / MB for s in group]
        uss_max = max(max(s.uss) for s in group) / MB
        rss = [statistics.mean(s.rss) / MB for s in group]
        rss_max = max(max(s.rss) for s in group) / MB
        cpu = [s.cpu_pct() for s in group]
        growth = max((s.uss[-1] - s.uss[0]) / MB for s in group)
        ok = uss_max <= TARGET_USS_MB[role] and max(cpu) <= TARGET_CPU_PCT
        print(
            f"{role:<10}{len(group):>3}  {statistics.mean(uss):>7.1f} / {uss_max:<6.1f}  "
            f"{statistics.mean(rss):>7.1f} / {rss_max:<6.1f}  "
            f"{statistics.mean(cpu):>6.2f} / {max(cpu):<6.2f}  {growth:>+13.1f}  "
            f"USS <= {TARGET_USS_MB[role]} MB, CPU <= {TARGET_CPU_PCT} %: "
            f"{'met' if ok else 'NOT met'}"
        )
    for role in ("validator", "member"):
        splits = [uss_split(s.pid) for s in series if s.role == role]
        if splits:
            print(
                f"{role} USS now: LMDB file pages {statistics.mean(a for a, _ in splits) / MB:.1f}"
                f" MB, other (heap, code) {statistics.mean(b for _, b in splits) / MB:.1f} MB"
            )
    broker = psutil.Process(broker_pid).memory_full_info()
    print(f"broker (mosquitto): USS {broker.uss / MB:.1f} MB, RSS {broker.rss / MB:.1f} MB")
    mqtt_report(series, speed)
    s0 = series[0]
    if s0.sim_s and s0.height:
        store = community.manifest.root / community.nodes[0].entry.dir / "data" / "ledger"
        size = sum(f.stat().st_size for f in store.glob("*.mdb")) / MB
        print(
            f"simulated {(s0.sim_s[-1] - s0.sim_s[0]) / 86400:.2f} days while sampling; "
            f"ledger height {s0.height[0]} -> {s0.height[-1]}; node 0 store {size:.1f} MB "
            "(LMDB file incl. preallocated pages)"
        )
    print(
        "USS over the run (node 0): "
        + ", ".join(f"{u / MB:.1f}" for u in s0.uss[:: max(1, len(s0.uss) // 8)])
    )


def uss_split(pid: int) -> tuple[int, int]:
    """(private bytes of LMDB file mappings, all other private bytes) from /proc/PID/smaps.

    LMDB reads map the store's file: its pages count in USS but are clean file pages the
    kernel can drop, unlike the heap. Splitting them shows what grows with the ledger.
    """
    lmdb = other = 0
    in_lmdb = False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=6)
            if "-" in head[0] and len(head) >= 5 and head[0][0] in "0123456789abcdef":
                in_lmdb = len(head) > 5 and head[-1].strip().endswith(".mdb")
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                size = int(line.split()[1]) * 1024
                lmdb, other = (lmdb + size, other) if in_lmdb else (lmdb, other + size)
    return lmdb, other


def mqtt_report(series: list[Series], speed: float) -> None:
    """MQTT payload bytes per node per day (real day at speed 1, else per simulated day)."""
    unit = "real" if speed == 1 else "simulated"
    for role in ("validator", "member"):
        per_day = []
        for s in series:
            if s.role != role or len(s.mqtt) < 2:
                continue
            (t0, i0, o0), (t1, i1, o1) = s.mqtt[0], s.mqtt[-1]
            days = (t1 - t0) * speed / 86400
            per_day.append(((i1 - i0) / days, (o1 - o0) / days))
        if per_day:
            inbound = statistics.mean(p[0] for p in per_day) / MB
            outbound = statistics.mean(p[1] for p in per_day) / MB
            print(
                f"MQTT per {role} per {unit} day: in {inbound:.2f} MB, out {outbound:.2f} MB "
                f"(mean of {len(per_day)})"
            )


if __name__ == "__main__":
    sys.exit(main())
