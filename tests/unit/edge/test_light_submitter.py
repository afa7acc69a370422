"""edge/light_submitter.py with a scripted light node (the real one runs in
tests/integration/test_member_light_lemd.py): acknowledgement only by proof, re-send, re-sign
with a freshly proven sequence, records set aside, never lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.health import Health
from edge.light_submitter import LightSubmitter
from edge.outbox import Outbox, OutboxRecord
from ledger import codec, state
from ledger import tx as txm
from ledger.keys import SigningKey
from ledger.proofs import Answer, ProofError, ProofResponse, tx_query

KEY = SigningKey(b"\x31" * 32)


class ScriptedNode:
    """Answers proofs from a set of 'committed' tx hashes and a committed sequence; a tx
    query must name the hash and the sequence the tx was signed with (ledger/proofs.py)."""

    chain_id = "light-unit"

    def __init__(self) -> None:
        self.committed: set[bytes] = set()
        self.sequence: int | None = None
        self.sent: list[txm.Tx] = []
        self.signed: dict[bytes, int] = {}
        """Every tx hash submitted → its sequence (kept across a simulated restart)."""

    async def submit(self, raw: bytes) -> txm.Tx:
        tx = txm.decode(raw)
        self.sent.append(tx)
        self.signed[tx.hash] = tx.sequence
        return tx

    async def prove(
        self, queries: list[tuple[str, bytes]], timeout_s: float = 30.0
    ) -> tuple[ProofResponse, list[Any]]:
        answers: list[Answer] = []
        results: list[Any] = []
        for kind, arg in queries:
            if kind == "key":
                assert arg == state.k_seq(KEY.public_key)
                ok = self.sequence is not None
                answers.append(Answer(kind, arg, "ok" if ok else "absent", None))
                results.append(codec.encode(self.sequence) if ok else ProofError("absent"))
            else:
                tx_hash = arg[:32]
                assert arg == tx_query(tx_hash, self.signed[tx_hash])
                ok = tx_hash in self.committed
                answers.append(Answer(kind, arg, "ok" if ok else "absent", None))
                results.append(7 if ok else ProofError("absent"))
        return ProofResponse(0, 7, tuple(answers)), results


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    box = Outbox(tmp_path / "outbox")
    box.put_many([OutboxRecord("m1", 900 * i, 100 + i, 0) for i in range(3)])
    return box


async def test_records_leave_the_outbox_only_when_proven(outbox: Outbox) -> None:
    """Three records signed with sequences 0..2 (absent seq = fresh account); only the two
    whose inclusion is proven are removed; the third stays in flight."""
    node: Any = ScriptedNode()
    sub = LightSubmitter(outbox, node, KEY, Health(), resign_timeout_s=3600)
    await sub.step()
    assert [t.sequence for t in node.sent] == [0, 1, 2]
    node.committed = {node.sent[0].hash, node.sent[1].hash}
    await sub.step()
    assert sub.committed == 2
    assert [r.slot_start_s for r in outbox.pending()] == [1800]
    assert len(sub.inflight) == 1


async def test_a_tx_never_included_is_resent_then_resigned_then_set_aside(
    outbox: Outbox,
) -> None:
    """With no inclusion: the same bytes are sent again, then the sequence is proven again
    (the ledger says 5) and the records re-signed from it; after the last round they are set
    aside as rejected, still in the outbox's rejected table."""
    node: Any = ScriptedNode()
    sub = LightSubmitter(
        outbox, node, KEY, Health(), resign_timeout_s=0, max_resigns=2, give_up_rounds=2
    )
    await sub.step()  # signs 0..2; not included: each sent again (same bytes)
    assert [t.sequence for t in node.sent] == [0, 1, 2, 0, 1, 2]
    assert node.sent[3].hash == node.sent[0].hash
    node.sequence = 5
    await sub.step()  # second miss: re-sign round 1, the sequence is to be proven again
    assert sub.sequence is None
    assert sub.inflight == {}
    await sub.step()  # proven sequence 5, re-signed from it
    assert [t.sequence for t in node.sent[6:9]] == [5, 6, 7]
    await sub.step()  # round 2 reached: set aside
    assert outbox.pending() == []
    assert [r.slot_start_s for r, _ in outbox.rejected()] == [0, 900, 1800]


async def test_queued_txs_share_the_sequence_then_are_set_aside_with_a_reason(
    tmp_path: Path,
) -> None:
    """A queued tx (REST API, JoinRequest) takes the next proven sequence and leaves the
    durable queue only by proof; one never included is re-signed from the newly proven
    sequence, then set aside in ``rejected_txs`` with the reason, never silently dropped."""
    node: Any = ScriptedNode()
    box = Outbox(tmp_path / "outbox")
    sub = LightSubmitter(
        box, node, KEY, Health(), resign_timeout_s=0, max_resigns=1, give_up_rounds=2
    )
    solve = {"period_id": "p0"}
    sub.queue_tx("SolveMarkets", solve)
    await sub.step()
    assert (node.sent[-1].kind, node.sent[-1].sequence) == ("SolveMarkets", 0)
    node.committed = {node.sent[-1].hash}
    await sub.step()
    assert sub.stats["api_committed"] == 1
    assert sub.queued() == []
    sub.queue_tx("SolveMarkets", solve)
    await sub.step()  # signed with 1, not included: a re-sign round (max_resigns 1) takes it back
    assert node.sent[-1].sequence == 1
    assert sub.inflight == {}
    assert [i["rounds"] for i in sub.queued()] == [1]
    node.sequence = 4
    await sub.step()  # sequence proven again (4): the queued tx is signed anew from it
    assert (node.sent[-1].kind, node.sent[-1].sequence) == ("SolveMarkets", 4)
    await sub.step()  # second round: set aside with the reason
    assert sub.queued() == []
    [rejected] = sub.rejected_txs()
    assert (rejected["kind"], rejected["body"]) == ("SolveMarkets", solve)
    assert "not committed after 2 re-sign rounds" in rejected["reason"]


async def test_a_queued_tx_survives_a_restart_and_one_committed_before_is_not_resigned(
    tmp_path: Path,
) -> None:
    """The queue is in the outbox's LMDB: a new submitter over the reopened outbox sends the
    tx that was never committed, and a tx whose signed form was committed before the crash
    is proven and dropped without signing it again."""
    node: Any = ScriptedNode()
    box = Outbox(tmp_path / "outbox")
    sub = LightSubmitter(box, node, KEY, Health(), resign_timeout_s=3600)
    sub.queue_tx("SolveMarkets", {"period_id": "p0"})
    sub.queue_tx("SolveMarkets", {"period_id": "p1"})
    await sub.step()
    done = node.sent[0].hash
    box.close()  # the daemon is killed here: nothing was proven yet
    box = Outbox(tmp_path / "outbox")
    node.committed, node.sequence, node.sent = {done}, 1, []
    again = LightSubmitter(box, node, KEY, Health(), resign_timeout_s=3600)
    assert len(again.queued()) == 2
    await again.step()
    assert [(t.body["period_id"], t.sequence) for t in node.sent] == [("p1", 1)]
    assert again.stats["api_committed"] == 1


async def test_held_records_wait_unsigned_while_queued_txs_go(outbox: Outbox) -> None:
    """While ``hold()`` is true (a node not yet admitted) no outbox record is signed; a
    queued JoinRequest is; once released the records follow with the next sequences."""
    node: Any = ScriptedNode()
    held = [True]
    sub = LightSubmitter(outbox, node, KEY, Health(), resign_timeout_s=3600, hold=lambda: held[0])
    sub.queue_tx("JoinRequest", {"meter_id": "m1", "identification": "x", "name": ""})
    await sub.step()
    assert [t.kind for t in node.sent] == ["JoinRequest"]
    held[0] = False
    await sub.step()
    assert [(t.kind, t.sequence) for t in node.sent[1:]] == [("SetMeasure", i) for i in (1, 2, 3)]
