"""An in-memory transport with seeded fault injection, for deterministic consensus tests.

Spec: docs/spec/consensus.md §In-memory transport. A :class:`MemoryNetwork` connects nodes in one
process. Every delivery is scheduled on a clock (a :class:`~ledger.consensus.clock.VirtualClock`
for simulations, the event loop's for asyncio tests) after a random delay; drops, duplicates,
reorders (a long extra delay for some messages) and partitions are drawn from one
``random.Random(seed)``, so a run is reproducible from its seed.

Nodes attach either with a synchronous handler (:meth:`MemoryNetwork.attach`) or through the
asyncio :class:`MemoryTransport`, which implements the :class:`~ledger.transport.base.Transport`
port.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from ledger.consensus.clock import Clock
from ledger.transport.base import CHANNELS, Message, TransportError

Handler = Callable[[Message], None]
Tap = Callable[[str, str, bytes, str | None], None]
"""``tap(sender, channel, payload, to)``: sees every published message (for invariant checks)."""


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """What the network does to each delivery (probabilities in [0, 1], delays [ms]).

    Attributes:
        drop_rate: chance a delivery is lost.
        duplicate_rate: chance a delivery is made twice (independent delays).
        reorder_rate: chance a delivery gets ``reorder_delay_ms`` extra, overtaken by later ones.
        min_delay_ms: smallest one-way delay [ms].
        max_delay_ms: largest one-way delay without reordering [ms].
        reorder_delay_ms: the extra delay of a reordered delivery [ms].
    """

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    min_delay_ms: int = 1
    max_delay_ms: int = 10
    reorder_delay_ms: int = 300

    def __post_init__(self) -> None:
        for name in ("drop_rate", "duplicate_rate", "reorder_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"LinkFaults.{name} must be within [0, 1]")
        if not 0 <= self.min_delay_ms <= self.max_delay_ms:
            raise ValueError("LinkFaults needs 0 <= min_delay_ms <= max_delay_ms")


class MemoryNetwork:
    """A broker-like hub delivering published payloads to attached nodes.

    Args:
        clock: schedules deliveries.
        seed: seed of every random fault decision.
        faults: initial link faults (change with :meth:`set_faults`).
    """

    def __init__(self, clock: Clock, *, seed: int = 0, faults: LinkFaults | None = None) -> None:
        self._clock = clock
        self._rng = random.Random(seed)
        self.faults = faults or LinkFaults()
        self._handlers: dict[str, Handler] = {}
        self._groups: list[frozenset[str]] | None = None
        self._taps: list[Tap] = []
        self.stats: Counter[str] = Counter()

    def attach(self, node_id: str, handler: Handler) -> None:
        """Deliver messages for ``node_id`` to ``handler`` from now on."""
        self._handlers[node_id] = handler

    def detach(self, node_id: str) -> None:
        """Stop delivering to ``node_id`` (messages in flight to it are lost)."""
        self._handlers.pop(node_id, None)

    def transport(self, node_id: str, *, queue_size: int = 4096) -> MemoryTransport:
        """An asyncio :class:`MemoryTransport` for ``node_id`` attached to this network."""
        return MemoryTransport(self, node_id, queue_size)

    def add_tap(self, tap: Tap) -> None:
        """Call ``tap`` for every published message (before faults)."""
        self._taps.append(tap)

    def set_faults(self, faults: LinkFaults) -> None:
        """Replace the link faults."""
        self.faults = faults

    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes within one group reach each other; nodes in no group reach nobody."""
        self._groups = [frozenset(g) for g in groups]

    def heal(self) -> None:
        """Remove the partition."""
        self._groups = None

    def connected(self, a: str, b: str) -> bool:
        """Whether a message from ``a`` can reach ``b`` under the current partition."""
        if self._groups is None:
            return True
        return any(a in g and b in g for g in self._groups)

    def publish(self, sender: str, channel: str, payload: bytes, to: str | None = None) -> None:
        """Schedule delivery of ``payload`` to every other attached node (or only ``to``)."""
        if channel not in CHANNELS:
            raise TransportError(f"unknown channel {channel!r}")
        for tap in self._taps:
            tap(sender, channel, payload, to)
        self.stats["published"] += 1
        self.stats["published_bytes"] += len(payload)
        targets = [to] if to is not None else sorted(self._handlers)
        for target in targets:
            if target != sender:
                self._route(Message(channel, sender, payload), target)

    def inject(self, target: str, message: Message) -> None:
        """Deliver ``message`` to ``target`` as if sent (replays of old messages)."""
        self._route(message, target)

    def _route(self, message: Message, target: str) -> None:
        f = self.faults
        if not self.connected(message.sender, target):
            self.stats["partitioned"] += 1
            return
        if self._rng.random() < f.drop_rate:
            self.stats["dropped"] += 1
            return
        copies = 2 if self._rng.random() < f.duplicate_rate else 1
        self.stats["duplicated"] += copies - 1
        for _ in range(copies):
            delay = self._rng.randint(f.min_delay_ms, f.max_delay_ms)
            if self._rng.random() < f.reorder_rate:
                delay += f.reorder_delay_ms
                self.stats["reordered"] += 1
            self._clock.call_later(delay, functools.partial(self._deliver, message, target))

    def _deliver(self, message: Message, target: str) -> None:
        handler = self._handlers.get(target)
        if handler is None or not self.connected(message.sender, target):
            self.stats["lost_in_flight"] += 1
            return
        self.stats["delivered"] += 1
        self.stats["delivered_bytes"] += len(message.payload)
        handler(message)


class MemoryTransport:
    """The :class:`~ledger.transport.base.Transport` port over a :class:`MemoryNetwork`.

    Received messages wait in a bounded queue; when it is full the newest is dropped and
    counted in ``network.stats["queue_full"]`` (consensus re-publishes what matters).
    """

    def __init__(self, network: MemoryNetwork, node_id: str, queue_size: int) -> None:
        self.node_id = node_id
        self._network = network
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=queue_size)
        self._closed = False
        network.attach(node_id, self._enqueue)

    def _enqueue(self, message: Message) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self._network.stats["queue_full"] += 1

    async def publish(self, channel: str, payload: bytes, *, to: str | None = None) -> None:
        """Send ``payload`` on ``channel`` (to all, or to node ``to``)."""
        if self._closed:
            raise TransportError(f"transport of {self.node_id} is closed")
        self._network.publish(self.node_id, channel, payload, to)

    async def messages(self) -> AsyncIterator[Message]:
        """Received messages until :meth:`close`."""
        while True:
            message = await self._queue.get()
            if message is None:
                return
            yield message

    async def close(self) -> None:
        """Detach from the network and end :meth:`messages`."""
        if not self._closed:
            self._closed = True
            self._network.detach(self.node_id)
            while True:
                try:
                    self._queue.put_nowait(None)
                    break
                except asyncio.QueueFull:
                    self._queue.get_nowait()
