"""The testnet folder's own records: ``testnet.json`` (the manifest) and the Prometheus targets.

Spec: docs/spec/testnet.md. edge/testnet.py generates a testnet and writes these; the demo,
launchers, e2e tests and benches read the manifest back to drive the nodes. The time and TOML
string helpers are shared with edge/testnet.py's config writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "testnet.json"


class TestnetError(Exception):
    """A testnet that cannot be generated as asked (names the option and the value)."""

    __test__ = False  # not a pytest test class despite the name


@dataclass(frozen=True)
class NodeEntry:
    """One node of the manifest."""

    index: int
    name: str
    dir: str
    role: str
    meter_id: str
    public_key: str
    api: str
    metrics: str


@dataclass(frozen=True)
class Manifest:
    """``DIR/testnet.json``: what the demo, e2e tests and benches need to drive a testnet."""

    root: Path
    chain_id: str
    seed: int
    broker: str
    speed: float
    start: str
    anchor: str
    grace_s: int
    periods: tuple[dict[str, Any], ...]
    admin_public_key: str
    nodes: tuple[NodeEntry, ...]
    privacy: str = "open"

    def config_path(self, node: NodeEntry) -> Path:
        return self.root / node.dir / "lemd.toml"

    @property
    def admin_key_path(self) -> Path:
        return self.root / "admin" / "admin.key"

    @property
    def validators(self) -> tuple[NodeEntry, ...]:
        return tuple(n for n in self.nodes if n.role == "validator")


def save_manifest(manifest: Manifest) -> None:
    """Write ``DIR/testnet.json`` (sorted keys: byte-identical for the same plan)."""
    value = {
        "chain_id": manifest.chain_id,
        "seed": manifest.seed,
        "broker": manifest.broker,
        "speed": manifest.speed,
        "start": manifest.start,
        "anchor": manifest.anchor,
        "grace_s": manifest.grace_s,
        "periods": list(manifest.periods),
        "admin_public_key": manifest.admin_public_key,
        "nodes": [n.__dict__ for n in manifest.nodes],
    }
    if manifest.privacy != "open":  # absent for open: manifests stay as they were
        value["privacy"] = manifest.privacy
    (manifest.root / MANIFEST).write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")


def load_manifest(root: Path) -> Manifest:
    """Read ``DIR/testnet.json``.

    Raises:
        TestnetError: missing or malformed manifest.
    """
    path = root / MANIFEST
    try:
        v = json.loads(path.read_text())
        return Manifest(
            root=root,
            chain_id=v["chain_id"],
            seed=v["seed"],
            broker=v["broker"],
            speed=v["speed"],
            start=v["start"],
            anchor=v["anchor"],
            grace_s=v["grace_s"],
            periods=tuple(v["periods"]),
            admin_public_key=v["admin_public_key"],
            nodes=tuple(NodeEntry(**n) for n in v["nodes"]),
            privacy=v.get("privacy", "open"),
        )
    except OSError as exc:
        raise TestnetError(f"{path}: cannot read: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise TestnetError(f"{path}: not a testnet manifest ({type(exc).__name__}: {exc})") from exc


def set_anchor(manifest: Manifest, anchor: datetime) -> Manifest:
    """Pin every node's ``clock.anchor`` (and the manifest's) to ``anchor``.

    Accelerated nodes must share the anchor, or their simulated clocks disagree by
    (start-up difference × speed). Launchers call this just before starting the nodes.
    """
    if not manifest.start:
        raise TestnetError("a testnet on the real clock (--start now) has no anchor to set")
    text = toml_string(iso_utc(anchor))
    for node in manifest.nodes:
        path = manifest.config_path(node)
        lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("anchor = ")]
        at = lines.index("[clock]") + 1
        while at < len(lines) and lines[at].strip():
            at += 1
        lines.insert(at, f"anchor = {text}")
        path.write_text("\n".join(lines) + "\n")
    pinned = Manifest(**{**manifest.__dict__, "anchor": iso_utc(anchor)})
    save_manifest(pinned)
    return pinned


def prometheus_targets(manifest: Manifest) -> str:
    """Prometheus ``file_sd`` JSON: one target per node with labels ``node``, ``role``, ``chain``
    (the labels the grafana/ dashboards filter and name series by)."""
    groups = [
        {
            "targets": [n.metrics],
            "labels": {"node": n.name, "role": n.role, "chain": manifest.chain_id},
        }
        for n in manifest.nodes
    ]
    return json.dumps(groups, indent=1) + "\n"


def parse_time(value: str) -> datetime | None:
    """``value`` as an aware UTC time; "now" is the current time; None when it is not ISO 8601
    with an offset."""
    if value == "now":
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def iso_utc(value: datetime | None) -> str:
    """ISO 8601 text of ``value`` in UTC."""
    assert value is not None
    return value.astimezone(UTC).isoformat()


def toml_string(value: str) -> str:
    """A TOML basic string holding ``value``."""
    # JSON string escapes are valid TOML basic-string escapes for the ASCII text we write.
    return json.dumps(value)
