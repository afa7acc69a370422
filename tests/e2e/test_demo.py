"""The community demo end to end: settles, audits, and leaves no process behind (end or Ctrl-C)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def processes_under(path: Path) -> list[psutil.Process]:
    """Live processes whose command line mentions ``path`` (nodes, broker config)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def demo(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "edge.demo", "--members", "6", "--validators", "4",
        "--hours", "2", "--no-progress", "--dir", str(tmp_path / "demo"), *extra,
    ]  # fmt: skip


def test_demo_settles_a_period_and_the_audit_agrees(tmp_path: Path) -> None:
    """A 2-hour period of 6 members is settled on the ledger and lemctl settle agrees."""
    done = subprocess.run(demo(tmp_path), capture_output=True, text=True, timeout=140, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "period 2026-05-15T00 (2026-05-15T00:00Z .. 2026-05-15T02:00Z)" in out
    assert "audit: OK" in out
    assert "consensus: 6 nodes hold the same block" in out
    assert "money conserved: members + community + grid = 0 µECT" in out
    for name in ("lic-h01", "lic-h06"):
        assert name in out
    assert processes_under(tmp_path) == []


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    """SIGINT while the nodes run: exit 130, the broker and all lemd processes are gone."""
    proc = subprocess.Popen(
        demo(tmp_path, "--speed", "60"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith("started "):
                break
        time.sleep(2.0)  # the nodes are up and connected to the broker
        children = psutil.Process(proc.pid).children(recursive=True)
        kinds = {" ".join(c.cmdline()) for c in children}
        assert sum("edge.daemon" in k for k in kinds) == 6
        assert any("mosquitto" in k or "edge.broker" in k for k in kinds)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # edge.demo dumps its threads' stacks to stderr
            time.sleep(1.0)
            proc.kill()
            _, err = proc.communicate()
            states = {}
            for child in children:
                with contextlib.suppress(psutil.Error):  # it may be gone by now
                    states[" ".join(child.cmdline()[-3:])] = child.status()
            pytest.fail(f"demo still running 30 s after SIGINT; children {states}\n{err[-8000:]}")
        assert code == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert processes_under(tmp_path) == []
