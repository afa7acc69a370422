"""The application port consensus drives (like CometBFT's ABCI consensus connection).

Spec: docs/spec/consensus.md §Application port. The ledger implements it (ledger/node.py adapts
ledger/app.py to it); simulations use :class:`ledger.consensus.sim.SimApp`.
"""

from __future__ import annotations

from typing import Protocol

from ledger.consensus.evidence import Evidence
from ledger.consensus.messages import Commit


class ConsensusApp(Protocol):
    """What consensus needs from the replicated application."""

    def height(self) -> int:
        """The last committed height (0 before the first block)."""
        ...

    def block_id(self, block: bytes) -> bytes:
        """The 32-byte identity of ``block`` that votes and commits sign (deterministic; for
        bytes that are no block, any value no valid block can have)."""
        ...

    def block_proposer(self, block: bytes) -> bytes | None:
        """The proposer key the block names (None: the block format names none, or ``block``
        does not decode; validity is ``validate_block``'s to decide)."""
        ...

    def last_block_time_ms(self) -> int:
        """Time of the last committed block [ms since epoch]; genesis time at height 0."""
        ...

    def validators(self) -> dict[bytes, int]:
        """Validator public keys and powers in force for height ``height() + 1``."""
        ...

    def prepare_block(self, height: int, last_commit: Commit | None, time_ms: int) -> bytes:
        """Build a block for ``height`` from the mempool (``getValue()``).

        Args:
            height: the height being proposed.
            last_commit: the commit of ``height − 1`` (None at height 1), to be embedded.
            time_ms: the block time: the weighted median of ``last_commit`` [ms]; at height 1
                the genesis time + 1 ms.
        """
        ...

    def validate_block(self, height: int, block: bytes) -> bool:
        """``valid(v)``: whether ``block`` is a valid block for ``height`` (deterministic)."""
        ...

    def commit_block(self, block: bytes, commit: Commit) -> None:
        """Apply a decided block durably; ``commit`` proves it."""
        ...

    def block(self, height: int) -> bytes | None:
        """A committed block, for peers that sync (None if not stored)."""
        ...

    def pending_txs(self) -> int:
        """Number of transactions waiting in the mempool."""
        ...

    def pending_tx_payloads(self, limit: int) -> list[bytes]:
        """Up to ``limit`` waiting transactions (oldest first), for re-gossip."""
        ...

    def report_evidence(self, evidence: Evidence) -> None:
        """Queue ``evidence`` as an Evidence tx (the engine calls this once per offence)."""
        ...
