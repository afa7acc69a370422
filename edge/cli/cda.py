"""``lemctl cda match FILE [--json]``: replay ancillary-service shouts through the CDA offline.

Spec: docs/spec/cda.md §7. The auditor's check of what the ledger recorded: the same engine
(market.cda) runs the events in FILE in order and prints every trade and what still rests.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from market.cda import (
    Market,
    Mechanism,
    Pool,
    RankEntry,
    Ranking,
    Shout,
    Trade,
    Unmatched,
)
from market.decimals import format_decimal
from market.errors import InvalidInput, MarketError
from market.topology import Topology

EXIT_BAD_INPUT = 2

SCHEMA = """\
FILE is a JSON object:
  {"mechanism": "cda" | "ncda" | "ocda",
   "topology": {"buses": ["a", ...], "lines": [["a", "b", 300], ...]},   (ncda: required)
   "events": [                                   in submission order (= time priority)
     {"place": {"shout_id": "s1", "brp": "N1", "bus": "a", "side": "ask" | "offer",
                "pool": "AS+" | "AS-", "quantity_wh": 1000, "price": "0.35", "window": 0}},
     {"cancel": {"shout_id": "s1", "brp": "N1"}},
     {"ranking": {"window": 0, "pool": "AS+", "entries": [["*" | asker_bus, offeror_bus,
                  score, cap_wh | null], ...]}},                     (ocda)
     {"topology": {"buses": [...], "lines": [...]}},
     {"close": 0}]}                                  close every window <= 0
  quantity_wh: integer > 0 [Wh]; price: decimal string, <= 6 decimals [ECT/kWh].
--json prints {"trades": [{"seq", "window", "pool", "ask_id", "offer_id", "asker", "offeror",
  "wh", "price", "amount_uect"}, ...], "resting": [{"shout_id", "remaining_wh"}, ...],
  "unmatched": [...closed or cancelled remainders...]}.
Exit status: 0 done, 2 unreadable or invalid FILE (the message names the event and field).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cda match`` to the ``lemctl`` parser."""
    cda = subparsers.add_parser("cda", help="ancillary-service CDA / NCDA / OCDA (seed 003)")
    verbs = cda.add_subparsers(dest="verb", required=True, metavar="VERB")
    match = verbs.add_parser(
        "match",
        help="replay shouts through the continuous double auction from a JSON file",
        description="Replay ancillary-service shouts offline (CDA, NCDA or OCDA).",
        epilog=SCHEMA,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    match.add_argument("file", type=Path, metavar="FILE", help="events (JSON)")
    match.add_argument("--json", action="store_true", help="print JSON instead of a table")
    match.set_defaults(func=run_match)


def run_match(args: argparse.Namespace) -> int:
    """Entry of ``lemctl cda match``; returns the exit status."""
    try:
        data = json.loads(args.file.read_text(encoding="utf-8"))
        market, unmatched = replay(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"lemctl cda match: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MarketError as exc:
        print(f"lemctl cda match: {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = to_report(market, unmatched)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


def replay(data: object) -> tuple[Market, list[Unmatched]]:
    """Run the events of ``data`` through a fresh market.

    Raises:
        MarketError: a malformed event or an event the engine refuses, with its index.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput("file", type(data).__name__, "must be a JSON object")
    mech = data.get("mechanism")
    if mech not in tuple(m.value for m in Mechanism):
        raise InvalidInput("mechanism", mech, "must be 'cda', 'ncda' or 'ocda'")
    topo = Topology.from_data(data["topology"]) if "topology" in data else None
    market = Market(Mechanism(mech), topo)
    events = data.get("events")
    if not isinstance(events, list):
        raise InvalidInput("events", events, "must be a list")
    unmatched: list[Unmatched] = []
    for i, event in enumerate(events):
        try:
            unmatched += _apply(market, event, timestamp=i)
        except InvalidInput as exc:
            raise InvalidInput(f"events[{i}].{exc.field}", exc.value, exc.reason) from exc
        except MarketError as exc:
            raise InvalidInput(f"events[{i}]", event, str(exc)) from exc
    return market, unmatched


def _apply(market: Market, event: object, timestamp: int) -> list[Unmatched]:
    if not isinstance(event, Mapping) or len(event) != 1:
        raise InvalidInput("event", event, "must be a one-key object (place, cancel, ...)")
    ((verb, body),) = event.items()
    if verb == "place":
        market.place(Shout.from_data(body, timestamp))
    elif verb == "cancel" and isinstance(body, Mapping):
        return [market.cancel(str(body.get("shout_id")), str(body.get("brp")))]
    elif verb == "ranking" and isinstance(body, Mapping):
        market.record_ranking(_ranking(body))
    elif verb == "topology":
        market.publish_topology(Topology.from_data(body))
    elif verb == "close" and isinstance(body, int) and not isinstance(body, bool):
        return market.close_window(body)
    else:
        raise InvalidInput(verb, body, "unknown event or malformed body")
    return []


def _ranking(body: Mapping[str, Any]) -> Ranking:
    pool = body.get("pool")
    if pool not in tuple(p.value for p in Pool):
        raise InvalidInput("ranking.pool", pool, "must be 'AS+' or 'AS-'")
    entries = {}
    for j, row in enumerate(body.get("entries", [])):
        if not isinstance(row, list) or len(row) != 4:
            raise InvalidInput(f"ranking.entries[{j}]", row, "must be [asker, offeror, score, cap]")
        entries[(str(row[0]), str(row[1]))] = RankEntry(row[2], row[3])
    return Ranking(body.get("window"), Pool(pool), entries)  # type: ignore[arg-type]


def to_report(market: Market, unmatched: list[Unmatched]) -> dict[str, Any]:
    """The replay's outcome as JSON-ready values (prices as exact decimal strings)."""
    resting = [u for key in market.books() for u in market.resting(*key)]
    return {
        "trades": [_trade(t) for t in market.trades],
        "resting": [
            {"shout_id": u.shout.shout_id, "remaining_wh": u.remaining_wh} for u in resting
        ],
        "unmatched": [
            {"shout_id": u.shout.shout_id, "remaining_wh": u.remaining_wh} for u in unmatched
        ],
    }


def _trade(t: Trade) -> dict[str, Any]:
    return {
        "seq": t.seq,
        "window": t.window,
        "pool": t.pool.value,
        "ask_id": t.ask_id,
        "offer_id": t.offer_id,
        "asker": t.asker,
        "offeror": t.offeror,
        "wh": t.quantity_wh,
        "price": format_decimal(t.price, 7),
        "amount_uect": t.amount_uect,
    }


def print_table(report: Mapping[str, Any]) -> None:
    print(f"{'seq':>4} {'pool':<4} {'ask':<10} {'offer':<10} {'Wh':>10} {'price':>10} {'µECT':>12}")
    for t in report["trades"]:
        print(
            f"{t['seq']:>4} {t['pool']:<4} {t['ask_id']:<10} {t['offer_id']:<10} {t['wh']:>10} "
            f"{t['price']:>10} {t['amount_uect']:>12}"
        )
    for title in ("resting", "unmatched"):
        rows = ", ".join(f"{r['shout_id']} {r['remaining_wh']} Wh" for r in report[title])
        print(f"{title}: {rows or '-'}")
