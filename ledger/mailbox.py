"""A node's mailbox: the bounded queues between an asyncio transport and the synchronous engine.

Spec: docs/spec/consensus.md §1, §5 (Reconnect) and §11 (Tx gossip batches). The engine is
single-threaded and synchronous; the transport is asyncio. :class:`Mailbox` is the seam between
them and owns every transport-facing task of :class:`~ledger.node.Node`:

- **read**: received messages go to a bounded inbox (full: the newest is dropped and counted as
  ``inbox_full``; consensus re-publishes); the sender is noted as a peer seen.
- **send / publish**: outgoing messages go to a bounded outbox (full: ``outbox_full``) that one
  publisher drains, each publish inside ``asyncio.timeout`` (a slow one is dropped and counted
  as ``publish_failed``). Txs gossiped to everyone within one event-loop turn leave as one
  batch payload (ledger/txgossip.py).
- **watch_link**: a (re)connection of the transport is reported at once, so the node asks for
  what was decided while the link was down.

What the node does with a received message is not decided here (ledger/node.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from ledger.consensus.clock import Clock, LoopClock
from ledger.transport.base import Message, Transport, TransportError
from ledger.txgossip import TxBatcher

LINK_POLL_S = 0.5
"""How often the mailbox looks at the transport's connect counter [s]."""

PUBLISH_TIMEOUT_S = 5.0
"""Bound on one transport publish [s]; a slower one is dropped (consensus re-publishes)."""


class Mailbox:
    """Bounded inbox and outbox of one node on one transport.

    Args:
        transport: the node's transport.
        stats: the node's counters (``inbox_full``, ``outbox_full``, ``publish_failed``,
            ``link_connects`` are counted here).
        clock: time source for :attr:`peers` (default: the running loop's).
        inbox_size: bound of the inbox [messages]; the outbox holds four times as many.
    """

    def __init__(
        self,
        transport: Transport,
        stats: Counter[str],
        *,
        clock: Clock | None = None,
        inbox_size: int = 1024,
    ) -> None:
        self.transport = transport
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=inbox_size)
        """Received messages for the node's consumer; None ends its loop."""
        self.peers: dict[str, int] = {}
        """Sender -> when its last message arrived [ms, clock time]."""
        self._outbox: asyncio.Queue[tuple[str, bytes, str | None] | None] = asyncio.Queue(
            maxsize=4 * inbox_size
        )
        self._stats = stats
        self._clock = clock
        self._tx_batcher = TxBatcher()
        self._closed = False

    async def read(self) -> None:
        """Move received messages to the inbox until the transport's stream ends."""
        clock = self._clock or LoopClock()
        async for message in self.transport.messages():
            self.peers[message.sender] = clock.now_ms()
            try:
                self.inbox.put_nowait(message)
            except asyncio.QueueFull:
                self._stats["inbox_full"] += 1
        if not self._closed:
            self.inbox.put_nowait(None)

    async def publish(self) -> None:
        """Drain the outbox to the transport until :meth:`close`."""
        while (item := await self._outbox.get()) is not None:
            channel, payload, to = item
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                    await self.transport.publish(channel, payload, to=to)
            except (TransportError, TimeoutError):
                self._stats["publish_failed"] += 1

    async def watch_link(self, on_connect: Callable[[], None]) -> None:
        """Call ``on_connect`` whenever the transport (re)connects: what peers decided while
        the link was down is announced no more (docs/spec/consensus.md §5, Reconnect)."""
        stats = getattr(self.transport, "stats", None)
        if stats is None or not hasattr(stats, "connects"):
            return  # in-memory transport: no link to watch
        seen = stats.connects
        while not self._closed:
            await asyncio.sleep(LINK_POLL_S)
            connects = self.transport.stats.connects  # type: ignore[attr-defined]
            if connects != seen:
                seen = connects
                self._stats["link_connects"] += 1
                on_connect()

    def send(self, channel: str, payload: bytes, to: str | None) -> None:
        """Queue one message for the publisher (``to``: a direct message, None: everyone)."""
        if channel == "tx" and to is None:
            # Coalesced: every tx gossiped in this loop turn leaves in one message.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): nothing to coalesce with
                loop = None
            if loop is not None:
                if not self._tx_batcher:
                    loop.call_soon(self._flush_txs)
                self._tx_batcher.add(payload)
                return
        self._enqueue(channel, payload, to)

    def wake_consumer(self) -> None:
        """End the consumer's loop (queued messages may be dropped to make room)."""
        _wake_with_none(self.inbox)

    async def close(self) -> None:
        """Close the transport, then end the consumer and the publisher."""
        self._closed = True
        await self.transport.close()
        for queue in (self.inbox, self._outbox):
            _wake_with_none(queue)

    def _flush_txs(self) -> None:
        for payload in self._tx_batcher.flush():
            self._enqueue("tx", payload, None)

    def _enqueue(self, channel: str, payload: bytes, to: str | None) -> None:
        try:
            self._outbox.put_nowait((channel, payload, to))
        except asyncio.QueueFull:
            self._stats["outbox_full"] += 1


def _wake_with_none(queue: asyncio.Queue[Any]) -> None:
    """Put the end marker in ``queue``, dropping its oldest entries until it fits."""
    while True:
        try:
            queue.put_nowait(None)
            return
        except asyncio.QueueFull:
            queue.get_nowait()
