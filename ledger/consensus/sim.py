"""Deterministic in-process simulation of a validator community, with invariant checks.

Spec: docs/spec/consensus.md §Simulation. N engines with real keys, real signatures and real
LMDB sign-states and WALs run over a :class:`~ledger.transport.memory.MemoryNetwork` on a
:class:`~ledger.consensus.clock.VirtualClock`: a run is a function of its seed. Nodes can be
crashed (memory dropped, disk kept) and restarted, crash points injected, equivocators and
"twins" (one key on two nodes) added. Used by the tests and by bench/consensus_sim.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ledger import codec
from ledger.consensus import wire
from ledger.consensus.clock import VirtualClock, _VirtualTimer
from ledger.consensus.core import TimeoutConfig
from ledger.consensus.crash import NO_CRASH, CrashPoints, SimulatedCrash
from ledger.consensus.engine import Engine, EngineConfig
from ledger.consensus.errors import ForkError, MessageError
from ledger.consensus.messages import Proposal, Vote
from ledger.consensus.privval import SignState
from ledger.consensus.simapp import SimApp
from ledger.consensus.wal import ConsensusStore
from ledger.keys import SigningKey, sha256
from ledger.transport.base import Message
from ledger.transport.memory import LinkFaults, MemoryNetwork

SIM_TIMEOUTS = TimeoutConfig(
    propose_ms=1000,
    propose_delta_ms=500,
    prevote_ms=500,
    prevote_delta_ms=250,
    precommit_ms=500,
    precommit_delta_ms=250,
)


class _NodeClock:
    """The shared virtual clock as one node incarnation sees it: its timers die with it."""

    def __init__(self, node: SimNode, incarnation: int) -> None:
        self._node = node
        self._incarnation = incarnation

    def now_ms(self) -> int:
        return self._node.sim.clock.now_ms()

    def call_later(self, delay_ms: int, fn: Callable[[], None]) -> _VirtualTimer:
        def guarded() -> None:
            if self._node.incarnation == self._incarnation and self._node.alive:
                self._node.guard(fn)

        return self._node.sim.clock.call_later(delay_ms, guarded)


@dataclass
class SimNode:
    """One simulated node: key, durable directory, application, and the running engine."""

    sim: Simulation
    node_id: str
    key: SigningKey | None
    directory: Path
    app: SimApp
    byzantine: str = ""
    engine: Engine | None = None
    alive: bool = False
    incarnation: int = 0
    fork: ForkError | None = None
    crashes: int = 0
    _stores: tuple[SignState | None, ConsensusStore] | None = None

    def boot(self, crash: CrashPoints = NO_CRASH) -> None:
        """Open the stores, build the engine, resume from the WAL, and attach to the network."""
        self.incarnation += 1
        durable = self.sim.durable
        sign_state = (
            SignState(self.directory / "privval", crash=crash, durable=durable)
            if self.key is not None
            else None
        )
        store = ConsensusStore(self.directory / "cs", durable=durable)
        self._stores = (sign_state, store)
        self.alive = True
        self.engine = Engine(
            self.sim.config,
            self.app,
            _NodeClock(self, self.incarnation),
            self._send,
            store,
            key=self.key,
            sign_state=sign_state,
            crash=crash,
        )
        self.sim.network.attach(self.node_id, self._on_message)
        self.guard(self.engine.start)

    def crash(self) -> None:
        """Lose memory (engine, mempool, timers); keep the LMDB directories and the blocks."""
        if not self.alive:
            return
        self.alive = False
        self.crashes += 1
        self.sim.network.detach(self.node_id)
        if self.engine is not None:
            self.engine.stop()
        self.app.crash()
        if self._stores is not None:
            sign_state, store = self._stores
            if sign_state is not None:
                sign_state.close()
            store.close()
            self._stores = None

    def guard(self, fn: Callable[[], None]) -> None:
        """Run ``fn``; a simulated crash kills the node, a detected fork halts it."""
        try:
            fn()
        except SimulatedCrash:
            self.crash()
        except ForkError as exc:
            self.fork = exc
            self.crash()

    def _on_message(self, message: Message) -> None:
        if not self.alive or self.engine is None:
            return
        engine = self.engine
        if message.channel == "tx":
            if self.app.add_tx(message.payload):
                self.guard(engine.notify_tx)
            return
        self.guard(lambda: engine.receive(message.channel, message.sender, message.payload))

    def _send(self, channel: str, payload: bytes, to: str | None) -> None:
        self.sim.network.publish(self.node_id, channel, payload, to)
        if self.byzantine and channel == "consensus" and self.key is not None:
            self.sim.equivocate(self, payload)

    def submit(self, tx: bytes) -> None:
        """A client submits ``tx`` here: admitted locally and gossiped."""
        if self.alive and self.app.add_tx(tx):
            self.sim.network.publish(self.node_id, "tx", tx)
            if self.engine is not None:
                self.guard(self.engine.notify_tx)

    @property
    def height(self) -> int:
        """Last committed height."""
        return self.app.height()


@dataclass
class Simulation:
    """A community of simulated nodes on one virtual clock.

    Args:
        directory: where each node's LMDB directories go.
        validators: number of validators (keys derived from ``seed``).
        seed: seeds keys, faults and tx contents.
        powers: voting powers (default 1 each).
        members: number of non-validating follower nodes.
        faults: initial link faults.
        durable: fsync the stores (off by default: crashes here are simulated, not power cuts).
    """

    directory: Path
    validators: int = 4
    seed: int = 0
    powers: list[int] | None = None
    members: int = 0
    faults: LinkFaults = field(default_factory=LinkFaults)
    durable: bool = False
    chain_id: str = "sim"
    timeouts: TimeoutConfig = SIM_TIMEOUTS
    heartbeat_ms: int = 60_000  # the simulation's own default (short virtual runs)
    tip_ms: int = 300_000
    changes: dict[int, dict[int, int]] | None = None
    nodes: dict[str, SimNode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clock = VirtualClock()
        self.network = MemoryNetwork(self.clock, seed=self.seed, faults=self.faults)
        self.config = EngineConfig(
            chain_id=self.chain_id,
            timeouts=self.timeouts,
            heartbeat_ms=self.heartbeat_ms,
            tip_ms=self.tip_ms,
            republish_ms=1000,
            sync_retry_ms=1000,
        )
        self.rng = random.Random(self.seed)
        self.keys = [
            SigningKey(sha256(f"{self.seed}/{i}".encode())) for i in range(self.validators)
        ]
        powers = self.powers or [1] * self.validators
        self.genesis = {k.public_key: p for k, p in zip(self.keys, powers, strict=True)}
        self.signed: dict[tuple[bytes, int, int, int], set[bytes]] = {}
        self.network.add_tap(self._record_signature)
        self._tx_seq = 0
        for i, key in enumerate(self.keys):
            self.add_node(f"v{i}", key)
        for j in range(self.members):
            self.add_node(f"m{j}", None)

    def add_node(self, node_id: str, key: SigningKey | None, byzantine: str = "") -> SimNode:
        """Create and boot a node (a second node with an existing key makes a twin)."""
        changes = None
        if self.changes:
            changes = {
                h: {self.keys[i].public_key: p for i, p in c.items()}
                for h, c in self.changes.items()
            }
        app = SimApp(self.chain_id, self.genesis, changes)
        node = SimNode(self, node_id, key, self.directory / node_id, app, byzantine)
        self.nodes[node_id] = node
        node.boot()
        return node

    # ----------------------------------------------------------------- driving

    def submit(self, node_id: str | None = None, count: int = 1) -> list[bytes]:
        """Submit ``count`` fresh txs at ``node_id`` (default: a random live validator)."""
        txs = []
        for _ in range(count):
            self._tx_seq += 1
            tx = f"tx-{self.seed}-{self._tx_seq}".encode()
            target = node_id or self.rng.choice(
                [n.node_id for n in self.nodes.values() if n.alive and n.key is not None]
            )
            self.nodes[target].submit(tx)
            txs.append(tx)
        return txs

    def run_for(self, ms: int) -> None:
        """Advance virtual time by ``ms``."""
        self.clock.run_until(self.clock.now_ms() + ms)

    def run_until(self, predicate: Callable[[], bool], max_ms: int) -> bool:
        """Run until ``predicate()`` holds or ``max_ms`` of virtual time pass."""
        return self.clock.run_until(self.clock.now_ms() + max_ms, predicate)

    def all_reach(self, height: int, nodes: list[str] | None = None) -> Callable[[], bool]:
        """Predicate: every listed (default: every live honest) node committed ``height``."""
        ids = nodes or [n.node_id for n in self.nodes.values() if n.alive and not n.byzantine]
        return lambda: all(self.nodes[i].height >= height for i in ids)

    def crash(self, node_id: str) -> None:
        """Kill a node now (memory lost, disk kept)."""
        self.nodes[node_id].crash()

    def restart(self, node_id: str, crash: CrashPoints = NO_CRASH) -> None:
        """Boot a crashed node again from its directories."""
        self.nodes[node_id].boot(crash)

    def proposer(self, height: int, round_: int = 0) -> str:
        """Node id of the proposer of (height, round) as an up-to-date node computes it."""
        engine = next(
            n.engine for n in self.nodes.values() if n.alive and n.engine and n.height == height - 1
        )
        assert engine is not None
        key = engine.valset.proposer(round_)
        return next(n.node_id for n in self.nodes.values() if n.key and n.key.public_key == key)

    def chaos(self, rng: random.Random, steps: int) -> None:
        """Random txs, crashes (at most f nodes down at once), restarts, partitions, heals."""
        ids = sorted(self.nodes)
        f = (len(ids) - 1) // 3
        for _ in range(steps):
            self.submit(count=rng.randint(1, 3))
            event = rng.random()
            down = [i for i in ids if not self.nodes[i].alive]
            if event < 0.25 and len(down) < f:
                self.crash(rng.choice([i for i in ids if self.nodes[i].alive]))
            elif event < 0.5 and down:
                self.restart(rng.choice(down))
            elif event < 0.65:
                cut = rng.randint(1, len(ids) - 1)
                shuffled = rng.sample(ids, len(ids))
                self.network.partition(shuffled[:cut], shuffled[cut:])
            elif event < 0.8:
                self.network.heal()
            self.run_for(rng.randint(50, 4000))

    def heal_all(self, heights: int, max_ms: int = 120_000) -> bool:
        """Heal links, restart crashed nodes, and run until every node gains ``heights``."""
        self.network.heal()
        self.network.set_faults(LinkFaults())
        for node_id, node in self.nodes.items():
            if not node.alive:
                self.restart(node_id)
        target = max(node.height for node in self.nodes.values()) + heights
        for _ in range(heights):
            self.submit(count=1)
            self.run_for(3_000)
        return self.run_until(self.all_reach(target), max_ms)

    # ----------------------------------------------------------------- byzantine

    def equivocate(self, node: SimNode, payload: bytes) -> None:
        """Send a conflicting twin of ``payload`` (signed with the raw key, no sign-state)."""
        assert node.key is not None
        msg = wire.decode(self.chain_id, payload)
        if isinstance(msg, Vote) and "vote" in node.byzantine:
            other = sha256(b"byzantine" + msg.body()) if msg.block_hash is None else None
            evil = replace(msg, block_hash=other).signed(node.key, self.chain_id)
            self.network.publish(node.node_id, "consensus", wire.encode_vote(self.chain_id, evil))
        elif isinstance(msg, Proposal) and "propose" in node.byzantine:
            h, t, last, txs = codec.decode(msg.block)
            block = codec.encode([h, t, last, [*txs, b"byzantine-tx"]])
            evil_p = replace(msg, block=block, block_hash=sha256(block)).signed(
                node.key, self.chain_id
            )
            payload = wire.encode_proposal(self.chain_id, evil_p)
            self.network.publish(node.node_id, "consensus", payload)

    # ----------------------------------------------------------------- invariants

    def _record_signature(self, sender: str, channel: str, payload: bytes, to: str | None) -> None:
        if channel != "consensus":
            return
        try:
            msg = wire.decode(self.chain_id, payload)
        except MessageError:
            return
        if isinstance(msg, Vote):
            self.signed.setdefault((msg.validator, *msg.hrs), set()).add(msg.body())
        elif isinstance(msg, Proposal):
            self.signed.setdefault((msg.proposer, *msg.hrs), set()).add(msg.body())

    def double_signers(self) -> set[bytes]:
        """Keys that sent two different signed messages for one (height, round, step)."""
        return {key[0] for key, bodies in self.signed.items() if len(bodies) > 1}

    def honest_keys(self) -> set[bytes]:
        """Keys of nodes that are neither byzantine nor twins."""
        owners: dict[bytes, list[SimNode]] = {}
        for n in self.nodes.values():
            if n.key is not None:
                owners.setdefault(n.key.public_key, []).append(n)
        return {k for k, ns in owners.items() if len(ns) == 1 and not any(n.byzantine for n in ns)}

    def check_agreement(self) -> int:
        """Assert one block hash per height over all nodes.

        Returns:
            The lowest height among live honest nodes.

        Raises:
            AssertionError: two nodes committed different blocks at one height.
        """
        top = max(n.height for n in self.nodes.values())
        for h in range(1, top + 1):
            hashes = {n.app.block_hash(h) for n in self.nodes.values() if n.height >= h}
            if len(hashes) != 1:
                raise AssertionError(f"nodes disagree at height {h}")
        return min(n.height for n in self.nodes.values() if n.alive and not n.byzantine)

    def check_no_double_sign(self) -> None:
        """Assert no honest validator sent two different signed messages for one step."""
        bad = self.double_signers() & self.honest_keys()
        if bad:
            raise AssertionError(f"{len(bad)} honest validator(s) double-signed")
