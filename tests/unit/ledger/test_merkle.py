"""Merkle trees: RFC 6962 roots, state proofs that verify and fail when tampered."""

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
        if proof.bucket_path:
            bad = (bytes(32), *proof.bucket_path[1:])
            assert not merkle.verify_proof(dataclasses.replace(proof, bucket_path=bad), top.root)
        if proof.bucket_size > 1:
            moved = dataclasses.replace(
                proof, leaf_index=(proof.leaf_index + 1) % proof.bucket_size
            )
            assert not merkle.verify_proof(moved, top.root)


def test_incremental_top_tree_equals_full_rebuild() -> None:
    """Re-hashing only dirty paths gives the same root as building the tree from scratch."""
    roots = [merkle.EMPTY] * merkle.N_BUCKETS
    top = merkle.TopTree(roots)
    changes = {i * 37 % merkle.N_BUCKETS: hashlib.sha256(bytes([i])).digest() for i in range(50)}
    for b, h in changes.items():
        roots[b] = h
    assert top.with_buckets(changes).root == merkle.TopTree(roots).root


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
