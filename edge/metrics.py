"""Prometheus metrics of one node: process and system resources, meter, outbox, ledger, MQTT.

Names follow Prometheus conventions (``lem_..._total`` counters, ``_seconds``, ``_bytes``).
Resource figures are read from psutil at scrape time, so an idle node does no metrics work.
Labels never carry meter ids, account keys or other personal data (privacy, seed 000 §4.5).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ResourceCollector(Collector):
    """Process and system resource gauges, computed when scraped."""

    def __init__(self, data_dir: Path) -> None:
        self._process = psutil.Process(os.getpid())
        self._data_dir = data_dir

    def collect(self) -> Iterator[GaugeMetricFamily]:
        proc = self._process
        cpu = proc.cpu_times()
        yield _gauge(
            "lem_process_cpu_seconds", "Process CPU time (user+system)", cpu.user + cpu.system
        )
        mem = proc.memory_full_info()  # uss reads /proc/self/smaps: only on scrape
        yield _gauge("lem_process_resident_memory_bytes", "Resident set size", mem.rss)
        yield _gauge("lem_process_private_memory_bytes", "Unique set size (USS)", mem.uss)
        yield _gauge("lem_process_open_fds", "Open file descriptors", proc.num_fds())
        yield _gauge(
            "lem_system_cpu_ratio",
            "System CPU use since last scrape (0-1)",
            psutil.cpu_percent() / 100,
        )
        vm = psutil.virtual_memory()
        yield _gauge("lem_system_memory_available_bytes", "Available system memory", vm.available)
        yield _gauge("lem_system_memory_total_bytes", "Total system memory", vm.total)
        if self._data_dir.exists():
            disk = shutil.disk_usage(self._data_dir)
            yield _gauge(
                "lem_system_disk_free_bytes", "Free bytes on the data partition", disk.free
            )
        temperature = _cpu_temperature_c()
        if temperature is not None:
            yield _gauge("lem_system_temperature_celsius", "SoC temperature", temperature)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _cpu_temperature_c() -> float | None:
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    for entries in reader().values():
        for entry in entries:
            return float(entry.current)
    return None


class Metrics:
    """Every metric the daemon exports, on a registry of its own (not the global one)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if data_dir is not None:
            self.registry.register(ResourceCollector(data_dir))
        r = self.registry
        self.meter_reads = Counter(
            "lem_meter_reads_total", "Meter reads that succeeded", registry=r
        )
        self.meter_read_failures = Counter(
            "lem_meter_read_failures_total", "Meter reads that failed", ["reason"], registry=r
        )
        self.meter_read_seconds = Histogram(
            "lem_meter_read_seconds",
            "Duration of one meter read",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.meter_last_read_timestamp = Gauge(
            "lem_meter_last_read_timestamp_seconds", "UTC time of the last good read", registry=r
        )
        self.meter_power = Gauge(
            "lem_meter_power_watts", "Instantaneous power, + import", registry=r
        )
        self.slot_import = Gauge(
            "lem_slot_import_wh", "Import of the last closed slot [Wh]", registry=r
        )
        self.slot_export = Gauge(
            "lem_slot_export_wh", "Export of the last closed slot [Wh]", registry=r
        )
        self.slots_closed = Counter("lem_slots_closed_total", "15-min slots closed", registry=r)
        self.outbox_depth = Gauge(
            "lem_outbox_records", "Slot records awaiting commitment", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "lem_outbox_oldest_age_seconds", "Age of the oldest waiting record", registry=r
        )
        self.ledger_height = Gauge("lem_ledger_height", "Last committed height", registry=r)
        self.ledger_last_commit_timestamp = Gauge(
            "lem_ledger_last_commit_timestamp_seconds", "Wall time of the last commit", registry=r
        )
        self.consensus_round = Gauge("lem_consensus_round", "Current consensus round", registry=r)
        self.commit_seconds = Histogram(
            "lem_ledger_commit_seconds",
            "Time from height start to commit",
            registry=r,
            buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
        )
        self.mempool_size = Gauge("lem_mempool_txs", "Transactions in the mempool", registry=r)
        self.peers_seen = Gauge("lem_peers_seen", "Distinct peers heard from recently", registry=r)
        self.txs_submitted = Counter(
            "lem_txs_submitted_total", "Transactions this node signed", registry=r
        )
        self.mqtt_reconnects = Counter(
            "lem_mqtt_reconnects_total", "MQTT reconnections", registry=r
        )
        self.mqtt_bytes_in = Gauge(
            "lem_mqtt_received_bytes", "MQTT payload bytes received", registry=r
        )
        self.mqtt_bytes_out = Gauge("lem_mqtt_sent_bytes", "MQTT payload bytes sent", registry=r)
        self.mqtt_connected = Gauge(
            "lem_mqtt_connected", "1 while connected to a broker", registry=r
        )
        self.periods_solved = Counter(
            "lem_periods_solved_total", "Market periods settled", registry=r
        )
        self.balance = Gauge("lem_balance_uect", "This node's account balance [µECT]", registry=r)
        self.errors = Counter("lem_errors_total", "Errors by component", ["component"], registry=r)
        self.started = Gauge("lem_start_timestamp_seconds", "Daemon start time", registry=r)
        self.started.set(time.time())

    def render(self) -> bytes:
        """The exposition text for a scrape."""
        return generate_latest(self.registry)
