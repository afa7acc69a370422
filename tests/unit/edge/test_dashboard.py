"""The Grafana dashboards query only metrics lemd exports, the committed JSON is current, and
the community dashboard and the metrics labels reveal no household (docs/privacy.md §3)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import edge.metrics
from edge.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "grafana"
NAME = re.compile(r"\blem_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_dashboard", GRAFANA / "make_dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exported_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every series name a scrape can carry, labelled families without samples included."""
    # The temperature gauge exists only on boards with a sensor; pretend to be one.
    monkeypatch.setattr(edge.metrics, "_cpu_temperature_c", lambda: 47.5)
    text = Metrics(tmp_path).render().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def queried(node: Any) -> list[str]:
    """Every PromQL expression in the dashboard (panel targets and variable queries)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(queried(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(queried(item))
    return found


def test_every_queried_metric_exists_in_the_exposition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each lem_* name in a panel or variable query is a series edge.metrics renders."""
    exprs = [
        expr
        for name in ("lem-edge-dashboard.json", "lem-edge-node-dashboard.json")
        for expr in queried(json.loads((GRAFANA / name).read_text()))
    ]
    used = {name for expr in exprs for name in NAME.findall(expr)}
    assert len(exprs) >= 70
    missing = sorted(used - exported_names(tmp_path, monkeypatch))
    assert missing == []
    # The overview and the resource rows cover what issue 6 asks the dashboard to show.
    for name in (
        "lem_ledger_height",
        "lem_outbox_records",
        "lem_meter_power_watts",
        "lem_slot_import_wh",
        "lem_mqtt_sent_bytes",
        "lem_periods_solved_total",
        "lem_balance_uect",
        "lem_process_cpu_seconds",
        "lem_process_private_memory_bytes",
        "lem_process_open_fds",
        "lem_system_disk_free_bytes",
        "lem_system_temperature_celsius",
    ):
        assert name in used, name


def test_a_misspelt_metric_would_be_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The name check is not vacuous: a histogram base name or a typo is not exported."""
    names = exported_names(tmp_path, monkeypatch)
    assert "lem_ledger_commit_seconds_bucket" in names
    assert "lem_meter_read_failures_total" in names  # labelled, no sample yet
    assert "lem_ledger_hieght" not in names
    assert "lem_periods_solved_total_total" not in names


def test_committed_dashboards_are_the_generator_output() -> None:
    """Both committed dashboards equal make_dashboard.py's output (no hand drift)."""
    gen = generator()
    documents = gen.dashboards()
    assert sorted(documents) == ["lem-edge-dashboard.json", "lem-edge-node-dashboard.json"]
    for name, document in documents.items():
        assert (GRAFANA / name).read_text() == gen.render(document), name


@pytest.mark.parametrize("which", ["lem-edge-dashboard.json", "lem-edge-node-dashboard.json"])
def test_panels_are_well_formed(which: str) -> None:
    """Unique panel ids, every query on the datasource variable, balanced PromQL, no overlap."""
    dashboard = generator().dashboards()[which]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        own = {(g["y"] + dy, g["x"] + dx) for dy in range(g["h"]) for dx in range(g["w"])}
        assert not own & cells, panel["title"]
        cells |= own
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            expr = target["expr"]
            for a, b in ("()", "[]", "{}"):
                assert expr.count(a) == expr.count(b), expr


def test_provisioning_examples_point_at_the_dashboard() -> None:
    """The datasource uid and the dashboard folder of the provisioning examples fit together."""
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/lem-edge.yaml").read_text())
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/lem-edge.yaml").read_text())
    assert ds["apiVersion"] == prov["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus"
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    scrape = yaml.safe_load((GRAFANA / "provisioning/prometheus.example.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["file_sd_configs"][0]["files"]


PERSONAL = re.compile(r"\b(lem_meter_power_watts|lem_slot_(import|export)_wh|lem_balance_uect)\b")
GUARD = re.compile(r"^sum\((.*)\) and on\(\) \(count\((lem_[a-z_]+)\) >= (\d+)\)$")


def _targets(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in document["panels"] for t in p.get("targets", [])]


def personal_leaks(document: dict[str, Any]) -> list[str]:
    """Panels of ``document`` that show one household's energy or money: a personal metric
    outside a guarded sum over all nodes, or narrowed by node, or legend per node."""
    leaks = []
    for title, target in _targets(document):
        expr = target["expr"]
        if not PERSONAL.search(expr):
            continue
        m = GUARD.match(expr)
        ok = (
            m is not None
            and int(m.group(3)) >= 3
            and PERSONAL.search(m.group(2)) is not None
            and "node" not in expr
            and " by " not in expr
            and "without" not in expr
            and "{{node}}" not in target["legendFormat"]
        )
        if not ok:
            leaks.append(f"{title}: {expr}")
    return leaks


def test_community_dashboard_has_no_per_node_energy_or_balance() -> None:
    """The shipped community dashboard charts energy only as sums over all nodes that stay
    blank below 3 meters; the node dashboard does chart it per node (the scan finds that)."""
    community = json.loads((GRAFANA / "lem-edge-dashboard.json").read_text())
    node = json.loads((GRAFANA / "lem-edge-node-dashboard.json").read_text())
    assert personal_leaks(community) == []
    assert any(PERSONAL.search(t["expr"]) for _, t in _targets(community))  # aggregates shown
    leaked = personal_leaks(node)
    assert any(x.startswith("Meter power") for x in leaked)
    assert any(x.startswith("Balance") for x in leaked)
    assert node["templating"]["list"][1]["multi"] is False


ALLOWED_LABELS = {"reason", "component", "phase", "le"}
"""Label names lemd may export: none can hold a serial, pseudonym, account or person."""


def test_metrics_exposition_carries_no_identifying_labels(tmp_path: Path) -> None:
    """A scrape of lemd's metrics, with every labelled family in use (the join phase gauge
    included), has only the reviewed label names, and no value holds a meter id or account."""
    from edge.join import _phase_gauge
    from meters.reading import MeterError

    metrics = Metrics(tmp_path)
    metrics.meter_read_failures.labels(reason=type(MeterError()).__name__).inc()
    metrics.errors.labels(component="ledger").inc()
    _phase_gauge(metrics.registry).labels(phase="measuring").set(1)
    text = metrics.render().decode()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    assert set(labels) <= ALLOWED_LABELS, sorted(set(labels) - ALLOWED_LABELS)
    assert {"reason", "component", "phase"} <= set(labels)  # the scan saw the labelled ones
    values = " ".join(v for vs in labels.values() for v in vs)
    assert not re.search(r"ps-[0-9a-f]{32}|[0-9a-f]{64}|lic-h\d\d", values)
