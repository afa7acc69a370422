"""PowerChain on the ledger: storage units, ENT minted/burned per kWh, sessions, eEuro, votes, book.

Spec: docs/spec/powerchain.md (tx kinds §3, state §4); the economics are market.powerchain and
market.powerchain_book (seed 004 ch. 4–6). Roles come from this app's own state: *voters* (set
at PcSetup by an admin, then changed only by vote), the *banker* (by vote), *storage units*
(a meter's key, registered by vote with an owner), and *participants* (any community member or
anyone holding PowerChain tokens or a role here).

The order book's kinds (PcPlaceOrder, PcCancelOrder) are in :mod:`ledger.apps.powerchain_book`,
which shares this module's accounts and helpers. Every handler runs twice: ``validate`` executes
it on a scratch overlay (validation and execution cannot disagree), ``apply`` on the tx's own.

State (prefix ``pc/``; accounts are key hex):
    ``pc/cfg``                                 {voters: [hex], banker: hex|None, params: {M..F}}
    ``pc/imb``                                 [stored_wh, ent_uent, r_num, r_den]
    ``pc/eeur``                                eEuro in circulation [µeEuro]
    ``pc/next``                                next order id
    ``pc/acct/<hex>``                          [ent_uent, eeur_ueur, withdraw_locked_ueur]
    ``pc/unit/<hex>``                          {owner, energy_wh, reserved_wh, active}
    ``pc/sess/<unit hex>/<consumer hex>``      [energy_wh, locked_uent, start_ms, expires_ms]
    ``pc/ord/<id:012d>``                       [owner, side, price_ueur, qty_uent, locked]
    ``pc/book/<buy|sell>/<rank:016d>/<id:012d>`` order id (price-time priority by key order)
    ``pc/vote/<action>/<args>``                {action, args, votes: [[hex, bool]], passed_height}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ledger import codec, keys, state
from ledger.apps.amm import is_member
from ledger.apps.meters import require_admin
from ledger.errors import Reason
from ledger.registry import Context, TxKind, fields, int_field, key_field, register, reject
from ledger.tx import Tx
from market import powerchain as pc
from market import powerchain_book as book
from market.errors import InvalidInput

K_CFG, K_IMB, K_EEUR, K_NEXT = b"pc/cfg", b"pc/imb", b"pc/eeur", b"pc/next"
MAX_VOTERS = 31
ACTIONS = ("AddVoter", "RemoveVoter", "RegisterUnit", "RemoveUnit", "ChangeBanker", "SetParameter")
_RANK_TOP = book.MAX_PRICE_UEUR  # buy ranks count down from here so best bids sort first


def k_acct(who: str) -> bytes:
    return b"pc/acct/" + who.encode()


def k_unit(unit: str) -> bytes:
    return b"pc/unit/" + unit.encode()


def k_session(unit: str, consumer: str) -> bytes:
    return b"pc/sess/" + unit.encode() + b"/" + consumer.encode()


def k_order(order_id: int) -> bytes:
    return f"pc/ord/{order_id:012d}".encode()


def k_book(side: book.Side, price_ueur: int, order_id: int) -> bytes:
    rank = price_ueur if side is book.Side.SELL else _RANK_TOP - price_ueur
    return f"pc/book/{side.value}/{rank:016d}/{order_id:012d}".encode()


def k_vote(action: str, args: list[str]) -> bytes:
    return "/".join(["pc/vote", action, *args]).encode()


# reads ---------------------------------------------------------------------------------------


def _cfg(st: state.Overlay) -> dict[str, Any]:
    cfg = st.get_value(K_CFG)
    if cfg is None:
        raise reject(Reason.MARKET_NOT_CONFIGURED, "PowerChain is not set up (PcSetup)")
    return dict(cfg)


def _params(cfg: dict[str, Any]) -> pc.Params:
    return pc.parse_params(cfg["params"])


def _imb(st: state.Overlay) -> pc.Imbalance:
    v = st.get_value(K_IMB) or [0, 0, 0, 1]
    return pc.Imbalance(v[0], v[1], Fraction(v[2], v[3]))


def _put_imb(st: state.Overlay, imb: pc.Imbalance) -> None:
    st.put_value(K_IMB, [imb.stored_wh, imb.ent_uent, imb.r.numerator, imb.r.denominator])


def _acct(st: state.Overlay, who: str) -> list[int]:
    return list(st.get_value(k_acct(who)) or [0, 0, 0])


_COLUMN = {"ENT": 0, "eEuro": 1, "withdraw": 2}


def move(st: state.Overlay, who: str, column: str, delta: int) -> None:
    """Add ``delta`` to one balance column of ``who``; never below zero."""
    if delta == 0:  # a zero fee or refund: no write, so no empty account appears
        return
    a = _acct(st, who)
    i = _COLUMN[column]
    if a[i] + delta < 0:
        unit = "µENT" if column == "ENT" else "µeEuro"
        raise reject(
            Reason.INSUFFICIENT_FUNDS, f"{column} balance {a[i]} {unit} is below {-delta} {unit}"
        )
    a[i] += delta
    st.put_value(k_acct(who), a)


def _unit(st: state.Overlay, unit: str) -> dict[str, Any]:
    rec = st.get_value(k_unit(unit))
    if rec is None or not rec["active"]:
        raise reject(Reason.UNKNOWN_UNIT, f"{unit[:16]}… is not an active storage unit")
    return dict(rec)


def _is_participant(st: state.Overlay, key: bytes, cfg: dict[str, Any]) -> bool:
    who = state.account_id(key)
    if who in cfg["voters"] or who == cfg["banker"] or st.get(k_acct(who)) is not None:
        return True
    return is_member(st, key)


def is_participant(st: state.Overlay, key: bytes) -> bool:
    """True for a community member, a voter, the banker, a token holder or a storage unit's key
    (who may read PowerChain views beyond the parameters; docs/spec/powerchain.md §6)."""
    raw = st.get(K_CFG)
    if raw is None:
        return is_member(st, key)
    unit = st.get_value(k_unit(state.account_id(key)))
    return unit is not None or _is_participant(st, key, codec.decode_trusted(raw))


def require_participant(ctx: Context, tx: Tx) -> dict[str, Any]:
    cfg = _cfg(ctx.state)
    if not _is_participant(ctx.state, tx.signer, cfg):
        raise reject(Reason.NOT_PERMITTED, f"{tx.kind} needs a community member or token holder")
    return cfg


def market_call(field: str, fn: Callable[[], Any]) -> Any:
    """Run a market call, turning its InvalidInput into ``bad_value``."""
    try:
        return fn()
    except InvalidInput as exc:
        raise reject(Reason.BAD_VALUE, f"{field}: {exc}") from exc


# body decoding --------------------------------------------------------------------------------


def _amount(body: dict[str, Any], kind: str, name: str) -> int:
    return int_field(body, kind, name, 1, pc.MAX_AMOUNT)


def _energy(body: dict[str, Any], kind: str, lo: int = 1) -> int:
    return int_field(body, kind, "energy_wh", lo, pc.MAX_ENERGY_WH)


def _hex_key(body: dict[str, Any], kind: str, name: str) -> str:
    return key_field(body, kind, name).hex()


@dataclass(frozen=True, slots=True)
class Setup:
    voters: tuple[str, ...]
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class Vote:
    action: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Report:
    party: str  # producer or consumer hex ("" for an actual-energy report)
    energy_wh: int


@dataclass(frozen=True, slots=True)
class Amount:
    party: str  # counterparty/unit hex, "" when the kind has none
    amount: int
    token: str = ""


def _decode_setup(value: codec.Value) -> Setup:
    body = fields(value, "PcSetup", ("voters", "params"))
    voters = body["voters"]
    ok = isinstance(voters, list) and 1 <= len(voters) <= MAX_VOTERS
    if not ok or not all(isinstance(v, bytes) and len(v) == keys.PUBLIC_KEY_BYTES for v in voters):
        raise reject(Reason.MALFORMED, f"PcSetup.voters must be 1..{MAX_VOTERS} 32-byte keys")
    if len(set(voters)) != len(voters):
        raise reject(Reason.BAD_VALUE, "PcSetup.voters lists a key twice")
    params = body["params"]
    if not isinstance(params, dict):
        raise reject(Reason.MALFORMED, "PcSetup.params must be a map of decimal strings")
    p = market_call("PcSetup.params", lambda: pc.parse_params(params))
    return Setup(tuple(sorted(v.hex() for v in voters)), pc.params_text(p))


def _decode_vote(value: codec.Value) -> Vote:
    body = fields(value, "PcVote", ("action", "args"))
    action, args = body["action"], body["args"]
    if action not in ACTIONS or not isinstance(args, list):
        raise reject(Reason.MALFORMED, f"PcVote.action must be one of {ACTIONS}, args a list")
    n_keys = {"RegisterUnit": 2, "SetParameter": 0}.get(action, 1)
    if action == "SetParameter":
        ok = len(args) == 2 and all(isinstance(a, str) for a in args)
        if not ok:
            raise reject(Reason.MALFORMED, "PcVote SetParameter args are [name, decimal text]")
        market_call("PcVote.args", lambda: pc.parse_parameter(args[0], args[1]))
        return Vote(action, (args[0], args[1]))
    if len(args) != n_keys or not all(
        isinstance(a, bytes) and len(a) == keys.PUBLIC_KEY_BYTES for a in args
    ):
        raise reject(Reason.MALFORMED, f"PcVote {action} args are {n_keys} 32-byte key(s)")
    return Vote(action, tuple(a.hex() for a in args))


def _decode_report(kind: str, party: str | None) -> Callable[[codec.Value], Report]:
    def decode(value: codec.Value) -> Report:
        names = ("energy_wh",) if party is None else (party, "energy_wh")
        body = fields(value, kind, names)
        who = "" if party is None else _hex_key(body, kind, party)
        return Report(who, _energy(body, kind, 0 if party is None else 1))

    return decode


def _decode_amount(
    kind: str, party: str | None, amount: str, token: bool = False
) -> Callable[[codec.Value], Amount]:
    def decode(value: codec.Value) -> Amount:
        names = tuple(n for n in (party, amount, "token" if token else None) if n)
        body = fields(value, kind, names)
        tok = body.get("token", "")
        if token and tok not in ("ENT", "eEuro"):
            raise reject(Reason.MALFORMED, f"{kind}.token must be 'ENT' or 'eEuro'")
        who = "" if party is None else _hex_key(body, kind, party)
        return Amount(who, _amount(body, kind, amount), tok)

    return decode


def _decode_empty(value: codec.Value) -> None:
    fields(value, "PcClearSessions", ())


# setup and votes ----------------------------------------------------------------------------


def _run_setup(ctx: Context, tx: Tx, body: Setup) -> None:
    require_admin(ctx, tx)
    if ctx.state.get(K_CFG) is not None:
        raise reject(Reason.BAD_VALUE, "PowerChain is already set up; change it by PcVote")
    cfg = {"voters": list(body.voters), "banker": None, "params": body.params}
    ctx.state.put_value(K_CFG, cfg)


def _run_vote(ctx: Context, tx: Tx, body: Vote) -> None:
    st = ctx.state
    cfg = _cfg(st)
    voter = state.account_id(tx.signer)
    if voter not in cfg["voters"]:
        raise reject(Reason.NOT_PERMITTED, "PcVote needs a PowerChain voter key")
    _check_action(st, cfg, body)
    key = k_vote(body.action, list(body.args))
    rec = st.get_value(key)
    if rec is None or rec["passed_height"] is not None:  # a passed command starts a new round
        rec = {"action": body.action, "args": list(body.args), "votes": [], "passed_height": None}
    votes = pc.cast({v: bool(yes) for v, yes in rec["votes"]}, voter)
    rec["votes"] = [[v, yes] for v, yes in sorted(votes.items())]
    if pc.passed(votes, set(cfg["voters"])):
        rec["passed_height"] = ctx.height
        _execute(ctx, cfg, body)
    st.put_value(key, rec)


def _check_action(st: state.Overlay, cfg: dict[str, Any], body: Vote) -> None:
    """Is the action still meaningful now? Checked at every vote, so a stale vote cannot pass."""
    a, args = body.action, body.args
    voters = cfg["voters"]
    if a == "AddVoter" and (args[0] in voters or len(voters) >= MAX_VOTERS):
        raise reject(Reason.BAD_VALUE, f"{args[0][:16]}… is a voter already, or voters are full")
    if a == "RemoveVoter" and (args[0] not in voters or len(voters) == 1):
        raise reject(Reason.BAD_VALUE, f"{args[0][:16]}… is not a voter, or is the last one")
    rec = st.get_value(k_unit(args[0])) if a in ("RegisterUnit", "RemoveUnit") else None
    if a == "RegisterUnit" and rec is not None and rec["active"]:
        raise reject(Reason.UNIT_EXISTS, f"{args[0][:16]}… is an active storage unit already")
    if a == "RegisterUnit" and args[0] == args[1]:
        raise reject(Reason.BAD_VALUE, "a storage unit's meter key cannot own the unit")
    if a == "RemoveUnit" and (rec is None or not rec["active"]):
        raise reject(Reason.UNKNOWN_UNIT, f"{args[0][:16]}… is not an active storage unit")


def _execute(ctx: Context, cfg: dict[str, Any], body: Vote) -> None:
    st, a, args = ctx.state, body.action, body.args
    if a == "AddVoter":
        cfg["voters"] = sorted([*cfg["voters"], args[0]])
    elif a == "RemoveVoter":
        cfg["voters"] = [v for v in cfg["voters"] if v != args[0]]
    elif a == "ChangeBanker":
        cfg["banker"] = args[0]
    elif a == "SetParameter":
        cfg["params"] = pc.params_text(pc.parse_params({args[0]: args[1]}, _params(cfg)))
    elif a == "RegisterUnit":
        unit = {"owner": args[1], "energy_wh": 0, "reserved_wh": 0, "active": True}
        st.put_value(k_unit(args[0]), unit)
    else:  # RemoveUnit: its sessions are refunded and its energy leaves the network's total
        _remove_unit(ctx, cfg, args[0])
    st.put_value(K_CFG, cfg)


def _remove_unit(ctx: Context, cfg: dict[str, Any], unit: str) -> None:
    st = ctx.state
    prefix = b"pc/sess/" + unit.encode() + b"/"
    for key, raw in list(st.scan(prefix, state.prefix_end(prefix))):
        consumer = key[len(prefix) :].decode()
        move(st, consumer, "ENT", codec.decode_trusted(raw)[1])
        st.delete(key)
    rec = _unit(st, unit)
    imb = pc.settle(_imb(st), _params(cfg), -rec["energy_wh"], 0)
    _put_imb(st, imb)
    st.put_value(k_unit(unit), {**rec, "energy_wh": 0, "reserved_wh": 0, "active": False})


# storage-unit reports (signed by the unit's meter key) ---------------------------------------


def _unit_signer(ctx: Context, tx: Tx) -> tuple[dict[str, Any], str, dict[str, Any]]:
    cfg = _cfg(ctx.state)
    unit = state.account_id(tx.signer)
    rec = ctx.state.get_value(k_unit(unit))
    if rec is None or not rec["active"]:
        raise reject(Reason.NOT_PERMITTED, f"{tx.kind} needs the key of an active storage unit")
    return cfg, unit, dict(rec)


def _run_produce(ctx: Context, tx: Tx, body: Report) -> None:
    """Energy Produced (§5.2): mint per eq. 4.1, F to the unit's owner, the rest to the producer."""
    st = ctx.state
    cfg, unit, rec = _unit_signer(ctx, tx)
    if body.party == unit:
        raise reject(Reason.BAD_VALUE, "a storage unit cannot produce into itself")
    params, imb = _params(cfg), _imb(st)
    minted = pc.mint_uent(imb, params, body.energy_wh)
    to_producer, fee = pc.split_fee(minted, params)
    move(st, body.party, "ENT", to_producer)
    move(st, rec["owner"], "ENT", fee)
    rec["energy_wh"] += body.energy_wh
    st.put_value(k_unit(unit), rec)
    _put_imb(st, pc.settle(imb, params, body.energy_wh, minted))


def _run_consume(ctx: Context, tx: Tx, body: Report) -> None:
    """Energy Consumed (§5.2, §6.4): burn from the consumer's session with this unit."""
    st = ctx.state
    cfg, unit, rec = _unit_signer(ctx, tx)
    key = k_session(unit, body.party)
    raw = st.get_value(key)
    if raw is None:
        raise reject(Reason.UNKNOWN_SESSION, f"no session of {body.party[:16]}… with this unit")
    session = pc.Session(*raw)
    if ctx.time_ms >= session.expires_ms:
        raise reject(Reason.SESSION_EXPIRED, f"the session expired at {session.expires_ms}")
    if body.energy_wh > rec["energy_wh"]:
        raise reject(
            Reason.INSUFFICIENT_ENERGY,
            f"{body.energy_wh} Wh consumed but the unit stores {rec['energy_wh']} Wh",
        )
    done = pc.consume(session, _imb(st), _params(cfg), body.energy_wh)
    rec["energy_wh"] -= body.energy_wh
    rec["reserved_wh"] -= done.reserved_used_wh + done.released_wh
    st.put_value(k_unit(unit), rec)
    if done.session is None:
        st.delete(key)
        move(st, body.party, "ENT", done.refund_uent)
    else:
        s = done.session
        st.put_value(key, [s.energy_wh, s.locked_uent, s.start_ms, s.expires_ms])
    _put_imb(st, done.imbalance)


def _run_actual(ctx: Context, tx: Tx, body: Report) -> None:
    """Report Actual Energy (§5.2): the unit's metered content replaces the booked one."""
    st = ctx.state
    cfg, unit, rec = _unit_signer(ctx, tx)
    delta = body.energy_wh - rec["energy_wh"]
    rec["energy_wh"] = body.energy_wh
    st.put_value(k_unit(unit), rec)
    _put_imb(st, pc.settle(_imb(st), _params(cfg), delta, 0))


# consumption sessions -----------------------------------------------------------------------


def _close(st: state.Overlay, key: bytes, unit: str, consumer: str) -> None:
    """End a session: refund its lock, release its reserved energy."""
    energy_wh, locked, _, _ = st.get_value(key)
    move(st, consumer, "ENT", locked)
    rec = dict(st.get_value(k_unit(unit)))
    rec["reserved_wh"] -= energy_wh
    st.put_value(k_unit(unit), rec)
    st.delete(key)


def _run_start(ctx: Context, tx: Tx, body: Amount) -> None:
    """Start Consumption Session (§5.2): lock ENT for the energy it pays at the burn rate."""
    st = ctx.state
    cfg = require_participant(ctx, tx)
    consumer = state.account_id(tx.signer)
    rec = _unit(st, body.party)
    key = k_session(body.party, consumer)
    old = st.get_value(key)
    if old is not None and ctx.time_ms < old[3]:
        raise reject(Reason.SESSION_ACTIVE, "a session with this unit is still active")
    if old is not None:
        _close(st, key, body.party, consumer)  # expired: refund before the new one
        rec = _unit(st, body.party)
    free = max(0, rec["energy_wh"] - rec["reserved_wh"])
    imb, params = _imb(st), _params(cfg)
    energy = pc.session_energy_wh(body.amount, imb, params)
    if free == 0 or energy > free:
        raise reject(
            Reason.INSUFFICIENT_ENERGY, f"the amount pays {energy} Wh; the unit has {free} Wh free"
        )
    session = market_call(
        "PcStartSession", lambda: pc.open_session(body.amount, imb, params, free, ctx.time_ms)
    )
    move(st, consumer, "ENT", -body.amount)
    rec["reserved_wh"] += session.energy_wh
    st.put_value(k_unit(body.party), rec)
    st.put_value(key, [session.energy_wh, session.locked_uent, ctx.time_ms, session.expires_ms])


def _run_clear(ctx: Context, tx: Tx, body: None) -> None:
    """Clear Old Sessions (§5.2): every session past its expiry H is closed and refunded."""
    st = ctx.state
    require_participant(ctx, tx)
    expired = [
        (key, raw)
        for key, raw in st.scan(b"pc/sess/", state.prefix_end(b"pc/sess/"))
        if ctx.time_ms >= codec.decode_trusted(raw)[3]
    ]
    if not expired and not ctx.check_only:  # a later block time may make some expire
        raise reject(Reason.UNKNOWN_SESSION, "no session has expired")
    for key, _ in expired:
        unit, consumer = key[len(b"pc/sess/") :].decode().split("/")
        _close(st, key, unit, consumer)


# tokens: transfers and the banker (§4.2.3.2, §5.2) -------------------------------------------


def _run_transfer(ctx: Context, tx: Tx, body: Amount) -> None:
    st = ctx.state
    require_participant(ctx, tx)
    me = state.account_id(tx.signer)
    if body.party == me:
        raise reject(Reason.BAD_VALUE, "PcTransfer to oneself")
    move(st, me, body.token, -body.amount)
    move(st, body.party, body.token, body.amount)


def _require_banker(ctx: Context, tx: Tx) -> None:
    if _cfg(ctx.state)["banker"] != state.account_id(tx.signer):
        raise reject(Reason.NOT_PERMITTED, f"{tx.kind} needs the banker's key")


def _run_mint_eeur(ctx: Context, tx: Tx, body: Amount) -> None:
    """Mint eEuro: the banker has taken in as many real euro."""
    _require_banker(ctx, tx)
    move(ctx.state, body.party, "eEuro", body.amount)
    ctx.state.put_value(K_EEUR, ctx.state.get_int(K_EEUR) + body.amount)


def _run_lock_eeur(ctx: Context, tx: Tx, body: Amount) -> None:
    """Lock eEuro: a holder asks to withdraw; only locked eEuro can be burned by the banker."""
    st = ctx.state
    require_participant(ctx, tx)
    me = state.account_id(tx.signer)
    move(st, me, "eEuro", -body.amount)
    move(st, me, "withdraw", body.amount)


def _run_burn_eeur(ctx: Context, tx: Tx, body: Amount) -> None:
    """Burn eEuro: the banker pays out real euro for eEuro the holder locked."""
    _require_banker(ctx, tx)
    move(ctx.state, body.party, "withdraw", -body.amount)
    ctx.state.put_value(K_EEUR, ctx.state.get_int(K_EEUR) - body.amount)


def _run_unlock_eeur(ctx: Context, tx: Tx, body: Amount) -> None:
    """Unlock eEuro: the banker hands a withdrawal request back to the holder."""
    _require_banker(ctx, tx)
    move(ctx.state, body.party, "withdraw", -body.amount)
    move(ctx.state, body.party, "eEuro", body.amount)


# registration -------------------------------------------------------------------------------


def register_kind(
    name: str, decode: Callable[[codec.Value], Any], run: Callable[..., None]
) -> None:
    def validate(ctx: Context, tx: Tx, body: Any) -> None:
        run(dataclasses.replace(ctx, state=ctx.state.child()), tx, body)

    register(TxKind(name, decode, validate, run))


register_kind("PcSetup", _decode_setup, _run_setup)
register_kind("PcVote", _decode_vote, _run_vote)
register_kind("PcProduce", _decode_report("PcProduce", "producer"), _run_produce)
register_kind("PcConsume", _decode_report("PcConsume", "consumer"), _run_consume)
register_kind("PcReportEnergy", _decode_report("PcReportEnergy", None), _run_actual)
register_kind("PcStartSession", _decode_amount("PcStartSession", "unit", "amount_uent"), _run_start)
register_kind("PcClearSessions", _decode_empty, _run_clear)
register_kind("PcTransfer", _decode_amount("PcTransfer", "to", "amount", token=True), _run_transfer)
register_kind("PcMintEEuro", _decode_amount("PcMintEEuro", "to", "amount_ueur"), _run_mint_eeur)
register_kind("PcLockEEuro", _decode_amount("PcLockEEuro", None, "amount_ueur"), _run_lock_eeur)
register_kind(
    "PcBurnEEuro", _decode_amount("PcBurnEEuro", "account", "amount_ueur"), _run_burn_eeur
)
register_kind(
    "PcUnlockEEuro", _decode_amount("PcUnlockEEuro", "account", "amount_ueur"), _run_unlock_eeur
)
