"""lemd in BFT mode (ledger/node.py): a validator and a member daemon on one transport.

In-process daemons (real stores, tasks, API) on the in-memory transport, whose partition is the
fault switch; and the same pair as real processes on a real mosquitto broker that is stopped
for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.bft import open_bft
from edge.clock import DaemonClock
from edge.config import Config
from edge.health import Health
from edge.http import request
from edge.node_factory import Opened, open_store
from ledger import block as blk
from ledger import tx as txm
from ledger.app import App
from ledger.consensus.clock import LoopClock
from ledger.consensus.evidence import ledger_verifier
from ledger.keys import SigningKey
from ledger.store import Store
from ledger.transport.memory import LinkFaults, MemoryNetwork
from tests.support.lemd import NodeDir, free_port, make_community, running_daemon, until
from tests.support.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def on_network(network: MemoryNetwork) -> Any:
    async def factory(
        config: Config, key: SigningKey, clock: DaemonClock, health: Health
    ) -> Opened:
        app = App(open_store(config), evidence_verifier=ledger_verifier)
        transport = network.transport(config.node.name)
        return await open_bft(config, key, clock, health, app, transport=transport)

    return factory


def measures(app: App, meter_id: str) -> list[int]:
    """Slot starts [ms] of every committed SetMeasure for ``meter_id``, in chain order."""
    out = []
    for height in range(1, app.height + 1):
        for raw in blk.decode(app.store.block(height) or b"").txs:
            tx = txm.decode(raw)
            if tx.kind == "SetMeasure" and tx.body["meter_id"] == meter_id:
                out.append(int(tx.body["slot_start_ms"]))
    return out


async def test_member_slots_cross_a_partition_exactly_once(tmp_path: Path) -> None:
    """A member's slots reach the validator's chain; cut off for 3 simulated hours, it
    keeps its records and, after healing, every slot is committed once and both nodes agree."""
    nodes, _ = make_community(
        tmp_path, ["lic-h03", "lic-h05"], validators=1, speed=3_600.0, solve_grace_s=172_800
    )  # no settlement here: a period solved while the member is cut off refuses its slots
    network = MemoryNetwork(LoopClock(), seed=7, faults=LinkFaults(min_delay_ms=2, max_delay_ms=2))
    factory = on_network(network)
    async with (
        running_daemon(nodes[0], node_factory=factory) as validator,
        running_daemon(nodes[1], node_factory=factory) as member,
    ):
        v, m = validator.parts, member.parts
        assert v is not None
        assert m is not None
        assert m.meter is not None
        assert (v.node.role, m.node.role) == ("validator", "member")
        await until(lambda: len(measures(v.node.app, "lic-h05")) >= 3, 30, "member slots commit")
        network.partition({"n0"}, {"n1"})
        written = m.meter.records_written
        await until(lambda: m.meter.records_written >= written + 12, 30, "3 h cut off")
        await until(lambda: m.signer.resets >= 1, 10, "in-flight txs re-sent after the timeout")
        assert m.node.stats()["resent_txs"] > 0  # own pending txs published again
        network.heal()
        backlog = m.meter.records_written
        await until(
            lambda: len(set(measures(v.node.app, "lic-h05"))) >= backlog, 40, "backlog committed"
        )
        height = v.node.app.height
        await until(lambda: m.node.app.height >= height, 20, "member follows")
        assert v.node.app.store.app_hash_at(height) == m.node.app.store.app_hash_at(height)
        assert m.outbox.rejected() == []
        slots = measures(v.node.app, "lic-h05")
    assert len(slots) == len(set(slots)), "a member slot was committed twice"
    ordered = sorted(slots)
    assert ordered == list(range(ordered[0], ordered[-1] + 900_000, 900_000)), "a slot was lost"


def _get(api: str, path: str) -> Any:
    status, value = asyncio.run(request(api, "GET", path, timeout_s=5))
    assert status == 200, value
    return value


def _committed(node: NodeDir) -> int:
    return int(_get(node.api, "/status")["submitter"]["committed_records"])


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, AssertionError, TimeoutError):
            if predicate():
                return
        time.sleep(0.3)
    raise AssertionError(f"not reached within {timeout_s} s: {what}")


def test_member_process_rides_out_a_stopped_mosquitto(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    """Two lemd processes on a real mosquitto: the broker is stopped for hours of simulated time
    and started again; the member's slots all reach the validator's chain, each once."""
    broker = mosquitto_factory()
    nodes, _ = make_community(
        tmp_path,
        ["lic-h03", "lic-h05"],
        validators=1,
        speed=3_600.0,
        solve_grace_s=172_800,
        brokers=(broker.url,),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "edge.daemon", "--config", str(n.config)],
            cwd=ROOT,
            stdout=(n.root / "lemd.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for n in nodes
    ]
    member = nodes[1]
    try:
        # The member runs light (the default): its records leave the outbox by inclusion proof.
        _wait(lambda: _committed(member) >= 3, 40, "member slots committed over MQTT")
        assert _get(member.api, "/status")["role"]["consensus"] == "member"
        broker.stop()
        time.sleep(3)  # three simulated hours without a broker
        assert _get(member.api, "/status")["outbox"]["depth"] >= 4
        broker.start()
        _wait(lambda: _get(member.api, "/status")["outbox"]["depth"] <= 2, 60, "backlog drained")
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(timeout=20) for proc in procs] == [0, 0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    store = Store(nodes[0].data_dir / "ledger", readonly=True)
    try:
        slots = measures(App(store), "lic-h05")
    finally:
        store.close()
    assert len(slots) == len(set(slots)), "a member slot was committed twice"
    ordered = sorted(slots)
    assert ordered == list(range(ordered[0], ordered[-1] + 900_000, 900_000)), "a slot was lost"


def test_ready_without_a_reachable_broker(tmp_path: Path) -> None:
    """READY=1 comes once the broker was tried, also when it cannot be reached; /status then
    shows the failed attempts and the node keeps metering into its outbox."""
    from tests.integration.test_lemd_process import Notify, start

    dead = f"mqtt://127.0.0.1:{free_port()}"
    nodes, _ = make_community(
        tmp_path, ["lic-h03", "lic-h05"], validators=2, speed=900.0, brokers=(dead,)
    )
    notify = Notify(tmp_path / "notify.sock")
    proc = start(nodes[0], notify)
    try:
        notify.wait_for("READY=1", 30)
        doc = _get(nodes[0].api, "/status")
        assert doc["mqtt"]["connected"] == 0
        assert doc["mqtt"]["connect_failures"] >= 1
        _wait(lambda: _get(nodes[0].api, "/status")["outbox"]["depth"] >= 2, 20, "metering goes on")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
