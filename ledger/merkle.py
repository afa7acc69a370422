"""Merkle trees: RFC 6962 lists (tx hashes) and the key-ordered state tree.

Spec: docs/spec/ledger.md §6. A state key lives in one of 64 partitions (the first 6 bits of
sha256(key)); each partition is a Merkle search tree over its keys in key order, whose node
boundaries are the keys of high enough rank (leading zero bits of the same hash), so the tree's
shape is a function of the key set alone and a block's neighbouring keys share nodes. The app
hash folds the 64 partition roots 16-ary (64 → 4 → 1). A leaf hash is
``sha256(0x00 || u16(len(key)) || key || sha256(value))``. Everything here is pure; the store
(ledger/store.py) keeps the nodes and updates only the ones a block touches;
:func:`verify_proof` is what members run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

SCHEME = 3
"""App-hash scheme: 3 = a key-ordered Merkle search tree in each of 64 hash partitions (2026-11);
2 = flat bucket hashes under a 16-ary top over 16,384 buckets; 1 = RFC 6962 buckets under a
binary top over 4,096. Stores record it (ledger/store.py); the block version follows it
(ledger/block.py)."""
PARTITION_BITS = 6
N_PARTITIONS = 1 << PARTITION_BITS
"""A key's partition: the first 6 bits of sha256(key). The 64 partitions are a snapshot's chunks."""
RANK_BITS = 4
"""A key's rank: the leading zero groups of 4 bits in sha256(key) after its first byte, so one
key in 16 closes a level-1 node, one in 256 a level-2 node: nodes of ≈ 16 children."""
ARITY = 16
"""Children per top node over the partition roots: 64 → 4 → the root."""
TOP_PATH_HASHES = (ARITY - 1) + (N_PARTITIONS // ARITY - 1)
"""Sibling hashes in a proof's top path: 15 + 3."""
MAX_LEVELS = 64 // RANK_BITS + 1
"""Levels above the leaves a partition can have (a rank counts at most 64 bits)."""
EMPTY = hashlib.sha256(b"").digest()
"""Hash of an empty list (RFC 6962 §2.1: MTH({}) = SHA-256()), and the root of an empty
partition."""

_LEAF = b"\x00"
_NODE = b"\x01"
_TOP = b"\x02"  # top nodes get their own prefix so a partition root never passes as one
_NODE_PREFIXES = [b"\x04" + bytes((level,)) for level in range(MAX_LEVELS + 1)]
"""A tree node of level L hashes with 0x04 ‖ L: no leaf, list node, top node or node of another
level can pose as one (0x03 was scheme 2's buckets)."""


_sha256 = hashlib.sha256


def _h(data: bytes) -> bytes:
    return _sha256(data).digest()


def place(key: bytes) -> tuple[int, int]:
    """(partition, rank) of a state key, from one SHA-256."""
    # The hash functions a commit calls per written key use hashlib directly, not _h: one
    # Python call less each (docs/spec/consensus.md §11).
    digest = _sha256(key).digest()
    zeros = 64 - int.from_bytes(digest[1:9], "big").bit_length()
    return digest[0] >> (8 - PARTITION_BITS), zeros // RANK_BITS


def partition_of(key: bytes) -> int:
    """The partition [0, N_PARTITIONS) of a state key."""
    return place(key)[0]


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


def node_hash(level: int, children: bytes) -> bytes:
    """Hash of a tree node of ``level`` (≥ 1) from its children's hashes, concatenated in order."""
    # Every hash is 32 bytes, so the concatenation needs no separators.
    return _sha256(_NODE_PREFIXES[level] + children).digest()


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


Node = tuple[bytes | None, bytes]
"""One element of a tree level: (its key, its hash); key None is the level's closing element."""


def partition_levels(leaves: Sequence[tuple[bytes, bytes]]) -> list[list[Node]]:
    """Every level of one partition's tree, built from its (key, leaf hash) pairs in key order.

    ``levels[0]`` is the leaves. Level L ≥ 1 has one node per key of rank ≥ L, whose children
    are the level-(L − 1) elements after the previous such key up to and including it, and one
    closing node (key None) over the rest, the level below's closing node included. The top
    level is 1 + the highest rank: its closing node alone, the partition's root. The shape
    depends on the set of keys only, never on the order they were written in.
    """
    if not leaves:
        return [[]]
    ranks = {key: place(key)[1] for key, _ in leaves}
    levels: list[list[Node]] = [list(leaves)]
    for level in range(1, max(ranks.values()) + 2):
        nodes: list[Node] = []
        children: list[bytes] = []
        for key, digest in levels[-1]:
            children.append(digest)
            if key is not None and ranks[key] >= level:
                nodes.append((key, node_hash(level, b"".join(children))))
                children = []
        nodes.append((None, node_hash(level, b"".join(children))))
        levels.append(nodes)
    return levels


def partition_root(leaves: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Root of one partition from its (key, leaf hash) pairs in key order (empty: ``EMPTY``)."""
    return partition_levels(leaves)[-1][-1][1] if leaves else EMPTY


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


def app_hash(partition_roots: Sequence[bytes]) -> bytes:
    """The app hash over the ``N_PARTITIONS`` partition roots (64 → 4 → 1, 16-ary)."""
    if len(partition_roots) != N_PARTITIONS or any(len(r) != 32 for r in partition_roots):
        raise ValueError(f"need {N_PARTITIONS} partition roots of 32 bytes")
    return fold_to_root(b"".join(partition_roots))


def top_path(partition_roots: Sequence[bytes], partition: int) -> list[bytes]:
    """The siblings of a partition's root and of its group's node, each in child order without
    the node itself (``TOP_PATH_HASHES`` hashes)."""
    group = partition - partition % ARITY
    out = [partition_roots[i] for i in range(group, group + ARITY) if i != partition]
    groups = fold(b"".join(partition_roots))
    mine = partition // ARITY
    out.extend(groups[i * 32 : i * 32 + 32] for i in range(N_PARTITIONS // ARITY) if i != mine)
    return out


@dataclass(frozen=True, slots=True)
class Proof:
    """Inclusion proof of one state entry against an app hash.

    Attributes:
        key, value: the proven entry.
        path: one step per tree level from 1 up to the partition's root: (the place of the
            element below among the node's children, the other children's hashes in order).
        top_path: ``TOP_PATH_HASHES`` siblings above the partition's root (:func:`top_path`).
    """

    key: bytes
    value: bytes
    path: tuple[tuple[int, tuple[bytes, ...]], ...]
    top_path: tuple[bytes, ...]

    def to_value(self) -> list[object]:
        """Canonical array form, for queries over the wire."""
        steps = [[index, list(others)] for index, others in self.path]
        return [self.key, self.value, steps, list(self.top_path)]


def proof_from_value(value: object) -> Proof:
    """Inverse of :meth:`Proof.to_value` (a member parsing a proof it was sent).

    Raises:
        ValueError: not a proof's array form.
    """
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError("a proof is [key, value, path, top_path]")
    key, val, steps, top = value
    if not (isinstance(key, bytes) and isinstance(val, bytes) and isinstance(steps, list)):
        raise ValueError("proof fields have wrong types")
    if not (isinstance(top, list) and all(isinstance(h, bytes) for h in top)):
        raise ValueError("proof top_path is not a list of hashes")
    path: list[tuple[int, tuple[bytes, ...]]] = []
    for step in steps:
        ok = isinstance(step, list) and len(step) == 2 and isinstance(step[0], int)
        if not (ok and isinstance(step[1], list) and all(isinstance(h, bytes) for h in step[1])):
            raise ValueError("a proof step is [index, [hash, …]]")
        path.append((step[0], tuple(step[1])))
    return Proof(key, val, tuple(path), tuple(top))


def verify_proof(proof: Proof, app_hash: bytes) -> bool:
    """True when ``proof`` shows ``proof.key = proof.value`` in the state with root ``app_hash``."""
    if len(proof.top_path) != TOP_PATH_HASHES or not 1 <= len(proof.path) <= MAX_LEVELS:
        return False
    if len(proof.key) > 0xFFFF:
        return False  # no leaf has such a key (u16 length), and leaf_hash could not encode it
    hashes = [*proof.top_path, *(h for _, others in proof.path for h in others)]
    if any(len(h) != 32 for h in hashes):
        return False  # a short or long "hash" would shift the others' places in the hashed bytes
    node = leaf_hash(proof.key, proof.value)
    for level, (index, others) in enumerate(proof.path, start=1):
        if not 0 <= index <= len(others):
            return False
        node = node_hash(level, b"".join((*others[:index], node, *others[index:])))
    partition = partition_of(proof.key)
    for index, siblings in (
        (partition % ARITY, proof.top_path[: ARITY - 1]),
        (partition // ARITY, proof.top_path[ARITY - 1 :]),
    ):
        node = _h(_TOP + b"".join((*siblings[:index], node, *siblings[index:])))
    return node == app_hash
