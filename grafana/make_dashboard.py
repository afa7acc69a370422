"""Write grafana/lem-edge-dashboard.json: the community overview and per-node resources.

Run ``.venv/bin/python grafana/make_dashboard.py`` after changing a panel; the test
tests/unit/edge/test_dashboard.py checks that the committed JSON is this script's output and that
every ``lem_*`` metric a panel queries exists in edge.metrics' exposition.

Targets are expected to carry the labels ``node`` (node name) and ``role`` (validator | member),
as in the Prometheus file_sd targets ``lemctl testnet init`` writes and in
grafana/provisioning/prometheus.example.yml.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("lem-edge-dashboard.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = '{node=~"$node"}'
WIDTH = 24


class Layout:
    """Places panels left to right in rows of 24 grid units and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": len(self.panels) + 1,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0

    def add(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        kind: str = "timeseries",
        w: int = 8,
        h: int = 7,
        description: str = "",
    ) -> None:
        if self.x + w > WIDTH:
            self._newline()
        panel: dict[str, Any] = {
            "type": kind,
            "title": title,
            "description": description,
            "id": len(self.panels) + 1,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if kind == "stat":
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def quantile(q: str, histogram: str, by: str) -> str:
    """PromQL for quantile ``q`` of ``histogram`` over 5 min, summed by ``by``."""
    return f"histogram_quantile({q}, sum by ({by}) (rate({histogram}_bucket{SEL}[5m])))"


def community(p: Layout) -> None:
    p.row("Community: ledger")
    p.add("Height per node", [(f"lem_ledger_height{SEL}", "{{node}}")], w=12)
    p.add(
        "Last commit age",
        [(f"time() - lem_ledger_last_commit_timestamp_seconds{SEL}", "{{node}}")],
        unit="s",
        w=12,
        description="Wall time since the block time of the last commit (simulated in demos).",
    )
    p.add(
        "Commit duration p50 / p90",
        [
            (
                quantile("0.5", "lem_ledger_commit_seconds", "le"),
                "p50",
            ),
            (
                quantile("0.9", "lem_ledger_commit_seconds", "le"),
                "p90",
            ),
            (
                f"sum(rate(lem_ledger_commit_seconds_sum{SEL}[5m])) / "
                f"sum(rate(lem_ledger_commit_seconds_count{SEL}[5m]))",
                "mean",
            ),
        ],
        unit="s",
    )
    p.add("Consensus round", [(f"lem_consensus_round{SEL}", "{{node}}")])
    p.add(
        "Mempool and peers",
        [(f"lem_mempool_txs{SEL}", "mempool {{node}}"), (f"lem_peers_seen{SEL}", "peers {{node}}")],
    )
    p.row("Community: measurements and market")
    p.add("Outbox depth", [(f"lem_outbox_records{SEL}", "{{node}}")], w=12)
    p.add(
        "Outbox oldest record age",
        [(f"lem_outbox_oldest_age_seconds{SEL}", "{{node}}")],
        unit="s",
        w=12,
    )
    p.add(
        "Meter power (+ import)", [(f"lem_meter_power_watts{SEL}", "{{node}}")], unit="watt", w=12
    )
    p.add(
        "Community power",
        [
            (f"sum(clamp_min(lem_meter_power_watts{SEL}, 0))", "import"),
            (f"sum(clamp_max(lem_meter_power_watts{SEL}, 0))", "export"),
            (f"sum(lem_meter_power_watts{SEL})", "net"),
        ],
        unit="watt",
        w=12,
    )
    p.add("Last slot import", [(f"lem_slot_import_wh{SEL}", "{{node}}")], unit="watth", w=12)
    p.add("Last slot export", [(f"lem_slot_export_wh{SEL}", "{{node}}")], unit="watth", w=12)
    p.add(
        "Meter reads / failures",
        [
            (f"sum(rate(lem_meter_reads_total{SEL}[5m]))", "reads/s"),
            (
                f"sum by (reason) (rate(lem_meter_read_failures_total{SEL}[5m]))",
                "failed {{reason}}",
            ),
        ],
        unit="reqps",
    )
    p.add(
        "Last reading age",
        [(f"time() - lem_meter_last_read_timestamp_seconds{SEL}", "{{node}}")],
        unit="s",
    )
    p.add(
        "Meter read duration p90",
        [
            (
                quantile("0.9", "lem_meter_read_seconds", "le, node"),
                "{{node}}",
            )
        ],
        unit="s",
    )
    p.add("Slots closed (1 h)", [(f"sum(increase(lem_slots_closed_total{SEL}[1h]))", "slots")])
    p.add("Txs signed (1 h)", [(f"sum(increase(lem_txs_submitted_total{SEL}[1h]))", "txs")])
    p.add("Periods solved", [(f"max(lem_periods_solved_total{SEL})", "periods")], kind="stat")
    p.add("Balance", [(f"lem_balance_uect{SEL} / 1e6", "{{node}}")], unit="ECT", w=24)
    p.row("Community: MQTT")
    p.add("MQTT sent", [(f"rate(lem_mqtt_sent_bytes{SEL}[5m])", "{{node}}")], unit="Bps")
    p.add("MQTT received", [(f"rate(lem_mqtt_received_bytes{SEL}[5m])", "{{node}}")], unit="Bps")
    p.add(
        "MQTT bytes per day (in + out)",
        [
            (
                f"(rate(lem_mqtt_sent_bytes{SEL}[1h]) + "
                f"rate(lem_mqtt_received_bytes{SEL}[1h])) * 86400",
                "{{node}}",
            )
        ],
        unit="bytes",
    )
    p.add("MQTT connected", [(f"lem_mqtt_connected{SEL}", "{{node}}")])
    p.add("MQTT reconnects (1 h)", [(f"increase(lem_mqtt_reconnects_total{SEL}[1h])", "{{node}}")])
    p.add(
        "Errors by component",
        [(f"sum by (component) (rate(lem_errors_total{SEL}[5m]))", "{{component}}")],
    )


def resources(p: Layout) -> None:
    p.row("Node resources")
    p.add(
        "Process CPU (% of one core)",
        [(f"rate(lem_process_cpu_seconds{SEL}[5m]) * 100", "{{node}}")],
        unit="percent",
        w=12,
        description="Target: <= 0.3 % of one core (issue 6, Benchmarks).",
    )
    p.add(
        "Private memory (USS)",
        [(f"lem_process_private_memory_bytes{SEL}", "{{node}} ({{role}})")],
        unit="bytes",
        w=12,
        description="Targets: validator <= 40 MB, member <= 30 MB.",
    )
    p.add(
        "Resident memory (RSS)",
        [(f"lem_process_resident_memory_bytes{SEL}", "{{node}}")],
        unit="bytes",
    )
    p.add("Open file descriptors", [(f"lem_process_open_fds{SEL}", "{{node}}")])
    p.add("Uptime", [(f"time() - lem_start_timestamp_seconds{SEL}", "{{node}}")], unit="s")
    p.add("System CPU", [(f"lem_system_cpu_ratio{SEL}", "{{node}}")], unit="percentunit")
    p.add(
        "System memory available",
        [
            (f"lem_system_memory_available_bytes{SEL}", "available {{node}}"),
            (f"lem_system_memory_total_bytes{SEL}", "total {{node}}"),
        ],
        unit="bytes",
    )
    p.add("Data partition free", [(f"lem_system_disk_free_bytes{SEL}", "{{node}}")], unit="bytes")
    p.add(
        "SoC temperature",
        [(f"lem_system_temperature_celsius{SEL}", "{{node}}")],
        unit="celsius",
        w=24,
        description="Only on boards that expose a thermal sensor.",
    )


def dashboard() -> dict[str, Any]:
    """The dashboard document (Grafana JSON model, schema 39)."""
    layout = Layout()
    community(layout)
    resources(layout)
    return {
        "uid": "lem-edge-community",
        "title": "lem-edge community",
        "description": "Local energy market: ledger, meters, outbox, MQTT, market, resources.",
        "tags": ["lem-edge"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                {
                    "name": "node",
                    "label": "Node",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": "label_values(lem_ledger_height, node)", "refId": "nodes"},
                    "definition": "label_values(lem_ledger_height, node)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "annotations": {"list": []},
        "panels": layout.panels,
    }


def render() -> str:
    """The committed file's exact text."""
    return json.dumps(dashboard(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
