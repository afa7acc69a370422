"""The state tree kept in LMDB block by block equals the tree built from scratch (app-hash
scheme 3, docs/spec/ledger.md §6), whatever the order of inserts, updates and deletions, and
proves every key it holds."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle, statetree


class _Tree:
    """The ``tree`` and ``roots`` sub-dbs of one LMDB file, updated as the store does."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.tree: Any = env.open_db(b"tree")
        self.roots_db: Any = env.open_db(b"roots")
        self.tops = [0] * merkle.N_PARTITIONS
        self.roots = [merkle.EMPTY] * merkle.N_PARTITIONS

    def apply(self, writes: dict[bytes, bytes | None]) -> bytes:
        by_partition: dict[int, list[statetree.Write]] = {}
        for key, value in writes.items():
            partition, rank = merkle.place(key)
            leaf = None if value is None else merkle.leaf_hash(key, value)
            by_partition.setdefault(partition, []).append((key, rank, leaf))
        with self.env.begin(write=True) as txn:
            changed = statetree.update(txn, self.tree, self.roots_db, by_partition, self.tops)
        for partition, (root, top) in changed.items():
            self.roots[partition], self.tops[partition] = root, top
        return merkle.app_hash(self.roots)

    def records(self) -> dict[bytes, bytes]:
        with self.env.begin() as txn:
            return {bytes(k): bytes(v) for k, v in txn.cursor(db=self.tree)}


@contextmanager
def _tree() -> Iterator[_Tree]:
    with tempfile.TemporaryDirectory(prefix="lem-tree-") as tmp:
        env = lmdb.open(str(Path(tmp)), max_dbs=4, map_size=1 << 28, sync=False)
        try:
            yield _Tree(env)
        finally:
            env.close()


def _from_scratch(state: dict[bytes, bytes]) -> tuple[bytes, dict[bytes, bytes]]:
    """The app hash and every node record of ``state``, built by the pure reference."""
    roots = [merkle.EMPTY] * merkle.N_PARTITIONS
    records: dict[bytes, bytes] = {}
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key in sorted(state):
        leaf = merkle.leaf_hash(key, state[key])
        by_partition.setdefault(merkle.partition_of(key), []).append((key, leaf))
    for partition, leaves in by_partition.items():
        levels = merkle.partition_levels(leaves)
        roots[partition] = levels[-1][-1][1]
        for level, nodes in enumerate(levels):
            for key, digest in nodes:
                records[statetree.node_key(partition, level, key)] = digest
    return merkle.app_hash(roots), records


# Few distinct keys, so blocks update and delete keys they or earlier blocks wrote; short
# keys over a small alphabet give neighbours in key order and keys of every rank up to ~3.
_keys = st.binary(min_size=1, max_size=3).map(lambda b: bytes(97 + x % 4 for x in b))
_blocks = st.lists(
    st.dictionaries(_keys, st.one_of(st.none(), st.binary(max_size=4)), max_size=30),
    min_size=1,
    max_size=8,
)


@given(_blocks)
@settings(max_examples=150, deadline=None)
def test_incremental_tree_equals_the_tree_built_from_scratch(blocks: list[dict]) -> None:
    """After every block: the same app hash and exactly the same node records (no stale node
    left behind by a deletion or a lowered top level)."""
    state: dict[bytes, bytes] = {}
    with _tree() as tree:
        for writes in blocks:
            got = tree.apply(writes)
            for key, value in writes.items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
            want, records = _from_scratch(state)
            assert got == want
            assert tree.records() == records


def test_many_keys_many_levels_and_back_to_empty() -> None:
    """Thousands of keys (tops of 3–4 levels), then every key deleted in two blocks: every
    partition empties, its nodes and root record go, and the app hash is the empty state's."""
    keys = [f"meas/{slot:013d}/m{meter}".encode() for slot in range(40) for meter in range(60)]
    with _tree() as tree:
        for start in range(0, len(keys), 800):
            tree.apply({k: b"v" + k[-2:] for k in keys[start : start + 800]})
        state = {k: b"v" + k[-2:] for k in keys}
        assert merkle.app_hash(tree.roots) == _from_scratch(state)[0]
        assert max(tree.tops) >= 3
        tree.apply(dict.fromkeys(keys[::2]))
        tree.apply(dict.fromkeys(keys[1::2]))
        assert tree.records() == {}
        assert tree.roots == [merkle.EMPTY] * merkle.N_PARTITIONS
        with tree.env.begin() as txn:
            assert txn.stat(tree.roots_db)["entries"] == 0


@given(st.dictionaries(_keys, st.binary(max_size=4), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_every_key_proves_and_a_changed_value_does_not(state: dict[bytes, bytes]) -> None:
    with _tree() as tree:
        app = tree.apply(dict(state))
        with tree.env.begin() as txn:
            for key, value in state.items():
                proof = statetree.prove(txn, tree.tree, tree.roots_db, key, value)
                assert merkle.verify_proof(proof, app)
                assert merkle.verify_proof(merkle.proof_from_value(proof.to_value()), app)
                forged = merkle.Proof(key, value + b"x", proof.path, proof.top_path)
                assert not merkle.verify_proof(forged, app)


def test_build_writes_what_the_updates_write() -> None:
    """A snapshot restore (``build``) leaves the same records as block-by-block updates."""
    state = {f"k{i:04d}".encode(): bytes([i % 251]) for i in range(3_000)}
    with _tree() as updated, _tree() as built:
        updated.apply(dict(list(state.items())[:1_700]))
        updated.apply(dict(list(state.items())[1_700:]))
        with built.env.begin(write=True) as txn:
            leaves = [(k, merkle.leaf_hash(k, v)) for k, v in reversed(state.items())]
            roots, tops = statetree.build(txn, built.tree, built.roots_db, leaves)
        assert roots == updated.roots
        assert tops == updated.tops
        assert built.records() == updated.records()
