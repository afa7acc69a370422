"""Blocks: header, txs, last commit; canonical bytes and hashes.

Spec: docs/spec/codec.md §Blocks, docs/spec/ledger.md §1. A block is the canonical array
``[header, txs, last_commit]``; the header is the array of :data:`HEADER_FIELDS`; the block hash
is ``sha256(encode(header))``; ``txs_hash`` is the RFC 6962 Merkle root of the tx hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger import codec, keys, merkle
from ledger.errors import BlockInvalid, CodecError
from ledger.tx import MAX_TX_BYTES, tx_hash

MAX_BLOCK_BYTES = 1 << 20
"""Upper bound on one encoded block [bytes] (also bounds one MQTT message)."""
MAX_BLOCK_TXS = 2000
BLOCK_VERSION = 3
"""The app-hash scheme's number (merkle.SCHEME; 3 since the state tree is key-ordered): a node
of another version refuses these headers with a clear error instead of computing other app
hashes."""

HEADER_FIELDS = (
    "version",
    "chain_id",
    "height",
    "time_ms",
    "prev_block_hash",
    "txs_hash",
    "app_hash",
    "proposer",
    "validators_hash",
    "last_commit_hash",
)


@dataclass(frozen=True, slots=True)
class Header:
    """Block header (all hashes 32 bytes; ``time_ms`` in ms since the epoch, UTC)."""

    version: int
    chain_id: str
    height: int
    time_ms: int
    prev_block_hash: bytes
    txs_hash: bytes
    app_hash: bytes
    proposer: bytes
    validators_hash: bytes
    last_commit_hash: bytes

    def to_value(self) -> list[codec.Value]:
        return [getattr(self, name) for name in HEADER_FIELDS]

    @property
    def hash(self) -> bytes:
        """The block hash."""
        return keys.sha256(codec.encode(self.to_value()))


@dataclass(frozen=True, slots=True)
class Block:
    header: Header
    txs: tuple[bytes, ...]
    last_commit: codec.Value

    def encode(self) -> bytes:
        return codec.encode([self.header.to_value(), list(self.txs), self.last_commit])

    @property
    def hash(self) -> bytes:
        return self.header.hash


def txs_hash(txs: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Merkle root over the SHA-256 of each tx's exact bytes."""
    return merkle.list_root([tx_hash(t) for t in txs])


def commit_hash(last_commit: codec.Value) -> bytes:
    return keys.sha256(codec.encode(last_commit))


def validators_hash(validators: list[tuple[bytes, int]]) -> bytes:
    return keys.sha256(codec.encode([[pk, power] for pk, power in validators]))


def decode(data: bytes) -> Block:
    """Decode a block and check its internal consistency (not its place in the chain).

    Raises:
        BlockInvalid: oversized, not canonical, wrong shape or types, ``txs_hash`` or
            ``last_commit_hash`` not matching the contents.
    """
    if not isinstance(data, bytes):
        raise BlockInvalid(f"block must be bytes, got {type(data).__name__}")
    if len(data) > MAX_BLOCK_BYTES:
        raise BlockInvalid(f"block of {len(data)} bytes exceeds {MAX_BLOCK_BYTES}")
    try:
        value = codec.decode(data, max_bytes=MAX_BLOCK_BYTES)
    except CodecError as exc:
        raise BlockInvalid(f"block: {exc}") from exc
    if not isinstance(value, list) or len(value) != 3:
        raise BlockInvalid("block must be [header, txs, last_commit]")
    h, txs, last_commit = value
    header = _header(h)
    if not isinstance(txs, list) or len(txs) > MAX_BLOCK_TXS:
        raise BlockInvalid(f"block txs must be a list of at most {MAX_BLOCK_TXS}")
    for i, t in enumerate(txs):
        if not isinstance(t, bytes) or not 0 < len(t) <= MAX_TX_BYTES:
            raise BlockInvalid(f"block tx {i} must be 1..{MAX_TX_BYTES} bytes")
    if txs_hash(txs) != header.txs_hash:
        raise BlockInvalid("txs_hash does not match the block's txs")
    if commit_hash(last_commit) != header.last_commit_hash:
        raise BlockInvalid("last_commit_hash does not match the block's last commit")
    return Block(header, tuple(txs), last_commit)


def _header(h: codec.Value) -> Header:
    if not isinstance(h, list) or len(h) != len(HEADER_FIELDS):
        raise BlockInvalid(f"header must be an array of {len(HEADER_FIELDS)} fields")
    version, chain_id, height, time_ms, *hashes = h
    ints = (("version", version), ("height", height), ("time_ms", time_ms))
    for name, v in ints:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise BlockInvalid(f"header.{name} must be a non-negative int")
    if version != BLOCK_VERSION:
        raise BlockInvalid(f"header.version {version} is not {BLOCK_VERSION}")
    if not isinstance(chain_id, str) or not chain_id:
        raise BlockInvalid("header.chain_id must be a non-empty str")
    for name, v in zip(HEADER_FIELDS[4:], hashes, strict=True):
        if not isinstance(v, bytes) or len(v) != 32:
            raise BlockInvalid(f"header.{name} must be 32 bytes")
    return Header(version, chain_id, height, time_ms, *hashes)
