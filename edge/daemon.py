"""``lemd``: one asyncio process per meter cabinet (meter, outbox, ledger node, API, watchdog).

Spec: docs/spec/daemon.md. Start-up: config → logging → node key (created 0600 on first start)
→ stores (ledger, outbox) → clock → meter driver → ledger node (+ transport) → one TaskGroup
with a named task per job. READY=1 goes out once the stores are open and the meter and the
broker have been tried; WATCHDOG=1 only from :func:`edge.health.watchdog_loop`. SIGTERM/SIGINT:
stop accepting API requests, let the ongoing write finish, flush the meter checkpoint, close
the stores, STOPPING=1, exit 0.

Exit status: 0 after a signal, 2 for a configuration / key / genesis / store problem at start
(the message names it), 1 when a task fails while running (systemd restarts the service).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.api import build_router, metrics_router
from edge.clock import DaemonClock
from edge.config import Config, ConfigError, load_config
from edge.gc_policy import settle_after_startup
from edge.health import Health, watchdog_loop
from edge.http import serve
from edge.join import join_task
from edge.ledger_node import HEALTH_NAME as LEDGER_HEALTH
from edge.logs import setup_logging
from edge.meter import HEALTH_NAME as METER_HEALTH
from edge.meter import SIM_STATE_KEY, MeterLoop, build_driver
from edge.metrics import Metrics
from edge.node_factory import open_ledger
from edge.node_lock import NodeLock, NodeLocked, compact_stores
from edge.outbox import Outbox
from edge.privacy import RetentionScheduler
from edge.pseudonym_driver import pseudonymising_driver
from edge.scheduler import PeriodScheduler
from edge.sdnotify import Notifier
from edge.status import Parts, status_line, status_loop
from edge.submitter import HEALTH_NAME as SUBMITTER_HEALTH
from edge.submitter import Submitter, TxSigner
from ledger.access import Queries
from ledger.errors import LedgerError, StoreError
from ledger.keys import SigningKey
from meters.reading import MeterDriver

log = logging.getLogger("lemd")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
READY_WAIT_S = 10.0
"""Longest wait for the first meter read and broker attempt before READY=1 [s]."""


class StartupError(Exception):
    """Start-up cannot proceed (key, genesis, store); the message says what and where."""


class _Shutdown(Exception):  # noqa: N818 -- a control-flow signal, not an error
    """Raised inside the TaskGroup to end it after SIGTERM/SIGINT."""


def load_or_create_key(path: Path) -> SigningKey:
    """The node key at ``path``; a new one is generated (mode 0600) on first start."""
    if path.exists():
        return SigningKey.load(path)
    key = SigningKey.generate()
    key.save(path)
    log.info(
        "created a new node key", extra={"path": str(path), "public_key": key.public_key.hex()}
    )
    return key


class Daemon:
    """The running node: builds its parts from a config and runs them until a signal.

    Args:
        config: the validated configuration.
        notifier: systemd notify (a no-op outside systemd).
        driver: a meter driver to use instead of the configured one (tests).
        node_factory: builds the ledger node instead of :func:`open_ledger` (tests).
    """

    def __init__(
        self,
        config: Config,
        *,
        notifier: Notifier | None = None,
        driver: MeterDriver | None = None,
        node_factory: Any = None,
    ) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self._driver_override = driver
        self._node_factory = node_factory or open_ledger
        self.stop_event = asyncio.Event()
        self.serving = asyncio.Event()
        """Set once the API listens (tests and embedders wait for it)."""
        self.parts: Parts | None = None
        self._closers: list[Any] = []
        self._lock: NodeLock | None = None

    # ----------------------------------------------------------------- build

    async def open(self) -> Parts:
        """Open key, stores, meter and ledger node (no task runs yet).

        Raises:
            StartupError: a key, genesis or store problem (message names the file).
            ConfigError: a driver option or ledger setting that cannot work.
        """
        cfg = self.config
        clock = DaemonClock.from_config(cfg.clock)
        metrics = Metrics(cfg.node.data_dir)
        health = Health()
        try:
            cfg.node.data_dir.mkdir(parents=True, exist_ok=True)
            key = load_or_create_key(cfg.key_file)
        except (OSError, LedgerError) as exc:
            raise StartupError(f"node key {cfg.key_file}: {exc}") from exc
        self._lock_and_compact()
        outbox = Outbox(cfg.node.data_dir / "outbox")
        self._closers.append(outbox.close)
        node, transport_stats, closers = await self._node_factory(cfg, key, clock, health)
        self._closers[:0] = closers
        driver = self._driver_override or build_driver(
            cfg.meter, clock, outbox.load_meta(SIM_STATE_KEY)
        )
        # Pseudonymous chain: readings carry the admitted pseudonym, never the serial.
        driver = pseudonymising_driver(driver, cfg, node.app.store.genesis)
        self._closers.insert(0, driver.close)
        signer = TxSigner(
            key,
            node,
            metrics,
            resign_timeout_s=cfg.ledger.resign_timeout_s,
            monotonic=time.monotonic,
        )
        submitter = Submitter(outbox, signer, health, max_inflight=cfg.ledger.max_inflight)
        meter = MeterLoop(
            driver,
            outbox,
            clock,
            poll_interval_s=cfg.meter.poll_interval_s,
            health=health,
            metrics=metrics,
            expected_meter_id=cfg.meter.meter_id if cfg.meter.driver != "sim" else "",
            on_records=submitter.wake.set,
        )
        self.parts = Parts(
            cfg, key, clock, node, Queries(node.app.store), outbox, signer, submitter,
            metrics, health, meter, transport_stats,
        )  # fmt: skip
        if hasattr(node, "on_commit"):
            node.on_commit = metrics.commit_seconds.observe
        self._check_role(self.parts)
        return self.parts

    def _check_role(self, parts: Parts) -> None:
        if self.config.node.role != parts.node.role:
            log.warning(
                "node.role in the config differs from the validator set on the ledger; "
                "the ledger decides",
                extra={"config_role": self.config.node.role, "ledger_role": parts.node.role},
            )

    # ----------------------------------------------------------------- run

    async def run(self) -> int:
        """Run every task until a stop signal; returns the exit status."""
        parts = self.parts or await self.open()
        servers = await self._start_servers(parts)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop_event.set)
        self.serving.set()
        self._require_health(parts)
        try:
            async with asyncio.TaskGroup() as tg:
                self._spawn(tg, parts)
        except* _Shutdown:
            pass
        finally:
            await self._shutdown(parts, servers)
        return EXIT_OK

    def _require_health(self, parts: Parts) -> None:
        poll = self.config.meter.poll_interval_s
        parts.health.require(
            METER_HEALTH, max(30.0, 3 * poll + parts.meter.read_timeout_s if parts.meter else 30.0)
        )
        parts.health.require(LEDGER_HEALTH, 30.0)
        parts.health.require(SUBMITTER_HEALTH, 30.0)

    def _spawn(self, tg: asyncio.TaskGroup, parts: Parts) -> None:
        tg.create_task(self._wait_stop(), name="stop-signal")
        tg.create_task(parts.node.run(), name="ledger-node")
        if parts.meter is not None:
            tg.create_task(parts.meter.run(), name="meter-poll")
        tg.create_task(parts.submitter.run(), name="submitter")
        scheduler = PeriodScheduler(
            parts.signer,
            parts.queries,
            parts.clock,
            parts.outbox,
            grace_s=self.config.market.solve_grace_s,
            metrics=parts.metrics,
        )
        first_poll = parts.meter.tried if parts.meter is not None else None
        tg.create_task(scheduler.run(first_poll), name="period-scheduler")
        retention = RetentionScheduler(parts.signer, parts.queries, parts.clock)
        tg.create_task(retention.run(), name="retention")
        joiner = join_task(parts)  # a node provisioned from a community file (edge/provision.py)
        if joiner is not None:
            tg.create_task(joiner.run(), name="join")
        tg.create_task(status_loop(parts, self.notifier), name="status")
        tg.create_task(self._ready(parts), name="ready")
        interval = self.notifier.watchdog_interval_s
        if interval is not None:
            tg.create_task(
                watchdog_loop(
                    self.notifier,
                    parts.health,
                    interval_s=interval / 2,
                    max_loop_lag_s=interval / 4,
                    on_unhealthy=_log_unhealthy,
                ),
                name="watchdog",
            )

    async def _wait_stop(self) -> None:
        await self.stop_event.wait()
        log.info("stop requested; shutting down")
        self.notifier.stopping("stopping: flushing stores")
        raise _Shutdown

    async def _ready(self, parts: Parts) -> None:
        """READY=1 once the meter and the broker have been tried (not necessarily reached)."""
        waits = [parts.meter.tried.wait()] if parts.meter is not None else []
        wait_connected = getattr(parts.node, "wait_connected", None)
        if wait_connected is not None:
            waits.append(wait_connected())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_WAIT_S):
                await asyncio.gather(*waits)
        self.notifier.ready(status_line(parts))
        log.info("ready", extra={"status": status_line(parts)})

    async def _start_servers(self, parts: Parts) -> list[asyncio.Server]:
        """The API server and, on its own address, the metrics server.

        Raises:
            StartupError: an address cannot be bound (in use, no permission), named.
        """
        servers: list[asyncio.Server] = []
        wanted = [("api.listen", self.config.api.listen, build_router(parts))]
        metrics_listen = self.config.metrics.listen
        if metrics_listen and metrics_listen != self.config.api.listen:
            wanted.append(("metrics.listen", metrics_listen, metrics_router(parts)))
        for field_name, listen, router in wanted:
            try:
                servers.append(await serve(router, listen))
            except OSError as exc:
                for server in servers:
                    server.close()
                raise StartupError(f"{field_name} = {listen!r}: cannot listen: {exc}") from exc
        return servers

    async def _shutdown(self, parts: Parts, servers: list[asyncio.Server]) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        for server in servers:
            server.close()  # stop accepting first
        await parts.node.close()  # an ongoing block commit completes
        if parts.meter is not None:
            parts.meter.flush()
        await self.close_opened()
        log.info("stopped")

    async def close_opened(self) -> None:
        """Close what :meth:`open` opened so far (driver, transport, stores), in order; the
        data directory's lock goes last."""
        closers, self._closers = self._closers, []
        try:
            for close in closers:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _lock_and_compact(self) -> None:
        """Hold the data directory for this process, then compact its stores if pruning
        left enough free pages (ledger/compact.py); both before any store is opened."""
        data_dir = self.config.node.data_dir
        try:
            self._lock = NodeLock(data_dir)
        except NodeLocked as exc:
            raise StartupError(str(exc)) from exc
        if not self.config.ledger.compact_on_start:
            return
        try:
            compact_stores(data_dir)
        except (StoreError, OSError) as exc:
            # The old file is intact; a node that cannot compact still runs.
            log.warning("store compaction skipped", extra={"error": str(exc)})


def _runs_light(config: Config, key: SigningKey) -> bool:
    """``member_mode = "light"`` (the default) applies to non-validators: a key in the
    genesis validator set runs the full node, which it needs to vote. Without brokers (a
    single-validator chain, an offline node) there is nothing to be light against."""
    from edge.node_factory import load_genesis

    genesis = load_genesis(config.node.genesis_file)
    if genesis is None or not config.ledger.brokers:
        return False
    return all(pk != key.public_key for pk, _ in genesis.validators)


def _log_unhealthy(stale: list[str], lag_s: float) -> None:
    log.warning(
        "watchdog not petted", extra={"stale": ",".join(stale), "loop_lag_s": round(lag_s, 3)}
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``lemd --config PATH``."""
    parser = argparse.ArgumentParser(prog="lemd", description="lem-edge node daemon")
    parser.add_argument("--config", type=Path, required=True, help="path of lemd.toml")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"lemd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.log.level)
    try:
        return asyncio.run(_run(config))
    except (ConfigError, StartupError) as exc:
        print(f"lemd: {exc}", file=sys.stderr)
        return EXIT_CONFIG


async def _run(config: Config) -> int:
    if config.ledger.member_mode == "light":  # headers + proofs only (docs/spec/light.md)
        try:
            key = load_or_create_key(config.key_file)
            light = _runs_light(config, key)
        except (OSError, LedgerError) as exc:
            raise StartupError(f"node key {config.key_file}: {exc}") from exc
        if light:
            from edge.light_daemon import LightDaemon

            try:
                lock = NodeLock(config.node.data_dir)  # one lemd per data directory
            except NodeLocked as exc:
                raise StartupError(str(exc)) from exc
            try:
                light_daemon = LightDaemon(config, key)
                settle_after_startup()
                return await light_daemon.run()
            finally:
                lock.release()
    daemon = Daemon(config)
    try:
        await daemon.open()
    except (LedgerError, ConfigError, StartupError) as exc:
        await daemon.close_opened()
        if isinstance(exc, LedgerError):
            raise StartupError(str(exc)) from exc
        raise
    settle_after_startup()
    try:
        return await daemon.run()
    except StartupError:
        await daemon.close_opened()
        raise
    except BaseExceptionGroup as group:
        for failure in group.exceptions:
            log.error("task failed; exiting for a restart", exc_info=failure)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
