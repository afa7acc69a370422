"""A node asks for missed blocks as soon as its MQTT link comes back (docs/spec/consensus.md §5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ledger.consensus.engine import EngineConfig
from ledger.keys import SigningKey, sha256
from ledger.node import Node
from ledger.transport.mqtt import MqttTransport
from tests.support.mosquitto import Mosquitto
from tests.support.nodes import settings, until
from tests.support.proxy import FaultProxy
from tests.unit.ledger.helpers import genesis

KEYS = [SigningKey(sha256(f"reconnect-{i}".encode())) for i in range(4)]


async def test_reconnect_sends_a_sync_request_at_once(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """After the broker connection drops and comes back, the node publishes a sync request
    within the link poll period, although its request spacing (60 s here) has not passed."""
    g = genesis(chain_id="test-chain", validators=tuple((k.public_key, 10) for k in KEYS))
    proxy = FaultProxy("127.0.0.1", mosquitto.port)
    await proxy.start()
    transport = MqttTransport(settings("v0", [proxy.url]))
    await transport.start()
    await transport.wait_connected(10)
    config = EngineConfig(g.chain_id, sync_retry_ms=60_000)
    node = Node.open(tmp_path, g, transport, key=KEYS[0], config=config, durable=False)
    task = asyncio.create_task(node.run())
    try:
        await until(lambda: node.engine is not None, 5, "engine up")
        engine = node.engine
        assert engine is not None
        await until(lambda: engine.stats["sync_requests"] >= 1, 5, "start-up request")
        before = engine.stats["sync_requests"]
        proxy.drop_connections()
        await until(lambda: transport.stats.connects >= 2, 10, "reconnected")
        await until(lambda: node.stats["link_connects"] == 1, 5, "reconnect noticed")
        await until(lambda: engine.stats["sync_requests"] == before + 1, 5, "sync asked")
    finally:
        await node.close()
        await asyncio.wait_for(task, 10)
        await proxy.close()
