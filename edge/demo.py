"""``python -m edge.demo``: the Lugaggia community on this machine, a simulated day in a minute.

Spec: docs/spec/testnet.md §Demo. Steps: start a broker (edge/broker.py) → ``lemctl testnet
init`` with the pilot's shape (19 members, 4 validators) → pin the clocks → start one lemd per
member (edge/launch.py) → show progress until the market period is over and settled on the
ledger (the nodes' period schedulers submit SolveMarkets; the demo submits one itself if none
has landed in time) → check that every node holds the same block → stop everything → print the
members' energy, postings and balances, the community's figures, and the offline audit.
Ctrl-C (SIGINT) or SIGTERM at any time stops every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import io
import math
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.broker import BrokerError, RunningBroker, start_broker
from edge.cli.main import main as lemctl
from edge.demo_report import audit, format_report, ledger_dir, read_period
from edge.http import request
from edge.launch import Community
from edge.testnet import DEFAULT_START, Manifest, free_port_block, load_manifest
from ledger.store import Store

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
SOLVE_WAIT_S = 60.0
"""Real seconds after end + grace before the demo submits SolveMarkets itself."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edge.demo", description=__doc__.split("\n")[0])
    p.add_argument("--speed", type=float, default=1440.0, help="simulated s per real s (1440)")
    p.add_argument("--hours", type=int, default=24, help="simulated hours = one market period")
    p.add_argument("--members", type=int, default=19)
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument("--dir", type=Path, help="testnet folder (default: a temporary one, removed)")
    p.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto")
    p.add_argument(
        "--preroll",
        type=float,
        help="real s of simulated time before the day starts, for the nodes' start-up "
        "(default 5 + 1 per member)",
    )
    p.add_argument("--no-progress", action="store_true", help="no live table, a line every 10 s")
    p.add_argument(
        "--privacy",
        choices=("open", "pseudonymous"),
        default="open",
        help="pseudonymous: the ledger holds pseudonyms, the serials only the admin's identity "
        "store (docs/spec/privacy.md)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status (0 also requires "audit: OK")."""
    args = parse_args(argv)
    if 24 % args.hours:
        print(f"--hours {args.hours}: must divide 24", file=sys.stderr)
        return 2
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="lem-demo-"))
    # Ctrl-C raises at once wherever the demo is. Left to asyncio.run, a SIGINT only cancels
    # the watch task, and in full test-suite runs the demo twice went on for 30 s after one
    # (cause not found; tests/e2e/test_demo.py prints the stacks should it happen again).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: stacks to stderr
    broker: RunningBroker | None = None
    community: Community | None = None
    try:
        broker = start_broker(workdir / "broker", args.broker)
        print(f"broker: {broker.kind} on {broker.url}")
        mqtt_version = 4 if broker.kind == "amqtt" else 5  # amqtt speaks MQTT 3.1.1 only
        manifest = init_testnet(args, workdir / "testnet", broker.url, mqtt_version)
        community = Community(manifest)
        community.anchor(lead_s=1.0)
        community.start()
        print(
            f"started {len(community.nodes)} lemd processes (logs: {manifest.root}/nodeK/lemd.log)"
        )
        # The pre-roll may add periods before the demo day: settle the one starting at it.
        day_ms = int(datetime.fromisoformat(DEFAULT_START).timestamp() * 1000)
        period = next(p for p in manifest.periods if p["start_ms"] == day_ms)
        outcome = asyncio.run(run_period(community, period, progress=not args.no_progress))
        community.stop()
        community = None
        return report(manifest, period["period_id"], outcome, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (BrokerError, TimeoutError, RuntimeError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if community is not None:
            community.stop()
        if broker is not None:
            broker.stop()
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def init_testnet(
    args: argparse.Namespace, root: Path, broker_url: str, mqtt_version: int
) -> Manifest:
    """``lemctl testnet init`` with the demo's options (the same code path as the CLI)."""
    base = free_port_block(2 * args.members)
    # Simulated time starts a little before the day, so the day's first slots are measured
    # although 19 Python processes take a while to start on a small machine.
    preroll_s = args.preroll if args.preroll is not None else 5 + 1.0 * args.members
    preroll = timedelta(seconds=math.ceil(preroll_s * args.speed / 900) * 900)
    start = datetime.fromisoformat(DEFAULT_START) - preroll
    argv = [
        "testnet", "init",
        "--validators", str(args.validators),
        "--members", str(args.members),
        "--dir", str(root),
        "--broker", broker_url,
        "--speed", str(args.speed),
        "--chain-id", "lugaggia-demo",
        "--seed", str(args.seed),
        "--period-hours", str(args.hours),
        "--start", start.isoformat(),
        "--base-port", str(base),
        "--mqtt-version", str(mqtt_version),
        "--privacy", getattr(args, "privacy", "open"),
    ]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # its per-node table; the demo shows its own
        status = lemctl(argv)
    if status != 0:
        raise RuntimeError(f"lemctl testnet init failed:\n{printed.getvalue()}")
    manifest = load_manifest(root)
    print(
        f"lemctl testnet init: {len(manifest.nodes)} nodes ({len(manifest.validators)} "
        f"validators), chain {manifest.chain_id!r}, speed {manifest.speed:g}, in {root}"
    )
    return manifest


async def run_period(
    community: Community, period: dict[str, Any], *, progress: bool
) -> dict[str, Any]:
    """Watch the community until ``period`` is solved on every node; returns the final figures."""
    m = community.manifest
    anchor = datetime.fromisoformat(m.anchor).timestamp()
    start_s = datetime.fromisoformat(m.start).timestamp()
    due_real = anchor + (period["end_ms"] / 1000 + m.grace_s - start_s) / m.speed
    display = Display(community, period, tty=progress and sys.stdout.isatty())
    solved_at: float | None = None
    submitted = False
    while True:
        statuses = await community.statuses()
        sim_s = start_s + (time.time() - anchor) * m.speed
        display.show(sim_s, statuses)
        dead = community.exited()
        if dead:
            name, code = dead[0]
            raise RuntimeError(f"node {name} exited with status {code}:\n{_tail(community, name)}")
        solved = await _solved(community, period["period_id"])
        if solved is not None and solved_at is None:
            solved_at = time.time()
        if solved is not None and _all_reached(statuses, solved):
            display.done()
            return {"solved_height": solved, "statuses": statuses}
        if solved is None and not submitted and time.time() > due_real + SOLVE_WAIT_S:
            await request(m.nodes[0].api, "POST", "/solve", {"period_id": period["period_id"]})
            print(f"no SolveMarkets yet: submitted one through {m.nodes[0].name}")
            submitted = True
        if time.time() > due_real + 3 * SOLVE_WAIT_S:
            raise TimeoutError(f"period {period['period_id']} not settled on every node")
        await asyncio.sleep(1.0)


async def _solved(community: Community, period_id: str) -> int | None:
    """The height that solved ``period_id`` (node 0's view), or None."""
    try:
        code, body = await request(
            community.manifest.nodes[0].api, "GET", f"/params?period={period_id}", timeout_s=2.0
        )
    except (OSError, TimeoutError):
        return None
    if code != 200 or not isinstance(body, dict) or not body.get("solved"):
        return None
    return int(body.get("solved_height", 0))


def _all_reached(statuses: list[dict[str, Any] | None], height: int) -> bool:
    return all(s is not None and s.get("height", 0) >= height for s in statuses)


def _tail(community: Community, name: str) -> str:
    k = next(i for i, n in enumerate(community.nodes) if n.entry.name == name)
    return community.log_tail(k)


class Display:
    """The live progress table (a TTY) or a summary line every 10 s (a pipe)."""

    def __init__(self, community: Community, period: dict[str, Any], *, tty: bool) -> None:
        self.community = community
        self.period = period
        self.tty = tty
        self.drawn = 0
        self.last_line = 0.0

    def show(self, sim_s: float, statuses: list[dict[str, Any] | None]) -> None:
        lines = self.render(sim_s, statuses)
        if self.tty:
            if self.drawn:
                sys.stdout.write(f"\x1b[{self.drawn}A\x1b[J")
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            self.drawn = len(lines)
        elif time.monotonic() - self.last_line >= 10:
            print(lines[0], flush=True)
            self.last_line = time.monotonic()

    def done(self) -> None:
        self.drawn = 0

    def render(self, sim_s: float, statuses: list[dict[str, Any] | None]) -> list[str]:
        up = [s for s in statuses if s is not None]
        heights = [int(s.get("height", 0)) for s in up]
        committed = sum(_get(s, "submitter", "committed_records") for s in up)
        outbox = [_get(s, "outbox", "depth") for s in up]
        end_s = self.period["end_ms"] / 1000
        sim = datetime.fromtimestamp(sim_s, UTC).strftime("%Y-%m-%d %H:%M")
        if sim_s < self.period["start_ms"] / 1000:
            phase = "nodes starting; the period begins at " + _hhmm(self.period["start_ms"])
        else:
            phase = "running" if sim_s < end_s else "period over, settling"
        head = (
            f"sim {sim} UTC ({phase}) | nodes up {len(up)}/{len(statuses)} | height "
            f"{min(heights, default=0)}..{max(heights, default=0)} | slots committed {committed} "
            f"| outbox {sum(outbox)} (max {max(outbox, default=0)})"
        )
        rows = [head, f"{'node':<8} {'role':<9} {'height':>6} {'outbox':>6} {'slots':>5} "
                f"{'power W':>8} {'peers':>5} {'meter':<8}"]  # fmt: skip
        for node, s in zip(self.community.nodes, statuses, strict=True):
            if s is None:
                rows.append(f"{node.entry.name:<8} {node.entry.role:<9} {'(not answering)':>20}")
                continue
            meter = s.get("meter") or {}
            power = meter.get("power_w")
            rows.append(
                f"{node.entry.name:<8} {node.entry.role:<9} {s.get('height', 0):>6} "
                f"{_get(s, 'outbox', 'depth'):>6} {_get(s, 'submitter', 'committed_records'):>5} "
                f"{'' if power is None else power:>8} {s.get('peers', 0):>5} "
                f"{meter.get('state', '?'):<8}"
            )
        return rows


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


def _get(status: dict[str, Any], section: str, key: str) -> int:
    value = (status.get(section) or {}).get(key, 0)
    return int(value) if isinstance(value, int) else 0


def report(manifest: Manifest, period_id: str, outcome: dict[str, Any], workdir: Path) -> int:
    """Agreement check over every node's store, the member table and the audit."""
    height = int(outcome["solved_height"])
    hashes, lights = set(), 0
    for k in range(len(manifest.nodes)):
        if not ledger_dir(manifest, k).exists():  # a light member: its verified header
            lights += 1
            hashes.add(_light_hash(manifest, k, height))
            continue
        store = Store(ledger_dir(manifest, k), readonly=True)
        try:
            header = store.header(height)
            hashes.add(None if header is None else header.hash)
        finally:
            store.close()
    period = read_period(manifest, period_id)
    result = audit(period, workdir)
    print()
    print(format_report(period, result))
    agree = len(hashes) == 1 and None not in hashes
    print(
        f"consensus: {len(manifest.nodes)} nodes hold "
        f"{'the same' if agree else 'DIFFERENT'} block {height} "
        f"({len(manifest.nodes) - lights} block stores, {lights} light members' verified headers)"
    )
    return EXIT_OK if result.ok and agree else EXIT_FAILED


def _light_hash(manifest: Manifest, k: int, height: int) -> bytes | None:
    """The hash of the header at ``height`` that light member ``k`` verified (None: not
    verified, or pruned from its store)."""
    from ledger.genesis import Genesis
    from ledger.light import LightClient

    genesis = Genesis.from_json((manifest.root / "genesis.json").read_text())
    light = LightClient(ledger_dir(manifest, k).parent / "light", genesis)
    try:
        header = light.header(height)
        return None if header is None else header.hash
    finally:
        light.close()


if __name__ == "__main__":
    sys.exit(main())
