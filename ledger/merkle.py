"""Merkle trees: RFC 6962 lists (tx hashes) and the bucketed state tree.

Spec: docs/spec/ledger.md §6. The app hash is the root of a fixed 16-ary tree over
``N_BUCKETS`` buckets; a state key lives in bucket ``sha256(key)[:2] >> 2``; a bucket's hash is
``sha256(0x03 || leaf hashes in key order)``, one flat hash (a bucket holds ~n/16384 leaves, so
re-hashing one is a single C call; a proof carries the bucket's other leaf hashes), a leaf hash
being ``sha256(0x00 || u16(len(key)) || key || sha256(value))``. A block re-hashes only its dirty
buckets and their ancestors. Everything here is pure; :func:`verify_proof` is what members run.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SCHEME = 2
"""App-hash scheme: 2 = flat bucket hashes under a 16-ary top over 16,384 buckets (2026-11);
1 = an RFC 6962 tree inside each bucket, a binary top over 4,096.
Stores record it (ledger/store.py); the block version was bumped with it (ledger/block.py)."""
BUCKET_BITS = 14
N_BUCKETS = 1 << BUCKET_BITS
ARITY = 16
"""Children per top-tree node: 16,384 buckets → 1,024 → 64 → 4 → the root (of 4)."""
LEVEL_SIZES = (N_BUCKETS, N_BUCKETS // ARITY, N_BUCKETS // ARITY**2, N_BUCKETS // ARITY**3, 1)
PATH_HASHES = sum(min(ARITY, size) - 1 for size in LEVEL_SIZES[:-1])
"""Sibling hashes in a proof's top path: 15 + 15 + 15 + 3."""
EMPTY = hashlib.sha256(b"").digest()
"""Hash of an empty list (RFC 6962 §2.1: MTH({}) = SHA-256())."""

_LEAF = b"\x00"
_NODE = b"\x01"
_TOP = b"\x02"  # top-tree nodes get their own prefix so a bucket root never passes as one
_BUCKET = b"\x03"  # and so do buckets: no leaf, list node or top node can pose as one


_sha256 = hashlib.sha256


def _h(data: bytes) -> bytes:
    return _sha256(data).digest()


def bucket_of(key: bytes) -> int:
    """The bucket index [0, N_BUCKETS) of a state key."""
    # The hash functions a commit calls per written key use hashlib directly, not _h: one
    # Python call less each, ~3 per key (docs/spec/consensus.md §11).
    digest = _sha256(key).digest()
    return ((digest[0] << 8) | digest[1]) >> (16 - BUCKET_BITS)


def leaf_hash(key: bytes, value: bytes) -> bytes:
    """Hash of one state entry (length-prefixed key, so no two (key, value) pairs collide)."""
    return _sha256(_LEAF + len(key).to_bytes(2, "big") + key + _sha256(value).digest()).digest()


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
    return _sha256(_BUCKET + joined).digest() if joined else EMPTY


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


def fold(nodes: bytes | bytearray) -> bytes:
    """The next level up: one node per group of ``ARITY`` concatenated 32-byte hashes."""
    step = ARITY * 32
    sha = hashlib.sha256
    return b"".join([sha(_TOP + nodes[i : i + step]).digest() for i in range(0, len(nodes), step)])


def fold_to_root(nodes: bytes) -> bytes:
    """The root above one level of a top tree (its nodes concatenated)."""
    while len(nodes) > 32:
        nodes = fold(nodes)
    return nodes


_PAGE_NODES = 256
"""Hashes per page of a top-tree level (8 KiB): a node's 16 children always share a page."""


def _pages(hashes: bytes | bytearray) -> list[bytearray]:
    step = _PAGE_NODES * 32
    return [bytearray(hashes[i : i + step]) for i in range(0, len(hashes), step)]


def _copy_pages(level: list[bytearray], nodes: Iterable[int]) -> None:
    """Give ``level`` (a list shared page by page with another tree) its own copy of each page
    that holds one of ``nodes``."""
    for page in {node // _PAGE_NODES for node in nodes}:
        level[page] = bytearray(level[page])


class TopTree:
    """The tree over the bucket hashes, held in memory: a node hashes its children's hashes
    concatenated, ``sha256(0x02 || child_1 || … || child_k)``, k = 16 (4 at the root).

    Each level is a list of 8 KiB pages of 32-byte hashes (≈ 0.55 MB in all, no per-node
    objects). A node's children are one slice of one page, so re-hashing a node is one C call
    over 512 bytes. :meth:`with_buckets` copies only the pages it changes: the tree a commit
    builds shares the others with the committed one, and the pages it allocates are small
    enough for the allocator to reuse (whole 512 KiB levels left ≈ 2 MB of freed heap behind).
    """

    __slots__ = ("_levels",)

    def __init__(self, bucket_hashes: Sequence[bytes]) -> None:
        if len(bucket_hashes) != N_BUCKETS or any(len(h) != 32 for h in bucket_hashes):
            raise ValueError(f"need {N_BUCKETS} bucket hashes of 32 bytes")
        step = _PAGE_NODES
        levels = [
            [bytearray().join(bucket_hashes[i : i + step]) for i in range(0, N_BUCKETS, step)]
        ]
        while len(levels[-1]) > 1 or len(levels[-1][0]) > 32:
            levels.append(_pages(b"".join([fold(page) for page in levels[-1]])))
        self._levels = levels

    @property
    def root(self) -> bytes:
        return bytes(self._levels[-1][0])

    def _node(self, level: int, node: int) -> bytes:
        at = (node % _PAGE_NODES) * 32
        return bytes(self._levels[level][node // _PAGE_NODES][at : at + 32])

    def bucket(self, index: int) -> bytes:
        return self._node(0, index)

    def with_buckets(self, changes: dict[int, bytes]) -> TopTree:
        """A tree with some bucket hashes replaced, re-hashing only their ancestors; this one
        is left as it was."""
        new = TopTree.__new__(TopTree)
        levels = [list(pages) for pages in self._levels]
        _copy_pages(levels[0], changes)
        level0 = levels[0]
        for index, digest in changes.items():
            at = (index % _PAGE_NODES) * 32
            level0[index // _PAGE_NODES][at : at + 32] = digest
        dirty = {index // ARITY for index in changes}
        sha = hashlib.sha256
        group = ARITY * 32  # a node's children: one 512-byte slice of one page below
        per_page = _PAGE_NODES // ARITY  # nodes whose children share one page below
        for below, above in itertools.pairwise(levels):
            _copy_pages(above, dirty)
            for node in dirty:
                start = (node % per_page) * group
                digest = sha(_TOP + below[node // per_page][start : start + group]).digest()
                at = (node % _PAGE_NODES) * 32
                above[node // _PAGE_NODES][at : at + 32] = digest
            dirty = {node // ARITY for node in dirty}
        new._levels = levels
        return new

    def path(self, index: int) -> list[bytes]:
        """The siblings of the bucket and of each ancestor below the root, level by level, each
        group in child order without the node itself (``PATH_HASHES`` hashes)."""
        out: list[bytes] = []
        for level, size in enumerate(LEVEL_SIZES[:-1]):
            first = index - index % ARITY
            siblings = range(first, min(first + ARITY, size))
            out.extend(self._node(level, i) for i in siblings if i != index)
            index //= ARITY
        return out


@dataclass(frozen=True, slots=True)
class Proof:
    """Inclusion proof of one state entry against an app hash.

    Attributes:
        key, value: the proven entry.
        leaf_index: position of the entry's leaf among its bucket's leaves (key order).
        neighbours: the bucket's other leaf hashes, in key order (the bucket holds
            ``len(neighbours) + 1`` leaves).
        top_path: ``PATH_HASHES`` sibling hashes from the bucket up (:meth:`TopTree.path`).
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
    if len(proof.top_path) != PATH_HASHES or not 0 <= proof.leaf_index <= len(proof.neighbours):
        return False
    if len(proof.key) > 0xFFFF:
        return False  # no leaf has such a key (u16 length), and leaf_hash could not encode it
    if any(len(h) != 32 for h in (*proof.neighbours, *proof.top_path)):
        return False  # a short or long "hash" would shift the others' places in the hashed bytes
    i = proof.leaf_index
    leaves = (*proof.neighbours[:i], leaf_hash(proof.key, proof.value), *proof.neighbours[i:])
    node, index, taken = bucket_root(leaves), bucket_of(proof.key), 0
    for size in LEVEL_SIZES[:-1]:
        siblings = proof.top_path[taken : taken + min(ARITY, size) - 1]
        taken += len(siblings)
        at = index % ARITY
        node = _h(_TOP + b"".join((*siblings[:at], node, *siblings[at:])))
        index //= ARITY
    return node == app_hash
