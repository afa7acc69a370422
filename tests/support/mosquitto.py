"""A real mosquitto broker for tests: free loopback port, generated config, start/stop/kill.

The broker runs from a config written into the test's temp dir (never the system config), on
127.0.0.1 only, with persistence off. :meth:`Mosquitto.start` returns when the port accepts TCP
connections (polled every 10 ms; typically < 0.1 s).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 5.0


class BrokerError(RuntimeError):
    """mosquitto could not be found, did not start, or exited unexpectedly."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary (PATH, then /usr/sbin)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise BrokerError(
            "mosquitto binary not found on PATH or in /usr/sbin (apt-get install mosquitto)"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if a TCP connection to ``host:port`` is accepted."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def listening(pid: int, port: int) -> bool:
    """True when process ``pid`` itself listens on TCP ``port``.

    Not just "the port answers": a port taken by someone else answers too while our broker
    exits with "Address already in use". Linux: a LISTEN socket of /proc/net/tcp{,6} on
    ``port`` whose inode is one of the process's descriptors; elsewhere, the port answers.
    """
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return port_open(port)
    inodes = set()
    for table in tables:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return False
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in descriptors:
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                return True
    return False


@dataclass
class Mosquitto:
    """One mosquitto process under test control.

    Attributes:
        workdir: directory for the config, password/ACL files and the log.
        port: the listener's port on 127.0.0.1.
        extra_config: lines appended to the listener config (TLS, auth, ACL, limits).
        anonymous: allow clients without credentials.
        config_text: a complete config to run instead of the generated one (its listeners
            must include ``port``, which is polled for readiness).
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: list[str] = field(default_factory=list)
    anonymous: bool = True
    config_text: str | None = None
    process: subprocess.Popen[bytes] | None = None
    _started_once: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        """``mqtt://`` (or ``mqtts://`` if TLS is configured) URL of this broker."""
        scheme = (
            "mqtts" if any(line.startswith("certfile") for line in self.extra_config) else "mqtt"
        )
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / f"mosquitto-{self.port}.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"mosquitto-{self.port}.log"

    def write_config(self) -> Path:
        """Write the config file and return its path."""
        # Started as root, mosquitto would switch to user "mosquitto", who cannot read the
        # test's private temp dir: stay the current user.
        run_as = f"user {getpass.getuser()}\n"
        if self.config_text is not None:
            self.config_path.write_text(self.config_text + "\n" + run_as)
            return self.config_path
        lines = [
            "per_listener_settings false",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            "set_tcp_nodelay true",  # as systemd/mosquitto/lem-broker.conf: no Nagle delay
            f"listener {self.port} 127.0.0.1",
            *self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n" + run_as)
        return self.config_path

    def start(self) -> None:
        """Start mosquitto and wait until its port accepts connections.

        A generated config whose port was taken in the meantime (another test process picked
        the same free port) moves to a new port, on the first start only: a restart keeps its
        port, since clients are configured with it.
        """
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            error = self._start_once()
            if error is None:
                self._started_once = True
                return
            if self._started_once or self.config_text is not None or "in use" not in error:
                raise BrokerError(error)
            self.port = free_port()
        raise BrokerError(error)

    def _start_once(self) -> str | None:
        """One start attempt: None when the port answers, else what went wrong."""
        self.write_config()
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not listening(self.process.pid, self.port):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                code, self.process = self.process.returncode, None
                return f"mosquitto exited with {code}: {err}{self.log()}"
            if time.monotonic() > deadline:
                self.kill()
                return f"mosquitto did not open port {self.port} in {START_TIMEOUT_S} s"
            time.sleep(0.01)
        return None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), SIGKILL after 3 s."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill at once (SIGKILL): clients see their connections reset."""
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        """Kill and start again on the same port (clients must reconnect)."""
        self.kill()
        self.start()

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=3)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def log(self) -> str:
        """The broker's log so far (for assertion messages)."""
        return self.log_path.read_text() if self.log_path.exists() else ""
