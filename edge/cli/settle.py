"""``lemctl settle FILE [--json]``: recompute a community's settlement offline (the auditor's tool).

Reads the document of docs/spec/settlement.md ("lemctl settle") — market parameters as decimal
strings and 15-minute slots of per-member integer Wh — settles it with :mod:`market.amm` and
prints either a readable table or the JSON the spec fixes. Refused input goes to stderr with
exit status 2, naming the slot (index and start), the member and the field.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from market.amm import (
    InvalidSettlementInput,
    MarketParams,
    MemberEnergy,
    PeriodSettlement,
    SlotSettlement,
    settle_period,
)
from market.decimals import format_decimal, format_uect

EXIT_INPUT = 2
SLOT = timedelta(minutes=15)
TOP_KEYS = {"params", "slots", "members", "source"}
SLOT_KEYS = {"start", "measures"}
MEASURE_KEYS = ("import_wh", "export_wh")


@dataclass(frozen=True)
class SettleInput:
    """A parsed ``lemctl settle`` document."""

    params: MarketParams
    starts: tuple[str, ...]
    slots: tuple[dict[str, MemberEnergy], ...]
    members: tuple[str, ...] | None


class InputError(Exception):
    """A refused document, with the message the CLI prints."""


class _JsonFloat:
    """A JSON number with a fraction or exponent, kept as text so the error can quote it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"{self.text} (a JSON float)"


def register(subparsers: Any) -> None:
    """Add the ``settle`` subcommand to ``lemctl``'s parser."""
    parser = subparsers.add_parser(
        "settle",
        help="settle a set of 15-minute slots offline and print the result",
        description=(
            "Recompute the AMM local energy market settlement of a JSON document "
            "(docs/spec/settlement.md). Exit status 2 on refused input."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="input JSON document, or - for stdin")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Settle ``args.file`` and print the result; returns the exit status."""
    document: object = None
    try:
        document = _read(args.file)
        data = parse_document(document)
        result = settle_period(data.params, data.slots, members=data.members)
    except InputError as exc:
        print(f"lemctl settle: {args.file}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except InvalidSettlementInput as exc:
        print(f"lemctl settle: {args.file}: {describe(exc, document)}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        json.dump(to_json(data, result), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(to_text(data, result))
    return 0


def _read(path: str) -> object:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}") from exc
    try:
        return json.loads(text, parse_float=_JsonFloat, parse_constant=_JsonFloat)
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON: {exc}") from exc


def parse_document(document: object) -> SettleInput:
    """Check and convert a decoded document (spec "lemctl settle", input).

    Raises:
        InputError: the document's shape is wrong (names the place).
        InvalidSettlementInput: a value is refused (carries slot and member).
    """
    if not isinstance(document, dict):
        raise InputError("the document must be a JSON object with 'params' and 'slots'")
    _no_unknown_keys(document, TOP_KEYS, "document")
    if "params" not in document or "slots" not in document:
        raise InputError("the document needs both 'params' and 'slots'")
    if not isinstance(document["params"], dict):
        raise InputError("'params' must be an object of decimal strings")
    params = MarketParams.from_strings(document["params"])
    members = _members(document.get("members"))
    raw_slots = document["slots"]
    if not isinstance(raw_slots, list):
        raise InputError("'slots' must be a list")
    starts: list[str] = []
    slots: list[dict[str, MemberEnergy]] = []
    previous: datetime | None = None
    for index, raw in enumerate(raw_slots):
        try:
            start, moment, measures = _slot(raw, previous)
        except InvalidSettlementInput as exc:
            raise exc.at(slot=index) from None
        starts.append(start)
        slots.append(measures)
        previous = moment
    return SettleInput(params, tuple(starts), tuple(slots), members)


def _members(raw: object) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(m, str) and m for m in raw):
        raise InputError("'members' must be a list of non-empty member names")
    if len(set(raw)) != len(raw):
        raise InputError("'members' lists a name twice")
    return tuple(raw)


def _slot(raw: object, previous: datetime | None) -> tuple[str, datetime, dict[str, MemberEnergy]]:
    if not isinstance(raw, dict):
        raise InvalidSettlementInput("slot", raw, "must be an object with 'start' and 'measures'")
    for key in raw:
        if key not in SLOT_KEYS:
            raise InvalidSettlementInput(key, raw[key], f"unknown key (known: {sorted(SLOT_KEYS)})")
    start = raw.get("start")
    moment = _start(start, previous)
    assert isinstance(start, str)  # checked by _start
    measures = raw.get("measures", {})
    if not isinstance(measures, dict):
        raise InvalidSettlementInput("measures", measures, "must be an object member -> energy")
    return start, moment, {name: _measure(name, value) for name, value in measures.items()}


def _start(start: object, previous: datetime | None) -> datetime:
    if not isinstance(start, str):
        raise InvalidSettlementInput("start", start, "must be an ISO 8601 UTC time string")
    try:
        moment = datetime.fromisoformat(start)
    except ValueError:
        raise InvalidSettlementInput("start", start, "not an ISO 8601 time") from None
    if moment.utcoffset() != timedelta(0):
        raise InvalidSettlementInput("start", start, "must be UTC ('Z' or +00:00)")
    if moment.minute % 15 or moment.second or moment.microsecond:
        raise InvalidSettlementInput("start", start, "must be on a 15-minute boundary")
    if previous is not None and moment < previous + SLOT:
        raise InvalidSettlementInput("start", start, "slots must be in order, without repeats")
    return moment


def _measure(name: str, value: object) -> MemberEnergy:
    if not name:
        raise InvalidSettlementInput("member", name, "member names must be non-empty")
    if not isinstance(value, dict):
        raise InvalidSettlementInput(
            "measure", value, "must be an object with import_wh/export_wh", member=name
        )
    for key in value:
        if key not in MEASURE_KEYS:
            raise InvalidSettlementInput(
                key, value[key], f"unknown key (known: {list(MEASURE_KEYS)})", member=name
            )
    try:
        return MemberEnergy(value.get("import_wh", 0), value.get("export_wh", 0))
    except InvalidSettlementInput as exc:
        raise exc.at(member=name) from None


def _no_unknown_keys(obj: Mapping[str, object], known: set[str], what: str) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise InputError(f"{what}: unknown key {unknown[0]!r} (known: {sorted(known)})")


def describe(exc: InvalidSettlementInput, document: object) -> str:
    """``slot 3 (2026-11-01T00:45:00Z), member 'N2', field import_wh: reason (got -5)``."""
    parts = []
    if exc.slot is not None:
        start = _raw_start(document, exc.slot)
        parts.append(f"slot {exc.slot}" + (f" ({start})" if start else ""))
    if exc.member is not None:
        parts.append(f"member {exc.member!r}")
    parts.append(f"field {exc.field}: {exc.reason} (got {exc.value!r})")
    return ", ".join(parts)


def _raw_start(document: object, index: int) -> str | None:
    """The slot's ``start`` as written in the document, if there is a string there."""
    if isinstance(document, dict) and isinstance(document.get("slots"), list):
        slots = document["slots"]
        if index < len(slots) and isinstance(slots[index], dict):
            start = slots[index].get("start")
            return start if isinstance(start, str) else None
    return None


def _ratio(value: Fraction | None) -> str | None:
    return None if value is None else format_decimal(value)


def slot_json(start: str, slot: SlotSettlement) -> dict[str, object]:
    """One slot in the output schema (keys and order of spec "lemctl settle", output)."""
    return {
        "start": start,
        "e_c_wh": slot.e_c_wh,
        "e_p_wh": slot.e_p_wh,
        "p_buy": _ratio(slot.p_buy),
        "p_sell": _ratio(slot.p_sell),
        "gdi": _ratio(slot.gdi),
        "postings_uect": dict(sorted(slot.postings_uect.items())),
        "admin_uect": slot.admin_uect,
        "grid_uect": slot.grid_uect,
    }


def to_json(data: SettleInput, result: PeriodSettlement) -> dict[str, object]:
    """The whole ``--json`` output: slots in input order and the period totals."""
    return {
        "slots": [slot_json(s, r) for s, r in zip(data.starts, result.slots, strict=True)],
        "totals": {
            "postings_uect": dict(sorted(result.postings_uect.items())),
            "admin_uect": result.admin_uect,
            "grid_uect": result.grid_uect,
            "self_consumption": _ratio(result.self_consumption),
            "production_used_locally": _ratio(result.production_used_locally),
            "e_c_wh": result.e_c_wh,
            "e_p_wh": result.e_p_wh,
            "e_local_wh": result.e_local_wh,
            "slot_count": result.slot_count,
        },
    }


def _kwh(energy_wh: int) -> str:
    whole, part = divmod(energy_wh, 1000)
    return f"{whole}.{part:03d}"


def _cell(value: Fraction | None, places: int) -> str:
    return "-" if value is None else format_decimal(value, places)


def to_text(data: SettleInput, result: PeriodSettlement) -> str:
    """The readable report: one row per slot, then the period per member and in total."""
    p = data.params
    lines = [
        f"{result.slot_count} slot(s), {len(result.postings_uect)} member(s); prices ECT/kWh: "
        f"pBAU_buy {format_decimal(p.p_buy_bau)}, pBAU_sell {format_decimal(p.p_sell_bau)}, "
        f"pLEM_buy {format_decimal(p.p_buy_lem)}, pLEM_sell {format_decimal(p.p_sell_lem)}; "
        f"beta {format_decimal(p.beta)} ECT/kWh²",
        "",
    ]
    head = ("start", "E_c kWh", "E_p kWh", "p_buy", "p_sell", "GDI", "grid ECT", "admin ECT")
    rows = [
        (
            start,
            _kwh(slot.e_c_wh),
            _kwh(slot.e_p_wh),
            _cell(slot.p_buy, 6),
            _cell(slot.p_sell, 6),
            _cell(slot.gdi, 4),
            format_uect(slot.grid_uect),
            format_uect(slot.admin_uect),
        )
        for start, slot in zip(data.starts, result.slots, strict=True)
    ]
    lines += _table(head, rows)
    lines += ["", "period", ""]
    members = [(name, format_uect(amount)) for name, amount in sorted(result.postings_uect.items())]
    lines += _table(("member", "posting ECT (+ receives)"), members)
    lines += [
        "",
        f"admin (community) receives     {format_uect(result.admin_uect):>16} ECT",
        f"community pays the grid        {format_uect(result.grid_uect):>16} ECT",
        f"consumption E_c                {_kwh(result.e_c_wh):>16} kWh",
        f"production E_p                 {_kwh(result.e_p_wh):>16} kWh",
        f"exchanged locally min(E_c,E_p) {_kwh(result.e_local_wh):>16} kWh",
        f"self-consumption (of E_c)      {_cell(result.self_consumption, 4):>16}",
        f"production used locally        {_cell(result.production_used_locally, 4):>16}",
    ]
    return "\n".join(lines) + "\n"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-align the first column, right-align the others."""
    widths = [max([len(head[i])] + [len(r[i]) for r in rows]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [line(head), *(line(r) for r in rows)]
