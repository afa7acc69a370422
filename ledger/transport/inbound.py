"""The receive path of the MQTT transport: filter, deduplicate, queue for the consumer.

Spec: docs/spec/transport.md §Receiving. The MQTT reader calls :meth:`Inbound.accept` for every
PUBLISH; it never blocks (a slow consumer must not stall the MQTT connection, whose keepalive
would then fail). Policy when the consumer's queue is full: drop the NEWEST message and count it;
its digest is not remembered, so a re-publication of it is delivered later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ledger.transport.base import Message, TransportError
from ledger.transport.dedup import DedupCache
from ledger.transport.stats import MqttStats
from ledger.transport.topics import parse_topic, publish_packet_bytes


class Inbound:
    """Bounded queue of received messages with the transport's receive rules.

    Args:
        chain_id: only topics of this chain are accepted.
        node_id: own broadcasts are excluded; direct messages must be addressed here.
        max_messages: capacity of the consumer queue [messages].
        max_payload_bytes: larger payloads are dropped [bytes].
        dedup: the duplicate filter.
        stats: counters to update.
        v5: MQTT 5.0 packets (for the byte count), else 3.1.1.
    """

    def __init__(
        self,
        chain_id: str,
        node_id: str,
        *,
        max_messages: int,
        max_payload_bytes: int,
        dedup: DedupCache,
        stats: MqttStats,
        v5: bool = True,
    ) -> None:
        self._v5 = v5
        self._chain_id = chain_id
        self._node_id = node_id
        self._max_payload_bytes = max_payload_bytes
        self._dedup = dedup
        self._stats = stats
        # None is the end-of-stream mark put by close().
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=max_messages)

    def accept(self, topic: str, payload: bytes, *, qos: int = 1) -> bool:
        """Take one received PUBLISH; return True if it was queued for the consumer."""
        self._stats.bytes_in += publish_packet_bytes(topic, len(payload), qos=qos, v5=self._v5)
        try:
            parsed = parse_topic(self._chain_id, topic)
        except TransportError:
            self._stats.foreign_dropped += 1
            return False
        if parsed.recipient is None and parsed.sender == self._node_id:
            return False  # our own broadcast echoed (MQTT 3.1.1 brokers ignore no-local)
        if parsed.recipient is not None and parsed.recipient != self._node_id:
            self._stats.foreign_dropped += 1
            return False
        return self.deliver(Message(parsed.channel, parsed.sender, payload))

    def deliver(self, message: Message) -> bool:
        """Queue ``message`` unless oversize, duplicate, or the queue is full."""
        if len(message.payload) > self._max_payload_bytes:
            self._stats.oversize_dropped += 1
            return False
        if self._queue.full():
            self._stats.inbox_dropped += 1
            return False
        if self._dedup.check(message.payload):
            self._stats.duplicates_dropped += 1
            return False
        self._queue.put_nowait(message)
        self._stats.messages_in += 1
        return True

    def close(self) -> None:
        """End every iterator of :meth:`messages` after the messages already queued.

        If the queue is full its newest message makes room for the end mark.
        """
        while self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def messages(self) -> AsyncIterator[Message]:
        """Queued messages in arrival order, until :meth:`close`."""
        while True:
            message = await self._queue.get()
            if message is None:
                self._queue.put_nowait(None)  # let any other iterator end too
                return
            yield message

    def __len__(self) -> int:
        return self._queue.qsize()
