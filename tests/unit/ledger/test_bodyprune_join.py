"""Sealed JoinRequest pruning (docs/spec/privacy.md §3.1, §5.3; join.md §6) on a real App over
LMDB: once a pseudonymous chain's request is decided, its sealed box leaves the block store;
headers, hashes, commits, app hashes and every other tx stay."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledger import codec, merkle, privacy
from ledger.app import App
from ledger.bodyprune import K_JOIN_CURSOR, BodyPruner, wanted
from ledger.keys import sha256
from ledger.store import Store
from ledger.stored_block import PrunedTx
from tests.unit.ledger.helpers import (
    ADMIN,
    N1,
    N2,
    SLOT,
    Signer,
    commit,
    genesis,
    key,
    measure,
    period,
)
from tests.unit.ledger.test_privacy_retention import P1, P2, SOLVED_AT, T0, WINDOW_MS

NEW, OTHER = key(40), key(41)
PS_NEW, PS_OTHER = "ps-" + "ab" * 16, "ps-" + "cd" * 16


def _box() -> bytes:
    """Stands in for a sealed box (the ledger checks its size only); random, so its bytes are
    found in a file only where this box was written."""
    return os.urandom(120)


def _request(box: bytes) -> dict[str, object]:
    return {"meter_id": "", "identification": "", "name": "", "sealed": box}


def _approve(account: bytes, pseudonym: str) -> dict[str, object]:
    return {"account": account, "meter_id": pseudonym, "admission": os.urandom(100)}


def _app(path: Path, **overrides: object) -> App:
    g = genesis(privacy="pseudonymous", meters={P1: N1.public_key, P2: N2.public_key}, **overrides)
    return App(Store(path, g, durable=False))


def _facts(store: Store, height: int) -> tuple[bytes, bytes, bytes, list[bytes], object]:
    """Block hash, txs_hash, app hash after it, tx hashes, stored commit of ``height``."""
    stored = store.stored_block(height)
    assert stored is not None
    h = stored.header
    return (
        h.hash,
        h.txs_hash,
        store.app_hash_at(height) or b"",
        stored.tx_hashes,
        store.commit_at(height),
    )


def _holds(store: Store, height: int, data: bytes) -> bool:
    """True when a whole tx of the stored block at ``height`` contains ``data``."""
    stored = store.stored_block(height)
    assert stored is not None
    return any(isinstance(t, bytes) and data in t for t in stored.txs)


def test_box_stays_while_pending_and_goes_once_approved(tmp_path: Path) -> None:
    """Before approval the box is in the stored block and the pass waits at it; after
    ApproveMember the JoinRequest is [tx_hash, signer], the SetMeasure beside it is whole, and
    block hash, txs_hash, app hash, commit and tx_location do not move."""
    app, box = _app(tmp_path), _box()
    node, admin = Signer(NEW, app=app), Signer(ADMIN, app=app)
    join_tx = node("JoinRequest", _request(box))
    meas_tx = Signer(N1, app=app)("SetMeasure", measure(P1, T0, 500, 0))
    commit(app, [join_tx, meas_tx], T0 + SLOT)
    store = app.store
    pruner = BodyPruner(store)
    assert pruner.joins is not None
    assert pruner.step() == 0
    assert pruner.joins.waiting == (1, NEW.public_key)
    assert pruner.joins.cursor == 1
    assert _holds(store, 1, box)
    commit(app, [admin("ApproveMember", _approve(NEW.public_key, PS_NEW))], T0 + SLOT + 1)
    before = [_facts(store, h) for h in (1, 2)]
    assert pruner.step() == 1
    stored = store.stored_block(1)
    assert stored is not None
    assert stored.txs == (PrunedTx(sha256(join_tx), NEW.public_key), meas_tx)
    assert not _holds(store, 1, box)
    assert store.block(2) is not None  # the approval (its admission is for the node) stays
    assert [_facts(store, h) for h in (1, 2)] == before
    assert merkle.list_root(stored.tx_hashes) == stored.header.txs_hash
    assert store.locate_tx(join_tx) == (1, 0)
    assert pruner.joins.cursor == 3
    assert (pruner.joins.pruned_blocks, pruner.joins.pruned_txs) == (1, 1)


def test_pending_request_of_another_key_holds_the_cursor(tmp_path: Path) -> None:
    """A later key's request still pending stops the pass there (the decided one before it is
    pruned); once that one is approved, its box goes too and the cursor reaches the tip."""
    app, box_new, box_other = _app(tmp_path), _box(), _box()
    admin = Signer(ADMIN, app=app)
    commit(app, [Signer(NEW, app=app)("JoinRequest", _request(box_new))], T0)
    commit(app, [Signer(OTHER, app=app)("JoinRequest", _request(box_other))], T0 + 1)
    commit(app, [admin("ApproveMember", _approve(NEW.public_key, PS_NEW))], T0 + 2)
    pruner = BodyPruner(app.store)
    assert pruner.joins is not None
    assert pruner.step() == 1
    assert not _holds(app.store, 1, box_new)
    assert _holds(app.store, 2, box_other)
    assert pruner.joins.waiting == (2, OTHER.public_key)
    assert pruner.step() == 0  # waiting: nothing decoded, nothing written
    commit(app, [admin("ApproveMember", _approve(OTHER.public_key, PS_OTHER))], T0 + 3)
    assert pruner.step() == 1
    assert not _holds(app.store, 2, box_other)
    assert pruner.joins.waiting is None
    assert pruner.joins.cursor == app.store.height + 1 == 5


def test_restart_resumes_from_the_stored_cursor(tmp_path: Path) -> None:
    """The cursor is in the store's meta: a pruner on the reopened store continues where the
    last one wrote blocks, one block per step here."""
    path = tmp_path / "ledger"
    app, boxes = _app(path), [_box(), _box()]
    for i, (k, box) in enumerate(zip((NEW, OTHER), boxes, strict=True)):
        commit(app, [Signer(k, app=app)("JoinRequest", _request(box))], T0 + i)
    admin = Signer(ADMIN, app=app)
    commit(app, [admin("ApproveMember", _approve(NEW.public_key, PS_NEW))], T0 + 2)
    commit(app, [admin("ApproveMember", _approve(OTHER.public_key, PS_OTHER))], T0 + 3)
    assert BodyPruner(app.store, max_blocks=1).step() == 1
    assert app.store.meta_value(K_JOIN_CURSOR) == [2]
    app.store.close()
    store = Store(path)
    pruner = BodyPruner(store, max_blocks=1)
    assert pruner.joins is not None
    assert pruner.joins.cursor == 2
    assert pruner.step() == 1
    assert not _holds(store, 2, boxes[1])
    assert store.meta_value(K_JOIN_CURSOR) == [3]
    store.close()


@pytest.mark.parametrize("joins_first", [True, False])
def test_block_ends_with_both_stubs_whichever_pass_comes_first(
    tmp_path: Path, joins_first: bool
) -> None:
    """A block holding a sealed JoinRequest and SetMeasures of a day that gets pruned ends with
    every one of them as [tx_hash, signer], whichever pass rewrote it first; the block outside
    the period keeps its SetMeasures and its hashes verify."""
    app, box = _app(tmp_path, dispute_window_ms=WINDOW_MS), _box()
    admin, n1, n2 = Signer(ADMIN, app=app), Signer(N1, app=app), Signer(N2, app=app)
    commit(app, [admin("SetMarketParameters", period("p", T0, T0 + 4 * SLOT))], T0)
    for i in range(5):  # as test_privacy_retention.Community: slot T0 + 4 slots is outside p
        slot = T0 + i * SLOT
        txs = [n1("SetMeasure", measure(P1, slot, 100 + i, 0))]
        txs.append(n2("SetMeasure", measure(P2, slot, 0, 50 + i)))
        txs += [Signer(NEW, app=app)("JoinRequest", _request(box))] if i == 0 else []
        txs += [admin("SolveMarkets", {"period_id": "p"})] if i == 4 else []
        commit(app, txs, slot + SLOT)
    store, pruner = app.store, BodyPruner(app.store)
    before = _facts(store, 2)

    def approve(time_ms: int) -> None:
        commit(app, [admin("ApproveMember", _approve(NEW.public_key, PS_NEW))], time_ms)
        pruner.step()

    def prune_days() -> None:
        for j in range(2):
            commit(app, [n2("PruneMeasurements", {"period_id": "p"})], SOLVED_AT + WINDOW_MS + j)
            pruner.step()

    if joins_first:
        approve(SOLVED_AT + 1)
        prune_days()
    else:
        prune_days()
        assert _holds(store, 2, box)  # measurement stubs written, the box still waits
        approve(SOLVED_AT + WINDOW_MS + 2)
    stored = store.stored_block(2)
    assert stored is not None
    assert [type(t) for t in stored.txs] == [PrunedTx, PrunedTx, PrunedTx]
    assert [t.signer for t in stored.txs if isinstance(t, PrunedTx)] == [
        N1.public_key,
        N2.public_key,
        NEW.public_key,
    ]
    assert _facts(store, 2) == before
    assert store.block(6) is not None  # slot outside the period: kept whole
    assert not any(_holds(store, h, box) for h in range(1, store.height + 1))


def test_box_bytes_leave_the_file_after_compaction(tmp_path: Path) -> None:
    """After the pass and a forced start-time compaction, the box's bytes are nowhere in the
    ledger's data.mdb (before the pass they are)."""
    from edge.node_lock import compact_stores

    app, box = _app(tmp_path / "ledger"), _box()
    commit(app, [Signer(NEW, app=app)("JoinRequest", _request(box))], T0)
    data = tmp_path / "ledger" / "data.mdb"
    assert box in data.read_bytes()
    commit(app, [Signer(ADMIN, app=app)("ApproveMember", _approve(NEW.public_key, PS_NEW))], T0 + 1)
    assert BodyPruner(app.store).step() == 1
    app.store.close()
    compact_stores(tmp_path, force=True)
    assert box not in data.read_bytes()
    store = Store(tmp_path / "ledger")
    assert store.tx_location(NEW.public_key, 0) == (1, 0)  # the join request, NEW's first tx
    store.close()


def test_open_chain_is_untouched(tmp_path: Path) -> None:
    """An open chain without retention has nothing to prune (no pruner is built); forced on, the
    pass leaves its plain, approved JoinRequest whole and just walks past it."""
    g = genesis(meters={"M1": N1.public_key})
    assert not wanted(g)
    assert wanted(genesis(privacy="pseudonymous"))
    app = App(Store(tmp_path, g, durable=False))
    plain = {"meter_id": "M7", "identification": "ISK5MT174", "name": "roof"}
    raw = Signer(NEW, app=app)("JoinRequest", plain)
    commit(app, [raw], T0)
    commit(app, [Signer(ADMIN, app=app)("ApproveMember", {"account": NEW.public_key})], T0 + 1)
    pruner = BodyPruner(app.store, measurements=False, joins=True)
    assert pruner.step() == 0
    assert pruner.joins is not None
    assert pruner.joins.cursor == 3
    whole = app.store.block(1)
    assert whole is not None
    assert codec.decode(whole)[1] == [raw]
    assert privacy.Mode(g.privacy) is privacy.Mode.OPEN
