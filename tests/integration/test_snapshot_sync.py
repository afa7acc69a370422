"""Snapshot sync over the in-memory transport (docs/spec/consensus.md §5b): four validators
prune a settled period's measurements and their block bodies; a node that joins later cannot
replay those blocks, falls back to a verified state snapshot, and then follows every block with
the same app hash as the validators — without ever holding a raw SetMeasure of the pruned day."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from ledger import block as blk
from ledger import codec, state
from ledger import tx as txm
from ledger.consensus.clock import LoopClock, TimerHandle
from ledger.consensus.core import TimeoutConfig
from ledger.consensus.engine import EngineConfig
from ledger.consensus.messages import Commit
from ledger.consensus.sync import encode_pruned
from ledger.genesis import Genesis
from ledger.keys import SigningKey, sha256
from ledger.node import Node
from ledger.transport.base import Message, Transport
from ledger.transport.memory import LinkFaults, MemoryNetwork
from tests.unit.ledger.helpers import ADMIN, N1, N2, Signer, genesis, measure, period

VALIDATORS = [SigningKey(sha256(f"snap-validator-{i}".encode())) for i in range(4)]
FAST = TimeoutConfig(300, 100, 200, 100, 200, 100)
SLOT = 900_000


class JumpClock:
    """The loop's wall clock plus an offset the test moves forward (slots end, periods close)."""

    def __init__(self) -> None:
        self._loop = LoopClock()
        self.offset_ms = 0

    def now_ms(self) -> int:
        return self._loop.now_ms() + self.offset_ms

    def call_later(self, delay_ms: int, fn: Callable[[], None]) -> TimerHandle:
        return self._loop.call_later(delay_ms, fn)


class Chain:
    """Four validators with retention on (dispute window 0) on one in-memory network."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.genesis: Genesis = genesis(
            validators=tuple((k.public_key, 10) for k in VALIDATORS),
            meters={"M1": N1.public_key, "M2": N2.public_key},
            dispute_window_ms=0,
        )
        self.clock = JumpClock()
        self.network = MemoryNetwork(
            self.clock, seed=3, faults=LinkFaults(min_delay_ms=1, max_delay_ms=2)
        )
        self.nodes: dict[str, Node] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.admin = Signer(ADMIN, self.genesis.chain_id)
        self.n1 = Signer(N1, self.genesis.chain_id)
        self.n2 = Signer(N2, self.genesis.chain_id)

    def start(
        self, node_id: str, key: SigningKey | None, transport: Transport | None = None
    ) -> Node:
        node = Node.open(
            self.root / node_id,
            self.genesis,
            transport or self.network.transport(node_id),
            key=key,
            config=EngineConfig(
                self.genesis.chain_id, timeouts=FAST, republish_ms=300, sync_retry_ms=300
            ),
            durable=False,
            clock=self.clock,
        )
        self.nodes[node_id] = node
        self.tasks[node_id] = asyncio.create_task(node.run(), name=f"node-{node_id}")
        return node

    async def until(self, predicate: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    for task in self.tasks.values():
                        if task.done():
                            task.result()
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def commit(self, *raws: bytes) -> None:
        """Submit at v0 and wait until every validator has every tx in a block."""
        for raw in raws:
            self.nodes["v0"].submit_tx(raw)
        validators = [self.nodes[f"v{i}"] for i in range(4)]
        await self.until(
            lambda: all(n.store.locate_tx(r) is not None for n in validators for r in raws),
            f"{len(raws)} txs committed",
        )

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.close()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


async def _settle_and_prune(c: Chain) -> tuple[int, list[bytes]]:
    """One period of two slots measured by two meters, solved and pruned; returns the period
    start and the measured SetMeasure envelopes."""
    now = c.clock.now_ms()
    start = now - now % SLOT + SLOT
    await c.commit(c.admin("SetMarketParameters", period("p", start, start + 2 * SLOT)))
    sent = []
    for i in range(2):
        c.clock.offset_ms = start + (i + 1) * SLOT - c.clock._loop.now_ms()
        raws = [
            c.n1("SetMeasure", measure("M1", start + i * SLOT, 400 + i, 0)),
            c.n2("SetMeasure", measure("M2", start + i * SLOT, 0, 300 + i)),
        ]
        await c.commit(*raws)
        sent += raws
    c.clock.offset_ms += 60_000
    await c.commit(c.admin("SolveMarkets", {"period_id": "p"}))
    await c.commit(c.admin("PruneMeasurements", {"period_id": "p"}))
    return start, sent


def _holds_raw(node: Node, raws: list[bytes]) -> bool:
    for h in range(1, node.store.height + 1):
        whole = node.store.block(h)
        if whole is not None and set(blk.decode(whole).txs) & set(raws):
            return True
    return False


def _failed(node: Node, count: int) -> bool:
    return node.stats["snapshot_failed"] == count


class Tamper:
    """Rewrites the validators' snapshot and header answers while ``mode`` is set (a lying
    server); remembers the chunk it spoiled."""

    def __init__(self, nodes: list[Node]) -> None:
        self.mode: str | None = None
        self.chunk = -1
        for node in nodes:
            assert node.snapshots is not None
            node.snapshots._send = self._wrap(node.snapshots._send)
            node.proofs._send = self._wrap(node.proofs._send)

    def _wrap(self, send: Callable[[str, bytes, str | None], None]) -> Any:
        def tampered(channel: str, payload: bytes, to: str | None) -> None:
            send(channel, self._spoil(payload), to)

        return tampered

    def _spoil(self, payload: bytes) -> bytes:
        value = codec.decode(payload)
        if self.mode == "header" and value[0] == "headers" and len(value[1]) > 1:
            value[1][-1][1][3] = bytes(32)  # app_hash field of the last header update
        elif self.mode == "manifest" and value[0] == "snap_manifest":
            value[4][0] = bytes(32)
        elif self.mode == "chunk" and value[0] == "snap_chunk" and value[6]:
            value[6][0][1] += b"!"
            self.chunk = value[3]
            self.mode = None  # one spoiled piece
        else:
            return payload
        return codec.encode(value)


@pytest.mark.timeout(60)
async def test_lying_servers_are_refused_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A forged header (app hash changed), a manifest whose roots do not give the signed app
    hash, and a spoiled chunk each fail the join with an error naming what was wrong (the chunk
    by number); nothing is written; the node then joins from honest answers."""
    caplog.set_level(logging.INFO)
    c = Chain(tmp_path)
    try:
        for i, key in enumerate(VALIDATORS):
            c.start(f"v{i}", key)
        await _settle_and_prune(c)
        tamper = Tamper([c.nodes[f"v{i}"] for i in range(4)])
        joiner = c.start("j", ADMIN)  # an admin's full node (snapshots: validators, admins)
        expected = {
            "header": "header chain: header",
            "manifest": "its roots do not give the app hash of verified header",
            "chunk": "of the snapshot at height",
        }
        for failures, mode in enumerate(("header", "manifest", "chunk"), start=1):
            tamper.mode = mode
            await c.until(partial(_failed, joiner, failures), mode, 30)
            assert expected[mode] in caplog.text, mode
            assert joiner.store.height < 3  # nothing restored
            joiner.fallback._join_after_s = 0.0  # retry now, not after JOIN_RETRY_S
        assert f"chunk {tamper.chunk} of the snapshot at height" in caplog.text
        await c.until(lambda: joiner.stats["snapshot_joined"] == 1, "honest join", 30)
        assert joiner.app.app_hash == c.nodes["v0"].store.app_hash_at(joiner.app.height)
    finally:
        await c.close()


@pytest.mark.timeout(60)
async def test_late_joiner_restores_a_snapshot_and_follows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Validators body-prune the pruned day's blocks (same block hashes and app hashes as
    before); the admin's fresh full node gets 'sync_pruned', logs the fallback, restores a verified
    snapshot, then follows later blocks with the validators' app hash at every height; no
    message it received and none of its stored blocks holds a measured SetMeasure, and its state
    has no meas/ row of the period."""
    caplog.set_level(logging.INFO)
    c = Chain(tmp_path)
    try:
        for i, key in enumerate(VALIDATORS):
            c.start(f"v{i}", key)
        start, sent = await _settle_and_prune(c)
        v0 = c.nodes["v0"]
        await c.until(lambda: not _holds_raw(v0, sent), "v0 body-pruned")
        validators = [c.nodes[f"v{i}"] for i in range(4)]
        await c.until(
            lambda: not any(_holds_raw(n, sent) for n in validators), "every validator pruned"
        )
        tip = v0.store.height
        hashes = {h: (v0.store.header(h), v0.store.app_hash_at(h)) for h in range(1, tip + 1)}
        assert all(
            len({c.nodes[f"v{i}"].store.app_hash_at(h) for i in range(4)}) == 1
            for h in range(1, tip + 1)
        )

        joiner = c.start("j", ADMIN)  # an admin's full node (snapshots: validators, admins)
        received: list[bytes] = []
        handle = joiner._handle  # record every payload the joiner is handed (before it runs)

        def recording(message: Message) -> None:
            received.append(message.payload)
            handle(message)

        joiner._handle = recording  # type: ignore[method-assign]
        await c.until(lambda: joiner.stats["snapshot_joined"] == 1, "snapshot join", 30)
        restored = joiner.store.height
        assert restored >= tip - 1
        assert "switching to state-snapshot sync" in caplog.text
        assert joiner.store.app_hash_at(restored) == v0.store.app_hash_at(restored)

        await c.commit(c.admin("AddMeter", {"meter_id": "M3", "account": N2.public_key}))
        await c.commit(c.admin("AddMeter", {"meter_id": "M4", "account": N2.public_key}))
        await c.until(lambda: joiner.store.height == v0.store.height, "joiner follows")
        for h in range(restored, v0.store.height + 1):
            assert joiner.store.app_hash_at(h) == v0.store.app_hash_at(h), h
        for h in range(1, tip + 1):  # body pruning moved no header, no app hash
            assert (v0.store.header(h), v0.store.app_hash_at(h)) == hashes[h]
        assert not _holds_raw(joiner, sent)
        assert len(received) > 10
        assert not any(raw in payload for payload in received for raw in sent)  # never received
        with joiner.store.state_reader() as base:
            rows = list(
                base.scan(state.k_measure(start, ""), state.k_measure(start + 2 * SLOT, ""))
            )
        assert rows == []
        assert all(txm.decode(r).kind == "SetMeasure" for r in sent)
    finally:
        await c.close()


@pytest.mark.timeout(60)
async def test_a_validator_that_lost_its_disk_rejoins_by_snapshot_and_votes(
    tmp_path: Path,
) -> None:
    """Three of four validators settle and prune a period while the fourth is down with an
    empty disk; it joins by snapshot and then votes with the right proposer priorities: with
    another validator stopped, the chain only progresses if the restored one takes part."""
    c = Chain(tmp_path)
    try:
        for i, key in enumerate(VALIDATORS[:3]):
            c.start(f"v{i}", key)
        c.commit = partial(_commit_at, c, ["v0", "v1", "v2"])  # type: ignore[method-assign]
        await _settle_and_prune(c)
        late = c.start("v3", VALIDATORS[3])
        await c.until(lambda: late.stats["snapshot_joined"] == 1, "validator snapshot join", 30)
        await c.nodes["v2"].close()
        c.tasks.pop("v2")
        c.commit = partial(_commit_at, c, ["v0", "v1", "v3"])  # type: ignore[method-assign]
        await c.commit(c.admin("AddMeter", {"meter_id": "M7", "account": N1.public_key}))
        assert late.engine is not None
        assert late.engine.is_validator
        assert late.app.app_hash == c.nodes["v0"].app.app_hash
    finally:
        await c.close()


async def _commit_at(c: Chain, names: list[str], *raws: bytes) -> None:
    """Submit at the first node and wait until every named node has every tx in a block."""
    for raw in raws:
        c.nodes[names[0]].submit_tx(raw)
    nodes = [c.nodes[n] for n in names]
    await c.until(
        lambda: all(n.store.locate_tx(r) is not None for n in nodes for r in raws),
        f"{len(raws)} txs committed at {names}",
    )


@pytest.mark.timeout(60)
async def test_a_forged_pruned_answer_does_not_stop_a_validator_at_the_live_height(
    tmp_path: Path,
) -> None:
    """Anyone may send 'sync_pruned' (a direct message, unsigned): a validator at the live
    height, which nothing verified shows behind, ignores it, whether it carries no commit or a
    commit whose signatures do not verify, and counts garbled ones; its engine never stops and
    it goes on deciding blocks with the others."""
    c = Chain(tmp_path)
    try:
        for i, key in enumerate(VALIDATORS):
            c.start(f"v{i}", key)
        await c.commit(c.admin("AddMeter", {"meter_id": "M5", "account": N1.public_key}))
        await c.commit(c.admin("AddMeter", {"meter_id": "M6", "account": N1.public_key}))
        v1 = c.nodes["v1"]
        engine = v1.engine
        assert engine is not None
        height = engine.height
        real = v1.cstore.load_commit(height - 1)
        assert real is not None
        forged_commit = Commit(
            height, 0, b"\x07" * 32, tuple(replace(s, signature=b"\x00" * 64) for s in real.sigs)
        )
        for commit in (None, forged_commit.to_value()):
            forged = encode_pruned(c.genesis.chain_id, height, height + 5, commit)
            v1._handle(Message("sync_resp", "forger", forged))
        assert v1.stats["sync_pruned_not_behind"] == 2
        for garbled in (["sync_pruned", c.genesis.chain_id, "h", 9, None], ["sync_pruned", 1]):
            v1._handle(Message("sync_resp", "forger", codec.encode(garbled)))
        assert v1.stats["snapshot_malformed"] == 2  # counted; the node goes on
        assert v1.engine is engine
        assert not v1.fallback.joining
        await c.commit(c.admin("AddMeter", {"meter_id": "M8", "account": N1.public_key}))
        assert v1.app.app_hash == c.nodes["v0"].app.app_hash
        assert _failed(v1, 0)
    finally:
        await c.close()


@pytest.mark.timeout(60)
async def test_close_during_a_join_does_not_wait_for_its_timeouts(tmp_path: Path) -> None:
    """A node closed while its join waits for silent servers stops at once: the join task is
    cancelled (its own waits would take up to 6 x 5 s per phase) and the scratch directory is
    removed."""
    c = Chain(tmp_path)
    try:
        for i, key in enumerate(VALIDATORS):
            c.start(f"v{i}", key)
        await _settle_and_prune(c)
        for i in range(4):
            server = c.nodes[f"v{i}"].snapshots
            assert server is not None
            server._send = lambda channel, payload, to: None  # silent servers
        joiner = c.start("j", ADMIN)  # an admin's full node (snapshots: validators, admins)
        await c.until(lambda: joiner.fallback.joining, "join under way")
        await joiner.close()
        await asyncio.wait_for(c.tasks.pop("j"), 3)
        assert not (tmp_path / "j" / "snapshot-join").exists()
    finally:
        await c.close()


@pytest.mark.timeout(60)
async def test_a_prosumer_full_node_is_refused_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A prosumer's full node cannot take a snapshot (it would read every member's recent
    measurements, Fig. 4): the join fails saying so, nothing is restored, and the node stays
    before the pruned blocks."""
    caplog.set_level(logging.INFO)
    c = Chain(tmp_path)
    try:
        for i, key in enumerate(VALIDATORS):
            c.start(f"v{i}", key)
        await _settle_and_prune(c)
        joiner = c.start("j", N1)
        await c.until(partial(_failed, joiner, 1), "refused join")
        assert "served to validators and admins only" in caplog.text
        assert joiner.stats["snapshot_joined"] == 0
        assert joiner.store.height < 3
    finally:
        await c.close()
