"""``lemctl settle``: output schema, readable report, refusals (edge/cli/settle.py).

Golden figures: seed 000 Algorithm 1 (examples/algorithm1.json). The spec's example output
(docs/spec/settlement.md) is checked against the real command so the two cannot drift.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
ALG1 = ROOT / "examples" / "algorithm1.json"
DAY = ROOT / "examples" / "community_day.json"
SPEC = ROOT / "docs" / "spec" / "settlement.md"

ALG1_SLOT = {
    "start": "2026-11-01T00:00:00Z",
    "e_c_wh": 2500,
    "e_p_wh": 1400,
    "p_buy": "18.2",
    "p_sell": "9",
    "gdi": "-0.282051282",
    "postings_uect": {"N1": -45500000, "N2": 12600000},
    "admin_uect": 9800000,
    "grid_uect": 23100000,
}


def settle_json(path: Path | str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["settle", str(path), "--json"]) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def refusal(doc: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run settle on ``doc`` (written as JSON, or raw text if str) and return stderr."""
    path = tmp_path / "in.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    assert main(["settle", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def alg1_doc() -> dict[str, object]:
    doc: dict[str, object] = json.loads(ALG1.read_text())
    return doc


def test_algorithm_1_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints issue 2's schema with Algorithm 1's exact figures."""
    out = settle_json(ALG1, capsys)
    assert out["slots"] == [ALG1_SLOT]
    totals = out["totals"]
    assert isinstance(totals, dict)
    assert totals["postings_uect"] == {"N1": -45500000, "N2": 12600000}
    assert (totals["admin_uect"], totals["grid_uect"]) == (9800000, 23100000)
    assert totals["self_consumption"] == "0.56"
    assert totals["production_used_locally"] == "1"


def test_algorithm_1_table(capsys: pytest.CaptureFixture[str]) -> None:
    """The readable report shows the slot row and the members' amounts in ECT, aligned."""
    assert main(["settle", str(ALG1)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"2026-11-01T00:00:00Z +2\.500 +1\.400 +18\.2 +9 +-0\.2821 +23\.100000", text)
    assert re.search(r"^N1 +-45\.500000$", text, re.MULTILINE)
    assert re.search(r"^N2 +12\.600000$", text, re.MULTILINE)
    assert re.search(r"admin \(community\) receives +9\.800000 ECT", text)
    rows = [line for line in text.splitlines() if line.startswith(("N1", "N2"))]
    assert len({len(line) for line in rows}) == 1  # right-aligned amounts


def test_stdin_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """FILE '-' reads the document from standard input."""
    monkeypatch.setattr(sys, "stdin", open(ALG1, encoding="utf-8"))  # noqa: SIM115
    assert settle_json("-", capsys)["slots"] == [ALG1_SLOT]


def test_community_day_conserves_every_slot(capsys: pytest.CaptureFixture[str]) -> None:
    """The bundled day: 96 slots, 19 members, each slot and the day conserve money exactly."""
    out = settle_json(DAY, capsys)
    slots = out["slots"]
    assert isinstance(slots, list)
    assert len(slots) == 96
    for slot in slots:
        assert sum(slot["postings_uect"].values()) + slot["admin_uect"] + slot["grid_uect"] == 0
    totals = out["totals"]
    assert isinstance(totals, dict)
    assert len(totals["postings_uect"]) == 19
    assert sum(totals["postings_uect"].values()) + totals["admin_uect"] + totals["grid_uect"] == 0
    night, noon = slots[0], slots[44]
    assert night["p_sell"] is None
    assert night["p_buy"] == "0.27"
    assert noon["e_p_wh"] > 0
    assert noon["p_sell"] is not None


def test_community_day_is_reproducible(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/community_day.json is exactly what bench/make_community_day.py generates."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import make_community_day  # bench/ is a folder of scripts, not a package

    assert make_community_day.render() == DAY.read_text(encoding="utf-8")


def test_spec_example_matches_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON example in docs/spec/settlement.md is the command's real output."""
    block = re.search(r"<!-- settle-output -->\n```json\n(.*?)```", SPEC.read_text(), re.DOTALL)
    assert block is not None
    assert json.loads(block.group(1)) == settle_json(ALG1, capsys)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["slots"][0]["measures"]["N1"].update(import_wh=-5),
            "slot 0 (2026-11-01T00:00:00Z), member 'N1', field import_wh: must not be negative",
        ),
        (
            lambda d: d["slots"][0]["measures"]["N2"].update(export_wh=True),
            "member 'N2', field export_wh: must be an integer number of Wh (got True)",
        ),
        (
            lambda d: d["slots"][0]["measures"].update(X9={"import_wh": 1}),
            "slot 0 (2026-11-01T00:00:00Z), member 'X9', field member: not in the member list",
        ),
        (
            lambda d: d["slots"][0]["measures"]["N1"].update(import_kwh=2),
            "member 'N1', field import_kwh: unknown key",
        ),
        (
            lambda d: d["params"].update(p_buy_lem="22"),
            "field p_buy_lem: must be <= p_buy_bau (21)",
        ),
        (lambda d: d["params"].update(beta="1e-3"), "field beta: not a plain decimal"),
        (
            lambda d: d["slots"][0].update(start="2026-11-01T00:07:00Z"),
            "slot 0 (2026-11-01T00:07:00Z), field start: must be on a 15-minute boundary",
        ),
        (
            lambda d: d["slots"][0].update(start="2026-11-01T00:00:00+01:00"),
            "field start: must be UTC",
        ),
        (
            lambda d: d["slots"].append(d["slots"][0]),
            "slot 1 (2026-11-01T00:00:00Z), field start: slots must be in order, without repeats",
        ),
        (lambda d: d.update(extra=1), "document: unknown key 'extra'"),
    ],
)
def test_refusals_name_slot_member_and_field(
    mutate: object, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused input exits 2 with a stderr line naming the slot (index, start), member, field."""
    doc = alg1_doc()
    mutate(doc)  # type: ignore[operator]
    assert expected in refusal(doc, tmp_path, capsys)


def test_json_floats_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON float energy or price is refused and quoted as written."""
    text = ALG1.read_text().replace('"import_wh": 2500', '"import_wh": 2500.0')
    assert "field import_wh: must be an integer number of Wh (got 2500.0" in refusal(
        text, tmp_path, capsys
    )
    text = ALG1.read_text().replace('"p_sell_bau": "6"', '"p_sell_bau": 6.5')
    assert "field p_sell_bau: must be a decimal string" in refusal(text, tmp_path, capsys)


def test_unreadable_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Missing files and broken JSON exit 2 with a message, never a traceback."""
    assert "not JSON" in refusal("{", tmp_path, capsys)
    assert main(["settle", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_installed_console_script() -> None:
    """The installed `lemctl` entry point settles the example in a real subprocess."""
    lemctl = Path(sys.executable).with_name("lemctl")
    assert lemctl.exists(), "install the project (pip install -e .) to get the console script"
    done = subprocess.run(
        [str(lemctl), "settle", str(ALG1), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["slots"] == [ALG1_SLOT]
