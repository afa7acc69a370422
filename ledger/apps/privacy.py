"""Retention of raw measurements: the PruneMeasurements tx (GDPR storage limitation).

Spec: docs/spec/privacy.md §3. Once a period is solved and the genesis ``dispute_window_ms`` has
passed (block time, measured from the solving block's time), any community member may submit
``PruneMeasurements {period_id}``. Each tx prunes one chunk: the period's ``meas/`` rows from
its progress mark to the next UTC day boundary, keeping per account and day
``proot/<period>/<day>/<account> = [import_wh, export_wh, records, member_root]`` and the running
``ptot/<period>/<account> = [import_wh, export_wh, records]``; ``pruned/<period>`` holds the
progress and, after the last chunk, the period root. ``tot/`` (community totals per slot),
``settle/`` and balances are untouched. The transition is a pure function of state and block
time, so every node (and every replay) reaches the same app hash.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger import codec, privacy, state
from ledger.apps.amm import is_member
from ledger.errors import Reason
from ledger.registry import Context, TxKind, fields, id_field, register, reject
from ledger.tx import Tx

_DAY_MS = 86_400_000
_MAX_WINDOW_MS = _DAY_MS
"""Longest market window (ledger/apps/windows.py ``_MAX_LENGTH_MS``): how far before a period a
window overlapping it may start."""


@dataclass(frozen=True, slots=True)
class PruneMeasurements:
    period_id: str


def _decode(value: codec.Value) -> PruneMeasurements:
    body = fields(value, "PruneMeasurements", ("period_id",))
    return PruneMeasurements(id_field(body, "PruneMeasurements", "period_id"))


def _validate(ctx: Context, tx: Tx, body: PruneMeasurements) -> None:
    st = ctx.state
    if not is_member(st, tx.signer):
        raise reject(Reason.NOT_PERMITTED, "PruneMeasurements needs a key known to the community")
    window_ms = state.chain_params(st).get("dispute_window_ms")
    if window_ms is None:
        raise reject(Reason.RETENTION_DISABLED, "genesis sets no dispute_window_ms: nothing prunes")
    rec = st.get_value(state.k_period(body.period_id))
    if rec is None:
        raise reject(Reason.UNKNOWN_PERIOD, f"no period {body.period_id!r}")
    if not rec["solved"]:
        raise reject(Reason.PERIOD_NOT_SOLVED, f"period {body.period_id!r} is not solved")
    progress = st.get_value(privacy.k_pruned(body.period_id))
    if progress is not None and progress["done"]:
        raise reject(Reason.ALREADY_PRUNED, f"period {body.period_id!r} is already pruned")
    if progress is not None and progress["height"] == ctx.height and not ctx.check_only:
        # One chunk per period per block, however many nodes submitted one: bounds block work.
        raise reject(Reason.PRUNE_NEXT_BLOCK, f"period {body.period_id!r}: one chunk per block")
    # Periods solved before solved_ms was recorded count from their end.
    due_ms = int(rec.get("solved_ms", rec["end_ms"])) + window_ms
    if not ctx.check_only and ctx.time_ms < due_ms:
        raise reject(
            Reason.DISPUTE_WINDOW_OPEN, f"period {body.period_id!r} may be pruned from {due_ms}"
        )
    _check_no_pending_reader(st, body.period_id, rec["start_ms"], rec["end_ms"])


def _check_no_pending_reader(st: state.Overlay, period_id: str, start_ms: int, end_ms: int) -> None:
    """Market windows and schedule days also settle from ``meas/`` rows: a period is pruned only
    once every one overlapping it is settled, or they would settle from nothing."""
    lo = max(0, start_ms - _MAX_WINDOW_MS)
    for key, raw in st.scan(b"win/" + state.slot_key(lo).encode(), b"win/" + _k(end_ms)):
        win = codec.decode_trusted(raw)
        w_start = int(key[4:])
        if w_start + int(win["length_ms"]) > start_ms and win["status"] != "validated":
            raise reject(Reason.PRUNE_BLOCKED, f"window {w_start} overlapping {period_id!r} open")
    lo = max(0, start_ms - _DAY_MS)
    for key, raw in st.scan(b"sday/" + state.slot_key(lo).encode(), b"sday/" + _k(end_ms)):
        day_start = int(key[5:])
        if day_start + _DAY_MS > start_ms and not codec.decode_trusted(raw)["settled"]:
            raise reject(Reason.PRUNE_BLOCKED, f"schedule day {day_start} overlapping unsettled")


def _k(ms: int) -> bytes:
    return state.slot_key(ms).encode()


def _apply(ctx: Context, tx: Tx, body: PruneMeasurements) -> None:
    """Prune the next chunk: from the progress mark to the next UTC day boundary (or the end)."""
    st = ctx.state
    rec = st.get_value(state.k_period(body.period_id))
    progress = st.get_value(privacy.k_pruned(body.period_id)) or {
        "next_ms": rec["start_ms"],
        "records": 0,
    }
    lo = int(progress["next_ms"])
    day = privacy.day_of(lo)
    hi = min(day + privacy.DAY_MS, int(rec["end_ms"]))
    per_account: dict[str, list[privacy.Record]] = {}
    rows = list(st.scan(b"meas/" + _k(lo), b"meas/" + _k(hi)))  # materialised: deleted below
    for key, raw in rows:
        imp, exp, quality, owner = codec.decode_trusted(raw)
        record = privacy.Record(int(key[5:18]), key[19:].decode(), imp, exp, quality)
        per_account.setdefault(state.account_id(bytes(owner)), []).append(record)
        st.delete(key)
    for account, records in sorted(per_account.items()):
        imp = sum(r.import_wh for r in records)
        exp = sum(r.export_wh for r in records)
        root = privacy.member_root(records)
        st.put_value(
            privacy.k_day_root(body.period_id, day, account), [imp, exp, len(records), root]
        )
        tkey = privacy.k_period_total(body.period_id, account)
        t_imp, t_exp, t_n = st.get_value(tkey) or [0, 0, 0]
        st.put_value(tkey, [t_imp + imp, t_exp + exp, t_n + len(records)])
    done = hi >= rec["end_ms"]
    st.put_value(
        privacy.k_pruned(body.period_id),
        {
            "next_ms": hi,
            "records": int(progress["records"]) + len(rows),
            "done": done,
            "root": _period_root(st, body.period_id) if done else None,
            "height": ctx.height,
            "time_ms": ctx.time_ms,
        },
    )


def _period_root(st: state.Overlay, period_id: str) -> bytes:
    """Root over every day chunk's per-account entry of the period (read back from state)."""
    prefix = b"proot/" + period_id.encode() + b"/"
    entries = []
    for key, raw in st.scan(prefix, state.prefix_end(prefix)):
        day_s, _, account = key[len(prefix) :].decode().partition("/")
        _, _, n, root = codec.decode_trusted(raw)
        entries.append((int(day_s), account, bytes(root), int(n)))
    return privacy.period_root(entries)


register(TxKind("PruneMeasurements", _decode, _validate, _apply))
