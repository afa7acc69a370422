"""MQTT cost of the ledger's messages: bytes per message by channel, and loopback round trips.

Usage: .venv/bin/python bench/mqtt_bytes.py [--messages 1000] [--payload 160] [--chain-id ID]
       [--node-id ID] [--mqtt-version 5|4]

Prints:
1. the MQTT overhead of one QoS 1 PUBLISH per channel (fixed header + topic + packet id +
   property length; plus the 4-byte PUBACK) for broadcasts and direct messages, computed from
   MQTT 5.0 §3.3 with the given chain and node id lengths (docs/spec/transport.md §Bytes);
2. the bytes that really cross each node's TCP link, measured by a counting proxy between each
   node and a real mosquitto on 127.0.0.1 while ``--messages`` broadcasts go from A to B:
   per message on the sender's link and on the receiver's link (TCP/IP headers excluded;
   TLS would add about 22 bytes per record with TLS 1.3 AES-GCM);
3. the round-trip latency p50/p99 of ``--messages`` small messages A -> B -> A (B echoes each
   one back as a direct message; one message in flight at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.transport.base import CHANNELS
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings
from ledger.transport.topics import (
    PUBACK_BYTES,
    broadcast_topic,
    direct_topic,
    publish_packet_bytes,
)
from tests.support.mosquitto import Mosquitto
from tests.support.proxy import FaultProxy


def overhead_table(chain_id: str, node_id: str, v5: bool) -> None:
    """Print the computed per-message MQTT overhead of every channel."""
    print(
        f"MQTT {'5.0' if v5 else '3.1.1'} QoS 1 overhead per message "
        f"(chain id {len(chain_id)} B, node ids {len(node_id)} B; payload excluded)"
    )
    print(
        f"{'channel':<10} {'topic B':>7} {'bcast PUBLISH':>13} {'direct topic B':>14} "
        f"{'direct PUBLISH':>14} {'+PUBACK':>7}"
    )
    for channel in CHANNELS:
        bcast = broadcast_topic(chain_id, channel, node_id)
        direct = direct_topic(chain_id, channel, node_id, node_id)
        b_over = publish_packet_bytes(bcast, 0, v5=v5)
        d_over = publish_packet_bytes(direct, 0, v5=v5)
        print(
            f"{channel:<10} {len(bcast):>7} {b_over:>13} {len(direct):>14} {d_over:>14} "
            f"{PUBACK_BYTES:>7}"
        )
    print(
        "(a payload >= 128 B minus topic adds 1 header byte, >= 16 KiB another; each "
        "receiver pays the PUBLISH again on its own link, plus its own PUBACK)"
    )


def _settings(chain_id: str, node_id: str, url: str, mqtt_version: int) -> MqttSettings:
    return MqttSettings.from_urls(
        chain_id,
        node_id,
        [url],
        keepalive_s=60,
        mqtt_version=mqtt_version,
        outbox_max_messages=100_000,
        inbox_max_messages=100_000,
        max_inflight=16,
    )


async def measure(args: argparse.Namespace, workdir: Path) -> None:
    """Measured link bytes (through counting proxies) and round-trip latency (direct)."""
    broker = Mosquitto(workdir)
    broker.start()
    try:
        proxy_a = FaultProxy("127.0.0.1", broker.port)
        proxy_b = FaultProxy("127.0.0.1", broker.port)
        await proxy_a.start()
        await proxy_b.start()
        async with _pair(args, proxy_a.url, proxy_b.url) as (a, b):
            await asyncio.sleep(0.2)  # CONNECT/SUBSCRIBE bytes settle before counting
            await one_way(args, a, b, proxy_a, proxy_b)
        await proxy_a.close()
        await proxy_b.close()
        # Latency without the proxies: they add two Python hops each way.
        async with _pair(args, broker.url, broker.url) as (a, b):
            await round_trips(args, a, b)
    finally:
        broker.kill()


@contextlib.asynccontextmanager
async def _pair(
    args: argparse.Namespace, url_a: str, url_b: str
) -> AsyncIterator[tuple[MqttTransport, MqttTransport]]:
    a = MqttTransport(_settings(args.chain_id, f"{args.node_id}a", url_a, args.mqtt_version))
    b = MqttTransport(_settings(args.chain_id, f"{args.node_id}b", url_b, args.mqtt_version))
    try:
        for t in (a, b):
            await t.start()
            await t.wait_connected(5)
        yield a, b
    finally:
        await a.close()
        await b.close()


async def one_way(
    args: argparse.Namespace, a: MqttTransport, b: MqttTransport, pa: FaultProxy, pb: FaultProxy
) -> None:
    n, size = args.messages, args.payload
    before = (
        pa.stats.upstream_bytes,
        pa.stats.downstream_bytes,
        pb.stats.upstream_bytes,
        pb.stats.downstream_bytes,
    )
    inbox = b.messages()
    for i in range(n):
        await a.publish("consensus", i.to_bytes(4, "big") + bytes(size - 4))
    for _ in range(n):
        await anext(inbox)
    await a.flush(30)
    await asyncio.sleep(0.3)  # b's PUBACKs reach the proxy
    a_up = pa.stats.upstream_bytes - before[0]
    a_down = pa.stats.downstream_bytes - before[1]
    b_up = pb.stats.upstream_bytes - before[2]
    b_down = pb.stats.downstream_bytes - before[3]
    topic = broadcast_topic(args.chain_id, "consensus", a.node_id)
    computed = publish_packet_bytes(topic, size, v5=args.mqtt_version == 5)
    print(f"\nmeasured on the TCP links, {n} broadcasts of {size} B payload (consensus channel):")
    print(
        f"  sender   link: {a_up / n:7.1f} B/msg out, {a_down / n:5.1f} B/msg in "
        f"(computed PUBLISH {computed} B + PUBACK {PUBACK_BYTES} B)"
    )
    print(f"  receiver link: {b_down / n:7.1f} B/msg in, {b_up / n:5.1f} B/msg out")
    print(
        f"  overhead over payload: sender {a_up / n - size:.1f} B, "
        f"receiver {b_down / n - size:.1f} B"
    )
    print(
        f"  transport stats: a.bytes_out={a.stats.bytes_out} b.bytes_in={b.stats.bytes_in} "
        f"b.duplicates_dropped={b.stats.duplicates_dropped}"
    )


async def round_trips(args: argparse.Namespace, a: MqttTransport, b: MqttTransport) -> None:
    async def echo() -> None:
        async for message in b.messages():
            await b.publish("sync_resp", message.payload, to=message.sender)

    echo_task = asyncio.create_task(echo())
    replies = a.messages()
    samples_ms = []
    try:
        for i in range(args.messages):
            payload = b"rtt" + i.to_bytes(4, "big") + bytes(25)
            start = time.perf_counter()
            await a.publish("sync_req", payload, to=b.node_id)
            reply = await asyncio.wait_for(anext(replies), 5)
            samples_ms.append((time.perf_counter() - start) * 1000)
            assert reply.payload == payload
    finally:
        echo_task.cancel()
    samples_ms.sort()
    p50 = statistics.median(samples_ms)
    p99 = samples_ms[min(len(samples_ms) - 1, int(0.99 * len(samples_ms)))]
    print(
        f"\nround trip A -> mosquitto -> B -> mosquitto -> A on loopback, "
        f"{len(samples_ms)} messages of 32 B, QoS 1:"
    )
    print(f"  p50 {p50:.2f} ms   p99 {p99:.2f} ms   max {samples_ms[-1]:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--payload", type=int, default=160, help="one-way payload size [B]")
    parser.add_argument("--chain-id", default="lugaggia-testnet")
    parser.add_argument("--node-id", default="node1")
    parser.add_argument("--mqtt-version", type=int, choices=(4, 5), default=5)
    args = parser.parse_args()
    overhead_table(args.chain_id, args.node_id, args.mqtt_version == 5)
    with tempfile.TemporaryDirectory(prefix="mqtt-bench-") as tmp:
        asyncio.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
