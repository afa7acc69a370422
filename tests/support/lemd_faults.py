"""Fault scenarios on real ``lemd`` processes (``lemctl testnet init`` + edge/launch.py).

Spec: docs/spec/consensus.md §9b. The testnet's nodes (validators + members with simulated
meters writing SetMeasure txs) each reach the broker through their own :class:`FaultProxy`
(the generated ``lemd.toml`` is pointed at the proxy); a recorder on the broker keeps every
consensus payload. Invariants after each scenario: block hash and app hash equal at every
common height in every node's store (``lemctl ledger show --json`` on the stopped stores for
the top common height, the stores read directly for all heights), no key signed two values for
one (height, round, step), progress after the fault healed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge.launch import Community
from edge.testnet import TestnetPlan, free_port_block, init_testnet
from ledger.consensus import wire
from ledger.consensus.messages import Proposal, Vote
from ledger.keys import sha256
from ledger.store import Store
from ledger.transport.base import CHANNELS
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings
from tests.support.ledger_proc import LINK
from tests.support.mosquitto import Mosquitto
from tests.support.proxy import FaultProxy

CHAIN = "lemdfault"
STEP_S = 90.0


class LemdCluster:
    """A testnet of lemd processes behind one proxy each."""

    def __init__(self, root: Path, validators: int, members: int, seed: int) -> None:
        self.root, self.rng = root, random.Random(seed)
        self.validators, self.members = validators, members
        self.broker = Mosquitto(root / "broker")
        self.proxies: list[FaultProxy] = []
        self.recorded: list[bytes] = []
        self.community: Community | None = None
        self._recorder: MqttTransport | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.broker.start()
        manifest = init_testnet(
            TestnetPlan(
                validators=self.validators,
                members=self.members,
                out_dir=self.root / "testnet",
                broker=self.broker.url,
                speed=900.0,
                chain_id=CHAIN,
                base_port=free_port_block(2 * self.members + 2, first=35000),
            )
        )
        for entry in manifest.nodes:
            proxy = FaultProxy("127.0.0.1", self.broker.port)
            await proxy.start()
            self.proxies.append(proxy)
            path = manifest.config_path(entry)
            path.write_text(path.read_text().replace(self.broker.url, proxy.url))
        settings = MqttSettings.from_urls(
            CHAIN, "recorder", [self.broker.url], broadcast_channels=CHANNELS, **LINK
        )
        self._recorder = MqttTransport(settings)
        await self._recorder.start()
        await self._recorder.wait_connected(10)
        self._task = asyncio.create_task(self._record())
        self.community = Community(manifest)
        self.community.anchor(lead_s=2.0)
        self.community.start()

    async def _record(self) -> None:
        assert self._recorder is not None
        async for message in self._recorder.messages():
            if message.channel == "consensus":
                self.recorded.append(message.payload)

    async def close(self) -> None:
        if self.community is not None:
            for node in self.community.nodes:
                if node.running and node.process is not None:  # a stopped one must hear SIGTERM
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(node.process.pid, signal.SIGCONT)
            self.community.stop()
        if self._task is not None:
            self._task.cancel()
        if self._recorder is not None:
            await self._recorder.close()
        for proxy in self.proxies:
            await proxy.close()
        self.broker.kill()

    async def heights(self) -> list[int]:
        assert self.community is not None
        return [(s or {}).get("height", -1) for s in await self.community.statuses()]

    async def until_height(self, height: int, nodes: list[int], what: str) -> None:
        deadline = time.monotonic() + STEP_S
        while time.monotonic() < deadline:
            hs = await self.heights()
            if min(hs[k] for k in nodes) >= height:
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"not within {STEP_S} s: {what}; heights {await self.heights()}")

    async def progress(self, blocks: int, nodes: list[int]) -> int:
        target = max(await self.heights()) + blocks
        await self.until_height(target, nodes, f"height {target} on nodes {nodes}")
        return target

    def check(self) -> dict[str, Any]:
        """Agreement at every common height (stores of the stopped nodes), no double sign."""
        assert self.community is not None
        manifest = self.community.manifest
        chains, full = [], []
        for entry in manifest.nodes:
            if not (manifest.root / entry.dir / "data" / "ledger").exists():
                continue  # a light member (the default): its verified headers, checked below
            full.append(entry)
            store = Store(manifest.root / entry.dir / "data" / "ledger", readonly=True)
            try:
                chains.append(
                    [
                        (sha256(store.block(h) or b""), store.app_hash_at(h))
                        for h in range(1, store.height + 1)
                    ]
                )
            finally:
                store.close()
        common = min(len(c) for c in chains)
        for h in range(common):
            if len({c[h] for c in chains}) != 1:
                raise AssertionError(f"height {h + 1}: nodes disagree")
        shown = {
            json.dumps(_show(manifest.root / e.dir / "data" / "ledger", common), sort_keys=True)
            for e in full
        }
        _check_light_members(manifest, full[0])
        if len(shown) != 1:
            raise AssertionError(f"lemctl ledger show differs at height {common}: {shown}")
        doubles = _double_signers(self.recorded)
        if doubles:
            raise AssertionError(f"{len(doubles)} keys double-signed")
        if min(p.stats.upstream_bytes for p in self.proxies) == 0:
            raise AssertionError("a node's traffic did not go through its proxy")
        return {
            "heights": [len(c) for c in chains],
            "common": common,
            "recorded": len(self.recorded),
            "double_signers": 0,
            "proxied_bytes": sum(
                p.stats.upstream_bytes + p.stats.downstream_bytes for p in self.proxies
            ),
        }


def _check_light_members(manifest: Any, reference: Any) -> None:
    """Every header a light member verified is the block a validator stored at that height."""
    from ledger.genesis import Genesis
    from ledger.light import LightClient

    genesis = Genesis.from_json((manifest.root / "genesis.json").read_text())
    store = Store(manifest.root / reference.dir / "data" / "ledger", readonly=True)
    try:
        for entry in manifest.nodes:
            path = manifest.root / entry.dir / "data" / "light"
            if (manifest.root / entry.dir / "data" / "ledger").exists() or not path.exists():
                continue
            light = LightClient(path, genesis)
            try:
                for h in range(1, min(light.height, store.height) + 1):
                    trusted, stored = light.header(h), store.header(h)
                    if trusted is not None and (stored is None or stored.hash != trusted.hash):
                        raise AssertionError(f"{entry.name}: verified header {h} differs")
            finally:
                light.close()
    finally:
        store.close()


def _show(store: Path, height: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "ledger", "show", "--data-dir", str(store),
         "--height", str(height), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    shown = json.loads(done.stdout)
    return {k: shown[k] for k in ("height", "hash", "app_hash")}


def _double_signers(payloads: list[bytes]) -> set[bytes]:
    seen: dict[tuple[bytes, int, int, int], set[bytes]] = {}
    for payload in payloads:
        msg = wire.decode(CHAIN, payload)
        if isinstance(msg, wire.CompactProposal):  # signed like a full one
            msg = msg.proposal
        if isinstance(msg, Vote):
            seen.setdefault((msg.validator, *msg.hrs), set()).add(msg.block_hash or b"nil")
        elif isinstance(msg, Proposal):
            seen.setdefault((msg.proposer, *msg.hrs), set()).add(msg.block_hash)
    return {k[0] for k, v in seen.items() if len(v) > 1}


async def kill_validator(c: LemdCluster) -> str:
    assert c.community is not None
    await c.progress(1, list(range(c.members)))
    k = c.rng.randrange(c.validators)
    c.community.kill_node(k)
    others = [i for i in range(c.members) if i != k]
    await c.progress(2, others)
    c.community.start_node(k)
    await c.until_height(max(await c.heights()), [k], f"node{k} catches up")
    return f"lemd node{k} killed -9, others went on, restarted, caught up"


async def sigstop_validator(c: LemdCluster) -> str:
    assert c.community is not None
    await c.progress(1, list(range(c.members)))
    k = c.rng.randrange(c.validators)
    c.community.nodes[k].process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    others = [i for i in range(c.members) if i != k]
    await c.progress(1, others)
    await asyncio.sleep(8.0)
    c.community.nodes[k].process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    await c.until_height(max(await c.heights()), [k], f"node{k} catches up")
    return f"lemd node{k} SIGSTOPped ~10 s, continued, caught up"


async def link_cut(c: LemdCluster) -> str:
    await c.progress(1, list(range(c.members)))
    k = c.rng.randrange(c.validators)
    c.proxies[k].cut()
    await c.progress(2, [i for i in range(c.members) if i != k])
    c.proxies[k].heal()
    await c.until_height(max(await c.heights()), [k], f"node{k} syncs")
    return f"lemd node{k}'s broker link cut for 2 blocks, healed, synced"


async def broker_restart(c: LemdCluster) -> str:
    await c.progress(1, list(range(c.members)))
    c.broker.kill()
    await asyncio.sleep(2.0)
    c.broker.start()
    await c.progress(2, list(range(c.members)))
    return "broker killed -9 and restarted: lemd nodes reconnected, 2 more blocks"


LEMD_SCENARIOS: dict[str, Callable[[LemdCluster], Awaitable[str]]] = {
    "lemd: kill -9 random validator": kill_validator,
    "lemd: SIGSTOP validator": sigstop_validator,
    "lemd: node-broker link cut": link_cut,
    "lemd: broker killed and restarted": broker_restart,
}


async def run(name: str, root: Path, validators: int = 4, members: int = 6, seed: int = 0
              ) -> dict[str, Any]:  # fmt: skip
    """Run one lemd scenario on a fresh testnet and check the invariants."""
    started = time.monotonic()
    c = LemdCluster(root, validators, members, seed)
    try:
        await c.start()
        outcome = await LEMD_SCENARIOS[name](c)
        await c.progress(1, list(range(members)))
    finally:
        await c.close()
    return {"scenario": name, "outcome": outcome, "seconds": time.monotonic() - started,
            **c.check()}  # fmt: skip
