"""The demo's audit recomputes a period with lemctl settle and names every difference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edge.demo_report import MemberLine, PeriodReport, audit, format_report, settle_document

SLOT_MS = 1_793_491_200_000  # 2026-11-01T00:00Z


def algorithm1() -> PeriodReport:
    """Seed 000 Algorithm 1 as a ledger would book it: N1 -45.5, N2 +12.6, admin 9.8, grid 23.1."""
    members = [
        MemberLine("N1", "validator", "aa", 2500, 0, -45_500_000, -45_500_000),
        MemberLine("N2", "member", "bb", 0, 1400, 12_600_000, 12_600_000),
    ]
    record = {
        "solved": True,
        "solved_height": 7,
        "slots": 1,
        "e_c_wh": 2500,
        "e_p_wh": 1400,
        "admin_uect": 9_800_000,
        "grid_uect": 23_100_000,
    }
    params = {"p_buy_bau": "21", "p_sell_bau": "6", "p_buy_lem": "16", "p_sell_lem": "9"}
    return PeriodReport(
        "p1", SLOT_MS, SLOT_MS + 900_000, params | {"beta": "0"}, record, 8, "h", "a",
        members, 9_800_000, 23_100_000, {SLOT_MS: {"N1": (2500, 0), "N2": (0, 1400)}},
    )  # fmt: skip


def test_matching_ledger_passes_the_audit(tmp_path: Path) -> None:
    """The paper's worked example booked exactly: audit OK, report shows the figures."""
    report = algorithm1()
    assert settle_document(report)["slots"][0]["start"] == "2026-11-01T00:00Z"
    result = audit(report, tmp_path)
    assert result.ok, result.differences
    assert result.offline["self_consumption"] == "0.56"
    text = format_report(report, result)
    assert "audit: OK" in text
    assert "-45.500000" in text
    assert "admin surplus (community account): 9.800000 ECT" in text
    assert "self-consumption (local / consumption) 56.0 %" in text
    assert "money conserved: members + community + grid = 0 µECT" in text


def test_a_wrong_posting_or_admin_amount_is_named(tmp_path: Path) -> None:
    """One µECT off for N2 and for the admin: the audit fails and lists both."""
    report = algorithm1()
    report.members[1] = dataclasses.replace(report.members[1], posting_uect=12_600_001)
    report.record["admin_uect"] = 9_799_999
    result = audit(report, tmp_path)
    assert not result.ok
    assert result.differences == [
        "N2: ledger 12600001 µECT, offline 12600000 µECT",
        "admin_uect: ledger 9799999, offline 9800000",
    ]
    assert "audit: MISMATCH" in format_report(report, result)
