"""BFT consensus over a real mosquitto: commit latency and the bytes each node's link carries.

Usage: .venv/bin/python bench/mqtt_consensus.py [--validators 4] [--txs 30] [--burst 19]
       [--bursts 3] [--idle-s 12] [--bench-tip-ms 2000] [--durable]

One process: ``--validators`` validators and two members (``m-lean`` subscribes without the
``consensus`` channel, ``m-full`` to every channel), each a real ledger.node.Node with LMDB
stores and its own MqttTransport, each behind a counting TCP proxy to one mosquitto on
127.0.0.1 (MQTT 5, QoS 1, production engine timeouts). Txs are signed admin AddMeter txs
submitted at v0. Prints:

1. commit latency: one tx at a time, submit -> committed on every node, p50/p99 [ms];
2. bytes per node link (payload of TCP, both directions) per single-tx block, per burst of
   ``--burst`` txs (a 15-min slot of a 19-member community), and per idle tip period (the
   rotating re-announcement of the latest commit, ``tip_ms``, shortened to
   ``--bench-tip-ms`` here); MQTT messages; an estimate of TCP/IP headers (52 B per segment,
   pure ACKs not counted);
3. a projection per day for a community at real time: 96 slots each with one burst block,
   the engine's default idle tip every 300 s (counted for the whole day: an upper bound), no
   heartbeat block (the default heartbeat is 15 min and every slot brings txs), MQTT
   keepalive every 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import state
from ledger.consensus.engine import EngineConfig
from ledger.keys import SigningKey, sha256
from ledger.node import Node
from ledger.transport.base import CHANNELS, LIGHT_CHANNELS
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings
from tests.support.mosquitto import Mosquitto
from tests.support.proxy import FaultProxy
from tests.unit.ledger.helpers import ADMIN, N1, Signer, genesis

TCP_IP_HEADER_BYTES = 52  # IPv4 20 + TCP 20 + timestamps option 12
DAY_S = 86_400
PROD_TIP_S = 300
SLOTS_PER_DAY = 96
KEEPALIVE_S = 60


@dataclass
class Peer:
    name: str
    role: str
    node: Node
    transport: MqttTransport
    proxy: FaultProxy
    task: asyncio.Task[None]


@dataclass
class LightPeer:
    name: str
    role: str
    transport: MqttTransport
    proxy: FaultProxy
    task: asyncio.Task[None]


def _link(p: Peer | LightPeer) -> tuple[int, int, int, int]:
    """(link bytes, socket reads, messages delivered + sent, duplicate copies dropped)."""
    s, t = p.proxy.stats, p.transport.stats
    return (
        s.upstream_bytes + s.downstream_bytes,
        s.upstream_reads + s.downstream_reads,
        t.messages_in + t.messages_out,
        t.duplicates_dropped,
    )


class Community:
    def __init__(self, root: Path, broker: Mosquitto, args: argparse.Namespace) -> None:
        self.root, self.broker, self.args = root, broker, args
        self.keys = [
            SigningKey(sha256(f"bench-validator-{i}".encode())) for i in range(args.validators)
        ]
        self.genesis = genesis(validators=tuple((k.public_key, 10) for k in self.keys))
        self.peers: list[Peer] = []
        self.light: list[LightPeer] = []

    async def _link(self, name: str, channels: tuple[str, ...]) -> tuple[FaultProxy, MqttTransport]:
        """A counting proxy to the broker and a connected transport behind it."""
        proxy = FaultProxy("127.0.0.1", self.broker.port)
        await proxy.start()
        settings = MqttSettings.from_urls(
            self.genesis.chain_id,
            name,
            [proxy.url],
            keepalive_s=KEEPALIVE_S,
            broadcast_channels=channels,
        )
        transport = MqttTransport(settings)
        await transport.start()
        await transport.wait_connected(10)
        return proxy, transport

    async def start(
        self, name: str, role: str, key: SigningKey | None, channels: tuple[str, ...]
    ) -> None:
        proxy, transport = await self._link(name, channels)
        config = EngineConfig(self.genesis.chain_id, tip_ms=self.args.bench_tip_ms)
        node = Node.open(
            self.root / name,
            self.genesis,
            transport,
            key=key,
            config=config,
            durable=self.args.durable,
        )
        task = asyncio.create_task(node.run(), name=name)
        self.peers.append(Peer(name, role, node, transport, proxy, task))

    async def start_light(self, name: str) -> None:
        """A light member's link: subscribed to headers only (ledger/light_node.py)."""
        proxy, transport = await self._link(name, LIGHT_CHANNELS)

        async def drain() -> None:
            async for _ in transport.messages():
                pass

        task = asyncio.create_task(drain())
        self.light.append(LightPeer(name, "light member (headers only)", transport, proxy, task))

    async def stop(self) -> None:
        for lp in self.light:
            await lp.transport.close()
            lp.task.cancel()
            await lp.proxy.close()
        for p in self.peers:
            await p.node.close()
            await asyncio.wait_for(p.task, 10)
            await p.proxy.close()

    async def until(self, predicate: object, timeout_s: float = 60.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # type: ignore[operator]
                for p in self.peers:
                    if p.task.done():
                        p.task.result()
                await asyncio.sleep(0.005)

    def all_have(self, meters: list[str]) -> bool:
        for p in self.peers:
            with p.node.store.state_reader() as base:
                st = state.Overlay(base)
                if any(state.meter_owner(st, m) is None for m in meters):
                    return False
        return True

    def snapshot(self) -> dict[str, tuple[int, int, int, int]]:
        return {p.name: _link(p) for p in self.links()}

    def links(self) -> list[Peer | LightPeer]:
        return [*self.peers, *self.light]

    def height(self) -> int:
        return min(p.node.app.height for p in self.peers)


def _delta(
    after: dict[str, tuple[int, int, int, int]],
    before: dict[str, tuple[int, int, int, int]],
    per: float,
) -> dict[str, tuple[float, float, float, float]]:
    return {
        k: tuple((a - b) / per for a, b in zip(after[k], before[k], strict=True)) for k in after
    }  # type: ignore[misc]


async def run(args: argparse.Namespace, workdir: Path) -> None:
    broker = Mosquitto(workdir / "broker")
    broker.start()
    c = Community(workdir, broker, args)
    try:
        for i, key in enumerate(c.keys):
            await c.start(f"v{i}", "validator", key, CHANNELS)
        lean = tuple(ch for ch in CHANNELS if ch != "consensus")
        await c.start("m-lean", "member (no consensus ch.)", N1, lean)
        await c.start("m-full", "member (all channels)", None, CHANNELS)
        await c.start_light("m-light")
        await asyncio.sleep(1.0)
        await measure(c, args)
    finally:
        await c.stop()
        broker.kill()


async def measure(c: Community, args: argparse.Namespace) -> None:
    admin = Signer(ADMIN, c.genesis.chain_id)
    v0 = c.peers[0].node
    tx_sizes: list[int] = []

    def submit(meter: str) -> None:
        raw = admin("AddMeter", {"meter_id": meter, "account": N1.public_key})
        tx_sizes.append(len(raw))
        v0.submit_tx(raw)

    # 1. latency, one tx at a time
    latencies_ms = []
    h0, before = c.height(), c.snapshot()
    for i in range(args.txs):
        start = time.perf_counter()
        submit(f"L{i}")
        await c.until(lambda i=i: c.all_have([f"L{i}"]))
        latencies_ms.append((time.perf_counter() - start) * 1000)
    single_blocks = max(1, c.height() - h0)
    single = _delta(c.snapshot(), before, single_blocks)

    # 2. bursts: one slot's worth of txs at once
    h1, before = c.height(), c.snapshot()
    burst_ms = []
    for b in range(args.bursts):
        meters = [f"B{b}-{i}" for i in range(args.burst)]
        start = time.perf_counter()
        for m in meters:
            submit(m)
        await c.until(lambda meters=meters: c.all_have(meters))
        burst_ms.append((time.perf_counter() - start) * 1000)
    burst = _delta(c.snapshot(), before, args.bursts)
    burst_blocks = (c.height() - h1) / args.bursts

    # 3. idle: tips only (no heartbeat block within the run)
    await asyncio.sleep(args.bench_tip_ms / 1000 + 0.5)
    before = c.snapshot()
    await asyncio.sleep(args.idle_s)
    empty_blocks = max(1, int(args.idle_s * 1000 // args.bench_tip_ms))  # tip periods
    empty = _delta(c.snapshot(), before, empty_blocks)

    report(
        c, args, latencies_ms, burst_ms, burst_blocks, tx_sizes, single, burst, empty, empty_blocks
    )


def report(
    c: Community,
    args: argparse.Namespace,
    latencies_ms: list[float],
    burst_ms: list[float],
    burst_blocks: float,
    tx_sizes: list[int],
    single: dict[str, tuple[float, float, float, float]],
    burst: dict[str, tuple[float, float, float, float]],
    empty: dict[str, tuple[float, float, float, float]],
    empty_blocks: int,
) -> None:
    lat = sorted(latencies_ms)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(
        f"{args.validators} validators + 2 members over mosquitto (MQTT 5, QoS 1, loopback), "
        f"AddMeter tx {statistics.mean(tx_sizes):.0f} B, durable={args.durable}"
    )
    print(
        f"commit latency (submit at v0 -> committed on all {len(c.peers)} nodes), {len(lat)} txs: "
        f"p50 {statistics.median(lat):.0f} ms, p99 {p99:.0f} ms"
    )
    print(
        f"burst of {args.burst} txs: {statistics.median(burst_ms):.0f} ms to commit on all "
        f"(median of {len(burst_ms)}), {burst_blocks:.1f} blocks per burst"
    )
    print(
        f"\nbytes on each node's link (TCP payload, both directions); {empty_blocks} idle tip "
        f"periods in {args.idle_s} s"
    )
    print(
        f"{'node':<7} {'role':<26} {'1-tx block':>10} {'burst':>9} {'tip':>9} "
        f"{'msgs/tip':>10} {'dups/tip':>10} {'~TCP/IP hdr/tip':>17}"
    )
    for p in c.links():
        s, b, e = single[p.name], burst[p.name], empty[p.name]
        print(
            f"{p.name:<7} {p.role:<26} {s[0]:>10.0f} {b[0]:>9.0f} {e[0]:>9.0f} {e[2]:>10.1f} "
            f"{e[3]:>10.1f} {e[1] * TCP_IP_HEADER_BYTES:>17.0f}"
        )
    print(
        f"\nprojection per day at real time (idle tip every {PROD_TIP_S} s all day, "
        f"{SLOTS_PER_DAY} slots with one burst block, no heartbeat block, keepalive "
        f"{KEEPALIVE_S} s), MQTT payload + est. TCP/IP headers:"
    )
    heartbeats = DAY_S // PROD_TIP_S  # tip periods (the name kept for the formula below)
    keepalive = (DAY_S // KEEPALIVE_S) * 2 * (2 + TCP_IP_HEADER_BYTES)
    for p in c.links():
        b, e = burst[p.name], empty[p.name]
        payload = heartbeats * e[0] + SLOTS_PER_DAY * b[0]
        headers = (heartbeats * e[1] + SLOTS_PER_DAY * b[1]) * TCP_IP_HEADER_BYTES + keepalive
        print(
            f"  {p.name:<7} {payload / 1e6:6.2f} MB payload + {headers / 1e6:5.2f} MB headers "
            f"= {(payload + headers) / 1e6:6.2f} MB/day"
        )
    print(
        "  (keepalive alone: PINGREQ+PINGRESP every 60 s = "
        f"{keepalive / 1e3:.0f} kB/day with headers; idle traffic resets the timer, so this "
        "is an upper bound)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--txs", type=int, default=30)
    parser.add_argument("--burst", type=int, default=19)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=12.0)
    parser.add_argument(
        "--bench-tip-ms",
        type=int,
        default=2000,
        help="idle tip period during the bench (bytes per tip period are measured)",
    )
    parser.add_argument("--durable", action="store_true", help="fsync LMDB (as in production)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mqtt-consensus-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
