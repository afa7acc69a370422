"""A node's switch from block sync to a state-snapshot join, when peers answer ``sync_pruned``.

Spec: docs/spec/consensus.md §5b (Trigger). Every node starts with block sync. A peer whose
blocks from the asked height are body-pruned answers ``["sync_pruned", chain, from_height, tip,
tip_commit]``; the node cannot replay those blocks, so it stops its engine, restores a verified
snapshot (:class:`~ledger.snapshot_join.SnapshotJoiner`) and starts a fresh engine over the
restored stores. :class:`SnapshotFallback` decides when to do that and runs the join as a task
of the node:

- ``sync_pruned`` is unsigned and any member may send it as a direct message, so it is acted on
  only when verified messages show this node's height decided elsewhere (the engine's
  ``is_behind``, or the answer's own ``tip_commit`` verified like an idle tip); a validator at
  the live height ignores it.
- while a join runs there is no engine: snapshot answers and header answers go to the joiner,
  everything else is dropped (gossip and consensus repeat it).
- a failed join falls back to block sync; another join may start after :data:`JOIN_RETRY_S`,
  when the node asks for blocks again.

It also routes snapshot requests to this node's :class:`~ledger.snapshot.SnapshotServer`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger.app import App
from ledger.consensus.engine import Engine
from ledger.consensus.errors import MessageError
from ledger.consensus.messages import Commit
from ledger.consensus.wal import ConsensusStore
from ledger.consensus.wire import Tip
from ledger.keys import SigningKey
from ledger.mempool import Mempool
from ledger.snapshot import SnapshotError, SnapshotServer, is_snapshot_message
from ledger.snapshot import decode as decode_snapshot
from ledger.snapshot_join import SnapshotJoiner
from ledger.transport.base import Message

# The node's logger: these lines were always the node's, and log filters select them by it.
log = logging.getLogger("ledger.node")

JOIN_RETRY_S = 30.0
"""After a failed snapshot join, block sync runs this long before another one may start [s]."""

SendFn = Callable[[str, bytes, str | None], None]


class SnapshotFallback:
    """Snapshot traffic of one node, and the join it runs when block sync cannot go on.

    Args:
        app: the node's ledger application (its store is what a join replaces).
        mempool: the node's mempool (re-checked against the restored state).
        cstore: the node's consensus store (a join writes the restored tip's sets and commit).
        key: the node's key (None: a keyless follower, which cannot join).
        server: the node's snapshot server (None: snapshots off; no serving, no joining).
        send: the node's publisher ``(channel, payload, to)``.
        node_id: the node's transport id (where answers are addressed).
        workdir: scratch directory of a join (wiped before and after each attempt).
        stats: the node's counters (``snapshot_*``, ``sync_pruned_*`` are counted here).
        stop_engine: stops the node's engine (a join is about to replace its state).
        restart_engine: builds a fresh engine over the current stores (after a join).
        sync_now: asks for blocks at once (after the retry back-off of a failed join).
    """

    def __init__(
        self,
        app: App,
        mempool: Mempool,
        cstore: ConsensusStore,
        *,
        key: SigningKey | None,
        server: SnapshotServer | None,
        send: SendFn,
        node_id: str,
        workdir: Path,
        stats: Counter[str],
        stop_engine: Callable[[], None],
        restart_engine: Callable[[], None],
        sync_now: Callable[[], None],
    ) -> None:
        self._app = app
        self._mempool = mempool
        self._cstore = cstore
        self._key = key
        self._server = server
        self._send = send
        self._node_id = node_id
        self._workdir = workdir
        self._stats = stats
        self._stop_engine = stop_engine
        self._restart_engine = restart_engine
        self._sync_now = sync_now
        self._tasks: asyncio.TaskGroup | None = None
        self._joiner: SnapshotJoiner | None = None
        self._join_task: asyncio.Task[None] | None = None
        self._join_after_s = 0.0

    @property
    def joining(self) -> bool:
        """A join is under way (the node has no engine meanwhile)."""
        return self._joiner is not None

    def bind(self, tasks: asyncio.TaskGroup) -> None:
        """Run joins in ``tasks`` (the node's task group; without one, no join starts)."""
        self._tasks = tasks

    def cancel(self) -> None:
        """Cancel a join under way (its waits for answers would hold up a shutdown)."""
        if self._join_task is not None:
            self._join_task.cancel()

    def handle(self, message: Message, engine: Engine | None) -> bool:
        """Take ``message`` if it is snapshot traffic or arrives during a join.

        Returns:
            True when the message was taken (or dropped) here; False: the node handles it.
        """
        if message.channel in ("sync_req", "sync_resp") and is_snapshot_message(message.payload):
            self._on_snapshot_message(message, engine)
            return True
        if self._joiner is not None:
            if message.channel == "proof_resp":
                self._joiner.feed(message)  # the join's header answers
            return True  # no engine while the state is being replaced
        return False

    def _on_snapshot_message(self, message: Message, engine: Engine | None) -> None:
        """Snapshot requests go to the server, answers to a running join; a ``sync_pruned``
        answer for this node's height starts one (docs/spec/consensus.md §5b)."""
        if message.channel == "sync_req":
            if self._server is not None and self._joiner is None:
                self._server.handle(message)
            return
        if self._joiner is not None:
            self._joiner.feed(message)
            return
        try:
            value = decode_snapshot(self._app.chain_id, message.payload)
        except SnapshotError:
            self._stats["snapshot_malformed"] += 1
            return
        if value[0] == "sync_pruned":
            if len(value) != 5 or not all(_is_height(v) for v in value[2:4]):
                self._stats["snapshot_malformed"] += 1
                return
            self._maybe_join(engine, value[2], value[3], value[4], message.sender)

    def _maybe_join(
        self, engine: Engine | None, from_height: int, tip: int, tip_commit: Any, sender: str
    ) -> None:
        if engine is None or engine.height != from_height or tip < from_height:
            return  # an answer to an older request, or no further tip: keep syncing blocks
        if not engine.is_behind and tip_commit is not None:
            try:  # the answer's commit, verified against this node's validator set
                engine.on_tip(Tip(Commit.from_value(tip_commit)))
            except MessageError:
                self._stats["sync_pruned_bad_commit"] += 1
        if not engine.is_behind:
            # Nothing verified says this height is decided elsewhere: anyone may send this
            # message, and a node at the live height must not stop its engine for it.
            self._stats["sync_pruned_not_behind"] += 1
            return
        if self._key is None or self._server is None or self._tasks is None:
            self._stats["sync_pruned_cannot_join"] += 1
            return
        if asyncio.get_running_loop().time() < self._join_after_s:
            return
        log.warning(
            "blocks from height %d are body-pruned at %s (its tip %d): cannot replay them, "
            "switching to state-snapshot sync",
            from_height,
            sender,
            tip,
        )
        self._stop_engine()
        self._joiner = SnapshotJoiner(
            self._app.store, self._cstore, self._key, self._node_id, self._send, self._workdir
        )
        self._join_task = self._tasks.create_task(self._join(), name=f"{self._node_id}-snapshot")

    async def _join(self) -> None:
        """Run one snapshot join, then block sync from the restored height (or from where the
        node stood, after a failure: the next ``sync_pruned`` answer retries later)."""
        assert self._joiner is not None
        try:
            height = await self._joiner.join()
        except SnapshotError as exc:
            self._stats["snapshot_failed"] += 1
            log.error("state-snapshot sync failed, back to block sync: %s", exc)
            loop = asyncio.get_running_loop()
            self._join_after_s = loop.time() + JOIN_RETRY_S
            # Ask again then (an idle chain would otherwise tell nothing until its next tip).
            loop.call_later(JOIN_RETRY_S + 0.1, self._sync_now)
        else:
            self._stats["snapshot_joined"] += 1
            self._mempool.update([], [])  # re-check what waits against the restored state
            log.info(
                "state snapshot restored at height %d (app hash %s…), block sync continues",
                height,
                self._app.app_hash.hex()[:16],
            )
        finally:
            self._joiner = None
        self._restart_engine()


def _is_height(value: Any) -> bool:
    """A block height field of a received message: a non-negative int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
