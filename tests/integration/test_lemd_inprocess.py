"""lemd in one process with real stores and tasks: outages, stuck parts, REST access rules."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.cli.main import main as cli_main
from edge.clock import DaemonClock
from edge.config import Config
from edge.health import Health
from edge.http import request
from edge.ledger_node import SingleLedger
from edge.metrics import CONTENT_TYPE
from edge.node_factory import Opened, open_ledger
from ledger import block as blk
from ledger import tx as txm
from ledger.keys import SigningKey
from ledger.tx import Tx
from meters.reading import Reading
from tests.support.lemd import NodeDir, free_port, make_node, running_daemon, until

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[2] / "README.md"


class OutageLedger:
    """A ledger node behind a link that can go down: while down, submitted txs are accepted
    locally but never reach a validator (lost), as with a 4G outage."""

    def __init__(self, inner: SingleLedger) -> None:
        self.inner = inner
        self.app, self.mempool, self.mode = inner.app, inner.mempool, inner.mode
        self.down = False
        self.lost = 0

    @property
    def role(self) -> str:
        return self.inner.role

    def submit(self, raw: bytes) -> Tx:
        if self.down:
            self.lost += 1
            return txm.decode(raw)
        return self.inner.submit(raw)

    def peers(self) -> int:
        return 0

    def resend(self, raws: list[bytes]) -> None:
        self.inner.resend(raws)

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    async def run(self) -> None:
        await self.inner.run()

    async def close(self) -> None:
        await self.inner.close()


def wrapping(wrap: Any) -> Any:
    async def factory(
        config: Config, key: SigningKey, clock: DaemonClock, health: Health
    ) -> Opened:
        node, stats, closers = await open_ledger(config, key, clock, health)
        assert isinstance(node, SingleLedger)
        return wrap(node), stats, closers

    return factory


def committed(node: Any) -> list[tuple[str, int]]:
    """(meter, slot ms) of every committed SetMeasure, in chain order."""
    store = node.app.store
    out = []
    for height in range(1, store.height + 1):
        for raw in blk.decode(store.block(height) or b"").txs:
            tx = txm.decode(raw)
            if tx.kind == "SetMeasure":
                out.append((tx.body["meter_id"], tx.body["slot_start_ms"]))
    return out


async def test_a_day_of_outage_then_recovery_submits_every_slot_exactly_once(
    tmp_path: Path,
) -> None:
    """Slots closed during a (simulated) day without link are all committed after it, none
    twice, none lost, the outbox drains; lost txs are re-signed after the resign timeout."""
    node = make_node(tmp_path / "n1", speed=21_600.0, period_hours=48, periods=2)
    holder: list[OutageLedger] = []

    def wrap(inner: SingleLedger) -> OutageLedger:
        holder.append(OutageLedger(inner))
        return holder[0]

    async with running_daemon(node, node_factory=wrapping(wrap)) as daemon:
        parts = daemon.parts
        assert parts is not None
        assert parts.meter is not None
        ledger = holder[0]
        await until(lambda: len(committed(ledger)) >= 4, 20, "first slots committed")
        ledger.down = True
        written = parts.meter.records_written
        await until(lambda: parts.meter.records_written >= written + 96, 30, "a day of slots")
        # 4 s > resign_timeout_s = 3: the lost txs were re-signed (and lost again)
        await until(lambda: parts.signer.resets >= 1, 5, "re-signed after the timeout")
        ledger.down = False
        outbox = parts.outbox
        backlog = parts.meter.records_written
        await until(lambda: len(committed(ledger)) >= backlog, 30, "the backlog committed")
        assert ledger.lost > 0
        rows = committed(ledger)
        waiting = [(r.meter_id, r.slot_start_s * 1000) for r in outbox.pending()]
        assert outbox.rejected() == []
    assert len(rows) == len(set(rows)), "a slot was committed twice"
    slots = sorted({s for _, s in rows + waiting})  # committed, maybe not yet marked so
    assert slots == list(range(slots[0], slots[-1] + 900_000, 900_000)), "a slot was lost"


class StuckLedger(OutageLedger):
    """A ledger node whose loop hangs (a wedged disk write, say): it never makes a block."""

    async def run(self) -> None:
        await asyncio.Event().wait()


async def test_a_stuck_ledger_does_not_stop_the_meter_loop(tmp_path: Path) -> None:
    """With the ledger wedged, slots keep entering the outbox and the ledger health goes stale
    while the meter's stays fresh (so the watchdog would stop petting)."""
    node = make_node(tmp_path / "n1", speed=3_600.0)
    holder: list[StuckLedger] = []

    def wrap(inner: SingleLedger) -> StuckLedger:
        holder.append(StuckLedger(inner))
        return holder[0]

    async with running_daemon(node, node_factory=wrapping(wrap)) as daemon:
        parts = daemon.parts
        assert parts is not None
        assert parts.meter is not None
        await until(lambda: parts.outbox.depth() >= 8, 20, "slots pile up in the outbox")
        assert holder[0].app.height == 0
        parts.health.require("ledger", 1.0)  # the daemon allows 30 s; the test 1 s
        assert "ledger" in parts.health.stale()
        assert "meter" not in parts.health.stale()


class DeadMeter:
    """A meter driver whose read never answers (an unplugged probe mid-frame)."""

    def __init__(self) -> None:
        self.calls = 0

    async def read(self) -> Reading:
        self.calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        return None


async def test_a_hanging_meter_does_not_stop_the_ledger(tmp_path: Path) -> None:
    """With every meter read hanging, the ledger still commits (a period is settled through
    the API) and the meter task keeps trying after each read timeout."""
    node = make_node(tmp_path / "n1", speed=3_600.0, period_hours=1)
    meter = DeadMeter()
    async with running_daemon(node, driver=meter) as daemon:
        parts = daemon.parts
        assert parts is not None
        assert parts.meter is not None
        parts.meter.read_timeout_s = 0.2
        await until(lambda: meter.calls >= 3, 10, "the meter is retried after timeouts")
        status, answer = await request(node.api, "POST", "/solve", {"period_id": "p0"})
        assert status == 202, answer
        await until(lambda: parts.queries.periods()["p0"]["solved"], 10, "p0 settled")
        assert parts.meter.last_error


async def test_rest_access_rules_on_a_prosumer_node(tmp_path: Path) -> None:
    """A prosumer node: 403 for admin operations and another member's measurements; its own
    measurements, totals, params, balance and Prometheus metrics are served."""
    metrics_listen = f"127.0.0.1:{free_port()}"
    node = make_node(tmp_path / "n1", speed=3_600.0, metrics_listen=metrics_listen)
    other = SigningKey.generate().public_key.hex()
    async with running_daemon(node) as daemon:
        parts = daemon.parts
        assert parts is not None
        await until(lambda: parts.submitter.committed_records >= 2, 20, "own slots committed")
        api = node.api
        for method, path, body in (
            ("POST", "/meters", {"meter_id": "new-1", "account": other}),
            ("POST", "/meters/remove", {"meter_id": node.meter_id}),
            ("DELETE", f"/meters?meter={node.meter_id}", None),
            ("POST", "/params", {"period_id": "x", "start_ms": 0, "end_ms": 1, "params": {}}),
        ):
            status, answer = await request(api, method, path, body)
            assert status == 403, (path, answer)
            assert "admin key" in answer["error"]
        status, answer = await request(api, "GET", "/measure?meter=lic-h05&from=0&to=9999999999999")
        assert status == 403
        assert "not one of the viewer's meters" in answer["error"]
        status, answer = await request(api, "GET", "/measure?from=0&to=9999999999999")
        assert status == 200
        assert answer["slots"]
        status, answer = await request(api, "GET", "/meters")
        assert (status, answer) == (200, {"meters": [node.meter_id, "lic-h05"]})  # ids, no owners
        status, answer = await request(api, "GET", "/totals?period=p0")
        assert status == 200
        assert all(s["meters"] == 1 for s in answer["slots"])
        status, answer = await request(api, "GET", "/params?period=p0")
        assert status == 200
        assert answer["params"]["p_buy_bau"] == "21"
        status, answer = await request(api, "POST", "/measure", {
            "meter_id": "lic-h05", "slot_start_ms": 0, "import_wh": 1, "export_wh": 0,
        })  # fmt: skip
        assert status == 403
        status, answer = await request(api, "GET", "/balance")
        assert status == 200
        assert answer["account"] == node.key.public_key.hex()
        for listen in (api, metrics_listen):  # on the API and on metrics.listen
            metrics = await _get_raw(listen, "/metrics")
            assert f"Content-Type: {CONTENT_TYPE}".encode() in metrics
            assert b"lem_ledger_height" in metrics
            assert b"lem_outbox_records" in metrics
        status, _ = await request(metrics_listen, "GET", "/status")
        assert status == 404  # the metrics address serves metrics only


async def test_admin_node_adds_and_removes_a_meter(tmp_path: Path) -> None:
    """On the admin's node, POST /meters and /meters/remove commit AddMeter / RemoveMeter and
    GET /meters lists accounts."""
    node = make_node(tmp_path / "n1", speed=900.0, admin_is_node=True)
    other = SigningKey.generate().public_key.hex()
    async with running_daemon(node) as daemon:
        parts = daemon.parts
        assert parts is not None
        status, answer = await request(
            node.api, "POST", "/meters", {"meter_id": "new-1", "account": other}
        )
        assert status == 202, answer
        await until(lambda: "new-1" in parts.queries.meter_ids(node.key.public_key), 10, "added")
        status, answer = await request(node.api, "GET", "/meters")
        assert answer["meters"]["new-1"] == other
        status, answer = await request(node.api, "POST", "/meters/remove", {"meter_id": "new-1"})
        assert status == 202, answer
        await until(lambda: "new-1" not in parts.queries.meter_ids(node.key.public_key), 10, "gone")


async def _get_raw(listen: str, path: str) -> bytes:
    host, _, port = listen.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


_ = NodeDir


async def test_readme_lemctl_node_commands_run_as_written(tmp_path: Path) -> None:
    """Each `lemctl --config …` line of the README's lemd section works against a running node
    (config and period swapped for the test node's)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## The node daemon `lemd` and `lemctl`", 1)[1].split("\n## ", 1)[0]
    lines = [
        ln.split("#")[0].split()
        for ln in section.splitlines()
        if ln.startswith("lemctl --config /etc/lemd/lemd.toml ")
    ]
    assert len(lines) >= 7
    node = make_node(tmp_path / "n1", speed=900.0)
    async with running_daemon(node) as daemon:
        assert daemon.parts is not None
        await until(lambda: daemon.parts.node.app.height >= 1, 10, "a first block")  # type: ignore[union-attr]
        for argv in lines:
            args = [str(node.config) if a == "/etc/lemd/lemd.toml" else a for a in argv[1:]]
            args = ["p0" if a == "2026-05-15" else a for a in args]
            if "ledger" in args:  # LMDB allows one open of an environment per process
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "edge.cli.main", *args, cwd=README.parent
                )
                assert await proc.wait() == 0, args
            else:
                assert await asyncio.to_thread(cli_main, args) == 0, args
