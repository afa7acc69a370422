"""The LMDB store: blocks, commits, state, Merkle buckets and indexes in one environment.

Spec: docs/spec/ledger.md §5–§6. Everything one block changes (block, commit, state writes, leaf
and bucket hashes, app hash, height) goes into ONE write transaction with sync and metasync on,
so a power cut leaves either the old height or the new one. Opening re-derives the app hash from
the stored bucket hashes and refuses a store where it differs from the recorded one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from ledger import codec, merkle
from ledger.block import Block
from ledger.errors import StoreError
from ledger.genesis import Genesis
from ledger.keys import sha256
from ledger.pagetrim import RELEASE_EVERY_HEIGHTS, release_file_pages


def map_size_bytes(maxsize: int = sys.maxsize) -> int:
    """LMDB map size: 1 GiB on 64-bit, 512 MiB on 32-bit armhf, whose processes get < 2 GiB
    of address space (the whole map is mapped at once)."""
    return (1 << 30) if maxsize > 2**32 else (512 << 20)


MAP_SIZE_BYTES = map_size_bytes()

_DBS = ("meta", "blocks", "commits", "heights", "apphash", "txidx", "state", "leaves", "buckets")


def _h8(height: int) -> bytes:
    return height.to_bytes(8, "big")


def _b2(bucket: int) -> bytes:
    return bucket.to_bytes(2, "big")


class LmdbState:
    """A :class:`ledger.state.StateReader` over one LMDB read transaction."""

    def __init__(self, txn: lmdb.Transaction, db: Any) -> None:
        self._txn = txn
        self._db = db

    def get(self, key: bytes) -> bytes | None:
        value = self._txn.get(key, db=self._db)
        return None if value is None else bytes(value)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        cursor = self._txn.cursor(db=self._db)
        if not cursor.set_range(start):
            return
        for key, value in cursor:
            k = bytes(key)
            if k >= end:
                return
            yield k, bytes(value)


class Store:
    """One node's ledger store (single writer: the process that opened it read-write).

    Args:
        path: directory of the LMDB environment (created if missing, unless read-only).
        genesis: required to initialise an empty store; checked against a non-empty one.
        durable: sync + metasync on every commit (off only for throw-away replays).
        readonly: open for inspection (``lemctl ledger show``) without writing.

    Raises:
        StoreError: cannot open, empty without a genesis, other genesis, inconsistent hashes.
    """

    def __init__(
        self,
        path: Path,
        genesis: Genesis | None = None,
        *,
        durable: bool = True,
        readonly: bool = False,
    ) -> None:
        try:
            if not readonly:
                path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(path),
                map_size=MAP_SIZE_BYTES,
                max_dbs=len(_DBS),
                sync=durable,
                metasync=durable,
                readonly=readonly,
                create=not readonly,
            )
            self._db = {
                name: self._env.open_db(name.encode(), create=not readonly) for name in _DBS
            }
        except lmdb.Error as exc:
            raise StoreError(f"{path}: cannot open LMDB store: {exc}") from exc
        self.path = path
        self._readonly = readonly
        self._top = merkle.TopTree([merkle.EMPTY] * merkle.N_BUCKETS)
        self._pending_top = self._top
        self.height, self.last_block_hash, self.last_time_ms, self.app_hash = 0, b"", 0, b""
        stored = self._meta(b"genesis")
        if stored is None:
            if genesis is None or readonly:
                raise StoreError(f"{path}: empty store and no genesis to initialise it")
            self._init(genesis)
        elif genesis is not None and stored != genesis.encode():
            raise StoreError(f"{path}: the store holds another chain's genesis")
        self.genesis = Genesis.decode(self._meta(b"genesis") or b"")
        self._load()

    # opening -------------------------------------------------------------------------------

    def _meta(self, key: bytes) -> bytes | None:
        with self._env.begin(db=self._db["meta"]) as txn:
            value = txn.get(key)
        return None if value is None else bytes(value)

    def _init(self, genesis: Genesis) -> None:
        with self._txn() as txn:
            txn.put(b"genesis", genesis.encode(), db=self._db["meta"])
            writes: dict[bytes, bytes | None] = dict(genesis.initial_state().items())
            app_hash = self._write_state(txn, writes)
            self._write_tip(txn, 0, genesis.hash, genesis.genesis_time_ms, app_hash)

    def _load(self) -> None:
        with self._env.begin() as txn:
            buckets = [merkle.EMPTY] * merkle.N_BUCKETS
            for key, value in txn.cursor(db=self._db["buckets"]):
                buckets[int.from_bytes(key, "big")] = bytes(value)
            raw_tip = txn.get(b"tip", db=self._db["meta"])
        if raw_tip is None:
            raise StoreError(f"{self.path}: store has a genesis but no tip record")
        tip = codec.decode(bytes(raw_tip))
        self._top = merkle.TopTree(buckets)
        self.height, self.last_block_hash, self.last_time_ms, self.app_hash = tip
        if self._top.root != self.app_hash:
            raise StoreError(
                f"{self.path}: bucket hashes give app hash {self._top.root.hex()[:16]}…, "
                f"the store records {self.app_hash.hex()[:16]}… at height {self.height}"
            )

    @contextmanager
    def _txn(self) -> Iterator[lmdb.Transaction]:
        try:
            with self._env.begin(write=True) as txn:
                yield txn
        except lmdb.Error as exc:
            raise StoreError(f"{self.path}: write failed: {exc}") from exc

    # writing ------------------------------------------------------------------------------

    def commit(
        self,
        block: Block,
        block_bytes: bytes,
        commit: codec.Value,
        writes: dict[bytes, bytes | None],
    ) -> bytes:
        """Store ``block`` at the next height with its commit and state writes; durable on return.

        Returns:
            The app hash after the block.

        Raises:
            StoreError: wrong height, or the write failed (nothing of the block is stored).
        """
        h = block.header.height
        if h != self.height + 1:
            raise StoreError(f"commit of height {h} on a store at height {self.height}")
        with self._txn() as txn:
            txn.put(_h8(h), block_bytes, db=self._db["blocks"])
            txn.put(_h8(h), codec.encode(commit), db=self._db["commits"])
            txn.put(block.hash, _h8(h), db=self._db["heights"])
            for i, raw in enumerate(block.txs):
                txn.put(sha256(raw), codec.encode([h, i]), db=self._db["txidx"])
            new_top_root = self._write_state(txn, writes)
            self._write_tip(txn, h, block.hash, block.header.time_ms, new_top_root)
        self._top = self._pending_top
        self.height, self.last_block_hash = h, block.hash
        self.last_time_ms, self.app_hash = block.header.time_ms, new_top_root
        if h % RELEASE_EVERY_HEIGHTS == 0:
            # Mapped file pages would otherwise count in the USS for good (ledger/pagetrim.py).
            release_file_pages(self.path / "data.mdb")
        return new_top_root

    def _write_state(self, txn: lmdb.Transaction, writes: dict[bytes, bytes | None]) -> bytes:
        sdb, ldb, bdb = self._db["state"], self._db["leaves"], self._db["buckets"]
        dirty: set[int] = set()
        for key, value in writes.items():
            bucket = merkle.bucket_of(key)
            if value is None:
                txn.delete(key, db=sdb)
                txn.delete(_b2(bucket) + key, db=ldb)
            else:
                txn.put(key, value, db=sdb)
                txn.put(_b2(bucket) + key, merkle.leaf_hash(key, value), db=ldb)
            dirty.add(bucket)
        changes = {}
        for bucket in sorted(dirty):
            root = merkle.bucket_root(self._bucket_leaves(txn, bucket)[1])
            changes[bucket] = root
            if root == merkle.EMPTY:
                txn.delete(_b2(bucket), db=bdb)
            else:
                txn.put(_b2(bucket), root, db=bdb)
        self._pending_top = self._top.with_buckets(changes)
        return self._pending_top.root

    def _bucket_leaves(self, txn: lmdb.Transaction, bucket: int) -> tuple[list[bytes], list[bytes]]:
        prefix = _b2(bucket)
        keys, hashes = [], []
        cursor = txn.cursor(db=self._db["leaves"])
        if cursor.set_range(prefix):
            for key, value in cursor:
                if key[:2] != prefix:
                    break
                keys.append(bytes(key[2:]))
                hashes.append(bytes(value))
        return keys, hashes

    def _write_tip(
        self, txn: lmdb.Transaction, height: int, block_hash: bytes, time_ms: int, app_hash: bytes
    ) -> None:
        txn.put(_h8(height), app_hash, db=self._db["apphash"])
        txn.put(b"tip", codec.encode([height, block_hash, time_ms, app_hash]), db=self._db["meta"])

    # reading ------------------------------------------------------------------------------

    @contextmanager
    def state_reader(self) -> Iterator[LmdbState]:
        """A consistent snapshot of the committed state for the duration of the block."""
        with self._env.begin() as txn:
            yield LmdbState(txn, self._db["state"])

    def _get(self, db: str, key: bytes) -> bytes | None:
        with self._env.begin(db=self._db[db]) as txn:
            value = txn.get(key)
        return None if value is None else bytes(value)

    def block(self, height: int) -> bytes | None:
        return self._get("blocks", _h8(height))

    def commit_at(self, height: int) -> codec.Value:
        raw = self._get("commits", _h8(height))
        return None if raw is None else codec.decode(raw)

    def app_hash_at(self, height: int) -> bytes | None:
        """App hash after block ``height`` (0: the genesis state)."""
        return self._get("apphash", _h8(height))

    def height_of(self, block_hash: bytes) -> int | None:
        raw = self._get("heights", block_hash)
        return None if raw is None else int.from_bytes(raw, "big")

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(height, index) of a committed tx."""
        raw = self._get("txidx", tx_hash)
        if raw is None:
            return None
        h, i = codec.decode(raw)
        return int(h), int(i)

    def prove(self, key: bytes) -> merkle.Proof | None:
        """Inclusion proof of ``key`` against :attr:`app_hash` (None if the key is absent)."""
        with self._env.begin() as txn:
            value = txn.get(key, db=self._db["state"])
            if value is None:
                return None
            keys, hashes = self._bucket_leaves(txn, merkle.bucket_of(key))
        return merkle.make_proof(key, bytes(value), hashes, keys.index(key), self._top)

    def size_bytes(self) -> int:
        """Bytes of the LMDB data file in use (pages × page size)."""
        info, stat = self._env.info(), self._env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])

    def close(self) -> None:
        self._env.close()
