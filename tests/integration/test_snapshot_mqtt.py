"""Snapshot sync across a real mosquitto (docs/spec/consensus.md §5b): the late joiner's header,
manifest and chunk requests and the validators' answers all cross the broker, within its
payload limit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ledger.keys import SigningKey
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings
from tests.integration.test_snapshot_sync import VALIDATORS, Chain, _holds_raw, _settle_and_prune
from tests.support.mosquitto import Mosquitto
from tests.support.nodes import FAST
from tests.unit.ledger.helpers import ADMIN, N1


async def _transport(c: Chain, broker: Mosquitto, node_id: str) -> MqttTransport:
    settings = MqttSettings.from_urls(c.genesis.chain_id, node_id, [broker.url], **FAST)
    transport = MqttTransport(settings)
    await transport.start()
    await transport.wait_connected(5)
    return transport


async def _start(c: Chain, broker: Mosquitto, node_id: str, key: SigningKey) -> None:
    c.start(node_id, key, await _transport(c, broker, node_id))


@pytest.mark.timeout(60)
async def test_late_joiner_restores_over_mosquitto(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Four validators over mosquitto settle, prune and body-prune a period; the admin's full
    node started later falls back to snapshot sync through the broker, restores the
    validators' app hash, follows the next block and holds none of the pruned SetMeasure txs."""
    caplog.set_level(logging.INFO)
    c = Chain(tmp_path)
    try:
        for i, key in enumerate(VALIDATORS):
            await _start(c, mosquitto, f"v{i}", key)
        _, sent = await _settle_and_prune(c)
        v0 = c.nodes["v0"]
        await c.until(lambda: not _holds_raw(v0, sent), "v0 body-pruned")
        await _start(c, mosquitto, "j", ADMIN)  # the admin's full node
        joiner = c.nodes["j"]
        await c.until(lambda: joiner.stats["snapshot_joined"] == 1, "snapshot join", 30)
        assert "switching to state-snapshot sync" in caplog.text
        restored = joiner.store.height
        assert joiner.store.app_hash_at(restored) == v0.store.app_hash_at(restored)
        await c.commit(c.admin("AddMeter", {"meter_id": "M9", "account": N1.public_key}))
        await c.until(lambda: joiner.store.height == v0.store.height, "joiner follows")
        assert joiner.app.app_hash == v0.app.app_hash
        assert not _holds_raw(joiner, sent)
    finally:
        await c.close()
