"""Helpers for tests that run MQTT transports against a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from ledger.transport.base import Message
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings

CHAIN = "test-chain"

# Fast failure detection on loopback; production uses 60 s keepalive and longer timeouts.
FAST: dict[str, Any] = {
    "keepalive_s": 2,
    "connect_timeout_s": 2.0,
    "io_timeout_s": 2.0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
}


def settings(node_id: str, urls: list[str], **overrides: Any) -> MqttSettings:
    """Test settings for ``node_id`` on ``urls`` (fast timeouts unless overridden)."""
    return MqttSettings.from_urls(CHAIN, node_id, urls, **{**FAST, **overrides})


class Receiver:
    """Reads a transport's messages in the background into a list."""

    def __init__(self, transport: MqttTransport) -> None:
        self.transport = transport
        self.received: list[Message] = []
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._pump(), name=f"receiver-{transport.node_id}")

    async def _pump(self) -> None:
        iterator: AsyncIterator[Message] = self.transport.messages()
        async for message in iterator:
            self.received.append(message)
            self._arrived.set()

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Message]:
        """Wait until ``count`` messages have arrived; return them all."""
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received

    async def wait_payload(self, payload: bytes, timeout_s: float = 5.0) -> list[Message]:
        """Wait until a message with ``payload`` has arrived; return everything so far."""
        async with asyncio.timeout(timeout_s):
            while not any(m.payload == payload for m in self.received):
                self._arrived.clear()
                await self._arrived.wait()
        return self.received

    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.received]

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` every 10 ms until true; TimeoutError naming ``what`` otherwise."""
    try:
        async with asyncio.timeout(timeout_s):
            # Counters and flags have no events to wait on; a 10 ms poll is cheap in tests.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise TimeoutError(f"not reached within {timeout_s} s: {what}") from None
