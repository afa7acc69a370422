"""Bytes per day on a light member's link (docs/spec/light.md §6; issue 5 target <= 1 MB/day).

Usage: .venv/bin/python bench/member_traffic.py [--idle-s 20] [--seconds 60]
       [--heartbeat-ms 1000] [--slot-s 3] [--validators 4] [--tx-blocks 1]

One process, one mosquitto on 127.0.0.1 (MQTT 5, QoS 1): ``--validators`` real validators
(ledger.node.Node, LMDB, production consensus timeouts) and two light members
(ledger.light_node.LightNode: subscribed to ``header`` and their inbox only), each node behind
a counting TCP proxy. Meter time is accelerated: every ``--slot-s`` real seconds each member
signs the SetMeasure of the next 15-min slot, publishes it, and asks a validator for the
tx-inclusion proof of its previous one (how a light member learns its record was committed).
The chain makes a heartbeat block every ``--heartbeat-ms`` (production: 60 s), so a minute
of bench shows many blocks. Prints per member link (TCP payload, both directions, and the MQTT
PUBLISH bytes the transport counts): bytes per verified header (idle phase: heartbeat blocks
only), per slot beyond its headers (busy phase: SetMeasure + proof round trip), and the
projection for a real-time day: (1,440 heartbeat blocks + 96 slots x ``--tx-blocks``
blocks with txs) headers + 96 SetMeasure + 96 proofs + MQTT keepalive, with an estimate of
TCP/IP headers (52 B per segment).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.consensus.engine import EngineConfig
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey, sha256
from ledger.light import LightClient
from ledger.light_node import LightNode
from ledger.node import Node
from ledger.transport.base import CHANNELS, LIGHT_CHANNELS
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings
from tests.support.mosquitto import Mosquitto
from tests.support.proxy import FaultProxy
from tests.unit.ledger.helpers import ADMIN, GOV1, PARAMS, SLOT, Signer

DAY_HEARTBEATS = 1440
SLOTS_PER_DAY = 96
KEEPALIVE_S = 60
TCP_IP_HEADER_BYTES = 52
CHAIN = "bench-light"


def _genesis(validators: list[SigningKey], members: list[SigningKey], start_ms: int) -> Genesis:
    return Genesis(
        chain_id=CHAIN,
        genesis_time_ms=start_ms - 60_000,
        validators=tuple((k.public_key, 10) for k in validators),
        admins=(ADMIN.public_key,),
        governance_keys=(GOV1.public_key,),
        governance_threshold=1,
        meters={f"meter-{i}": k.public_key for i, k in enumerate(members)},
        periods=(Period("bench", start_ms, start_ms + 30 * 96 * SLOT, PARAMS),),
    )


class Bench:
    def __init__(self, root: Path, broker: Mosquitto, args: argparse.Namespace) -> None:
        self.root, self.broker, self.args = root, broker, args
        self.validators = [SigningKey(sha256(b"bench-v%d" % i)) for i in range(args.validators)]
        self.members = [SigningKey(sha256(b"bench-m%d" % i)) for i in range(2)]
        now_ms = int(time.time() * 1000)
        self.start_ms = now_ms - now_ms % SLOT - 40 * 96 * SLOT  # 40 days ago, aligned
        self.genesis = _genesis(self.validators, self.members, self.start_ms)
        self.tasks: list[asyncio.Task[None]] = []
        self.nodes: list[Node] = []
        self.lights: list[tuple[LightNode, MqttTransport, FaultProxy]] = []

    async def _transport(
        self, name: str, channels: tuple[str, ...]
    ) -> tuple[MqttTransport, FaultProxy]:
        proxy = FaultProxy("127.0.0.1", self.broker.port)
        await proxy.start()
        settings = MqttSettings.from_urls(CHAIN, name, [proxy.url], broadcast_channels=channels)
        transport = MqttTransport(settings)
        await transport.start()
        await transport.wait_connected(10)
        return transport, proxy

    async def start(self) -> None:
        config = EngineConfig(CHAIN, heartbeat_ms=self.args.heartbeat_ms)
        for i, key in enumerate(self.validators):
            transport, _ = await self._transport(f"v{i}", CHANNELS)
            node = Node.open(
                self.root / f"v{i}", self.genesis, transport, key=key, config=config, durable=False
            )
            self.nodes.append(node)
            self.tasks.append(asyncio.create_task(node.run(), name=f"v{i}"))
        for i, key in enumerate(self.members):
            transport, proxy = await self._transport(f"m{i}", LIGHT_CHANNELS)
            light = LightClient(self.root / f"m{i}", self.genesis, durable=False)
            node = LightNode(light, transport, key, probe_s=5.0)
            self.lights.append((node, transport, proxy))
            self.tasks.append(asyncio.create_task(node.run(), name=f"m{i}"))

    async def stop(self) -> None:
        for node in self.nodes:
            await node.close()
        for _, transport, proxy in self.lights:
            await transport.close()
            await proxy.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _member_loop(b: Bench, index: int, counts: dict[str, int]) -> None:
    node, _, _ = b.lights[index]
    signer = Signer(b.members[index], CHAIN)
    previous: bytes | None = None
    slot = b.start_ms
    while True:
        body = {
            "meter_id": f"meter-{index}", "slot_start_ms": slot, "import_wh": 250 + index,
            "export_wh": 0, "quality": 0,
        }  # fmt: skip
        raw = signer("SetMeasure", body)
        await node.submit(raw)
        counts["measures"] += 1
        if previous is not None:
            try:
                _, (result,) = await node.prove([("tx", sha256(previous))], timeout_s=10)
                counts["proved" if isinstance(result, int) else "not_proved"] += 1
            except TimeoutError:
                counts["proof_timeout"] += 1
        previous, slot = raw, slot + SLOT
        await asyncio.sleep(b.args.slot_s)


def _link(proxy: FaultProxy, transport: MqttTransport) -> tuple[int, int, int]:
    s, t = proxy.stats, transport.stats
    return (
        s.upstream_bytes + s.downstream_bytes,
        s.upstream_reads + s.downstream_reads,
        t.bytes_in + t.bytes_out,
    )


async def _phase(
    b: Bench, seconds: float, active: bool
) -> tuple[list[tuple[int, int, int]], list[int], list[dict[str, int]]]:
    """Link counters, headers verified and slot counts of each member over one phase."""
    before = [_link(p, t) for _, t, p in b.lights]
    heights0 = [n.light.height for n, _, _ in b.lights]
    keys = ("measures", "proved", "not_proved", "proof_timeout")
    counts = [dict.fromkeys(keys, 0) for _ in b.lights]
    loops = []
    if active:
        loops = [asyncio.create_task(_member_loop(b, i, counts[i])) for i in range(len(b.lights))]
    await asyncio.sleep(seconds)
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    await asyncio.sleep(1.0)  # last answers in
    after = [_link(p, t) for _, t, p in b.lights]
    deltas = [
        tuple(a - c for a, c in zip(x, y, strict=True)) for x, y in zip(after, before, strict=True)
    ]
    headers = [n.light.height - h for (n, _, _), h in zip(b.lights, heights0, strict=True)]
    return deltas, headers, counts  # type: ignore[return-value]


async def run(args: argparse.Namespace, workdir: Path) -> None:
    broker = Mosquitto(workdir / "broker")
    broker.start()
    b = Bench(workdir, broker, args)
    try:
        await b.start()
        await asyncio.sleep(3.0)  # initial header catch-up not counted
        idle = await _phase(b, args.idle_s, active=False)
        busy = await _phase(b, args.seconds, active=True)
        report(args, b, idle, busy)
    finally:
        await b.stop()
        broker.kill()


Phase = tuple[list[tuple[int, int, int]], list[int], list[dict[str, int]]]


def report(args: argparse.Namespace, b: Bench, idle: Phase, busy: Phase) -> None:
    chain_height = max(n.app.height for n in b.nodes)
    print(
        f"{args.validators} validators + 2 light members; idle {args.idle_s} s then "
        f"{args.seconds} s with one slot per {args.slot_s} s; heartbeat {args.heartbeat_ms} ms; "
        f"chain height {chain_height}"
    )
    blocks_day = DAY_HEARTBEATS + SLOTS_PER_DAY * args.tx_blocks
    for i, (node, _, _) in enumerate(b.lights):
        (link0, reads0, mqtt0), h0 = idle[0][i], idle[1][i]
        (link1, reads1, mqtt1), h1 = busy[0][i], busy[1][i]
        c = busy[2][i]
        per_header = link0 / max(1, h0)
        per_header_tcpip = reads0 * TCP_IP_HEADER_BYTES / max(1, h0)
        slots = max(1, c["measures"])
        per_slot = max(0.0, link1 - h1 * per_header) / slots
        per_slot_tcpip = max(0.0, reads1 * TCP_IP_HEADER_BYTES - h1 * per_header_tcpip) / slots
        day = blocks_day * per_header + SLOTS_PER_DAY * per_slot
        day_tcpip = blocks_day * per_header_tcpip + SLOTS_PER_DAY * per_slot_tcpip
        print(
            f"m{i}: idle: {h0} headers verified, {link0} B on the link ({mqtt0} B MQTT PUBLISH) "
            f"= {per_header:.0f} B per header; busy: {h1} headers, {c['measures']} SetMeasure, "
            f"{c['proved']} tx-inclusion proofs verified ({c['not_proved']} refused, "
            f"{c['proof_timeout']} timed out), {link1} B ({mqtt1} B MQTT) = {per_slot:.0f} B "
            f"per slot beyond its headers"
        )
        print(
            f"    per real-time day ({blocks_day} headers, {SLOTS_PER_DAY} slots): "
            f"{day / 1e6:.3f} MB TCP payload + {day_tcpip / 1e6:.3f} MB TCP/IP headers (est.) "
            f"= {(day + day_tcpip) / 1e6:.3f} MB (target <= 1 MB); no keepalive PINGs while a "
            f"header arrives at least every {KEEPALIVE_S} s"
        )
        print(f"    light store: {node.light.stored_heights()} header rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="busy phase [s]")
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle phase [s]")
    parser.add_argument("--heartbeat-ms", type=int, default=1000)
    parser.add_argument("--slot-s", type=float, default=3.0)
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--tx-blocks", type=int, default=1, help="blocks with txs per slot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
