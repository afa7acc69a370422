"""A failing API handler answers 500 and the server keeps serving (the daemon never crashes)."""

from __future__ import annotations

from edge.http import Request, Response, Router, request, serve


async def test_handler_bug_is_a_500_and_the_next_request_is_served() -> None:
    """An unexpected exception in a handler becomes 500 naming its type; nothing else breaks."""
    router = Router()

    async def broken(req: Request) -> Response:
        raise RuntimeError("bug")

    async def fine(req: Request) -> Response:
        return Response.json({"ok": True})

    router.add("GET", "/broken", broken)
    router.add("GET", "/fine", fine)
    server = await serve(router, "127.0.0.1:0")
    host, port = server.sockets[0].getsockname()[:2]
    async with server:
        assert await request(f"{host}:{port}", "GET", "/broken") == (
            500,
            {"error": "internal error: RuntimeError"},
        )
        assert await request(f"{host}:{port}", "GET", "/fine") == (200, {"ok": True})
