"""The demo's broker: mosquitto, or the amqtt fallback, on a free loopback port; stop kills it."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import pytest

from edge.broker import start_broker


@pytest.mark.parametrize(
    ("kind", "protocol"), [("mosquitto", mqtt.MQTTv5), ("amqtt", mqtt.MQTTv311)]
)
def test_broker_relays_and_stops(tmp_path: Path, kind: str, protocol: int) -> None:
    """A subscriber receives what a publisher sends; after stop() the process group is gone."""
    broker = start_broker(tmp_path, kind)
    assert broker.kind == kind
    got = threading.Event()
    payloads: list[bytes] = []
    try:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)

        def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
            payloads.append(message.payload)
            got.set()

        client.on_message = on_message
        client.connect("127.0.0.1", broker.port)
        client.subscribe("lem/1/demo/#", qos=1)
        client.loop_start()
        try:
            client.publish("lem/1/demo/tx", b"signed-bytes", qos=1).wait_for_publish(5)
            assert got.wait(5)
        finally:
            client.loop_stop()
            client.disconnect()
    finally:
        pid = broker.process.pid
        broker.stop()
    assert payloads == [b"signed-bytes"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
