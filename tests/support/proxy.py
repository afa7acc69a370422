"""A small fault-injecting TCP proxy for loopback tests: client <-> proxy <-> broker.

Faults, switchable at any time:
  * ``cut()``: close every connection and refuse new ones (accept, then close) until ``heal()``;
  * ``blackhole()``: keep connections open but forward nothing (a dead 4G bearer: no FIN, no
    RST; only keepalive notices it) until ``heal()``;
  * ``drop_connections()``: close every current connection once; new ones work;
  * ``delay_up_s`` / ``delay_down_s``: hold every chunk client->broker / broker->client this
    long before forwarding it (``delay_s`` sets both).

Bounded and loopback-only: it listens on 127.0.0.1, refuses a non-loopback upstream, reads in
chunks of at most 64 KiB and holds at most 1 MiB per direction (further reads wait), so a test
cannot make it eat the machine's memory. It counts the bytes it forwards in each direction,
which bench/mqtt_bytes.py uses to measure what really crosses the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass

CHUNK_BYTES = 64 * 1024
MAX_HELD_BYTES = 1024 * 1024


@dataclass
class ProxyStats:
    """Bytes forwarded [bytes] and connections accepted [count]."""

    upstream_bytes: int = 0  # client -> broker
    downstream_bytes: int = 0  # broker -> client
    upstream_reads: int = 0  # socket reads ~ TCP segments at low rates (TCP/IP header estimate)
    downstream_reads: int = 0
    connections: int = 0


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``upstream_host:upstream_port`` with switchable faults.

    Args:
        upstream_host: the broker's address (must be a loopback address).
        upstream_port: the broker's port.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        if not ipaddress.ip_address(upstream_host).is_loopback:
            raise ValueError(f"FaultProxy forwards to loopback only, not {upstream_host!r}")
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.delay_up_s = 0.0
        self.delay_down_s = 0.0
        self.stats = ProxyStats()
        self._cut = False
        self._blackhole = False
        self._closing = False
        self._server: asyncio.Server | None = None
        self._pairs: set[asyncio.Future[tuple[None, None]]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def delay_s(self) -> float:
        return max(self.delay_up_s, self.delay_down_s)

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self.delay_up_s = self.delay_down_s = value

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
            self._close_all()
            async with asyncio.timeout(5.0):
                await self._server.wait_closed()
        if self._pairs:  # closed sockets end the pumps; cancel only what is still stuck
            _, stuck = await asyncio.wait(self._pairs, timeout=1.0)
            for task in stuck:
                task.cancel()

    # -- faults ---------------------------------------------------------------------------

    def cut(self) -> None:
        """Close all connections and refuse new ones until :meth:`heal`."""
        self._cut = True
        self._close_all()

    def blackhole(self) -> None:
        """Forward nothing (connections stay open) until :meth:`heal`."""
        self._blackhole = True

    def heal(self) -> None:
        """End ``cut`` and ``blackhole``; blackholed connections are closed (state lost)."""
        if self._blackhole:
            self._close_all()
        self._cut = False
        self._blackhole = False

    def drop_connections(self) -> None:
        """Close every current connection once (new connections are served)."""
        self._close_all()

    # -- forwarding -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self._writers.add(writer)  # at once, so close()/cut() also reach half-set-up pairs
        if self._cut or self._closing:
            self._drop(writer)
            return
        try:
            async with asyncio.timeout(2.0):
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except (OSError, TimeoutError):
            self._drop(writer)
            return
        self._writers.add(up_writer)
        if self._cut or self._closing or writer.is_closing():
            self._drop(writer, up_writer)
            return
        pair = asyncio.gather(
            self._pump(reader, up_writer, upstream=True),
            self._pump(up_reader, writer, upstream=False),
        )
        self._pairs.add(pair)
        pair.add_done_callback(self._pairs.discard)
        await pair
        self._drop(writer, up_writer)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        # A reset or closed peer simply ends the pump: that is what the faults are for.
        with contextlib.suppress(ConnectionError, OSError):
            await self._forward(src, dst, upstream=upstream)
        with contextlib.suppress(OSError):
            dst.close()

    async def _forward(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        while data := await src.read(CHUNK_BYTES):
            if self._blackhole:
                continue  # swallowed: the peer never learns
            delay_s = self.delay_up_s if upstream else self.delay_down_s
            if delay_s:
                await asyncio.sleep(delay_s)
            dst.write(data)
            if dst.transport.get_write_buffer_size() > MAX_HELD_BYTES:
                await dst.drain()
            if upstream:
                self.stats.upstream_bytes += len(data)
                self.stats.upstream_reads += 1
            else:
                self.stats.downstream_bytes += len(data)
                self.stats.downstream_reads += 1

    def _drop(self, *writers: asyncio.StreamWriter) -> None:
        for writer in writers:
            writer.close()
            self._writers.discard(writer)

    def _close_all(self) -> None:
        self._drop(*self._writers)
