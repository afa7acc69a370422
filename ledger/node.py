"""A ledger node: consensus + the ledger application + mempool gossip + block sync, on a Transport.

Spec: docs/spec/consensus.md §1. :class:`Node` drives the consensus engine over
:class:`~ledger.ledger_port.LedgerPort` (the ledger app and its mempool as the consensus
application) on the asyncio loop: one reader fills a bounded inbox, one consumer feeds the
engine (the only code touching consensus state), one publisher drains a bounded outbox to the
transport. A broken consensus invariant (:class:`~ledger.consensus.errors.ForkError`, a
committed block the app refuses) ends :meth:`Node.run` with the error: the process stops and
systemd restarts it.

Split by responsibility: :class:`~ledger.mailbox.Mailbox` owns the queues and the
transport-facing tasks (reader, publisher, tx coalescing, link watch);
:class:`~ledger.snapshot_fallback.SnapshotFallback` owns snapshot traffic and the switch to a
snapshot join when peers' blocks are body-pruned (§5b). This module keeps the wiring, the
lifecycle, the consumer (what each received message goes to; txs admitted in batches) and the
node's API (commit listeners, tx submission, status).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.app import App
from ledger.bodyprune import BodyPruner
from ledger.bodyprune import wanted as bodyprune_wanted
from ledger.consensus.clock import Clock, LoopClock, TimerHandle
from ledger.consensus.crash import NO_CRASH, CrashPoints
from ledger.consensus.engine import Engine, EngineConfig
from ledger.consensus.evidence import ledger_verifier
from ledger.consensus.messages import Commit, Vote
from ledger.consensus.privval import SignState
from ledger.consensus.wal import ConsensusStore
from ledger.errors import CodecError
from ledger.genesis import Genesis
from ledger.keys import SigningKey
from ledger.ledger_port import LedgerPort
from ledger.mailbox import Mailbox
from ledger.mempool import Mempool
from ledger.proofs import ProofService
from ledger.snapshot import SnapshotServer
from ledger.snapshot_fallback import SnapshotFallback
from ledger.store import Store
from ledger.transport.base import Message, Transport
from ledger.txgossip import decode_payload

log = logging.getLogger("ledger.node")

ADMIT_BATCH = 512
"""Received txs admitted in one go at most; consensus messages queued meanwhile go first."""


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """One committed block, as commit listeners see it (:meth:`Node.add_commit_listener`).

    Attributes:
        height: the committed height.
        block_hash: its header hash [32 bytes].
        app_hash: the state root after it [32 bytes].
        n_txs: txs in the block.
        commit_seconds: real time from the start of the height's consensus at this node
            (round 0 began, or the height was entered when the block came by sync) to the
            durable commit [s] (``lem_ledger_commit_seconds``).
        txs: the block's tx envelopes.
    """

    height: int
    block_hash: bytes
    app_hash: bytes
    n_txs: int
    commit_seconds: float
    txs: tuple[bytes, ...]


CommitListener = Callable[[CommitInfo], None]


@dataclass(frozen=True, slots=True)
class NodeDirs:
    """Where a node keeps its stores (each its own LMDB environment) under one root."""

    root: Path

    @property
    def ledger(self) -> Path:
        return self.root / "ledger"

    @property
    def consensus(self) -> Path:
        return self.root / "consensus"

    @property
    def privval(self) -> Path:
        return self.root / "privval"


class _GuardedClock:
    """A clock whose timer callbacks report exceptions to the node instead of the event loop's
    exception handler (which would only log them and let a broken node run on)."""

    def __init__(self, clock: Clock, on_error: Callable[[BaseException], None]) -> None:
        self._clock = clock
        self._on_error = on_error

    def now_ms(self) -> int:
        return self._clock.now_ms()

    def call_later(self, delay_ms: int, fn: Callable[[], None]) -> TimerHandle:
        def guarded() -> None:
            try:
                fn()
            except Exception as exc:  # handed over: the consumer task re-raises it
                self._on_error(exc)

        return self._clock.call_later(delay_ms, guarded)


class Node:
    """One community node on one transport: a validator when its key is in the set, else a
    member that follows verified blocks.

    Args:
        app: the opened ledger application (built with
            :func:`~ledger.consensus.evidence.ledger_verifier` as its evidence verifier).
        transport: the node's transport (MQTT, or in-memory in tests).
        directory: where the consensus store and the sign-state live (own LMDB environments).
        key: the node's key (None: a keyless follower).
        config: engine parameters (its ``chain_id`` must be the app's).
        mempool: the app's mempool (default: a new one).
        clock: time source (default: the running loop's).
        crash: injected crash points (tests).
        inbox_size: bound of the received-message queue (when full, new ones are dropped and
            counted: consensus re-publishes).
        durable: fsync the consensus stores (tests may turn it off).
        prune_bodies: on a chain with retention (genesis ``dispute_window_ms``), remove pruned
            days' SetMeasure bodies from the block store; on a pseudonymous chain, decided
            sealed JoinRequests' boxes (docs/spec/privacy.md §3.1).
        snapshots: serve state snapshots, and join by one when peers answer that the blocks
            this node needs are body-pruned (docs/spec/consensus.md §5b).
    """

    def __init__(
        self,
        app: App,
        transport: Transport,
        directory: Path,
        *,
        key: SigningKey | None,
        config: EngineConfig,
        mempool: Mempool | None = None,
        clock: Clock | None = None,
        crash: CrashPoints = NO_CRASH,
        inbox_size: int = 1024,
        durable: bool = True,
        prune_bodies: bool = True,
        snapshots: bool = True,
    ) -> None:
        if config.chain_id != app.chain_id:
            raise ValueError(f"config chain {config.chain_id!r} is not {app.chain_id!r}")
        dirs = NodeDirs(directory)
        self.app = app
        self.store = app.store
        self.mempool = mempool if mempool is not None else Mempool(app)
        self.cstore = ConsensusStore(dirs.consensus, durable=durable)
        self.sign_state = (
            SignState(dirs.privval, crash=crash, durable=durable) if key is not None else None
        )
        self.transport = transport
        self.key = key
        self.port = LedgerPort(self.app, self.mempool, self.cstore, key, self._gossip_tx)
        # Light members: header feed + proof answers (docs/spec/light.md).
        self.proofs = ProofService(app, key, self._send, valset_of=self._valset_powers)
        wanted = bodyprune_wanted(app.store.genesis)
        self.bodies = BodyPruner(self.store) if prune_bodies and wanted else None
        self.snapshots = SnapshotServer(self.store, key, self._send) if snapshots else None
        self.stats: Counter[str] = Counter()
        self.mailbox = Mailbox(transport, self.stats, clock=clock, inbox_size=inbox_size)
        self.peers = self.mailbox.peers
        self.fallback = SnapshotFallback(
            app,
            self.mempool,
            self.cstore,
            key=key,
            server=self.snapshots,
            send=self._send,
            node_id=transport.node_id,
            workdir=directory / "snapshot-join",
            stats=self.stats,
            stop_engine=self._stop_engine,
            restart_engine=self._restart_engine,
            sync_now=self._sync_again,
        )
        self._guarded: _GuardedClock | None = None
        self.port.on_commit = self._on_commit
        self._commit_listeners: list[CommitListener] = []
        self._config = config
        self._clock = clock
        self._crash = crash
        self.engine: Engine | None = None
        self._closed = False
        self._owns_store = False
        self._failure: BaseException | None = None

    @classmethod
    def open(
        cls,
        directory: Path,
        genesis: Genesis,
        transport: Transport,
        *,
        key: SigningKey | None,
        config: EngineConfig,
        durable: bool = True,
        **kwargs: Any,
    ) -> Node:
        """Open (or create) the ledger store under ``directory/ledger`` and build a node that
        closes it when it stops."""
        if config.chain_id != genesis.chain_id:
            raise ValueError(f"config chain {config.chain_id!r} is not {genesis.chain_id!r}")
        store = Store(NodeDirs(directory).ledger, genesis, durable=durable)
        app = App(store, evidence_verifier=ledger_verifier)
        node = cls(app, transport, directory, key=key, config=config, durable=durable, **kwargs)
        node._owns_store = True
        return node

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Run until :meth:`close`; raises if a consensus invariant breaks."""
        self._guarded = _GuardedClock(self._clock or LoopClock(), self._fail)
        self._start_engine()
        name = self.transport.node_id
        try:
            async with asyncio.TaskGroup() as tg:
                self.fallback.bind(tg)
                tg.create_task(self.mailbox.read(), name=f"{name}-read")
                tg.create_task(self._consume(), name=f"{name}-consensus")
                tg.create_task(self.mailbox.publish(), name=f"{name}-publish")
                tg.create_task(self.mailbox.watch_link(self._sync_on_connect), name=f"{name}-link")
        except ExceptionGroup as group:
            # Surface the error itself (ForkError, StoreError, …): callers and logs name it.
            raise group.exceptions[0] from group
        finally:
            if self.engine is not None:
                self.engine.stop()
            if self.snapshots is not None:
                self.snapshots.close()
            self._close_stores()

    def _start_engine(self) -> None:
        """A fresh engine over the current stores (at start, and after a snapshot join)."""
        assert self._guarded is not None
        self.engine = Engine(
            self._config,
            self.port,
            self._guarded,
            self._send,
            self.cstore,
            key=self.key,
            sign_state=self.sign_state,
            crash=self._crash,
        )
        self.engine.start()

    def _stop_engine(self) -> None:
        """Stop the engine for a snapshot join (there is none until it ends)."""
        if self.engine is not None:
            self.engine.stop()
        self.engine = None

    def _restart_engine(self) -> None:
        """After a snapshot join (restored or failed): a fresh engine, unless closing."""
        if not self._closed:
            self._start_engine()

    def _on_commit(self, block: bytes, commit: Commit) -> None:
        """After each committed block: header feed, snapshot views, bounded body pruning."""
        self.proofs.on_commit(block, commit)
        if self.snapshots is not None:
            self.snapshots.on_commit()
        if self.bodies is not None:
            self.bodies.step()
        self._notify_commit_listeners(block)

    async def close(self) -> None:
        """Stop the tasks of :meth:`run` and close the transport."""
        if self._closed:
            return
        self._closed = True
        if self.engine is not None:
            self.engine.stop()
        self.fallback.cancel()  # a join's waits for answers would hold up the shutdown
        await self.mailbox.close()

    def _close_stores(self) -> None:
        self.cstore.close()
        if self.sign_state is not None:
            self.sign_state.close()
        if self._owns_store:
            self.store.close()

    # ----------------------------------------------------------------- consumer

    async def _consume(self) -> None:
        """Feed the engine. Received txs wait until the queue is drained (or ADMIT_BATCH are
        collected) and are admitted together: consensus messages behind a flood of txs are not
        delayed by it, and the engine is notified once per batch."""
        inbox = self.mailbox.inbox
        txs: list[bytes] = []
        while True:
            if txs and (inbox.empty() or len(txs) >= ADMIT_BATCH):
                self._admit_all(txs)
                txs = []
                continue
            message = await inbox.get()
            if message is None:
                break
            if message.channel == "tx":
                txs.extend(self._tx_payloads(message.payload))
            else:
                self._handle(message)
        if self._failure is not None:
            raise self._failure

    def _tx_payloads(self, payload: bytes) -> list[bytes]:
        try:
            return decode_payload(payload)
        except CodecError:
            self.stats["tx_batch_malformed"] += 1
            return []

    def _fail(self, exc: BaseException) -> None:
        """A timer callback raised: stop the node with that error (run() re-raises it)."""
        if self._failure is None:
            self._failure = exc
        self.mailbox.wake_consumer()

    def _handle(self, message: Message) -> None:
        if self.fallback.handle(message, self.engine):
            return  # snapshot traffic, or anything while a join replaces the state
        assert self.engine is not None
        if message.channel == "tx":
            self._admit_all(self._tx_payloads(message.payload))
        elif message.channel in ("proof_req", "proof_resp", "header"):
            self.proofs.handle(message)
        elif message.channel != "join":
            self.engine.receive(message.channel, message.sender, message.payload)

    def _admit_all(self, raws: list[bytes]) -> None:
        """Admit gossiped txs as one batch (one state snapshot); a tx ahead of its account's
        sequence is held until its predecessor arrives (ledger/mempool.py)."""
        if self.fallback.joining:
            self.stats["tx_dropped_joining"] += len(raws)
            return  # checked against a state about to be replaced; gossip repeats them
        result = self.mempool.add_many(raws, hold=True)
        for _, exc in result.rejected:
            self.stats[f"tx_rejected_{exc.reason}"] += 1
        self.stats["tx_held"] += len(result.held)
        self.stats["tx_admitted"] += len(result.admitted)
        if result.admitted and self.engine is not None:
            self.engine.notify_tx()

    def _send(self, channel: str, payload: bytes, to: str | None) -> None:
        """The publisher given to the engine, the proof service and snapshot sync."""
        self.mailbox.send(channel, payload, to)

    def _sync_on_connect(self) -> None:
        if self.engine is not None:
            self.engine.sync_now()

    def _sync_again(self) -> None:
        if self.engine is not None and not self._closed:
            self.engine.sync_now()

    def _valset_powers(self, height: int) -> dict[bytes, int] | None:
        valset = self.cstore.load_valset(height)
        return None if valset is None else valset.powers()

    def _gossip_tx(self, raw: bytes) -> None:
        self._send("tx", raw, None)
        if self.engine is not None:
            self.engine.notify_tx()

    def _notify_commit_listeners(self, block: bytes) -> None:
        """Tell the commit listeners (metrics, the edge submitter) about a durable commit."""
        if not self._commit_listeners:
            return
        decoded = self.app.decode_block(block)  # cached: the block was just validated
        started = self.engine.height_started if self.engine is not None else time.monotonic()
        info = CommitInfo(
            decoded.header.height,
            decoded.hash,
            self.app.app_hash,
            len(decoded.txs),
            max(0.0, time.monotonic() - started),
            decoded.txs,
        )
        for listener in list(self._commit_listeners):
            try:
                listener(info)
            except Exception:  # a listener (metrics, a waking submitter) must not stop consensus
                self.stats["commit_listener_errors"] += 1
                log.exception("commit listener failed", extra={"height": info.height})

    # ----------------------------------------------------------------- API

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call ``listener`` with a :class:`CommitInfo` after every committed block (from the
        consensus task, synchronously: keep it short; errors are logged and counted)."""
        self._commit_listeners.append(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        """Stop calling ``listener`` (no error if it was not registered)."""
        if listener in self._commit_listeners:
            self._commit_listeners.remove(listener)

    def submit_tx(self, raw: bytes) -> bytes:
        """Admit a locally submitted tx and gossip it; returns its hash.

        Raises:
            TxRejected: the mempool refused it (the reason says why).
        """
        tx = self.mempool.add(raw)
        self._gossip_tx(raw)
        return tx.hash

    def status(self) -> dict[str, Any]:
        """Height, last block hash, app hash, role, peers seen, mempool size, engine counters."""
        engine = self.engine
        validator = engine is not None and engine.is_validator
        return {
            "height": self.app.height,
            "hash": self.app.last_block_hash.hex(),
            "app_hash": self.app.app_hash.hex(),
            "role": "validator" if validator else "member",
            "peers": sorted(self.peers),
            "mempool": len(self.mempool),
            "consensus": dict(engine.stats) if engine is not None else {},
            "round": engine.core.round if engine is not None else -1,
        }


__all__ = [
    "CommitInfo",
    "CommitListener",
    "LedgerPort",
    "Node",
    "NodeDirs",
    "Vote",
    "ledger_verifier",
]
