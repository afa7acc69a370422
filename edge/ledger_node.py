"""The ledger node as the daemon sees it: submit a tx, read committed state, run, report.

Spec: docs/spec/daemon.md §Ledger node. :class:`LedgerNode` is the port the submitter, the
period scheduler, the REST API and the status task use. Two implementations:

* :class:`SingleLedger` — one-validator mode (ledger/single.py): the genesis has exactly one
  validator and it is this node; blocks are made locally, no network.
* :class:`BftLedger` (edge/bft.py) — the Tendermint node of ledger/node.py on a transport.

Both beat :data:`HEALTH_NAME` while their loop makes progress; a commit that hangs (a stuck
disk) stops the beats and with them the systemd watchdog pings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from edge.clock import DaemonClock
from edge.health import Health
from ledger.app import App
from ledger.bodyprune import BodyPruner
from ledger.bodyprune import wanted as bodyprune_wanted
from ledger.keys import SigningKey
from ledger.mempool import Mempool
from ledger.single import SingleNode
from ledger.tx import Tx

log = logging.getLogger("lemd.ledger")

HEALTH_NAME = "ledger"
TICK_S = 5.0
"""Real seconds between idle loop turns and health beats (a submitted tx wakes the loop at
once); few wake-ups keep an idle node near zero CPU on a Pi."""


class LedgerNode(Protocol):
    """What the rest of the daemon needs from the ledger node."""

    app: App
    mempool: Mempool
    mode: str
    """"single" or "bft"."""

    @property
    def role(self) -> str:
        """ "validator" while this node's key is in the validator set, else "member"."""
        ...

    def submit(self, raw: bytes) -> Tx:
        """Admit a signed tx locally and pass it on. Raises ``TxRejected``."""
        ...

    def peers(self) -> int:
        """Distinct peers heard from recently."""
        ...

    def resend(self, raws: list[bytes]) -> None:
        """Publish own pending txs again (they may never have left during an outage)."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters for ``/status`` (rejections by reason, consensus round, …)."""
        ...

    async def run(self) -> None:
        """Take part in the ledger until cancelled."""
        ...

    async def close(self) -> None:
        """Finish an ongoing commit; afterwards nothing writes the store."""
        ...


class SingleLedger:
    """One-validator mode around :class:`ledger.single.SingleNode`.

    Args:
        app: the ledger application on the opened store.
        key: this node's key, the genesis's only validator.
        clock: block times follow the daemon clock (simulated time in demos).
        health: beaten every loop turn.
        heartbeat_s: an empty block at least this often [real s].
        batch_delay_s: wait after a first pending tx to gather more [real s].
        prune_bodies: on a chain with retention, remove pruned days' SetMeasure bodies from the
            block store after each block; on a pseudonymous chain, decided sealed JoinRequests'
            boxes (docs/spec/privacy.md §3.1).
    """

    mode = "single"

    def __init__(
        self,
        app: App,
        key: SigningKey,
        clock: DaemonClock,
        health: Health,
        *,
        heartbeat_s: float = 300.0,
        batch_delay_s: float = 0.2,
        prune_bodies: bool = True,
    ) -> None:
        self.app = app
        wanted = bodyprune_wanted(app.store.genesis)
        self._bodies = BodyPruner(app.store) if prune_bodies and wanted else None
        self.node = SingleNode(
            app, key, heartbeat_s=heartbeat_s, batch_delay_s=batch_delay_s, clock_ms=clock.now_ms
        )
        self.mempool = self.node.mempool
        self.health = health
        self.heartbeat_s = heartbeat_s
        self.batch_delay_s = batch_delay_s
        self._wake = asyncio.Event()
        self._making: asyncio.Task[bytes] | None = None
        self._pruning: asyncio.Future[int] | None = None
        self.on_commit: Callable[[float], None] | None = None
        """Called with each block's build + durable commit time [s] (the daemon's metric)."""

    @property
    def role(self) -> str:
        return "validator"

    def submit(self, raw: bytes) -> Tx:
        tx = self.mempool.add(raw)
        self._wake.set()
        return tx

    def peers(self) -> int:
        return 0

    def resend(self, raws: list[bytes]) -> None:
        """Nothing to do: the local mempool is the block maker's."""

    def stats(self) -> dict[str, Any]:
        return {"mempool_full_rejections": self.mempool.rejected_full}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last_block = loop.time()
        retry_at = float("inf")  # txs waiting for a later block time: try again then
        while True:
            try:
                async with asyncio.timeout(TICK_S):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self.health.beat(HEALTH_NAME)
            now = loop.time()
            woken = self._wake.is_set()
            if not (woken or now - last_block >= self.heartbeat_s or now >= retry_at):
                continue
            self._wake.clear()
            if woken:
                await asyncio.sleep(self.batch_delay_s)
            before = len(self.mempool)
            await self._make_block()
            last_block = loop.time()
            left = len(self.mempool)
            if left and left < before:
                self._wake.set()  # more than one block's worth
            retry_at = last_block + 5.0 if left else float("inf")

    async def _make_block(self) -> None:
        # The commit runs in a worker thread; shield it so a shutdown waits for the durable
        # write instead of abandoning it half way (close() awaits the same task).
        started = time.perf_counter()
        self._making = asyncio.ensure_future(self.node.make_block())
        await asyncio.shield(self._making)
        self._making = None
        if self._bodies is not None:
            # Like the commit: bounded LMDB work in a worker thread, shielded so close() waits
            # for it before the store is closed.
            self._pruning = asyncio.ensure_future(asyncio.to_thread(self._bodies.step))
            await asyncio.shield(self._pruning)
            self._pruning = None
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started)

    async def close(self) -> None:
        if self._making is not None:
            try:
                await self._making
            except Exception as exc:  # reported by run(); here we only wait for the write
                log.error("last block failed during shutdown", exc_info=exc)
        if self._pruning is not None:
            try:
                await self._pruning
            except Exception as exc:  # the cursor did not move: the next start redoes the step
                log.error("block-body pruning failed during shutdown", exc_info=exc)
