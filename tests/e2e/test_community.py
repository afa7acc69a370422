"""Multi-process community: 4 validators + 2 members as real lemd processes on a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from edge.launch import Community, wait_for
from edge.testnet import TestnetPlan, free_port_block, init_testnet
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SPEED = 900.0  # one 15-min slot per real second
SLOTS = 3


def lemctl(*argv: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


def block_at(community: Community, k: int, height: int) -> tuple[str, str]:
    """(block hash, app hash) of node k's store at ``height`` via ``lemctl ledger show``."""
    store = community.manifest.root / community.nodes[k].entry.dir / "data" / "ledger"
    shown = lemctl("ledger", "show", "--data-dir", str(store), "--height", str(height), "--json")
    return shown["hash"], shown["app_hash"]


@pytest.fixture
def community(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Community]:
    manifest = init_testnet(
        TestnetPlan(
            validators=4,
            members=6,
            out_dir=tmp_path / "testnet",
            broker=mosquitto.url,
            speed=SPEED,
            chain_id="e2e",
            base_port=free_port_block(12, first=34000),
        )
    )
    running = Community(manifest)
    running.anchor(lead_s=2.0)
    running.start()
    pids = running.pids()
    try:
        yield running
    finally:
        running.stop()
        assert [p for p in pids if psutil.pid_exists(p) and _alive(p)] == []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


LAST_SEEN: list[str] = []
"""One line per node from the latest status poll, for the message of a timeout."""


async def committed_everywhere(community: Community, slots: int) -> list[dict[str, Any]] | None:
    """Statuses once every node has ``slots`` of its own records committed, else None."""
    statuses = await community.statuses()
    LAST_SEEN[:] = [_summary(k, s) for k, s in enumerate(statuses)]
    if any(s is None for s in statuses):
        return None
    done = all(s["submitter"]["committed_records"] >= slots for s in statuses if s)
    return [s for s in statuses if s] if done else None


def _summary(k: int, status: dict[str, Any] | None) -> str:
    if status is None:
        return f"node{k}: no status answer"
    keys = ("height", "mempool", "peers")
    shown = {key: status.get(key) for key in keys}
    return f"node{k}: {shown} submitter {status.get('submitter')}"


async def test_nodes_agree_and_a_killed_validator_catches_up(community: Community) -> None:
    """Every node commits its slots and holds the same blocks; a kill -9'd validator rejoins."""
    try:
        statuses = await wait_for(
            lambda: committed_everywhere(community, SLOTS), 60, what="slots committed on all nodes"
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last seen:\n" + "\n".join(LAST_SEEN)) from exc
    assert community.exited() == []
    roles = [s["role"]["consensus"] for s in statuses]
    assert roles == ["validator"] * 4 + ["member"] * 2
    common = min(s["height"] for s in statuses)
    assert common >= 2
    views = {block_at(community, k, common) for k in range(4)}
    assert len(views) == 1  # one block hash and app hash at the common height on the validators
    for s in statuses[4:]:  # light members (the default): no block store, a verified header
        assert s["role"]["mode"] == "light"
        assert block_at(community, 0, s["height"])[0] == s["hash"]
    shown = lemctl("--config", str(community.manifest.config_path(community.nodes[4].entry)),
                   "status", "--json")  # fmt: skip
    assert shown["role"]["consensus"] == "member"
    assert shown["height"] >= common

    community.kill_node(1)  # SIGKILL: no shutdown, the sign-state and WAL must carry it
    before = max(s["height"] for s in statuses)

    async def progressed() -> int | None:
        s0 = (await community.statuses())[0]
        return s0["height"] if s0 and s0["height"] >= before + 2 else None

    reached = await wait_for(progressed, 30, what="3 of 4 validators keep committing")
    community.start_node(1)

    async def caught_up() -> bool:
        s1 = (await community.statuses())[1]
        return bool(s1 and s1["height"] >= reached)

    await wait_for(caught_up, 40, what="restarted validator catches up")
    assert block_at(community, 1, reached) == block_at(community, 0, reached)
    assert community.nodes[1].starts == 2
    assert community.exited() == []
    await asyncio.sleep(0)
