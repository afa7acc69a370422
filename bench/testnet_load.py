"""Does a testnet keep up with its offered SetMeasure rate? Heights, mempools, backlogs, drops.

docs/spec/consensus.md §11b. Starts mosquitto on a free port and a ``lemctl testnet init``
community (edge/launch.py), then every ``--every`` seconds prints the height range, the largest
mempool, the submitters' in-flight txs, committed slot records (and their rate), the summed
slot outbox depth (the backlog), the transport's dropped/expired counts and resets. Offered rate
= members × speed / 900 SetMeasure/s (one record per member per 15-minute slot). Optionally
stops members ``--shed-from``… after ``--shed-at`` seconds to see whether the backlog drains::

    .venv/bin/python bench/testnet_load.py --members 12 --speed 8000 --minutes 2.5
    .venv/bin/python bench/testnet_load.py --members 12 --speed 12000 --shed-at 100 --shed-from 6
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.broker import start_broker
from edge.launch import Community
from edge.testnet import TestnetPlan, free_port_block, init_testnet


def line(statuses: list[dict[str, Any]], last: tuple[float, int] | None) -> tuple[str, int]:
    """One progress line from the nodes' ``/status`` documents, and the committed records."""
    heights = [s["height"] for s in statuses]
    mqtt = [s["mqtt"] or {} for s in statuses]
    records = sum(s["submitter"]["committed_records"] for s in statuses)
    rate = "" if last is None else f" rec/s={(records - last[1]) / (time.time() - last[0]):.1f}"
    text = (
        f"up={len(statuses)} h={min(heights)}..{max(heights)} "
        f"mempool={max(s['mempool']['txs'] for s in statuses)} "
        f"inflight={sum(s['submitter']['inflight'] for s in statuses)} "
        f"committed={records}{rate} backlog={sum(s['outbox']['depth'] for s in statuses)} "
        f"mqtt_dropped={sum(m.get('outbox_dropped', 0) for m in mqtt)} "
        f"(urgent {sum(m.get('outbox_dropped_urgent', 0) for m in mqtt)}) "
        f"expired={sum(m.get('outbox_expired', 0) for m in mqtt)} "
        f"resets={sum(s['submitter']['resets'] for s in statuses)}"
    )
    return text, records


def watch(community: Community, args: argparse.Namespace) -> None:
    """Print a progress line every ``args.every`` seconds for ``args.minutes``."""
    t0, last, shed = time.time(), None, False
    while time.time() - t0 < args.minutes * 60:
        time.sleep(args.every)
        if args.shed_at and not shed and time.time() - t0 > args.shed_at:
            for k in range(args.shed_from, args.members):
                community.kill_node(k, signal.SIGTERM)
            shed = True
            print(f"stopped nodes {args.shed_from}..{args.members - 1}", flush=True)
        up = [s for s in asyncio.run(community.statuses()) if s]
        if not up:
            print(f"t={time.time() - t0:5.0f} no node answers", flush=True)
            continue
        text, records = line(up, last)
        last = (time.time(), records)
        print(f"t={time.time() - t0:5.0f} {text}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--validators", type=int, default=4)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--speed", type=float, default=2000)
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--every", type=float, default=10, help="seconds between lines")
    ap.add_argument("--shed-at", type=float, default=0, help="stop members after [s]; 0 = never")
    ap.add_argument("--shed-from", type=int, default=6, help="first node index to stop")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lem-load-"))
    broker = start_broker(workdir / "broker", "mosquitto")
    community = None
    try:
        plan = TestnetPlan(
            validators=args.validators,
            members=args.members,
            out_dir=workdir / "testnet",
            broker=broker.url,
            speed=args.speed,
            chain_id="load",
            days=31,
            base_port=free_port_block(2 * args.members),
        )
        community = Community(init_testnet(plan))
        community.anchor(lead_s=3.0)
        community.start()
        offered = args.members * args.speed / 900
        print(f"{args.members} nodes, speed {args.speed:g}: {offered:.1f} SetMeasure/s offered")
        watch(community, args)
        return 0
    finally:
        if community is not None:
            community.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
