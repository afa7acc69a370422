"""LMDB store: reopen, genesis checks, consistency check on open, one-transaction commits."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from ledger import block as blk
from ledger import codec, merkle
from ledger.app import App
from ledger.errors import BlockInvalid, StoreError
from ledger.store import MAP_SIZE_BYTES, Store, map_size_bytes
from tests.unit.ledger.helpers import ADMIN, N1, SLOT, T0, VAL, Signer, commit, genesis


def _chain(path: Path, blocks: int = 3) -> App:
    app = App(Store(path, genesis(), durable=True))
    admin = Signer(ADMIN)
    for i in range(blocks):
        commit(app, [admin("AddMeter", {"meter_id": f"M{i}", "account": N1.public_key})], T0 + i)
    return app


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
    env = lmdb.open(str(tmp_path), max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(write=True, db=meta) as txn:
        assert codec.decode(txn.get(b"scheme")) == merkle.SCHEME == 3
        if scheme is None:
            txn.delete(b"scheme")
        else:
            txn.put(b"scheme", codec.encode(scheme))
    env.close()
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
    """Block hash and tx hash indexes point at the committed block and position."""
    app = _chain(tmp_path, 2)
    raw = app.store.block(2)
    assert raw is not None
    b = blk.decode(raw)
    assert app.store.height_of(b.hash) == 2
    from ledger.keys import sha256

    assert app.store.tx_location(sha256(b.txs[0])) == (2, 0)
    assert app.store.commit_at(2) == [[VAL.public_key, b"\x00" * 64]]


@pytest.mark.parametrize("height", [1, 127, 128, 65_536, 2**32])
def test_tx_index_record_is_the_canonical_location(height: int) -> None:
    """The txidx record the store assembles from its parts is exactly encode([height, index])."""
    from ledger import codec
    from ledger.store import _tx_location_records

    raws = [n.to_bytes(2, "big") for n in range(300)]
    records = _tx_location_records(height, raws)
    assert [value for _, value in records] == [codec.encode([height, i]) for i in range(300)]
