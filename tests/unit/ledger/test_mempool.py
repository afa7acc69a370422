"""Mempool: admission with pending sequences, dedup, bounds, reaping, purging after commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.app import App
from ledger.errors import TxRejected
from ledger.mempool import Mempool
from tests.unit.ledger.helpers import (
    ADMIN,
    N1,
    N2,
    SLOT,
    T0,
    VAL,
    Signer,
    commit,
    genesis,
    measure,
    open_app,
    period,
)


@pytest.fixture
def app(tmp_path: Path) -> App:
    a = open_app(tmp_path, genesis(meters={"M1": N1.public_key, "M2": N2.public_key}))
    commit(a, [Signer(ADMIN)("SetMarketParameters", period("p", T0, T0 + 4 * SLOT))], T0)
    return a


def _reason(pool: Mempool, raw: bytes) -> str:
    with pytest.raises(TxRejected) as exc:
        pool.add(raw)
    return exc.value.reason.value


def test_pending_sequences_and_dedup(app: App) -> None:
    """A signer's txs are admitted in sequence after its pending ones; a repeat is a duplicate."""
    pool, n1 = Mempool(app), Signer(N1)
    first = n1("SetMeasure", measure("M1", T0, 1, 0))
    pool.add(first)
    pool.add(n1("SetMeasure", measure("M1", T0 + SLOT, 1, 0)))
    assert _reason(pool, first) == "duplicate_tx"
    n1.seq = 5
    assert _reason(pool, n1("SetMeasure", measure("M1", T0 + 2 * SLOT, 1, 0))) == "future_sequence"
    assert len(pool) == 2
    assert pool.reap() == [first, pool.reap()[1]]


def test_bounds_refuse_when_full(app: App) -> None:
    """When full (count or bytes) new txs are refused as mempool_full; admitted ones stay."""
    pool, n1 = Mempool(app, max_txs=2), Signer(N1)
    pool.add(n1("SetMeasure", measure("M1", T0, 1, 0)))
    pool.add(n1("SetMeasure", measure("M1", T0 + SLOT, 1, 0)))
    assert _reason(pool, Signer(N2)("SetMeasure", measure("M2", T0, 1, 0))) == "mempool_full"
    assert len(pool) == 2
    assert pool.rejected_full == 1
    small = Mempool(app, max_bytes=100)
    assert _reason(small, Signer(N2)("SetMeasure", measure("M2", T0, 1, 0))) == "mempool_full"


def test_invalid_txs_are_not_admitted(app: App) -> None:
    """check_tx runs at admission: a foreign meter is refused with its reason."""
    assert (
        _reason(Mempool(app), Signer(N2)("SetMeasure", measure("M1", T0, 1, 0)))
        == "not_meter_owner"
    )


def test_update_after_commit(app: App) -> None:
    """After a commit: committed txs leave, a tx overtaken by a committed one is purged, a tx
    waiting for a later block time stays and is included once the time has come."""
    pool, n1, n2 = Mempool(app), Signer(N1), Signer(N2)
    now = pool.add(n1("SetMeasure", measure("M1", T0, 10, 0))).raw
    later = pool.add(n2("SetMeasure", measure("M2", T0 + 2 * SLOT, 0, 5))).raw  # slot not over
    prepared = app.prepare(app.height + 1, T0 + SLOT, VAL.public_key, pool.reap(), None)
    assert [e.reason.value for _, e in prepared.dropped] == ["slot_in_future"]
    app.commit_block(prepared.block_bytes, None)
    pool.update([now], prepared.dropped)
    assert pool.reap() == [later]
    # another node's block committed a different tx with the same signer sequence: purged
    conflict = Mempool(app)
    conflict.add(Signer(N1, app=app)("SetMeasure", measure("M1", T0 + SLOT, 1, 0)))
    commit(app, [Signer(N1, app=app)("SetMeasure", measure("M1", T0 + SLOT, 2, 0))], T0 + 2 * SLOT)
    conflict.update([])
    assert len(conflict) == 0
    prepared = app.prepare(app.height + 1, T0 + 3 * SLOT, VAL.public_key, pool.reap(), None)
    assert prepared.dropped == []


def test_next_tx_is_admitted_while_a_block_with_its_predecessor_commits(app: App) -> None:
    """Between a block's commit to the store and the mempool's update (the single validator
    commits in a worker thread) the signer's next tx follows the committed sequence: its
    predecessor is committed and still pending here, and is not counted twice."""
    pool, n1 = Mempool(app), Signer(N1)
    first = pool.add(n1("SetMeasure", measure("M1", T0, 1, 0))).raw
    commit(app, pool.reap(), T0 + SLOT)  # committed; pool.update not yet run
    assert app.sequence(N1.public_key) == 1
    second = pool.add(n1("SetMeasure", measure("M1", T0 + SLOT, 2, 0))).raw
    n1.seq = 1
    assert _reason(pool, n1("SetMeasure", measure("M1", T0 + SLOT, 3, 0))) == "stale_sequence"
    pool.update([first])
    assert pool.reap() == [second]
    prepared = app.prepare(app.height + 1, T0 + 2 * SLOT, VAL.public_key, pool.reap(), None)
    assert prepared.dropped == []


def test_admission_decodes_config_once_per_batch_and_never_past_a_write() -> None:
    """The check overlay decodes a cfg/ record once per batch; other keys and pending writes
    read through, so a check never sees a stale or shared non-config value."""
    from ledger import codec
    from ledger.app import _CheckOverlay
    from ledger.state import MemoryState

    reads: list[bytes] = []

    class Counting(MemoryState):
        def get(self, key: bytes) -> bytes | None:
            reads.append(key)
            return super().get(key)

    base = Counting({b"cfg/admins": codec.encode([b"a" * 32]), b"seq/x": codec.encode(3)})
    overlay = _CheckOverlay(base)
    first = overlay.get_value(b"cfg/admins")
    assert overlay.get_value(b"cfg/admins") is first == [b"a" * 32]
    assert overlay.get_value(b"seq/x") == overlay.get_value(b"seq/x") == 3
    assert reads == [b"cfg/admins", b"seq/x", b"seq/x"]
    overlay.put_value(b"cfg/admins", [b"b" * 32])
    assert overlay.get_value(b"cfg/admins") == [b"b" * 32]
