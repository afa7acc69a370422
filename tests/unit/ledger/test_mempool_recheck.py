"""Bounded mempool re-check after a commit (ledger/mempool.py ``update``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import mempool as mp
from ledger import tx as txm
from tests.unit.ledger.helpers import ADMIN, N1, T0, Signer, commit, open_app


def _add(signer: Signer, meter: str) -> bytes:
    return signer("AddMeter", {"meter_id": meter, "account": N1.public_key})


def test_recheck_beyond_the_limit_keeps_sequences_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A competing tx took sequence 0: our seq-0 tx leaves (full re-check), seqs 1..5 stay
    (the later ones checked by sequence only), and seq 6 is admitted next."""
    monkeypatch.setattr(mp, "RECHECK_LIMIT", 2)
    app = open_app(tmp_path)
    pool = mp.Mempool(app)
    ours = Signer(ADMIN)
    pending = [_add(ours, f"P{i}") for i in range(6)]
    for raw in pending:
        pool.add(raw)
    theirs = Signer(ADMIN)
    competing = _add(theirs, "X0")  # also sequence 0, other content
    commit(app, [competing], T0)
    pool.update([competing])
    assert [txm.decode(r).sequence for r in pool.reap()] == [1, 2, 3, 4, 5]
    assert pool.reap() == pending[1:]
    pool.add(_add(ours, "P6"))
    assert len(pool) == 6


def test_sequence_only_recheck_drops_stale_txs_beyond_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block used sequences 0 and 1: our seq 0 leaves by the full re-check, our seq 1 (beyond
    the limit) by the sequence check; seqs 2 and 3 stay."""
    monkeypatch.setattr(mp, "RECHECK_LIMIT", 1)
    app = open_app(tmp_path)
    pool = mp.Mempool(app)
    ours = Signer(ADMIN)
    first = _add(ours, "DUP")  # seq 0: adds meter DUP
    later = [_add(ours, f"Q{i}") for i in range(3)]  # seq 1..3
    for raw in [first, *later]:
        pool.add(raw)
    # Another node's block from the same account: seqs 0 and 1 with other contents.
    theirs = Signer(ADMIN)
    block = [_add(theirs, "OTHER"), _add(theirs, "DUP")]
    commit(app, block, T0)
    pool.update(block)
    # committed sequence is now 2: our seq 0 and 1 are stale, seq 2 and 3 still line up.
    assert [txm.decode(r).sequence for r in pool.reap()] == [2, 3]
