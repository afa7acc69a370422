"""Merkle trees: RFC 6962 tx roots, the key-ordered state tree (scheme 3), state proofs that verify
and fail when tampered."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import block, codec, merkle, state
from ledger.store import Store
from tests.unit.ledger.helpers import N1, SLOT, T0, Signer, commit, genesis, measure, open_app


def _rfc6962(leaves: list[bytes]) -> bytes:
    """Independent recursive MTH of RFC 6962 §2.1 over raw leaf data."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _rfc6962(leaves[:k]) + _rfc6962(leaves[k:])).digest()


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=40))
@settings(max_examples=60)
def test_list_root_is_rfc6962(hashes: list[bytes]) -> None:
    """txs_hash uses the RFC 6962 tree hash (checked against a recursive reference)."""
    assert merkle.list_root(hashes) == _rfc6962(hashes)


def _order(key: bytes | None) -> tuple[int, bytes]:
    """Sort key of a level's element: the closing node (None) after every key."""
    return (1, b"") if key is None else (0, key)


def _reference_tree(items: dict[bytes, bytes]) -> tuple[bytes, dict[bytes, merkle.Proof]]:
    """Independent of ledger/statetree.py: the app hash and every key's proof, computed from
    each partition's levels (``merkle.partition_levels``) by walking them as lists."""
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for k in sorted(items):
        by_partition.setdefault(merkle.partition_of(k), []).append(
            (k, merkle.leaf_hash(k, items[k]))
        )
    roots = [merkle.EMPTY] * merkle.N_PARTITIONS
    levels_of = {p: merkle.partition_levels(leaves) for p, leaves in by_partition.items()}
    for p, levels in levels_of.items():
        roots[p] = levels[-1][-1][1]
    proofs = {}
    for k, v in items.items():
        p = merkle.partition_of(k)
        levels, below, steps = levels_of[p], k, []
        for level in range(1, len(levels)):
            keys_above = [key for key, _ in levels[level]]
            at = next(i for i, key in enumerate(keys_above) if _order(key) >= _order(below))
            lo = _order(keys_above[at - 1]) if at else (-1, b"")
            kids = [
                (key, h)
                for key, h in levels[level - 1]
                if lo < _order(key) <= _order(keys_above[at])
            ]
            index = [key for key, _ in kids].index(below)
            steps.append((index, tuple(h for i, (_, h) in enumerate(kids) if i != index)))
            below = keys_above[at]
        proofs[k] = merkle.Proof(k, v, tuple(steps), tuple(merkle.top_path(roots, p)))
    return merkle.app_hash(roots), proofs


@given(
    st.dictionaries(
        st.binary(min_size=1, max_size=12), st.binary(max_size=12), min_size=1, max_size=60
    )
)
@settings(max_examples=40)
def test_every_key_proves_and_tampering_fails(items: dict[bytes, bytes]) -> None:
    """Each entry's proof verifies against the root; changing value, key or a path hash fails."""
    root, proofs = _reference_tree(items)
    for k, v in items.items():
        proof = proofs[k]
        assert merkle.verify_proof(proof, root)
        assert not merkle.verify_proof(dataclasses.replace(proof, value=v + b"x"), root)
        assert not merkle.verify_proof(dataclasses.replace(proof, key=k + b"x"), root)
        bad_top = (bytes(32), *proof.top_path[1:])
        assert not merkle.verify_proof(dataclasses.replace(proof, top_path=bad_top), root)
        index, others = proof.path[0]
        if others:
            bad = ((index, (bytes(32), *others[1:])), *proof.path[1:])
            assert not merkle.verify_proof(dataclasses.replace(proof, path=bad), root)
            moved = ((index + 1) % (len(others) + 1), others)
            assert not merkle.verify_proof(
                dataclasses.replace(proof, path=(moved, *proof.path[1:])), root
            )


def _keys_of_partition(n: int, rank: int) -> list[bytes]:
    """``n`` keys of partition 0 and exactly ``rank``, in key order."""
    found = []
    for i in range(2_000_000):
        key = f"k{i}".encode()
        if merkle.place(key) == (0, rank):
            found.append(key)
            if len(found) == n:
                return sorted(found)
    raise AssertionError("not enough keys")


def test_tree_shape_and_hashes_follow_the_spec() -> None:
    """Leaf = sha256(0x00 ‖ u16 len ‖ key ‖ sha256(value)); a key of rank ≥ 1 closes a
    level-1 node over the leaves since the previous such key; the closing node takes the rest;
    node = sha256(0x04 ‖ level ‖ children); the top level is 1 + the highest rank."""
    low, high = _keys_of_partition(4, 0), _keys_of_partition(1, 1)[0]
    keys = sorted([*low, high])
    leaf = {k: merkle.leaf_hash(k, b"v") for k in keys}
    assert (
        leaf[high]
        == hashlib.sha256(
            b"\x00" + len(high).to_bytes(2, "big") + high + hashlib.sha256(b"v").digest()
        ).digest()
    )
    at = keys.index(high)
    first = hashlib.sha256(b"\x04\x01" + b"".join(leaf[k] for k in keys[: at + 1])).digest()
    rest = hashlib.sha256(b"\x04\x01" + b"".join(leaf[k] for k in keys[at + 1 :])).digest()
    root = hashlib.sha256(b"\x04\x02" + first + rest).digest()
    levels = merkle.partition_levels([(k, leaf[k]) for k in keys])
    assert levels[1] == [(high, first), (None, rest)]
    assert levels[2] == [(None, root)]
    assert merkle.partition_root([(k, leaf[k]) for k in keys]) == root
    assert (
        merkle.partition_root([(k, leaf[k]) for k in low])
        == hashlib.sha256(b"\x04\x01" + b"".join(leaf[k] for k in low)).digest()
    )
    assert merkle.partition_root([]) == merkle.EMPTY == hashlib.sha256(b"").digest()


def test_nodes_average_sixteen_children() -> None:
    """Ranks count leading zero nibbles: over 20,000 keys a level-1 node has 16 ± 2 children
    on average, and a partition of ≈ 300 keys has 3 levels."""
    keys = [f"meas/{i:013d}/m".encode() for i in range(20_000)]
    ranks = [merkle.place(k)[1] for k in keys]
    assert 14 <= len(keys) / sum(r >= 1 for r in ranks) <= 18
    assert 180 <= len(keys) / sum(r >= 2 for r in ranks) <= 400
    partitions = [merkle.place(k)[0] for k in keys]
    assert set(partitions) == set(range(merkle.N_PARTITIONS))


def test_proof_pins_place_length_and_level_count() -> None:
    """In a node of several children every proof verifies; a shifted index, a dropped or
    reordered sibling, a sibling of the wrong length, two fused siblings, a missing or extra
    level, or a key too long for any leaf does not."""
    keys = _keys_of_partition(6, 0)
    items = {k: b"v" + k for k in keys}
    root, proofs = _reference_tree(items)
    for index, k in enumerate(keys):
        proof = proofs[k]
        assert proof.path[0][0] == index
        assert len(proof.path[0][1]) == 5
        assert merkle.verify_proof(proof, root)
        n = proof.path[0][1]
        for wrong in {index - 1, index + 1, -1, 6} - {index}:
            step = ((wrong, n),)
            assert not merkle.verify_proof(dataclasses.replace(proof, path=step), root)
        for changed in (n[1:], n[::-1], (n[0][:31], *n[1:]), (n[0] + b"\x00", *n[1:])):
            step = ((index, changed),)
            assert not merkle.verify_proof(dataclasses.replace(proof, path=step), root)
    proof = proofs[keys[0]]
    n = proof.path[0][1]
    fused = ((0, (n[0] + n[1], *n[2:])),)
    assert not merkle.verify_proof(dataclasses.replace(proof, path=fused), root)
    assert not merkle.verify_proof(dataclasses.replace(proof, path=()), root)
    extra = (*proof.path, (0, ()))
    assert not merkle.verify_proof(dataclasses.replace(proof, path=extra), root)
    assert not merkle.verify_proof(dataclasses.replace(proof, key=b"k" * 0x10000), root)


def _reference_root(nodes: list[bytes]) -> bytes:
    """Independent top-tree root: group 16 children (fewer only at the root), hash 0x02 ||
    their concatenation, repeat."""
    if len(nodes) == 1:
        return nodes[0]
    groups = [nodes[i : i + 16] for i in range(0, len(nodes), 16)]
    return _reference_root([hashlib.sha256(b"\x02" + b"".join(g)).digest() for g in groups])


def test_app_hash_folds_the_64_partition_roots() -> None:
    """64 partition roots under a 16-ary top (4 nodes, then the root); 18 siblings."""
    roots = [hashlib.sha256(bytes([i])).digest() for i in range(merkle.N_PARTITIONS)]
    assert merkle.N_PARTITIONS == 64
    assert merkle.TOP_PATH_HASHES == 18
    assert merkle.app_hash(roots) == _reference_root(roots)
    assert all(len(merkle.top_path(roots, p)) == 18 for p in (0, 17, 63))
    with pytest.raises(ValueError, match="64 partition roots"):
        merkle.app_hash(roots[:-1])


def test_store_proof_of_balance_against_app_hash(tmp_path: Path) -> None:
    """A member's measurement proved by the store verifies against the app hash and the header."""
    app = open_app(tmp_path, genesis(meters={"M1": N1.public_key}))
    commit(app, [Signer(N1)("SetMeasure", measure("M1", T0, 123, 4))], T0 + SLOT)
    proof = app.store.prove(state.k_measure(T0, "M1"))
    assert proof is not None
    assert merkle.verify_proof(proof, app.app_hash)
    sent = codec.decode(codec.encode(proof.to_value()))  # as a member receives it
    assert merkle.verify_proof(merkle.proof_from_value(sent), app.app_hash)
    with pytest.raises(ValueError, match="proof"):
        merkle.proof_from_value([1, 2])
    # Tendermint convention: the next header carries this app hash.
    commit(app, [], T0 + SLOT + 1)
    header = block.decode(app.store.block(app.height) or b"").header
    assert merkle.verify_proof(proof, header.app_hash)
    assert app.store.prove(b"no/such/key") is None
    reopened = Store(tmp_path / "x", genesis(), durable=False)
    assert not merkle.verify_proof(proof, reopened.app_hash)
