"""The bounded outgoing queue of the MQTT transport.

Spec: docs/spec/transport.md §Outgoing queue. ``publish`` never waits for the link: it appends
here and returns. A sender task drains the queue while a broker connection is up; while it is
down the queue fills. Two lanes share one bound: consensus and control messages (the urgent
lane) always go out before bulk messages (tx gossip), so a backlog of txs never delays a vote
or a proposal. Policy when full: drop the OLDEST bulk message (txs are re-gossiped and
re-signed, a stuck round is not); only when no bulk message is left, the oldest urgent one
(consensus re-publishes what still matters, and the newest votes are the useful ones). Each
drop is counted. Messages older than
``max_age_s`` are dropped at send time and counted: after a long outage they would only spend
metered bytes on rounds that are over.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message waiting to be published.

    Attributes:
        topic: full MQTT topic.
        payload: the bytes to publish.
        enqueued_at: monotonic time of the ``publish`` call [s].
        seq: position in publish order; re-queued messages go back by it.
        bulk: in the bulk lane (sent after every urgent message, dropped first when full).
    """

    topic: str
    payload: bytes
    enqueued_at: float
    seq: int = 0
    bulk: bool = False


class Outbox:
    """Bounded two-lane FIFO: urgent before bulk, drop-oldest bulk first, re-queue in publish
    order, expiry by age.

    Args:
        max_messages: capacity [messages].
        max_age_s: a message older than this is dropped instead of sent [s].
        clock: monotonic time source [s].
    """

    def __init__(
        self,
        max_messages: int,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_messages < 1 or max_age_s <= 0:
            raise ValueError(
                f"outbox needs max_messages >= 1 and max_age_s > 0, got {max_messages}, {max_age_s}"
            )
        self._max = max_messages
        self._max_age_s = max_age_s
        self._clock = clock
        self._urgent: deque[Outgoing] = deque()
        self._bulk: deque[Outgoing] = deque()
        self._taken = 0  # handed out by get() and not yet done() or requeue()d
        self._next_seq = 0
        self._not_empty = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped = 0
        """Messages dropped because the queue was full (oldest bulk first) [count]."""
        self.dropped_urgent = 0
        """Of :attr:`dropped`, urgent-lane messages (only when no bulk message was left) [count]."""
        self.expired = 0
        """Messages dropped because they waited longer than ``max_age_s`` [count]."""

    def __len__(self) -> int:
        return len(self._urgent) + len(self._bulk)

    def put(self, topic: str, payload: bytes, *, bulk: bool = False) -> None:
        """Append a message to its lane; drop the oldest (bulk first) if the queue is full."""
        item = Outgoing(topic, payload, self._clock(), self._next_seq, bulk)
        (self._bulk if bulk else self._urgent).append(item)
        self._next_seq += 1
        self._trim()
        self._not_empty.set()
        self._idle.clear()

    def done(self, item: Outgoing) -> None:
        """Mark a message handed out by :meth:`get` as sent (acknowledged)."""
        self._taken -= 1
        self._check_idle()

    def requeue(self, item: Outgoing) -> None:
        """Put back a message whose PUBACK never came, in its original publish order.

        Several in-flight messages time out together and come back in whatever order their
        waits end; inserting by ``seq`` keeps the publish order, which matters to receivers
        that need a signer's txs in sequence.
        """
        self._taken -= 1
        lane = self._bulk if item.bulk else self._urgent
        index = next((i for i, queued in enumerate(lane) if queued.seq > item.seq), None)
        if index is None:
            lane.append(item)
        else:
            lane.insert(index, item)
        self._trim()
        self._not_empty.set()

    async def join(self) -> None:
        """Wait until every queued message is sent, dropped or expired."""
        await self._idle.wait()

    async def get(self) -> Outgoing:
        """Wait for the oldest urgent message, else the oldest bulk one, that is still fresh
        enough to send."""
        while True:
            while self._urgent or self._bulk:
                item = (self._urgent or self._bulk).popleft()
                if self._clock() - item.enqueued_at <= self._max_age_s:
                    self._taken += 1
                    return item
                self.expired += 1
            self._not_empty.clear()
            self._check_idle()
            await self._not_empty.wait()

    @property
    def taken(self) -> int:
        """Messages handed out by :meth:`get` and not yet done or re-queued [count]."""
        return self._taken

    def _check_idle(self) -> None:
        if not self._urgent and not self._bulk and self._taken == 0:
            self._idle.set()

    def _trim(self) -> None:
        while len(self) > self._max:
            if self._bulk:
                self._bulk.popleft()
            else:
                self._urgent.popleft()
                self.dropped_urgent += 1
            self.dropped += 1
