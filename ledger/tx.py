"""Signed transaction envelopes: encode, decode, sign, verify.

Spec: docs/spec/codec.md §Transactions. An envelope is the canonical array
``[chain_id, signer, sequence, kind, body, signature]``; the signature covers
``keys.sign_bytes(chain_id, "tx", encode([kind, sequence, signer, body]))``. The tx hash is the
SHA-256 of the exact envelope bytes as received.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from ledger import codec, keys
from ledger.errors import CodecError, Reason, SignatureError, TxRejected

MAX_TX_BYTES = 4096
"""Upper bound on one envelope [bytes], checked before any decoding."""

KIND_RE = re.compile(r"^[A-Z][A-Za-z0-9]{0,31}$")
"""Tx kind names: CamelCase identifiers (they never contain the sign-bytes separator ``/``)."""

_MAX_SEQUENCE = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Tx:
    """A decoded, not yet verified envelope.

    Attributes:
        chain_id: the chain the signer meant.
        signer: the signer's 32-byte ed25519 public key (its account id).
        sequence: the signer's per-account sequence number (replay protection).
        kind: the registered tx kind name (docs/spec/ledger.md §3).
        body: the kind's canonical body value.
        signature: 64-byte ed25519 signature.
        raw: the exact envelope bytes.
        hash: sha256(raw) [32 bytes].
    """

    chain_id: str
    signer: bytes
    sequence: int
    kind: str
    body: codec.Value
    signature: bytes
    raw: bytes
    hash: bytes

    def verify_signature(self) -> None:
        """Check the envelope's signature, once per process for the same envelope bytes.

        A tx passes admission, block validation and the mempool re-check on every node; its
        hash covers every signed field and the signature itself, so exact bytes verified once
        verify again (docs/spec/consensus.md §Throughput). Failures are not cached.

        Raises:
            TxRejected: ``bad_signature``.
        """
        # Not self.hash as it is: a hand-built Tx may carry any hash.
        digest = self.hash if _DECODED.get(self.raw) is self else keys.sha256(self.raw)
        if digest in _VERIFIED:
            _VERIFIED.move_to_end(digest)
            return
        try:
            payload = _payload_from_raw(self) or signed_payload(self)
            keys.verify(self.signer, self.chain_id, "tx", payload, self.signature)
        except SignatureError as exc:
            raise TxRejected(Reason.BAD_SIGNATURE, f"{self.kind} tx: {exc}") from exc
        _VERIFIED[digest] = None
        if len(_VERIFIED) > VERIFIED_CACHE_SIZE:
            _VERIFIED.popitem(last=False)


VERIFIED_CACHE_SIZE = 8_192
"""Envelope hashes whose signature this process verified (LRU; fixed-size entries of ≈ 110
bytes, so ≈ 0.9 MB at most; more than a full mempool's 5,000 txs, so a pending tx stays cached
until it commits, and :func:`forget` drops it then)."""

_VERIFIED: OrderedDict[bytes, None] = OrderedDict()


def signed_payload(tx: Tx) -> bytes:
    """The canonical bytes under the signature (before domain separation)."""
    return codec.encode([tx.kind, tx.sequence, tx.signer, tx.body])


_ENVELOPE_HEAD = b"\x96"  # fixarray of 6
_PAYLOAD_HEAD = b"\x94"  # fixarray of 4
_SIGNER_HEAD = b"\xc4\x20"  # bin8 of 32 bytes
_SIGNATURE_HEAD = b"\xc4\x40"  # bin8 of 64 bytes
_SIGNATURE_ENCODED = 2 + keys.SIGNATURE_BYTES


def _payload_from_raw(tx: Tx) -> bytes | None:
    """:func:`signed_payload` cut from the envelope bytes instead of re-encoding the body.

    A decoded envelope is canonical, so each field's bytes in it are that field's canonical
    encoding and ``[kind, sequence, signer, body]`` is their concatenation behind an array
    header. The fixed parts are compared with the fields; None when they do not line up (a
    ``Tx`` not made by :func:`decode`), and the caller encodes instead.
    """
    raw = tx.raw
    signer = _SIGNER_HEAD + tx.signer
    sequence = codec.encode(tx.sequence)
    kind = _encoded_name(tx.kind)
    head = _encoded_name(tx.chain_id) + signer + sequence + kind
    body_at = 1 + len(head)
    lined_up = (
        raw.startswith(head, 1)
        and raw[0] == _ENVELOPE_HEAD[0]
        and raw.endswith(_SIGNATURE_HEAD + tx.signature)
        and body_at < len(raw) - _SIGNATURE_ENCODED
    )
    if not lined_up:
        return None
    return _PAYLOAD_HEAD + kind + sequence + signer + raw[body_at:-_SIGNATURE_ENCODED]


@functools.lru_cache(maxsize=64)
def _encoded_name(name: str) -> bytes:
    """Canonical encoding of a chain id or tx kind (a handful per process, so remembered)."""
    return codec.encode(name)


def make(key: keys.SigningKey, chain_id: str, sequence: int, kind: str, body: codec.Value) -> bytes:
    """Build and sign an envelope; returns its canonical bytes.

    Raises:
        TxRejected: the result would be malformed or exceed :data:`MAX_TX_BYTES`.
    """
    signer = key.public_key
    payload = codec.encode([kind, sequence, signer, body])
    signature = key.sign(chain_id, "tx", payload)
    raw = codec.encode([chain_id, signer, sequence, kind, body, signature])
    decode(raw)  # the same checks a receiver makes, so we never emit what peers refuse
    return raw


def decode(raw: bytes) -> Tx:
    """Decode an envelope (structure only; the signature is checked by :meth:`Tx.verify_signature`).

    Decoded envelopes are remembered per process (LRU by the exact bytes): a tx is decoded at
    admission, by the mempool, when proposed, validated, committed and re-checked, and the
    canonical check is most of the cost (docs/spec/consensus.md §Throughput). A ``Tx`` and
    its body are values: nobody mutates them (the body is hashed and signed).

    Raises:
        TxRejected: ``oversized`` beyond :data:`MAX_TX_BYTES`, ``malformed`` for anything that is
            not one canonical envelope.
    """
    if isinstance(raw, bytes):
        hit = _DECODED.get(raw)
        if hit is not None:
            _DECODED.move_to_end(raw)
            return hit
    tx = _decode(raw)
    if len(raw) <= DECODED_CACHE_MAX_TX_BYTES:
        global _decoded_bytes
        _DECODED[raw] = tx
        _decoded_bytes += len(raw)
        while len(_DECODED) > DECODED_CACHE_SIZE or _decoded_bytes > DECODED_CACHE_BYTES:
            _decoded_bytes -= len(_DECODED.popitem(last=False)[0])
    return tx


def tx_hash(raw: bytes) -> bytes:
    """``sha256(raw)``, taken from the decoded envelope when this process holds it.

    A tx's hash is wanted at admission, in the signature cache, in the proposal's ``txs_hash``,
    the compact form, the block check and the ``txidx`` record; each SHA-256 call costs
    ≈ 0.7 µs here, a dict lookup by the same bytes ≈ 0.03 (docs/spec/consensus.md §11).
    """
    hit = _DECODED.get(raw)
    return keys.sha256(raw) if hit is None else hit.hash


def forget(raws: Iterable[bytes]) -> None:
    """Drop committed envelopes from the decode and signature caches.

    Called once a block is committed (:meth:`ledger.app.App.commit_block`): a committed tx is
    not decoded or verified again in the normal flow (a late gossip copy is refused by its
    sequence), so keeping it would only make the caches grow with the ledger until their
    bounds (docs/spec/daemon.md §Memory bounds).
    """
    global _decoded_bytes
    for raw in raws:
        tx = _DECODED.pop(raw, None)
        if tx is not None:
            _decoded_bytes -= len(raw)
        # A cached Tx came from _decode, whose hash is sha256(raw): no second hashing.
        _VERIFIED.pop(keys.sha256(raw) if tx is None else tx.hash, None)


def cache_sizes() -> dict[str, int]:
    """Entries and bytes held by the tx caches (for benches and tests)."""
    return {
        "decoded_entries": len(_DECODED),
        "decoded_raw_bytes": _decoded_bytes,
        "verified_entries": len(_VERIFIED),
    }


DECODED_CACHE_SIZE = 8_192
"""Decoded envelopes kept per process (LRU, also bounded by :data:`DECODED_CACHE_BYTES`); mostly
the very objects the mempool holds anyway. Committed txs leave at once (:func:`forget`)."""

DECODED_CACHE_BYTES = 1 << 20
"""Bound on the envelope bytes of the cached decoded txs [bytes]; a decoded ``Tx`` with its
body takes about 3-4 times its envelope, so ≈ 4 MB at most."""

DECODED_CACHE_MAX_TX_BYTES = 1024
"""Larger envelopes (rare: settlement and governance txs) are decoded every time [bytes]."""

_DECODED: OrderedDict[bytes, Tx] = OrderedDict()
_decoded_bytes = 0


def _decode(raw: bytes) -> Tx:
    """Decode an envelope without the cache.

    Raises:
        TxRejected: ``oversized`` beyond :data:`MAX_TX_BYTES`, ``malformed`` for anything that is
            not one canonical envelope.
    """
    if not isinstance(raw, bytes):
        raise TxRejected(Reason.MALFORMED, f"tx must be bytes, got {type(raw).__name__}")
    if len(raw) > MAX_TX_BYTES:
        raise TxRejected(Reason.OVERSIZED, f"tx of {len(raw)} bytes exceeds {MAX_TX_BYTES}")
    try:
        value = codec.decode(raw, max_bytes=MAX_TX_BYTES)
    except CodecError as exc:
        raise TxRejected(Reason.MALFORMED, f"tx envelope: {exc}") from exc
    if not isinstance(value, list) or len(value) != 6:
        raise TxRejected(Reason.MALFORMED, "tx envelope must be an array of 6 fields")
    chain_id, signer, sequence, kind, body, signature = value
    _check(isinstance(chain_id, str) and 0 < len(chain_id) <= 64, "chain_id")
    _check(isinstance(signer, bytes) and len(signer) == keys.PUBLIC_KEY_BYTES, "signer")
    _check(
        isinstance(sequence, int)
        and not isinstance(sequence, bool)
        and 0 <= sequence <= _MAX_SEQUENCE,
        "sequence",
    )
    _check(isinstance(kind, str) and KIND_RE.match(kind) is not None, "kind")
    _check(isinstance(signature, bytes) and len(signature) == keys.SIGNATURE_BYTES, "signature")
    return Tx(chain_id, signer, sequence, kind, body, signature, raw, keys.sha256(raw))


def _check(ok: bool, field: str) -> None:
    if not ok:
        raise TxRejected(Reason.MALFORMED, f"tx envelope field {field!r} has a wrong type or size")
