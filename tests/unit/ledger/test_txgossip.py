"""Tx gossip payloads (ledger/txgossip.py) and the process caches of tx decoding/verification."""

from __future__ import annotations

import pytest

from ledger import codec
from ledger import tx as txm
from ledger.errors import CodecError, TxRejected
from ledger.txgossip import MAX_BATCH_TXS, TxBatcher, decode_payload, encode_batch
from tests.unit.ledger.helpers import ADMIN, N1, Signer


def _txs(count: int) -> list[bytes]:
    admin = Signer(ADMIN)
    return [
        admin("AddMeter", {"meter_id": f"G{i}", "account": N1.public_key}) for i in range(count)
    ]


def test_single_envelope_travels_as_itself_and_batches_round_trip() -> None:
    """One tx is published unchanged (what edge submitters send); several become one batch."""
    raws = _txs(3)
    assert encode_batch(raws[:1]) == raws[0]
    assert decode_payload(raws[0]) == [raws[0]]
    assert decode_payload(encode_batch(raws)) == raws


def test_batcher_cuts_bounded_batches_in_order() -> None:
    """More than MAX_BATCH_TXS txs leave in several payloads, order kept, nothing lost."""
    raws = _txs(MAX_BATCH_TXS + 5)
    batcher = TxBatcher()
    for raw in raws:
        batcher.add(raw)
    payloads = batcher.flush()
    assert len(payloads) == 2
    assert [r for p in payloads for r in decode_payload(p)] == raws
    assert len(batcher) == 0
    assert batcher.flush() == []


@pytest.mark.parametrize(
    "value",
    [["txs", []], ["nope", [b"x"]], ["txs", [1]], ["txs", b"x"]],
)
def test_malformed_batch_is_refused_whole(value: object) -> None:
    """A 2-array that is not ["txs", [envelope bytes, …]] raises CodecError naming the shape."""
    with pytest.raises(CodecError):
        decode_payload(codec.encode(value))


def test_cached_decode_and_signature_still_refuse_a_tampered_envelope() -> None:
    """The caches are keyed by the exact bytes: a flipped signature byte is a new envelope
    whose verification fails, also after the original was verified."""
    raw = _txs(1)[0]
    txm.decode(raw).verify_signature()
    assert txm.decode(raw) is txm.decode(raw)  # served from the cache
    bad = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(TxRejected) as info:
        txm.decode(bad).verify_signature()
    assert info.value.reason == "bad_signature"
    with pytest.raises(TxRejected):
        txm.decode(bad).verify_signature()  # failures are not cached
