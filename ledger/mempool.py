"""The mempool: admitted txs waiting for a block.

Spec: docs/spec/ledger.md §7. Admission runs the app's ``check_tx`` with the sequence the signer
must use after its pending txs; duplicates (by tx hash) are refused; the pool is bounded in count
and bytes and, when full, refuses new txs (``mempool_full``) rather than evicting admitted ones —
eviction would open sequence gaps, and the submitter (the edge outbox) retries anyway. Reaping is
in admission order. After a commit, committed txs leave, txs the proposer dropped for a lasting
reason leave, and the rest are re-checked against the new state.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence

from ledger.app import App
from ledger.errors import TIME_REASONS, Reason, TxRejected
from ledger.keys import sha256
from ledger.tx import Tx, decode

DEFAULT_MAX_TXS = 5000
DEFAULT_MAX_BYTES = 4 << 20
RECHECK_LIMIT = 256
"""Pending txs fully re-checked after each commit (the rest: sequence only)."""


class Mempool:
    """Pending txs of one node.

    Args:
        app: the application whose committed state admission checks against.
        max_txs: bound on the number of pending txs.
        max_bytes: bound on their total size [bytes].
    """

    def __init__(
        self, app: App, *, max_txs: int = DEFAULT_MAX_TXS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.app = app
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self._txs: OrderedDict[bytes, Tx] = OrderedDict()
        self._pending: Counter[bytes] = Counter()
        self.size_bytes = 0
        self.rejected_full = 0
        """Count of txs refused because the pool was full (exported as a metric by edge)."""

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._txs

    def add(self, raw: bytes) -> Tx:
        """Admit ``raw``.

        Returns:
            The decoded tx.

        Raises:
            TxRejected: ``duplicate_tx``, ``mempool_full`` or any ``check_tx`` reason.
        """
        tx_hash = sha256(raw) if isinstance(raw, bytes) else b""
        if tx_hash in self._txs:
            raise TxRejected(Reason.DUPLICATE_TX, f"tx {tx_hash.hex()[:16]}… is already pending")
        if len(self._txs) >= self.max_txs or self.size_bytes + len(raw) > self.max_bytes:
            self.rejected_full += 1
            raise TxRejected(
                Reason.MEMPOOL_FULL,
                f"mempool holds {len(self._txs)} txs / {self.size_bytes} bytes; retry later",
            )
        tx = self._admit(raw)
        self._txs[tx.hash] = tx
        self._pending[tx.signer] += 1
        self.size_bytes += len(raw)
        return tx

    def _admit(self, raw: bytes) -> Tx:
        # The signer's next sequence = committed sequence + its txs already pending here.
        signer = decode(raw).signer
        expected = self.app.sequence(signer) + self._pending[signer]
        return self.app.admit_tx(raw, expected_sequence=expected)

    def reap(self, max_txs: int | None = None) -> list[bytes]:
        """Pending txs in admission order (they stay until :meth:`update`)."""
        items = list(self._txs.values())[:max_txs]
        return [t.raw for t in items]

    def update(
        self, committed: Sequence[bytes], dropped: Iterable[tuple[bytes, TxRejected]] = ()
    ) -> None:
        """After a commit: remove committed txs and lasting failures, re-check the rest.

        The first :data:`RECHECK_LIMIT` remaining txs (the next proposals' candidates) are
        re-checked in full; later ones only for their sequence (cheap: the decoded tx is
        kept), so the cost per block stays bounded under load. A later tx that became
        invalid otherwise is caught when it moves up, or by the proposer's filter, which
        never proposes a failing tx (docs/spec/ledger.md §7).
        """
        gone = {sha256(raw) for raw in committed}
        gone |= {sha256(raw) for raw, exc in dropped if exc.reason not in TIME_REASONS}
        old = [t for h, t in self._txs.items() if h not in gone]
        self._txs.clear()
        self._pending.clear()
        self.size_bytes = 0
        committed_seq: dict[bytes, int] = {}
        for index, t in enumerate(old):
            if index < RECHECK_LIMIT:
                try:
                    tx = self._admit(t.raw)
                except TxRejected:
                    continue  # now invalid (e.g. a conflicting tx committed first)
            else:
                if t.signer not in committed_seq:
                    committed_seq[t.signer] = self.app.sequence(t.signer)
                if t.sequence != committed_seq[t.signer] + self._pending[t.signer]:
                    continue  # stale (its sequence was used) or behind a dropped one
                tx = t
            self._txs[tx.hash] = tx
            self._pending[tx.signer] += 1
            self.size_bytes += len(tx.raw)
