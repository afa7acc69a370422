"""Counters of the MQTT transport, read by the daemon's Prometheus exporter.

Spec: docs/spec/transport.md §Stats. Plain ints (and one str) that only ever grow, except the
gauges ``connected``, ``outbox_len`` and ``broker``. Byte counts are MQTT PUBLISH packet sizes
(fixed header + topic + packet id + properties length + payload), computed with
:func:`ledger.transport.topics.publish_packet_bytes`; TCP/TLS framing, PUBACK, PINGREQ and
CONNECT are not included (bench/mqtt_bytes.py measures those through a counting proxy).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class MqttStats:
    """Live counters of one MQTT transport (mutated by the transport only)."""

    bytes_in: int = 0
    """PUBLISH bytes received, every copy counted, duplicates and drops included [bytes]."""
    bytes_out: int = 0
    """PUBLISH bytes acknowledged by the broker [bytes]."""
    messages_in: int = 0
    """Messages handed to the consumer [count]."""
    messages_out: int = 0
    """Messages acknowledged by the broker (PUBACK) [count]."""
    duplicates_dropped: int = 0
    """Received payloads already delivered within the dedup window [count]."""
    oversize_dropped: int = 0
    """Received payloads above max_payload_bytes [count]."""
    oversize_rejected: int = 0
    """publish() calls refused with PayloadTooLargeError [count]."""
    foreign_dropped: int = 0
    """Received messages on a topic that is not ours (bad level, other chain/recipient) [count]."""
    inbox_dropped: int = 0
    """Received messages dropped because the consumer's queue was full (drop newest) [count]."""
    outbox_dropped: int = 0
    """Queued messages dropped because the outgoing queue was full (oldest tx first) [count]."""
    outbox_dropped_urgent: int = 0
    """Of outbox_dropped, consensus/control messages (only when no tx gossip was left) [count]."""
    outbox_expired: int = 0
    """Queued messages dropped because they waited longer than outbox_max_age_s [count]."""
    requeued: int = 0
    """Messages sent but not acknowledged before the link failed, queued again [count]."""
    connects: int = 0
    """Successful connections (CONNACK + SUBACK) [count]."""
    reconnects: int = 0
    """Successful connections after the first one [count]."""
    connect_failures: int = 0
    """Connection attempts that failed (refused, timed out, TLS or auth error) [count]."""
    connected: int = 0
    """1 while a broker connection is up, else 0 [gauge]."""
    outbox_len: int = 0
    """Messages waiting in the outgoing queue [gauge]."""
    broker: str = ""
    """URL of the current (or last) broker."""

    def as_dict(self) -> dict[str, int | str]:
        """A copy of every counter, keyed by name."""
        return asdict(self)
