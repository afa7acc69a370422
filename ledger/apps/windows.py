"""Hourly market windows on the ledger (seed 001 §2.6, §4.5; market.windows does the economics).

Spec: docs/spec/windows.md §Ledger. Kinds: ConfigureWindows (admin), PlaceRequest (prosumer),
ClearWindow and ValidateWindow (any community key). Every deadline is read from the block time.
A window's record is created by its first request; clearing runs at the first ClearWindow (or
ValidateWindow) executed at or after the window's close; validation reads the delivery period's
SetMeasure records and the buyers' balances from this same state, and moves tokens for the
ACCEPTED trades only.

State (prefix ``win`` / ``wreq``; times as 13-digit ms):
    ``wcfg``                          {length_ms, tolerance}
    ``win/<start_ms>``                window record (status, length, tolerance, clearing, outcomes)
    ``wreq/<start_ms>/<account>``     [seq, side, energy_wh, price]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ledger import codec, state
from ledger.apps.amm import is_member
from ledger.apps.meters import require_admin
from ledger.errors import Reason
from ledger.registry import Context, TxKind, fields, int_field, register, reject
from ledger.tx import Tx
from market.decimals import format_decimal, parse_decimal
from market.errors import MarketError
from market.windows import (
    MAX_ENERGY_WH,
    SLOT_S,
    Clearing,
    PhaseError,
    Request,
    RequestError,
    Side,
    Trade,
    TradeStatus,
    Window,
    WindowStatus,
    advance,
    check_request,
    validate_window,
)

K_CONFIG = b"wcfg"
_MS_PER_S = 1000
_MAX_MS = (1 << 53) - 1
_MAX_LENGTH_MS = 24 * 3600 * 1000
_PRICE_PLACES = 40  # exact for every price a tx can carry (decimal text is at most 40 chars)


def k_window(start_ms: int) -> bytes:
    return b"win/" + state.slot_key(start_ms).encode()


def k_request(start_ms: int, account: str) -> bytes:
    return b"wreq/" + state.slot_key(start_ms).encode() + b"/" + account.encode()


@dataclass(frozen=True, slots=True)
class ConfigureWindows:
    length_ms: int
    tolerance: str


@dataclass(frozen=True, slots=True)
class PlaceRequest:
    window_start_ms: int
    side: Side
    energy_wh: int
    price: str


@dataclass(frozen=True, slots=True)
class WindowRef:
    window_start_ms: int


# ConfigureWindows ------------------------------------------------------------------------


def _decode_config(value: codec.Value) -> ConfigureWindows:
    k = "ConfigureWindows"
    body = fields(value, k, ("length_ms", "tolerance"))
    length_ms = int_field(body, k, "length_ms", SLOT_S * _MS_PER_S, _MAX_LENGTH_MS)
    if length_ms % (SLOT_S * _MS_PER_S):
        raise reject(Reason.BAD_PARAMS, f"{k}.length_ms must be whole 15-min slots")
    try:
        tolerance = parse_decimal(f"{k}.tolerance", body["tolerance"])
    except MarketError as exc:
        raise reject(Reason.BAD_PARAMS, str(exc)) from exc
    if not 0 <= tolerance < 1:
        raise reject(Reason.BAD_PARAMS, f"{k}.tolerance must lie in [0, 1)")
    return ConfigureWindows(length_ms, body["tolerance"])


def _validate_config(ctx: Context, tx: Tx, body: ConfigureWindows) -> None:
    require_admin(ctx, tx)


def _apply_config(ctx: Context, tx: Tx, body: ConfigureWindows) -> None:
    # Windows already opened keep the length and tolerance they opened with.
    ctx.state.put_value(K_CONFIG, {"length_ms": body.length_ms, "tolerance": body.tolerance})


# PlaceRequest ----------------------------------------------------------------------------


def _decode_place(value: codec.Value) -> PlaceRequest:
    k = "PlaceRequest"
    body = fields(value, k, ("window_start_ms", "side", "energy_wh", "price"))
    if body["side"] not in ("buy", "sell"):
        raise reject(Reason.MALFORMED, f"{k}.side must be 'buy' or 'sell'")
    try:
        parse_decimal(f"{k}.price", body["price"])
    except MarketError as exc:
        raise reject(Reason.MALFORMED, str(exc)) from exc
    return PlaceRequest(
        int_field(body, k, "window_start_ms", 0, _MAX_MS),
        Side(body["side"]),
        int_field(body, k, "energy_wh", -MAX_ENERGY_WH, 2 * MAX_ENERGY_WH),
        body["price"],
    )


def _window(st: state.Overlay, start_ms: int) -> Window | None:
    """The stored window with its requests, as the market engine's value (None if absent)."""
    rec = st.get_value(k_window(start_ms))
    if rec is None:
        return None
    lo = b"wreq/" + state.slot_key(start_ms).encode() + b"/"
    requests = []
    for key, raw in st.scan(lo, state.prefix_end(lo)):
        seq, side, energy_wh, price = codec.decode(raw)
        member = key[len(lo) :].decode()
        requests.append(Request(member, Side(side), energy_wh, Fraction(price), seq))
    requests.sort(key=lambda r: r.seq)
    return Window(
        start_s=start_ms // _MS_PER_S,
        length_s=rec["length_ms"] // _MS_PER_S,
        status=WindowStatus(rec["status"]),
        requests=tuple(requests),
        clearing=None,  # the stored clearing is authoritative; see _apply_clear/_apply_validate
    )


def _config(st: state.Overlay) -> dict[str, Any]:
    cfg = st.get_value(K_CONFIG)
    if cfg is None:
        raise reject(Reason.MARKET_NOT_CONFIGURED, "the admin has not configured market windows")
    return dict(cfg)


def _validate_place(ctx: Context, tx: Tx, body: PlaceRequest) -> None:
    st = ctx.state
    if not state.is_prosumer(st, tx.signer):
        raise reject(Reason.NOT_PERMITTED, "PlaceRequest needs the key of a meter owner")
    cfg = _config(st)
    stored = st.get_value(k_window(body.window_start_ms))
    length_ms = cfg["length_ms"] if stored is None else stored["length_ms"]
    if body.window_start_ms % length_ms:
        raise reject(Reason.BAD_VALUE, f"window start {body.window_start_ms} is not aligned")
    # The member's earlier request is one key away; the other requests are not needed to judge
    # this one, so the window is given to the engine without them (O(1) per request, not O(n)).
    account = state.account_id(tx.signer)
    window = Window(
        start_s=body.window_start_ms // _MS_PER_S,
        length_s=length_ms // _MS_PER_S,
        status=WindowStatus.OPEN if stored is None else WindowStatus(stored["status"]),
    )
    # check_tx does not know the next block's time: it checks everything but the clock.
    now_s = window.start_s if ctx.check_only else ctx.time_ms // _MS_PER_S
    try:
        check_request(window, account, body.side, body.energy_wh, Fraction(body.price), now_s)
    except RequestError as exc:
        raise reject(_REQUEST_REASONS.get(exc.reason.value, Reason.BAD_VALUE), str(exc)) from exc
    if st.get(k_request(body.window_start_ms, account)) is not None:
        raise reject(
            Reason.DUPLICATE_REQUEST, "one request per member and window (seed 001 §4.5.1)"
        )


_REQUEST_REASONS = {
    "window_not_open": Reason.WINDOW_NOT_OPEN,
    "window_closed": Reason.WINDOW_CLOSED,
}


def _apply_place(ctx: Context, tx: Tx, body: PlaceRequest) -> None:
    st = ctx.state
    key = k_window(body.window_start_ms)
    rec = st.get_value(key)
    if rec is None:
        cfg = _config(st)
        rec = {
            "status": WindowStatus.OPEN.value,
            "length_ms": cfg["length_ms"],
            "tolerance": cfg["tolerance"],
            "requests": 0,
        }
    price = format_decimal(Fraction(body.price), _PRICE_PLACES)
    st.put_value(
        k_request(body.window_start_ms, state.account_id(tx.signer)),
        [rec["requests"], body.side.value, body.energy_wh, price],
    )
    rec["requests"] += 1
    st.put_value(key, rec)


# ClearWindow / ValidateWindow -------------------------------------------------------------


def _decode_ref(kind: str) -> Callable[[codec.Value], WindowRef]:
    def decode(value: codec.Value) -> WindowRef:
        body = fields(value, kind, ("window_start_ms",))
        return WindowRef(int_field(body, kind, "window_start_ms", 0, _MAX_MS))

    return decode


def _existing(ctx: Context, tx: Tx, body: WindowRef) -> dict[str, Any]:
    if not is_member(ctx.state, tx.signer):
        raise reject(Reason.NOT_PERMITTED, f"{tx.kind} needs a key known to the community")
    rec = ctx.state.get_value(k_window(body.window_start_ms))
    if rec is None:
        raise reject(Reason.UNKNOWN_WINDOW, f"no requests were placed in {body.window_start_ms}")
    return dict(rec)


def _validate_clear(ctx: Context, tx: Tx, body: WindowRef) -> None:
    rec = _existing(ctx, tx, body)
    if rec["status"] != WindowStatus.OPEN.value:
        raise reject(Reason.ALREADY_SOLVED, f"window {body.window_start_ms} is {rec['status']}")
    close_ms = body.window_start_ms + rec["length_ms"]
    if not ctx.check_only and ctx.time_ms < close_ms:
        raise reject(Reason.PERIOD_NOT_ENDED, f"window {body.window_start_ms} closes at {close_ms}")


def _clear_into(st: state.Overlay, start_ms: int, time_ms: int) -> dict[str, Any]:
    """Clear a stored OPEN window at ``time_ms`` and store the clearing; returns the record."""
    window = _window(st, start_ms)
    assert window is not None
    cleared = advance(window, time_ms // _MS_PER_S)
    assert cleared.clearing is not None  # time_ms >= close, checked by the callers
    rec = dict(st.get_value(k_window(start_ms)))
    c = cleared.clearing
    rec.update(
        status=cleared.status.value,
        price=None if c.price is None else format_decimal(c.price, _PRICE_PLACES),
        quantity_wh=c.quantity_wh,
        trades=[[t.buyer, t.seller, t.energy_wh, t.amount_uect] for t in c.trades],
    )
    st.put_value(k_window(start_ms), rec)
    return rec


def _apply_clear(ctx: Context, tx: Tx, body: WindowRef) -> None:
    _clear_into(ctx.state, body.window_start_ms, ctx.time_ms)


def _validate_validate(ctx: Context, tx: Tx, body: WindowRef) -> None:
    rec = _existing(ctx, tx, body)
    if rec["status"] == WindowStatus.VALIDATED.value:
        raise reject(Reason.ALREADY_SOLVED, f"window {body.window_start_ms} is validated")
    grace = state.chain_params(ctx.state).get("settle_grace_ms", 0)
    due_ms = body.window_start_ms + 2 * rec["length_ms"] + grace
    if not ctx.check_only and ctx.time_ms < due_ms:
        raise reject(Reason.PERIOD_NOT_ENDED, f"window {body.window_start_ms} due at {due_ms}")


def metered_wh(st: state.Overlay, start_ms: int, end_ms: int) -> tuple[dict[str, int], ...]:
    """(import, export) [Wh] per account summed over its meters' slots in [start, end)."""
    imports: dict[str, int] = {}
    exports: dict[str, int] = {}
    lo = b"meas/" + state.slot_key(start_ms).encode()
    hi = b"meas/" + state.slot_key(end_ms).encode()
    for _, raw in st.scan(lo, hi):
        imp, exp, _quality, owner = codec.decode(raw)
        account = state.account_id(owner)
        imports[account] = imports.get(account, 0) + imp
        exports[account] = exports.get(account, 0) + exp
    return imports, exports


def _apply_validate(ctx: Context, tx: Tx, body: WindowRef) -> None:
    st = ctx.state
    start_ms = body.window_start_ms
    rec = dict(st.get_value(k_window(start_ms)))
    if rec["status"] == WindowStatus.OPEN.value:
        rec = _clear_into(st, start_ms, ctx.time_ms)  # nobody sent ClearWindow: clear now
    length_ms = rec["length_ms"]
    imports, exports = metered_wh(st, start_ms + length_ms, start_ms + 2 * length_ms)
    trades = [Trade(*t) for t in rec["trades"]]
    buyers = {t.buyer for t in trades}
    balances = {b: st.get_int(state.k_balance(b)) for b in buyers}
    window = Window(
        start_s=start_ms // _MS_PER_S,
        length_s=length_ms // _MS_PER_S,
        status=WindowStatus(rec["status"]),
        clearing=_stored_clearing(rec, trades),
    )
    try:
        done = validate_window(
            window, ctx.time_ms // _MS_PER_S, exports, imports, balances, Fraction(rec["tolerance"])
        )
    except PhaseError as exc:  # unreachable after _validate_validate; kept as a clear failure
        raise reject(Reason.PERIOD_NOT_ENDED, str(exc)) from exc
    assert done.validation is not None
    for account, delta in done.validation.postings:
        state.add_balance(st, account, delta)
    rec.update(
        status=done.status.value,
        validated_height=ctx.height,
        outcomes=[
            [o.status.value, None if o.reason is None else o.reason.value]
            for o in done.validation.outcomes
        ],
        accepted_uect=sum(
            o.trade.amount_uect
            for o in done.validation.outcomes
            if o.status is TradeStatus.ACCEPTED
        ),
    )
    st.put_value(k_window(start_ms), rec)


def _stored_clearing(rec: dict[str, Any], trades: list[Trade]) -> Clearing:
    """The clearing recorded at ClearWindow (the ledger's, not a recomputation)."""
    price = None if rec["price"] is None else Fraction(rec["price"])
    return Clearing(price, rec["quantity_wh"], tuple(trades))


register(TxKind("ConfigureWindows", _decode_config, _validate_config, _apply_config))
register(TxKind("PlaceRequest", _decode_place, _validate_place, _apply_place))
register(TxKind("ClearWindow", _decode_ref("ClearWindow"), _validate_clear, _apply_clear))
register(
    TxKind("ValidateWindow", _decode_ref("ValidateWindow"), _validate_validate, _apply_validate)
)
