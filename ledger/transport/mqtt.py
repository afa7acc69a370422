"""The MQTT transport: the ledger's messages through a broker (mosquitto), with aiomqtt 2.x.

Spec: docs/spec/transport.md. The broker is trusted for delivery only (every payload is signed
inside). One aiomqtt ``Client`` per connection attempt (a client is not reentrant after a lost
link); a supervisor loop rotates through the configured brokers with exponential backoff and
jitter. MQTT 5.0 is used for two byte savings on the metered link: the broadcast subscriptions
set No Local (the broker does not echo our own broadcasts back) and CONNECT announces a Maximum
Packet Size (the broker never sends us a payload we would drop).

Queues (both bounded, both counted in :class:`MqttStats`):
  * outgoing: :class:`Outbox`, drop-oldest, expiry by age; ``publish`` never waits for the link;
  * incoming: :class:`Inbound`, drop-newest; the MQTT reader never waits for the consumer.

Every network wait sits inside ``asyncio.timeout``: connect+CONNACK+SUBACK within
``connect_timeout_s``, each PUBACK within ``io_timeout_s`` (a missing PUBACK is taken as a dead
link), DISCONNECT within ``io_timeout_s``. A silent link is noticed by the MQTT keepalive.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import socket
import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ledger.transport.backoff import Backoff
from ledger.transport.base import (
    Message,
    PayloadTooLargeError,
    Transport,
    TransportClosedError,
    TransportError,
)
from ledger.transport.dedup import DedupCache
from ledger.transport.inbound import Inbound
from ledger.transport.mqtt_settings import BrokerUrl, MqttSettings, MqttSettingsError
from ledger.transport.outbox import Outbox, Outgoing
from ledger.transport.stats import MqttStats
from ledger.transport.topics import (
    broadcast_topic,
    check_channel,
    check_segment,
    direct_topic,
    publish_packet_bytes,
    status_topic,
    subscriptions,
)

log = logging.getLogger(__name__)

# MQTT header room on top of the payload limit when we announce Maximum Packet Size: fixed
# header (5) + topic (2 + at most 6 levels of <= 64 bytes) + packet id + properties.
_HEADER_ROOM_BYTES = 512
BULK_CHANNELS = frozenset({"tx"})
"""Channels whose messages go in the outgoing queue's bulk lane: sent after, and dropped before,
consensus and control messages (txs are re-gossiped and re-signed; a starved round is not)."""


# paho leaves Nagle on; see MqttSettings.tcp_nodelay for what that costs.
_NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class LinkLostError(TransportError):
    """The broker connection failed (reported to the supervisor loop, which reconnects)."""


# What ends one connection without ending the transport: network, TLS, MQTT protocol and
# timeout failures. Anything else is a bug and propagates out of run().
_LINK_FAILURES = (aiomqtt.MqttError, LinkLostError, OSError, TimeoutError)


class MqttTransport:
    """A node's connection to its community over MQTT (implements ``Transport``).

    Use as ``async with MqttTransport(settings) as transport:`` or call :meth:`start` /
    :meth:`close`; a daemon that owns a TaskGroup may instead run :meth:`run` as a task.

    Args:
        settings: brokers, credentials, timeouts and bounds (see :class:`MqttSettings`).
        backoff: reconnect delay policy (default from the settings; injected by tests).
    """

    def __init__(self, settings: MqttSettings, *, backoff: Backoff | None = None) -> None:
        self.node_id = settings.node_id
        self.settings = settings
        self._stats = MqttStats()
        self._outbox = Outbox(settings.outbox_max_messages, settings.outbox_max_age_s)
        self._inbound = Inbound(
            settings.chain_id,
            settings.node_id,
            max_messages=settings.inbox_max_messages,
            max_payload_bytes=settings.max_payload_bytes,
            dedup=DedupCache(settings.dedup_max_entries, settings.dedup_window_s),
            stats=self._stats,
            v5=settings.mqtt_version == 5,
        )
        self._backoff = backoff or Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._up = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None  # run() when started by start()
        self._runner: asyncio.Task[None] | None = None  # the task inside run(), whoever owns it

    # -- the Transport port -------------------------------------------------------------------

    async def publish(self, channel: str, payload: bytes, *, to: str | None = None) -> None:
        """Queue ``payload`` for every node on ``channel`` (or only for node ``to``).

        Returns at once: the message waits in the bounded outgoing queue until a broker
        acknowledges it. Tx gossip waits behind consensus and control messages and is dropped
        first when the queue is full (docs/spec/consensus.md §11b). A message to
        this node itself is delivered locally without the broker.

        Raises:
            TransportClosedError: after :meth:`close`.
            PayloadTooLargeError: ``payload`` is above ``max_payload_bytes`` (nothing queued).
            TopicError: unknown channel or invalid recipient id.
        """
        if self._closed:
            raise TransportClosedError(f"transport of {self.node_id} is closed")
        check_channel(channel)
        if len(payload) > self.settings.max_payload_bytes:
            self._stats.oversize_rejected += 1
            raise PayloadTooLargeError(channel, len(payload), self.settings.max_payload_bytes)
        chain = self.settings.chain_id
        bulk = channel in BULK_CHANNELS
        if to is None:
            self._outbox.put(broadcast_topic(chain, channel, self.node_id), payload, bulk=bulk)
        elif to == self.node_id:
            self._inbound.deliver(Message(channel, self.node_id, payload))
        else:
            self._outbox.put(
                direct_topic(chain, channel, check_segment("to", to), self.node_id),
                payload,
                bulk=bulk,
            )

    def messages(self) -> AsyncIterator[Message]:
        """Every message received for this node, its own broadcasts excluded, until close."""
        return self._inbound.messages()

    async def close(self, *, drain_timeout_s: float = 0.0) -> None:
        """Stop: optionally wait for the outgoing queue to drain, then disconnect cleanly.

        Ends :meth:`run` (normally, also when a daemon's TaskGroup runs it) and every
        iterator of :meth:`messages`.

        Args:
            drain_timeout_s: how long to wait for queued messages to be acknowledged [s].
        """
        if self._closed:
            return
        if drain_timeout_s > 0 and self._up.is_set():
            with contextlib.suppress(TimeoutError):
                await self.flush(drain_timeout_s)
        self._closed = True
        self._inbound.close()
        runner = self._runner
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            await asyncio.wait([runner])  # not `await`: a cancel of close() itself must pass
        own, self._task = self._task, None
        if own is not None and own.done():
            error = None if own.cancelled() else own.exception()
            if error is not None:
                raise error  # a bug in the connection loop: surface it

    # -- lifecycle and observation ------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection loop as a background task (returns at once)."""
        if self._task is None and not self._closed:
            self._check_files()
            self._task = asyncio.create_task(self.run(), name=f"mqtt-{self.node_id}")
            self._task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        # run() only ends by cancellation; anything else is a bug that stopped all traffic.
        if not task.cancelled() and task.exception() is not None:
            log.critical(
                "mqtt %s: connection loop crashed; no more traffic",
                self.node_id,
                exc_info=task.exception(),
            )

    async def __aenter__(self) -> MqttTransport:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def stats(self) -> MqttStats:
        """The live counters (see :class:`MqttStats`)."""
        self._stats.outbox_dropped = self._outbox.dropped
        self._stats.outbox_dropped_urgent = self._outbox.dropped_urgent
        self._stats.outbox_expired = self._outbox.expired
        self._stats.outbox_len = len(self._outbox)
        return self._stats

    @property
    def connected(self) -> bool:
        """True while a broker connection is up and subscribed."""
        return self._up.is_set()

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until a broker connection is up [s]; raises TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            await self._up.wait()

    async def flush(self, timeout_s: float) -> None:
        """Wait until every queued message is acknowledged [s]; TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            await self._outbox.join()

    # -- the connection loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect with failover until :meth:`close` (or cancelled).

        Returns normally after :meth:`close`; a bug propagates.
        """
        if self._runner is not None:
            raise RuntimeError(f"mqtt {self.node_id}: run() is already running")
        if self._closed:
            return
        self._runner = asyncio.current_task()
        try:
            await self._reconnect_loop()
        except asyncio.CancelledError:
            # close() cancelled us: a normal end, unless someone else cancelled too.
            if self._closed and self._runner is not None and self._runner.uncancel() == 0:
                return
            raise
        finally:
            self._runner = None

    async def _reconnect_loop(self) -> None:
        brokers = self.settings.brokers
        index = 0
        while True:
            url = brokers[index]
            self._stats.broker = str(url)
            try:
                await self._session(url)
            except* _LINK_FAILURES as group:
                log.warning("mqtt %s: link to %s ended: %s", self.node_id, url, _describe(group))
            if self._closed:
                return
            index = (index + 1) % len(brokers)
            await asyncio.sleep(self._backoff.next_delay_s())

    async def _session(self, url: BrokerUrl) -> None:
        async with self._connection(url) as client:
            self._backoff.reset()
            self._stats.connects += 1
            self._stats.reconnects = self._stats.connects - 1
            self._stats.connected = 1
            self._up.set()
            log.info("mqtt %s: connected to %s", self.node_id, url)
            # Two plain tasks, not a TaskGroup: Python 3.11's TaskGroup leaves a stray
            # cancellation request on this task when a child fails during __aexit__, and it
            # lets a child's error replace our own cancellation (close() must always win).
            reader = asyncio.create_task(self._read(client), name=f"mqtt-read-{self.node_id}")
            writer = asyncio.create_task(self._write(client), name=f"mqtt-write-{self.node_id}")
            try:
                done, _ = await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._up.clear()
                self._stats.connected = 0
                for task in (reader, writer):
                    task.cancel()
                await asyncio.gather(reader, writer, return_exceptions=True)
            for task in done:
                task.result()  # raises the failure that ended the link

    @contextlib.asynccontextmanager
    async def _connection(self, url: BrokerUrl) -> AsyncIterator[aiomqtt.Client]:
        """A connected, subscribed client; disconnected cleanly (bounded) on exit."""
        client = self._new_client(url)
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await _enter(client)
        except BaseException as exc:
            if isinstance(exc, _LINK_FAILURES):
                self._stats.connect_failures += 1
            _abandon(client)
            raise
        try:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    await self._subscribe(client)
            except _LINK_FAILURES:
                self._stats.connect_failures += 1
                raise
            yield client
        finally:
            with contextlib.suppress(*_LINK_FAILURES):
                async with asyncio.timeout(self.settings.io_timeout_s):
                    await client.__aexit__(None, None, None)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        filters = subscriptions(
            self.settings.chain_id, self.node_id, self.settings.broadcast_channels
        )
        if self.settings.mqtt_version == 5:
            # No Local: the broker does not send our own broadcasts back (saves metered bytes).
            options = SubscribeOptions(qos=1, noLocal=True)
            granted = await client.subscribe([(f, options) for f in filters], timeout=math.inf)
        else:
            granted = await client.subscribe([(f, 1) for f in filters], timeout=math.inf)
        refused = [f for f, code in zip(filters, granted, strict=True) if _code(code) >= 0x80]
        if refused:
            raise LinkLostError(f"broker refused subscriptions {refused} (ACL?)")
        if self.settings.status_will:
            topic = status_topic(self.settings.chain_id, self.node_id)
            await client.publish(topic, b"online", qos=1, retain=True, timeout=math.inf)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):  # paho always hands over bytes; be exact
                payload = str(payload).encode()
            self._inbound.accept(message.topic.value, payload, qos=message.qos)
        raise LinkLostError("message stream ended")

    async def _write(self, client: aiomqtt.Client) -> None:
        slots = asyncio.Semaphore(self.settings.max_inflight)
        async with asyncio.TaskGroup() as sends:  # a failed send ends the writer, and the link
            while True:
                await slots.acquire()
                try:
                    item = await self._outbox.get()
                except BaseException:
                    slots.release()
                    raise
                send = sends.create_task(self._send(client, item))
                # Settled in a done-callback, not in _send: a task cancelled before its first
                # step never runs its own try/finally, and its message must not be lost.
                send.add_done_callback(functools.partial(self._settle, item, slots))

    async def _send(self, client: aiomqtt.Client, item: Outgoing) -> None:
        """Publish one message with QoS 1 and wait for its PUBACK (bounded)."""
        try:
            async with asyncio.timeout(self.settings.io_timeout_s):
                await client.publish(item.topic, item.payload, qos=1, timeout=math.inf)
        except TimeoutError as exc:
            raise LinkLostError(f"no PUBACK within {self.settings.io_timeout_s} s") from exc

    def _settle(self, item: Outgoing, slots: asyncio.Semaphore, send: asyncio.Task[None]) -> None:
        """Count an acknowledged message, or put an unacknowledged one back in publish order."""
        slots.release()
        if send.cancelled() or send.exception() is not None:
            self._outbox.requeue(item)
            self._stats.requeued += 1
            return
        self._outbox.done(item)
        self._stats.messages_out += 1
        self._stats.bytes_out += publish_packet_bytes(
            item.topic, len(item.payload), v5=self.settings.mqtt_version == 5
        )

    # -- client construction ------------------------------------------------------------------

    def _new_client(self, url: BrokerUrl) -> aiomqtt.Client:
        s = self.settings
        v5 = s.mqtt_version == 5
        connect_props = None
        if v5:
            connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_props.SessionExpiryInterval = 0  # clean session: consensus re-publishes
            connect_props.MaximumPacketSize = s.max_payload_bytes + _HEADER_ROOM_BYTES
        will = None
        if s.status_will:
            will = aiomqtt.Will(status_topic(s.chain_id, s.node_id), b"offline", qos=1, retain=True)
        client = aiomqtt.Client(
            url.host,
            url.port,
            username=s.username,
            password=s.password,
            identifier=s.client_id or s.node_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else True,
            will=will,
            keepalive=s.keepalive_s,
            timeout=s.connect_timeout_s,  # CONNACK wait; every other wait is ours
            max_queued_incoming_messages=s.inbox_max_messages,
            max_inflight_messages=s.max_inflight,
            properties=connect_props,
            tls_params=self._tls_params() if url.tls else None,
            socket_options=_NODELAY if s.tcp_nodelay else (),
        )
        # paho's own socket connect/TLS handshake bound; the outer asyncio.timeout covers CONNACK.
        client._client.connect_timeout = max(1.0, s.connect_timeout_s / 2)
        client.pending_calls_threshold = s.max_inflight + 16  # our own bound; no log spam
        return client

    def _tls_params(self) -> aiomqtt.TLSParameters:
        s = self.settings
        return aiomqtt.TLSParameters(
            ca_certs=str(s.ca_file) if s.ca_file else None,
            certfile=str(s.cert_file) if s.cert_file else None,
            keyfile=str(s.key_file) if s.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,  # and host name checked: paho's TLS_CLIENT default
        )

    def _check_files(self) -> None:
        """A missing CA/cert/key file stops start-up instead of failing every reconnect."""
        s = self.settings
        for name, path in (
            ("ca_file", s.ca_file),
            ("cert_file", s.cert_file),
            ("key_file", s.key_file),
        ):
            if path is not None and not path.is_file():
                raise MqttSettingsError(f"{name} {str(path)!r} does not exist or is not a file")


def _describe(group: BaseExceptionGroup[BaseException]) -> str:
    """The leaf exceptions of a (nested) group, one line."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return "; ".join(f"{type(e).__name__}: {e}" for e in leaves) or "?"


def _code(code: object) -> int:
    """A SUBACK entry as an int (paho gives ReasonCode objects for MQTT 5, ints before)."""
    value = getattr(code, "value", code)
    return int(value) if isinstance(value, int) else 0x80


async def _enter(client: aiomqtt.Client) -> None:
    """Connect (CONNECT..CONNACK); fail at once if the socket closes before the CONNACK.

    aiomqtt ignores a disconnect before CONNACK and waits for its timeout; a broker that drops
    the connection instead of answering (client certificate refused under TLS 1.3, connection
    limit) would cost a full ``connect_timeout_s`` per attempt without this.
    """
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    paho = client._client
    on_close_of_aiomqtt = paho.on_socket_close

    def on_socket_close(c: Any, userdata: Any, sock: Any) -> None:
        if on_close_of_aiomqtt is not None:
            on_close_of_aiomqtt(c, userdata, sock)
        loop.call_soon_threadsafe(closed.set)  # paho may call this from its connect thread

    paho.on_socket_close = on_socket_close
    enter = asyncio.ensure_future(client.__aenter__())
    socket_closed = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait((enter, socket_closed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        socket_closed.cancel()
        if not enter.done():
            enter.cancel()
            await asyncio.wait([enter])
    if enter.cancelled():
        raise LinkLostError("the broker closed the connection before its CONNACK")
    enter.result()


def _abandon(client: aiomqtt.Client) -> None:
    """Ask paho to drop a half-open connection after a failed or timed-out connect.

    If the socket is open but silent, paho's keepalive check closes it anyway after
    ``keepalive_s``; this only makes that immediate when the socket is writable.
    """
    client._client.disconnect()


if TYPE_CHECKING:

    def _satisfies_the_port(transport: MqttTransport) -> Transport:
        return transport  # mypy proves MqttTransport implements the Transport protocol
