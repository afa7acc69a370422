"""The join task of a light node (edge/light_join.py) over a scripted proven reader: the phases
come from proven own rows, the records wait while joining, a late refusal is shown, and a
measuring node stops proving every header. The real light node over mosquitto is in
tests/integration/test_join_light.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge.join import Joiner, JoinState
from edge.join_seal import JoinSealError, open_request
from edge.light_join import MEASURING_RECHECK_S, ProvenJoinLedger
from ledger import codec, state
from ledger.apps import join as join_app
from ledger.light_reader import Proven, ReadTimeout
from ledger.state import K_ADMINS
from tests.unit.ledger.helpers import key

NEW = key(40)
ME = NEW.public_key


class ScriptedReader:
    """Answers proven reads from ``values`` (absent otherwise); counts the rounds."""

    def __init__(self) -> None:
        self.values: dict[bytes, Any] = {}
        self.rounds: list[list[bytes]] = []
        self.down = False

    async def read(self, keys: list[bytes], wait_s: float | None = None) -> dict[bytes, Proven]:
        self.rounds.append(keys)
        if self.down:
            raise ReadTimeout("no validator answered the proof request in time")
        out = {}
        for k in keys:
            v = self.values.get(k)
            status = "absent" if v is None else "ok"
            value = None if v is None else codec.encode(v)
            out[k] = Proven(k, status, value, "", 5, 6 if value else 0, 6)
        return out


def _setup(tmp_path: Path) -> tuple[ScriptedReader, Any, list[Any], Joiner, list[str]]:
    reader = ScriptedReader()
    node = SimpleNamespace(
        light=SimpleNamespace(height=6, latest=SimpleNamespace(time_ms=0)), peers={"v0": 1.0}
    )
    refusal = [""]
    clock = [0.0]
    ledger = ProvenJoinLedger(
        reader,  # type: ignore[arg-type]
        node,  # type: ignore[arg-type]
        ME,
        [key(1).public_key],
        monotonic=lambda: clock[0],
        refusal=lambda: refusal[0],
    )
    sent: list[Any] = []

    def submit(kind: str, body: Any, ref: str = "") -> bytes:
        sent.append((kind, body))
        return b""

    joiner = Joiner(
        tmp_path, ledger, ME, submit, meter_id="M7", identification="ISK5", settle_ticks=1,
        repeat_s=1e9, monotonic=lambda: clock[0],
    )  # fmt: skip
    joiner.clock = clock  # type: ignore[attr-defined]
    return reader, node, sent, joiner, refusal


async def _tick(joiner: Joiner) -> None:
    await joiner.ledger.refresh(joiner.meter_id, joiner.state.phase == "measuring")
    joiner.step()


async def test_phases_come_from_proven_own_rows(tmp_path: Path) -> None:
    """syncing (the verified tip stands still) → one JoinRequest → waiting_for_approval from
    the proven join/req row → measuring from the proven own/<key>/<meter> row; each check
    proves exactly the node's own join/req, join/member and own/ keys."""
    reader, _, sent, joiner, _ = _setup(tmp_path)
    for _ in range(3):
        await _tick(joiner)
    assert sent == [("JoinRequest", {"meter_id": "M7", "identification": "ISK5", "name": ""})]
    assert joiner.state.phase == "syncing"
    own = state.k_owned(ME, "M7")
    assert reader.rounds[0] == [join_app.k_request(ME), join_app.k_member(ME), own]
    reader.values[join_app.k_request(ME)] = {"meter_id": "M7", "height": 7, "approvals": []}
    await _tick(joiner)
    assert joiner.state.phase == "waiting_for_approval"
    assert joiner.state.request_height == 7
    reader.values[own] = True
    await _tick(joiner)
    assert joiner.state.phase == "measuring"


async def test_a_refusal_learnt_late_is_shown_and_a_dead_link_keeps_the_last_values(
    tmp_path: Path,
) -> None:
    """A JoinRequest the light submitter set aside shows as an error in phase syncing; with
    no validator answering, the last proven values stay (no phase flapping)."""
    reader, _, _, joiner, refusal = _setup(tmp_path)
    for _ in range(3):
        await _tick(joiner)
    refusal[0] = "not committed: the validators refuse it"
    await _tick(joiner)
    assert joiner.state.phase == "syncing"
    assert joiner.state.error == "join request refused: not committed: the validators refuse it"
    reader.values[join_app.k_request(ME)] = {"meter_id": "M7", "height": 7, "approvals": []}
    await _tick(joiner)
    assert joiner.state.phase == "waiting_for_approval"
    reader.down = True
    await _tick(joiner)
    assert joiner.state.phase == "waiting_for_approval"
    assert "no validator answered" in joiner.ledger.error  # type: ignore[attr-defined]


async def test_a_measuring_node_proves_its_ownership_only_hourly(tmp_path: Path) -> None:
    """Once measuring, a check proves nothing until MEASURING_RECHECK_S has passed (each
    round costs bytes on the member's metered link)."""
    reader, _, _, joiner, _ = _setup(tmp_path)
    reader.values[state.k_owned(ME, "M7")] = True
    await _tick(joiner)
    assert joiner.state.phase == "measuring"
    rounds = len(reader.rounds)
    for _ in range(5):
        await _tick(joiner)
    assert len(reader.rounds) == rounds
    joiner.clock[0] += MEASURING_RECHECK_S  # type: ignore[attr-defined]
    await _tick(joiner)
    assert len(reader.rounds) == rounds + 1


async def test_a_restarted_member_stays_measuring_until_its_first_proof_round(
    tmp_path: Path,
) -> None:
    """A node restarted in phase measuring keeps it (its records flow) while no validator
    has answered yet, and sends no JoinRequest from values it does not know; the first
    answered round confirms it."""
    JoinState(phase="measuring", meter_id="M7").save(tmp_path)
    reader, node, sent, joiner, _ = _setup(tmp_path)
    reader.down = True
    for _ in range(4):
        await _tick(joiner)
    node.peers.clear()
    joiner.step()
    assert joiner.state.phase == "measuring"
    assert sent == []
    reader.down = False
    reader.values[state.k_owned(ME, "M7")] = True
    node.peers["v0"] = 1.0
    await _tick(joiner)
    assert joiner.state.phase == "measuring"
    assert joiner.ledger.ready()


async def test_a_sealed_request_goes_to_the_proven_current_admin(tmp_path: Path) -> None:
    """After governance replaced the genesis admin, the proven cfg/admins names the sealing
    target: the new admin opens the request, the genesis admin cannot; once the request is on
    the ledger, and once measuring, the proof rounds no longer include the admin list."""
    reader, node, sent, _, _ = _setup(tmp_path)
    genesis_admin, new_admin = key(1), key(2)
    reader.values[K_ADMINS] = [new_admin.public_key]
    clock = [0.0]
    ledger = ProvenJoinLedger(
        reader,  # type: ignore[arg-type]
        node,  # type: ignore[arg-type]
        ME,
        [genesis_admin.public_key],
        monotonic=lambda: clock[0],
        seal_to_admins=True,
    )
    assert ledger.admins() == [genesis_admin.public_key]  # before any proof round

    def submit(kind: str, body: Any, ref: str = "") -> bytes:
        sent.append((kind, body))
        return b""

    JoinState(phase="joining", serial="ISK0001", identification="sim").save(tmp_path)
    joiner = Joiner(
        tmp_path, ledger, ME, submit, meter_id="", identification="sim", name="n40",
        sealed=True, key=NEW, serial="ISK0001", chain_id="lem-test", settle_ticks=1,
        repeat_s=1e9, monotonic=lambda: clock[0],
    )  # fmt: skip
    for _ in range(3):
        await _tick(joiner)
    assert ledger.admins() == [new_admin.public_key]
    ((kind, body),) = sent
    assert kind == "JoinRequest"
    assert open_request(new_admin, body["sealed"], "lem-test", ME).serial == "ISK0001"
    with pytest.raises(JoinSealError):
        open_request(genesis_admin, body["sealed"], "lem-test", ME)
    reader.values[join_app.k_request(ME)] = {"meter_id": "", "height": 7, "approvals": []}
    await _tick(joiner)  # the request is on the ledger: the admin list is not read again
    reader.rounds.clear()
    await _tick(joiner)
    assert all(K_ADMINS not in keys for keys in reader.rounds)
    assert ledger.admins() == [new_admin.public_key]  # kept for a resubmission
    reader.rounds.clear()
    clock[0] += MEASURING_RECHECK_S + 1
    await ledger.refresh("M7", measuring=True)
    assert reader.rounds == [
        [join_app.k_request(ME), join_app.k_member(ME), state.k_owned(ME, "M7")]
    ]
