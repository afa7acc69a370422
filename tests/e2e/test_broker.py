"""The demo's broker: mosquitto, or the amqtt fallback, on a free loopback port; stop kills it."""

from __future__ import annotations

import subprocess
import sys
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


def test_broker_dies_with_a_killed_launcher(tmp_path: Path) -> None:
    """A launcher killed with SIGKILL takes its broker along (parent-death signal kept)."""
    code = (
        "import sys, time; from pathlib import Path; from edge.broker import start_broker; "
        f"b = start_broker(Path({str(tmp_path)!r}), 'mosquitto'); "
        "print(b.process.pid, flush=True); time.sleep(60)"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None
    broker = psutil.Process(int(launcher.stdout.readline()))
    launcher.kill()
    launcher.wait()
    broker.wait(timeout=5)  # raises TimeoutExpired if it outlives the launcher
    assert not broker.is_running()
