"""Write the two Grafana dashboards: the community's (aggregates) and a node's own.

Run ``.venv/bin/python grafana/make_dashboard.py`` after changing a panel; the test
tests/unit/edge/test_dashboard.py checks that the committed JSON is this script's output, that
every ``lem_*`` metric a panel queries exists in edge.metrics' exposition, and that the community
dashboard shows no household's energy or balance (seed 000 Fig. 4; docs/privacy.md §3).

- ``lem-edge-dashboard.json`` (uid ``lem-edge-community``), for every member: per node only
  operational figures (ledger, outbox, meter health, MQTT, resources); energy as community
  aggregates only, over every node whatever the ``node`` filter says, and blank while fewer than
  ``MIN_NODES`` meters report (a sum over one or two meters is a household's load profile).
- ``lem-edge-node-dashboard.json`` (uid ``lem-edge-node``), for one node's operator: that node's
  meter power, last slot energies and balance, plus its health. Point it at a Prometheus that
  scrapes only that node.

Targets are expected to carry the labels ``node`` (node name) and ``role`` (validator | member),
as in the Prometheus file_sd targets ``lemctl testnet init`` writes and in
grafana/provisioning/prometheus.example.yml.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
COMMUNITY_FILE, NODE_FILE = "lem-edge-dashboard.json", "lem-edge-node-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = '{node=~"$node"}'
WIDTH = 24
MIN_NODES = 3
"""Community energy panels stay blank below this many reporting meters."""
PERSONAL = ("lem_meter_power_watts", "lem_slot_import_wh", "lem_slot_export_wh", "lem_balance_uect")
"""A household's energy or money: per node only on the node dashboard."""


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


def community_sum(expr: str, metric: str) -> str:
    """``sum(expr)`` over every node, or nothing while fewer than MIN_NODES series of
    ``metric`` exist (no node filter: a viewer cannot narrow the sum to one household)."""
    return f"sum({expr}) and on() (count({metric}) >= {MIN_NODES})"


def ledger(p: Layout) -> None:
    p.row("Ledger")
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
            (quantile("0.5", "lem_ledger_commit_seconds", "le"), "p50"),
            (quantile("0.9", "lem_ledger_commit_seconds", "le"), "p90"),
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


def meter_health(p: Layout) -> None:
    """Whether meters and outboxes work: counts and ages, no energy."""
    p.add("Outbox depth", [(f"lem_outbox_records{SEL}", "{{node}}")], w=12)
    p.add(
        "Outbox oldest record age",
        [(f"lem_outbox_oldest_age_seconds{SEL}", "{{node}}")],
        unit="s",
        w=12,
    )
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
        [(quantile("0.9", "lem_meter_read_seconds", "le, node"), "{{node}}")],
        unit="s",
    )
    p.add("Slots closed (1 h)", [(f"sum(increase(lem_slots_closed_total{SEL}[1h]))", "slots")])
    p.add("Txs signed (1 h)", [(f"sum(increase(lem_txs_submitted_total{SEL}[1h]))", "txs")])
    p.add("Periods solved", [(f"max(lem_periods_solved_total{SEL})", "periods")], kind="stat")


def community_energy(p: Layout) -> None:
    p.row("Community: energy (aggregates only)")
    power = "lem_meter_power_watts"
    note = f"All nodes; blank with fewer than {MIN_NODES} meters reporting."
    p.add(
        "Community power",
        [
            (community_sum(f"clamp_min({power}, 0)", power), "import"),
            (community_sum(f"clamp_max({power}, 0)", power), "export"),
            (community_sum(power, power), "net"),
        ],
        unit="watt",
        w=12,
        description=note,
    )
    p.add(
        "Community last slot import / export",
        [
            (community_sum("lem_slot_import_wh", "lem_slot_import_wh"), "import"),
            (community_sum("lem_slot_export_wh", "lem_slot_export_wh"), "export"),
        ],
        unit="watth",
        w=12,
        description=note,
    )
    p.row("Community: meters and market")
    meter_health(p)


def node_energy(p: Layout) -> None:
    p.row("This node: energy and market")
    p.add(
        "Meter power (+ import)", [(f"lem_meter_power_watts{SEL}", "{{node}}")], unit="watt", w=12
    )
    p.add("Balance", [(f"lem_balance_uect{SEL} / 1e6", "{{node}}")], unit="ECT", w=12)
    p.add("Last slot import", [(f"lem_slot_import_wh{SEL}", "{{node}}")], unit="watth", w=12)
    p.add("Last slot export", [(f"lem_slot_export_wh{SEL}", "{{node}}")], unit="watth", w=12)
    p.row("This node: meter and outbox")
    meter_health(p)


def mqtt(p: Layout) -> None:
    p.row("MQTT")
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


def _node_variable(multi: bool) -> dict[str, Any]:
    variable: dict[str, Any] = {
        "name": "node",
        "label": "Node",
        "type": "query",
        "datasource": DS,
        "query": {"query": "label_values(lem_ledger_height, node)", "refId": "nodes"},
        "definition": "label_values(lem_ledger_height, node)",
        "includeAll": multi,
        "multi": multi,
        "refresh": 2,
    }
    if multi:
        variable |= {"allValue": ".*", "current": {"text": "All", "value": "$__all"}}
    else:
        variable["current"] = {}
    return variable


def _document(
    uid: str, title: str, description: str, layout: Layout, multi: bool
) -> dict[str, Any]:
    """A dashboard document (Grafana JSON model, schema 39)."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
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
                _node_variable(multi),
            ]
        },
        "annotations": {"list": []},
        "panels": layout.panels,
    }


def community_dashboard() -> dict[str, Any]:
    """For every member: operational figures per node, energy as community aggregates."""
    layout = Layout()
    ledger(layout)
    community_energy(layout)
    mqtt(layout)
    resources(layout)
    return _document(
        "lem-edge-community", "lem-edge community",
        "Local energy market: ledger, community energy (aggregates only), meters, outbox, MQTT, "
        "resources. No household's energy or balance (docs/privacy.md §3).",
        layout, multi=True,
    )  # fmt: skip


def node_dashboard() -> dict[str, Any]:
    """For one node's operator: its energy, balance and health."""
    layout = Layout()
    node_energy(layout)
    ledger(layout)
    mqtt(layout)
    resources(layout)
    return _document(
        "lem-edge-node", "lem-edge node",
        "One node's own meter power, slot energies and balance, and its health. Use with a "
        "Prometheus that scrapes only this node (docs/privacy.md §3).",
        layout, multi=False,
    )  # fmt: skip


def dashboards() -> dict[str, dict[str, Any]]:
    """File name (in grafana/) → dashboard document."""
    return {COMMUNITY_FILE: community_dashboard(), NODE_FILE: node_dashboard()}


def render(document: dict[str, Any]) -> str:
    """A committed file's exact text."""
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    for name, document in dashboards().items():
        (HERE / name).write_text(render(document))
        print(f"wrote {HERE / name}")
