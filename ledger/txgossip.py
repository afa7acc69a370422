"""Tx gossip payloads: one envelope, or a batch of envelopes in one message.

Spec: docs/spec/consensus.md §Tx gossip. A payload on channel ``tx`` is either one tx envelope
(a canonical 6-array, docs/spec/codec.md §Transactions; what edge submitters publish) or a
batch ``["txs", [envelope bytes, …]]`` (a canonical 2-array) that a node publishes when it
gossips several txs at once. Every MQTT message costs each receiver a fixed amount of work
(and the link its framing), so a node coalesces the txs it gossips within one event-loop turn.
Receivers admit each envelope on its own; a malformed batch is dropped whole.
"""

from __future__ import annotations

from ledger import codec
from ledger.errors import CodecError
from ledger.tx import MAX_TX_BYTES

BATCH_TAG = "txs"
MAX_BATCH_TXS = 256
"""Envelopes per batch (a receiver admits them in one go; consensus messages wait meanwhile)."""
MAX_BATCH_BYTES = 128 * 1024
"""Bound on one batch payload [bytes], below the transport's 256 KiB payload bound."""
_FRAMING_BYTES = 16  # array headers and the tag


def encode_batch(raws: list[bytes]) -> bytes:
    """One gossip payload for ``raws`` (a single envelope is sent as itself)."""
    if len(raws) == 1:
        return raws[0]
    return codec.encode([BATCH_TAG, raws])


def decode_payload(payload: bytes) -> list[bytes]:
    """The envelopes in a ``tx`` payload (not yet decoded or verified: the mempool does that).

    Raises:
        CodecError: a batch that is not canonical or not ``["txs", [bytes, …]]`` with at most
            :data:`MAX_BATCH_TXS` envelopes of at most ``MAX_TX_BYTES`` each.
    """
    if payload[:1] != b"\x92":  # not a 2-array: a single envelope (the mempool checks it)
        return [payload]
    value = codec.decode(payload, max_bytes=MAX_BATCH_BYTES + _FRAMING_BYTES)
    if not (isinstance(value, list) and len(value) == 2 and value[0] == BATCH_TAG):
        raise CodecError('tx batch must be ["txs", [envelope, …]]')
    raws = value[1]
    if not isinstance(raws, list) or not 0 < len(raws) <= MAX_BATCH_TXS:
        raise CodecError(f"tx batch must hold 1..{MAX_BATCH_TXS} envelopes")
    if not all(isinstance(r, bytes) and 0 < len(r) <= MAX_TX_BYTES for r in raws):
        raise CodecError(f"tx batch entries must be envelopes of at most {MAX_TX_BYTES} bytes")
    return raws


class TxBatcher:
    """Collects envelopes to gossip and cuts them into bounded batch payloads."""

    def __init__(self) -> None:
        self._raws: list[bytes] = []

    def __len__(self) -> int:
        return len(self._raws)

    def add(self, raw: bytes) -> None:
        self._raws.append(raw)

    def flush(self) -> list[bytes]:
        """The payloads for everything collected (in order); empties the batcher."""
        payloads: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        for raw in self._raws:
            full = len(batch) >= MAX_BATCH_TXS or size + len(raw) + 3 > MAX_BATCH_BYTES
            if batch and full:
                payloads.append(encode_batch(batch))
                batch, size = [], 0
            batch.append(raw)
            size += len(raw) + 3  # bin header of up to 3 bytes for an envelope < 64 KiB
        if batch:
            payloads.append(encode_batch(batch))
        self._raws = []
        return payloads
