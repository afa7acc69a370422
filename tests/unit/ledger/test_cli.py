"""`lemctl ledger show|verify` on a stopped node's store, and verify catching tampering."""

from __future__ import annotations

import json
from pathlib import Path

import lmdb
import pytest

from edge.cli.main import main
from tests.unit.ledger.helpers import ADMIN, N1, T0, Signer, commit, open_app


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    app = open_app(tmp_path, durable=True)
    admin = Signer(ADMIN)
    for i in range(3):
        commit(app, [admin("AddMeter", {"meter_id": f"M{i}", "account": N1.public_key})], T0 + i)
    app.store.close()
    return tmp_path


def test_show_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """show --json prints height, hash, app hash, time and tx count of the tip or a height."""
    assert main(["ledger", "show", "--data-dir", str(data_dir), "--json"]) == 0
    tip = json.loads(capsys.readouterr().out)
    assert (tip["height"], tip["n_txs"], tip["time_ms"]) == (3, 1, T0 + 2)
    assert len(bytes.fromhex(tip["app_hash"])) == 32
    assert main(["ledger", "show", "--data-dir", str(data_dir), "--height", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_txs"] == 0
    assert main(["ledger", "show", "--data-dir", str(data_dir), "--height", "9"]) == 2
    assert main(["ledger", "show", "--data-dir", str(data_dir / "none")]) == 2


def test_verify_ok(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verify replays the chain and reports success."""
    assert main(["ledger", "verify", "--data-dir", str(data_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True,
        "height": 3,
        "verified_height": 3,
        "problems": [],
    }


def _poke(path: Path, db: str, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True, db=env.open_db(db.encode())) as txn:
        txn.put(key, value)
    env.close()


def test_verify_detects_wrong_app_hash(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stored app hash that replay does not reproduce fails verification at that height."""
    _poke(data_dir, "apphash", (2).to_bytes(8, "big"), b"\x00" * 32)
    assert main(["ledger", "verify", "--data-dir", str(data_dir)]) == 1
    assert "height 2: replayed app hash differs" in capsys.readouterr().out


def test_verify_detects_edited_block(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A block edited on disk (a tx replaced) fails verification at that height."""
    env = lmdb.open(str(data_dir), max_dbs=16)
    with env.begin(write=True, db=env.open_db(b"blocks")) as txn:
        raw = bytes(txn.get((1).to_bytes(8, "big")))
        txn.put((1).to_bytes(8, "big"), raw.replace(b"M0", b"M9"))
    env.close()
    assert main(["ledger", "verify", "--data-dir", str(data_dir)]) == 1
    assert "height 1:" in capsys.readouterr().out


def test_readme_commands_run(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's `lemctl ledger` lines run as written (data dir swapped for a real store)."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    lines = [
        ln.split("#")[0].split() for ln in readme.splitlines() if ln.startswith("lemctl ledger ")
    ]
    assert [ln[2] for ln in lines] == ["show", "show", "verify", "compact"]
    for argv in lines:
        args = [str(data_dir) if a == "/var/lib/lemd/ledger" else a for a in argv[1:]]
        args = ["1" if a == "1200" else a for a in args]
        assert main(args) == 0, args
    assert "ok: 3 blocks verified" in capsys.readouterr().out
