"""The state tree's nodes in LMDB: a block's update, proofs, and building from a snapshot.

Spec: docs/spec/ledger.md §6; the tree itself is defined by :func:`merkle.partition_levels`,
which the property tests hold this incremental form to.

One sub-db (``tree``) keeps every node of every partition, keyed by ``partition ‖ level ‖ 0x01 ‖
state key`` for a key's node and ``partition ‖ level ‖ 0x02`` for the level's closing node, so a
level is one key range in key order and a node's children are the range below between two of
its neighbours' keys. Level 0 holds the leaf hashes. Another (``roots``) keeps each non-empty
partition's ``u8 top level ‖ root``. Keys of one block that lie close in key order (the slots of
one period, one account's rows) share nodes, so a block dirties few pages and re-hashes few
nodes whatever the size of the state.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import lmdb

from ledger import merkle

_KEY = b"\x01"
_CLOSE = b"\x02"
_PLACEHOLDER = bytes(32)
"""Value of a node created in this transaction before its hash is computed (always replaced)."""

Write = tuple[bytes, int, bytes | None]
"""(state key, its rank, its leaf hash or None for a deletion); see :func:`merkle.place`."""


def _prefix(partition: int, level: int) -> bytes:
    return bytes((partition, level))


def node_key(partition: int, level: int, key: bytes | None) -> bytes:
    """The ``tree`` record of a key's node (None: the level's closing node)."""
    return _prefix(partition, level) + (_CLOSE if key is None else _KEY + key)


def load_roots(txn: lmdb.Transaction, roots_db: Any) -> tuple[list[bytes], list[int]]:
    """Every partition's root and top level (an empty partition: ``merkle.EMPTY``, 0)."""
    roots, tops = [merkle.EMPTY] * merkle.N_PARTITIONS, [0] * merkle.N_PARTITIONS
    for key, value in txn.cursor(db=roots_db):
        roots[key[0]], tops[key[0]] = bytes(value[1:]), value[0]
    return roots, tops


_HASH = operator.itemgetter(1)


class _Partition:
    """One partition's nodes inside one LMDB transaction (a write one for :meth:`update`)."""

    def __init__(self, txn: lmdb.Transaction, tree_db: Any, partition: int) -> None:
        self._txn = txn
        self._db = tree_db
        self._cursor = txn.cursor(db=tree_db)
        self.p = partition

    def at_or_after(self, level: int, suffix: bytes) -> bytes:
        """Suffix (0x01 ‖ key or 0x02) of the first element of ``level`` at or after ``suffix``
        (the closing node exists on every level up to the top, so there always is one)."""
        cursor = self._cursor
        cursor.set_range(_prefix(self.p, level) + suffix)
        return bytes(cursor.key()[2:])

    def _has_keys(self, level: int) -> bool:
        cursor = self._cursor
        first = _prefix(self.p, level) + _KEY
        return cursor.set_range(first) and cursor.key()[:3] == first

    def _nodes_over(self, level: int, dirty: list[bytes]) -> set[bytes]:
        """The nodes of ``level`` whose children include one of ``dirty`` (suffixes of the
        level below, in order; a deleted one counts for the node it was in)."""
        nodes: set[bytes] = set()
        node = b""
        for suffix in dirty:
            if suffix > node:  # beyond the node found last: look the next one up
                node = self.at_or_after(level, suffix)
                nodes.add(node)
        return nodes

    def top_level(self) -> int:
        """1 + the highest rank among the partition's keys (0: the partition is empty)."""
        if not self._has_keys(0):
            return 0
        level = 1
        while self._has_keys(level):
            level += 1
        return level

    def _seek_children(self, level: int, suffix: bytes) -> tuple[object, ...] | None:
        """Put the cursor on the first child of node ``suffix`` of ``level`` (≥ 1); returns the
        bound ``(end,)`` that is greater than exactly the children's ``(key, value)`` records,
        or None if the level below is empty there."""
        cursor, here, below = self._cursor, _prefix(self.p, level), _prefix(self.p, level - 1)
        cursor.set_key(here + suffix)
        has_previous = cursor.prev() and cursor.key()[:2] == here
        start = below + bytes(cursor.key()[2:]) + b"\x00" if has_previous else below
        # A child's record is ≤ below ‖ suffix, i.e. < below ‖ suffix ‖ 0x00; comparing as
        # tuples lets takewhile test each (key, value) record in C.
        return (below + suffix + b"\x00",) if cursor.set_range(start) else None

    def children(self, level: int, suffix: bytes) -> list[tuple[bytes, bytes]]:
        """The (suffix, hash) children of node ``suffix`` of ``level`` (≥ 1), in order."""
        end = self._seek_children(level, suffix)
        if end is None:
            return []
        inside = itertools.takewhile(end.__gt__, self._cursor.iternext())
        return [(bytes(key[2:]), bytes(digest)) for key, digest in inside]

    def _rehash(self, level: int, suffix: bytes) -> None:
        end = self._seek_children(level, suffix)
        joined = b""
        if end is not None:
            joined = b"".join(map(_HASH, itertools.takewhile(end.__gt__, self._cursor.iternext())))
        self._txn.put(_prefix(self.p, level) + suffix, merkle.node_hash(level, joined), db=self._db)

    def update(self, writes: Sequence[Write], old_top: int) -> tuple[bytes, int]:
        """Apply one block's writes to this partition (``writes`` in key order) and re-hash the
        nodes above them. Returns (root, top level)."""
        txn, db, p = self._txn, self._db, self.p
        inserted: list[tuple[bytes, int]] = []
        leaves = []
        for key, rank, leaf in writes:
            record = node_key(p, 0, key)
            if leaf is None:
                if txn.delete(record, db=db):
                    for level in range(1, rank + 1):
                        txn.delete(node_key(p, level, key), db=db)
            else:
                if rank and txn.get(record, db=db) is None:
                    inserted.append((key, rank))
                leaves.append((record, leaf))
        self._cursor.putmulti(leaves)
        for key, rank in inserted:  # the new node boundaries, hashed below
            for level in range(1, rank + 1):
                txn.put(node_key(p, level, key), _PLACEHOLDER, db=db)
        top = self.top_level()
        for level in range(top + 1, old_top + 1):
            txn.delete(node_key(p, level, None), db=db)
        dirty = [_KEY + key for key, _, _ in writes]  # in order and distinct, as ``writes``
        for level in range(1, top + 1):
            if level > old_top:
                txn.put(node_key(p, level, None), _PLACEHOLDER, db=db)
            above = self._nodes_over(level, dirty)
            # A new boundary splits the node it fell in: the part after it is re-hashed too.
            above.update(
                self.at_or_after(level, _KEY + key + b"\x00")
                for key, rank in inserted
                if rank >= level
            )
            if level > old_top:
                above.add(_CLOSE)
            dirty = sorted(above)
            for suffix in dirty:
                self._rehash(level, suffix)
        if top == 0:
            return merkle.EMPTY, 0
        root = txn.get(node_key(p, top, None), db=db)
        assert root is not None, "the top level's closing node was just hashed"
        return bytes(root), top


def update(
    txn: lmdb.Transaction,
    tree_db: Any,
    roots_db: Any,
    writes: dict[int, list[Write]],
    tops: Sequence[int],
) -> dict[int, tuple[bytes, int]]:
    """Apply a block's writes, by partition, to the tree; returns {partition: (root, top
    level)} of the partitions they touched (the roots db is updated too)."""
    changed = {}
    for p, items in sorted(writes.items()):
        items.sort()
        root, top = _Partition(txn, tree_db, p).update(items, tops[p])
        changed[p] = (root, top)
        if top:
            txn.put(bytes((p,)), bytes((top,)) + root, db=roots_db)
        else:
            txn.delete(bytes((p,)), db=roots_db)
    return changed


def prove(
    txn: lmdb.Transaction, tree_db: Any, roots_db: Any, key: bytes, value: bytes
) -> merkle.Proof:
    """Inclusion proof of a key that is in the state of ``txn``."""
    roots, tops = load_roots(txn, roots_db)
    p = merkle.partition_of(key)
    part = _Partition(txn, tree_db, p)
    steps = []
    below = _KEY + key
    for level in range(1, tops[p] + 1):
        node = part.at_or_after(level, below)
        children = part.children(level, node)
        index = [suffix for suffix, _ in children].index(below)
        others = tuple(digest for i, (_, digest) in enumerate(children) if i != index)
        steps.append((index, others))
        below = node
    return merkle.Proof(key, value, tuple(steps), tuple(merkle.top_path(roots, p)))


def build(
    txn: lmdb.Transaction, tree_db: Any, roots_db: Any, leaves: Iterable[tuple[bytes, bytes]]
) -> tuple[list[bytes], list[int]]:
    """Write the whole tree of (key, leaf hash) pairs, any order, into empty sub-dbs; returns
    every partition's root and top level (as :func:`load_roots`)."""
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, leaf in leaves:
        by_partition.setdefault(merkle.partition_of(key), []).append((key, leaf))
    roots, tops = [merkle.EMPTY] * merkle.N_PARTITIONS, [0] * merkle.N_PARTITIONS
    cursor = txn.cursor(db=tree_db)
    for p, items in by_partition.items():
        items.sort()
        levels = merkle.partition_levels(items)
        for level, nodes in enumerate(levels):
            cursor.putmulti([(node_key(p, level, key), digest) for key, digest in nodes])
        roots[p], tops[p] = levels[-1][-1][1], len(levels) - 1
        txn.put(bytes((p,)), bytes((tops[p],)) + roots[p], db=roots_db)
    return roots, tops
