"""``lemctl testnet init|anchor``: generate a local testnet of simulated pilot meters.

Spec: docs/spec/testnet.md. Exit status 2 on a refused option or an existing testnet folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.testnet import (
    DEFAULT_START,
    TestnetError,
    TestnetPlan,
    init_testnet,
    load_manifest,
    set_anchor,
)

EXIT_INPUT = 2


def register(subparsers: Any) -> None:
    """Add ``testnet`` to ``lemctl``'s parser."""
    parser = subparsers.add_parser("testnet", help="generate and manage a local testnet")
    sub = parser.add_subparsers(dest="testnet_command", required=True, metavar="SUBCOMMAND")
    init = sub.add_parser(
        "init",
        help="write keys, a genesis and one lemd.toml per node",
        description=(
            "Generate DIR/genesis.json, DIR/testnet.json and DIR/nodeK/{lemd.toml,node.key} for "
            "M nodes with simulated Lugaggia meters, the first N of them validators. Keys are "
            "derived from --seed (demo/test only) unless --random-keys."
        ),
    )
    init.add_argument("--validators", type=int, required=True, metavar="N")
    init.add_argument("--members", type=int, required=True, metavar="M")
    init.add_argument("--dir", type=Path, required=True, metavar="DIR")
    init.add_argument("--broker", default="mqtt://127.0.0.1:1883", metavar="URL")
    init.add_argument("--speed", type=float, default=1.0, help="simulated s per real s")
    init.add_argument("--chain-id", default="lugaggia-testnet", metavar="ID")
    init.add_argument("--seed", type=int, default=2025, metavar="S")
    init.add_argument(
        "--start",
        default=DEFAULT_START,
        help=f"simulated time at the anchor, ISO 8601 (default {DEFAULT_START}); "
        "'now' = the real clock",
    )
    init.add_argument(
        "--anchor",
        default="",
        help="real UTC time at which simulated time equals --start (ISO 8601 or 'now'); "
        "needed when --speed > 1 (or set it later with `lemctl testnet anchor`)",
    )
    init.add_argument("--days", type=int, default=1, help="days the periods cover (default 1)")
    init.add_argument(
        "--period-hours", type=int, default=24, help="market period length [h] (default 24)"
    )
    init.add_argument("--base-port", type=int, default=26600, metavar="PORT")
    init.add_argument(
        "--poll-interval", type=float, default=0.0, metavar="S", help="meter poll [s]; 0 = auto"
    )
    init.add_argument(
        "--mqtt-version", type=int, default=5, help="5, or 4 = MQTT 3.1.1 (e.g. for amqtt)"
    )
    init.add_argument("--random-keys", action="store_true", help="keys from os.urandom")
    init.add_argument(
        "--privacy",
        choices=("open", "pseudonymous"),
        default="open",
        help="open: meter ids on the ledger; pseudonymous: keyed-hash pseudonyms, the admin's "
        "identity store in DIR/admin/identity, each node's admission in DIR/nodeK/data",
    )
    init.add_argument("--json", action="store_true", help="print the manifest as JSON")
    init.set_defaults(func=_init)
    anchor = sub.add_parser(
        "anchor", help="pin every node's clock anchor (run just before starting the nodes)"
    )
    anchor.add_argument("--dir", type=Path, required=True, metavar="DIR")
    anchor.add_argument(
        "--in", dest="in_s", type=float, default=3.0, help="anchor this many s from now"
    )
    anchor.set_defaults(func=_anchor)


def _init(args: argparse.Namespace) -> int:
    plan = TestnetPlan(
        validators=args.validators,
        members=args.members,
        out_dir=args.dir,
        broker=args.broker,
        speed=args.speed,
        chain_id=args.chain_id,
        seed=args.seed,
        start=args.start,
        anchor=args.anchor,
        days=args.days,
        period_hours=args.period_hours,
        base_port=args.base_port,
        poll_interval_s=args.poll_interval,
        mqtt_version=args.mqtt_version,
        deterministic_keys=not args.random_keys,
        privacy=args.privacy,
    )
    try:
        manifest = init_testnet(plan)
    except TestnetError as exc:
        print(f"lemctl testnet init: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        print((manifest.root / "testnet.json").read_text(), end="")
        return 0
    print(f"testnet {manifest.chain_id!r} in {manifest.root}: {len(manifest.nodes)} nodes")
    if plan.privacy != "open":
        print(f"privacy: {plan.privacy}; identity store {manifest.root}/admin/identity")
    print(f"{'node':<7} {'name':<9} {'role':<10} {'api':<16} {'metrics':<16} public key")
    for n in manifest.nodes:
        print(
            f"{n.dir:<7} {n.name:<9} {n.role:<10} {n.api:<16} {n.metrics:<16} {n.public_key[:16]}…"
        )
    print(
        f"periods: {', '.join(p['period_id'] for p in manifest.periods)}; broker {manifest.broker}"
    )
    if plan.deterministic_keys:
        print("keys are derived from the seed: for demos and tests only")
    if plan.speed != 1.0 and not plan.anchor:
        print(
            f"note: --speed {plan.speed:g} without --anchor: run `lemctl testnet anchor --dir "
            f"{manifest.root}` just before starting the nodes so their clocks agree"
        )
    print(f"start a node: lemd --config {manifest.root}/node0/lemd.toml")
    return 0


def _anchor(args: argparse.Namespace) -> int:
    try:
        manifest = load_manifest(args.dir)
        at = datetime.now(UTC) + timedelta(seconds=args.in_s)
        pinned = set_anchor(manifest, at.replace(microsecond=0))
    except TestnetError as exc:
        print(f"lemctl testnet anchor: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(json.dumps({"anchor": pinned.anchor, "start": pinned.start}))
    return 0
