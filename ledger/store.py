"""The LMDB store: blocks, commits, state, Merkle buckets and indexes in one environment.

Spec: docs/spec/ledger.md §5–§6. Everything one block changes (block, commit, state writes, leaf
and bucket hashes, app hash, height) goes into ONE write transaction with sync and metasync on,
so a power cut leaves either the old height or the new one. Opening re-derives the app hash from
the stored bucket hashes and refuses a store where it differs from the recorded one.
"""

from __future__ import annotations

import itertools
import operator
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from ledger import codec, merkle
from ledger.block import Block, Header
from ledger.errors import StoreError
from ledger.genesis import Genesis
from ledger.pagetrim import RELEASE_EVERY_HEIGHTS, release_file_pages
from ledger.stored_block import PRUNED_PREFIX, StoredBlock, decode_stored
from ledger.stored_block import PrunedTx as PrunedTx  # re-exported: part of the store's API
from ledger.stored_block import pruned_record as pruned_record
from ledger.tx import tx_hash


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


K_BODY_CURSOR = b"bodyprune"
"""meta key: [next height the body pruner examines] (ledger/bodyprune.py)."""
K_SCHEME = b"scheme"
"""meta key: the app-hash scheme (``merkle.SCHEME``) the store's leaf and bucket hashes follow."""
K_SNAPSHOT_BASE = b"snapbase"
"""meta key: [height, block hash, time_ms, app hash] of the snapshot this store was restored
from (ledger/snapshot.py); blocks at or below it were never stored here."""


def _bucket_bytes(leaves: lmdb.Cursor, bucket: int) -> bytes:
    """The leaf hashes of ``bucket`` in key order, concatenated, read with a cursor on the
    ``leaves`` db (what :func:`merkle.bucket_root_joined` hashes)."""
    if not leaves.set_range(_b2(bucket)):
        return b""
    # ``(end,) > (key, value)`` holds exactly while key < end (a leaf key is longer than the
    # 2-byte bound, so it never equals it): the bucket's entries are taken without a Python
    # loop, which is most of a commit's reading cost (one bucket per written key).
    end: tuple[object, ...] = (_b2(bucket + 1),)
    inside = itertools.takewhile(end.__gt__, leaves.iternext())
    return b"".join(map(_LEAF_HASH, inside))


_LEAF_HASH = operator.itemgetter(1)


def _tx_location_records(height: int, txs: Iterable[bytes]) -> list[tuple[bytes, bytes]]:
    """``txidx`` records of a block: tx hash → canonical [height, index]."""
    # Assembled from its parts (a 2-array header, then the two ints): one encode per tx.
    at_height = b"\x92" + codec.encode(height)
    return [(tx_hash(raw), at_height + codec.encode(i)) for i, raw in enumerate(txs)]


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


class StateView:
    """The committed state at one height, read through one long-lived LMDB read transaction
    (what a snapshot is served from; docs/spec/consensus.md §5b).

    Attributes:
        height, block_hash, time_ms, app_hash: the tip the view shows.
    """

    def __init__(self, env: lmdb.Environment, dbs: dict[str, Any]) -> None:
        self._txn = env.begin()
        self._db = dbs
        raw_tip = self._txn.get(b"tip", db=dbs["meta"])
        if raw_tip is None:
            raise StoreError("state view: the store has no tip record")
        tip = codec.decode(bytes(raw_tip))
        self.height: int = tip[0]
        self.block_hash: bytes = tip[1]
        self.time_ms: int = tip[2]
        self.app_hash: bytes = tip[3]

    def bucket_hashes(self) -> list[bytes]:
        """All N_BUCKETS bucket hashes (empty buckets: ``merkle.EMPTY``)."""
        buckets = [merkle.EMPTY] * merkle.N_BUCKETS
        for key, value in self._txn.cursor(db=self._db["buckets"]):
            buckets[int.from_bytes(key, "big")] = bytes(value)
        return buckets

    def entries(
        self, first_bucket: int, end_bucket: int, after: bytes, max_bytes: int
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        """State entries of buckets [first_bucket, end_bucket) in (bucket, key) order, starting
        after the entry whose state key is ``after`` (b"": from the start), up to about
        ``max_bytes`` of keys and values. Returns (entries, more)."""
        out: list[tuple[bytes, bytes]] = []
        used = 0
        start = _b2(first_bucket) + after
        if after:
            start = _b2(merkle.bucket_of(after)) + after + b"\x00"
        end = _b2(end_bucket) if end_bucket < merkle.N_BUCKETS else b"\xff\xff\xff"
        cursor = self._txn.cursor(db=self._db["leaves"])
        if not cursor.set_range(start):
            return out, False
        for lkey in cursor.iternext(keys=True, values=False):
            if lkey >= end:
                return out, False
            key = bytes(lkey[2:])
            value = self._txn.get(key, db=self._db["state"])
            if value is None:
                raise StoreError(f"leaf without a state entry: {key[:40]!r}")
            if out and used + len(key) + len(value) > max_bytes:
                return out, True
            out.append((key, bytes(value)))
            used += len(key) + len(value) + 8
        return out, False

    def close(self) -> None:
        self._txn.abort()


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
        self._check_scheme()
        self.genesis = Genesis.decode(self._meta(b"genesis") or b"")
        self._load()

    # opening -------------------------------------------------------------------------------

    def _meta(self, key: bytes) -> bytes | None:
        with self._env.begin(db=self._db["meta"]) as txn:
            value = txn.get(key)
        return None if value is None else bytes(value)

    def _check_scheme(self) -> None:
        # The stored bucket hashes are only valid under the scheme that wrote them: a store of
        # another scheme would mix both hash kinds in its next commit and leave the chain.
        raw = self._meta(K_SCHEME)
        found = None if raw is None else codec.decode(raw)
        if found != merkle.SCHEME:
            written = "before schemes were recorded" if found is None else f"with scheme {found}"
            raise StoreError(
                f"{self.path}: the state tree was written {written}; this lemd uses app-hash "
                f"scheme {merkle.SCHEME} (docs/spec/ledger.md §6): sync a new store from the "
                "community (snapshot join) instead of reusing this one"
            )

    def _init(self, genesis: Genesis) -> None:
        with self._txn() as txn:
            txn.put(b"genesis", genesis.encode(), db=self._db["meta"])
            txn.put(K_SCHEME, codec.encode(merkle.SCHEME), db=self._db["meta"])
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
            txn.cursor(db=self._db["txidx"]).putmulti(_tx_location_records(h, block.txs))
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
        state_puts, leaf_puts = [], []
        for key, value in writes.items():  # distinct keys: the order of their writes is free
            bucket = merkle.bucket_of(key)
            dirty.add(bucket)
            if value is None:
                txn.delete(key, db=sdb)
                txn.delete(_b2(bucket) + key, db=ldb)
            else:
                state_puts.append((key, value))
                leaf_puts.append((_b2(bucket) + key, merkle.leaf_hash(key, value)))
        # One C loop per sub-db instead of a Python call per put (a block writes ~2 keys per tx).
        txn.cursor(db=sdb).putmulti(state_puts)
        leaves = txn.cursor(db=ldb)
        leaves.putmulti(leaf_puts)
        changes, bucket_puts = {}, []
        for bucket in sorted(dirty):
            root = merkle.bucket_root_joined(_bucket_bytes(leaves, bucket))
            changes[bucket] = root
            if root == merkle.EMPTY:
                txn.delete(_b2(bucket), db=bdb)
            else:
                bucket_puts.append((_b2(bucket), root))
        txn.cursor(db=bdb).putmulti(bucket_puts)
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
        """The whole block at ``height``; None when absent or body-pruned (see
        :meth:`stored_block`): a caller that replays or relays blocks never gets a partial one."""
        raw = self._get("blocks", _h8(height))
        return None if raw is None or raw.startswith(PRUNED_PREFIX) else raw

    def stored_block(self, height: int) -> StoredBlock | None:
        """The block at ``height`` as stored: whole or body-pruned (header, tx hashes, commit)."""
        raw = self._get("blocks", _h8(height))
        return None if raw is None else decode_stored(raw)

    def header(self, height: int) -> Header | None:
        """The header at ``height`` (also of a body-pruned block)."""
        stored = self.stored_block(height)
        return None if stored is None else stored.header

    def is_body_pruned(self, height: int) -> bool:
        raw = self._get("blocks", _h8(height))
        return raw is not None and raw.startswith(PRUNED_PREFIX)

    # body pruning and snapshots (docs/spec/privacy.md §3.1, docs/spec/consensus.md §5b) ----

    def meta_value(self, key: bytes) -> codec.Value:
        """A decoded ``meta`` record (None when absent)."""
        raw = self._meta(key)
        return None if raw is None else codec.decode(raw)

    def put_meta_value(self, key: bytes, value: codec.Value) -> None:
        """Write one ``meta`` record durably in its own transaction (a local cursor, never
        consensus state: it is not part of the app hash)."""
        with self._txn() as txn:
            txn.put(key, codec.encode(value), db=self._db["meta"])

    def rewrite_bodies(self, records: dict[int, bytes], cursor: int) -> None:
        """Replace stored blocks by their body-pruned records and move the pruner's cursor, in
        one durable write transaction (headers, commits, indexes and state are untouched).

        Raises:
            StoreError: a height is not stored, or the write failed.
        """
        with self._txn() as txn:
            for height, record in records.items():
                if txn.get(_h8(height), db=self._db["blocks"]) is None:
                    raise StoreError(f"body pruning: no block at height {height}")
                txn.put(_h8(height), record, db=self._db["blocks"])
            txn.put(K_BODY_CURSOR, codec.encode([cursor]), db=self._db["meta"])

    def view(self) -> StateView:
        """A consistent read-only view of the committed state, open until closed (LMDB MVCC:
        the node keeps committing meanwhile; pages the view still sees are not reused)."""
        return StateView(self._env, self._db)

    def restore(
        self,
        base: tuple[int, bytes, int, bytes],
        entries: Iterable[tuple[bytes, bytes]],
    ) -> None:
        """Replace the whole state by a verified snapshot and set the tip to it.

        Args:
            base: (height, block hash, block time [ms], app hash after that height).
            entries: every state (key, value), any order.

        Raises:
            StoreError: the snapshot is not above the store's height, the entries do not
                give the app hash, or the write failed (nothing is then changed).
        """
        height, block_hash, time_ms, app_hash = base
        if height <= self.height:
            raise StoreError(f"snapshot at height {height} is not above the store's {self.height}")
        sdb, ldb, bdb = self._db["state"], self._db["leaves"], self._db["buckets"]
        with self._txn() as txn:
            for name in (sdb, ldb, bdb):
                txn.drop(name, delete=False)
            per_bucket: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, value in entries:
                bucket = merkle.bucket_of(key)
                leaf = merkle.leaf_hash(key, value)
                txn.put(key, value, db=sdb)
                txn.put(_b2(bucket) + key, leaf, db=ldb)
                per_bucket.setdefault(bucket, []).append((key, leaf))
            buckets = [merkle.EMPTY] * merkle.N_BUCKETS
            for bucket, leaves in per_bucket.items():
                buckets[bucket] = merkle.bucket_root([leaf for _, leaf in sorted(leaves)])
                txn.put(_b2(bucket), buckets[bucket], db=bdb)
            top = merkle.TopTree(buckets)
            if top.root != app_hash:
                raise StoreError(
                    f"snapshot at height {height}: entries give app hash "
                    f"{top.root.hex()[:16]}…, expected {app_hash.hex()[:16]}…"
                )
            txn.put(K_SNAPSHOT_BASE, codec.encode(list(base)), db=self._db["meta"])
            if self.height == 0:  # no block below: the body pruner starts after the snapshot
                txn.put(K_BODY_CURSOR, codec.encode([height + 1]), db=self._db["meta"])
            self._write_tip(txn, height, block_hash, time_ms, app_hash)
        self._top = self._pending_top = top
        self.height, self.last_block_hash, self.last_time_ms, self.app_hash = base

    def compact_copy(self, destination: Path) -> None:
        """Write a compacted copy of the environment to ``destination`` (an empty or new
        directory): LMDB's copy with compaction omits free pages, which may still hold the
        bytes of pruned rows and block bodies (an offline step: docs/privacy.md §5).

        Raises:
            StoreError: the copy failed.
        """
        try:
            destination.mkdir(parents=True, exist_ok=True)
            self._env.copy(str(destination), compact=True)
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"{destination}: compacting copy failed: {exc}") from exc

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
