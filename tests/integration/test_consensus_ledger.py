"""Real ledger nodes (LMDB stores, signed txs) running consensus over the in-memory transport.

Four validators and one member, each a :class:`ledger.node.Node` on the event loop with its own
temp directory; the member only follows verified blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from ledger import block as blk
from ledger import state
from ledger import tx as txm
from ledger.consensus import wire
from ledger.consensus.clock import LoopClock
from ledger.consensus.commit import verify_commit
from ledger.consensus.core import TimeoutConfig
from ledger.consensus.crash import BLOCK_STORED, NO_CRASH, CrashAt, CrashPoints, SimulatedCrash
from ledger.consensus.engine import EngineConfig
from ledger.consensus.messages import Commit, Step, Vote
from ledger.consensus.validators import ValidatorSet
from ledger.genesis import Genesis
from ledger.keys import SigningKey, sha256
from ledger.node import Node
from ledger.transport.memory import LinkFaults, MemoryNetwork
from tests.unit.ledger.helpers import ADMIN, N1, Signer, genesis

VALIDATORS = [SigningKey(sha256(f"ledger-validator-{i}".encode())) for i in range(4)]
FAST = TimeoutConfig(300, 100, 200, 100, 200, 100)


def _genesis() -> Genesis:
    return genesis(validators=tuple((k.public_key, 10) for k in VALIDATORS))


def _config(g: Genesis) -> EngineConfig:
    return EngineConfig(g.chain_id, timeouts=FAST, republish_ms=300, sync_retry_ms=300)


class Community:
    """Nodes sharing one in-memory network; started and stopped as asyncio tasks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.genesis = _genesis()
        self.network = MemoryNetwork(
            LoopClock(), seed=1, faults=LinkFaults(min_delay_ms=2, max_delay_ms=2)
        )
        self.nodes: dict[str, Node] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.expected_failures: set[str] = set()

    def start(self, node_id: str, key: SigningKey | None, crash: CrashPoints = NO_CRASH) -> Node:
        node = Node.open(
            self.root / node_id,
            self.genesis,
            self.network.transport(node_id),
            key=key,
            config=_config(self.genesis),
            durable=False,
            crash=crash,
        )
        self.nodes[node_id] = node
        self.tasks[node_id] = asyncio.create_task(node.run(), name=f"node-{node_id}")
        return node

    async def stop(self, node_id: str) -> None:
        await self.nodes[node_id].close()
        task = self.tasks.pop(node_id)
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                for node_id, task in self.tasks.items():
                    if task.done() and node_id not in self.expected_failures:
                        task.result()  # surface a crashed node's exception
                await asyncio.sleep(0.02)


@asynccontextmanager
async def community(root: Path) -> AsyncIterator[Community]:
    c = Community(root)
    try:
        yield c
    finally:
        for node_id in list(c.tasks):
            await c.stop(node_id)


def _meters_committed(node: Node, count: int) -> bool:
    with node.store.state_reader() as base:
        st = state.Overlay(base)
        return all(state.meter_owner(st, f"M{i}") is not None for i in range(count))


async def test_four_validators_commit_signed_txs_and_a_member_follows(tmp_path: Path) -> None:
    """Admin txs submitted at one validator are committed by all; every node holds the same
    blocks and app hashes; each block's last commit verifies; the member never signs."""
    async with community(tmp_path) as c:
        for i, key in enumerate(VALIDATORS):
            c.start(f"v{i}", key)
        member = c.start("m0", N1)
        admin = Signer(ADMIN, c.genesis.chain_id)
        for i in range(12):
            c.nodes["v0"].submit_tx(
                admin("AddMeter", {"meter_id": f"M{i}", "account": N1.public_key})
            )
        await c.until(lambda: all(_meters_committed(n, 12) for n in c.nodes.values()))
        top = min(n.app.height for n in c.nodes.values())
        assert top >= 1
        for h in range(1, top + 1):
            assert len({n.store.block(h) for n in c.nodes.values()}) == 1
            assert len({n.store.app_hash_at(h) for n in c.nodes.values()}) == 1
        vset = ValidatorSet.from_powers({k.public_key: 10 for k in VALIDATORS})
        for h in range(1, top + 1):
            commit = Commit.from_value(member.store.commit_at(h))
            block_hash = member.port.block_id(member.store.block(h) or b"")
            assert verify_commit(c.genesis.chain_id, vset, h, block_hash, commit) >= 30
        assert member.status()["role"] == "member"
        assert c.nodes["v0"].status()["role"] == "validator"
        assert member.engine is not None
        assert member.engine.stats["followed"] == member.app.height
        assert member.sign_state is not None
        assert member.sign_state.last is None


async def test_stopped_validator_restarts_from_disk_and_catches_up(tmp_path: Path) -> None:
    """A validator stopped for several blocks resumes from its LMDB stores, syncs the missed
    blocks (verified by their commits) and is needed again for the next ones."""
    async with community(tmp_path) as c:
        for i, key in enumerate(VALIDATORS):
            c.start(f"v{i}", key)
        admin = Signer(ADMIN, c.genesis.chain_id)

        def add(i: int) -> None:
            c.nodes["v0"].submit_tx(
                admin("AddMeter", {"meter_id": f"M{i}", "account": N1.public_key})
            )

        add(0)
        await c.until(lambda: all(_meters_committed(n, 1) for n in c.nodes.values()))
        await c.stop("v3")
        for i in range(1, 5):
            add(i)
            await c.until(
                lambda i=i: all(
                    _meters_committed(n, i + 1)
                    for n in c.nodes.values()
                    if n.engine and not n.engine.stopped
                )
            )  # type: ignore[misc]
        missed = c.nodes["v0"].app.height
        restarted = c.start("v3", VALIDATORS[3])
        await c.until(lambda: restarted.app.height >= missed)
        await c.stop("v2")  # from here on v3's votes are needed
        add(5)
        await c.until(
            lambda: _meters_committed(restarted, 6) and _meters_committed(c.nodes["v0"], 6)
        )
        assert restarted.store.block(missed) == c.nodes["v0"].store.block(missed)
        assert restarted.engine is not None
        assert restarted.engine.stats["followed"] >= 1


async def test_double_vote_becomes_one_committed_evidence_record(tmp_path: Path) -> None:
    """Two conflicting prevotes signed by v3 reach every node; the honest validators each report
    an Evidence tx, and the ledger records the offence exactly once, identically everywhere."""
    async with community(tmp_path) as c:
        for i, key in enumerate(VALIDATORS):
            c.start(f"v{i}", key)
        admin = Signer(ADMIN, c.genesis.chain_id)
        c.nodes["v0"].submit_tx(admin("AddMeter", {"meter_id": "M0", "account": N1.public_key}))
        await c.until(lambda: all(_meters_committed(n, 1) for n in c.nodes.values()))
        height = c.nodes["v0"].app.height + 1
        evil = VALIDATORS[3]
        for block_hash in (sha256(b"x"), sha256(b"y")):
            vote = Vote(Step.PREVOTE, height, 5, block_hash, 1, evil.public_key)
            payload = wire.encode_vote(c.genesis.chain_id, vote.signed(evil, c.genesis.chain_id))
            c.network.publish("intruder", "consensus", payload)
        key = f"evid/{evil.public_key.hex()}/{height:012d}/{5:06d}".encode()

        def recorded(node: Node) -> bool:
            with node.store.state_reader() as base:
                return base.get(key) is not None

        await c.until(lambda: all(recorded(n) for n in c.nodes.values()))
        c.nodes["v0"].submit_tx(admin("AddMeter", {"meter_id": "M1", "account": N1.public_key}))
        await c.until(lambda: all(_meters_committed(n, 2) for n in c.nodes.values()))
        evidence_txs = [
            raw
            for h in range(1, c.nodes["v0"].app.height + 1)
            for raw in blk.decode(c.nodes["v0"].store.block(h) or b"").txs
            if txm.decode(raw).kind == "Evidence"
        ]
        assert len(evidence_txs) == 1
        assert sum(n.engine.stats["equivocation"] for n in c.nodes.values() if n.engine) >= 3


async def test_a_failing_node_stops_with_its_error_and_restarts_cleanly(tmp_path: Path) -> None:
    """An error inside consensus (here a crash point right after the block is stored) ends
    Node.run with that error, not a log line; restarted on its stores the node rejoins."""
    async with community(tmp_path) as c:
        for i, key in enumerate(VALIDATORS[:3]):
            c.start(f"v{i}", key)
        c.expected_failures.add("v3")
        c.start("v3", VALIDATORS[3], crash=CrashAt(BLOCK_STORED))
        admin = Signer(ADMIN, c.genesis.chain_id)
        c.nodes["v0"].submit_tx(admin("AddMeter", {"meter_id": "M0", "account": N1.public_key}))
        await c.until(lambda: c.tasks["v3"].done())
        assert isinstance(c.tasks["v3"].exception(), SimulatedCrash)
        assert c.nodes["v3"].app.height == 1  # the block was stored before the crash point
        await c.stop("v3")
        c.expected_failures.clear()
        restarted = c.start("v3", VALIDATORS[3])
        await c.stop("v2")  # v3 is needed from here on
        c.nodes["v0"].submit_tx(admin("AddMeter", {"meter_id": "M1", "account": N1.public_key}))
        await c.until(
            lambda: _meters_committed(restarted, 2) and _meters_committed(c.nodes["v0"], 2)
        )
