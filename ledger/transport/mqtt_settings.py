"""Settings of the MQTT transport: broker URLs, credentials, TLS, timeouts and queue bounds.

Spec: docs/spec/transport.md §Settings. Bad settings raise :class:`MqttSettingsError` naming the
field; nothing falls back silently to a default (a typo in a broker URL must stop start-up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ledger.transport.base import CHANNELS, TransportError
from ledger.transport.topics import check_segment

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class MqttSettingsError(TransportError):
    """A setting of the MQTT transport that cannot work (bad URL, key without cert, ...)."""


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """One broker endpoint.

    Attributes:
        host: host name or IP address.
        port: TCP port.
        tls: True for ``mqtts://`` (TLS), False for ``mqtt://``.
    """

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        """Parse ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (ports 1883 / 8883 by default).

        Raises:
            MqttSettingsError: another scheme, no host, a path/query, or a bad port.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise MqttSettingsError(f"broker URL {url!r}: {exc}") from exc
        if parts.scheme not in DEFAULT_PORTS:
            raise MqttSettingsError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise MqttSettingsError(f"broker URL {url!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise MqttSettingsError(
                f"broker URL {url!r}: only scheme, host and port are allowed "
                "(credentials go in username/password)"
            )
        return cls(parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Everything the MQTT transport needs to connect and how hard it may try.

    Attributes:
        chain_id: the community's chain id (a topic level).
        node_id: this node's id: its client id and the sender level of its topics.
        brokers: endpoints, tried in order, rotating on failure (at least one).
        username: MQTT user name (with password), or None.
        password: MQTT password, or None.
        ca_file: PEM CA bundle that signed the broker's certificate (None: system store).
        cert_file: PEM client certificate for mutual TLS, or None.
        key_file: PEM private key of ``cert_file``, or None.
        keepalive_s: MQTT keepalive; a dead link is noticed after about 1.5x this [s].
        connect_timeout_s: bound on TCP+TLS connect, CONNACK and SUBACK [s].
        io_timeout_s: bound on one PUBACK; a publish not acknowledged in time is taken as a
            dead link: the connection is dropped and the message re-queued [s].
        backoff_initial_s: reconnect delay after the first failure [s].
        backoff_max_s: ceiling of the reconnect delay [s].
        max_payload_bytes: larger payloads are refused on send and dropped on receipt [bytes].
        outbox_max_messages: capacity of the outgoing queue (drop-oldest) [messages].
        outbox_max_age_s: queued messages older than this are not sent [s].
        inbox_max_messages: capacity of the queue to the consumer (drop-newest) [messages].
        dedup_max_entries: payload digests remembered [count].
        dedup_window_s: how long a digest is remembered [s].
        max_inflight: QoS 1 publishes awaiting PUBACK at once [messages].
        status_will: publish a retained ``online`` flag on ``status/<node_id>`` and leave
            ``offline`` as the last will.
        tcp_nodelay: send small packets at once (TCP_NODELAY). Without it a PUBLISH that
            follows a PUBACK waits for the broker's delayed ACK (~40 ms per hop on Linux):
            measured 88 ms instead of ~1 ms per loopback round trip (bench/mqtt_bytes.py).
            Off saves a few TCP headers on the metered link at that latency cost.
        broadcast_channels: channels whose broadcasts this node subscribes to (default all).
            A member node that only follows blocks can leave out ``consensus``: votes and
            proposals are most of the traffic and a member drops them unread.
        mqtt_version: 5 (MQTT 5.0, default) or 4 (MQTT 3.1.1, for brokers without 5.0 such as
            amqtt). 3.1.1 costs bytes: the broker echoes own broadcasts (dropped on receipt)
            and cannot be told the maximum packet size.
    """

    chain_id: str
    node_id: str
    brokers: tuple[BrokerUrl, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 60
    connect_timeout_s: float = 15.0
    io_timeout_s: float = 20.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_payload_bytes: int = 256 * 1024
    outbox_max_messages: int = 1024
    outbox_max_age_s: float = 300.0
    inbox_max_messages: int = 4096
    dedup_max_entries: int = 16384
    dedup_window_s: float = 60.0
    max_inflight: int = 16
    status_will: bool = False
    tcp_nodelay: bool = True
    broadcast_channels: tuple[str, ...] = CHANNELS
    mqtt_version: int = 5
    client_id: str = ""
    """MQTT client identifier; "" = ``node_id``. A second connection of the same node (``lemctl
    ledger prove`` beside a running lemd) uses another one so the broker does not drop the
    first, while topics (and the ACL's ``%u``) still name the node."""

    def __post_init__(self) -> None:
        for name, value in (("chain_id", self.chain_id), ("node_id", self.node_id)):
            try:
                check_segment(name, value)
            except TransportError as exc:
                raise MqttSettingsError(str(exc)) from exc
        if not self.brokers:
            raise MqttSettingsError("brokers: at least one broker URL is needed")
        if (self.cert_file is None) != (self.key_file is None):
            raise MqttSettingsError("cert_file and key_file must be given together")
        if self.password is not None and self.username is None:
            raise MqttSettingsError("password given without username")
        if (self.ca_file or self.cert_file) and not any(b.tls for b in self.brokers):
            raise MqttSettingsError("ca_file/cert_file given but no broker URL is mqtts://")
        unknown = [c for c in self.broadcast_channels if c not in CHANNELS]
        if unknown or not self.broadcast_channels:
            raise MqttSettingsError(
                f"broadcast_channels {list(self.broadcast_channels)}: need a non-empty subset of "
                f"{', '.join(CHANNELS)}"
            )
        if self.mqtt_version not in (4, 5):
            raise MqttSettingsError(f"mqtt_version must be 5 or 4 (3.1.1), got {self.mqtt_version}")
        self._check_positive()

    def _check_positive(self) -> None:
        for name in (
            "keepalive_s",
            "connect_timeout_s",
            "io_timeout_s",
            "backoff_initial_s",
            "max_payload_bytes",
            "outbox_max_messages",
            "outbox_max_age_s",
            "inbox_max_messages",
            "dedup_max_entries",
            "dedup_window_s",
            "max_inflight",
        ):
            if getattr(self, name) <= 0:
                raise MqttSettingsError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise MqttSettingsError("backoff_max_s must be >= backoff_initial_s")

    @classmethod
    def from_urls(
        cls, chain_id: str, node_id: str, urls: list[str], **kwargs: object
    ) -> MqttSettings:
        """Settings from broker URL strings (see :meth:`BrokerUrl.parse`) and keyword fields."""
        brokers = tuple(BrokerUrl.parse(url) for url in urls)
        return cls(chain_id, node_id, brokers, **kwargs)  # type: ignore[arg-type]
