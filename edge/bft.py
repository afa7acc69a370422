"""The BFT ledger node (ledger/node.py) on MQTT, behind the daemon's :class:`LedgerNode` port.

Spec: docs/spec/daemon.md §Ledger node. The transport's connection loop and the node's
reader / consensus / publisher tasks run under one task of the daemon's TaskGroup; block and
vote times follow the daemon clock (simulated in demos), consensus timers stay real.

Re-gossip: after ``resign_timeout_s`` without a commit the submitter rebuilds its in-flight set
from this key's txs in the local mempool and asks for them to be sent again; a re-signed tx
(identical bytes: deterministic signatures) that the mempool answers ``duplicate_tx`` is sent
again too. Such a tx may never have left this node (the MQTT outbox drops messages older than
its age limit during a long outage), and receivers drop what they already have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from edge.clock import DaemonClock, ScaledLoopClock
from edge.config import Config, ConfigError
from edge.health import Health
from edge.ledger_node import HEALTH_NAME, TICK_S
from ledger.app import App
from ledger.consensus.engine import EngineConfig
from ledger.errors import Reason, TxRejected
from ledger.keys import SigningKey
from ledger.mempool import Mempool
from ledger.node import CommitInfo, Node
from ledger.transport.base import CHANNELS, Transport, TransportError
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings, MqttSettingsError
from ledger.tx import Tx, decode
from ledger.txgossip import TxBatcher

log = logging.getLogger("lemd.ledger")

PEER_WINDOW_S = 300.0
"""A peer counts as seen when heard from within this many real seconds."""


def mqtt_settings(config: Config, chain_id: str, *, validator: bool = True) -> MqttSettings:
    """Transport settings from the ``[ledger]`` section.

    A node that is not in the validator set does not subscribe to the ``consensus`` broadcasts
    (votes and proposals are most of the traffic; a member drops them unread); it follows the
    chain through block announcements and sync. It subscribes to them after a restart if
    governance makes it a validator.

    Raises:
        ConfigError: a broker URL, credential file or TLS file that cannot work (named).
    """
    lc = config.ledger
    password = None
    if lc.password_file is not None:
        try:
            password = lc.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"ledger.password_file = {str(lc.password_file)!r}: cannot read: {exc.strerror}"
            ) from exc
    try:
        return MqttSettings.from_urls(
            chain_id,
            config.node.name,
            list(lc.brokers),
            username=lc.username or None,
            password=password,
            ca_file=lc.ca_file,
            cert_file=lc.cert_file,
            key_file=lc.client_key_file,
            keepalive_s=lc.keepalive_s,
            mqtt_version=lc.mqtt_version,
            # A tx sent again after resign_timeout_s must not be taken for a duplicate by the
            # receivers' transport (the mempool and consensus deduplicate on their own).
            dedup_window_s=max(1.0, min(60.0, lc.resign_timeout_s / 2)),
            broadcast_channels=CHANNELS
            if validator
            else tuple(c for c in CHANNELS if c != "consensus"),
        )
    except MqttSettingsError as exc:
        raise ConfigError(f"[ledger] {exc}") from exc


class BftLedger:
    """:class:`edge.ledger_node.LedgerNode` over :class:`ledger.node.Node`.

    Args:
        node: the ledger node (not yet running).
        transport: its transport; an :class:`MqttTransport` is run here, others (tests) are
            assumed to be running already.
        health: beaten every ``TICK_S`` while the node's tasks are alive.
        clock: the daemon clock (peer ages).
    """

    mode = "bft"

    def __init__(
        self, node: Node, transport: Transport, health: Health, clock: DaemonClock
    ) -> None:
        self.node = node
        self.app: App = node.app
        self.mempool: Mempool = node.mempool
        self.transport = transport
        self.health = health
        self.clock = clock
        self._regossip: set[asyncio.Task[None]] = set()
        self.regossiped = 0
        self.on_commit: Callable[[float], None] | None = None
        """Called with each block's commit latency [s]: height start to durable commit at this
        node (the daemon observes ``lem_ledger_commit_seconds`` with it)."""
        self._woken: list[Callable[[], None]] = []
        node.add_commit_listener(self._committed)

    def add_commit_listener(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` right after every commit (the submitter settles and signs at once
        instead of waiting for its next poll)."""
        self._woken.append(wake)

    def _committed(self, info: CommitInfo) -> None:
        if self.on_commit is not None:
            self.on_commit(info.commit_seconds)
        for wake in self._woken:
            wake()

    @property
    def role(self) -> str:
        engine = self.node.engine
        if engine is not None:
            return "validator" if engine.is_validator else "member"
        mine = self.node.key.public_key if self.node.key is not None else b""
        return "validator" if any(pk == mine for pk, _ in self.app.validators()) else "member"

    def submit(self, raw: bytes) -> Tx:
        try:
            self.node.submit_tx(raw)
        except TxRejected as exc:
            if exc.reason is Reason.DUPLICATE_TX:
                self.resend([raw])
            raise
        return decode(raw)

    def resend(self, raws: list[bytes]) -> None:
        """Publish own pending txs again on channel ``tx``, in sequence order and batched
        (ledger/txgossip.py: one MQTT message for up to 256 txs); receivers drop duplicates."""
        batcher = TxBatcher()
        for raw in raws:
            batcher.add(raw)
        payloads = batcher.flush()

        async def publish() -> None:
            for payload in payloads:
                with contextlib.suppress(TransportError, TimeoutError):
                    async with asyncio.timeout(5.0):
                        await self.transport.publish("tx", payload)

        task = asyncio.get_running_loop().create_task(publish(), name="tx-resend")
        self._regossip.add(task)
        task.add_done_callback(self._regossip.discard)
        self.regossiped += len(raws)

    def peers(self) -> int:
        horizon_ms = self.clock.now_ms() - int(PEER_WINDOW_S * 1000 * self.clock.speed)
        return sum(1 for seen in self.node.peers.values() if seen >= horizon_ms)

    def stats(self) -> dict[str, Any]:
        engine = self.node.engine
        return {
            **{k: int(v) for k, v in sorted(self.node.stats.items())},
            "round": engine.core.round if engine is not None else -1,
            "consensus": dict(sorted(engine.stats.items())) if engine is not None else {},
            "resent_txs": self.regossiped,
        }

    def transport_stats(self) -> dict[str, Any]:
        stats = getattr(self.transport, "stats", None)
        if stats is not None and hasattr(stats, "as_dict"):
            out: dict[str, Any] = stats.as_dict()
            return out
        return {}

    async def wait_connected(self) -> None:
        """Return once a broker connection was tried, with success or not (READY=1 waits for
        this; the daemon bounds the wait)."""
        if not isinstance(self.transport, MqttTransport):
            return  # an in-memory transport has nothing to try
        transport = self.transport
        # The transport announces success (wait_connected) but not a failed attempt, which
        # only shows in its counters: poll them.
        while transport.stats.connects + transport.stats.connect_failures == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            if isinstance(self.transport, MqttTransport):
                tg.create_task(self.transport.run(), name="mqtt")
            node_task = tg.create_task(self.node.run(), name="ledger-consensus")
            while not node_task.done():
                self.health.beat(HEALTH_NAME)
                await asyncio.sleep(TICK_S)

    async def close(self) -> None:
        if isinstance(self.transport, MqttTransport):
            with contextlib.suppress(TransportError):
                await self.transport.close(drain_timeout_s=1.0)  # last votes and txs out
        await self.node.close()


async def open_bft(
    config: Config,
    key: SigningKey,
    clock: DaemonClock,
    health: Health,
    app: App,
    *,
    transport: Transport | None = None,
    engine: EngineConfig | None = None,
) -> tuple[BftLedger, Callable[[], dict[str, Any]], list[Callable[[], Any]]]:
    """Build the BFT node on ``transport`` (default: MQTT from the config).

    Raises:
        ConfigError: ``ledger.chain_id`` differs from the genesis, or a transport setting.
    """
    if config.ledger.chain_id and config.ledger.chain_id != app.chain_id:
        raise ConfigError(
            f"ledger.chain_id = {config.ledger.chain_id!r}: the genesis is for chain "
            f"{app.chain_id!r}"
        )
    if transport is None:
        validator = any(pk == key.public_key for pk, _ in app.validators())
        settings = mqtt_settings(config, app.chain_id, validator=validator)
        transport = MqttTransport(settings)
    node = Node(
        app,
        transport,
        config.node.data_dir,
        key=key,
        config=engine
        or EngineConfig(app.chain_id, heartbeat_ms=int(config.ledger.block_heartbeat_s * 1000)),
        clock=ScaledLoopClock(clock),
        prune_bodies=not config.ledger.keep_block_bodies,
    )
    ledger = BftLedger(node, transport, health, clock)
    log.info("BFT node", extra={"height": app.height, "role": ledger.role})
    return ledger, ledger.transport_stats, [app.store.close]
