"""The AMM local energy + local power market on the ledger (seed 000 §4.1, §4.2, §4.4).

Spec: docs/spec/ledger.md §3. Kinds: SetMarketParameters (MP), SetMeasure (ML), SolveMarkets.
Settlement runs ``market.amm.settle_period`` inside the ledger transition and posts every
member's, the community's and the grid's amounts to balances exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ledger import codec, privacy, state
from ledger.apps.meters import require_admin
from ledger.errors import Reason, TxRejected
from ledger.genesis import period_record
from ledger.registry import Context, TxKind, fields, id_field, int_field, register, reject
from ledger.tx import Tx
from market.amm import MarketParams, settle_period
from market.errors import MarketError

MAX_PERIOD_MS = 366 * 24 * 3600 * 1000
"""Longest market period [ms] (bounds the settlement work of one SolveMarkets)."""
MAX_SLOT_WH = 100_000_000
"""Largest import or export of one meter in one slot [Wh] (400 MW average: a typo guard)."""
_MAX_MS = (1 << 53) - 1


@dataclass(frozen=True, slots=True)
class SetMarketParameters:
    period_id: str
    start_ms: int
    end_ms: int
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class SetMeasure:
    meter_id: str
    slot_start_ms: int
    import_wh: int
    export_wh: int
    quality: int


@dataclass(frozen=True, slots=True)
class SolveMarkets:
    period_id: str


# SetMarketParameters ---------------------------------------------------------------------


def decode_params(value: codec.Value, where: str) -> dict[str, str]:
    """Market parameters as decimal strings, checked by the market engine.

    Raises:
        TxRejected: ``malformed`` (not a str → str map) or ``bad_params`` (engine refused).
    """
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise reject(Reason.MALFORMED, f"{where}.params must be a map of decimal strings")
    try:
        MarketParams.from_strings(value)
    except MarketError as exc:
        raise reject(Reason.BAD_PARAMS, f"{where}.params: {exc}") from exc
    return dict(value)


def _decode_smp(value: codec.Value) -> SetMarketParameters:
    k = "SetMarketParameters"
    body = fields(value, k, ("period_id", "start_ms", "end_ms", "params"))
    return SetMarketParameters(
        id_field(body, k, "period_id"),
        int_field(body, k, "start_ms", 0, _MAX_MS),
        int_field(body, k, "end_ms", 0, _MAX_MS),
        decode_params(body["params"], k),
    )


def check_period_bounds(st: state.Overlay, period_id: str, start_ms: int, end_ms: int) -> None:
    """Alignment, length and no overlap with any other period.

    Raises:
        TxRejected: ``slot_unaligned``, ``bad_value`` or ``period_overlap``.
    """
    if start_ms % state.SLOT_MS or end_ms % state.SLOT_MS:
        raise reject(Reason.SLOT_UNALIGNED, f"period {period_id!r} bounds must be 15-min aligned")
    if not 0 < end_ms - start_ms <= MAX_PERIOD_MS:
        raise reject(Reason.BAD_VALUE, f"period {period_id!r} must have 0 < end - start <= 366 d")
    for _, raw in st.scan(b"pstart/", state.k_period_start(end_ms)):
        other = str(codec.decode_trusted(raw))
        rec = st.get_value(state.k_period(other))
        if other != period_id and rec is not None and rec["end_ms"] > start_ms:
            raise reject(Reason.PERIOD_OVERLAP, f"period {period_id!r} overlaps {other!r}")


def write_period(st: state.Overlay, body: SetMarketParameters) -> None:
    """Create or replace an unsolved period's record and its start index."""
    old = st.get_value(state.k_period(body.period_id))
    if old is not None:
        st.delete(state.k_period_start(old["start_ms"]))
    st.put_value(
        state.k_period(body.period_id), period_record(body.start_ms, body.end_ms, body.params)
    )
    st.put_value(state.k_period_start(body.start_ms), body.period_id)


def _validate_smp(ctx: Context, tx: Tx, body: SetMarketParameters) -> None:
    require_admin(ctx, tx)
    now_slot = ctx.time_ms - ctx.time_ms % state.SLOT_MS
    old = ctx.state.get_value(state.k_period(body.period_id))
    if old is not None and old["solved"]:
        raise reject(Reason.PERIOD_SOLVED, f"period {body.period_id!r} is solved")
    # Prices may not change once a period is under way (or be set retroactively) by the admin
    # alone; governance (ledger/apps/governance.py) can.
    if old is not None and old["start_ms"] < now_slot:
        raise reject(Reason.PERIOD_STARTED, f"period {body.period_id!r} has started")
    if body.start_ms < now_slot:
        raise reject(Reason.PERIOD_STARTED, f"period {body.period_id!r} would start in the past")
    check_period_bounds(ctx.state, body.period_id, body.start_ms, body.end_ms)


def _apply_smp(ctx: Context, tx: Tx, body: SetMarketParameters) -> None:
    write_period(ctx.state, body)


# SetMeasure ----------------------------------------------------------------------------


def _decode_measure(value: codec.Value) -> SetMeasure:
    k = "SetMeasure"
    body = fields(value, k, ("meter_id", "slot_start_ms", "import_wh", "export_wh", "quality"))
    return SetMeasure(
        id_field(body, k, "meter_id"),
        int_field(body, k, "slot_start_ms", 0, _MAX_MS),
        int_field(body, k, "import_wh", 0, MAX_SLOT_WH),
        int_field(body, k, "export_wh", 0, MAX_SLOT_WH),
        int_field(body, k, "quality", 0, 0xFFFF),
    )


def _validate_measure(ctx: Context, tx: Tx, body: SetMeasure) -> None:
    st = ctx.state
    if not privacy.is_pseudonym(body.meter_id) and privacy.mode(st) is privacy.Mode.PSEUDONYMOUS:
        # Not echoed: a misconfigured node may be sending its serial (docs/spec/privacy.md §2).
        raise reject(Reason.NOT_PSEUDONYM, "SetMeasure.meter_id must be a pseudonym")
    owner = state.meter_owner(st, body.meter_id)
    if owner is None:
        raise reject(Reason.UNKNOWN_METER, f"meter {body.meter_id!r} is not on the allowed list")
    if owner != tx.signer:
        if not state.is_prosumer(st, tx.signer):
            raise reject(Reason.NOT_PERMITTED, "SetMeasure needs the key of a meter owner")
        raise reject(Reason.NOT_METER_OWNER, f"meter {body.meter_id!r} belongs to another account")
    if body.slot_start_ms % state.SLOT_MS:
        raise reject(Reason.SLOT_UNALIGNED, f"slot {body.slot_start_ms} is not 15-min aligned")
    skew = state.chain_params(st).get("clock_skew_ms", 0)
    if not ctx.check_only and body.slot_start_ms + state.SLOT_MS > ctx.time_ms + skew:
        raise reject(Reason.SLOT_IN_FUTURE, f"slot {body.slot_start_ms} has not ended yet")
    found = state.find_period(st, body.slot_start_ms)
    if found is not None and found[1]["solved"]:
        raise reject(Reason.PERIOD_SOLVED, f"slot {body.slot_start_ms} is in solved {found[0]!r}")
    old = st.get_value(state.k_measure(body.slot_start_ms, body.meter_id))
    if old is not None and old[:3] != [body.import_wh, body.export_wh, body.quality]:
        raise reject(
            Reason.MEASURE_CONFLICT,
            f"meter {body.meter_id!r} slot {body.slot_start_ms} already holds {old[:3]}",
        )


def _apply_measure(ctx: Context, tx: Tx, body: SetMeasure) -> None:
    key = state.k_measure(body.slot_start_ms, body.meter_id)
    if ctx.state.get(key) is not None:
        return  # an identical repeat (validate refused a different one): idempotent
    ctx.state.put_value(key, [body.import_wh, body.export_wh, body.quality, tx.signer])
    tkey = state.k_total(body.slot_start_ms)
    imp, exp, n = ctx.state.get_value(tkey) or [0, 0, 0]
    ctx.state.put_value(tkey, [imp + body.import_wh, exp + body.export_wh, n + 1])


# SolveMarkets -------------------------------------------------------------------------


def _decode_solve(value: codec.Value) -> SolveMarkets:
    body = fields(value, "SolveMarkets", ("period_id",))
    return SolveMarkets(id_field(body, "SolveMarkets", "period_id"))


def is_member(st: state.Overlay, key: bytes) -> bool:
    """Any role at all (admin, prosumer, validator, governor): not an outsider."""
    return (
        state.is_admin(st, key)
        or state.is_prosumer(st, key)
        or state.is_validator(st, key)
        or state.is_governor(st, key)
    )


def _validate_solve(ctx: Context, tx: Tx, body: SolveMarkets) -> None:
    if not is_member(ctx.state, tx.signer):
        raise reject(Reason.NOT_PERMITTED, "SolveMarkets needs a key known to the community")
    rec = ctx.state.get_value(state.k_period(body.period_id))
    if rec is None:
        raise reject(Reason.UNKNOWN_PERIOD, f"no period {body.period_id!r}")
    if rec["solved"]:
        raise reject(Reason.ALREADY_SOLVED, f"period {body.period_id!r} is already solved")
    grace = state.chain_params(ctx.state).get("settle_grace_ms", 0)
    if not ctx.check_only and ctx.time_ms < rec["end_ms"] + grace:
        raise reject(Reason.PERIOD_NOT_ENDED, f"period {body.period_id!r} has not ended")


def _period_slots(st: state.Overlay, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
    """Per slot with data: account id → (import_wh, export_wh) (a member's meters are summed)."""
    # Runs over every measurement of the period (56 k for 19 members × a month): kept lean.
    current = b""
    slot: dict[str, list[int]] = {}
    names: dict[bytes, str] = {}
    lo = b"meas/" + state.slot_key(start_ms).encode()
    hi = b"meas/" + state.slot_key(end_ms).encode()
    for key, raw in st.scan(lo, hi):
        slot_key = key[5:18]
        if slot_key != current and slot:
            yield {a: (i, e) for a, (i, e) in slot.items()}
            slot = {}
        current = slot_key
        imp, exp, _quality, owner = codec.decode_trusted(raw)
        name = names.get(owner)
        if name is None:
            name = names[owner] = state.account_id(owner)
        acc = slot.get(name)
        if acc is None:
            slot[name] = [imp, exp]
        else:
            acc[0] += imp
            acc[1] += exp
    if slot:
        yield {a: (i, e) for a, (i, e) in slot.items()}


def _apply_solve(ctx: Context, tx: Tx, body: SolveMarkets) -> None:
    st = ctx.state
    rec = st.get_value(state.k_period(body.period_id))
    try:
        params = MarketParams.from_strings(rec["params"])
        result = settle_period(
            params, _period_slots(st, rec["start_ms"], rec["end_ms"]), keep_slots=False
        )
    except MarketError as exc:
        raise TxRejected(Reason.SETTLEMENT_FAILED, f"period {body.period_id!r}: {exc}") from exc
    if sum(result.postings_uect.values()) + result.admin_uect + result.grid_uect != 0:
        raise TxRejected(Reason.SETTLEMENT_FAILED, "settlement does not conserve money")
    for account, amount in sorted(result.postings_uect.items()):
        state.add_balance(st, account, amount)
        st.put_value(state.k_settlement(body.period_id, account), amount)
    state.add_balance(st, state.COMMUNITY, result.admin_uect)
    state.add_balance(st, state.GRID, result.grid_uect)
    rec.update(
        solved=True,
        solved_height=ctx.height,
        solved_ms=ctx.time_ms,  # start of the dispute window (ledger/apps/privacy.py)
        slots=result.slot_count,
        e_c_wh=result.e_c_wh,
        e_p_wh=result.e_p_wh,
        admin_uect=result.admin_uect,
        grid_uect=result.grid_uect,
    )
    st.put_value(state.k_period(body.period_id), rec)


register(TxKind("SetMarketParameters", _decode_smp, _validate_smp, _apply_smp))
register(TxKind("SetMeasure", _decode_measure, _validate_measure, _apply_measure))
register(TxKind("SolveMarkets", _decode_solve, _validate_solve, _apply_solve))
