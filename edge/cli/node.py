"""``lemctl status | outbox | balance | market show | keys show``: ask a running lemd.

Spec: docs/spec/api.md §lemctl. Each command reads the node's API address from ``--config``
(default /etc/lemd/lemd.toml), makes one request and prints a table, or the JSON document with
``--json``. Exit status: 0 ok, 2 bad config or usage, 3 the node is not running (no answer).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.config import Config, ConfigError, load_config
from edge.http import request

DEFAULT_CONFIG = Path("/etc/lemd/lemd.toml")
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


class NotRunningError(Exception):
    """No lemd answers on the configured API address."""


def register(subparsers: Any) -> None:
    status = subparsers.add_parser("status", help="node, meter, ledger, outbox and resources")
    status.set_defaults(func=_status)
    outbox = subparsers.add_parser("outbox", help="slot records waiting for the ledger")
    outbox.add_argument("--limit", type=int, default=50, help="records to list (default 50)")
    outbox.set_defaults(func=_outbox)
    balance = subparsers.add_parser("balance", help="this node's balance and settlements")
    balance.set_defaults(func=_balance)
    market = subparsers.add_parser("market", help="market periods on the ledger")
    msub = market.add_subparsers(dest="market_command", required=True, metavar="SUBCOMMAND")
    show = msub.add_parser("show", help="a period's parameters, state and community totals")
    show.add_argument("--period", required=True, help="period id")
    show.set_defaults(func=_market_show)
    keys = subparsers.add_parser("keys", help="the node key")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    kshow = ksub.add_parser("show", help="print the node's public key (never the private seed)")
    kshow.set_defaults(func=_keys_show)
    for parser in (status, outbox, balance, show, kshow):
        parser.add_argument("--json", action="store_true", help="print JSON")


def node_config(args: argparse.Namespace) -> Config:
    return load_config(Path(args.config) if args.config else DEFAULT_CONFIG)


def call(config: Config, method: str, path: str, body: Any = None) -> Any:
    """One API request; returns the decoded JSON of a 2xx answer.

    Raises:
        NotRunningError: nothing listens on the API address.
        RuntimeError: the node answered with an error (message included).
    """
    try:
        status, value = asyncio.run(request(config.api.listen, method, path, body, timeout_s=10))
    except (ConnectionError, FileNotFoundError, TimeoutError, OSError) as exc:
        raise NotRunningError(
            f"lemd is not running (no answer on {config.api.listen}: {exc.__class__.__name__})"
        ) from exc
    if status >= 300:
        message = value.get("error") if isinstance(value, dict) else value
        raise RuntimeError(f"node answered {status}: {message}")
    return value


def _report(exc: Exception) -> int:
    """Print a failed node call and return its exit status (checked in this order)."""
    print(f"lemctl: {exc}", file=sys.stderr)
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, NotRunningError):
        return EXIT_NOT_RUNNING
    return EXIT_ERROR


def _run(args: argparse.Namespace, path: str, render: Any) -> int:
    try:
        config = node_config(args)
        value = call(config, "GET", path)
    except (ConfigError, NotRunningError, RuntimeError) as exc:
        return _report(exc)
    if args.json:
        print(json.dumps(value, indent=2, sort_keys=True))
    else:
        print(render(value))
    return EXIT_OK


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """A plain text table: columns padded to their widest cell, numbers right-aligned.

    Without ``header`` the rows are printed as a key/value list (no header line).
    """
    if header is None:
        return "\n".join(table(rows, ["" for _ in rows[0]]).splitlines()[2:]) if rows else ""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [
        all(_is_number(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(header))
    ]
    out = []
    for n, row in enumerate(cells):
        line = "  ".join(
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        out.append(line.rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _is_number(text: str) -> bool:
    return text.lstrip("-+").replace(".", "", 1).isdigit()


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def _mib(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f} MiB"


def render_status(s: dict[str, Any]) -> str:
    meter, outbox, res = s["meter"], s["outbox"], s["resources"]
    role = s["role"]
    rows = [
        ("node", f"{s['node']} ({role['consensus']}, {role['access']}, {role['mode']} mode)"),
        ("chain", s["chain_id"]),
        ("height", s["height"]),
        ("block hash", s["hash"][:16] + "…"),
        ("app hash", s["app_hash"][:16] + "…"),
        ("block time", _when(s["block_time_ms"])),
        ("peers", s["peers"]),
        ("mempool", f"{s['mempool']['txs']} txs"),
        ("meter", f"{meter.get('meter_id', '')} {meter['state']} {meter.get('error', '')}".strip()),
        ("meter import/export", f"{meter.get('import_wh', '')} / {meter.get('export_wh', '')} Wh"),
        (
            "outbox",
            f"{outbox['depth']} waiting, oldest {outbox['oldest_age_s'] or 0} s, "
            f"{outbox['rejected']} rejected",
        ),
        ("in flight", s["submitter"]["inflight"]),
        ("memory", f"RSS {_mib(res['rss_bytes'])}, USS {_mib(res['uss_bytes'])}"),
        ("cpu time", f"{res['cpu_s']} s"),
        ("disk free", _mib(res.get("disk_free_bytes"))),
        ("uptime", f"{s['uptime_s']} s"),
    ]
    if s.get("mqtt"):
        m = s["mqtt"]
        rows.append(("mqtt", f"{'up' if m.get('connected') else 'down'} {m.get('broker', '')}"))
    join = s.get("join")
    if join:  # a node provisioned from a community file (edge/join.py phases)
        rows.append(("join", f"{join['phase']}: {join['error'] or join['detail']}"))
    if s["health"]["stale"]:
        rows.append(("NOT HEALTHY", ", ".join(s["health"]["stale"])))
    return table(rows)


def _status(args: argparse.Namespace) -> int:
    return _run(args, "/status", render_status)


def _outbox(args: argparse.Namespace) -> int:
    def render(v: dict[str, Any]) -> str:
        rows = [
            (
                _when(r["slot_start_s"] * 1000),
                r["import_wh"],
                r["export_wh"],
                ",".join(r["quality"]),
            )
            for r in v["pending"]
        ]
        text = f"{v['depth']} record(s) waiting, {v['inflight']} tx(s) in flight\n"
        text += table(rows, ("slot (UTC)", "import_wh", "export_wh", "quality"))
        if v["rejected"]:
            bad = [(_when(r["slot_start_s"] * 1000), r["reason"]) for r in v["rejected"]]
            text += "\n\nrefused by the ledger (kept):\n" + table(bad, ("slot (UTC)", "reason"))
        # A light member's queued txs (POST /solve, admin writes, its JoinRequest; light.md §7).
        if v.get("queued_txs"):
            text += "\n\ntxs waiting:\n" + table(
                [(t["id"], t["kind"], t["rounds"]) for t in v["queued_txs"]],
                ("id", "kind", "re-sign rounds"),
            )
        if v.get("rejected_txs"):
            text += "\n\ntxs never included (kept):\n" + table(
                [(t["id"], t["kind"], t["reason"]) for t in v["rejected_txs"]],
                ("id", "kind", "reason"),
            )
        return text

    return _run(args, f"/outbox?limit={args.limit}", render)


def _ect(uect: int | None) -> str:
    return "" if uect is None else f"{uect / 1e6:.6f}"


def _balance(args: argparse.Namespace) -> int:
    def render(v: dict[str, Any]) -> str:
        rows = [("this node", _ect(v["balance_uect"]))]
        for name in ("community", "grid"):
            if f"{name}_uect" in v:
                rows.append((name, _ect(v[f"{name}_uect"])))
        rows += [(f"period {p}", _ect(a)) for p, a in v.get("settlements_uect", {}).items()]
        return f"account {v['account']}\n" + table(rows, ("", "ECT"))

    return _run(args, "/balance", render)


def _market_show(args: argparse.Namespace) -> int:
    try:
        config = node_config(args)
        params = call(config, "GET", f"/params?period={args.period}")
        try:
            totals = call(config, "GET", f"/totals?period={args.period}")["slots"]
        except RuntimeError:
            totals = None  # a key without a role may not read totals
    except (ConfigError, NotRunningError, RuntimeError) as exc:
        return _report(exc)
    value = {"period": params, "totals": totals}
    if args.json:
        print(json.dumps(value, indent=2, sort_keys=True))
        return EXIT_OK
    head = [
        ("period", params["period_id"]),
        ("from", _when(params["start_ms"])),
        ("to", _when(params["end_ms"])),
        ("solved", params["solved"]),
        *sorted(params["params"].items()),
    ]
    print(table(head))
    if totals:
        rows = [
            (_when(t["slot_start_ms"]), t["import_wh"], t["export_wh"], t["meters"]) for t in totals
        ]
        print()
        print(table(rows, ("slot (UTC)", "import_wh", "export_wh", "meters")))
    return EXIT_OK


def _keys_show(args: argparse.Namespace) -> int:
    """The public key from the running node, or from the key file when the node is stopped."""
    try:
        config = node_config(args)
    except ConfigError as exc:
        print(f"lemctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        value = call(config, "GET", "/key")
    except (NotRunningError, RuntimeError):
        from ledger.errors import KeyFileError
        from ledger.keys import SigningKey

        try:
            key = SigningKey.load(config.key_file)
        except KeyFileError as exc:
            print(f"lemctl: node not running and {exc}", file=sys.stderr)
            return EXIT_NOT_RUNNING
        value = {"public_key": key.public_key.hex(), "role": None, "source": str(config.key_file)}
    if args.json:
        print(json.dumps(value, sort_keys=True))
    else:
        print(value["public_key"])
    return EXIT_OK
