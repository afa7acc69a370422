"""The demo's closing report: a settled period read from a node's ledger, audited offline.

Spec: docs/spec/testnet.md §Demo report. :func:`read_period` opens a node's ledger store
read-only with the admin's view (seed 000 Fig. 4: the admin reads every measurement and
balance) and collects the period's measurements, postings and balances. :func:`audit` writes
the same measurements as a ``lemctl settle`` document, runs ``lemctl settle --json`` in a
separate process (the auditor's tool, docs/spec/settlement.md) and compares every posting, the
admin and grid amounts and the energy sums with what the ledger booked: equal to the µECT, or
the differences are listed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from edge.testnet import Manifest
from ledger import state
from ledger.access import Queries
from ledger.store import Store
from market.decimals import format_uect


@dataclass(frozen=True)
class MemberLine:
    """One member's figures for the period."""

    name: str
    role: str
    account: str
    import_wh: int
    export_wh: int
    posting_uect: int | None
    balance_uect: int


@dataclass
class PeriodReport:
    """A period as the ledger holds it."""

    period_id: str
    start_ms: int
    end_ms: int
    params: dict[str, str]
    record: dict[str, Any]
    height: int
    block_hash: str
    app_hash: str
    members: list[MemberLine]
    community_uect: int
    grid_balance_uect: int
    slots: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)

    @property
    def measurements(self) -> int:
        return sum(len(m) for m in self.slots.values())


@dataclass(frozen=True)
class Audit:
    """Outcome of the offline recomputation."""

    ok: bool
    differences: list[str]
    offline: dict[str, Any]


def ledger_dir(manifest: Manifest, k: int = 0) -> Path:
    """Node ``k``'s ledger store (``<data_dir>/ledger``, edge/node_factory.py)."""
    return manifest.root / manifest.nodes[k].dir / "data" / "ledger"


def read_period(manifest: Manifest, period_id: str, k: int = 0) -> PeriodReport:
    """The period ``period_id`` from node ``k``'s store, seen by the admin key."""
    store = Store(ledger_dir(manifest, k), readonly=True)
    try:
        return _read(store, manifest, period_id)
    finally:
        store.close()


def _read(store: Store, manifest: Manifest, period_id: str) -> PeriodReport:
    q = Queries(store)
    admin = bytes.fromhex(manifest.admin_public_key)
    record = q.periods()[period_id]
    start, end = int(record["start_ms"]), int(record["end_ms"])
    owners = q.meter_accounts(admin)
    slots: dict[int, dict[str, tuple[int, int]]] = {}
    members = []
    for node in manifest.nodes:
        rows = q.measurements(admin, node.meter_id, start, end)
        for slot_ms, imp, exp, _quality in rows:
            slots.setdefault(slot_ms, {})[node.meter_id] = (imp, exp)
        account = owners[node.meter_id]
        members.append(
            MemberLine(
                name=node.meter_id,
                role=node.role,
                account=account,
                import_wh=sum(r[1] for r in rows),
                export_wh=sum(r[2] for r in rows),
                posting_uect=q.settlement(admin, period_id, account),
                balance_uect=q.balance(admin, account),
            )
        )
    status = q.status()
    return PeriodReport(
        period_id=period_id,
        start_ms=start,
        end_ms=end,
        params=dict(record["params"]),
        record=dict(record),
        height=status["height"],
        block_hash=status["block_hash"],
        app_hash=status["app_hash"],
        members=members,
        community_uect=q.balance(admin, state.COMMUNITY),
        grid_balance_uect=q.balance(admin, state.GRID),
        slots=dict(sorted(slots.items())),
    )


def settle_document(report: PeriodReport) -> dict[str, Any]:
    """The period's on-ledger measurements as a ``lemctl settle`` input document."""
    return {
        "source": f"on-ledger measurements of period {report.period_id} at height {report.height}",
        "params": report.params,
        "members": [m.name for m in report.members],
        "slots": [
            {
                "start": _iso(slot_ms),
                "measures": {
                    name: {"import_wh": imp, "export_wh": exp}
                    for name, (imp, exp) in sorted(measures.items())
                },
            }
            for slot_ms, measures in report.slots.items()
        ],
    }


def audit(report: PeriodReport, workdir: Path) -> Audit:
    """Recompute the period with ``lemctl settle --json`` and compare with the ledger."""
    doc_path = workdir / f"audit-{report.period_id}.json"
    doc_path.write_text(json.dumps(settle_document(report), indent=1) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "settle", str(doc_path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        return Audit(False, [f"lemctl settle failed ({done.returncode}): {done.stderr}"], {})
    totals = json.loads(done.stdout)["totals"]
    diffs = []
    for m in report.members:
        offline = totals["postings_uect"].get(m.name, 0)
        if m.posting_uect != offline:
            diffs.append(f"{m.name}: ledger {m.posting_uect} µECT, offline {offline} µECT")
    for key in ("admin_uect", "grid_uect", "e_c_wh", "e_p_wh"):
        if report.record.get(key) != totals[key]:
            diffs.append(f"{key}: ledger {report.record.get(key)}, offline {totals[key]}")
    if report.record.get("slots") not in (None, totals["slot_count"]):
        diffs.append(f"slots: ledger {report.record.get('slots')}, offline {totals['slot_count']}")
    return Audit(not diffs, diffs, totals)


def format_report(report: PeriodReport, result: Audit) -> str:
    """The closing text: members, community figures, agreement and audit lines."""
    t = result.offline
    lines = [
        f"period {report.period_id} ({_iso(report.start_ms)} .. {_iso(report.end_ms)}), "
        f"settled at height {report.record.get('solved_height', '?')}; "
        f"{report.measurements} measurements in {len(report.slots)} slots",
        f"prices [ECT/kWh]: {', '.join(f'{k} {v}' for k, v in sorted(report.params.items()))}",
        "",
        f"{'member':<9} {'role':<9} {'import kWh':>10} {'export kWh':>10} "
        f"{'posting ECT':>13} {'balance ECT':>13}",
    ]
    for m in report.members:
        posting = "-" if m.posting_uect is None else format_uect(m.posting_uect)
        lines.append(
            f"{m.name:<9} {m.role:<9} {_kwh(m.import_wh):>10} {_kwh(m.export_wh):>10} "
            f"{posting:>13} {format_uect(m.balance_uect):>13}"
        )
    e_c, e_p = sum(m.import_wh for m in report.members), sum(m.export_wh for m in report.members)
    total = (
        sum(m.balance_uect for m in report.members)
        + report.community_uect
        + report.grid_balance_uect
    )
    lines += [
        f"{'community':<19} {_kwh(e_c):>10} {_kwh(e_p):>10}",
        "",
        f"local exchange: {_kwh(t.get('e_local_wh', 0))} kWh; "
        f"self-consumption (local / consumption) {_pct(t.get('self_consumption'))}; "
        f"production used locally {_pct(t.get('production_used_locally'))}",
        f"admin surplus (community account): {format_uect(report.record.get('admin_uect', 0))} "
        f"ECT (balance {format_uect(report.community_uect)} ECT)",
        f"grid (DSO) settlement: {format_uect(report.record.get('grid_uect', 0))} ECT "
        "(> 0: the community pays the grid)",
        f"money conserved: members + community + grid = {total} µECT",
    ]
    if result.ok:
        lines.append(
            f"audit: OK (lemctl settle of the {report.measurements} on-ledger measurements gives "
            f"the same {len(report.members)} postings, admin and grid amounts to the µECT)"
        )
    else:
        lines.append("audit: MISMATCH")
        lines += [f"  {d}" for d in result.differences]
    return "\n".join(lines)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _kwh(wh: int) -> str:
    return f"{Decimal(wh) / 1000:.3f}"


def _pct(ratio: str | None) -> str:
    return "n/a" if ratio is None else f"{Decimal(ratio) * 100:.1f} %"
