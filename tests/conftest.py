"""Fixtures shared by every test package. Keep generic; helpers live in tests/support/."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.proxy import FaultProxy


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Make started mosquitto brokers on free loopback ports; all are killed at teardown."""
    brokers: list[Mosquitto] = []

    def make(*, extra_config: list[str] | None = None, anonymous: bool = True) -> Mosquitto:
        broker = Mosquitto(
            tmp_path / f"broker{len(brokers)}", extra_config=extra_config or [], anonymous=anonymous
        )
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """One started, anonymous mosquitto on a free 127.0.0.1 port."""
    return mosquitto_factory()


@pytest.fixture
async def fault_proxy_factory() -> AsyncIterator[Callable[..., Awaitable[FaultProxy]]]:
    """Make started fault-injecting proxies to a loopback port; all are closed at teardown."""
    proxies: list[FaultProxy] = []

    async def make(upstream_port: int, upstream_host: str = "127.0.0.1") -> FaultProxy:
        proxy = FaultProxy(upstream_host, upstream_port)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.close()
