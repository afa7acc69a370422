"""The ancillary-service CDA on the ledger: shouts, the SO's topology and OCDA ranking.

Spec: docs/spec/cda.md §5; the matching rules are :mod:`market.cda` (seed 003 §2.2–2.3). Kinds:
ConfigureCda, PublishTopology and RecordRanking (admin = the system operator), PlaceShout and
CancelShout (a BRP the operator has connected to a bus). Matching runs inside PlaceShout,
PublishTopology and RecordRanking, deterministically, on the one (window, pool) book touched
(PublishTopology: every open book). A window's book is open until the block time reaches the
window's start; what rests then is the residual left to external resources (§2.2).

State (prefix ``cda/``; times as 13-digit ms):
    ``cda/cfg``                         {mechanism, window_ms, max_resting}
    ``cda/topo``                        {version, buses, lines, connections}
    ``cda/next``                        [next shout timestamp, next trade seq]
    ``cda/book/<start_ms>/<up|down>``   {resting: [...], ranking: [...] | None, caps: [...]}
    ``cda/shout/<shout_id>``            [start_ms, pool] while the shout rests
    ``cda/trade/<seq:012d>``            [start_ms, pool, ask_id, offer_id, asker, offeror,
                                         quantity_wh, price, amount_uect]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

from ledger import codec, state
from ledger.apps.meters import require_admin
from ledger.errors import Reason
from ledger.registry import Context, TxKind, fields, int_field, register, reject
from ledger.tx import Tx
from market import cda
from market.decimals import format_decimal, parse_decimal
from market.errors import MarketError
from market.topology import Topology

K_CONFIG = b"cda/cfg"
K_TOPOLOGY = b"cda/topo"
K_NEXT = b"cda/next"
_MS_PER_SLOT = 900_000
_MAX_MS = (1 << 53) - 1
_MAX_WINDOW_MS = 24 * 3_600_000
_HORIZON_MS = 7 * 24 * 3_600_000  # shouts at most a week ahead: bounds the open books
_MAX_RESTING = 256  # per book; each PlaceShout rewrites its book, so the bound is the cost
_POOL_KEY = {cda.Pool.UP: "up", cda.Pool.DOWN: "down"}

T = TypeVar("T")


def k_book(start_ms: int, pool: cda.Pool) -> bytes:
    return f"cda/book/{state.slot_key(start_ms)}/{_POOL_KEY[pool]}".encode()


def k_shout(shout_id: str) -> bytes:
    return f"cda/shout/{shout_id}".encode()


def k_trade(seq: int) -> bytes:
    return f"cda/trade/{seq:012d}".encode()


def market_call(kind: str, reason: Reason, call: Callable[[], T]) -> T:
    """Run an engine call, turning its refusal into ``reason`` with the engine's message."""
    try:
        return call()
    except MarketError as exc:
        raise reject(reason, f"{kind}: {exc}") from exc


# bodies -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Configure:
    mechanism: cda.Mechanism
    window_ms: int
    max_resting: int


@dataclass(frozen=True, slots=True)
class PublishTopology:
    topology: Topology
    connections: dict[str, str]  # account -> bus


@dataclass(frozen=True, slots=True)
class PlaceShout:
    window_start_ms: int
    side: cda.Side
    pool: cda.Pool
    quantity_wh: int
    price: Fraction


@dataclass(frozen=True, slots=True)
class RecordRanking:
    window_start_ms: int
    pool: cda.Pool
    topology_version: int
    ranking: cda.Ranking


def _decode_configure(value: codec.Value) -> Configure:
    k = "ConfigureCda"
    body = fields(value, k, ("mechanism", "window_ms", "max_resting"))
    if body["mechanism"] not in tuple(m.value for m in cda.Mechanism):  # tuple: == only
        raise reject(Reason.MALFORMED, f"{k}.mechanism must be one of cda, ncda, ocda")
    window_ms = int_field(body, k, "window_ms", _MS_PER_SLOT, _MAX_WINDOW_MS)
    if window_ms % _MS_PER_SLOT:
        raise reject(Reason.BAD_PARAMS, f"{k}.window_ms must be whole 15-min slots")
    max_resting = int_field(body, k, "max_resting", 2, _MAX_RESTING)
    return Configure(cda.Mechanism(body["mechanism"]), window_ms, max_resting)


def _decode_topology(value: codec.Value) -> PublishTopology:
    k = "PublishTopology"
    body = fields(value, k, ("buses", "lines", "connections"))
    topo = market_call(k, Reason.MALFORMED, lambda: Topology.from_data(body))
    conns = body["connections"]
    if not isinstance(conns, dict):
        raise reject(Reason.MALFORMED, f"{k}.connections must map account -> bus")
    for account, bus in conns.items():
        if not isinstance(account, str) or len(account) != 64 or account != account.lower():
            raise reject(Reason.MALFORMED, f"{k}.connections: {account!r} is not an account id")
        if bus not in topo.buses:
            raise reject(Reason.MALFORMED, f"{k}.connections[{account}]: unknown bus {bus!r}")
    return PublishTopology(topo, dict(conns))


def _pool(kind: str, text: object) -> cda.Pool:
    if text not in tuple(p.value for p in cda.Pool):
        raise reject(Reason.MALFORMED, f"{kind}.pool must be 'AS+' or 'AS-'")
    return cda.Pool(str(text))


def _decode_place(value: codec.Value) -> PlaceShout:
    k = "PlaceShout"
    body = fields(value, k, ("window_start_ms", "side", "pool", "quantity_wh", "price"))
    if body["side"] not in tuple(s.value for s in cda.Side):
        raise reject(Reason.MALFORMED, f"{k}.side must be 'ask' or 'offer'")
    price = market_call(k, Reason.MALFORMED, lambda: parse_decimal(f"{k}.price", body["price"]))
    return PlaceShout(
        int_field(body, k, "window_start_ms", 0, _MAX_MS),
        cda.Side(body["side"]),
        _pool(k, body["pool"]),
        int_field(body, k, "quantity_wh", 1, cda.MAX_QUANTITY_WH),
        price,
    )


def _decode_cancel(value: codec.Value) -> str:
    body = fields(value, "CancelShout", ("shout_id",))
    sid = body["shout_id"]
    if not isinstance(sid, str) or not 0 < len(sid) <= cda.MAX_ID_CHARS:
        raise reject(Reason.MALFORMED, "CancelShout.shout_id must be a shout id string")
    return sid


def _decode_ranking(value: codec.Value) -> RecordRanking:
    k = "RecordRanking"
    body = fields(value, k, ("window_start_ms", "pool", "topology_version", "entries"))
    start = int_field(body, k, "window_start_ms", 0, _MAX_MS)
    pool = _pool(k, body["pool"])
    version = int_field(body, k, "topology_version", 0, _MAX_MS)
    rows = body["entries"]
    if not isinstance(rows, list):
        raise reject(Reason.MALFORMED, f"{k}.entries must be a list")
    entries: dict[tuple[str, str], cda.RankEntry] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 4:
            raise reject(Reason.MALFORMED, f"{k}.entries[{i}] must be [asker, offeror, score, cap]")
        asker, offeror, score, cap = row
        if not isinstance(asker, str) or not isinstance(offeror, str):
            raise reject(Reason.MALFORMED, f"{k}.entries[{i}]: buses must be strings")
        if (asker, offeror) in entries:
            raise reject(Reason.MALFORMED, f"{k}.entries[{i}] repeats ({asker}, {offeror})")
        entries[(asker, offeror)] = cda.RankEntry(score, cap)
    ranking = market_call(k, Reason.MALFORMED, lambda: cda.Ranking(start, pool, entries))
    return RecordRanking(start, pool, version, ranking)


# state <-> engine -------------------------------------------------------------------------


def _config(st: state.Overlay) -> dict[str, Any]:
    cfg = st.get_value(K_CONFIG)
    if cfg is None:
        raise reject(Reason.MARKET_NOT_CONFIGURED, "the operator has not configured the CDA")
    return dict(cfg)


def _topology(st: state.Overlay) -> dict[str, Any]:
    topo = st.get_value(K_TOPOLOGY)
    if topo is None:
        raise reject(Reason.MARKET_NOT_CONFIGURED, "the operator has not published a topology")
    return dict(topo)


def _market(st: state.Overlay) -> cda.Market:
    cfg, topo = _config(st), _topology(st)
    market = cda.Market(
        cda.Mechanism(cfg["mechanism"]),
        Topology.from_data(topo),
        max_resting_per_book=cfg["max_resting"],
    )
    market.last_timestamp, market.next_trade_seq = _counters(st)
    market.last_timestamp -= 1
    return market


def _counters(st: state.Overlay) -> tuple[int, int]:
    value = st.get_value(K_NEXT)
    return (0, 0) if value is None else (int(value[0]), int(value[1]))


def _load_book(st: state.Overlay, market: cda.Market, start_ms: int, pool: cda.Pool) -> None:
    data = st.get_value(k_book(start_ms, pool))
    if data is None:
        return
    resting = tuple(
        cda.Unmatched(
            cda.Shout(sid, brp, bus, ts, cda.Side(side), pool, qty, Fraction(price), start_ms),
            left,
        )
        for sid, brp, bus, ts, side, qty, price, left in data["resting"]
    )
    ranking = None
    if data["ranking"] is not None:
        entries = {(a, o): cda.RankEntry(score, cap) for a, o, score, cap in data["ranking"]}
        ranking = cda.Ranking(start_ms, pool, entries)
    caps = tuple(((a, o), left) for a, o, left in data["caps"])
    market.restore_book(cda.BookSnapshot(start_ms, pool, resting, ranking, caps))


def _save_book(st: state.Overlay, market: cda.Market, start_ms: int, pool: cda.Pool) -> None:
    snap = market.book_snapshot(start_ms, pool)
    resting = [
        [s.shout_id, s.brp, s.bus, s.timestamp, s.side.value, s.quantity_wh, _price(s.price), n]
        for s, n in ((u.shout, u.remaining_wh) for u in snap.resting)
    ]
    ranking = None
    if snap.ranking is not None:
        ranking = [[a, o, e.score, e.cap_wh] for (a, o), e in sorted(snap.ranking.entries.items())]
    caps = [[a, o, left] for (a, o), left in snap.caps]
    st.put_value(k_book(start_ms, pool), {"resting": resting, "ranking": ranking, "caps": caps})


def _price(value: Fraction) -> str:
    return format_decimal(value, cda.PRICE_PLACES + 1)  # a mean price has one more decimal


def _record(st: state.Overlay, market: cda.Market, trades: list[cda.Trade]) -> None:
    """Store new trades, drop the index of shouts that left the book, advance the counters."""
    for t in trades:
        st.put_value(
            k_trade(t.seq),
            [
                t.window,
                t.pool.value,
                t.ask_id,
                t.offer_id,
                t.asker,
                t.offeror,
                t.quantity_wh,
                _price(t.price),
                t.amount_uect,
            ],
        )
        resting = {u.shout.shout_id for u in market.resting(t.window, t.pool)}
        for sid in (t.ask_id, t.offer_id):
            if sid not in resting and st.get(k_shout(sid)) is not None:
                st.delete(k_shout(sid))
    st.put_value(K_NEXT, [market.last_timestamp + 1, market.next_trade_seq])


def _require_open(ctx: Context, start_ms: int) -> None:
    """A window's book closes when the block time reaches the window's start."""
    if ctx.time_ms >= start_ms:
        raise reject(Reason.WINDOW_CLOSED, f"window {start_ms} started at or before block time")


def _open_books(st: state.Overlay, time_ms: int) -> list[tuple[int, cda.Pool]]:
    """Keys of the books whose window has not started at ``time_ms``, in key order."""
    lo = b"cda/book/" + state.slot_key(time_ms + 1).encode()
    pools = {v: k for k, v in _POOL_KEY.items()}
    out = []
    for key, _ in st.scan(lo, state.prefix_end(b"cda/book/")):
        _, _, start, pool = key.decode().split("/")
        out.append((int(start), pools[pool]))
    return out


def _account_bus(ctx: Context, tx: Tx) -> tuple[str, str]:
    """The signer's account and the bus the operator connected it to."""
    account = state.account_id(tx.signer)
    bus = _topology(ctx.state)["connections"].get(account)
    if bus is None:
        raise reject(Reason.NOT_PERMITTED, f"{tx.kind}: the operator has not connected this BRP")
    return account, bus


# ConfigureCda / PublishTopology -------------------------------------------------------------


def _validate_admin(ctx: Context, tx: Tx, body: object) -> None:
    require_admin(ctx, tx)


def _apply_configure(ctx: Context, tx: Tx, body: Configure) -> None:
    # Books already open keep their shouts; the mechanism applies from the next round on.
    ctx.state.put_value(
        K_CONFIG,
        {
            "mechanism": body.mechanism.value,
            "window_ms": body.window_ms,
            "max_resting": body.max_resting,
        },
    )


def _apply_topology(ctx: Context, tx: Tx, body: PublishTopology) -> None:
    st = ctx.state
    data = {**body.topology.to_data(), "connections": body.connections, "version": ctx.height}
    st.put_value(K_TOPOLOGY, data)
    if st.get_value(K_CONFIG) is None:
        return
    # A new graph can join an island or bring an offeror nearer: rerun every open book.
    market = _market(st)
    books = _open_books(st, ctx.time_ms)
    for start, pool in books:
        _load_book(st, market, start, pool)
    trades = market.publish_topology(body.topology)
    for start, pool in books:
        _save_book(st, market, start, pool)
    _record(st, market, trades)


# PlaceShout / CancelShout -----------------------------------------------------------------


def _validate_place(ctx: Context, tx: Tx, body: PlaceShout) -> None:
    st = ctx.state
    cfg = _config(st)
    account, bus = _account_bus(ctx, tx)
    start = body.window_start_ms
    if start % cfg["window_ms"]:
        raise reject(Reason.BAD_VALUE, f"window {start} is not aligned to {cfg['window_ms']} ms")
    _require_open(ctx, start)
    if not ctx.check_only and start > ctx.time_ms + _HORIZON_MS:
        raise reject(Reason.BAD_VALUE, f"window {start} is more than a week ahead")
    market_call(tx.kind, Reason.BAD_VALUE, lambda: _shout(tx, body, account, bus, timestamp=0))
    book = st.get_value(k_book(start, body.pool))
    if book is not None and len(book["resting"]) >= cfg["max_resting"]:
        raise reject(Reason.BAD_VALUE, f"book {start}/{body.pool} is full")


def _shout(tx: Tx, body: PlaceShout, account: str, bus: str, timestamp: int) -> cda.Shout:
    return cda.Shout(
        shout_id=tx.hash.hex(),
        brp=account,
        bus=bus,
        timestamp=timestamp,
        side=body.side,
        pool=body.pool,
        quantity_wh=body.quantity_wh,
        price=body.price,
        window=body.window_start_ms,
    )


def _apply_place(ctx: Context, tx: Tx, body: PlaceShout) -> None:
    st = ctx.state
    account, bus = _account_bus(ctx, tx)
    market = _market(st)
    start, pool = body.window_start_ms, body.pool
    _load_book(st, market, start, pool)
    shout = _shout(tx, body, account, bus, timestamp=market.last_timestamp + 1)
    trades = market_call(tx.kind, Reason.BAD_VALUE, lambda: market.place(shout))
    _save_book(st, market, start, pool)
    if any(u.shout.shout_id == shout.shout_id for u in market.resting(start, pool)):
        st.put_value(k_shout(shout.shout_id), [start, pool.value])
    _record(st, market, trades)


def _resting_shout(ctx: Context, tx: Tx, shout_id: str) -> tuple[int, cda.Pool]:
    where = ctx.state.get_value(k_shout(shout_id))
    if where is None:
        raise reject(Reason.UNKNOWN_ORDER, f"no resting shout {shout_id}")
    return int(where[0]), cda.Pool(where[1])


def _validate_cancel(ctx: Context, tx: Tx, shout_id: str) -> None:
    start, pool = _resting_shout(ctx, tx, shout_id)
    _require_open(ctx, start)
    book = ctx.state.get_value(k_book(start, pool)) or {"resting": []}
    owners = [row[1] for row in book["resting"] if row[0] == shout_id]
    if not owners:  # the index is kept exact, so this is a broken invariant, said plainly
        raise reject(Reason.UNKNOWN_ORDER, f"shout {shout_id} is indexed but not in its book")
    owner = owners[0]
    if owner != state.account_id(tx.signer):
        raise reject(Reason.NOT_PERMITTED, f"shout {shout_id} belongs to another BRP")


def _apply_cancel(ctx: Context, tx: Tx, shout_id: str) -> None:
    st = ctx.state
    start, pool = _resting_shout(ctx, tx, shout_id)
    market = _market(st)
    _load_book(st, market, start, pool)
    account = state.account_id(tx.signer)
    market_call(tx.kind, Reason.NOT_PERMITTED, lambda: market.cancel(shout_id, account))
    _save_book(st, market, start, pool)
    st.delete(k_shout(shout_id))


# RecordRanking ----------------------------------------------------------------------------


def _validate_ranking(ctx: Context, tx: Tx, body: RecordRanking) -> None:
    require_admin(ctx, tx)
    cfg, topo = _config(ctx.state), _topology(ctx.state)
    if cfg["mechanism"] != cda.Mechanism.OCDA.value:
        raise reject(
            Reason.BAD_VALUE, f"rankings apply to OCDA; the market runs {cfg['mechanism']}"
        )
    if body.topology_version != topo["version"]:
        raise reject(
            Reason.BAD_VALUE,
            f"ranking made for topology {body.topology_version}, current is {topo['version']}",
        )
    _require_open(ctx, body.window_start_ms)
    buses = set(topo["buses"])
    for asker, offeror in body.ranking.entries:
        if asker not in buses | {cda.ANY_ASKER} or offeror not in buses:
            raise reject(Reason.BAD_VALUE, f"ranking pair ({asker}, {offeror}): unknown bus")


def _apply_ranking(ctx: Context, tx: Tx, body: RecordRanking) -> None:
    st = ctx.state
    market = _market(st)
    _load_book(st, market, body.window_start_ms, body.pool)
    trades = market.record_ranking(body.ranking)
    _save_book(st, market, body.window_start_ms, body.pool)
    _record(st, market, trades)


register(TxKind("ConfigureCda", _decode_configure, _validate_admin, _apply_configure))
register(TxKind("PublishTopology", _decode_topology, _validate_admin, _apply_topology))
register(TxKind("PlaceShout", _decode_place, _validate_place, _apply_place))
register(TxKind("CancelShout", _decode_cancel, _validate_cancel, _apply_cancel))
register(TxKind("RecordRanking", _decode_ranking, _validate_ranking, _apply_ranking))
