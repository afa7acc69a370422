"""Run a generated testnet's ``lemd`` processes on this machine: start, watch, kill, restart, stop.

Spec: docs/spec/testnet.md §Launching. Used by the community demo (edge/demo.py), the
multi-process tests (tests/e2e/) and the footprint bench (bench/footprint.py). Each node runs as
``python -m edge.daemon --config DIR/nodeK/lemd.toml`` in a process group of its own (so any
child it might start goes with it) and with ``PR_SET_PDEATHSIG`` (so a killed launcher leaves no
node behind); its output goes to ``DIR/nodeK/lemd.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.broker import spawn, stop_group
from edge.http import request
from edge.testnet import Manifest, NodeEntry, set_anchor

STATUS_TIMEOUT_S = 2.0


@dataclass
class Node:
    """One node of a running community."""

    entry: NodeEntry
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Community:
    """The lemd processes of one testnet (see module docstring).

    Args:
        manifest: the testnet (``lemctl testnet init`` output).
        python: interpreter that runs lemd (default: this one).
    """

    manifest: Manifest
    python: str = sys.executable
    nodes: list[Node] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = [Node(entry) for entry in self.manifest.nodes]

    def anchor(self, lead_s: float = 3.0) -> None:
        """Pin every node's clock so that simulated ``start`` is ``lead_s`` from now.

        The lead covers the nodes' start-up; readings before it lie just before the start.
        """
        if self.manifest.start:
            at = datetime.now(UTC) + timedelta(seconds=lead_s)
            self.manifest = set_anchor(self.manifest, at.replace(microsecond=0))

    def start(self) -> None:
        """Start every node that is not running."""
        for k in range(len(self.nodes)):
            if not self.nodes[k].running:
                self.start_node(k)

    def start_node(self, k: int) -> None:
        """Start node ``k`` (appending to its log)."""
        node = self.nodes[k]
        log_path = self.manifest.root / node.entry.dir / "lemd.log"
        config = self.manifest.config_path(node.entry)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as log:
            node.process = spawn(
                [self.python, "-m", "edge.daemon", "--config", str(config)], stdout=log, env=env
            )
        node.starts += 1

    def kill_node(self, k: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to node ``k``'s process group and reap it."""
        process = self.nodes[k].process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every node (graceful: stores flushed), SIGKILL what is left after the timeout."""
        live = [n.process for n in self.nodes if n.process is not None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for process in live:
            stop_group(process, timeout_s=0.0)

    def pids(self) -> list[int]:
        """Process ids of the running nodes."""
        return [n.process.pid for n in self.nodes if n.process is not None and n.running]

    def exited(self) -> list[tuple[str, int]]:
        """(node name, exit status) of every node that stopped on its own."""
        return [
            (n.entry.name, n.process.returncode)
            for n in self.nodes
            if n.process is not None and n.process.poll() is not None
        ]

    def log_tail(self, k: int, lines: int = 20) -> str:
        """The last ``lines`` lines of node ``k``'s log (for error messages)."""
        path = self.manifest.root / self.nodes[k].entry.dir / "lemd.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    async def statuses(self) -> list[dict[str, Any] | None]:
        """Every node's ``GET /status`` document (None for a node that does not answer)."""
        return list(await asyncio.gather(*(node_status(n.entry) for n in self.nodes)))


async def node_status(entry: NodeEntry) -> dict[str, Any] | None:
    """``GET /status`` of one node, None if it does not answer within 2 s."""
    try:
        code, body = await request(entry.api, "GET", "/status", timeout_s=STATUS_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError, IndexError):
        return None
    return body if code == 200 and isinstance(body, dict) else None


async def wait_for(
    predicate: Any, timeout_s: float, interval_s: float = 0.5, what: str = "condition"
) -> Any:
    """Await ``predicate()`` (an async callable) until it returns a truthy value.

    Raises:
        TimeoutError: not true within ``timeout_s`` (the message names ``what``).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout_s:g} s")
        await asyncio.sleep(interval_s)
