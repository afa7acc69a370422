"""Validator and light nodes fed garbled and forged messages keep running.

Anyone with a broker login can write to the broadcast channels it may use and to any node's
inbox (systemd/mosquitto/lem-broker.acl), so every field of every message kind is hostile
input. A seeded generator builds well-shaped arrays of each kind with wrong types, lengths,
heights and hashes, plus random bytes; the node gets them through its message handler (the
path the transport feeds) and must neither raise nor stop, then still commit a tx.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest

from ledger import codec
from ledger.consensus.clock import LoopClock
from ledger.consensus.core import TimeoutConfig
from ledger.consensus.engine import EngineConfig
from ledger.errors import CodecError
from ledger.light import LightClient
from ledger.light_node import LightNode
from ledger.node import Node
from ledger.transport.base import CHANNELS, Message
from ledger.transport.memory import MemoryNetwork
from tests.unit.ledger.helpers import ADMIN, N1, VAL, Signer, genesis

KINDS = {
    "consensus": ("vote", "proposal", "cproposal", "prop_req"),
    "block": ("block", "cblock", "tip"),
    "sync_req": ("sync_req", "snap_req", "snap_chunk_req"),
    "sync_resp": ("block", "sync_pruned", "snap_manifest", "snap_none", "snap_chunk"),
    "proof_req": ("proof_req",),
    "proof_resp": ("proof_resp",),
    "header": ("hdr",),
    "join": ("join",),
    "tx": ("txs",),
}
FAST = TimeoutConfig(propose_ms=200, propose_delta_ms=50, prevote_ms=100, prevote_delta_ms=50,
                     precommit_ms=100, precommit_delta_ms=50)  # fmt: skip


def _field(rng: random.Random, height: int) -> Any:
    """One hostile field: plausible heights and hashes beside wrong types and sizes."""
    choices: list[Any] = [
        height, height + 1, height - 1, 0, -1, 2**63, True, None, "", "h", b"", b"\x00" * 32,
        rng.randbytes(rng.choice((1, 31, 32, 33, 64, 65))), [], [height], {"a": 1}, 1.5,
    ]  # fmt: skip
    value = rng.choice(choices)
    return float(height) if isinstance(value, float) else value


def _payload(rng: random.Random, head: list[Any], height: int, max_fields: int) -> bytes:
    """Random bytes, or ``head`` followed by hostile fields, canonical where it can be (a float
    field has no canonical form: then msgpack's own bytes, which the codec must refuse)."""
    if rng.random() < 0.15:
        return rng.randbytes(rng.randrange(0, 300))
    value = [*head, *(_field(rng, height) for _ in range(rng.randrange(0, max_fields)))]
    try:
        return codec.encode(value)
    except CodecError:
        return msgpack.packb(value, use_bin_type=True)


def _message(rng: random.Random, chain_id: str, height: int) -> tuple[str, bytes]:
    channel = rng.choice(CHANNELS)
    return channel, _payload(rng, [rng.choice(KINDS[channel]), chain_id], height, 8)


@pytest.mark.timeout(60)
async def test_hostile_messages_on_every_channel_never_stop_a_validator(tmp_path: Path) -> None:
    """1,500 garbled or forged messages across all channels: none raises out of the node's
    handler, the node's task stays alive, and a tx submitted afterwards is committed."""
    g = genesis(validators=((VAL.public_key, 10),), meters={"M1": N1.public_key})
    clock = LoopClock()
    network = MemoryNetwork(clock, seed=5)
    config = EngineConfig(g.chain_id, timeouts=FAST, republish_ms=300, sync_retry_ms=300)
    node = Node.open(tmp_path / "v", g, network.transport("v"), key=VAL, config=config,
                     durable=False, clock=clock)  # fmt: skip
    task = asyncio.create_task(node.run())
    admin = Signer(ADMIN, g.chain_id)
    try:
        async with asyncio.timeout(10):
            while node.engine is None:  # noqa: ASYNC110 -- set by run(), no event to await
                await asyncio.sleep(0.01)
        rng = random.Random(20261121)
        for _ in range(1500):
            height = node.engine.height if node.engine else 1
            channel, payload = _message(rng, g.chain_id, height)
            node._handle(Message(channel, "hostile", payload))
            if rng.random() < 0.05:
                await asyncio.sleep(0)  # let timers and the engine run between bursts
        assert not task.done()
        raw = admin("AddMeter", {"meter_id": "M9", "account": N1.public_key})
        node.submit_tx(raw)
        async with asyncio.timeout(20):
            while node.store.locate_tx(raw) is None:
                assert not task.done(), task.exception()
                await asyncio.sleep(0.02)
    finally:
        await node.close()
        await asyncio.gather(task, return_exceptions=True)


async def test_hostile_answers_never_stop_a_light_member(tmp_path: Path) -> None:
    """A light member's inbox takes anyone's direct messages: 1,500 garbled headers and proof
    answers are counted, none raises out of its handler, and its trusted height stays put."""
    g = genesis(validators=((VAL.public_key, 10),), meters={"M1": N1.public_key})
    network = MemoryNetwork(LoopClock(), seed=6)
    light = LightClient(tmp_path / "m", g, durable=False)
    member = LightNode(light, network.transport("m"), N1)
    rng = random.Random(20261122)
    kinds = {"proof_resp": ("proof_resp", "headers"), "header": ("hdr",)}
    for _ in range(1500):
        channel = rng.choice(("proof_resp", "header"))
        payload = _payload(rng, [rng.choice(kinds[channel])], 1, 6)
        await member.handle(Message(channel, "hostile", payload))
    assert light.height == 0
    assert member.stats["answer_malformed"] + member.stats["header_malformed"] > 1000
    light.close()
