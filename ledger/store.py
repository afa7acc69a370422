"""The LMDB store: blocks, commits, state, the state tree and indexes in one environment.

Spec: docs/spec/ledger.md §5–§6. Everything one block changes (block, commit, state writes, tree
nodes, app hash, height) goes into ONE write transaction with sync and metasync on, so a power
cut leaves either the old height or the new one. Opening re-derives the app hash from the stored
partition roots and refuses a store where it differs from the recorded one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from ledger import codec, merkle, statetree
from ledger.block import Block, Header
from ledger.errors import StoreError
from ledger.genesis import Genesis
from ledger.pagetrim import RELEASE_EVERY_HEIGHTS, release_file_pages
from ledger.stored_block import PRUNED_PREFIX, StoredBlock, decode_stored
from ledger.stored_block import PrunedTx as PrunedTx  # re-exported: part of the store's API
from ledger.stored_block import pruned_record as pruned_record
from ledger.tx import decode as decode_tx


def map_size_bytes(maxsize: int = sys.maxsize) -> int:
    """LMDB map size: 1 GiB on 64-bit, 512 MiB on 32-bit armhf, whose processes get < 2 GiB
    of address space (the whole map is mapped at once)."""
    return (1 << 30) if maxsize > 2**32 else (512 << 20)


MAP_SIZE_BYTES = map_size_bytes()

_DBS = ("meta", "blocks", "commits", "heights", "apphash", "txidx", "state", "tree", "roots")


def _h8(height: int) -> bytes:
    return height.to_bytes(8, "big")


K_BODY_CURSOR = b"bodyprune"
"""meta key: [next height the body pruner examines] (ledger/bodyprune.py)."""
K_SCHEME = b"scheme"
"""meta key: the app-hash scheme (``merkle.SCHEME``) the store's tree nodes follow."""
K_LAYOUT = b"layout"
"""meta key: the layout of the store's indexes (:data:`LAYOUT`); the state tree's is
``K_SCHEME``'s."""
LAYOUT = 2
"""2: ``txidx`` keyed by signer ‖ u64 sequence (layout 1, never recorded, keyed it by tx hash)."""
K_SNAPSHOT_BASE = b"snapbase"
"""meta key: [height, block hash, time_ms, app hash] of the snapshot this store was restored
from (ledger/snapshot.py); blocks at or below it were never stored here."""


def tx_index_key(signer: bytes, sequence: int) -> bytes:
    """The ``txidx`` key of the committed tx of ``signer`` with ``sequence``."""
    return signer + sequence.to_bytes(8, "big")


def _tx_location_records(height: int, txs: Iterable[bytes]) -> list[tuple[bytes, bytes]]:
    """``txidx`` records of a block: signer ‖ u64 sequence → canonical [height, index], in key
    order.

    Keyed by account and sequence, not by tx hash: a sequence is used by exactly one committed
    tx of its account, and an account's next tx lands right after its previous one, so a
    block's records fall on a few pages per account. Filed by hash, each landed on a random
    page: with 288 k txs stored, the index and the LMDB commit took 19.5 µs per tx instead of
    7.0, and the commit wrote 35 KiB per tx instead of 11, growing with the ledger (ledger.md
    §7).
    """
    # The header and the two ints are assembled from their parts: one encode per tx. The
    # block's execution decoded its txs, so decode_tx is a cache lookup.
    at_height = b"\x92" + codec.encode(height)
    records = []
    for i, raw in enumerate(txs):
        tx = decode_tx(raw)
        records.append((tx_index_key(tx.signer, tx.sequence), at_height + codec.encode(i)))
    records.sort()
    return records


def _prove(txn: lmdb.Transaction, dbs: dict[str, Any], key: bytes) -> merkle.Proof | None:
    """Inclusion proof of ``key`` in the state ``txn`` reads (None if the key is absent)."""
    value = txn.get(key, db=dbs["state"])
    if value is None:
        return None
    return statetree.prove(txn, dbs["tree"], dbs["roots"], key, bytes(value))


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

    def partition_roots(self) -> list[bytes]:
        """All ``N_PARTITIONS`` partition roots (empty partitions: ``merkle.EMPTY``)."""
        return statetree.load_roots(self._txn, self._db["roots"])[0]

    def entries(
        self, partition: int, after: bytes, max_bytes: int
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        """State entries of ``partition`` in key order, starting after the state key ``after``
        (b"": from the start), up to about ``max_bytes`` of keys and values. Returns
        (entries, more)."""
        out: list[tuple[bytes, bytes]] = []
        used = 0
        start = statetree.node_key(partition, 0, after + b"\x00" if after else b"")
        end = statetree.node_key(partition, 0, None)
        cursor = self._txn.cursor(db=self._db["tree"])
        if not cursor.set_range(start):
            return out, False
        for record in cursor.iternext(keys=True, values=False):
            if record >= end:
                return out, False
            key = bytes(record[3:])
            value = self._txn.get(key, db=self._db["state"])
            if value is None:
                raise StoreError(f"leaf without a state entry: {key[:40]!r}")
            if out and used + len(key) + len(value) > max_bytes:
                return out, True
            out.append((key, bytes(value)))
            used += len(key) + len(value) + 8
        return out, False

    def prove(self, key: bytes) -> merkle.Proof | None:
        """Inclusion proof of ``key`` in this view's state (None if the key is absent)."""
        return _prove(self._txn, self._db, key)

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
        self._roots = [merkle.EMPTY] * merkle.N_PARTITIONS
        self._tops = [0] * merkle.N_PARTITIONS
        self._pending = (self._roots, self._tops)
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
        # The stored tree nodes are only valid under the scheme that wrote them: a store of
        # another scheme would mix both kinds of node in its next commit and leave the chain.
        raw = self._meta(K_SCHEME)
        found = None if raw is None else codec.decode(raw)
        if found != merkle.SCHEME:
            written = "before schemes were recorded" if found is None else f"with scheme {found}"
            raise StoreError(
                f"{self.path}: the state tree was written {written}; this lemd uses app-hash "
                f"scheme {merkle.SCHEME} (docs/spec/ledger.md §6): sync a new store from the "
                "community (snapshot join) instead of reusing this one"
            )
        raw = self._meta(K_LAYOUT)
        layout = 1 if raw is None else codec.decode(raw)
        if layout != LAYOUT:
            raise StoreError(
                f"{self.path}: the store's indexes have layout {layout}; this lemd uses layout "
                f"{LAYOUT} (docs/spec/ledger.md §7): sync a new store from the community "
                "(snapshot join) instead of reusing this one"
            )

    def _init(self, genesis: Genesis) -> None:
        with self._txn() as txn:
            txn.put(b"genesis", genesis.encode(), db=self._db["meta"])
            txn.put(K_SCHEME, codec.encode(merkle.SCHEME), db=self._db["meta"])
            txn.put(K_LAYOUT, codec.encode(LAYOUT), db=self._db["meta"])
            writes: dict[bytes, bytes | None] = dict(genesis.initial_state().items())
            app_hash = self._write_state(txn, writes)
            self._write_tip(txn, 0, genesis.hash, genesis.genesis_time_ms, app_hash)

    def _load(self) -> None:
        with self._env.begin() as txn:
            self._roots, self._tops = statetree.load_roots(txn, self._db["roots"])
            raw_tip = txn.get(b"tip", db=self._db["meta"])
        if raw_tip is None:
            raise StoreError(f"{self.path}: store has a genesis but no tip record")
        tip = codec.decode(bytes(raw_tip))
        self.height, self.last_block_hash, self.last_time_ms, self.app_hash = tip
        derived = merkle.app_hash(self._roots)
        if derived != self.app_hash:
            raise StoreError(
                f"{self.path}: partition roots give app hash {derived.hex()[:16]}…, "
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
            self._write_tx_index(txn, h, block.txs)
            new_top_root = self._write_state(txn, writes)
            self._write_tip(txn, h, block.hash, block.header.time_ms, new_top_root)
        self._roots, self._tops = self._pending
        self.height, self.last_block_hash = h, block.hash
        self.last_time_ms, self.app_hash = block.header.time_ms, new_top_root
        if h % RELEASE_EVERY_HEIGHTS == 0:
            # Mapped file pages would otherwise count in the USS for good (ledger/pagetrim.py).
            release_file_pages(self.path / "data.mdb")
        return new_top_root

    def _write_tx_index(self, txn: lmdb.Transaction, height: int, txs: Iterable[bytes]) -> None:
        txn.cursor(db=self._db["txidx"]).putmulti(_tx_location_records(height, txs))

    def _write_state(self, txn: lmdb.Transaction, writes: dict[bytes, bytes | None]) -> bytes:
        sdb = self._db["state"]
        state_puts = []
        by_partition: dict[int, list[statetree.Write]] = {}
        place, leaf_hash = merkle.place, merkle.leaf_hash
        for key, value in writes.items():  # distinct keys: the order of their writes is free
            partition, rank = place(key)
            if value is None:
                txn.delete(key, db=sdb)
                write: statetree.Write = (key, rank, None)
            else:
                state_puts.append((key, value))
                write = (key, rank, leaf_hash(key, value))
            by_partition.setdefault(partition, []).append(write)
        # One C loop instead of a Python call per put (a block writes ~2 keys per tx).
        txn.cursor(db=sdb).putmulti(state_puts)
        tree, roots_db = self._db["tree"], self._db["roots"]
        changed = statetree.update(txn, tree, roots_db, by_partition, self._tops)
        roots, tops = list(self._roots), list(self._tops)
        for partition, (root, top) in changed.items():
            roots[partition], tops[partition] = root, top
        self._pending = (roots, tops)
        return merkle.app_hash(roots)

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
        sdb, tdb, rdb = self._db["state"], self._db["tree"], self._db["roots"]
        with self._txn() as txn:
            for name in (sdb, tdb, rdb):
                txn.drop(name, delete=False)
            leaves = []
            for key, value in entries:
                txn.put(key, value, db=sdb)
                leaves.append((key, merkle.leaf_hash(key, value)))
            roots, tops = statetree.build(txn, tdb, rdb, leaves)
            derived = merkle.app_hash(roots)
            if derived != app_hash:
                raise StoreError(
                    f"snapshot at height {height}: entries give app hash "
                    f"{derived.hex()[:16]}…, expected {app_hash.hex()[:16]}…"
                )
            txn.put(K_SNAPSHOT_BASE, codec.encode(list(base)), db=self._db["meta"])
            if self.height == 0:  # no block below: the body pruner starts after the snapshot
                txn.put(K_BODY_CURSOR, codec.encode([height + 1]), db=self._db["meta"])
            self._write_tip(txn, height, block_hash, time_ms, app_hash)
        self._roots, self._tops = roots, tops
        self._pending = (roots, tops)
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

    def tx_location(self, signer: bytes, sequence: int) -> tuple[int, int] | None:
        """(height, index) of the committed tx of ``signer`` with ``sequence``."""
        raw = self._get("txidx", tx_index_key(signer, sequence))
        if raw is None:
            return None
        h, i = codec.decode(raw)
        return int(h), int(i)

    def locate_tx(self, raw: bytes) -> tuple[int, int] | None:
        """(height, index) of the committed envelope ``raw``; None when it is not committed,
        also when another tx of its signer took its sequence.

        Raises:
            TxRejected: ``raw`` is not an envelope.
        """
        tx = decode_tx(raw)
        where = self.tx_location(tx.signer, tx.sequence)
        if where is None:
            return None
        stored = self.stored_block(where[0])
        return where if stored is not None and stored.tx_hashes[where[1]] == tx.hash else None

    def prove(self, key: bytes) -> merkle.Proof | None:
        """Inclusion proof of ``key`` against :attr:`app_hash` (None if the key is absent)."""
        with self._env.begin() as txn:
            return _prove(txn, self._db, key)

    def size_bytes(self) -> int:
        """Bytes of the LMDB data file in use (pages × page size)."""
        info, stat = self._env.info(), self._env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])

    def close(self) -> None:
        self._env.close()
