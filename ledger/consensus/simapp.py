"""A small replicated application for consensus simulations and benchmarks.

Spec: docs/spec/consensus.md §Simulation. Transactions are opaque byte strings; a block is
``[height, time_ms, last_commit | nil, [tx, …]]``. Validity is checked for real: the height, the
last commit (signatures and > 2/3 power of the previous set), the BFT time (weighted median of
that commit), no tx committed twice, evidence txs (prefix ``b"E"``) verified and each offence
committed once. Committed blocks survive a simulated crash; the mempool does not.
"""

from __future__ import annotations

from typing import Any

from ledger import codec
from ledger.consensus.commit import block_time_ms, verify_commit
from ledger.consensus.errors import CommitError, EvidenceError, MessageError
from ledger.consensus.evidence import Evidence, verify_evidence
from ledger.consensus.messages import Commit
from ledger.consensus.validators import ValidatorSet
from ledger.errors import CodecError
from ledger.keys import sha256

EVIDENCE_PREFIX = b"E"
MAX_TXS_PER_BLOCK = 1000


class SimApp:
    """Opaque-tx application satisfying :class:`ledger.consensus.app.ConsensusApp`.

    Args:
        chain_id: chain id (for commit and evidence signatures).
        powers: genesis validator powers.
        changes: validator powers to switch to *after* committing a given height.
    """

    def __init__(
        self,
        chain_id: str,
        powers: dict[bytes, int],
        changes: dict[int, dict[bytes, int]] | None = None,
    ) -> None:
        self.chain_id = chain_id
        self._powers_at: dict[int, dict[bytes, int]] = {1: dict(powers)}
        self._changes = changes or {}
        self.blocks: list[bytes] = []
        self.commits: list[Commit] = []
        self.mempool: dict[bytes, bytes] = {}
        self.committed_txs: set[bytes] = set()
        self.evidence_keys: list[bytes] = []

    # --- the port
    def height(self) -> int:
        return len(self.blocks)

    def block_id(self, block: bytes) -> bytes:
        return sha256(block)

    def block_proposer(self, block: bytes) -> bytes | None:
        del block
        return None  # simulation blocks name no proposer

    def last_block_time_ms(self) -> int:
        return _parse(self.blocks[-1])[1] if self.blocks else 0

    def validators(self) -> dict[bytes, int]:
        return dict(self._powers_at[self.height() + 1])

    def prepare_block(self, height: int, last_commit: Commit | None, time_ms: int) -> bytes:
        txs = [tx for tx in self.mempool.values() if self._tx_ok(tx, set())]
        last = last_commit.to_value() if last_commit is not None else None
        return codec.encode([height, time_ms, last, txs[:MAX_TXS_PER_BLOCK]])

    def validate_block(self, height: int, block: bytes) -> bool:
        try:
            h, time_ms, last, txs = _parse(block)
        except (CodecError, ValueError):
            return False
        if h != height or height != self.height() + 1:
            return False
        if not self._last_commit_ok(height, time_ms, last):
            return False
        seen: set[bytes] = set()
        return all(self._tx_ok(tx, seen) for tx in txs)

    def commit_block(self, block: bytes, commit: Commit) -> None:
        height, _, _, txs = _parse(block)
        if height != self.height() + 1:
            raise AssertionError(f"commit of height {height} at app height {self.height()}")
        self.blocks.append(block)
        self.commits.append(commit)
        for tx in txs:
            self.committed_txs.add(sha256(tx))
            self.mempool.pop(sha256(tx), None)
            if tx.startswith(EVIDENCE_PREFIX):
                self.evidence_keys.append(Evidence.decode(tx[1:]).key)
        nxt = self._changes.get(height, self._powers_at[height])
        self._powers_at[height + 1] = dict(nxt)

    def block(self, height: int) -> bytes | None:
        return self.blocks[height - 1] if 1 <= height <= len(self.blocks) else None

    def pending_txs(self) -> int:
        return len(self.mempool)

    def pending_tx_payloads(self, limit: int) -> list[bytes]:
        return list(self.mempool.values())[:limit]

    def report_evidence(self, evidence: Evidence) -> None:
        self.add_tx(EVIDENCE_PREFIX + evidence.encode())

    # --- helpers
    def add_tx(self, tx: bytes) -> bool:
        """Admit ``tx`` to the mempool unless committed or present."""
        digest = sha256(tx)
        if digest in self.committed_txs or digest in self.mempool:
            return False
        self.mempool[digest] = tx
        return True

    def crash(self) -> None:
        """Lose what a power cut loses: the mempool."""
        self.mempool.clear()

    def block_hash(self, height: int) -> bytes | None:
        """SHA-256 of the committed block at ``height``."""
        block = self.block(height)
        return sha256(block) if block is not None else None

    def _valset(self, height: int) -> ValidatorSet:
        return ValidatorSet.from_powers(self._powers_at[height])

    def _last_commit_ok(self, height: int, time_ms: int, last: Any) -> bool:
        if height == 1:
            return last is None
        try:
            commit = Commit.from_value(last)
            prev = self._valset(height - 1)
            prev_hash = sha256(self.blocks[height - 2])
            verify_commit(self.chain_id, prev, height - 1, prev_hash, commit)
        except (MessageError, CommitError):
            return False
        return time_ms == block_time_ms(commit, prev)

    def _tx_ok(self, tx: bytes, seen: set[bytes]) -> bool:
        digest = sha256(tx)
        if digest in self.committed_txs or digest in seen:
            return False
        seen.add(digest)
        if not tx.startswith(EVIDENCE_PREFIX):
            return True
        try:
            ev = Evidence.decode(tx[1:])
            verify_evidence(self.chain_id, self._valset(ev.first.height), ev)
        except (EvidenceError, KeyError):
            return False
        if ev.key in self.evidence_keys or ev.key in seen:
            return False
        seen.add(ev.key)
        return True


def _parse(block: bytes) -> tuple[int, int, Any, list[bytes]]:
    value = codec.decode(block)
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError("block must be [height, time_ms, last_commit, txs]")
    height, time_ms, last, txs = value
    if not isinstance(height, int) or not isinstance(time_ms, int) or not isinstance(txs, list):
        raise ValueError("block fields have wrong types")
    if not all(isinstance(tx, bytes) for tx in txs):
        raise ValueError("txs must be bytes")
    return height, time_ms, last, txs
