"""lemd as a real process: systemd notify protocol, measurements end to end, restart, lemctl.

Each test starts ``python -m edge.daemon`` on a fresh single-validator node with a simulated
meter on an accelerated clock (900x: one 15-min slot per real second), under a fake
NOTIFY_SOCKET that is a real Unix datagram socket bound by the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.cli.main import main as cli_main
from edge.outbox import Outbox
from ledger import block as blk
from ledger import codec
from ledger import tx as txm
from ledger.errors import StoreError
from ledger.store import Store
from tests.support.lemd import NodeDir, make_node

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


class Notify:
    """The fake systemd side: a bound AF_UNIX datagram socket collecting notify messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[str]:
        """Every datagram waiting now (non-blocking)."""
        self.sock.setblocking(False)
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        self.messages += [(time.monotonic(), m) for m in out]
        return out

    def wait_for(self, field: str, timeout_s: float) -> str:
        """Block until a datagram containing ``field`` arrives; return it."""
        deadline = time.monotonic() + timeout_s
        self.sock.setblocking(True)
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), message))
            if field in message.split("\n"):
                return message
        raise AssertionError(f"no {field} within {timeout_s} s; got {self.messages[-5:]}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notify]:
    n = Notify(tmp_path / "notify.sock")
    yield n
    n.close()


def start(
    node: NodeDir, notify: Notify | None, watchdog_usec: int = 1_000_000
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify.path)
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return subprocess.Popen(
        [sys.executable, "-m", "edge.daemon", "--config", str(node.config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def lemctl(node: NodeDir, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "--config", str(node.config), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def status(node: NodeDir) -> dict[str, object]:
    result = lemctl(node, "status", "--json")
    assert result.returncode == 0, result.stderr
    value: dict[str, object] = json.loads(result.stdout)
    return value


def wait_until(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout_s} s: {what}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=15)


def committed_measures(store_dir: Path) -> list[tuple[str, int]]:
    """(meter id, slot start ms) of every SetMeasure tx in every committed block, in order."""
    store = Store(store_dir, readonly=True)
    try:
        out = []
        for height in range(1, store.height + 1):
            block = blk.decode(store.block(height) or b"")
            for raw in block.txs:
                tx = txm.decode(raw)
                if tx.kind == "SetMeasure":
                    out.append((tx.body["meter_id"], tx.body["slot_start_ms"]))
        return out
    finally:
        store.close()


def ledger_rows(store_dir: Path, meter_id: str) -> dict[int, list[int]]:
    store = Store(store_dir, readonly=True)
    try:
        with store.state_reader() as base:
            return {
                int(k[5:18]): codec.decode(v)[:3]
                for k, v in base.scan(b"meas/", b"meas0")
                if k[19:].decode() == meter_id
            }
    finally:
        store.close()


def test_notify_protocol_watchdog_freeze_and_clean_stop(
    tmp_path: Path, notify: Notify, capsys: pytest.CaptureFixture[str]
) -> None:
    """READY, regular WATCHDOG pings that stop while frozen and resume, STOPPING and exit 0;
    lemctl status works while it runs and says "not running" (exit 3) after."""
    node = make_node(tmp_path / "n1")
    proc = start(node, notify)
    try:
        ready = notify.wait_for("READY=1", 30)
        assert any(line.startswith("STATUS=height ") for line in ready.split("\n"))
        for _ in range(3):  # WATCHDOG_USEC = 1 s: a ping every 0.5 s
            notify.wait_for("WATCHDOG=1", 3)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)
        notify.drain()
        time.sleep(2.0)
        assert notify.drain() == [], "a frozen process must not ping"
        proc.send_signal(signal.SIGCONT)
        notify.wait_for("WATCHDOG=1", 5)
        doc = status(node)
        assert doc["role"] == {"access": "prosumer", "consensus": "validator", "mode": "single"}
        for name in (
            "height",
            "hash",
            "app_hash",
            "peers",
            "mempool",
            "meter",
            "outbox",
            "resources",
        ):
            assert name in doc
        assert cli_main(["--config", str(node.config), "status"]) == 0
        human = capsys.readouterr().out
        assert "height" in human
        assert "outbox" in human
        notify.drain()
        assert stop(proc) == 0
        notify.wait_for("STOPPING=1", 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert cli_main(["--config", str(node.config), "status"]) == 3
    assert "not running" in capsys.readouterr().err


def test_slots_reach_the_ledger_and_survive_kill_9_exactly_once(tmp_path: Path) -> None:
    """Accelerated slots are committed and leave the outbox; after kill -9 and a restart no
    acknowledged record is lost and no slot is committed twice; slots stay contiguous."""
    node = make_node(tmp_path / "n1", speed=1_800.0)
    ledger_dir, meter = node.data_dir / "ledger", node.meter_id
    proc = start(node, None)
    try:
        wait_until(lambda: len(ledger_rows_safe(ledger_dir, meter)) >= 6, 40, "6 slots committed")
        proc.kill()  # SIGKILL: no flush, no goodbye
        proc.wait(timeout=10)
        box = Outbox(node.data_dir / "outbox")
        acknowledged = {r.slot_start_s * 1000 for r in box.pending()}
        box.close()
        before = ledger_rows(ledger_dir, meter)
        proc = start(node, None)
        wait_until(
            lambda: len(ledger_rows_safe(ledger_dir, meter)) >= len(before) + 6,
            40,
            "6 more slots committed after the restart",
        )
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = ledger_rows(ledger_dir, meter)
    box = Outbox(node.data_dir / "outbox")
    waiting = {r.slot_start_s * 1000 for r in box.pending()}
    rejected = box.rejected()
    box.close()
    assert rejected == []
    assert acknowledged <= set(rows) | waiting, "an acknowledged record was lost"
    assert all(rows[s] == v for s, v in before.items()), "a committed slot changed"
    slots = sorted(set(rows) | waiting)
    assert slots == list(range(slots[0], slots[-1] + 900_000, 900_000)), "a slot is missing"
    measures = committed_measures(ledger_dir)
    assert len(measures) == len(set(measures)) == len(rows), "a slot was committed twice"


def ledger_rows_safe(ledger_dir: Path, meter_id: str) -> dict[int, list[int]]:
    try:
        return ledger_rows(ledger_dir, meter_id)
    except StoreError:  # not created yet by the daemon
        return {}


def test_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    """A bad value stops lemd at once with exit status 2 and the field, value and file."""
    node = make_node(tmp_path / "n1")
    text = node.config.read_text().replace(
        'driver = "sim"', 'driver = "sim"\npoll_interval_s = 0', 1
    )
    text = text.replace("poll_interval_s = 0.5\n", "", 1)
    node.config.write_text(text)
    proc = start(node, None)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    message = err.decode()
    assert "meter.poll_interval_s = 0.0" in message
    assert str(node.config) in message


def test_missing_genesis_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    """An empty store without a genesis file is a start-up error naming node.genesis_file."""
    node = make_node(tmp_path / "n1")
    node.config.write_text(node.config.read_text().replace('genesis_file = "genesis.json"\n', ""))
    proc = start(node, None)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "node.genesis_file is required" in err.decode()


def test_api_address_in_use_exits_2_naming_it(tmp_path: Path) -> None:
    """Another process on api.listen: exit 2 with the field and the address, stores closed."""
    node = make_node(tmp_path / "n1")
    host, _, port = node.api.rpartition(":")
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        proc = start(node, None)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"api.listen = '{node.api}': cannot listen" in err.decode()
