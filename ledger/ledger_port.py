"""The consensus application port over the ledger: :class:`LedgerPort`.

Spec: docs/spec/consensus.md §Node. It adapts :class:`ledger.app.App` and its
:class:`~ledger.mempool.Mempool` to :class:`~ledger.consensus.app.ConsensusApp`: block identity
= header hash, last-commit and BFT-time checks, compact blocks rebuilt from the mempool
(ledger/consensus/compact.py), evidence as a signed Evidence tx. :class:`ledger.node.Node` drives
it on the asyncio loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ledger import block as blk
from ledger import codec
from ledger import tx as txm
from ledger.app import App
from ledger.consensus.commit import block_time_ms, verify_commit
from ledger.consensus.errors import CommitError, MessageError
from ledger.consensus.evidence import Evidence
from ledger.consensus.messages import Commit
from ledger.consensus.wal import ConsensusStore
from ledger.errors import BlockInvalid, CodecError, TxRejected
from ledger.keys import SigningKey, sha256
from ledger.mempool import Mempool

MAX_PROPOSAL_TXS_BYTES = 192 * 1024
"""Bound on the txs of one proposed block [bytes]: the proposal, the announcement and sync
answers carry the whole block, and the MQTT transport refuses payloads above 256 KiB
(docs/spec/transport.md); a block it cannot send would stall every round of its height."""

MAX_COMPACT_BYTES = 128 * 1024
"""Bound on a compact block [bytes]: 2,000 tx hashes, a header and a commit fit well below."""


class LedgerPort:
    """:class:`~ledger.consensus.app.ConsensusApp` over the ledger app and mempool.

    Args:
        app: the ledger application.
        mempool: its mempool.
        cstore: the consensus store (validator sets of past heights, for last-commit checks).
        key: this node's key (proposer field, evidence reports); None for a keyless member.
        gossip: publishes a tx this node created (an Evidence tx) on channel ``tx``.
    """

    def __init__(
        self,
        app: App,
        mempool: Mempool,
        cstore: ConsensusStore,
        key: SigningKey | None,
        gossip: Callable[[bytes], None],
    ) -> None:
        self.app = app
        self.mempool = mempool
        self._cstore = cstore
        self._key = key
        self._gossip = gossip
        self._dropped: dict[bytes, list[tuple[bytes, TxRejected]]] = {}
        self.rejections: Counter[str] = Counter()
        self.on_commit: Callable[[bytes, Commit], None] | None = None
        """Called after each committed block (the light members' header feed)."""

    def height(self) -> int:
        return self.app.height

    def _decoded(self, block: bytes) -> blk.Block:
        """Decode ``block`` once (the app's cache, shared with validation and the commit):
        consensus asks for its id, proposer and contents several times per height, and
        decoding re-checks the canonical form and txs hash of the whole block."""
        return self.app.decode_block(block)  # raises BlockInvalid / CodecError: not cached

    def block_id(self, block: bytes) -> bytes:
        """The header hash (what headers, proofs and ``prev_block_hash`` use)."""
        try:
            return self._decoded(block).hash
        except (BlockInvalid, CodecError):
            return sha256(b"not-a-block/" + block)  # no valid block's header hashes to this

    def block_proposer(self, block: bytes) -> bytes | None:
        try:
            return self._decoded(block).header.proposer
        except (BlockInvalid, CodecError):
            return None

    def last_block_time_ms(self) -> int:
        return self.app.last_block_time_ms

    def compact_block(self, block: bytes) -> bytes | None:
        """``[header, [sha256 of each tx], last_commit]`` (docs/spec/consensus.md §2b); None
        for a block without txs (nothing to save) or one that does not decode."""
        try:
            decoded = self._decoded(block)
        except (BlockInvalid, CodecError):
            return None
        if not decoded.txs:
            return None
        hashes = [txm.tx_hash(t) for t in decoded.txs]
        return codec.encode([decoded.header.to_value(), hashes, decoded.last_commit])

    def expand_block(self, compact: bytes) -> bytes | None:
        """The block bytes of a compact form, its txs taken from the mempool; None when one
        of them is not there. The result is checked like any received block (its id must be
        the signed hash, then full validation): a wrong tx cannot hash to the header's root.

        Raises:
            MessageError: ``malformed``: not ``[header, [32-byte hash, …], last_commit]``.
        """
        try:
            value = codec.decode(compact, max_bytes=MAX_COMPACT_BYTES)
        except CodecError as exc:
            raise MessageError("malformed", f"compact block: {exc}") from exc
        ok = isinstance(value, list) and len(value) == 3 and isinstance(value[1], list)
        ok = ok and len(value[1]) <= blk.MAX_BLOCK_TXS
        if not ok or not all(isinstance(h, bytes) and len(h) == 32 for h in value[1]):
            raise MessageError("malformed", "compact block must be [header, [hash, …], commit]")
        header, hashes, last_commit = value
        txs: list[bytes] = []
        for tx_hash in hashes:
            raw = self.mempool.raw_of(tx_hash)
            if raw is None:
                return None
            txs.append(raw)
        return codec.encode([header, txs, last_commit])

    def validators(self) -> dict[bytes, int]:
        return dict(self.app.validators())

    def prepare_block(self, height: int, last_commit: Commit | None, time_ms: int) -> bytes:
        proposer = self._key.public_key if self._key is not None else b"\0" * 32
        last = last_commit.to_value() if last_commit is not None else None
        candidates = _within(self.mempool.reap(), MAX_PROPOSAL_TXS_BYTES)
        prepared = self.app.prepare(height, time_ms, proposer, candidates, last)
        self._dropped = {self.block_id(prepared.block_bytes): prepared.dropped}
        return prepared.block_bytes

    def validate_block(self, height: int, block: bytes) -> bool:
        """Header/txs via the app, plus what consensus owns: the last commit's signatures and
        the BFT time (docs/spec/consensus.md §Time)."""
        try:
            decoded = self._decoded(block)
            if decoded.header.height != height:
                return False
            if not self._last_commit_ok(height, decoded):
                return False
            self.app.validate_block(block)
        except (BlockInvalid, CodecError, MessageError, CommitError) as exc:
            self.rejections[type(exc).__name__] += 1
            return False
        return True

    def _last_commit_ok(self, height: int, block: blk.Block) -> bool:
        if height == 1:
            ok_time = block.header.time_ms == self.app.last_block_time_ms + 1
            return block.last_commit is None and ok_time
        prev = self._cstore.load_valset(height - 1)
        if prev is None:
            return False
        commit = Commit.from_value(block.last_commit)
        verify_commit(self.app.chain_id, prev, height - 1, self.app.last_block_hash, commit)
        return block.header.time_ms == block_time_ms(commit, prev)

    def commit_block(self, block: bytes, commit: Commit) -> None:
        block_hash = self.block_id(block)
        self.app.commit_block(block, commit.to_value())
        txs = list(self._decoded(block).txs)
        self.mempool.update(txs, self._dropped.pop(block_hash, []))
        self._dropped.clear()
        if self.on_commit is not None:
            self.on_commit(block, commit)

    def block(self, height: int) -> bytes | None:
        return self.app.block(height)

    def pending_txs(self) -> int:
        return len(self.mempool)

    def pending_tx_payloads(self, limit: int) -> list[bytes]:
        return self.mempool.reap(limit)

    def report_evidence(self, evidence: Evidence) -> None:
        """Sign an Evidence tx with this validator's key, admit it and gossip it."""
        if self._key is None:
            return
        me = self._key.public_key
        pending = self.mempool.pending_of(me)
        vote_a, vote_b = evidence.encode_pair()
        body = {"vote_a": vote_a, "vote_b": vote_b}
        raw = txm.make(
            self._key, self.app.chain_id, self.app.sequence(me) + pending, "Evidence", body
        )
        try:
            self.mempool.add(raw)
        except TxRejected as exc:
            self.rejections[f"evidence_{exc.reason}"] += 1
            return
        self._gossip(raw)


def _within(raws: list[bytes], budget: int) -> list[bytes]:
    """The longest prefix of ``raws`` whose envelopes total at most ``budget`` [bytes]."""
    out: list[bytes] = []
    used = 0
    for raw in raws:
        used += len(raw) + 3  # msgpack bin header
        if used > budget:
            break
        out.append(raw)
    return out
