"""Bytes per day on a light member's link (docs/spec/light.md §6; issue 5 target <= 1 MB/day).

Usage: .venv/bin/python bench/member_traffic.py [--members 19] [--slots 12] [--slot-s 3]
       [--idle-s 15] [--heartbeat-ms 1000] [--validators 4] [--day-heartbeat-s 900]
       [--keepalive-s 60] [--reads-per-day 24] [--probe-s 960]

One process, one mosquitto on 127.0.0.1 (MQTT 5, QoS 1): ``--validators`` real validators
(ledger.node.Node, LMDB, production consensus timeouts), two light members (ledger.light_node
.LightNode subscribed to ``header`` and their inbox only, each with a ProvenReader as lemd's REST
API uses it) behind counting TCP proxies, and ``--members`` − 2 further members whose SetMeasure
the validators receive directly (they make the blocks realistic; their links are not counted).

Phases (meter time accelerated: one 15-min slot every ``--slot-s`` real seconds):

1. idle: heartbeat blocks only (every ``--heartbeat-ms``): bytes per verified header;
2. busy: ``--slots`` slots; in each every member signs its SetMeasure; a light member publishes
   its own and proves the inclusion of its previous one (as edge/light_submitter.py does):
   blocks per slot, and bytes per slot beyond the headers;
3. reads: on one light member, through the ProvenReader as ``GET /balance`` and ``GET /measure``
   use it: a balance round (3 keys) at a fresh header, the same read 20 more times at that
   header (a polling dashboard: the cache answers), and its own measured slots (one proof each).

Projection for a real-time day of the community: 96 slots × (blocks per slot headers + the
slot's own traffic) + heartbeat headers beyond the slots (``--day-heartbeat-s``; 0 with the
default 900 s, since every slot makes blocks) + MQTT keepalive PINGREQ/PINGRESP while the link
is otherwise silent (``--keepalive-s``; 3 segments each) + header probes in the idle gaps
(``--probe-s``: lemd probes after the heartbeat + 60 s of silence; it used to be 90 s, ≈ 9 probes
per gap) + ``--reads-per-day`` balance reads
(each at a new header) + every own measurement row proven once (the cache keeps it).
TCP/IP headers are estimated at 52 B per segment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import block as blk
from ledger import state
from ledger.consensus.engine import EngineConfig
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey, sha256
from ledger.light import LightClient
from ledger.light_node import LightNode
from ledger.light_reader import ProvenReader
from ledger.node import Node
from ledger.proofs import tx_query_of
from ledger.transport.base import CHANNELS, LIGHT_CHANNELS
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings
from tests.support.mosquitto import Mosquitto
from tests.support.proxy import FaultProxy
from tests.unit.ledger.helpers import ADMIN, GOV1, PARAMS, SLOT, Signer

DAY_S = 86_400
SLOTS_PER_DAY = 96
TCP_IP_HEADER_BYTES = 52
PING_PAYLOAD_BYTES = 4  # PINGREQ 2 B + PINGRESP 2 B
PING_SEGMENTS = 3  # PINGREQ, PINGRESP, the client's ACK
CHAIN = "bench-light"


@dataclass
class Link:
    """Counters of one member link: TCP payload both ways, socket reads (≈ segments)."""

    payload: int = 0
    reads: int = 0

    def __sub__(self, other: Link) -> Link:
        return Link(self.payload - other.payload, self.reads - other.reads)


@dataclass
class Light:
    node: LightNode
    reader: ProvenReader
    transport: MqttTransport
    proxy: FaultProxy
    key: SigningKey
    meter: str

    def link(self) -> Link:
        s = self.proxy.stats
        return Link(s.upstream_bytes + s.downstream_bytes, s.upstream_reads + s.downstream_reads)


@dataclass
class Bench:
    root: Path
    broker: Mosquitto
    args: argparse.Namespace
    validators: list[SigningKey] = field(default_factory=list)
    members: list[SigningKey] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    lights: list[Light] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validators = [
            SigningKey(sha256(b"bench-v%d" % i)) for i in range(self.args.validators)
        ]
        self.members = [SigningKey(sha256(b"bench-m%d" % i)) for i in range(self.args.members)]
        now_ms = int(time.time() * 1000)
        self.start_ms = now_ms - now_ms % SLOT - 40 * 96 * SLOT  # 40 days ago, aligned
        self.genesis = Genesis(
            chain_id=CHAIN,
            genesis_time_ms=self.start_ms - 60_000,
            validators=tuple((k.public_key, 10) for k in self.validators),
            admins=(ADMIN.public_key,),
            governance_keys=(GOV1.public_key,),
            governance_threshold=1,
            meters={f"meter-{i}": k.public_key for i, k in enumerate(self.members)},
            periods=(Period("bench", self.start_ms, self.start_ms + 30 * 96 * SLOT, PARAMS),),
        )

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
        for i in range(2):
            transport, proxy = await self._transport(f"m{i}", LIGHT_CHANNELS)
            light = LightClient(self.root / f"m{i}", self.genesis, durable=False)
            member = LightNode(light, transport, self.members[i], probe_s=5.0)
            self.lights.append(
                Light(member, ProvenReader(member), transport, proxy, self.members[i], f"meter-{i}")
            )
            self.tasks.append(asyncio.create_task(member.run(), name=f"m{i}"))

    async def stop(self) -> None:
        for node in self.nodes:
            await node.close()
        for m in self.lights:
            await m.transport.close()
            await m.proxy.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _measure(meter: str, slot_ms: int, wh: int) -> dict[str, object]:
    return {"meter_id": meter, "slot_start_ms": slot_ms, "import_wh": wh, "export_wh": 0,
            "quality": 0}  # fmt: skip


async def _busy(b: Bench) -> tuple[list[Link], int, int, int]:
    """``--slots`` slots of the whole community; returns per light member its link delta, the
    blocks made, those with txs, and the inclusion proofs verified."""
    signers = [Signer(k, CHAIN) for k in b.members]
    before = [m.link() for m in b.lights]
    height0 = b.nodes[0].app.height
    previous: list[bytes | None] = [None, None]
    proved = 0
    for n in range(b.args.slots):
        slot = b.start_ms + n * SLOT
        for i in range(2, len(b.members)):  # the other members: straight to a validator
            b.nodes[i % len(b.nodes)].submit_tx(
                signers[i]("SetMeasure", _measure(f"meter-{i}", slot, 200 + i))
            )
        for i, m in enumerate(b.lights):
            raw = signers[i]("SetMeasure", _measure(m.meter, slot, 250 + i))
            await m.node.submit(raw)
            before_raw = previous[i]
            if before_raw is not None:
                query = tx_query_of(before_raw)
                _, (result,) = await m.node.prove([("tx", query)], timeout_s=20)
                proved += isinstance(result, int)
            previous[i] = raw
        await asyncio.sleep(b.args.slot_s)
    await asyncio.sleep(1.0)
    links = [m.link() - x for m, x in zip(b.lights, before, strict=True)]
    return links, b.nodes[0].app.height - height0, _tx_blocks(b, height0), proved


def _tx_blocks(b: Bench, after: int) -> int:
    """Blocks with txs above ``after`` (the bench's heartbeat blocks between slots are not
    what a real-time day has: its heartbeat is 15 min, slots bring txs every 15 min)."""
    store = b.nodes[0].app.store
    empty = blk.txs_hash([])
    count = 0
    for height in range(after + 1, store.height + 1):
        header = store.header(height)
        count += header is not None and header.txs_hash != empty
    return count


async def _probe(b: Bench) -> Link:
    """Bytes of one header probe of an up-to-date member (``headers_req`` and its empty
    answer): what the prober costs in each idle stretch of ``probe_s``."""
    m = b.lights[1]
    before = m.link()
    await m.node.request_headers()
    await asyncio.sleep(1.0)
    return m.link() - before


async def _reads(b: Bench) -> tuple[Link, Link, Link]:
    """Bytes of one balance read (3 keys), of the same read repeated 20 times at the same
    header (a dashboard polling: served from the cache), and of proving the light member's own
    measured slots (``--slots`` keys, each proven once: meas/ rows never change)."""
    m = b.lights[0]
    account = state.account_id(m.key.public_key)
    keys = [state.k_balance(a) for a in (account, state.COMMUNITY, state.GRID)]
    await m.node.wait_height(m.node.light.height + 1, 20)  # a fresh header: nothing cached
    before = m.link()
    await m.reader.read(keys, wait_s=20)
    balance = m.link() - before
    before = m.link()
    for _ in range(20):
        await m.reader.read(keys, wait_s=20)
    polled = m.link() - before
    before = m.link()
    own = [state.k_measure(b.start_ms + i * SLOT, m.meter) for i in range(b.args.slots)]
    got = await m.reader.read(own, wait_s=20)
    assert all(e.status == "ok" for e in got.values()), "own slots proven"
    return balance, polled, m.link() - before


async def run(args: argparse.Namespace, workdir: Path) -> None:
    broker = Mosquitto(workdir / "broker")
    broker.start()
    b = Bench(workdir, broker, args)
    try:
        await b.start()
        await asyncio.sleep(3.0)  # initial header catch-up not counted
        idle0 = [m.link() for m in b.lights]
        h0 = [m.node.light.height for m in b.lights]
        await asyncio.sleep(args.idle_s)
        idle = [m.link() - x for m, x in zip(b.lights, idle0, strict=True)]
        headers = [m.node.light.height - h for m, h in zip(b.lights, h0, strict=True)]
        busy, blocks, tx_blocks, proved = await _busy(b)
        reads = await _reads(b)
        probe = await _probe(b)
        report(args, b, idle, headers, busy, (blocks, tx_blocks), proved, reads, probe)
    finally:
        await b.stop()
        broker.kill()


def report(
    args: argparse.Namespace,
    b: Bench,
    idle: list[Link],
    headers: list[int],
    busy: list[Link],
    blocks_made: tuple[int, int],
    proved: int,
    reads: tuple[Link, Link, Link],
    probe: Link,
) -> None:
    balance, polled, own_rows = reads
    # Probes in each ~15-min gap between slot blocks, one per probe_s of header silence.
    probes = SLOTS_PER_DAY * int((DAY_S / SLOTS_PER_DAY - 1) // args.probe_s)
    probe_bytes = probes * (probe.payload + probe.reads * TCP_IP_HEADER_BYTES)
    print(
        f"header probe of an up-to-date member: {probe.payload} B in {probe.reads} segments; "
        f"{probes} a day at probe_s {args.probe_s:g} s = {probe_bytes / 1e6:.3f} MB"
    )
    blocks, tx_blocks = blocks_made
    print(
        f"{args.validators} validators, {args.members} members (2 light ones measured); idle "
        f"{args.idle_s} s (heartbeat {args.heartbeat_ms} ms), then {args.slots} slots, one per "
        f"{args.slot_s} s: {blocks} blocks, {tx_blocks} with txs "
        f"({tx_blocks / args.slots:.2f} per slot), {proved} tx-inclusion proofs verified"
    )
    hb_headers = max(0, DAY_S // args.day_heartbeat_s - SLOTS_PER_DAY)
    day_headers = round(SLOTS_PER_DAY * tx_blocks / args.slots) + hb_headers
    pings = DAY_S // args.keepalive_s
    ping_bytes = pings * PING_PAYLOAD_BYTES
    ping_tcpip = pings * PING_SEGMENTS * TCP_IP_HEADER_BYTES
    per_row = own_rows.payload / args.slots
    per_row_seg = own_rows.reads / args.slots
    print(
        f"reads: balance (3 keys) {balance.payload} B in {balance.reads} segments; the same "
        f"read 20 times more at that header: {polled.payload} B (cache); {args.slots} own "
        f"measurement rows: {own_rows.payload} B = {per_row:.0f} B per row (proven once each)"
    )
    for i in range(len(b.lights)):
        per_header = idle[i].payload / max(1, headers[i])
        per_header_seg = idle[i].reads / max(1, headers[i])
        slot_payload = max(0.0, busy[i].payload - blocks * per_header) / args.slots
        slot_seg = max(0.0, busy[i].reads - blocks * per_header_seg) / args.slots
        payload = (
            day_headers * per_header + SLOTS_PER_DAY * slot_payload + ping_bytes
            + probes * probe.payload
        )  # fmt: skip
        segments = day_headers * per_header_seg + SLOTS_PER_DAY * slot_seg + probes * probe.reads
        tcpip = segments * TCP_IP_HEADER_BYTES + ping_tcpip
        read_bytes = args.reads_per_day * (
            balance.payload + balance.reads * TCP_IP_HEADER_BYTES
        ) + SLOTS_PER_DAY * (per_row + per_row_seg * TCP_IP_HEADER_BYTES)
        print(
            f"m{i}: {per_header:.0f} B per header ({headers[i]} idle headers); "
            f"{slot_payload:.0f} B per slot beyond headers (SetMeasure + inclusion proof)"
        )
        print(
            f"    real-time day ({day_headers} headers, {SLOTS_PER_DAY} slots, {pings} keepalive "
            f"pings at {args.keepalive_s} s): {payload / 1e6:.3f} MB payload + "
            f"{tcpip / 1e6:.3f} MB TCP/IP (est.) = {(payload + tcpip) / 1e6:.3f} MB; with "
            f"{args.reads_per_day} balance reads and every own row read once: "
            f"{(payload + tcpip + read_bytes) / 1e6:.3f} MB (target <= 1 MB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=19)
    parser.add_argument("--slots", type=int, default=12, help="busy phase slots")
    parser.add_argument("--slot-s", type=float, default=3.0, help="real s per slot")
    parser.add_argument("--idle-s", type=float, default=15.0, help="idle phase [s]")
    parser.add_argument("--heartbeat-ms", type=int, default=1000, help="bench heartbeat")
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--day-heartbeat-s", type=int, default=900, help="production heartbeat")
    parser.add_argument("--keepalive-s", type=int, default=60, help="production keepalive")
    parser.add_argument("--reads-per-day", type=int, default=24)
    parser.add_argument(
        "--probe-s", type=float, default=960.0, help="lemd's probe: heartbeat + 60 s (was 90)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
