"""lemd as a light member (``ledger.member_mode = "light"``): meter -> outbox -> proven commits.

Spec: docs/spec/light.md §7, docs/spec/daemon.md. The node keeps no blocks and no ledger state:
it follows verified headers (:class:`ledger.light_node.LightNode` under ``<data_dir>/light``),
submits its SetMeasure and learns their commitment from tx-inclusion proofs
(:class:`edge.light_submitter.LightSubmitter`). Its MQTT link carries the ``header`` feed and its
own inbox only, so the broker ACL can keep other members' txs from it (light.md §5).

What it serves on ``api.listen``: the REST API of a prosumer (edge/light_api.py; docs/spec/api.md
§Light members): ``/status`` from the newest verified header, ``/balance``, ``/measure``,
``/params``, ``/totals``, ``/meters`` from Merkle proofs checked against verified headers,
``/outbox``, ``/key``, ``/metrics`` locally, and the writes through the light submitter. It does
not run the period or retention schedulers (validators and full members submit SolveMarkets and
PruneMeasurements). A node provisioned from a community file (``<data_dir>/join.json``) runs
the join task on proven reads (edge/light_join.py, docs/spec/join.md §4a); until it is
admitted, its outbox records wait unsigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from typing import Any

from edge.bft import mqtt_settings
from edge.clock import DaemonClock
from edge.config import Config, ConfigError
from edge.health import Health, watchdog_loop
from edge.http import Request, Response, Router, serve
from edge.join import status as join_status
from edge.light_api import LightParts, build_light_router
from edge.light_join import light_join_task
from edge.light_submitter import LightSubmitter
from edge.meter import HEALTH_NAME as METER_HEALTH
from edge.meter import SIM_STATE_KEY, MeterLoop, build_driver
from edge.metrics import CONTENT_TYPE, Metrics
from edge.node_factory import load_genesis
from edge.outbox import Outbox
from edge.privacy import ADMISSION_FILE, Admission
from edge.pseudonym_driver import pseudonymising_driver
from edge.sdnotify import Notifier
from edge.status import resources
from edge.submitter import HEALTH_NAME as SUBMITTER_HEALTH
from ledger import privacy
from ledger.errors import LedgerError, Reason, TxRejected
from ledger.keys import SigningKey
from ledger.light import LightClient
from ledger.light_node import PROBE_S, LightNode
from ledger.light_reader import ProvenReader
from ledger.transport.base import LIGHT_CHANNELS
from ledger.transport.mqtt import MqttTransport

log = logging.getLogger("lemd.light")

LIGHT_HEALTH = "light"
TICK_S = 5.0
PROBE_MARGIN_S = 60.0
"""Header silence beyond the heartbeat before the member asks for headers [s]."""


class LightDaemon:
    """The daemon of a light member node.

    Args:
        config: the node's configuration (``ledger.brokers`` required).
        key: the node key (must not be a validator of the genesis set).
        notifier: systemd notifications (READY, watchdog).
        transport: injected in tests; default MQTT from the config.
    """

    def __init__(
        self,
        config: Config,
        key: SigningKey,
        notifier: Notifier | None = None,
        *,
        transport: MqttTransport | None = None,
    ) -> None:
        genesis = load_genesis(config.node.genesis_file)
        if genesis is None:
            raise ConfigError("node.genesis_file is required (the light client's trust root)")
        if any(pk == key.public_key for pk, _ in genesis.validators):
            raise ConfigError("ledger.member_mode = 'light' on a validator: validators need blocks")
        if not config.ledger.brokers and transport is None:
            raise ConfigError("ledger.member_mode = 'light' needs ledger.brokers")
        self.config, self.key, self.genesis = config, key, genesis
        self.notifier = notifier or Notifier()
        self.clock = DaemonClock.from_config(config.clock)
        self.health = Health()
        self.metrics = Metrics(config.node.data_dir)
        self.transport = transport or MqttTransport(
            dataclasses.replace(
                mqtt_settings(config, genesis.chain_id, validator=False),
                broadcast_channels=LIGHT_CHANNELS,
            )
        )
        self.outbox = Outbox(config.node.data_dir / "outbox")
        self.light = LightClient(config.node.data_dir / "light", genesis)
        # Probe for headers only after a silence longer than the chain's heartbeat: an idle
        # 15-min gap is normal, and each probe costs a request and an answer on the 4G link
        # (at the old 90 s, ≈ 860 probes a day). A lost header is also asked for as soon as a
        # later one shows the gap, or when a read needs it.
        probe_s = max(PROBE_S, config.ledger.block_heartbeat_s + PROBE_MARGIN_S)
        self.node = LightNode(self.light, self.transport, key, probe_s=probe_s)
        self.reader = ProvenReader(self.node)
        self.submitter = LightSubmitter(
            self.outbox,
            self.node,
            key,
            self.health,
            resign_timeout_s=config.ledger.resign_timeout_s,
            max_inflight=config.ledger.max_inflight,
            hold=self._joining,
        )
        self._join_id = ""
        self.joiner = light_join_task(
            config, key, genesis, self.reader, self.node, self._queue_join,
            refusal=self._join_refusal, registry=self.metrics.registry, now_ms=self.clock.now_ms,
        )  # fmt: skip
        driver = build_driver(config.meter, self.clock, self.outbox.load_meta(SIM_STATE_KEY))
        self.meter = MeterLoop(
            pseudonymising_driver(driver, config, genesis),
            self.outbox,
            self.clock,
            poll_interval_s=config.meter.poll_interval_s,
            health=self.health,
            metrics=self.metrics,
            expected_meter_id=config.meter.meter_id if config.meter.driver != "sim" else "",
            on_records=self.submitter.wake.set,
        )
        self.stop_event = asyncio.Event()
        self.serving = asyncio.Event()
        self.started_s = time.monotonic()

    def _joining(self) -> bool:
        """A provisioned node not yet admitted: its SetMeasure would be refused unseen."""
        return self.joiner is not None and self.joiner.state.phase != "measuring"

    def _queue_join(self, kind: str, body: Any, ref: str = "") -> bytes:
        """The join task's submit: the JoinRequest goes to the durable tx queue (its
        inclusion is seen as ``join/req/<key>`` in a later proof round). One at a time: a
        request still queued is not queued again."""
        if any(item["kind"] == kind for item in self.submitter.queued()):
            return b""
        try:
            self._join_id = self.submitter.queue_tx(kind, body)
        except LedgerError as exc:  # the join task shows it and retries later
            raise TxRejected(Reason.MEMPOOL_FULL, str(exc)) from exc
        return b""

    def _join_refusal(self) -> str:
        """The reason the last queued JoinRequest was set aside (never included), or ""."""
        for item in self.submitter.rejected_txs():
            if item["id"] == self._join_id:
                return (
                    "not committed: the validators refuse it (meter id already taken or "
                    "already a member?); sent again in 15 min"
                )
        return ""

    def status(self) -> dict[str, Any]:
        """``GET /status`` in the full daemon's schema (edge/status.py ``snapshot``), from the
        newest verified header; ``role.consensus`` is "member", ``role.mode`` "light"."""
        tip = self.light.latest
        oldest = self.outbox.oldest_created_s()
        return {
            "node": self.config.node.name,
            "chain_id": self.genesis.chain_id,
            "public_key": self.key.public_key.hex(),
            "role": {"access": "light", "consensus": "member", "mode": "light"},
            "mode": "light",
            "height": tip.height,
            "hash": tip.hash.hex(),
            "app_hash": tip.app_hash.hex(),
            "block_time_ms": tip.time_ms,
            "clock": {"now_ms": self.clock.now_ms(), "speed": self.clock.speed},
            "peers": len(self.node.peers),
            "mempool": {"txs": 0, "bytes": 0},
            "ledger": {
                **self.node.status(),
                "reads": dict(self.reader.stats),
                "validator_now": self.made_validator(),
            },
            "meter": self._meter(),
            "outbox": {
                "depth": self.outbox.depth(),
                "oldest_age_s": None if oldest is None else max(0, int(time.time()) - oldest),
                "rejected": len(self.outbox.rejected()),
            },
            "submitter": {
                "inflight": len(self.submitter.inflight),
                "committed_sequence": self.submitter.sequence,
                "committed_records": self.submitter.committed,
                **dict(self.submitter.stats),
            },
            "mqtt": self.transport.stats.as_dict(),
            "health": {"stale": self.health.stale()},
            "join": join_status(self.config.node.data_dir),
            "resources": resources(self.config.node.data_dir),
            "uptime_s": round(time.monotonic() - self.started_s, 1),
        }

    def _meter(self) -> dict[str, Any]:
        m = self.meter
        r = m.last_reading
        state = (
            "ok"
            if r is not None and not m.last_error
            else "failing"
            if m.last_error
            else ("waiting")
        )
        out: dict[str, Any] = {
            "driver": self.config.meter.driver,
            "meter_id": r.meter_id if r is not None else self.config.meter.meter_id,
            "state": state,
            "error": m.last_error,
            "slots_written": m.records_written,
        }
        if r is not None:
            out.update(import_wh=r.import_wh, export_wh=r.export_wh, power_w=r.power_w)
        return out

    def _router(self) -> Router:
        parts = LightParts(
            config=self.config,
            key=self.key,
            genesis=self.genesis,
            reader=self.reader,
            submitter=self.submitter,
            outbox=self.outbox,
            metrics=self.metrics,
            status=self.status,
            meter_id=self._ledger_meter_id,
        )
        return build_light_router(parts)

    def _ledger_meter_id(self) -> str:
        """The meter id this node writes on the ledger: the configured one on an open chain,
        the admission's pseudonym on a pseudonymous chain (never the serial: proof requests
        go to a validator). Read at each request: a joining node gets its admission later."""
        if self.genesis.privacy != privacy.Mode.PSEUDONYMOUS:
            return self.config.meter.meter_id
        path = self.config.node.data_dir / ADMISSION_FILE
        return Admission.load(path).pseudonym if path.exists() else ""

    async def _serve(self) -> list[asyncio.Server]:
        """The API, and the metrics endpoint when it has its own address (as the full node)."""
        servers = [await serve(self._router(), self.config.api.listen)]
        listen = self.config.metrics.listen
        if listen and listen != self.config.api.listen:
            router = Router()

            async def metrics(_: Request) -> Response:
                return Response(200, self.metrics.render(), CONTENT_TYPE)

            router.add("GET", "/metrics", metrics)
            servers.append(await serve(router, listen))
        return servers

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or :attr:`stop_event`); returns the exit status 0."""
        servers = await self._serve()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop_event.set)
        self.health.require(METER_HEALTH, max(30.0, 3 * self.config.meter.poll_interval_s + 30))
        self.health.require(SUBMITTER_HEALTH, 60.0)
        self.health.require(LIGHT_HEALTH, 30.0)
        self.serving.set()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.transport.run(), name="mqtt"),
                    tg.create_task(self.node.run(), name="light-node"),
                    tg.create_task(self.meter.run(), name="meter-poll"),
                    tg.create_task(self.submitter.run(), name="light-submitter"),
                    tg.create_task(self._beat(), name="light-health"),
                    tg.create_task(self._watchdog(), name="watchdog"),
                ]
                if self.joiner is not None:
                    tasks.append(tg.create_task(self.joiner.run(), name="join"))
                self.notifier.ready(f"light member, height {self.light.height}")
                await self.stop_event.wait()
                self.notifier.stopping("stopping: flushing stores")
                for task in tasks:
                    task.cancel()
        finally:
            for server in servers:
                server.close()
            await self.close()
        return 0

    async def _beat(self) -> None:
        warned = False
        while True:
            self.health.beat(LIGHT_HEALTH)
            if not warned and self.made_validator():
                warned = True
                log.error(
                    "this node's key is in the validator set of the newest verified header; a "
                    'light member does not vote: set [ledger] member_mode = "full" and restart'
                )
            await asyncio.sleep(TICK_S)

    def made_validator(self) -> bool:
        """Governance put this key into the validator set (light.md §7: it must run full)."""
        valset = self.light.validators(self.light.latest.validators_hash) or ()
        return any(pk == self.key.public_key for pk, _ in valset)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if interval is None:
            return
        await watchdog_loop(
            self.notifier, self.health, interval_s=interval / 2, max_loop_lag_s=interval / 4
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.transport.close(drain_timeout_s=1.0)
        with contextlib.suppress(Exception):
            await self.meter.driver.close()
        self.light.close()
        self.outbox.close()
