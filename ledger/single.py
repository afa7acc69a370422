"""One-validator mode: a node that commits its own blocks (no consensus, no network).

Spec: docs/spec/ledger.md §8. Until BFT consensus runs, the daemon uses this node behind the
same interface: ``submit`` → mempool → block → state → queries. A block is made when the mempool
is not empty (after a short batching delay) and, empty, every ``heartbeat_s``. The commit is one
signature of the validator over ``encode([height, block_hash])`` as message kind ``commit``; the
durable LMDB write runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ledger import codec
from ledger.app import App
from ledger.block import decode as decode_block
from ledger.errors import LedgerError
from ledger.keys import SigningKey, verify
from ledger.mempool import Mempool
from ledger.tx import Tx


def single_commit(key: SigningKey, chain_id: str, height: int, block_hash: bytes) -> codec.Value:
    """The one-signature commit of a single-validator chain."""
    signature = key.sign(chain_id, "commit", codec.encode([height, block_hash]))
    return [height, block_hash, [[key.public_key, signature]]]


def verify_single_commit(chain_id: str, commit: codec.Value, validator: bytes) -> None:
    """Check a :func:`single_commit` value.

    Raises:
        LedgerError: malformed commit or a signature that does not verify.
    """
    try:
        height, block_hash, [[pk, signature]] = commit
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"malformed single-validator commit: {exc}") from exc
    if pk != validator:
        raise LedgerError("commit signed by a key that is not the validator")
    verify(pk, chain_id, "commit", codec.encode([height, block_hash]), signature)


class SingleNode:
    """Commits blocks from its own mempool, signed by its validator key.

    Args:
        app: the ledger application (its store must list ``key`` as the only validator).
        key: the validator's signing key.
        heartbeat_s: an empty block at least this often [s] (keeps the block time moving).
        batch_delay_s: after the first pending tx, wait this long to gather more [s].
        clock_ms: wall clock [ms since epoch, UTC]; injectable for tests.
    """

    def __init__(
        self,
        app: App,
        key: SigningKey,
        *,
        mempool: Mempool | None = None,
        heartbeat_s: float = 300.0,
        batch_delay_s: float = 0.5,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        if [pk for pk, _ in app.validators()] != [key.public_key]:
            raise LedgerError("single-validator mode needs the node's key as the only validator")
        self.app = app
        self.key = key
        self.mempool = mempool or Mempool(app)
        self.heartbeat_s = heartbeat_s
        self.batch_delay_s = batch_delay_s
        self.clock_ms = clock_ms
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def submit(self, raw: bytes) -> Tx:
        """Admit a tx to the mempool and wake the block maker.

        Raises:
            TxRejected: admission refused it (reason code and message).
        """
        tx = self.mempool.add(raw)
        self._wake.set()
        return tx

    async def run(self) -> None:
        """Make blocks until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.heartbeat_s)
                await asyncio.sleep(self.batch_delay_s)
            except TimeoutError:
                pass  # heartbeat: an empty block keeps the chain's time current
            self._wake.clear()
            await self.make_block()

    async def make_block(self) -> bytes:
        """Build, sign and durably commit one block from the mempool; returns the app hash."""
        async with self._lock:
            app = self.app
            height = app.height + 1
            time_ms = max(self.clock_ms(), app.last_block_time_ms + 1)
            prepared = app.prepare(
                height, time_ms, self.key.public_key, self.mempool.reap(), app.commit(height - 1)
            )
            block = decode_block(prepared.block_bytes)
            commit = single_commit(self.key, app.chain_id, height, block.hash)
            # The fsync waits in a worker thread; the caches admission shares are released
            # here on the loop's thread (docs/spec/ledger.md §8).
            app_hash = await asyncio.to_thread(app.store_block, prepared.block_bytes, commit)
            app.release_committed(prepared.block_bytes)
            self.mempool.update(block.txs, prepared.dropped)
            # More pending after a non-empty block: go again. If nothing fitted (txs waiting for a
            # later block time), wait for the heartbeat or a new tx instead of spinning.
            if block.txs and len(self.mempool):
                self._wake.set()
            return app_hash
