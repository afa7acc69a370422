"""LMDB store: reopen, genesis checks, consistency check on open, one-transaction commits."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from ledger import block as blk
from ledger import codec, merkle
from ledger import tx as txm
from ledger.app import App
from ledger.errors import BlockInvalid, StoreError
from ledger.store import (
    LAYOUT,
    MAP_SIZE_BYTES,
    Store,
    _tx_location_records,
    map_size_bytes,
    tx_index_key,
)
from tests.unit.ledger.helpers import ADMIN, N1, SLOT, T0, VAL, Signer, commit, genesis


def _chain(path: Path, blocks: int = 3) -> App:
    app = App(Store(path, genesis(), durable=True))
    admin = Signer(ADMIN)
    for i in range(blocks):
        commit(app, [admin("AddMeter", {"meter_id": f"M{i}", "account": N1.public_key})], T0 + i)
    return app


def _rewrite_meta(path: Path, key: bytes, value: int | None) -> int:
    """Replace the closed store's ``meta`` int ``key`` (None: delete it); returns the old one."""
    env = lmdb.open(str(path), max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(write=True, db=meta) as txn:
        old = int(codec.decode(txn.get(key)))
        if value is None:
            txn.delete(key)
        else:
            txn.put(key, codec.encode(value))
    env.close()
    return old


def test_map_size_fits_the_platform() -> None:
    """1 GiB on 64-bit hosts, 512 MiB on 32-bit armhf (sys.maxsize 2**31 - 1)."""
    assert map_size_bytes(2**63 - 1) == 1 << 30
    assert map_size_bytes(2**31 - 1) == 512 << 20
    assert map_size_bytes() == MAP_SIZE_BYTES


def test_reopen_restores_tip(tmp_path: Path) -> None:
    """A reopened store has the same height, block hash, time and app hash."""
    app = _chain(tmp_path)
    tip = (app.height, app.last_block_hash, app.last_block_time_ms, app.app_hash)
    app.store.close()
    again = App(Store(tmp_path, genesis()))
    assert (again.height, again.last_block_hash, again.last_block_time_ms, again.app_hash) == tip
    assert tip[0] == 3


def test_empty_store_needs_genesis_and_other_genesis_refused(tmp_path: Path) -> None:
    """Opening an empty store without genesis, or a store with another genesis, fails."""
    with pytest.raises(StoreError, match="no genesis"):
        Store(tmp_path / "empty")
    Store(tmp_path / "a", genesis()).close()
    with pytest.raises(StoreError, match="another chain"):
        Store(tmp_path / "a", genesis(chain_id="other"))
    assert Store(tmp_path / "a").genesis == genesis()  # no genesis given: the stored one


@pytest.mark.parametrize(
    ("scheme", "says"),
    [(None, "before schemes were recorded"), (1, "with scheme 1"), (2, "with scheme 2")],
)
def test_a_store_of_another_app_hash_scheme_is_refused(
    tmp_path: Path, scheme: int | None, says: str
) -> None:
    """A store written under another app-hash scheme (or before stores recorded one) is not
    opened: its next commit would mix two kinds of tree node."""
    _chain(tmp_path).store.close()
    assert _rewrite_meta(tmp_path, b"scheme", scheme) == merkle.SCHEME == 3
    with pytest.raises(StoreError, match=f"written {says}; this lemd uses app-hash scheme 3"):
        Store(tmp_path)


def test_tampered_state_detected_on_open(tmp_path: Path) -> None:
    """A partition root edited behind the store's back makes opening fail loudly."""
    _chain(tmp_path).store.close()
    env = lmdb.open(str(tmp_path), max_dbs=16)
    db = env.open_db(b"roots")
    with env.begin(write=True, db=db) as txn:
        key, value = next(iter(txn.cursor()))
        txn.put(key, value[:1] + b"\x00" * 32)
    env.close()
    with pytest.raises(StoreError, match="app hash"):
        Store(tmp_path)


def test_failed_commit_leaves_nothing(tmp_path: Path) -> None:
    """A commit whose write fails midway (an empty state key LMDB refuses) stores no part of
    the block: height, blocks and state are unchanged after reopening."""
    app = _chain(tmp_path, 1)
    prepared = app.prepare(2, T0 + SLOT, VAL.public_key, [], None)
    block = blk.decode(prepared.block_bytes)
    with pytest.raises(StoreError):
        app.store.commit(block, prepared.block_bytes, None, {b"meter/ok": b"\xc0", b"": b"\xc0"})
    app.store.close()
    again = Store(tmp_path)
    assert again.height == 1
    assert again.block(2) is None
    with again.state_reader() as r:
        assert r.get(b"meter/ok") is None


def test_commit_refuses_wrong_height_and_bad_blocks(tmp_path: Path) -> None:
    """commit_block refuses a block that is not the next one, or has a wrong app hash."""
    app = _chain(tmp_path, 1)
    raw = app.prepare_block(2, T0 + 10, VAL.public_key, [], None)
    app.commit_block(raw, None)
    with pytest.raises(BlockInvalid, match="height"):
        app.commit_block(raw, None)
    b = blk.decode(app.prepare_block(3, T0 + 20, VAL.public_key, [], None))
    wrong = blk.Block(
        blk.Header(*[*b.header.to_value()[:6], b"\x00" * 32, *b.header.to_value()[7:]]),
        b.txs,
        b.last_commit,
    )
    with pytest.raises(BlockInvalid, match="app_hash"):
        app.validate_block(wrong.encode())
    with pytest.raises(BlockInvalid, match="does not advance"):
        app.prepare_block(3, T0 + 10, VAL.public_key, [], None)


def test_indexes(tmp_path: Path) -> None:
    """The block hash index and the tx index (by signer and sequence) point at the committed
    block and position."""
    app = _chain(tmp_path, 2)
    raw = app.store.block(2)
    assert raw is not None
    b = blk.decode(raw)
    assert app.store.height_of(b.hash) == 2
    assert app.store.tx_location(ADMIN.public_key, 1) == (2, 0)  # ADMIN's second tx
    assert app.store.tx_location(ADMIN.public_key, 2) is None
    assert app.store.tx_location(N1.public_key, 1) is None
    assert app.store.locate_tx(b.txs[0]) == (2, 0)
    assert app.store.commit_at(2) == [[VAL.public_key, b"\x00" * 64]]


def test_a_tx_that_lost_its_sequence_to_another_is_not_located(tmp_path: Path) -> None:
    """Two txs signed with one sequence (a submitter re-signed after a crash): only the
    committed one is located, though both name the same index key."""
    app = _chain(tmp_path, 1)
    committed, replaced = (
        txm.make(ADMIN, app.chain_id, 0, "AddMeter", {"meter_id": m, "account": N1.public_key})
        for m in ("M0", "M9")
    )
    assert app.store.locate_tx(committed) == (1, 0)
    assert app.store.tx_location(ADMIN.public_key, 0) == (1, 0)
    assert app.store.locate_tx(replaced) is None


@pytest.mark.parametrize("height", [1, 127, 128, 65_536, 2**32])
def test_tx_index_records_are_by_signer_and_sequence(height: int) -> None:
    """A block's txidx records are signer ‖ u64 sequence → exactly encode([height, index]), in
    key order whatever the order of the txs in the block."""
    signers = [Signer(k) for k in (N1, ADMIN, VAL)]
    raws = [signers[i % 3]("RemoveMeter", {"meter_id": f"M{i}"}) for i in range(300)]
    expected = []
    for i, raw in enumerate(raws):
        tx = txm.decode(raw)
        expected.append((tx.signer + tx.sequence.to_bytes(8, "big"), codec.encode([height, i])))
    records = _tx_location_records(height, raws)
    assert records == sorted(expected)
    first = min(N1.public_key, ADMIN.public_key, VAL.public_key)
    assert records[0][0] == tx_index_key(first, 0)


@pytest.mark.parametrize(("layout", "says"), [(None, "layout 1"), (1, "layout 1"), (3, "layout 3")])
def test_a_store_of_another_index_layout_is_refused(
    tmp_path: Path, layout: int | None, says: str
) -> None:
    """A store whose tx index is filed otherwise (by tx hash before layout 2) is not opened:
    its old records would never be found and new ones would mix in."""
    _chain(tmp_path).store.close()
    assert _rewrite_meta(tmp_path, b"layout", layout) == LAYOUT == 2
    with pytest.raises(StoreError, match=f"indexes have {says}; this lemd uses layout 2"):
        Store(tmp_path)
