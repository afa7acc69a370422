"""A local MQTT broker for the demo and the benches: mosquitto if installed, else amqtt.

Spec: docs/spec/testnet.md §Broker. :func:`start_broker` starts the broker as a child process in
its own process group, listening on 127.0.0.1 only (a free port), and returns once the port
accepts connections. mosquitto is the production broker (systemd/mosquitto/); amqtt, a pure
Python broker from the test extras, is the fallback for a machine without mosquitto — slower,
but it speaks the same MQTT 3.1.1 the nodes use. Run the fallback alone with
``python -m edge.broker --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

START_TIMEOUT_S = 15.0


class BrokerError(Exception):
    """No broker could be started (the message says which and why)."""


@dataclass
class RunningBroker:
    """A started broker child process."""

    kind: str  # "mosquitto" | "amqtt"
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the broker's process group, SIGKILL after ``timeout_s``; idempotent."""
        stop_group(self.process, timeout_s)


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (PATH, then /usr/sbin), or None."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """True if 127.0.0.1:``port`` accepts a TCP connection."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_broker(workdir: Path, prefer: str = "auto") -> RunningBroker:
    """Start mosquitto (or amqtt if mosquitto is missing or ``prefer == "amqtt"``).

    Args:
        workdir: folder for the broker's config and log.
        prefer: "auto", "mosquitto" or "amqtt".

    Raises:
        BrokerError: the chosen broker is missing or did not open its port.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mosquitto = find_mosquitto()
    if prefer == "mosquitto" and mosquitto is None:
        raise BrokerError("mosquitto not found on PATH or in /usr/sbin (apt-get install mosquitto)")
    log_path = workdir / "broker.log"
    if mosquitto is not None and prefer != "amqtt":
        config = workdir / "mosquitto.conf"
        config.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "allow_anonymous true",
                    "persistence false",
                    f"log_dest file {log_path}",
                    "log_type error",
                    "log_type warning",
                    f"listener {port} 127.0.0.1",
                    "max_queued_messages 10000",
                    # Started as root, mosquitto would switch to its own user, and a change of
                    # credentials clears PR_SET_PDEATHSIG: stay the user that started it.
                    f"user {pwd.getpwuid(os.getuid()).pw_name}",
                ]
            )
            + "\n"
        )
        kind, argv = "mosquitto", [mosquitto, "-c", str(config)]
    else:
        kind, argv = "amqtt", [sys.executable, "-m", "edge.broker", "--port", str(port)]
    with log_path.open("ab") as log:
        process = spawn(argv, stdout=log)
    broker = RunningBroker(kind, port, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not port_open(port):
        if process.poll() is not None or time.monotonic() > deadline:
            broker.stop()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise BrokerError(f"{kind} did not open 127.0.0.1:{port}: {tail}")
        time.sleep(0.02)
    return broker


def spawn(
    argv: list[str], *, stdout: IO[bytes], process_group: int = 0, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in process group ``process_group`` (0 = a new group led by the child).

    The child also gets SIGTERM if this process dies (Linux ``PR_SET_PDEATHSIG``), so even a
    killed launcher leaves no node or broker behind.
    """
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        process_group=process_group,
        preexec_fn=_die_with_parent,
        env=env,
    )


def _die_with_parent() -> None:
    # Runs in the child between fork and exec; prctl(PR_SET_PDEATHSIG = 1, SIGTERM).
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """SIGTERM ``process``'s group, wait, SIGKILL the group if anything is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


async def _serve(port: int) -> None:
    from amqtt.broker import Broker  # the fallback only; not a runtime dependency of lemd

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.broker --port N``: the embedded amqtt broker on 127.0.0.1:N."""
    parser = argparse.ArgumentParser(prog="python -m edge.broker")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
