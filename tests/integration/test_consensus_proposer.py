"""The block's proposer field is checked against the round's proposer (docs/spec/consensus.md §4).

Four real ledger validators on the in-memory transport; one of them is byzantine in a narrow
way: every block it proposes names another validator as proposer (a block field that
attributes proposer rewards/blame, which membership alone would let it forge).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from ledger import block as blk
from ledger.consensus.clock import LoopClock
from ledger.consensus.engine import Engine, EngineConfig
from ledger.consensus.messages import Commit
from ledger.node import Node
from ledger.transport.memory import MemoryNetwork
from tests.integration.test_consensus_ledger import (
    VALIDATORS,
    _genesis,
    _meters_committed,
    community,
)
from tests.unit.ledger.helpers import ADMIN, N1, Signer


def _name_someone_else(node: Node, victim: bytes) -> None:
    """Make ``node`` build blocks that name ``victim`` as proposer (signed by node's key)."""
    port = node.port

    def prepare_block(height: int, last_commit: Commit | None, time_ms: int) -> bytes:
        last = last_commit.to_value() if last_commit is not None else None
        return port.app.prepare(height, time_ms, victim, port.mempool.reap(), last).block_bytes

    port.prepare_block = prepare_block  # type: ignore[method-assign]


def _all_have(nodes: list[Node], count: int) -> Callable[[], bool]:
    return lambda: all(_meters_committed(n, count) for n in nodes)


async def test_a_block_naming_another_proposer_is_refused_and_others_commit(
    tmp_path: Path,
) -> None:
    """Proposals whose block names a key other than the round's proposer get no prevote
    (counted ``wrong_block_proposer``); the txs commit in rounds of honest proposers and
    every committed block names the proposer of a round of its height."""
    async with community(tmp_path) as c:
        nodes = [c.start(f"v{i}", key) for i, key in enumerate(VALIDATORS)]
        _name_someone_else(nodes[0], VALIDATORS[1].public_key)
        admin = Signer(ADMIN, c.genesis.chain_id)
        for i in range(8):
            nodes[1].submit_tx(admin("AddMeter", {"meter_id": f"M{i}", "account": N1.public_key}))
            await c.until(_all_have(nodes, i + 1), 30)
        refused = sum(n.engine.stats["wrong_block_proposer"] for n in nodes[1:] if n.engine)
        assert refused >= 1  # v0 proposed at least once in 8+ heights of a 4-round-robin
        v0_rounds = 0
        for h in range(1, nodes[1].app.height + 1):
            raw, vs = nodes[1].store.block(h), nodes[1].cstore.load_valset(h)
            assert raw is not None
            assert vs is not None
            commit = Commit.from_value(nodes[1].store.commit_at(h))
            named = blk.decode(raw).header.proposer
            assert named in {vs.proposer(r) for r in range(commit.round + 1)}
            if vs.proposer(0) == VALIDATORS[0].public_key:
                v0_rounds += 1
                assert commit.round >= 1  # v0's round-0 block was refused
        assert v0_rounds >= 1


async def test_a_fresh_proposal_must_name_its_signer() -> None:
    """proposer_field_ok: fresh proposal → exactly the signer; re-proposal or decided block →
    the proposer of a round up to the given round; a name outside the set never passes."""
    # Checked on a real engine over a node's stores; nothing runs (no transport traffic).
    g = _genesis()
    with tempfile.TemporaryDirectory() as tmp:
        net = MemoryNetwork(LoopClock(), seed=1)
        node = Node.open(
            Path(tmp),
            g,
            net.transport("v0"),
            key=VALIDATORS[0],
            config=EngineConfig(g.chain_id),
            durable=False,
        )
        try:
            engine = Engine(
                EngineConfig(g.chain_id),
                node.port,
                LoopClock(),
                lambda *_: None,
                node.cstore,
                key=VALIDATORS[0],
                sign_state=node.sign_state,
            )
            vs = engine.valset
            p0, p1 = vs.proposer(0), vs.proposer(1)
            outsider = N1.public_key

            def block_naming(key: bytes) -> bytes:
                return node.app.prepare(1, g.genesis_time_ms + 1, key, [], None).block_bytes

            assert engine.proposer_field_ok(block_naming(p0), 0, fresh=p0)
            assert not engine.proposer_field_ok(block_naming(p1), 0, fresh=p0)
            assert engine.proposer_field_ok(block_naming(p0), 1)  # re-proposed in round ≥ 1
            assert engine.proposer_field_ok(block_naming(p1), 1)
            assert p0 != p1
            assert not engine.proposer_field_ok(block_naming(p1), 0)
            assert not engine.proposer_field_ok(block_naming(outsider), 64)
        finally:
            node.cstore.close()
            if node.sign_state is not None:
                node.sign_state.close()
            node.store.close()
