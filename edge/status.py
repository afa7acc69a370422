"""The node's state at a glance: the ``GET /status`` document, metrics refresh, systemd STATUS=.

Spec: docs/spec/api.md §GET /status. :class:`Parts` bundles the running components, so the API
and the status task read one place. :func:`snapshot` is cheap (a few LMDB reads, psutil for the
process only) and never raises for a missing part: a node without a meter or without a broker
still reports the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from edge.clock import DaemonClock
from edge.config import Config
from edge.health import Health
from edge.join import status as join_status
from edge.ledger_node import LedgerNode
from edge.meter import MeterLoop
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.sdnotify import Notifier
from edge.submitter import Submitter, TxSigner
from ledger import state
from ledger.access import Queries
from ledger.keys import SigningKey

log = logging.getLogger("lemd.status")


@dataclass
class Parts:
    """The running daemon's components (built by edge/daemon.py)."""

    config: Config
    key: SigningKey
    clock: DaemonClock
    node: LedgerNode
    queries: Queries
    outbox: Outbox
    signer: TxSigner
    submitter: Submitter
    metrics: Metrics
    health: Health
    meter: MeterLoop | None = None
    transport_stats: Callable[[], dict[str, Any]] | None = None
    started_s: float = field(default_factory=time.time)
    reconnects_counted: int = 0


def role_of(parts: Parts) -> dict[str, Any]:
    """This key's ledger roles: access role (admin/prosumer/anyone) and consensus role."""
    return {
        "access": parts.queries.role(parts.key.public_key).value,
        "consensus": parts.node.role,
        "mode": parts.node.mode,
    }


def snapshot(parts: Parts) -> dict[str, Any]:
    """The ``GET /status`` / ``lemctl status --json`` document."""
    app = parts.node.app
    return {
        "node": parts.config.node.name,
        "chain_id": app.chain_id,
        "public_key": parts.key.public_key.hex(),
        "role": role_of(parts),
        "height": app.height,
        "hash": app.last_block_hash.hex(),
        "app_hash": app.app_hash.hex(),
        "block_time_ms": app.last_block_time_ms,
        "clock": {"now_ms": parts.clock.now_ms(), "speed": parts.clock.speed},
        "peers": parts.node.peers(),
        "mempool": {"txs": len(parts.node.mempool), "bytes": parts.node.mempool.size_bytes},
        "ledger": parts.node.stats(),
        "meter": _meter(parts),
        "outbox": _outbox(parts),
        "submitter": {
            "inflight": len(parts.signer.inflight),
            "committed_sequence": parts.signer.committed_sequence(),
            "resets": parts.signer.resets,
            "committed_records": parts.submitter.committed_records,
            "rejected_records": parts.submitter.rejected_records,
        },
        "mqtt": parts.transport_stats() if parts.transport_stats else None,
        "health": {"stale": parts.health.stale()},
        "join": join_status(parts.config.node.data_dir),  # None unless provisioned
        "resources": resources(parts.config.node.data_dir),
        "uptime_s": int(time.time() - parts.started_s),
    }


def _meter(parts: Parts) -> dict[str, Any]:
    m = parts.meter
    out: dict[str, Any] = {
        "driver": parts.config.meter.driver,
        "meter_id": parts.config.meter.meter_id,
    }
    if m is None:
        return {**out, "state": "absent"}
    r = m.last_reading
    out["state"] = (
        "ok" if r is not None and not m.last_error else "failing" if m.last_error else "waiting"
    )
    out["error"] = m.last_error
    if r is not None:
        out.update(
            meter_id=r.meter_id, import_wh=r.import_wh, export_wh=r.export_wh, power_w=r.power_w
        )
    if m.last_read_s is not None:
        out["last_read_age_s"] = round(parts.clock.time_s() - m.last_read_s, 1)
    out["slots_written"] = m.records_written
    return out


def _outbox(parts: Parts) -> dict[str, Any]:
    oldest = parts.outbox.oldest_created_s()
    return {
        "depth": parts.outbox.depth(),
        "oldest_age_s": None if oldest is None else max(0, int(time.time()) - oldest),
        "rejected": len(parts.outbox.rejected()),
    }


def resources(data_dir: Any) -> dict[str, Any]:
    """Process CPU time, RSS, USS and open files of this process; free disk of ``data_dir``."""
    proc = psutil.Process(os.getpid())
    mem = proc.memory_full_info()
    cpu = proc.cpu_times()
    out: dict[str, Any] = {
        "cpu_s": round(cpu.user + cpu.system, 2),
        "rss_bytes": mem.rss,
        "uss_bytes": mem.uss,
        "open_fds": proc.num_fds(),
    }
    try:
        out["disk_free_bytes"] = psutil.disk_usage(str(data_dir)).free
    except OSError:
        out["disk_free_bytes"] = None
    return out


def balance_of(parts: Parts) -> int:
    with parts.queries.store.state_reader() as base:
        return state.Overlay(base).get_int(state.k_balance(state.account_id(parts.key.public_key)))


def refresh_metrics(parts: Parts) -> None:
    """Copy the current figures into the Prometheus gauges."""
    m, app = parts.metrics, parts.node.app
    m.ledger_height.set(app.height)
    m.ledger_last_commit_timestamp.set(app.last_block_time_ms / 1000)
    m.mempool_size.set(len(parts.node.mempool))
    m.peers_seen.set(parts.node.peers())
    m.consensus_round.set(max(0, int(parts.node.stats().get("round", 0))))
    m.outbox_depth.set(parts.outbox.depth())
    oldest = parts.outbox.oldest_created_s()
    m.outbox_oldest_age.set(0 if oldest is None else max(0, time.time() - oldest))
    m.balance.set(balance_of(parts))
    if parts.transport_stats is not None:
        stats = parts.transport_stats()
        m.mqtt_bytes_in.set(stats.get("bytes_in", 0))
        m.mqtt_bytes_out.set(stats.get("bytes_out", 0))
        m.mqtt_connected.set(stats.get("connected", 0))
        reconnects = int(stats.get("reconnects", 0))
        if reconnects > parts.reconnects_counted:  # a Counter: add only the increase
            m.mqtt_reconnects.inc(reconnects - parts.reconnects_counted)
            parts.reconnects_counted = reconnects


def status_line(parts: Parts) -> str:
    """The one-line systemd STATUS= summary."""
    app = parts.node.app
    meter = _meter(parts)["state"]
    return (
        f"height {app.height}, {parts.node.role}, peers {parts.node.peers()}, "
        f"meter {meter}, outbox {parts.outbox.depth()}, mempool {len(parts.node.mempool)}"
    )


async def status_loop(parts: Parts, notifier: Notifier, interval_s: float = 5.0) -> None:
    """Refresh metrics and STATUS= every ``interval_s`` [real s]."""
    while True:
        refresh_metrics(parts)
        notifier.status(status_line(parts))
        await asyncio.sleep(interval_s)
