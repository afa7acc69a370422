"""Merkle trees: RFC 6962 tx roots, flat bucket hashes, state proofs that verify and fail when
tampered."""

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


@given(
    st.dictionaries(
        st.binary(min_size=1, max_size=12), st.binary(max_size=12), min_size=1, max_size=60
    )
)
@settings(max_examples=40)
def test_every_key_proves_and_tampering_fails(items: dict[bytes, bytes]) -> None:
    """Each entry's proof verifies against the root; changing value, key or a path hash fails."""
    buckets: dict[int, list[bytes]] = {}
    for k in sorted(items):
        buckets.setdefault(merkle.bucket_of(k), []).append(k)
    roots = [merkle.EMPTY] * merkle.N_BUCKETS
    for b, ks in buckets.items():
        roots[b] = merkle.bucket_root([merkle.leaf_hash(k, items[k]) for k in ks])
    top = merkle.TopTree(roots)
    for k, v in items.items():
        ks = buckets[merkle.bucket_of(k)]
        leaves = [merkle.leaf_hash(x, items[x]) for x in ks]
        proof = merkle.make_proof(k, v, leaves, ks.index(k), top)
        assert merkle.verify_proof(proof, top.root)
        assert not merkle.verify_proof(dataclasses.replace(proof, value=v + b"x"), top.root)
        assert not merkle.verify_proof(dataclasses.replace(proof, key=k + b"x"), top.root)
        bad_top = (bytes(32), *proof.top_path[1:])
        assert not merkle.verify_proof(dataclasses.replace(proof, top_path=bad_top), top.root)
        if proof.neighbours:
            bad = (bytes(32), *proof.neighbours[1:])
            assert not merkle.verify_proof(dataclasses.replace(proof, neighbours=bad), top.root)
            moved = dataclasses.replace(
                proof, leaf_index=(proof.leaf_index + 1) % (len(proof.neighbours) + 1)
            )
            assert not merkle.verify_proof(moved, top.root)


def _same_bucket_keys(n: int) -> list[bytes]:
    """``n`` distinct keys that all fall into one bucket, sorted."""
    target = merkle.bucket_of(b"k0")
    keys = [k for k in (f"k{i}".encode() for i in range(200_000)) if merkle.bucket_of(k) == target]
    return sorted(keys[:n])


def test_bucket_hash_is_one_flat_hash_of_its_leaves_in_key_order() -> None:
    """bucket = sha256(0x03 || leaf hashes in key order); empty bucket = sha256("")."""
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(5)]
    assert merkle.bucket_root(leaves) == hashlib.sha256(b"\x03" + b"".join(leaves)).digest()
    assert merkle.bucket_root([]) == hashlib.sha256(b"").digest()
    assert merkle.bucket_root_joined(b"".join(leaves)) == merkle.bucket_root(leaves)
    assert merkle.bucket_root(leaves[::-1]) != merkle.bucket_root(leaves)


def test_proof_in_a_crowded_bucket_pins_place_and_neighbours() -> None:
    """In a bucket of 6 leaves every proof verifies; a shifted index, a dropped or reordered
    neighbour, or a neighbour of the wrong length (which would shift the bytes) does not."""
    keys = _same_bucket_keys(6)
    assert len(keys) == 6
    items = {k: b"v" + k for k in keys}
    leaves = [merkle.leaf_hash(k, items[k]) for k in keys]
    roots = [merkle.EMPTY] * merkle.N_BUCKETS
    roots[merkle.bucket_of(keys[0])] = merkle.bucket_root(leaves)
    top = merkle.TopTree(roots)
    for index, k in enumerate(keys):
        proof = merkle.make_proof(k, items[k], leaves, index, top)
        assert len(proof.neighbours) == 5
        assert merkle.verify_proof(proof, top.root)
        for wrong in {index - 1, index + 1, -1, 6} - {index}:
            assert not merkle.verify_proof(dataclasses.replace(proof, leaf_index=wrong), top.root)
        n = proof.neighbours
        for changed in (n[1:], n[::-1], (n[0][:31], *n[1:]), (n[0] + b"\x00", *n[1:])):
            assert not merkle.verify_proof(dataclasses.replace(proof, neighbours=changed), top.root)
    # Two neighbours fused into one 64-byte "hash" give the same bucket bytes: refused anyway.
    proof = merkle.make_proof(keys[0], items[keys[0]], leaves, 0, top)
    fused = (proof.neighbours[0] + proof.neighbours[1], *proof.neighbours[2:])
    assert not merkle.verify_proof(dataclasses.replace(proof, neighbours=fused), top.root)
    # A key too long for any leaf (a hostile server's answer) is refused, not an OverflowError.
    assert not merkle.verify_proof(dataclasses.replace(proof, key=b"k" * 0x10000), top.root)


def _reference_root(nodes: list[bytes]) -> bytes:
    """Independent top-tree root: group 16 children (fewer only at the root), hash 0x02 ||
    their concatenation, repeat."""
    if len(nodes) == 1:
        return nodes[0]
    groups = [nodes[i : i + 16] for i in range(0, len(nodes), 16)]
    return _reference_root([hashlib.sha256(b"\x02" + b"".join(g)).digest() for g in groups])


def test_top_tree_shape_and_root_match_an_independent_reference() -> None:
    """16,384 buckets under a 16-ary tree (1,024, 64, 4 nodes, then the root); 48 siblings."""
    roots = [hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(merkle.N_BUCKETS)]
    assert merkle.N_BUCKETS == 16_384
    assert merkle.LEVEL_SIZES == (16_384, 1_024, 64, 4, 1)
    assert merkle.PATH_HASHES == 48
    top = merkle.TopTree(roots)
    assert top.root == _reference_root(roots)
    assert top.bucket(12_345) == roots[12_345]
    assert len(top.path(0)) == len(top.path(merkle.N_BUCKETS - 1)) == 48
    with pytest.raises(ValueError, match="16384 bucket hashes"):
        merkle.TopTree(roots[:-1])


def test_incremental_top_tree_equals_full_rebuild() -> None:
    """Re-hashing only dirty paths gives the same root as building the tree from scratch, and
    leaves the tree it was made from as it was."""
    roots = [merkle.EMPTY] * merkle.N_BUCKETS
    top = merkle.TopTree(roots)
    before = top.root
    changes = {i * 37 % merkle.N_BUCKETS: hashlib.sha256(bytes([i])).digest() for i in range(50)}
    changes[merkle.N_BUCKETS - 1] = hashlib.sha256(b"last").digest()
    for b, h in changes.items():
        roots[b] = h
    changed = top.with_buckets(changes)
    assert changed.root == merkle.TopTree(roots).root == _reference_root(roots)
    assert top.root == before
    assert all(top.bucket(b) == merkle.EMPTY for b in changes)  # no shared page was written
    assert all(changed.bucket(b) == h for b, h in changes.items())
    assert changed.with_buckets({0: merkle.EMPTY}).root != changed.root  # bucket 0 was set


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
