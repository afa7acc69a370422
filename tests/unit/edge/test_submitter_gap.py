"""The submitter after one of its txs left the mempool: the ones behind it are held there,
and re-signing from the committed sequence replaces them without a second reset."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.metrics import Metrics
from edge.submitter import TxSigner
from ledger import tx as txm
from ledger.app import App
from ledger.errors import Reason, TxRejected
from ledger.mempool import Mempool
from tests.unit.ledger.helpers import ADMIN, N1, T0, Signer, commit, open_app


class _Node:
    """The part of edge.ledger_node.LedgerNode the signer uses, over a real app and mempool."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.mempool = Mempool(app)
        self.resent: list[bytes] = []

    def submit(self, raw: bytes) -> txm.Tx:
        return self.mempool.add(raw)

    def resend(self, raws: list[bytes]) -> None:
        self.resent += raws


def _body(meter: str) -> dict[str, object]:
    return {"meter_id": meter, "account": N1.public_key}


def test_reset_after_a_gap_forgets_held_own_txs_and_resigns_cleanly(tmp_path: Path) -> None:
    """Our seq 0 lost to a tx with other content committed elsewhere; our seq 1 now fails
    (its meter exists) and leaves; seqs 2..3 are held. The next submit meets the gap
    (future_sequence), resets, the held txs are dropped, and signing restarts at the committed
    sequence with nothing left over to collide with."""
    app = open_app(tmp_path)
    node = _Node(app)
    now = [0.0]
    signer = TxSigner(ADMIN, node, Metrics(), resign_timeout_s=30, monotonic=lambda: now[0])  # type: ignore[arg-type]
    for meter in ("A", "DUP", "B", "C"):
        signer.submit("AddMeter", _body(meter))
    replaced = Signer(ADMIN)("AddMeter", _body("DUP"))  # seq 0, other content, another node
    commit(app, [replaced], T0)
    node.mempool.update([replaced])
    assert node.mempool.held_count == 2
    assert len(node.mempool) == 0
    with pytest.raises(TxRejected) as exc:
        signer.submit("AddMeter", _body("D"))
    assert exc.value.reason is Reason.FUTURE_SEQUENCE
    assert node.mempool.held_count == 0
    assert signer.inflight == {}
    signer.submit("AddMeter", _body("B"))
    assert [txm.decode(r).sequence for r in node.mempool.reap()] == [1]
    assert sorted(signer.inflight) == [1]
