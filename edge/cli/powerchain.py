"""``lemctl powerchain units|sessions|orders|votes --data-dir DIR [--key FILE] [--json]``.

Spec: docs/spec/powerchain.md §6. Reads a (running or stopped) node's ledger store read-only,
as ``lemctl ledger`` does, and prints the storage units, consumption sessions, open orders or
votes with the network totals, as a table or as JSON. Amounts stay integers in JSON (Wh, µENT,
µeEuro); the tables also show them in kWh, ENT and eEuro.

What is shown depends on the viewer's key (``--key``, else the node key beside the store), by
the access rules of seed 000 Fig. 4 (ledger/access.py): an admin sees everything; a participant
sees the totals, the units and the order book without other accounts behind them, its own
sessions only, and the votes; anyone else the parameters only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from ledger import codec, state
from ledger.access import Queries, Role
from ledger.apps.powerchain import K_CFG, K_EEUR, K_IMB, is_participant
from ledger.errors import LedgerError
from ledger.keys import SigningKey
from ledger.store import Store
from market import powerchain as pc

EXIT_NO_STORE = 2


# views of the state -------------------------------------------------------------------------


def _scan(reader: state.StateReader, prefix: bytes) -> Iterator[tuple[str, Any]]:
    for key, raw in reader.scan(prefix, state.prefix_end(prefix)):
        yield key[len(prefix) :].decode(), codec.decode_trusted(raw)


def view_summary(reader: state.StateReader) -> dict[str, Any]:
    """Voters, banker, parameters, totals, D, R, current rates, eEuro; {} before PcSetup."""
    raw = reader.get(K_CFG)
    if raw is None:
        return {}
    cfg = codec.decode_trusted(raw)
    v = codec.decode_trusted(reader.get(K_IMB) or codec.encode([0, 0, 0, 1]))
    imb = pc.Imbalance(v[0], v[1], Fraction(v[2], v[3]))
    mint, burn = pc.rates(imb, pc.parse_params(cfg["params"]))
    eeur = reader.get(K_EEUR)
    return {
        "voters": cfg["voters"],
        "banker": cfg["banker"],
        "params": cfg["params"],
        "stored_wh": imb.stored_wh,
        "ent_uent": imb.ent_uent,
        "difference_uent": imb.difference_uent,
        "r": str(imb.r),
        "mint_rate": str(mint),
        "burn_rate": str(burn),
        "eeur_ueur": 0 if eeur is None else codec.decode_trusted(eeur),
    }


def view_units(reader: state.StateReader) -> list[dict[str, Any]]:
    """Every storage unit ever registered (``active`` false once removed by vote)."""
    return [{"unit": unit, **rec} for unit, rec in _scan(reader, b"pc/unit/")]


def view_sessions(reader: state.StateReader) -> list[dict[str, Any]]:
    """Open consumption sessions (expired ones too, until PcClearSessions or a new session)."""
    out = []
    for key, (energy_wh, locked, start_ms, expires_ms) in _scan(reader, b"pc/sess/"):
        unit, consumer = key.split("/")
        out.append(
            {
                "unit": unit,
                "consumer": consumer,
                "energy_wh": energy_wh,
                "locked_uent": locked,
                "start_ms": start_ms,
                "expires_ms": expires_ms,
            }
        )
    return out


def view_orders(reader: state.StateReader) -> list[dict[str, Any]]:
    """Resting orders by id; ``locked`` is µeEuro for a buy, µENT for a sell."""
    out = []
    for key, (owner, side, price, qty, locked) in _scan(reader, b"pc/ord/"):
        out.append(
            {
                "order_id": int(key),
                "owner": owner,
                "side": side,
                "price_ueur": price,
                "qty_uent": qty,
                "locked": locked,
            }
        )
    return out


def view_votes(reader: state.StateReader) -> list[dict[str, Any]]:
    """Every command voted on: action, args, votes [[voter, positive]], passed_height."""
    return [dict(rec) for _, rec in _scan(reader, b"pc/vote/")]


def view_accounts(reader: state.StateReader) -> dict[str, list[int]]:
    """Account hex → [ENT available, eEuro available, eEuro locked for withdrawal]."""
    return {who: list(v) for who, v in _scan(reader, b"pc/acct/")}


# rendering ----------------------------------------------------------------------------------


def _short(key: str | None) -> str:
    return "-" if key is None else key[:12]


def _dec(value: int, scale: int, places: int) -> str:
    """``value``/``scale`` with ``places`` decimals (half-to-even; exact for our amounts)."""
    scaled = round(Fraction(value * 10**places, scale))
    sign = "-" if scaled < 0 else ""
    whole, part = divmod(abs(scaled), 10**places)
    return f"{sign}{whole}.{part:0{places}d}"


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _units_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    head = ["unit", "owner", "stored kWh", "reserved kWh", "active"]
    body = [
        [
            _short(r["unit"]),
            _short(r["owner"]),
            _dec(r["energy_wh"], 1000, 3),
            _dec(r["reserved_wh"], 1000, 3),
            "yes" if r["active"] else "no",
        ]
        for r in rows
    ]
    return [head, *body]


def _sessions_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    head = ["unit", "consumer", "kWh left", "ENT locked", "started (UTC)", "expires (UTC)"]
    body = [
        [
            _short(r["unit"]),
            _short(r["consumer"]),
            _dec(r["energy_wh"], 1000, 3),
            _dec(r["locked_uent"], pc.UENT_PER_ENT, 6),
            _time(r["start_ms"]),
            _time(r["expires_ms"]),
        ]
        for r in rows
    ]
    return [head, *body]


def _orders_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    head = ["id", "owner", "side", "price eEuro/ENT", "ENT open", "locked"]
    body = []
    for r in rows:
        unit = "eEuro" if r["side"] == "buy" else "ENT"
        body.append(
            [
                str(r["order_id"]),
                _short(r["owner"]),
                r["side"],
                _dec(r["price_ueur"], pc.UEUR_PER_EUR, 3),
                _dec(r["qty_uent"], pc.UENT_PER_ENT, 3),
                f"{_dec(r['locked'], 10**6, 6)} {unit}",
            ]
        )
    return [head, *body]


def _votes_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    head = ["action", "args", "+", "-", "passed at"]
    body = []
    for r in rows:
        args = " ".join(a[:12] if len(a) == 64 else a for a in r["args"])
        yes = sum(1 for _, v in r["votes"] if v)
        passed = "-" if r["passed_height"] is None else str(r["passed_height"])
        body.append([r["action"], args, str(yes), str(len(r["votes"]) - yes), passed])
    return [head, *body]


def render_table(rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _summary_line(s: dict[str, Any]) -> str:
    return (
        f"stored {_dec(s['stored_wh'], 1000, 3)} kWh, ENT {_dec(s['ent_uent'], 10**6, 6)}, "
        f"D {_dec(s['difference_uent'], 10**6, 6)} ENT, R {s['r']}, "
        f"mint {s['mint_rate']} / burn {s['burn_rate']} ENT/kWh, "
        f"eEuro {_dec(s['eeur_ueur'], 10**6, 6)}, banker {_short(s['banker'])}"
    )


# access (seed 000 Fig. 4; docs/spec/powerchain.md §6) ----------------------------------------

HIDDEN = "(hidden)"


class Viewer:
    """Who reads: ``level`` is admin, participant or anyone; ``account`` the key's hex id."""

    def __init__(self, level: str, account: str | None) -> None:
        self.level, self.account = level, account

    @classmethod
    def of(cls, store: Store, key: bytes | None) -> Viewer:
        role = Queries(store).role(key)
        if key is None:
            return cls("anyone", None)
        if role is Role.ADMIN:
            return cls("admin", state.account_id(key))
        with store.state_reader() as base:
            member = is_participant(state.Overlay(base), key)
        return cls("participant" if member else "anyone", state.account_id(key))


def restrict_summary(summary: dict[str, Any], viewer: Viewer) -> dict[str, Any]:
    """Anyone reads the parameters only; totals and roles need a participant."""
    if viewer.level == "anyone" and summary:
        return {"params": summary["params"]}
    return summary


def restrict(view: str, rows: list[dict[str, Any]], viewer: Viewer) -> list[dict[str, Any]]:
    """The rows of ``view`` the viewer may read: other accounts hidden, others' sessions (a
    household's consumption) left out."""
    if viewer.level == "admin":
        return rows
    if viewer.level == "anyone":
        return []
    me = viewer.account
    if view == "sessions":
        return [r for r in rows if me in (r["consumer"], r["unit"])]
    if view in ("units", "orders"):
        return [r if me in (r["owner"], r.get("unit")) else {**r, "owner": HIDDEN} for r in rows]
    return rows  # votes: the voters are public roles, as in the thesis §5.4


VIEWS: dict[str, tuple[Callable[[Any], list[dict[str, Any]]], Callable[..., list[list[str]]]]] = {
    "units": (view_units, _units_rows),
    "sessions": (view_sessions, _sessions_rows),
    "orders": (view_orders, _orders_rows),
    "votes": (view_votes, _votes_rows),
}


# command ------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``powerchain units|sessions|orders|votes`` to the ``lemctl`` parser."""
    parser = subparsers.add_parser("powerchain", help="PowerChain units, sessions, orders, votes")
    sub = parser.add_subparsers(dest="pc_view", required=True, metavar="VIEW")
    for name in VIEWS:
        view = sub.add_parser(name, help=f"list the PowerChain {name} from a node's store")
        view.add_argument("--data-dir", type=Path, required=True, help="the ledger store directory")
        view.add_argument(
            "--key", type=Path, help="the viewer's key file (default: node.key beside the store)"
        )
        view.add_argument("--json", action="store_true", help="print JSON")
        view.set_defaults(func=run)


def _viewer_key(args: argparse.Namespace) -> bytes | None:
    path: Path | None = args.key
    if path is None:
        path = args.data_dir.resolve().parent / "node.key"  # lemd: <data_dir>/{ledger,node.key}
        if not path.exists():
            print(
                "lemctl powerchain: no --key and no node.key beside the store: showing what "
                "anyone may see (the parameters)",
                file=sys.stderr,
            )
            return None
    return SigningKey.load(path).public_key


def run(args: argparse.Namespace) -> int:
    """Entry of ``lemctl powerchain VIEW``; returns the exit status (2: no store)."""
    path: Path = args.data_dir
    try:
        if not (path / "data.mdb").exists():
            raise LedgerError(f"{path}: no ledger store here (data.mdb missing)")
        key = _viewer_key(args)
        store = Store(path, readonly=True)
    except LedgerError as exc:
        print(f"lemctl powerchain: {exc}", file=sys.stderr)
        return EXIT_NO_STORE
    read, rows_of = VIEWS[args.pc_view]
    try:
        viewer = Viewer.of(store, key)
        with store.state_reader() as reader:
            summary = restrict_summary(view_summary(reader), viewer)
            rows = restrict(args.pc_view, read(reader), viewer)
        height = store.height
    finally:
        store.close()
    if viewer.level == "anyone" and summary:
        print(
            "lemctl powerchain: this key has no PowerChain role: parameters only", file=sys.stderr
        )
    if args.json:
        print(json.dumps({"height": height, "summary": summary, args.pc_view: rows}, indent=2))
        return 0
    if not summary:
        print(f"height {height}: PowerChain is not set up on this chain")
        return 0
    if viewer.level == "anyone":
        print(f"height {height}: parameters {json.dumps(summary['params'], sort_keys=True)}")
        return 0
    print(f"height {height}: {_summary_line(summary)}")
    print(render_table(rows_of(rows)) if rows else f"(no {args.pc_view})")
    return 0
