"""How the block store holds a block: whole, or with some tx bodies pruned.

Spec: docs/spec/ledger.md §7, docs/spec/privacy.md §3.1. A whole block is stored as its canonical
bytes (``[header, txs, last_commit]``). A body-pruned block is ``["pruned", header, entries,
last_commit]``, each entry the whole tx envelope or ``[tx_hash, signer]``: the header, the
commit and every tx hash stay, so ``header.txs_hash`` still verifies (checked on every read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger import codec, merkle
from ledger.block import Block, Header
from ledger.block import decode as decode_block
from ledger.errors import BlockInvalid, CodecError
from ledger.keys import sha256

PRUNED_TAG = "pruned"
"""First element of a body-pruned block record (a full block's first element is its header)."""
PRUNED_PREFIX = codec.encode([PRUNED_TAG, 0, 0, 0])[:8]
"""The bytes every body-pruned record starts with (array of 4, then the tag): a cheap test."""


@dataclass(frozen=True, slots=True)
class PrunedTx:
    """A tx whose body was removed from the block store (docs/spec/privacy.md §3.1).

    Attributes:
        hash: sha256 of the original envelope (its leaf in ``header.txs_hash``) [32 bytes].
        signer: the envelope's signer key (kept so only the signer gets an inclusion proof).
    """

    hash: bytes
    signer: bytes


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """A block as stored: whole, or with some tx bodies pruned (header and hashes kept)."""

    header: Header
    txs: tuple[bytes | PrunedTx, ...]
    last_commit: codec.Value

    @property
    def body_pruned(self) -> bool:
        return any(isinstance(t, PrunedTx) for t in self.txs)

    @property
    def tx_hashes(self) -> list[bytes]:
        return [t.hash if isinstance(t, PrunedTx) else sha256(t) for t in self.txs]


def pruned_record(block: Block | StoredBlock, drop: Sequence[bytes | None]) -> bytes:
    """The body-pruned record of ``block``: ``drop[i]`` is the signer of tx ``i`` whose body
    goes (None: the tx stays as it is). Layout: ``["pruned", header, [tx | [hash, signer]…],
    last_commit]`` (canonical MessagePack; docs/spec/ledger.md §7). ``block`` may already be
    body-pruned (the measurement and join passes of ledger/bodyprune.py each remove their own
    txs): its pruned entries stay pruned, so the record merges both passes' work."""
    txs: list[codec.Value] = []
    for tx, signer in zip(block.txs, drop, strict=True):
        if isinstance(tx, PrunedTx):
            txs.append([tx.hash, tx.signer])
        else:
            txs.append(tx if signer is None else [sha256(tx), signer])
    return codec.encode([PRUNED_TAG, block.header.to_value(), txs, block.last_commit])


def decode_stored(raw: bytes) -> StoredBlock:
    """A stored block record (whole or body-pruned), checked against its ``txs_hash``.

    Raises:
        BlockInvalid: not a block record, or the tx hashes do not give ``txs_hash``.
    """
    if not raw.startswith(PRUNED_PREFIX):
        whole = decode_block(raw)
        return StoredBlock(whole.header, whole.txs, whole.last_commit)
    try:
        _, header_value, entries, last_commit = codec.decode(raw)
        header = Header(*header_value)  # written by this node from a decoded header
    except (CodecError, TypeError, ValueError) as exc:
        raise BlockInvalid(f"body-pruned block record: {exc}") from exc
    txs: list[bytes | PrunedTx] = []
    for entry in entries:
        txs.append(entry if isinstance(entry, bytes) else PrunedTx(entry[0], entry[1]))
    stored = StoredBlock(header, tuple(txs), last_commit)
    if merkle.list_root(stored.tx_hashes) != header.txs_hash:
        raise BlockInvalid(f"body-pruned block {header.height}: tx hashes do not give txs_hash")
    return stored
