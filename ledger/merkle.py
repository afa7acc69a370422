"""Merkle trees: RFC 6962 lists (tx hashes) and the bucketed state tree.

Spec: docs/spec/ledger.md §6. The app hash is the root of a fixed-depth binary tree over
``N_BUCKETS`` buckets; a state key lives in bucket ``sha256(key)[:2] >> 4``; a bucket's hash is
``sha256(0x03 || leaf hashes in key order)``, one flat hash (a bucket holds ~n/4096 leaves, so
re-hashing one is a single C call; a proof carries the bucket's other leaf hashes), a leaf hash
being ``sha256(0x00 || u16(len(key)) || key || sha256(value))``. A block re-hashes only its dirty
buckets and their ``DEPTH`` ancestors. Everything here is pure; :func:`verify_proof` is what
members run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

SCHEME = 2
"""App-hash scheme: 2 = flat bucket hashes (2026-11); 1 = RFC 6962 tree inside each bucket.
Stores record it (ledger/store.py); the block version was bumped with it (ledger/block.py)."""
DEPTH = 12
N_BUCKETS = 1 << DEPTH
EMPTY = hashlib.sha256(b"").digest()
"""Hash of an empty list (RFC 6962 §2.1: MTH({}) = SHA-256())."""

_LEAF = b"\x00"
_NODE = b"\x01"
_TOP = b"\x02"  # top-tree nodes get their own prefix so a bucket root never passes as one
_BUCKET = b"\x03"  # and so do buckets: no leaf, list node or top node can pose as one


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def bucket_of(key: bytes) -> int:
    """The bucket index [0, N_BUCKETS) of a state key."""
    digest = _h(key)
    return ((digest[0] << 8) | digest[1]) >> (16 - DEPTH)


def leaf_hash(key: bytes, value: bytes) -> bytes:
    """Hash of one state entry (length-prefixed key, so no two (key, value) pairs collide)."""
    return _h(_LEAF + len(key).to_bytes(2, "big") + key + _h(value))


def list_root(hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash over already-hashed leaves (hashes are wrapped with 0x00)."""
    return _mth([_h(_LEAF + h) for h in hashes]) if hashes else EMPTY


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return EMPTY
    level = leaves
    sha = hashlib.sha256  # bound once: a commit hashes ~1 node per state key it touches
    # Iterative RFC 6962 construction: pairing left to right, an odd last node is promoted.
    while len(level) > 1:
        pairs = iter(level)  # zip(pairs, pairs) takes two at a time and leaves the odd one
        parents = [sha(_NODE + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
        if len(level) % 2:
            parents.append(level[-1])
        level = parents
    return level[0]


def list_path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 audit path of ``hashes[index]`` in the tree of :func:`list_root` (leaf first)."""
    return _audit_path([_h(_LEAF + h) for h in hashes], index)


def list_verify(digest: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """True when ``digest`` is leaf ``index`` of a :func:`list_root` tree (``size``, ``root``)."""
    return _root_from_path(_h(_LEAF + digest), index, size, path) == root


def bucket_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Hash of one bucket from its leaf hashes in key order (empty bucket: ``EMPTY``)."""
    return bucket_root_joined(b"".join(leaf_hashes))


def bucket_root_joined(joined: bytes) -> bytes:
    """:func:`bucket_root` of leaf hashes already concatenated (what a store cursor gives)."""
    # Leaf hashes are all 32 bytes, so their concatenation is unambiguous without separators.
    return _h(_BUCKET + joined) if joined else EMPTY


def _audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]), leaf first."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_audit_path(leaves[:k], index), _mth(leaves[k:])]
    return [*_audit_path(leaves[k:], index - k), _mth(leaves[:k])]


def _root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2 inclusion verification; None when the path has the wrong shape."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = _h(_NODE + p + r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _h(_NODE + r + p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


class TopTree:
    """The fixed-depth tree over bucket hashes, held in memory (2·N_BUCKETS − 1 nodes)."""

    __slots__ = ("_nodes",)

    def __init__(self, bucket_hashes: Sequence[bytes]) -> None:
        if len(bucket_hashes) != N_BUCKETS:
            raise ValueError(f"need {N_BUCKETS} bucket hashes")
        nodes = [EMPTY] * N_BUCKETS + list(bucket_hashes)  # heap layout, root at 1
        for i in range(N_BUCKETS - 1, 0, -1):
            nodes[i] = _h(_TOP + nodes[2 * i] + nodes[2 * i + 1])
        self._nodes = nodes

    @property
    def root(self) -> bytes:
        return self._nodes[1]

    def bucket(self, index: int) -> bytes:
        return self._nodes[N_BUCKETS + index]

    def with_buckets(self, changes: dict[int, bytes]) -> TopTree:
        """A copy with some bucket hashes replaced, re-hashing only their ancestors."""
        new = TopTree.__new__(TopTree)
        nodes = list(self._nodes)
        dirty: set[int] = set()
        for index, digest in changes.items():
            nodes[N_BUCKETS + index] = digest
            dirty.add((N_BUCKETS + index) >> 1)
        sha = hashlib.sha256
        while dirty:
            for i in dirty:
                nodes[i] = sha(_TOP + nodes[2 * i] + nodes[2 * i + 1]).digest()
            dirty = {i >> 1 for i in dirty if i > 1}
        new._nodes = nodes
        return new

    def path(self, index: int) -> list[bytes]:
        """Siblings from the bucket up to the root (DEPTH hashes)."""
        out, i = [], N_BUCKETS + index
        while i > 1:
            out.append(self._nodes[i ^ 1])
            i >>= 1
        return out


@dataclass(frozen=True, slots=True)
class Proof:
    """Inclusion proof of one state entry against an app hash.

    Attributes:
        key, value: the proven entry.
        leaf_index: position of the entry's leaf among its bucket's leaves (key order).
        neighbours: the bucket's other leaf hashes, in key order (the bucket holds
            ``len(neighbours) + 1`` leaves).
        top_path: DEPTH sibling hashes from the bucket to the root.
    """

    key: bytes
    value: bytes
    leaf_index: int
    neighbours: tuple[bytes, ...]
    top_path: tuple[bytes, ...]

    def to_value(self) -> list[object]:
        """Canonical array form, for queries over the wire."""
        return [self.key, self.value, self.leaf_index, list(self.neighbours), list(self.top_path)]


def proof_from_value(value: object) -> Proof:
    """Inverse of :meth:`Proof.to_value` (a member parsing a proof it was sent).

    Raises:
        ValueError: not a proof's array form.
    """
    if not isinstance(value, list) or len(value) != 5:
        raise ValueError("a proof is [key, value, leaf_index, neighbours, top_path]")
    key, val, index, neighbours, top_path = value
    ok = isinstance(key, bytes) and isinstance(val, bytes) and isinstance(index, int)
    paths = (neighbours, top_path)
    ok = ok and all(isinstance(p, list) and all(isinstance(h, bytes) for h in p) for p in paths)
    if not ok:
        raise ValueError("proof fields have wrong types")
    return Proof(key, val, index, tuple(neighbours), tuple(top_path))


def make_proof(
    key: bytes, value: bytes, bucket_leaves: Sequence[bytes], index: int, top: TopTree
) -> Proof:
    """Build the proof of ``bucket_leaves[index]`` (leaf hashes of key's bucket, key order)."""
    neighbours = (*bucket_leaves[:index], *bucket_leaves[index + 1 :])
    return Proof(key, value, index, neighbours, tuple(top.path(bucket_of(key))))


def verify_proof(proof: Proof, app_hash: bytes) -> bool:
    """True when ``proof`` shows ``proof.key = proof.value`` in the state with root ``app_hash``."""
    if len(proof.top_path) != DEPTH or not 0 <= proof.leaf_index <= len(proof.neighbours):
        return False
    if any(len(h) != 32 for h in proof.neighbours):
        return False  # a short or long "hash" would shift the leaf's place in the bucket bytes
    i = proof.leaf_index
    leaves = (*proof.neighbours[:i], leaf_hash(proof.key, proof.value), *proof.neighbours[i:])
    r = bucket_root(leaves)
    i = N_BUCKETS + bucket_of(proof.key)
    for sibling in proof.top_path:
        r = _h(_TOP + sibling + r) if i & 1 else _h(_TOP + r + sibling)
        i >>= 1
    return r == app_hash
