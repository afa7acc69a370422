"""``lemctl window clear`` and ``lemctl schedule settle``: the offline auditor commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main as lemctl_main
from edge.cli import schedule, window

ROOT = Path(__file__).resolve().parents[3]
WINDOW_EXAMPLE = ROOT / "examples" / "window_example.json"
SCHEDULE_EXAMPLE = ROOT / "examples" / "schedule_day.json"


def run(argv: list[str]) -> int:
    """Parse and run like lemctl does, with only this helper's command groups registered."""
    parser = argparse.ArgumentParser(prog="lemctl")
    subparsers = parser.add_subparsers(dest="command", required=True)
    window.register(subparsers)
    schedule.register(subparsers)
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(doc))
    return path


def test_both_groups_are_registered_in_lemctl() -> None:
    """lemctl's dispatcher lists the window and schedule command modules."""
    assert "edge.cli.window" in lemctl_main.COMMAND_MODULES
    assert "edge.cli.schedule" in lemctl_main.COMMAND_MODULES


def test_example_clears_as_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    """The seed 001 example prints price 20, 14000 Wh, Table 3's trades and B's rejection."""
    assert run(["window", "clear", str(WINDOW_EXAMPLE), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["price"] == "20"
    assert out["quantity_wh"] == 14_000
    assert out["trades"] == [
        {"buyer": "A", "seller": "1", "wh": 7_000, "amount_uect": 140_000_000},
        {"buyer": "B", "seller": "1", "wh": 3_000, "amount_uect": 60_000_000},
        {"buyer": "B", "seller": "2", "wh": 4_000, "amount_uect": 80_000_000},
    ]
    assert [(o["status"], o["reason"]) for o in out["outcomes"]] == [
        ("ACCEPTED", None),
        ("ACCEPTED", None),
        ("REJECTED", "insufficient_balance"),
    ]
    assert out["postings_uect"] == {"1": 200_000_000, "A": -140_000_000, "B": -60_000_000}


def test_issue_schema_without_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plain schema of the issue prints exactly price, quantity_wh and trades."""
    doc = {
        "buys": [{"id": "A", "wh": 7000, "price": "25"}],
        "sells": [{"id": "1", "wh": 10000, "price": "18.5"}],
    }
    assert run(["window", "clear", str(write(tmp_path, doc)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "price": "18.5",
        "quantity_wh": 7000,
        "trades": [{"buyer": "A", "seller": "1", "wh": 7000, "amount_uect": 129_500_000}],
    }


def test_no_match_prints_null_price(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bids below every ask give price null and no trades."""
    doc = {
        "buys": [{"id": "A", "wh": 1, "price": "1"}],
        "sells": [{"id": "1", "wh": 1, "price": "2"}],
    }
    assert run(["window", "clear", str(write(tmp_path, doc)), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"price": None, "quantity_wh": 0, "trades": []}


def test_text_output_is_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json the price line and one line per trade with its outcome are printed."""
    assert run(["window", "clear", str(WINDOW_EXAMPLE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "clearing price 20 ECT/kWh, quantity 14000 Wh"
    assert lines[-1].split() == ["B", "2", "4000", "80000000", "REJECTED", "(insufficient_balance)"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"buys": [{"id": "A", "wh": 0, "price": "25"}]}, "buys[0]: request refused: non_positive"),
        (
            {"sells": [{"id": "1", "wh": 5, "price": "-1"}]},
            "sells[0]: request refused: non_positive",
        ),
        ({"buys": [{"id": "A", "wh": 5, "price": 25}]}, "buys[0].price"),
        ({"buys": [{"id": "A", "wh": 5.5, "price": "25"}]}, "buys[0].wh"),
        ({"buys": [{"id": "A", "wh": 5, "price": "1e3"}]}, "buys[0].price"),
        (
            {
                "buys": [{"id": "A", "wh": 5, "price": "2"}],
                "sells": [{"id": "A", "wh": 5, "price": "1"}],
            },
            "sells[0]: request refused: duplicate_member",
        ),
        ({"buy": []}, "unknown keys"),
        ([], "must be a JSON object"),
        ({"buys": [], "validation": {"tolerance": "1"}}, "validation.tolerance"),
    ],
)
def test_bad_input_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: Any, message: str
) -> None:
    """Invalid requests exit 2 with a message naming the field and the refusal."""
    assert run(["window", "clear", str(write(tmp_path, doc))]) == window.EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing or non-JSON file is reported, not a traceback."""
    assert run(["window", "clear", str(tmp_path / "nope.json")]) == 2
    (tmp_path / "bad.json").write_text("{")
    assert run(["schedule", "settle", str(tmp_path / "bad.json")]) == 2
    assert capsys.readouterr().err.count("cannot read") == 2


# ----------------------------------------------------------------------------- schedule settle


def test_schedule_example_conserves_money(capsys: pytest.CaptureFixture[str]) -> None:
    """The bundled day settles with every member posted and the postings summing to 0."""
    assert run(["schedule", "settle", str(SCHEDULE_EXAMPLE), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ids = [m["id"] for m in out["members"]]
    assert ids == ["house-1", "pv-1", "prosumer-1", "ev-1", "house-2"]
    assert out["sum_uect"] == 0
    assert sum(out["postings_uect"].values()) == 0
    ev = out["members"][3]
    # The EV charged one slot late: 2750 Wh short at 0.30 and 2750 Wh long at 0.10.
    assert (ev["short_wh"], ev["long_wh"], ev["imbalance_uect"]) == (2750, 2750, 550_000)
    house2 = out["members"][4]
    assert house2["forward_uect"] == 0
    assert house2["imbalance_uect"] == house2["metered_wh"] * 300


def test_schedule_two_slot_day(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-computed two-slot day prints the figures of the worked unit test."""
    doc = {
        "slots": 2,
        "prices": {
            "forward": "0.20",
            "imbalance_short": "0.30",
            "imbalance_long": "0.10",
            "grid_buy": "0.25",
            "grid_sell": "0.08",
        },
        "supervisor": "sup",
        "grid": "grid",
        "members": [
            {
                "id": "house",
                "asset": {"kind": "load", "import_capacity_w": 8000},
                "schedule_wh": [500, 500],
                "import_wh": [600, 300],
                "export_wh": [0, 0],
            },
            {
                "id": "pv",
                "asset": {"kind": "generation", "export_capacity_w": 4000},
                "schedule_wh": [-1000, -1000],
                "import_wh": [0, 0],
                "export_wh": [900, 1200],
            },
        ],
    }
    assert run(["schedule", "settle", str(write(tmp_path, doc)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["postings_uect"] == {
        "grid": -96_000,
        "house": -210_000,
        "pv": 390_000,
        "sup": -84_000,
    }
    assert out["grid"] == {"id": "grid", "import_wh": 0, "export_wh": 1200, "posting_uect": -96_000}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"members": [{"schedule_wh": [-5]}]}, "production_not_allowed"),
        ({"members": [{"asset": {"kind": "nuclear"}}]}, "members[0].asset.kind"),
        ({"members": [{"import_wh": [1, 2]}]}, "members[0].import_wh"),
        ({"members": [{"export_wh": [True]}]}, "members[0].export_wh[0]"),
        ({"prices": {"forward": "x"}}, "prices.forward"),
        ({"grid": "h"}, "supervisor/grid"),
        ({"slots": 0}, "slots"),
    ],
)
def test_schedule_bad_input_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], patch: dict[str, Any], message: str
) -> None:
    """A refused schedule or a malformed field exits 2 and names it."""
    member = {
        "id": "h",
        "asset": {"kind": "load", "import_capacity_w": 8000},
        "schedule_wh": [100],
        "import_wh": [100],
        "export_wh": [0],
    }
    prices = dict.fromkeys(("forward", "imbalance_short", "imbalance_long"), "0.1")
    doc: dict[str, Any] = {
        "slots": 1,
        "prices": {**prices, "grid_buy": "0.2", "grid_sell": "0.05"},
        "supervisor": "sup",
        "grid": "grid",
        "members": [member],
    }
    for key, value in patch.items():
        if key == "members":
            doc["members"] = [{**member, **value[0]}]
        elif key == "prices":
            doc["prices"] = {**doc["prices"], **value}
        else:
            doc[key] = value
    assert run(["schedule", "settle", str(write(tmp_path, doc))]) == schedule.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_schedule_help_documents_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """--help shows the FILE schema with every input key."""
    with pytest.raises(SystemExit):
        run(["schedule", "settle", "--help"])
    text = capsys.readouterr().out
    for key in ("imbalance_short", "imbalance_long", "schedule_wh", "import_wh", "asset", "slots"):
        assert key in text


def test_readme_commands_run_through_lemctl(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's window/schedule commands run via the real dispatcher and print valid JSON."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [
        line.split()[1:]
        for line in readme.splitlines()
        if line.startswith(("lemctl window ", "lemctl schedule "))
    ]
    assert len(commands) == 2
    for argv in commands:
        resolved = [str(ROOT / a) if a.startswith("examples/") else a for a in argv]
        assert lemctl_main.main(resolved) == 0
        assert isinstance(json.loads(capsys.readouterr().out), dict)
