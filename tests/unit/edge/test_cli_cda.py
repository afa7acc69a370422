"""``lemctl cda match``: the example of docs/spec/cda.md §7 and refusal of bad files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edge.cli.main import main

DOC = Path(__file__).resolve().parents[3] / "docs/spec/cda.md"


def doc_blocks() -> tuple[str, str]:
    """The JSON input and the printed table of the spec's §7 example."""
    text = DOC.read_text(encoding="utf-8").split("## 7.")[1]
    (example,) = re.findall(r"```json\n(.*?)```", text, re.S)
    (table,) = re.findall(r"```text\n(.*?)```", text, re.S)
    return example, table


def test_doc_example_prints_the_documented_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented command prints exactly the documented NCDA trades."""
    example, table = doc_blocks()
    path = tmp_path / "events.json"
    path.write_text(example, encoding="utf-8")
    assert main(["cda", "match", str(path)]) == 0
    assert capsys.readouterr().out == table


def test_json_output_has_exact_prices_and_amounts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json: mean prices as exact decimal strings, amounts in µECT, remainders listed."""
    path = tmp_path / "events.json"
    path.write_text(doc_blocks()[0], encoding="utf-8")
    assert main(["cda", "match", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(t["offer_id"], t["wh"], t["price"], t["amount_uect"]) for t in report["trades"]] == [
        ("o2", 600, "0.35", 210_000),
        ("o1", 400, "0.3", 120_000),
    ]
    assert report["unmatched"] == [{"shout_id": "o1", "remaining_wh": 600}]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{", "cannot read"),
        ('{"mechanism": "xcda", "events": []}', "mechanism"),
        ('{"mechanism": "ncda", "events": [{"place": {}}]}', "events[0].shout"),
        ('{"mechanism": "cda", "events": [{"boom": 1}]}', "events[0].boom"),
    ],
)
def test_bad_file_exits_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    """A malformed file is refused with status 2 and a message naming what was wrong."""
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    assert main(["cda", "match", str(path)]) == 2
    assert needle in capsys.readouterr().err
