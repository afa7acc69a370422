"""``lemctl window clear FILE [--json]``: recompute a market window's clearing offline.

Spec: docs/spec/windows.md §Offline tool. The auditor's check of what the ledger recorded: the
same engine (market.windows) runs on the requests as listed in FILE.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from market.decimals import format_decimal, parse_decimal
from market.errors import InvalidInput, MarketError
from market.windows import (
    Clearing,
    RequestError,
    Side,
    Validation,
    Window,
    advance,
    open_window,
    place_request,
    validate_trades,
)

EXIT_BAD_INPUT = 2

_TOP_KEYS = {"buys", "sells", "validation"}

SCHEMA = """\
FILE is a JSON object:
  {"buys":  [{"id": "A", "wh": 7000,  "price": "25"}, ...],
   "sells": [{"id": "1", "wh": 10000, "price": "18"}, ...],
   "validation": {                       (optional: also validate the trades)
     "balances_uect": {"B": 120000000},  buyer balances before validation [uECT]
     "export_wh": {"1": 10000},          sellers' metered export in the delivery hour [Wh]
     "import_wh": {"A": 7000},           buyers' metered import in the delivery hour [Wh]
     "tolerance": "0.05"}}               admitted metering shortfall, a fraction in [0, 1)
  wh: integer > 0 [Wh]; price: decimal string > 0 [ECT/kWh]; one request per id; list order
  is submission order (equal prices are served first come, first served).
--json prints {"price": "20", "quantity_wh": 14000, "trades": [{"buyer": "A", "seller": "1",
  "wh": 7000, "amount_uect": 140000000}, ...]} (price null, no trades when nothing matches),
  plus "outcomes" and "postings_uect" when "validation" is given.
Exit status: 0 done, 2 unreadable or invalid FILE (the message names the field).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``window clear`` to the ``lemctl`` parser."""
    window = subparsers.add_parser("window", help="hourly market windows (seed 001)")
    verbs = window.add_subparsers(dest="verb", required=True, metavar="VERB")
    clear_cmd = verbs.add_parser(
        "clear",
        help="recompute a window's uniform-price clearing from a JSON file",
        description="Clear a market window offline (uniform-price double auction).",
        epilog=SCHEMA,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    clear_cmd.add_argument("file", type=Path, metavar="FILE", help="window requests (JSON)")
    clear_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    clear_cmd.set_defaults(func=run_clear)


def run_clear(args: argparse.Namespace) -> int:
    """Entry of ``lemctl window clear``; returns the exit status."""
    try:
        data = json.loads(args.file.read_text(encoding="utf-8"))
        window = load_window(data)
        validation = load_validation(data, window) if "validation" in data else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"lemctl window clear: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MarketError as exc:
        print(f"lemctl window clear: {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    assert window.clearing is not None  # load_window returns a cleared window
    report = clearing_json(window.clearing)
    if validation is not None:
        report.update(validation_json(validation))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_text(report))
    return 0


def load_window(data: object) -> Window:
    """Build and clear a window from the FILE object (see SCHEMA).

    Raises:
        InvalidInput: a field is missing, of the wrong type, or a request is refused by the
            window's rules (the field path and the refusal code are in the message).
    """
    if not isinstance(data, dict):
        raise InvalidInput("FILE", type(data).__name__, "must be a JSON object")
    unknown = sorted(k for k in data if k not in _TOP_KEYS and not k.startswith("_"))
    if unknown:
        raise InvalidInput("FILE", unknown, 'unknown keys (comments start with "_")')
    window = open_window(0)
    for key, side in (("buys", Side.BUY), ("sells", Side.SELL)):
        entries = data.get(key, [])
        if not isinstance(entries, list):
            raise InvalidInput(key, entries, "must be a list")
        for index, entry in enumerate(entries):
            window = _place(window, f"{key}[{index}]", entry, side)
    # Offline, the window is closed at once: clearing needs nothing but the requests.
    return advance(window, window.close_s)


def _place(window: Window, where: str, entry: object, side: Side) -> Window:
    """Parse one request object and place it; refusals become InvalidInput at ``where``."""
    if not isinstance(entry, dict):
        raise InvalidInput(where, entry, "must be an object with id, wh and price")
    member = entry.get("id")
    if not isinstance(member, str) or not member:
        raise InvalidInput(f"{where}.id", member, "must be a non-empty string")
    energy_wh = _int(f"{where}.wh", entry.get("wh"))
    price = parse_decimal(f"{where}.price", entry.get("price"))
    try:
        return place_request(window, member, side, energy_wh, price, now_s=window.start_s)
    except RequestError as exc:
        raise InvalidInput(where, entry, f"request refused: {exc.reason.value}") from exc


def _int(field: str, value: object) -> int:
    """An integer from JSON (bool is refused although Python counts it as int)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, value, "must be an integer")
    return value


def _int_map(field: str, value: object) -> dict[str, int]:
    """A JSON object of integers keyed by member id."""
    if not isinstance(value, dict):
        raise InvalidInput(field, value, "must be an object of integers by id")
    return {str(k): _int(f"{field}.{k}", v) for k, v in value.items()}


def load_validation(data: Mapping[str, Any], window: Window) -> Validation:
    """Validate the cleared trades with the optional ``validation`` section of FILE."""
    section = data["validation"]
    if not isinstance(section, dict):
        raise InvalidInput("validation", section, "must be an object")
    tolerance = parse_decimal("validation.tolerance", section.get("tolerance", "0"))
    if not 0 <= tolerance < 1:
        raise InvalidInput("validation.tolerance", section["tolerance"], "must lie in [0, 1)")
    assert window.clearing is not None
    return validate_trades(
        window.clearing.trades,
        export_wh=_int_map("validation.export_wh", section.get("export_wh", {})),
        import_wh=_int_map("validation.import_wh", section.get("import_wh", {})),
        balances_uect=_int_map("validation.balances_uect", section.get("balances_uect", {})),
        tolerance=tolerance,
    )


def clearing_json(clearing: Clearing) -> dict[str, Any]:
    """The ``--json`` form of a clearing (schema in SCHEMA)."""
    return {
        "price": None if clearing.price is None else format_decimal(clearing.price, places=40),
        "quantity_wh": clearing.quantity_wh,
        "trades": [
            {"buyer": t.buyer, "seller": t.seller, "wh": t.energy_wh, "amount_uect": t.amount_uect}
            for t in clearing.trades
        ],
    }


def validation_json(validation: Validation) -> dict[str, Any]:
    """The ``outcomes`` and ``postings_uect`` members of the ``--json`` output."""
    return {
        "outcomes": [
            {
                "buyer": o.trade.buyer,
                "seller": o.trade.seller,
                "wh": o.trade.energy_wh,
                "amount_uect": o.trade.amount_uect,
                "status": o.status.value.upper(),
                "reason": None if o.reason is None else o.reason.value,
            }
            for o in validation.outcomes
        ],
        "postings_uect": dict(validation.postings),
    }


def render_text(report: Mapping[str, Any]) -> str:
    """A table for people: price, quantity, one line per trade (and outcome)."""
    if report["price"] is None:
        return "no match: clearing price none, quantity 0 Wh"
    lines = [
        f"clearing price {report['price']} ECT/kWh, quantity {report['quantity_wh']} Wh",
        f"{'buyer':<12} {'seller':<12} {'Wh':>10} {'amount µECT':>16}  outcome",
    ]
    statuses = dict(enumerate(report.get("outcomes", [])))
    for i, t in enumerate(report["trades"]):
        o = statuses.get(i)
        outcome = "" if o is None else o["status"] + (f" ({o['reason']})" if o["reason"] else "")
        lines.append(
            f"{t['buyer']:<12} {t['seller']:<12} {t['wh']:>10} {t['amount_uect']:>16}  {outcome}"
        )
    return "\n".join(lines).rstrip()
