"""``lemctl schedule settle FILE [--json]``: settle a day of forward schedules offline.

Spec: docs/spec/schedules.md §Offline tool. Runs market.schedules on the schedules, asset
attributes and metered profiles in FILE, so anyone can recompute what the ledger posted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from market.decimals import parse_decimal
from market.errors import InvalidInput, MarketError
from market.schedules import (
    SLOTS_PER_DAY,
    Asset,
    AssetKind,
    DaySettlement,
    MemberDay,
    Prices,
    check_schedule,
    settle_day,
)

EXIT_BAD_INPUT = 2

SCHEMA = """\
FILE is a JSON object (keys starting with "_" are comments):
  {"slots": 96,                        optional; 15-min slots in the day (default 96)
   "prices": {                         decimal strings [ECT/kWh], all >= 0
     "forward": "0.20",                price of scheduled energy, both directions
     "imbalance_short": "0.30",        paid per kWh taken above schedule (or given below it)
     "imbalance_long": "0.10",         received per kWh taken below schedule; <= short
     "grid_buy": "0.25",               supervisor pays the grid per kWh of net community import
     "grid_sell": "0.08"},             grid pays the supervisor per kWh of net community export
   "supervisor": "gridsup",            grid-supervisor account id
   "grid": "grid",                     grid (DSO) account id
   "members": [
     {"id": "house-1",
      "asset": {"kind": "load",        load | generation | prosumer | storage
                "import_capacity_w": 8000, "export_capacity_w": 0},
      "schedule_wh": [..slots ints..], optional (no schedule = all 0); + take, - give [Wh]
      "import_wh":   [..slots ints..], metered import per slot [Wh], >= 0
      "export_wh":   [..slots ints..]} metered export per slot [Wh], >= 0
   ]}
A schedule must respect its asset: no production for "load", no consumption for
"generation", |energy| per slot <= capacity [W] x 0.25 h.
--json prints {"members": [{"id", "scheduled_wh", "metered_wh", "short_wh", "long_wh",
  "forward_uect", "imbalance_uect", "posting_uect"}], "supervisor": {"id", "posting_uect"},
  "grid": {"id", "import_wh", "export_wh", "posting_uect"}, "postings_uect": {id: change},
  "sum_uect": 0}. Amounts paid are > 0 when they leave the member; postings are balance
  changes. Exit status: 0 done, 2 unreadable or invalid FILE (the message names the field).
"""

_TOP_KEYS = {"slots", "prices", "supervisor", "grid", "members"}
_MEMBER_KEYS = {"id", "asset", "schedule_wh", "import_wh", "export_wh"}
_PRICE_KEYS = ("forward", "imbalance_short", "imbalance_long", "grid_buy", "grid_sell")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``schedule settle`` to the ``lemctl`` parser."""
    schedule = subparsers.add_parser("schedule", help="forward schedules and imbalance (seed 002)")
    verbs = schedule.add_subparsers(dest="verb", required=True, metavar="VERB")
    settle_cmd = verbs.add_parser(
        "settle",
        help="settle a day of forward schedules against metered profiles from a JSON file",
        description="Settle forward schedules against metered profiles at imbalance prices.",
        epilog=SCHEMA,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    settle_cmd.add_argument("file", type=Path, metavar="FILE", help="day of schedules (JSON)")
    settle_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    settle_cmd.set_defaults(func=run_settle)


def run_settle(args: argparse.Namespace) -> int:
    """Entry of ``lemctl schedule settle``; returns the exit status."""
    try:
        data = json.loads(args.file.read_text(encoding="utf-8"))
        report = settle_file(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"lemctl schedule settle: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MarketError as exc:
        print(f"lemctl schedule settle: {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(report, indent=2) if args.json else render_text(report))
    return 0


def settle_file(data: object) -> dict[str, Any]:
    """Parse a FILE object (see SCHEMA), check each schedule, settle the day, build the report.

    Raises:
        MarketError: InvalidInput for a malformed field, ScheduleError for a schedule its
            asset does not allow.
    """
    top = _object("FILE", data, _TOP_KEYS)
    slots = _int("slots", top.get("slots", SLOTS_PER_DAY))
    if slots <= 0:
        raise InvalidInput("slots", slots, "must be > 0")
    prices_in = _object("prices", top.get("prices"), set(_PRICE_KEYS))
    prices = Prices(*(parse_decimal(f"prices.{k}", prices_in.get(k)) for k in _PRICE_KEYS))
    supervisor = _name("supervisor", top.get("supervisor"))
    grid = _name("grid", top.get("grid"))
    members = top.get("members")
    if not isinstance(members, list) or not members:
        raise InvalidInput("members", members, "must be a non-empty list")
    days = [_member_day(f"members[{i}]", m, slots) for i, m in enumerate(members)]
    # The supervisor and the grid are counterparties, never members: merged postings would hide
    # a member's own settlement inside the counterparty's.
    if grid == supervisor or {grid, supervisor} & {d.member for d in days}:
        raise InvalidInput(
            "supervisor/grid",
            [supervisor, grid],
            "must differ from each other and from every member id",
        )
    settlement = settle_day(days, prices, slots)
    return report_json(settlement, supervisor, grid)


def _member_day(where: str, entry: object, slots: int) -> MemberDay:
    """One member's entry: asset, schedule (checked against the asset) and metered profile."""
    member = _object(where, entry, _MEMBER_KEYS)
    name = _name(f"{where}.id", member.get("id"))
    asset_in = _object(
        f"{where}.asset", member.get("asset"), {"kind", "import_capacity_w", "export_capacity_w"}
    )
    kind = asset_in.get("kind")
    if kind not in {k.value for k in AssetKind}:
        raise InvalidInput(f"{where}.asset.kind", kind, "must be one of " + ", ".join(AssetKind))
    asset = Asset(
        AssetKind(kind),
        _int(f"{where}.asset.import_capacity_w", asset_in.get("import_capacity_w", 0)),
        _int(f"{where}.asset.export_capacity_w", asset_in.get("export_capacity_w", 0)),
    )
    schedule = _series(f"{where}.schedule_wh", member.get("schedule_wh", [0] * slots), slots)
    check_schedule(name, asset, schedule, slots)
    return MemberDay(
        member=name,
        schedule_wh=schedule,
        import_wh=_series(f"{where}.import_wh", member.get("import_wh"), slots),
        export_wh=_series(f"{where}.export_wh", member.get("export_wh"), slots),
    )


def _object(field: str, value: object, allowed: set[str]) -> Mapping[str, Any]:
    """A JSON object whose keys are all known (or comments starting with "_")."""
    if not isinstance(value, dict):
        raise InvalidInput(field, value, "must be a JSON object")
    unknown = sorted(k for k in value if k not in allowed and not k.startswith("_"))
    if unknown:
        raise InvalidInput(field, unknown, "unknown keys")
    return value


def _name(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, value, "must be a non-empty string")
    return value


def _int(field: str, value: object) -> int:
    """An integer from JSON (bool is refused although Python counts it as int)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, value, "must be an integer")
    return value


def _series(field: str, value: object, slots: int) -> tuple[int, ...]:
    """A list of exactly ``slots`` integers."""
    if not isinstance(value, list) or len(value) != slots:
        shown = len(value) if isinstance(value, list) else value
        raise InvalidInput(field, shown, f"must be a list of {slots} integers")
    return tuple(_int(f"{field}[{i}]", v) for i, v in enumerate(value))


def report_json(settlement: DaySettlement, supervisor: str, grid: str) -> dict[str, Any]:
    """The ``--json`` form of a settled day (schema in SCHEMA)."""
    postings = dict(settlement.postings(supervisor, grid))
    return {
        "members": [
            {
                "id": m.member,
                "scheduled_wh": m.scheduled_wh,
                "metered_wh": m.metered_wh,
                "short_wh": m.short_wh,
                "long_wh": m.long_wh,
                "forward_uect": m.forward_uect,
                "imbalance_uect": m.imbalance_uect,
                "posting_uect": m.posting_uect,
            }
            for m in settlement.members
        ],
        "supervisor": {"id": supervisor, "posting_uect": settlement.supervisor_uect},
        "grid": {
            "id": grid,
            "import_wh": settlement.grid_import_wh,
            "export_wh": settlement.grid_export_wh,
            "posting_uect": settlement.grid_uect,
        },
        "postings_uect": postings,
        "sum_uect": sum(postings.values()),
    }


def render_text(report: Mapping[str, Any]) -> str:
    """A table for people: one line per member, then the supervisor and the grid."""
    head = (
        f"{'member':<14} {'sched Wh':>10} {'meter Wh':>10} {'short Wh':>9} {'long Wh':>8}"
        f" {'forward µECT':>14} {'imbal. µECT':>13} {'posting µECT':>14}"
    )
    lines = [head]
    for m in report["members"]:
        lines.append(
            f"{m['id']:<14} {m['scheduled_wh']:>10} {m['metered_wh']:>10} {m['short_wh']:>9}"
            f" {m['long_wh']:>8} {m['forward_uect']:>14} {m['imbalance_uect']:>13}"
            f" {m['posting_uect']:>14}"
        )
    sup, grid = report["supervisor"], report["grid"]
    lines.append(f"supervisor {sup['id']}: posting {sup['posting_uect']} µECT")
    lines.append(
        f"grid {grid['id']}: import {grid['import_wh']} Wh, export {grid['export_wh']} Wh,"
        f" posting {grid['posting_uect']} µECT"
    )
    lines.append(f"sum of postings: {report['sum_uect']} µECT")
    return "\n".join(lines)
