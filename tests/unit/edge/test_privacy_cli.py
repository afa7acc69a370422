"""``lemctl privacy``: admission, member pseudonym, keep → prune → prove → verify against a real
LMDB ledger, and erasure (docs/spec/privacy.md §6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli.main import main
from ledger.app import App
from ledger.keys import SigningKey
from ledger.store import Store
from tests.unit.ledger.helpers import (
    ADMIN,
    CHAIN,
    N1,
    N2,
    SLOT,
    T0,
    Signer,
    commit,
    genesis,
    measure,
    period,
)

SERIAL_1, SERIAL_2 = "LGZ1030000123456", "ISK0099887766"
WINDOW_MS = SLOT


ERR: list[str] = []


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, dict[str, object]]:
    """Run ``lemctl privacy ...``; returns exit status and printed JSON (stderr in ERR[-1])."""
    code = main(["privacy", *map(str, argv)])
    captured = capsys.readouterr()
    ERR.append(captured.err)
    return code, (json.loads(captured.out) if captured.out.strip() else {})


@pytest.fixture
def admitted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """A store with two admitted members; their admission files."""
    store = tmp_path / "identity"
    assert run(capsys, "init", "--store", store, "--chain-id", CHAIN)[0] == 0
    out: dict[str, str] = {"store": str(store)}
    for name, serial, key in (("c-1", SERIAL_1, N1), ("c-2", SERIAL_2, N2)):
        path = tmp_path / f"{name}.json"
        code, doc = run(
            capsys, "admit", "--store", store, "--member", name, "--serial", serial,
            "--account", key.public_key.hex(), "--out", path,
        )  # fmt: skip
        assert code == 0
        assert serial not in json.dumps(doc)
        out[name] = str(doc["pseudonym"])
        out[f"{name}.file"] = str(path)
    return out


def test_member_checks_its_meter(
    admitted: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """With its admission file a member derives its own pseudonym (exit 0); another serial
    gives another pseudonym (exit 1)."""
    code, doc = run(capsys, "pseudonym", "--admission", admitted["c-1.file"], "--serial", SERIAL_1)
    assert (code, doc["pseudonym"], doc["admitted"]) == (0, admitted["c-1"], True)
    code, doc = run(capsys, "pseudonym", "--admission", admitted["c-1.file"], "--serial", SERIAL_2)
    assert code == 1
    assert doc["pseudonym"] != admitted["c-2"]


def test_admin_lookup_and_list(
    admitted: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The admin maps a pseudonym back to member, serial and account."""
    code, doc = run(capsys, "lookup", "--store", admitted["store"], "--pseudonym", admitted["c-2"])
    assert (code, doc["member"], doc["serial"]) == (0, "c-2", SERIAL_2)
    code, doc = run(capsys, "list", "--store", admitted["store"])
    assert [m["member"] for m in doc["meters"]] == ["c-1", "c-2"]  # type: ignore[attr-defined]


def test_reissued_admission_gives_the_same_pseudonym(
    admitted: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lost admission file written again lets the member derive the same pseudonym."""
    again = tmp_path / "again.json"
    args = ("reissue", "--store", admitted["store"], "--pseudonym", admitted["c-2"], "--out", again)
    assert run(capsys, *args)[0] == 0
    code, doc = run(capsys, "pseudonym", "--admission", again, "--serial", SERIAL_2)
    assert (code, doc["pseudonym"]) == (0, admitted["c-2"])
    assert run(capsys, *args)[0] == 2  # never overwrites an admission file


def _ledger(path: Path, p1: str, p2: str) -> App:
    """Pseudonymous chain: p measured in 2 slots, solved; period ended one slot later."""
    g = genesis(
        privacy="pseudonymous", dispute_window_ms=WINDOW_MS,
        meters={p1: N1.public_key, p2: N2.public_key},
    )  # fmt: skip
    app = App(Store(path, g, durable=False))
    admin, n1, n2 = Signer(ADMIN), Signer(N1), Signer(N2)
    commit(app, [admin("SetMarketParameters", period("p", T0, T0 + 2 * SLOT))], T0)
    for i in range(2):
        s = T0 + i * SLOT
        txs = [
            n1("SetMeasure", measure(p1, s, 300 + i, 0)),
            n2("SetMeasure", measure(p2, s, 0, 90)),
        ]
        commit(app, txs, s + SLOT)
    commit(app, [admin("SolveMarkets", {"period_id": "p"})], T0 + 2 * SLOT + 1)
    return app


def test_keep_prune_prove_verify(
    admitted: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A member exports its own rows before pruning; after PruneMeasurements it proves one of
    them against the committed root and the app hash (exit 0); a doctored value fails (exit 1)."""
    ledger_dir = tmp_path / "ledger"
    app = _ledger(ledger_dir, admitted["c-1"], admitted["c-2"])
    key_file = tmp_path / "n1.key"
    SigningKey(N1.seed()).save(key_file)
    app.store.close()
    kept = tmp_path / "kept.json"
    code, doc = run(
        capsys,
        "keep",
        "--ledger-dir",
        ledger_dir,
        "--key",
        key_file,
        "--period",
        "p",
        "--out",
        kept,
    )
    assert (code, doc.get("records"), ERR[-1]) == (0, 2, "")
    assert admitted["c-2"] not in kept.read_text()  # only its own rows
    app = App(Store(ledger_dir, durable=False))
    commit(app, [Signer(N2, app=app)("PruneMeasurements", {"period_id": "p"})], T0 + 4 * SLOT)
    app.store.close()
    code, proof = run(
        capsys, "prove", "--records", kept, "--slot", T0 + SLOT, "--meter", admitted["c-1"]
    )
    assert code == 0
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(proof))
    code, doc = run(capsys, "verify", "--proof", proof_file, "--ledger-dir", ledger_dir)
    assert code == 0
    assert doc["valid_against_app_hash"] is True
    proof["record"]["import_wh"] += 1  # type: ignore[index]
    proof_file.write_text(json.dumps(proof))
    code, doc = run(capsys, "verify", "--proof", proof_file, "--ledger-dir", ledger_dir)
    assert code == 1
    assert doc["record_in_member_root"] is False


def test_erase_waits_for_removal_from_the_ledger(
    admitted: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Erasure is refused while the member's pseudonym is an allowed meter; after RemoveMeter
    it erases, and lookup of the pseudonym fails from then on."""
    ledger_dir = tmp_path / "ledger"
    app = _ledger(ledger_dir, admitted["c-1"], admitted["c-2"])
    app.store.close()
    store = admitted["store"]
    code, _ = run(capsys, "erase", "--store", store, "--member", "c-1", "--ledger-dir", ledger_dir)
    assert code == 1
    assert "still allowed on the ledger" in ERR[-1]
    app = App(Store(ledger_dir, durable=False))
    remove = Signer(ADMIN, app=app)("RemoveMeter", {"meter_id": admitted["c-1"]})
    commit(app, [remove], T0 + 3 * SLOT)
    app.store.close()
    code, doc = run(
        capsys, "erase", "--store", store, "--member", "c-1", "--ledger-dir", ledger_dir
    )
    assert (code, doc["erased_pseudonyms"]) == (0, [admitted["c-1"]])
    assert run(capsys, "lookup", "--store", store, "--pseudonym", admitted["c-1"])[0] == 1
    assert run(capsys, "lookup", "--store", store, "--pseudonym", admitted["c-2"])[0] == 0
