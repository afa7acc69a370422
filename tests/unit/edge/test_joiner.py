"""The join task's phases (edge/join.py Joiner) against a real App whose blocks the test commits.

The node here is the smallest view the Joiner reads (the App and a peer count); the full daemon
path on a real broker is in tests/integration/test_join.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from edge.join import Joiner, JoinState
from ledger import tx as txm
from ledger.app import App
from ledger.errors import Reason, TxRejected
from ledger.store import Store
from tests.unit.ledger.helpers import ADMIN, T0, Signer, commit, genesis, key, vote_verifier

NEW = key(40)


class ViewNode:
    """The App plus a settable peer count (what Joiner reads of a running node)."""

    mode = "bft"

    def __init__(self, app: App) -> None:
        self.app = app
        self.peer_count = 0

    def peers(self) -> int:
        return self.peer_count


class Outbox:
    """Collects the Joiner's signed txs with the node key and gap-free sequences."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.raws: list[bytes] = []

    def __call__(self, kind: str, body: Any, ref: str = "") -> bytes:
        seq = self.app.sequence(NEW.public_key) + len(self.raws)
        raw = txm.make(NEW, self.app.chain_id, seq, kind, body)
        self.raws.append(raw)
        return txm.decode(raw).hash

    def commit(self, time_ms: int) -> None:
        raws, self.raws = self.raws, []
        commit(self.app, raws, time_ms)


def _setup(tmp_path: Path, **overrides: object) -> tuple[App, ViewNode, Outbox, Joiner]:
    app = App(Store(tmp_path / "ledger", genesis(**overrides), durable=False), vote_verifier)
    node, outbox = ViewNode(app), Outbox(app)
    registry = CollectorRegistry()
    joiner = Joiner(
        tmp_path, node, NEW.public_key, outbox, meter_id="M7", identification="ISK5",
        registry=registry, settle_ticks=2, repeat_s=1e9,
    )  # fmt: skip
    joiner.registry = registry  # type: ignore[attr-defined]
    return app, node, outbox, joiner


def _phase_metric(joiner: Joiner, phase: str) -> float | None:
    value: float | None = joiner.registry.get_sample_value(  # type: ignore[attr-defined]
        "lem_join_phase", {"phase": phase}
    )
    return value


def test_phases_from_connect_to_measuring(tmp_path: Path) -> None:
    """joining (no peer) → syncing → one JoinRequest → waiting_for_approval → measuring."""
    app, node, outbox, joiner = _setup(tmp_path)
    joiner.step()
    assert joiner.state.phase == "joining"
    assert "no peer heard yet" in joiner.state.detail
    node.peer_count = 1
    joiner.step()
    assert joiner.state.phase == "syncing"
    for _ in range(3):  # height unchanged for settle_ticks: synced, the request goes out once
        joiner.step()
    assert len(outbox.raws) == 1
    assert txm.decode(outbox.raws[0]).kind == "JoinRequest"
    outbox.commit(T0)
    joiner.step()
    assert joiner.state.phase == "waiting_for_approval"
    assert "meter id M7 not certified" in joiner.state.detail
    assert _phase_metric(joiner, "waiting_for_approval") == 1
    commit(app, [Signer(ADMIN, app=app)("ApproveMember", {"account": NEW.public_key})], T0 + 1)
    joiner.step()
    assert joiner.state.phase == "measuring"
    assert joiner.state.admitted_height == app.height
    assert _phase_metric(joiner, "measuring") == 1
    assert _phase_metric(joiner, "waiting_for_approval") == 0
    saved = JoinState.load(tmp_path)
    assert saved.phase == "measuring"
    assert [p for p, _ in saved.history] == [
        "syncing",
        "waiting_for_approval",
        "measuring",
    ]


def test_certified_meter_goes_straight_to_measuring(tmp_path: Path) -> None:
    """With the meter id certified in genesis the committed request admits: no waiting phase."""
    _, node, outbox, joiner = _setup(tmp_path, certified_meters=("M7",))
    node.peer_count = 1
    for _ in range(4):
        joiner.step()
    outbox.commit(T0)
    joiner.step()
    assert joiner.state.phase == "measuring"
    assert "waiting_for_approval" not in [p for p, _ in joiner.state.history]


def test_refused_request_shows_a_clear_error(tmp_path: Path) -> None:
    """A meter that belongs to someone else: the error says the meter id is already taken."""
    app, node, _, _ = _setup(tmp_path, meters={"M7": ADMIN.public_key})

    def refuse(kind: str, body: Any, ref: str = "") -> bytes:
        raise TxRejected(Reason.METER_EXISTS, "meter 'M7' already belongs to a member")

    joiner = Joiner(tmp_path, node, NEW.public_key, refuse, meter_id="M7", settle_ticks=1)
    node.peer_count = 1
    for _ in range(3):
        joiner.step()
    assert joiner.state.error == "meter id already taken: meter 'M7' already belongs to a member"
    assert app.height == 0


def test_restart_while_waiting_does_not_resubmit_at_once(tmp_path: Path) -> None:
    """A node restarted while its request waits finds it on the ledger and does not send again."""
    _, node, outbox, joiner = _setup(tmp_path)
    node.peer_count = 1
    for _ in range(4):
        joiner.step()
    outbox.commit(T0)
    again = Joiner(tmp_path, node, NEW.public_key, outbox, meter_id="M7", repeat_s=1e9)
    again.step()
    assert again.state.phase == "waiting_for_approval"
    assert outbox.raws == []
