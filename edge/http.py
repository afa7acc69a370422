"""A minimal asyncio HTTP/1.1 server for the local REST API and the metrics endpoint.

Local-only by design (127.0.0.1 or a Unix socket): one request per connection, bounded request
line, headers and body, every read under a timeout. Pulling in a web framework for a dozen
technician routes would cost more memory on a 1 GB board than the whole ledger.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("lemd.http")

MAX_HEADER_BYTES = 8192
MAX_BODY_BYTES = 64 * 1024
READ_TIMEOUT_S = 5.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except json.JSONDecodeError as exc:
            raise HttpError(400, f"body is not JSON: {exc}") from exc


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(value, sort_keys=True).encode() + b"\n")


class HttpError(Exception):
    """Raised by handlers to answer with a status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[[Request], Awaitable[Response]]


class Router:
    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Handler] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method, path)] = handler

    async def dispatch(self, request: Request) -> Response:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            if any(path == request.path for _, path in self._routes):
                return Response.json({"error": f"{request.method} not allowed"}, 405)
            return Response.json({"error": f"no route {request.path}"}, 404)
        try:
            return await handler(request)
        except HttpError as exc:
            return Response.json({"error": str(exc)}, exc.status)


async def serve(router: Router, listen: str) -> asyncio.Server:
    """Start serving on ``host:port`` or ``unix:/path``; returns the started server."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response = await _handle(router, reader)
        except HttpError as exc:
            response = Response.json({"error": str(exc)}, exc.status)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        except Exception as exc:  # a handler bug must not take the daemon down: answer 500
            log.error("API handler failed", exc_info=exc)
            response = Response.json({"error": f"internal error: {type(exc).__name__}"}, 500)
        await _write(writer, response)

    if listen.startswith("unix:"):
        return await asyncio.start_unix_server(on_connection, path=listen[5:])
    host, _, port = listen.rpartition(":")
    return await asyncio.start_server(on_connection, host=host, port=int(port))


async def _handle(router: Router, reader: asyncio.StreamReader) -> Response:
    async with asyncio.timeout(READ_TIMEOUT_S):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise HttpError(413, "request head too large") from exc
        if len(head) > MAX_HEADER_BYTES:
            raise HttpError(413, "request head too large")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError as exc:
            raise HttpError(400, "malformed request line") from exc
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "0")
        if not length.isdigit():
            raise HttpError(400, "bad Content-Length")
        if int(length) > MAX_BODY_BYTES:
            raise HttpError(413, f"body over {MAX_BODY_BYTES} bytes")
        body = await reader.readexactly(int(length))
    url = urlsplit(target)
    request = Request(method.upper(), url.path, dict(parse_qsl(url.query)), headers, body)
    return await router.dispatch(request)


async def _write(writer: asyncio.StreamWriter, response: Response) -> None:
    head = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
    ]
    head += [f"{name}: {value}" for name, value in response.headers.items()]
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + response.body)
        async with asyncio.timeout(READ_TIMEOUT_S):
            await writer.drain()
    except (TimeoutError, ConnectionError):
        log.debug("client went away before the response was written")
    finally:
        writer.close()


async def request(
    listen: str, method: str, path: str, body: Any = None, timeout_s: float = 10.0
) -> tuple[int, Any]:
    """Client side for lemctl: one request to a node's API; returns (status, decoded JSON)."""
    async with asyncio.timeout(timeout_s):
        if listen.startswith("unix:"):
            reader, writer = await asyncio.open_unix_connection(listen[5:])
        else:
            host, _, port = listen.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
        payload = b"" if body is None else json.dumps(body).encode()
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: lemd\r\nContent-Length: {len(payload)}\r\n"
            f"Content-Type: application/json\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        raw = await reader.read()
        writer.close()
    head, _, content = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(content) if content else None
    except json.JSONDecodeError:
        return status, content.decode(errors="replace")
