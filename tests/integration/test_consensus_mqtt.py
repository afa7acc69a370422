"""Four real validators and a member (LMDB stores, signed txs, BFT consensus) over mosquitto.

All in one process and one event loop for speed; each node has its own MqttTransport (its own
TCP connection and client id), so everything between nodes crosses the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from ledger import state
from ledger.consensus.core import TimeoutConfig
from ledger.consensus.engine import EngineConfig
from ledger.genesis import Genesis
from ledger.keys import SigningKey, sha256
from ledger.node import Node
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings
from tests.support.mosquitto import Mosquitto
from tests.support.nodes import FAST
from tests.support.proxy import FaultProxy
from tests.unit.ledger.helpers import ADMIN, N1, Signer, genesis

VALIDATORS = [SigningKey(sha256(f"mqtt-validator-{i}".encode())) for i in range(4)]
TIMEOUTS = TimeoutConfig(300, 100, 200, 100, 200, 100)


class MqttCommunity:
    """Validator nodes, each on its own MQTT connection to one broker."""

    def __init__(
        self,
        root: Path,
        broker: Mosquitto,
        proxies: dict[str, FaultProxy] | None = None,
        heartbeat_ms: int = 60_000,
    ) -> None:
        self.root = root
        self.broker = broker
        self.proxies = proxies or {}
        self.heartbeat_ms = heartbeat_ms
        self.genesis: Genesis = genesis(validators=tuple((k.public_key, 10) for k in VALIDATORS))
        self.nodes: dict[str, Node] = {}
        self.transports: dict[str, MqttTransport] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, node_id: str, key: SigningKey | None) -> Node:
        proxy = self.proxies.get(node_id)
        url = proxy.url if proxy is not None else self.broker.url
        settings = MqttSettings.from_urls(self.genesis.chain_id, node_id, [url], **FAST)
        transport = MqttTransport(settings)
        await transport.start()
        await transport.wait_connected(5)
        config = EngineConfig(
            self.genesis.chain_id,
            timeouts=TIMEOUTS,
            republish_ms=300,
            sync_retry_ms=300,
            heartbeat_ms=self.heartbeat_ms,
        )
        node = Node.open(
            self.root / node_id, self.genesis, transport, key=key, config=config, durable=False
        )
        self.nodes[node_id], self.transports[node_id] = node, transport
        self.tasks[node_id] = asyncio.create_task(node.run(), name=f"node-{node_id}")
        return node

    async def stop_all(self) -> None:
        for node_id, node in self.nodes.items():
            await node.close()  # closes its transport too
            await asyncio.wait_for(self.tasks[node_id], 5)

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        """Wait for ``predicate``; a crashed node's exception surfaces at once; a timeout says
        where every node stands."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    for task in self.tasks.values():
                        if task.done():
                            task.result()
                    await asyncio.sleep(0.02)
        except TimeoutError:
            states = {
                name: (node.app.height, self.transports[name].connected, dict(node.stats))
                for name, node in self.nodes.items()
            }
            raise AssertionError(
                f"not reached in {timeout_s} s; (height, link, stats): {states}"
            ) from None


@asynccontextmanager
async def community(
    root: Path,
    broker: Mosquitto,
    proxies: dict[str, FaultProxy] | None = None,
    heartbeat_ms: int = 60_000,
) -> AsyncIterator[MqttCommunity]:
    c = MqttCommunity(root, broker, proxies, heartbeat_ms)
    try:
        for i, key in enumerate(VALIDATORS):
            await c.start(f"v{i}", key)
        await c.start("m0", N1)  # a member: follows verified blocks, never votes
        yield c
    finally:
        await c.stop_all()


def _meters_committed(node: Node, meter_ids: list[str]) -> bool:
    with node.store.state_reader() as base:
        st = state.Overlay(base)
        return all(state.meter_owner(st, m) is not None for m in meter_ids)


def _assert_identical_chains(c: MqttCommunity) -> int:
    top = min(n.app.height for n in c.nodes.values())
    for h in range(1, top + 1):
        assert len({n.store.block(h) for n in c.nodes.values()}) == 1, f"blocks differ at {h}"
        assert len({n.store.app_hash_at(h) for n in c.nodes.values()}) == 1, f"app hash at {h}"
    return top


async def test_four_validators_commit_signed_txs_over_mosquitto(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Txs submitted at one validator are committed by all four and followed by the member
    through the broker; every node holds the same blocks and app hashes."""
    async with community(tmp_path, mosquitto) as c:
        admin = Signer(ADMIN, c.genesis.chain_id)
        meters = [f"M{i}" for i in range(8)]
        for m in meters:
            c.nodes["v0"].submit_tx(admin("AddMeter", {"meter_id": m, "account": N1.public_key}))
        await c.until(lambda: all(_meters_committed(n, meters) for n in c.nodes.values()))

        assert _assert_identical_chains(c) >= 1
        assert c.nodes["m0"].status()["role"] == "member"
        for transport in c.transports.values():
            assert transport.stats.messages_out > 0
            assert transport.stats.messages_in > 0
            assert transport.stats.connects == 1


async def test_broker_killed_and_restarted_consensus_resumes(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The broker dies mid-run and comes back: every node reconnects and a tx submitted during
    the outage is committed by all nodes, on identical chains."""
    async with community(tmp_path, mosquitto) as c:
        admin = Signer(ADMIN, c.genesis.chain_id)

        def add(meter: str) -> None:
            c.nodes["v1"].submit_tx(
                admin("AddMeter", {"meter_id": meter, "account": N1.public_key})
            )

        add("before")
        await c.until(lambda: all(_meters_committed(n, ["before"]) for n in c.nodes.values()))
        mosquitto.kill()
        await c.until(lambda: not any(t.connected for t in c.transports.values()), 5)
        add("during")  # accepted locally, gossip waits in v1's outbox
        mosquitto.start()
        await c.until(lambda: all(t.stats.reconnects >= 1 for t in c.transports.values()), 10)
        await c.until(lambda: all(_meters_committed(n, ["during"]) for n in c.nodes.values()))
        add("after")
        await c.until(lambda: all(_meters_committed(n, ["after"]) for n in c.nodes.values()))

        assert _assert_identical_chains(c) >= 3


async def test_validator_link_cut_then_healed_syncs_what_it_missed(
    tmp_path: Path,
    mosquitto: Mosquitto,
    fault_proxy_factory: Callable[..., Awaitable[FaultProxy]],
) -> None:
    """v3's link is cut while the other three commit; healed, the next tx's traffic makes v3
    fetch the missed blocks by block sync over MQTT; all four end on identical chains."""
    proxy = await fault_proxy_factory(mosquitto.port)
    # A 1 s heartbeat: a node that healed after the last block of a burst learns it is
    # behind from the next block at the latest (production: 60 s).
    async with community(tmp_path, mosquitto, {"v3": proxy}, heartbeat_ms=1000) as c:
        admin = Signer(ADMIN, c.genesis.chain_id)

        def add(meter: str) -> None:
            c.nodes["v0"].submit_tx(
                admin("AddMeter", {"meter_id": meter, "account": N1.public_key})
            )

        add("first")
        await c.until(lambda: all(_meters_committed(n, ["first"]) for n in c.nodes.values()))
        proxy.cut()
        await c.until(lambda: not c.transports["v3"].connected, 5)
        missed = [f"missed-{i}" for i in range(3)]
        for m in missed:
            add(m)
        others = [c.nodes[f"v{i}"] for i in range(3)]
        await c.until(lambda: all(_meters_committed(n, missed) for n in others))
        assert not _meters_committed(c.nodes["v3"], missed)

        proxy.heal()
        await c.transports["v3"].wait_connected(5)
        # Nothing tells v3 it is behind until the next consensus traffic (or heartbeat): the
        # next tx's votes are from a height it has not reached, which starts block sync.
        add("after")
        await c.until(
            lambda: all(_meters_committed(n, [*missed, "after"]) for n in c.nodes.values())
        )

        assert _assert_identical_chains(c) >= 3
        assert c.transports["v3"].stats.reconnects >= 1
