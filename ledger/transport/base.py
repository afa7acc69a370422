"""The transport port: what consensus, mempool gossip and block sync send and receive through.

Spec: docs/spec/transport.md. A transport is trusted for nothing but delivery: it may drop,
delay, duplicate or reorder; every payload is signed by its author and checked by the receiver.
``sender`` is where the transport says a message came from (an MQTT topic segment, say) and is a
routing hint only, never an identity.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

CHANNELS = (
    "tx",
    "consensus",
    "block",
    "sync_req",
    "sync_resp",
    "join",
    "header",
    "proof_req",
    "proof_resp",
)
"""Channel names. On MQTT: ``lem/1/<chain_id>/<channel>/<sender>`` for broadcasts and
``lem/1/<chain_id>/<channel>/to/<recipient>/<sender>`` for messages to one node. ``header``
(verified-header feed), ``proof_req`` and ``proof_resp`` serve light members
(docs/spec/light.md)."""

LIGHT_CHANNELS = ("header",)
"""The only broadcasts a light member subscribes to (plus its own inbox)."""


class TransportError(Exception):
    """Base of transport failures (not reachable, closed, payload too large)."""


class PayloadTooLargeError(TransportError):
    """A payload above the transport's size limit; it was not sent.

    Attributes:
        size_bytes: the payload's length [bytes].
        limit_bytes: the transport's limit [bytes].
    """

    def __init__(self, channel: str, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"payload on channel {channel!r} is {size_bytes} bytes, above the limit of "
            f"{limit_bytes} bytes; not sent"
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class TransportClosedError(TransportError):
    """``publish`` on a transport after ``close``."""


@dataclass(frozen=True, slots=True)
class Message:
    """One received payload.

    Attributes:
        channel: one of :data:`CHANNELS`.
        sender: the node id the transport attributes the message to (untrusted).
        payload: the exact received bytes (canonical MessagePack, signed inside).
    """

    channel: str
    sender: str
    payload: bytes


class Transport(Protocol):
    """A node's connection to its community."""

    node_id: str

    async def publish(self, channel: str, payload: bytes, *, to: str | None = None) -> None:
        """Send ``payload`` on ``channel`` to every node, or only to node ``to``.

        Never blocks on a lost link: while disconnected, messages are dropped (or queued in a
        bounded buffer) — consensus re-publishes what matters.
        """
        ...

    def messages(self) -> AsyncIterator[Message]:
        """Every message received for this node, its own broadcasts excluded."""
        ...

    async def close(self) -> None: ...
