"""Decoder fuzzing: garbage, truncated, non-canonical, oversized tx and block bytes give typed
errors (TxRejected / BlockInvalid), never any other exception."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import block as blk
from ledger import tx as txm
from ledger.errors import BlockInvalid, TxRejected
from tests.unit.ledger.helpers import CHAIN, N1, VAL, measure

GOOD_TX = txm.make(N1, CHAIN, 3, "SetMeasure", measure("M1", 0, 10, 0))


def _good_block(version: int = blk.BLOCK_VERSION) -> bytes:
    header = blk.Header(
        version,
        CHAIN,
        5,
        1000,
        b"\x01" * 32,
        blk.txs_hash([GOOD_TX]),
        b"\x02" * 32,
        VAL.public_key,
        b"\x03" * 32,
        blk.commit_hash(None),
    )
    return blk.Block(header, (GOOD_TX,), None).encode()


GOOD_BLOCK = _good_block()


def test_a_header_of_the_old_app_hash_scheme_is_refused() -> None:
    """Headers of versions 1 and 2 (the bucketed app-hash schemes) are refused by name, not
    computed on."""
    assert blk.BLOCK_VERSION == 3
    for old in (1, 2):
        with pytest.raises(BlockInvalid, match=rf"header\.version {old} is not 3"):
            blk.decode(_good_block(version=old))


def _decode_verified(data: bytes) -> None:
    txm.decode(data).verify_signature()


def _try_tx(data: bytes) -> None:
    try:
        t = txm.decode(data)
        t.verify_signature()
    except TxRejected:
        pass


def _try_block(data: bytes) -> None:
    with contextlib.suppress(BlockInvalid):
        blk.decode(data)


def test_good_tx_round_trip() -> None:
    """A made tx decodes to its fields, its hash is sha256 of the bytes, its signature verifies."""
    t = txm.decode(GOOD_TX)
    t.verify_signature()
    assert (t.chain_id, t.signer, t.sequence, t.kind) == (CHAIN, N1.public_key, 3, "SetMeasure")
    assert t.hash == hashlib.sha256(GOOD_TX).digest()


def test_good_block_round_trip() -> None:
    """A block decodes and re-encodes to the same bytes; its hash is the header's."""
    b = blk.decode(GOOD_BLOCK)
    assert b.encode() == GOOD_BLOCK
    assert b.txs == (GOOD_TX,)


@given(st.binary(max_size=300))
@settings(max_examples=200)
def test_garbage(data: bytes) -> None:
    """Random bytes never raise anything but the typed errors."""
    _try_tx(data)
    _try_block(data)


@given(st.integers(min_value=0, max_value=len(GOOD_TX) - 1))
@settings(max_examples=50)
def test_truncated_tx(cut: int) -> None:
    """Every strict prefix of a valid tx is refused as malformed."""
    with pytest.raises(TxRejected) as exc:
        txm.decode(GOOD_TX[:cut])
    assert exc.value.reason.value == "malformed"


@given(st.integers(min_value=0, max_value=len(GOOD_BLOCK) - 1))
@settings(max_examples=50)
def test_truncated_block(cut: int) -> None:
    """Every strict prefix of a valid block is refused."""
    with pytest.raises(BlockInvalid):
        blk.decode(GOOD_BLOCK[:cut])


@given(st.integers(min_value=0, max_value=len(GOOD_TX) - 1), st.integers(1, 255))
@settings(max_examples=150)
def test_bit_flips_tx(pos: int, xor: int) -> None:
    """Any single-byte corruption of a tx is refused (malformed or bad signature)."""
    data = bytearray(GOOD_TX)
    data[pos] ^= xor
    with pytest.raises(TxRejected):
        _decode_verified(bytes(data))


@given(st.integers(min_value=0, max_value=len(GOOD_BLOCK) - 1), st.integers(1, 255))
@settings(max_examples=150)
def test_bit_flips_block(pos: int, xor: int) -> None:
    """Any single-byte corruption of a block is refused or changes its hash."""
    data = bytearray(GOOD_BLOCK)
    data[pos] ^= xor
    try:
        b = blk.decode(bytes(data))
    except BlockInvalid:
        return
    assert b.hash != blk.decode(GOOD_BLOCK).hash


def test_non_canonical_tx() -> None:
    """The same envelope with a wider integer encoding is refused (one encoding per value)."""
    fields = msgpack.unpackb(GOOD_TX)
    wide = b"\x96" + b"".join(
        (b"\xcf" + f.to_bytes(8, "big"))
        if isinstance(f, int)
        else msgpack.packb(f, use_bin_type=True)
        for f in fields
    )
    assert wide != GOOD_TX
    with pytest.raises(TxRejected) as exc:
        txm.decode(wide)
    assert exc.value.reason.value == "malformed"


def test_non_canonical_block() -> None:
    """A block whose height is encoded wider than needed, or whose map keys are unsorted inside
    last_commit, is refused."""
    header, txs, last_commit = msgpack.unpackb(GOOD_BLOCK)
    packed_header = b"\x9a" + b"".join(
        (b"\xcf" + f.to_bytes(8, "big")) if isinstance(f, int) and f == 5 else msgpack.packb(f)
        for f in header
    )
    wide = b"\x93" + packed_header + msgpack.packb(txs) + msgpack.packb(last_commit)
    with pytest.raises(BlockInvalid, match="canonical"):
        blk.decode(wide)
    unsorted = (
        b"\x93" + msgpack.packb(header) + msgpack.packb(txs) + msgpack.packb({"b": 1, "a": 2})
    )
    with pytest.raises(BlockInvalid, match="canonical"):
        blk.decode(unsorted)


@pytest.mark.parametrize(
    "envelope",
    [
        [CHAIN, N1.public_key, 0, "SetMeasure", {}],  # 5 fields
        [CHAIN, N1.public_key[:31], 0, "SetMeasure", {}, b"\x00" * 64],
        [CHAIN, N1.public_key, -1, "SetMeasure", {}, b"\x00" * 64],
        [CHAIN, N1.public_key, True, "SetMeasure", {}, b"\x00" * 64],
        [CHAIN, N1.public_key, 0, "set/measure", {}, b"\x00" * 64],
        ["", N1.public_key, 0, "SetMeasure", {}, b"\x00" * 64],
        {"chain": CHAIN},
    ],
)
def test_wrong_shapes(envelope: object) -> None:
    """Envelopes with a wrong field count, type or size are malformed."""
    with pytest.raises(TxRejected) as exc:
        txm.decode(msgpack.packb(envelope, use_bin_type=True))
    assert exc.value.reason.value == "malformed"


def test_oversized() -> None:
    """Oversized txs and blocks are refused before decoding."""
    with pytest.raises(TxRejected) as exc:
        txm.decode(b"\x00" * (txm.MAX_TX_BYTES + 1))
    assert exc.value.reason.value == "oversized"
    with pytest.raises(BlockInvalid, match="exceeds"):
        blk.decode(b"\x00" * (blk.MAX_BLOCK_BYTES + 1))


def test_block_content_must_match_header() -> None:
    """A block whose txs or last commit differ from the header's hashes is refused."""
    b = blk.decode(GOOD_BLOCK)
    other = blk.Block(b.header, (GOOD_TX, GOOD_TX), None).encode()
    with pytest.raises(BlockInvalid, match="txs_hash"):
        blk.decode(other)
    with pytest.raises(BlockInvalid, match="last_commit_hash"):
        blk.decode(blk.Block(b.header, b.txs, [1]).encode())


@settings(max_examples=40)
@given(
    st.text(min_size=1, max_size=40).filter(lambda c: "/" not in c),
    st.integers(0, (1 << 63) - 1),
    st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=40), max_size=6),
)
def test_signed_bytes_cut_from_the_envelope_equal_the_encoding(
    chain: str, sequence: int, body: dict[str, object]
) -> None:
    """The payload cut from the envelope bytes is exactly encode([kind, seq, signer, body])."""
    body = {k: v for k, v in body.items() if not isinstance(v, int) or -(1 << 63) <= v < 1 << 64}
    t = txm.decode(txm.make(N1, chain, sequence, "SetMeasure", body))
    assert txm._payload_from_raw(t) == txm.signed_payload(t)


def test_a_tx_whose_fields_differ_from_its_bytes_is_not_cut() -> None:
    """A Tx whose fields are not those of its envelope is encoded, so its signature fails."""
    t = txm.decode(GOOD_TX)
    forged = dataclasses.replace(t, sequence=t.sequence + 1)
    assert txm._payload_from_raw(forged) is None
    txm.forget([GOOD_TX])
    with pytest.raises(TxRejected, match="signature"):
        forged.verify_signature()


def test_tx_hash_is_the_sha256_of_the_bytes_cached_or_not() -> None:
    """tx_hash gives sha256(raw) from the decode cache and without it."""
    txm.forget([GOOD_TX])
    assert txm.tx_hash(GOOD_TX) == hashlib.sha256(GOOD_TX).digest()
    txm.decode(GOOD_TX)
    assert txm.tx_hash(GOOD_TX) == hashlib.sha256(GOOD_TX).digest()


def test_a_hand_built_tx_carrying_a_verified_hash_is_still_verified() -> None:
    """The signature cache trusts a Tx's hash field only for the decoder's own object: a
    hand-built Tx with another envelope's verified hash has its own bytes checked."""
    good = txm.decode(GOOD_TX)
    good.verify_signature()  # cached as verified
    flipped = bytearray(GOOD_TX)
    flipped[-1] ^= 1  # last signature byte
    bad = txm.decode(bytes(flipped))
    posing = dataclasses.replace(bad, hash=good.hash)
    with pytest.raises(TxRejected, match="signature"):
        posing.verify_signature()
