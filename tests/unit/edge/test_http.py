"""The local HTTP server: routing, limits, malformed requests, and the metrics exposition."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.http import HttpError, Request, Response, Router, request, serve
from edge.metrics import Metrics


async def start(router: Router, listen: str = "127.0.0.1:0") -> tuple[asyncio.Server, str]:
    server = await serve(router, listen)
    if listen.startswith("unix:"):
        return server, listen
    host, port = server.sockets[0].getsockname()[:2]
    return server, f"{host}:{port}"


def make_router() -> Router:
    router = Router()

    async def echo(req: Request) -> Response:
        return Response.json({"got": req.json(), "q": req.query})

    async def forbidden(req: Request) -> Response:
        raise HttpError(403, "prosumers cannot read other members' measurements")

    router.add("POST", "/echo", echo)
    router.add("GET", "/secret", forbidden)
    return router


async def test_routes_methods_and_errors() -> None:
    """Known routes answer; wrong method is 405, unknown path 404, handler errors keep status."""
    server, addr = await start(make_router())
    async with server:
        assert await request(addr, "POST", "/echo?x=1", {"a": 1}) == (
            200,
            {"got": {"a": 1}, "q": {"x": "1"}},
        )
        assert (await request(addr, "GET", "/echo"))[0] == 405
        assert (await request(addr, "GET", "/nope"))[0] == 404
        status, body = await request(addr, "GET", "/secret")
        assert status == 403
        assert "other members" in body["error"]


async def test_garbage_and_oversize_requests_get_4xx_and_server_survives() -> None:
    """A malformed request line or a huge body is refused; the next request still works."""
    server, addr = await start(make_router())
    host, port = addr.rsplit(":", 1)
    async with server:
        for raw in (
            b"NONSENSE\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(raw)
            await writer.drain()
            reply = await reader.read()
            writer.close()
            assert reply.split(b" ")[1] in (b"400", b"413")
        assert (await request(addr, "POST", "/echo", 1))[0] == 200


async def test_unix_socket_listener(tmp_path: Path) -> None:
    """The API can listen on a Unix socket instead of TCP."""
    server, addr = await start(make_router(), f"unix:{tmp_path / 'api.sock'}")
    async with server:
        assert (await request(addr, "POST", "/echo", None))[0] == 200


def test_metrics_exposition_has_resource_and_ledger_metrics(tmp_path: Path) -> None:
    """A scrape shows USS/RSS from psutil and the ledger gauges, with Prometheus names."""
    metrics = Metrics(tmp_path)
    metrics.ledger_height.set(42)
    metrics.meter_reads.inc()
    text = metrics.render().decode()
    assert "lem_ledger_height 42.0" in text
    assert "lem_meter_reads_total 1.0" in text
    uss = next(
        line for line in text.splitlines() if line.startswith("lem_process_private_memory_bytes")
    )
    assert float(uss.split()[1]) > 1_000_000
