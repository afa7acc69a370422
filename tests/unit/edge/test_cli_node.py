"""lemctl node commands without a running node: exit 3, key fallback, tables, status screen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli.main import main
from edge.cli.node import render_status, table
from tests.support.lemd import make_node


def test_status_of_a_stopped_node_says_so_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No lemd on the API address: a clear message and exit status 3 (every node command)."""
    node = make_node(tmp_path / "n1")
    for command in (["status"], ["outbox"], ["balance"], ["market", "show", "--period", "p0"]):
        assert main(["--config", str(node.config), *command]) == 3
        assert "lemd is not running" in capsys.readouterr().err


def test_keys_show_reads_the_public_key_from_the_key_file_when_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keys show prints the public key (never the seed), also with the node stopped."""
    node = make_node(tmp_path / "n1")
    assert main(["--config", str(node.config), "keys", "show", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["public_key"] == node.key.public_key.hex()
    assert node.key.seed().hex() not in out


def test_bad_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that does not load is a usage error naming the file."""
    path = tmp_path / "nope.toml"
    assert main(["--config", str(path), "status"]) == 2
    assert str(path) in capsys.readouterr().err


def test_table_aligns_columns_and_right_aligns_numbers() -> None:
    """Headers, a rule, text left and numbers right."""
    text = table([("a", 5), ("bbb", 123)], ("name", "wh"))
    assert text.splitlines() == ["name   wh", "----  ---", "a       5", "bbb   123"]
    assert table([("k", "v")]) == "k  v"


def test_status_screen_shows_the_essentials() -> None:
    """The human status screen names height, meter, outbox and memory (from a status doc)."""
    doc = {
        "node": "house-07",
        "chain_id": "lic",
        "role": {"access": "prosumer", "consensus": "member", "mode": "bft"},
        "height": 42,
        "hash": "ab" * 32,
        "app_hash": "cd" * 32,
        "block_time_ms": 1_750_464_000_000,
        "peers": 3,
        "mempool": {"txs": 1, "bytes": 300},
        "meter": {
            "meter_id": "lic-h03",
            "state": "ok",
            "error": "",
            "import_wh": 7,
            "export_wh": 1,
        },
        "outbox": {"depth": 2, "oldest_age_s": 30, "rejected": 0},
        "submitter": {"inflight": 1},
        "resources": {"cpu_s": 1.5, "rss_bytes": 2**25, "uss_bytes": 2**24, "disk_free_bytes": 0},
        "health": {"stale": ["ledger"]},
        "uptime_s": 60,
        "mqtt": {"connected": 1, "broker": "mqtt://b:1883"},
    }
    screen = render_status(doc)
    for expected in ("height", "42", "lic-h03 ok", "2 waiting", "USS 16.0 MiB", "NOT HEALTHY"):
        assert expected in screen
