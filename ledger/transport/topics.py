"""MQTT topic names of the ledger's channels, and the MQTT wire size of a PUBLISH.

Spec: docs/spec/transport.md §Topics. Broadcasts go to ``lem/1/<chain_id>/<channel>/<sender>``,
messages for one node to ``lem/1/<chain_id>/<channel>/to/<recipient>/<sender>``. The last level
is always the publisher, so one broker ACL pattern (``%u`` in the last level) pins every topic a
node may write to its own authenticated name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.transport.base import CHANNELS, TransportError

PREFIX = "lem/1"
DIRECT_MARK = "to"
STATUS_CHANNEL = "status"
"""Not a ledger channel: the optional retained online/offline flag of a node (last will)."""

# A name that is one topic level: no wildcards, no separators, no '$' lead (broker-internal
# topics), printable ASCII so an ACL file can spell it. 64 characters bound the topic bytes
# that every message pays on the metered link.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TopicError(TransportError):
    """A chain id, node id or channel that cannot be one MQTT topic level, or a foreign topic."""


def check_segment(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid single topic level, else raise :class:`TopicError`.

    Args:
        kind: what the value is ("node_id", "chain_id", ...), named in the error.
        value: the candidate level.
    """
    if not _SEGMENT.fullmatch(value):
        raise TopicError(
            f"{kind} {value!r} is not a valid topic level: 1-64 characters of "
            "[A-Za-z0-9._-], starting with a letter or digit"
        )
    return value


def check_channel(channel: str) -> str:
    """Return ``channel`` if it is one of :data:`CHANNELS`, else raise :class:`TopicError`."""
    if channel not in CHANNELS:
        raise TopicError(f"channel {channel!r} is not one of {', '.join(CHANNELS)}")
    return channel


def broadcast_topic(chain_id: str, channel: str, sender: str) -> str:
    """Topic of a broadcast by ``sender`` on ``channel``."""
    return f"{PREFIX}/{chain_id}/{channel}/{sender}"


def direct_topic(chain_id: str, channel: str, recipient: str, sender: str) -> str:
    """Topic of a message from ``sender`` to ``recipient`` only."""
    return f"{PREFIX}/{chain_id}/{channel}/{DIRECT_MARK}/{recipient}/{sender}"


def status_topic(chain_id: str, node_id: str) -> str:
    """Topic of a node's retained online/offline flag (last will)."""
    return f"{PREFIX}/{chain_id}/{STATUS_CHANNEL}/{node_id}"


def subscriptions(chain_id: str, node_id: str, channels: tuple[str, ...] = CHANNELS) -> list[str]:
    """Topic filters a node subscribes to: the broadcasts of ``channels`` and its own inbox.

    One filter per channel (not ``+``) so that status flags, unknown channels and channels the
    node does not need (a member has no use for votes) never cost bytes on its link. Direct
    messages arrive on every channel.
    """
    filters = [f"{PREFIX}/{chain_id}/{channel}/+" for channel in channels]
    filters.append(f"{PREFIX}/{chain_id}/+/{DIRECT_MARK}/{node_id}/+")
    return filters


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A received topic, taken apart.

    Attributes:
        channel: the ledger channel.
        sender: the last level (the publisher, as far as the broker's ACL vouches for it).
        recipient: the addressed node for a direct message, ``None`` for a broadcast.
    """

    channel: str
    sender: str
    recipient: str | None


def parse_topic(chain_id: str, topic: str) -> ParsedTopic:
    """Split a received topic into channel, sender and recipient.

    Raises:
        TopicError: the topic is not a ledger topic of ``chain_id`` (other chain, unknown
            channel, wrong number of levels, invalid node id).
    """
    levels = topic.split("/")
    if len(levels) not in (5, 7) or "/".join(levels[:3]) != f"{PREFIX}/{chain_id}":
        raise TopicError(f"topic {topic!r} is not a topic of chain {chain_id!r}")
    channel = check_channel(levels[3])
    if len(levels) == 5:
        return ParsedTopic(channel, check_segment("sender", levels[4]), None)
    if levels[4] != DIRECT_MARK:
        raise TopicError(f"topic {topic!r}: level 5 must be {DIRECT_MARK!r}")
    recipient = check_segment("recipient", levels[5])
    return ParsedTopic(channel, check_segment("sender", levels[6]), recipient)


def _varint_len(value: int) -> int:
    """Bytes of an MQTT variable byte integer (MQTT 5.0 §1.5.5)."""
    size = 1
    while value >= 128:
        value //= 128
        size += 1
    return size


def publish_packet_bytes(topic: str, payload_bytes: int, *, qos: int = 1, v5: bool = True) -> int:
    """Size of one MQTT PUBLISH packet on the wire, TCP/TLS framing excluded [bytes].

    MQTT 5.0 §3.3: fixed header (1 byte + remaining-length varint), topic (2 + UTF-8 length),
    packet id (2, QoS > 0), property length (1 for no properties, v5 only), payload.

    Args:
        topic: the topic name.
        payload_bytes: payload length [bytes].
        qos: 0, 1 or 2.
        v5: MQTT 5.0 (True) or 3.1.1 (False).
    """
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + (1 if v5 else 0) + payload_bytes
    return 1 + _varint_len(remaining) + remaining


PUBACK_BYTES = 4
"""A PUBACK with success and no properties: 2-byte fixed header + packet id (MQTT 5.0 §3.4)."""
