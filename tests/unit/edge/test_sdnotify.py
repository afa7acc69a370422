"""sd_notify datagrams and the health-gated watchdog, against a real Unix datagram socket."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from edge.health import Health, watchdog_loop
from edge.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_ready_status_and_stopping_reach_the_socket(notify_socket) -> None:
    """READY=1 with STATUS, and STOPPING=1, arrive as single datagrams."""
    path, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    assert notifier.ready("stores open")
    assert notifier.stopping()
    assert received(sock) == ["READY=1\nSTATUS=stores open", "STOPPING=1\nSTATUS=stopping"]


def test_without_notify_socket_nothing_is_sent() -> None:
    """Outside systemd the notifier is a no-op that says so."""
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")


def test_watchdog_interval_is_for_this_pid_only() -> None:
    """WATCHDOG_USEC counts only when WATCHDOG_PID is absent or ours."""
    mine = Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    other = Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert mine.watchdog_interval_s == 30.0
    assert other.watchdog_interval_s is None


async def test_pings_flow_while_healthy_and_stop_when_a_task_is_stale(notify_socket) -> None:
    """WATCHDOG=1 is sent each interval only while every essential task beats."""
    path, sock = notify_socket
    health = Health()
    health.require("meter", max_age_s=0.15)
    task = asyncio.create_task(
        watchdog_loop(
            Notifier({"NOTIFY_SOCKET": str(path)}), health, interval_s=0.02, max_loop_lag_s=0.5
        )
    )
    for _ in range(5):
        health.beat("meter")
        await asyncio.sleep(0.03)
    healthy_pings = len(received(sock))
    await asyncio.sleep(0.4)  # the meter task stops beating
    received(sock)  # drain the pings sent before the task went stale
    await asyncio.sleep(0.2)
    stale_pings = received(sock)
    task.cancel()
    assert healthy_pings >= 3
    assert stale_pings == []
    assert health.stale() == ["meter"]


async def test_no_ping_while_the_loop_is_blocked(notify_socket) -> None:
    """A blocked event loop wakes the watchdog late, and that late wake-up sends nothing."""
    path, sock = notify_socket
    lags: list[float] = []
    task = asyncio.create_task(
        watchdog_loop(
            Notifier({"NOTIFY_SOCKET": str(path)}),
            Health(),
            interval_s=0.02,
            max_loop_lag_s=0.1,
            on_unhealthy=lambda stale, lag: lags.append(lag),
        )
    )
    await asyncio.sleep(0.1)
    received(sock)
    time.sleep(0.5)  # noqa: ASYNC251 - deliberately wedge the loop, as a stuck sync call would
    for _ in range(100):  # let the overdue (late) watchdog wake-up run, and only that one
        if lags:
            break
        await asyncio.sleep(0.001)
    after_block = received(sock)
    task.cancel()
    assert after_block == []
    assert max(lags, default=0.0) >= 0.3
