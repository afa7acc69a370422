"""Forward schedules and imbalance settlement on the ledger (seed 002 §IV.C–IV.D).

Spec: docs/spec/schedules.md §Ledger. Kinds: SetAsset and SetScheduleDay (admin), SubmitSchedule
(meter owner, before gate closure), SettleSchedules (any community key, after the day). The
economics are market.schedules; this module only reads and writes state. Deadlines use the
block time.

State:
    ``asset/<meter_id>``               [kind, import_capacity_w, export_capacity_w]
    ``sday/<day_start_ms>``            {prices, gate_closure_ms, supervisor, settled, ...}
    ``sched/<day_start_ms>/<meter>``   [energy_wh per slot] (latest submission before the gate)
    ``sres/<day_start_ms>/<meter>``    [scheduled, metered, short, long, forward, imbalance]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import codec, state
from ledger.apps.amm import MAX_SLOT_WH, is_member
from ledger.apps.meters import require_admin
from ledger.errors import Reason
from ledger.registry import (
    Context,
    TxKind,
    fields,
    id_field,
    int_field,
    key_field,
    register,
    reject,
)
from ledger.tx import Tx
from market.decimals import parse_decimal
from market.errors import MarketError
from market.schedules import (
    SLOTS_PER_DAY,
    Asset,
    AssetKind,
    MemberDay,
    Prices,
    ScheduleError,
    check_schedule,
    settle_day,
)

DAY_MS = 86_400_000
_MAX_MS = (1 << 53) - 1
_MAX_CAPACITY_W = 1_000_000_000
_PRICE_NAMES = ("forward", "imbalance_short", "imbalance_long", "grid_buy", "grid_sell")


def _day(day_start_ms: int) -> bytes:
    return state.slot_key(day_start_ms).encode()


def k_asset(meter_id: str) -> bytes:
    return b"asset/" + meter_id.encode()


def k_day(day_start_ms: int) -> bytes:
    return b"sday/" + _day(day_start_ms)


def k_schedule(day_start_ms: int, meter_id: str) -> bytes:
    return b"sched/" + _day(day_start_ms) + b"/" + meter_id.encode()


def k_result(day_start_ms: int, meter_id: str) -> bytes:
    return b"sres/" + _day(day_start_ms) + b"/" + meter_id.encode()


@dataclass(frozen=True, slots=True)
class SetAsset:
    meter_id: str
    asset: Asset


@dataclass(frozen=True, slots=True)
class SetScheduleDay:
    day_start_ms: int
    prices: dict[str, str]
    gate_closure_ms: int
    supervisor: bytes


@dataclass(frozen=True, slots=True)
class SubmitSchedule:
    day_start_ms: int
    meter_id: str
    schedule_wh: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DayRef:
    day_start_ms: int


def _day_start(body: dict[str, Any], kind: str) -> int:
    day_start_ms = int_field(body, kind, "day_start_ms", 0, _MAX_MS)
    if day_start_ms % DAY_MS:
        raise reject(Reason.SLOT_UNALIGNED, f"{kind}.day_start_ms must be a UTC midnight")
    return day_start_ms


def parse_prices(value: codec.Value, where: str) -> Prices:
    """The day's prices (decimal strings) as the engine's value.

    Raises:
        TxRejected: ``malformed`` (not exactly the five names) or ``bad_params``.
    """
    if not isinstance(value, dict) or set(value) != set(_PRICE_NAMES):
        raise reject(Reason.MALFORMED, f"{where}.prices must hold exactly {list(_PRICE_NAMES)}")
    try:
        return Prices(*(parse_decimal(f"{where}.prices.{n}", value[n]) for n in _PRICE_NAMES))
    except MarketError as exc:
        raise reject(Reason.BAD_PARAMS, str(exc)) from exc


# SetAsset -------------------------------------------------------------------------------


def _decode_asset(value: codec.Value) -> SetAsset:
    k = "SetAsset"
    body = fields(value, k, ("meter_id", "kind", "import_capacity_w", "export_capacity_w"))
    if body["kind"] not in {a.value for a in AssetKind}:
        raise reject(Reason.MALFORMED, f"{k}.kind must be one of {[a.value for a in AssetKind]}")
    asset = Asset(
        AssetKind(body["kind"]),
        int_field(body, k, "import_capacity_w", 0, _MAX_CAPACITY_W),
        int_field(body, k, "export_capacity_w", 0, _MAX_CAPACITY_W),
    )
    return SetAsset(id_field(body, k, "meter_id"), asset)


def _validate_asset(ctx: Context, tx: Tx, body: SetAsset) -> None:
    require_admin(ctx, tx)
    if state.meter_owner(ctx.state, body.meter_id) is None:
        raise reject(Reason.UNKNOWN_METER, f"meter {body.meter_id!r} is not on the allowed list")


def _apply_asset(ctx: Context, tx: Tx, body: SetAsset) -> None:
    a = body.asset
    ctx.state.put_value(
        k_asset(body.meter_id), [a.kind.value, a.import_capacity_w, a.export_capacity_w]
    )


def _asset(st: state.Overlay, meter_id: str) -> Asset | None:
    value = st.get_value(k_asset(meter_id))
    return None if value is None else Asset(AssetKind(value[0]), value[1], value[2])


# SetScheduleDay -------------------------------------------------------------------------


def _decode_sday(value: codec.Value) -> SetScheduleDay:
    k = "SetScheduleDay"
    body = fields(value, k, ("day_start_ms", "prices", "gate_closure_ms", "supervisor"))
    parse_prices(body["prices"], k)
    return SetScheduleDay(
        _day_start(body, k),
        dict(body["prices"]),
        int_field(body, k, "gate_closure_ms", 0, DAY_MS * 7),
        key_field(body, k, "supervisor"),
    )


def _validate_sday(ctx: Context, tx: Tx, body: SetScheduleDay) -> None:
    require_admin(ctx, tx)
    old = ctx.state.get_value(k_day(body.day_start_ms))
    gate_ms = body.day_start_ms - body.gate_closure_ms
    if old is not None:
        gate_ms = min(gate_ms, body.day_start_ms - old["gate_closure_ms"])
    # Prices are fixed once members may no longer adjust their schedules to them.
    if not ctx.check_only and ctx.time_ms >= gate_ms:
        raise reject(Reason.GATE_CLOSED, f"day {body.day_start_ms}: gate closed at {gate_ms}")


def _apply_sday(ctx: Context, tx: Tx, body: SetScheduleDay) -> None:
    ctx.state.put_value(
        k_day(body.day_start_ms),
        {
            "prices": body.prices,
            "gate_closure_ms": body.gate_closure_ms,
            "supervisor": body.supervisor,
            "settled": False,
        },
    )


# SubmitSchedule -------------------------------------------------------------------------


def _decode_submit(value: codec.Value) -> SubmitSchedule:
    k = "SubmitSchedule"
    body = fields(value, k, ("day_start_ms", "meter_id", "schedule_wh"))
    series = body["schedule_wh"]
    if not isinstance(series, list) or len(series) != SLOTS_PER_DAY:
        raise reject(Reason.MALFORMED, f"{k}.schedule_wh must list {SLOTS_PER_DAY} slots")
    slots = {str(i): v for i, v in enumerate(series)}
    schedule = tuple(
        int_field(slots, f"{k}.schedule_wh", str(i), -MAX_SLOT_WH, MAX_SLOT_WH)
        for i in range(SLOTS_PER_DAY)
    )
    return SubmitSchedule(_day_start(body, k), id_field(body, k, "meter_id"), schedule)


def _validate_submit(ctx: Context, tx: Tx, body: SubmitSchedule) -> None:
    st = ctx.state
    owner = state.meter_owner(st, body.meter_id)
    if owner is None:
        raise reject(Reason.UNKNOWN_METER, f"meter {body.meter_id!r} is not on the allowed list")
    if owner != tx.signer:
        if not state.is_prosumer(st, tx.signer):
            raise reject(Reason.NOT_PERMITTED, "SubmitSchedule needs the key of a meter owner")
        raise reject(Reason.NOT_METER_OWNER, f"meter {body.meter_id!r} belongs to another account")
    asset = _asset(st, body.meter_id)
    if asset is None:
        raise reject(Reason.NO_ASSET, f"meter {body.meter_id!r} has no registered asset")
    day = st.get_value(k_day(body.day_start_ms))
    if day is None:
        raise reject(Reason.UNKNOWN_DAY, f"no schedule day {body.day_start_ms}")
    gate_ms = body.day_start_ms - day["gate_closure_ms"]
    if not ctx.check_only and ctx.time_ms >= gate_ms:
        raise reject(Reason.GATE_CLOSED, f"day {body.day_start_ms}: gate closed at {gate_ms}")
    try:
        check_schedule(body.meter_id, asset, body.schedule_wh)
    except ScheduleError as exc:
        raise reject(Reason.SCHEDULE_REFUSED, str(exc)) from exc


def _apply_submit(ctx: Context, tx: Tx, body: SubmitSchedule) -> None:
    ctx.state.put_value(k_schedule(body.day_start_ms, body.meter_id), list(body.schedule_wh))


# SettleSchedules ------------------------------------------------------------------------


def _decode_settle(value: codec.Value) -> DayRef:
    body = fields(value, "SettleSchedules", ("day_start_ms",))
    return DayRef(_day_start(body, "SettleSchedules"))


def _validate_settle(ctx: Context, tx: Tx, body: DayRef) -> None:
    if not is_member(ctx.state, tx.signer):
        raise reject(Reason.NOT_PERMITTED, "SettleSchedules needs a key known to the community")
    day = ctx.state.get_value(k_day(body.day_start_ms))
    if day is None:
        raise reject(Reason.UNKNOWN_DAY, f"no schedule day {body.day_start_ms}")
    if day["settled"]:
        raise reject(Reason.ALREADY_SOLVED, f"day {body.day_start_ms} is already settled")
    due_ms = body.day_start_ms + DAY_MS + state.chain_params(ctx.state).get("settle_grace_ms", 0)
    if not ctx.check_only and ctx.time_ms < due_ms:
        raise reject(Reason.PERIOD_NOT_ENDED, f"day {body.day_start_ms} settles from {due_ms}")


def _enrolled_days(st: state.Overlay, day_start_ms: int) -> tuple[list[MemberDay], dict[str, str]]:
    """Every meter with a registered asset: its schedule (zeros if none) and metered day.

    Returns:
        (member days keyed by meter id, meter id → owner account id). A meter that left the
        allowed list is settled with the owner its measurements name; one with neither an
        owner nor measurements is skipped (it has nothing to settle).
    """
    imports: dict[str, list[int]] = {}
    exports: dict[str, list[int]] = {}
    owners: dict[str, str] = {}
    enrolled = [
        key[len(b"asset/") :].decode() for key, _ in st.scan(b"asset/", state.prefix_end(b"asset/"))
    ]
    lo, hi = b"meas/" + _day(day_start_ms), b"meas/" + _day(day_start_ms + DAY_MS)
    for key, raw in st.scan(lo, hi):
        slot_ms, meter_id = int(key[5:18]), key[19:].decode()
        imp, exp, _quality, owner = codec.decode(raw)
        slot = (slot_ms - day_start_ms) // state.SLOT_MS
        imports.setdefault(meter_id, [0] * SLOTS_PER_DAY)[slot] += imp
        exports.setdefault(meter_id, [0] * SLOTS_PER_DAY)[slot] += exp
        owners.setdefault(meter_id, state.account_id(owner))
    days = []
    for meter_id in enrolled:
        current = state.meter_owner(st, meter_id)
        if current is not None:
            owners[meter_id] = state.account_id(current)
        if meter_id not in owners:
            continue
        schedule = st.get_value(k_schedule(day_start_ms, meter_id)) or [0] * SLOTS_PER_DAY
        days.append(
            MemberDay(
                meter_id,
                tuple(schedule),
                tuple(imports.get(meter_id, [0] * SLOTS_PER_DAY)),
                tuple(exports.get(meter_id, [0] * SLOTS_PER_DAY)),
            )
        )
    return days, owners


def _apply_settle(ctx: Context, tx: Tx, body: DayRef) -> None:
    st = ctx.state
    rec = dict(st.get_value(k_day(body.day_start_ms)))
    prices = parse_prices(rec["prices"], "SettleSchedules")
    days, owners = _enrolled_days(st, body.day_start_ms)
    result = settle_day(days, prices)
    supervisor = state.account_id(bytes(rec["supervisor"]))
    for m in result.members:
        state.add_balance(st, owners[m.member], m.posting_uect)
        st.put_value(
            k_result(body.day_start_ms, m.member),
            [m.scheduled_wh, m.metered_wh, m.short_wh, m.long_wh, m.forward_uect, m.imbalance_uect],
        )
    state.add_balance(st, supervisor, result.supervisor_uect)
    state.add_balance(st, state.GRID, result.grid_uect)
    rec.update(
        settled=True,
        settled_height=ctx.height,
        meters=len(result.members),
        supervisor_uect=result.supervisor_uect,
        grid_uect=result.grid_uect,
        grid_import_wh=result.grid_import_wh,
        grid_export_wh=result.grid_export_wh,
    )
    st.put_value(k_day(body.day_start_ms), rec)


register(TxKind("SetAsset", _decode_asset, _validate_asset, _apply_asset))
register(TxKind("SetScheduleDay", _decode_sday, _validate_sday, _apply_sday))
register(TxKind("SubmitSchedule", _decode_submit, _validate_submit, _apply_submit))
register(TxKind("SettleSchedules", _decode_settle, _validate_settle, _apply_settle))
