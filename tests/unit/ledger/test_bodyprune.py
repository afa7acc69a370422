"""Block-body pruning (docs/spec/privacy.md §3.1) on a real App over LMDB: SetMeasure bodies leave
the block store after their day is pruned; headers, hashes, commits and app hashes do not move."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import block as blk
from ledger import merkle
from ledger import tx as txm
from ledger.bodyprune import BodyPruner
from ledger.store import Store
from ledger.stored_block import PrunedTx
from ledger.verify import verify_store
from tests.unit.ledger.helpers import SLOT, commit
from tests.unit.ledger.test_privacy_retention import (
    SOLVED_AT,
    T0,
    WINDOW_MS,
    Community,
)


@pytest.fixture
def c(tmp_path: Path) -> Community:
    return Community(tmp_path / "ledger")


def _chain_facts(store: Store) -> list[tuple[bytes, bytes, object, bytes, list[bytes]]]:
    """Per height: block hash, app hash after it, stored commit, txs_hash, tx hashes."""
    out = []
    for h in range(1, store.height + 1):
        stored = store.stored_block(h)
        assert stored is not None
        out.append(
            (
                stored.header.hash,
                store.app_hash_at(h) or b"",
                store.commit_at(h),
                stored.header.txs_hash,
                stored.tx_hashes,
            )
        )
    return out


def _measure_heights(store: Store) -> list[int]:
    out = []
    for h in range(1, store.height + 1):
        raw = store.block(h)
        if raw is not None and any(txm.decode(t).kind == "SetMeasure" for t in blk.decode(raw).txs):
            out.append(h)
    return out


def test_nothing_is_pruned_before_the_day_is(c: Community) -> None:
    """Before any PruneMeasurements the pruner stops at the first SetMeasure block and rewrites
    nothing; it remembers why it waits."""
    pruner = BodyPruner(c.app.store)
    assert pruner.step() == 0
    assert pruner.waiting is not None
    assert pruner.waiting.period_id == "p"
    assert pruner.cursor == pruner.waiting.height == 2
    assert not any(c.app.store.is_body_pruned(h) for h in range(1, c.app.height + 1))


def test_pruning_keeps_headers_hashes_commits_and_app_hashes(c: Community) -> None:
    """After both day chunks are pruned, the pruner rewrites the four blocks of the period's
    slots: no SetMeasure body of the period is left, the block outside the period and every
    other tx stay whole, and block hashes, app hashes, commits, txs_hash and tx hashes are
    unchanged; tx_location still finds every tx."""
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS)
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS + 1)
    store = c.app.store
    before = _chain_facts(store)
    whole = {h: store.block(h) for h in range(1, store.height + 1)}
    pruner = BodyPruner(store)
    assert pruner.step() == 4
    assert _chain_facts(store) == before
    assert [h for h in range(1, store.height + 1) if store.is_body_pruned(h)] == [2, 3, 4, 5]
    assert _measure_heights(store) == [6]  # slot T0 + 4 slots: outside the period, kept
    for h in (2, 3, 4, 5):
        stored = store.stored_block(h)
        assert stored is not None
        assert store.block(h) is None
        assert all(isinstance(t, PrunedTx) for t in stored.txs)
        assert merkle.list_root(stored.tx_hashes) == stored.header.txs_hash
        original = blk.decode(whole[h] or b"")
        for i, raw in enumerate(original.txs):
            assert store.locate_tx(raw) == (h, i)
            entry = stored.txs[i]
            assert isinstance(entry, PrunedTx)
            assert entry.signer == txm.decode(raw).signer
    # SolveMarkets (block 6) and the prunes stay whole.
    assert store.block(6) == whole[6]
    assert pruner.cursor == store.height + 1


def test_bounded_steps_resume_after_reopen(c: Community, tmp_path: Path) -> None:
    """One block per step: the cursor is durable, so a reopened store continues where the
    last step stopped and the result equals pruning in one go."""
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS)
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS + 1)
    store = c.app.store
    assert BodyPruner(store, max_blocks=2).step() == 1  # heights 1 (params) and 2
    genesis = store.genesis
    store.close()
    again = Store(tmp_path / "ledger", genesis, durable=False)
    pruner = BodyPruner(again, max_blocks=1)
    assert pruner.cursor == 3
    rewritten = sum(pruner.step() for _ in range(again.height))
    assert rewritten == 3
    assert [h for h in range(1, again.height + 1) if again.is_body_pruned(h)] == [2, 3, 4, 5]
    again.close()


def test_only_the_pruned_day_goes_first(c: Community) -> None:
    """After the first day chunk only the blocks of that day's slots lose their bodies; the
    pruner then waits at the first block of the next day."""
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS)
    pruner = BodyPruner(c.app.store)
    assert pruner.step() == 2
    assert pruner.waiting is not None
    assert pruner.waiting.slot_ms == T0 + 2 * SLOT
    assert pruner.step() == 0  # no decode while the day is still unpruned
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS + 1)
    assert pruner.step() == 2


def test_measurement_bytes_leave_the_file_after_compaction(c: Community, tmp_path: Path) -> None:
    """The signature bytes of a pruned SetMeasure (unique random bytes) are gone from a
    compacted copy of the LMDB file; the live file may still hold them in freed pages (LMDB
    reuses but does not wipe them), which is why compaction is documented as the offline step."""
    store = c.app.store
    raw = blk.decode(store.block(2) or b"").txs[0]
    signature = txm.decode(raw).signature
    data = tmp_path / "ledger" / "data.mdb"
    assert signature in data.read_bytes()
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS)
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS + 1)
    BodyPruner(store).step()
    copy = tmp_path / "compact"
    store.compact_copy(copy)
    assert signature not in (copy / "data.mdb").read_bytes()
    compacted = Store(copy, store.genesis, readonly=True)
    assert compacted.app_hash == store.app_hash
    assert compacted.is_body_pruned(2)
    compacted.close()


def test_verify_names_a_body_pruned_block(c: Community) -> None:
    """lemctl ledger verify cannot replay a body-pruned chain and says why at the first
    pruned height (not 'block missing')."""
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS)
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS + 1)
    BodyPruner(c.app.store).step()
    report = verify_store(c.app.store)
    assert not report.ok
    assert report.verified_height == 1
    assert "block body pruned" in str(report.problems)
