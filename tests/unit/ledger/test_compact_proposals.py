"""Compact proposals: tx hashes on the wire, blocks rebuilt from the mempool, the full
proposal asked for when a tx is missing (ledger/node.py, ledger/consensus/engine.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from ledger import codec
from ledger.consensus import wire
from ledger.consensus.clock import LoopClock
from ledger.consensus.core import TimeoutConfig
from ledger.consensus.engine import EngineConfig
from ledger.consensus.errors import MessageError
from ledger.consensus.messages import Proposal
from ledger.keys import SigningKey, sha256
from ledger.mempool import Mempool
from ledger.node import Node
from ledger.transport.memory import LinkFaults, MemoryNetwork
from tests.unit.ledger.helpers import ADMIN, N1, VAL, Signer, genesis

VALIDATORS = [SigningKey(sha256(f"compact-validator-{i}".encode())) for i in range(4)]
FAST = TimeoutConfig(400, 100, 300, 100, 300, 100)


def _add(signer: Signer, meter: str) -> bytes:
    return signer("AddMeter", {"meter_id": meter, "account": N1.public_key})


@asynccontextmanager
async def _four(root: Path, **config: int) -> AsyncIterator[dict[str, Node]]:
    """Four validators on one in-memory network (records every consensus payload sent)."""
    g = genesis(validators=tuple((k.public_key, 10) for k in VALIDATORS))
    network = MemoryNetwork(LoopClock(), seed=3, faults=LinkFaults(min_delay_ms=1, max_delay_ms=3))
    nodes: dict[str, Node] = {}
    for i, key in enumerate(VALIDATORS):
        engine = EngineConfig(g.chain_id, timeouts=FAST, sync_retry_ms=300, **config)  # type: ignore[arg-type]
        nodes[f"v{i}"] = Node.open(
            root / f"v{i}", g, network.transport(f"v{i}"), key=key, config=engine, durable=False
        )
    tasks = [asyncio.create_task(n.run()) for n in nodes.values()]
    while any(n.engine is None for n in nodes.values()):  # noqa: ASYNC110 -- run() builds it
        await asyncio.sleep(0.01)
    try:
        yield nodes
    finally:
        for n in nodes.values():
            await n.close()
        await asyncio.gather(*tasks)


async def _until(nodes: dict[str, Node], height: int, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while min(n.app.height for n in nodes.values()) < height:  # noqa: ASYNC110 -- polled
            await asyncio.sleep(0.02)


def _sent(node: Node) -> list[bytes]:
    """Wrap the engine's publisher to record the consensus payloads it sends."""
    assert node.engine is not None
    out: list[bytes] = []
    original = node.engine._send

    def recording(channel: str, payload: bytes, to: str | None) -> None:
        if channel in ("consensus", "block"):
            out.append(payload)
        original(channel, payload, to)

    node.engine._send = recording
    return out


async def test_proposals_travel_compact_and_every_validator_rebuilds_the_block(
    tmp_path: Path,
) -> None:
    """With txs gossiped to all, the proposal on the wire is a ``cproposal`` (hashes, not
    txs), the other validators rebuild it without asking, and all store the same block."""
    async with _four(tmp_path) as nodes:
        sent = {name: _sent(n) for name, n in nodes.items()}
        admin = Signer(ADMIN, nodes["v0"].app.chain_id)
        for i in range(20):
            nodes["v0"].submit_tx(_add(admin, f"M{i}"))
        await _until(nodes, 1)
        kinds = [codec.decode(p)[0] for out in sent.values() for p in out]
        assert "cproposal" in kinds
        assert "cblock" in kinds  # the decision is announced compact too
        assert "proposal" not in kinds
        assert "block" not in kinds
        rebuilt = sum(n.engine.stats["compact_rebuilt"] for n in nodes.values() if n.engine)
        asked = sum(n.engine.stats["proposal_requested"] for n in nodes.values() if n.engine)
        assert rebuilt >= 3
        assert asked == 0
        assert len({n.app.store.block(1) for n in nodes.values()}) == 1


async def test_a_validator_missing_a_tx_asks_for_the_full_proposal(tmp_path: Path) -> None:
    """A tx only three validators hold (no gossip): the fourth cannot rebuild the compact
    block, asks the proposer for the full proposal, gets it, and commits the same block."""
    async with _four(tmp_path, compact_wait_ms=1, republish_ms=10_000) as nodes:
        raw = _add(Signer(ADMIN, nodes["v0"].app.chain_id), "ONLY3")
        for name in ("v0", "v1", "v2"):
            nodes[name].mempool.add(raw)  # admitted locally, never gossiped
        for name in ("v0", "v1", "v2"):
            engine = nodes[name].engine
            assert engine is not None
            engine.notify_tx()
        await _until(nodes, 1)
        lacking = nodes["v3"].engine
        assert lacking is not None
        assert lacking.stats["proposal_requested"] >= 1
        answered = sum(n.engine.stats["proposal_answered"] for n in nodes.values() if n.engine)
        assert answered >= 1
        blocks = {n.app.store.block(1) for n in nodes.values()}
        assert len(blocks) == 1
        assert raw in nodes["v3"].app.decode_block(blocks.pop() or b"").txs


def test_compact_round_trip_is_byte_exact(tmp_path: Path) -> None:
    """compact_block then expand_block on another node's mempool gives the very same block
    bytes (so the same header hash and txs hash); a missing tx gives None; a broken compact
    form is malformed."""
    from ledger.consensus.wal import ConsensusStore
    from ledger.node import LedgerPort
    from tests.unit.ledger.helpers import open_app

    proposer_app = open_app(tmp_path / "a")
    other_app = open_app(tmp_path / "b")
    admin = Signer(ADMIN)
    txs = [_add(admin, f"C{i}") for i in range(5)]
    pool_a, pool_b = Mempool(proposer_app), Mempool(other_app)
    for raw in txs:
        pool_a.add(raw)
        pool_b.add(raw)
    block = proposer_app.prepare(1, proposer_app.last_block_time_ms + 1, VAL.public_key, txs, None)
    port_a = LedgerPort(
        proposer_app, pool_a, ConsensusStore(tmp_path / "ca", durable=False), VAL, print
    )
    port_b = LedgerPort(
        other_app, pool_b, ConsensusStore(tmp_path / "cb", durable=False), None, print
    )
    compact = port_a.compact_block(block.block_bytes)
    assert compact is not None
    assert len(compact) < len(block.block_bytes)
    assert port_b.expand_block(compact) == block.block_bytes
    assert port_b.block_id(block.block_bytes) == port_a.block_id(block.block_bytes)
    short = Mempool(other_app)
    for raw in txs[:-1]:
        short.add(raw)
    port_short = LedgerPort(
        other_app, short, ConsensusStore(tmp_path / "cs", durable=False), None, print
    )
    assert port_short.expand_block(compact) is None
    with pytest.raises(MessageError):
        port_b.expand_block(codec.encode([1, [b"x"], None]))


async def test_a_forged_compact_proposal_is_refused_before_any_rebuild(tmp_path: Path) -> None:
    """A compact proposal with a wrong signature is counted bad_signature: no rebuild, no
    request for the full proposal, no prevote for it."""
    async with _four(tmp_path) as nodes:
        v1 = nodes["v1"]
        assert v1.engine is not None
        admin = Signer(ADMIN, v1.app.chain_id)
        for i in range(3):
            nodes["v0"].submit_tx(_add(admin, f"F{i}"))
        await _until(nodes, 1)
        height = v1.engine.height
        forged = Proposal(
            height, 0, -1, b"\x01" * 32, 1, VALIDATORS[0].public_key, b"", b"\x00" * 64
        )
        payload = wire.encode_compact_proposal(
            v1.app.chain_id, forged, codec.encode([[], [], None])
        )
        before = dict(v1.engine.stats)
        v1.engine.receive("consensus", "v0", payload)
        assert v1.engine.stats["bad_signature"] == before.get("bad_signature", 0) + 1
        assert v1.engine.stats["proposal_requested"] == before.get("proposal_requested", 0)
        assert v1.engine.stats["compact_missing"] == before.get("compact_missing", 0)


async def test_members_follow_compact_announcements_or_sync_when_txs_are_missing(
    tmp_path: Path,
) -> None:
    """A keyless member that got the tx gossip rebuilds the announced block; one that lacks
    the txs counts compact_block_missing, asks for blocks by sync and ends with the same
    chain."""
    async with _four(tmp_path) as nodes:
        g = nodes["v0"].app.store.genesis
        network = nodes["v0"].transport._network  # type: ignore[attr-defined]
        engine = EngineConfig(g.chain_id, timeouts=FAST, sync_retry_ms=300)
        early = Node.open(
            tmp_path / "early",
            g,
            network.transport("early"),
            key=None,
            config=engine,
            durable=False,
        )
        late = Node.open(
            tmp_path / "late", g, network.transport("late"), key=None, config=engine, durable=False
        )
        network.partition(["late"], ["v0", "v1", "v2", "v3", "early"])
        tasks = [asyncio.create_task(early.run()), asyncio.create_task(late.run())]
        await asyncio.sleep(0.05)
        announced = {name: _sent(n) for name, n in nodes.items()}
        admin = Signer(ADMIN, g.chain_id)
        for i in range(5):
            nodes["v0"].submit_tx(_add(admin, f"E{i}"))
        await _until({**nodes, "early": early}, 1)
        assert early.engine is not None
        assert early.engine.stats["followed"] >= 1
        cblock = next(
            p for out in announced.values() for p in out if codec.decode(p)[0] == "cblock"
        )
        assert late.engine is not None
        assert late.app.height == 0
        late.engine.receive("block", "v0", cblock)  # it never saw the txs
        assert late.engine.stats["compact_block_missing"] == 1
        assert late.app.height == 0
        network.heal()
        await _until({"late": late}, 1)
        assert late.app.store.block(1) == nodes["v0"].app.store.block(1)
        for node in (early, late):
            await node.close()
        await asyncio.gather(*tasks)
