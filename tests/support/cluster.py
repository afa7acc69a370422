"""A community of ledger node processes behind fault-injecting proxies, for the fault matrix.

Spec: docs/spec/consensus.md §Fault matrix (processes). One real mosquitto on 127.0.0.1; each
node is its own OS process (tests/support/ledger_proc.py: the consensus node lemd runs, durable
LMDB stores) connected through its own :class:`FaultProxy`, so a test can cut, blackhole or
delay one node's link; kill -9, SIGSTOP/SIGCONT and restart a node; kill and restart the broker.
Two more clients talk to the broker directly: an injector that publishes signed admin txs, and
a recorder that keeps every consensus payload (to check that no key signed two messages for one
(height, round, step), and to replay old messages).

Invariants (:meth:`Cluster.check`): on every pair of nodes the block hash and app hash agree at
every common height (read from each node's LMDB store), no honest key double-signed, every tx
submitted and committed somewhere is committed on every node that reached the top height.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger import tx as txm
from ledger.consensus import wire
from ledger.consensus.messages import Proposal, Vote
from ledger.genesis import Genesis
from ledger.keys import SigningKey, sha256
from ledger.store import Store
from ledger.transport.base import CHANNELS
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings
from tests.support.ledger_proc import CRASH_EXIT, LINK
from tests.support.mosquitto import Mosquitto
from tests.support.proxy import FaultProxy

REPO = Path(__file__).resolve().parents[2]
CHAIN = "fault"
GENESIS_MS = 1_790_000_000_000


@dataclass
class Proc:
    """One node process and its link."""

    name: str
    seed: bytes
    directory: Path
    proxy: FaultProxy
    crash: str = ""
    byzantine: str = ""
    process: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)

    @property
    def key(self) -> SigningKey:
        return SigningKey(self.seed)

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.directory / "status.json").read_text()))
        except (OSError, ValueError):
            return {"height": 0, "engine": {}, "error": ""}

    @property
    def height(self) -> int:
        return int(self.status().get("height", 0))

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else -1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Cluster:
    """``validators`` validator processes v0.. and ``members`` member processes m0.. .

    Args:
        root: working directory (node folders, broker config and log).
        validators: validator count (equal powers).
        members: member (non-validator) node count.
        seed: seeds the keys and random choices of a scenario.
    """

    def __init__(self, root: Path, validators: int = 4, members: int = 1, seed: int = 0) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.seeds = [sha256(f"fault-{seed}-v{i}".encode()) for i in range(validators)]
        member_seeds = [sha256(f"fault-{seed}-m{i}".encode()) for i in range(members)]
        self.admin = SigningKey(sha256(f"fault-{seed}-admin".encode()))
        self.genesis = Genesis(
            chain_id=CHAIN,
            genesis_time_ms=GENESIS_MS,
            validators=tuple((SigningKey(s).public_key, 10) for s in self.seeds),
            admins=(self.admin.public_key,),
            governance_keys=(self.admin.public_key,),
            governance_threshold=1,
        )
        self.genesis_file = root / "genesis.json"
        self.broker = Mosquitto(root / "broker")
        self.procs: dict[str, Proc] = {}
        self._planned = [(f"v{i}", s) for i, s in enumerate(self.seeds)]
        self._planned += [(f"m{i}", s) for i, s in enumerate(member_seeds)]
        self.sequence = 0
        self.submitted: list[bytes] = []
        self.recorded: list[bytes] = []
        self.byzantine_keys: set[bytes] = set()
        self._injector: MqttTransport | None = None
        self._recorder: MqttTransport | None = None
        self.side_broker: Mosquitto | None = None
        """A second broker for true partitions (:meth:`split`)."""
        self._side_clients: list[MqttTransport] = []
        self.moved: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.allow_fork = False
        """Set by a scenario with f+1 byzantine keys that observed a detected fork."""

    # ----------------------------------------------------------------- lifecycle

    async def start(self, per_node: dict[str, dict[str, str]] | None = None) -> None:
        """Broker, proxies, the injector/recorder clients, then every planned node process.

        ``per_node`` maps a node name to ``{"crash": …, "byzantine": …}`` (at first start).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.genesis_file.write_text(self.genesis.to_json())
        self.broker.start()
        self._injector = await self._client("injector", ("join",))  # it reads nothing
        self._recorder = await self._client("recorder", CHANNELS)
        self._tasks.append(asyncio.create_task(self._record(self._recorder)))
        for name, seed in self._planned:
            opts = (per_node or {}).get(name, {})
            await self.add(name, seed, opts.get("crash", ""), opts.get("byzantine", ""))
        await self.until(self.connected(), 60, "every node connected to the broker")

    def connected(self, names: list[str] | None = None) -> Callable[[], bool]:
        """Every named node's process runs and its transport is connected."""

        def check() -> bool:
            for n in names or list(self.procs):
                st = self.procs[n].status()
                if not (self.procs[n].alive and st.get("pid") == self.procs[n].pid):
                    return False
                if not st.get("connected"):
                    return False
            return True

        return check

    def reconnected(self) -> Callable[[], bool]:
        """Every live node connected again since this call (broker restarts)."""
        before = {n: p.status().get("connects", 0) for n, p in self.procs.items() if p.alive}
        return lambda: all(
            self.procs[n].status().get("connects", 0) > c and self.procs[n].status()["connected"]
            for n, c in before.items()
        )

    def supervise(self) -> None:
        """Restart a process that ended at an injected crash point (exit 77), without it."""
        self._tasks.append(asyncio.create_task(self._supervise()))

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            for proc in list(self.procs.values()):
                if proc.process is not None and proc.process.poll() == CRASH_EXIT:
                    await self.reap(proc.name)
                    self.spawn(proc, crash="")

    async def restart_with(self, name: str, crash: str, byzantine: str = "") -> None:
        """Stop ``name`` (SIGTERM) and start it again with a crash point / byzantine mode."""
        proc = self.procs[name]
        if proc.alive and proc.process is not None:
            proc.process.terminate()
        await self.reap(name)
        proc.byzantine = byzantine
        if byzantine:
            self.byzantine_keys.add(proc.key.public_key)
        self.spawn(proc, crash)

    async def twin(self, name: str, side: bool = False) -> Proc:
        """A second process with ``name``'s key and its own (empty) stores: a key run twice
        (on the side broker of :meth:`split` with ``side``)."""
        original = self.procs[name]
        self.byzantine_keys.add(original.key.public_key)
        twin = await self.add(
            f"{name}twin", original.seed, broker=self.side_broker if side else None
        )
        if side:
            self.moved.add(twin.name)
        await self.until(self.connected([twin.name]), 60, f"{twin.name} up")
        return twin

    async def until_evidence(self, timeout_s: float) -> None:
        """Keep committing until every non-twin node holds an Evidence tx."""
        from tests.support.fault_scenarios import evidence_heights

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        names = [n for n in self.procs if "twin" not in n]
        while loop.time() < deadline:
            await self.commit_more(1, names, timeout_s)
            if all(evidence_heights(self.procs[n].directory / "ledger") for n in names):
                return
        raise AssertionError(f"no evidence committed within {timeout_s} s; {self.describe()}")

    async def add(
        self,
        name: str,
        seed: bytes,
        crash: str = "",
        byzantine: str = "",
        broker: Mosquitto | None = None,
    ) -> Proc:
        """Start a node process ``name`` with key ``seed`` behind a new proxy (to ``broker``,
        default the main one)."""
        proxy = FaultProxy("127.0.0.1", (broker or self.broker).port)
        await proxy.start()
        proc = Proc(name, seed, self.root / name, proxy, crash, byzantine)
        if byzantine:
            self.byzantine_keys.add(proc.key.public_key)
        self.procs[name] = proc
        self.spawn(proc)
        return proc

    def spawn(self, proc: Proc, crash: str | None = None) -> None:
        """(Re)start ``proc``'s process (``crash`` replaces its crash point; "" for none)."""
        if crash is not None:
            proc.crash = crash
        argv = [
            sys.executable, "-m", "tests.support.ledger_proc",
            "--dir", str(proc.directory), "--genesis", str(self.genesis_file),
            "--seed", proc.seed.hex(), "--broker", proc.proxy.url, "--name", proc.name,
        ]  # fmt: skip
        if proc.crash:
            argv += ["--crash", proc.crash]
        if proc.byzantine:
            argv += ["--byzantine", proc.byzantine]
        proc.directory.mkdir(parents=True, exist_ok=True)
        log = (proc.directory / "process.log").open("ab")
        proc.process = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log)
        log.close()

    async def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL), the clients, proxies and the broker."""
        for proc in self.procs.values():
            self.signal(proc.name, signal.SIGCONT)
            if proc.alive and proc.process is not None:
                proc.process.terminate()
        for proc in self.procs.values():
            await self.reap(proc.name, timeout_s=10)
        for task in self._tasks:
            task.cancel()
        for client in (self._injector, self._recorder, *self._side_clients):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()
        for proc in self.procs.values():
            await proc.proxy.close()
        self.broker.kill()
        if self.side_broker is not None:
            self.side_broker.kill()

    # ----------------------------------------------------------------- faults

    def kill(self, name: str) -> None:
        """kill -9."""
        self.signal(name, signal.SIGKILL)

    def signal(self, name: str, sig: signal.Signals) -> None:
        proc = self.procs[name]
        if proc.alive and proc.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.process.pid, sig)

    async def reap(self, name: str, timeout_s: float = 10.0) -> int | None:
        """Wait for ``name``'s process to end; kill -9 it after ``timeout_s``; its exit code."""
        proc = self.procs[name]
        if proc.process is None:
            return None
        for _ in range(int(timeout_s / 0.05)):
            if proc.process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            proc.process.kill()
            await asyncio.sleep(0.2)
        code = proc.process.wait(timeout=5)
        proc.process = None
        proc.exits.append(code)
        return code

    async def restart(self, name: str, crash: str = "") -> None:
        await self.reap(name)
        self.spawn(self.procs[name], crash)

    def proposer(self, height: int, round_: int = 0) -> str:
        """The validator proposing ``round_`` of ``height`` (equal powers: round-robin from the
        engine's own selection, read from the stored validator set of a live node)."""
        from ledger.consensus.validators import ValidatorSet

        vset = ValidatorSet.from_powers(dict(self.genesis.validators))
        for _ in range(height - 1):
            vset = vset.next_height()
        key = vset.proposer(round_)
        return next(n for n, p in self.procs.items() if p.key.public_key == key and n[0] == "v")

    # ----------------------------------------------------------------- traffic

    async def _client(
        self, name: str, channels: tuple[str, ...], broker: Mosquitto | None = None
    ) -> MqttTransport:
        url = (broker or self.broker).url
        settings = MqttSettings.from_urls(CHAIN, name, [url], broadcast_channels=channels, **LINK)
        client = MqttTransport(settings)
        await client.start()
        await client.wait_connected(10)
        return client

    async def _record(self, client: MqttTransport) -> None:
        async for message in client.messages():
            if message.channel == "consensus" and message.sender not in ("injector", "injector2"):
                self.recorded.append(message.payload)

    async def split(self, side: list[str]) -> None:
        """A true partition: the nodes in ``side`` move to a second broker (their proxies
        forward there and drop their connections); the rest stay. Txs are published on both."""
        if self.side_broker is None:
            self.side_broker = Mosquitto(self.root / "broker2")
            self.side_broker.start()
            self._side_clients.append(await self._client("injector2", ("join",), self.side_broker))
            recorder = await self._client("recorder2", CHANNELS, self.side_broker)
            self._side_clients.append(recorder)
            self._tasks.append(asyncio.create_task(self._record(recorder)))
        for name in side:
            proxy = self.procs[name].proxy
            proxy.upstream = ("127.0.0.1", self.side_broker.port)
            proxy.drop_connections()
            self.moved.add(name)

    def heal_split(self) -> None:
        """Every moved node goes back to the main broker."""
        for name in sorted(self.moved):
            proxy = self.procs[name].proxy
            proxy.upstream = ("127.0.0.1", self.broker.port)
            proxy.drop_connections()
        self.moved.clear()

    async def _publish_all(self, channel: str, payload: bytes) -> None:
        assert self._injector is not None
        await self._injector.publish(channel, payload)
        if self._side_clients:
            await self._side_clients[0].publish(channel, payload)

    async def submit(self, count: int = 1) -> list[bytes]:
        """Publish ``count`` signed admin txs (AddMeter) straight to the broker."""
        assert self._injector is not None
        out = []
        for _ in range(count):
            body = {"meter_id": f"F{self.sequence}", "account": self.admin.public_key}
            raw = txm.make(self.admin, CHAIN, self.sequence, "AddMeter", body)
            self.sequence += 1
            self.submitted.append(raw)
            out.append(raw)
            await self._publish_all("tx", raw)
        return out

    async def replay(self, count: int, shuffle: bool = True) -> int:
        """Re-publish up to ``count`` recorded consensus payloads (old, duplicated, shuffled)."""
        assert self._injector is not None
        payloads = list(self.recorded[-count:])
        if shuffle:
            self.rng.shuffle(payloads)
        for payload in payloads:
            await self._publish_all("consensus", payload)
        return len(payloads)

    async def resubmit_pending(self) -> None:
        """Publish every submitted tx again (a submitter retrying; receivers deduplicate)."""
        assert self._injector is not None
        for raw in self.submitted:
            await self._publish_all("tx", raw)

    # ----------------------------------------------------------------- waiting

    async def until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``predicate``; AssertionError naming ``what`` and every node's state after
        ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():  # noqa: ASYNC110 -- status files have no events
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"not within {timeout_s} s: {what}; {self.describe()}") from None

    def describe(self) -> str:
        parts = []
        for name, proc in self.procs.items():
            st = proc.status()
            parts.append(
                f"{name}: h{st.get('height')} r{st.get('round')} alive={proc.alive}"
                f" exits={proc.exits} err={st.get('error', '')!r}"
            )
        return "; ".join(parts)

    def heights(self, names: list[str] | None = None) -> list[int]:
        return [self.procs[n].height for n in names or list(self.procs)]

    def reached(self, height: int, names: list[str] | None = None) -> Callable[[], bool]:
        return lambda: min(self.heights(names)) >= height

    async def commit_more(self, blocks: int, names: list[str] | None, timeout_s: float) -> int:
        """Submit txs until ``names`` (default all) committed ``blocks`` more heights; every
        2 s the submitted txs are published again (a submitter's retry: a tx published while
        nodes were away is lost, and later sequences wait for it)."""
        target = max(self.heights(names)) + blocks
        reached = self.reached(target, names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        await self.submit(2)
        while not reached():
            if loop.time() > deadline:
                raise AssertionError(
                    f"not within {timeout_s} s: height {target} on {names}; {self.describe()}"
                )
            await asyncio.sleep(2.0)
            if not reached():
                if max(self.heights(names)) < target:
                    await self.submit(1)
                await self.resubmit_pending()
        return target

    # ----------------------------------------------------------------- invariants

    def chains(self) -> dict[str, list[tuple[bytes, bytes]]]:
        """(block hash, app hash) per height of every node's store (processes stopped or not:
        LMDB readers see the last committed state)."""
        out = {}
        for name, proc in self.procs.items():
            path = proc.directory / "ledger"
            if not path.exists():
                continue
            store = Store(path, readonly=True)
            try:
                out[name] = [
                    (sha256(store.block(h) or b""), store.app_hash_at(h) or b"")
                    for h in range(1, store.height + 1)
                ]
            finally:
                store.close()
        return out

    def commit_round(self, height: int, name: str = "v0") -> int:
        """The round in which ``height`` was decided (from ``name``'s store)."""
        from ledger.consensus.messages import Commit

        store = Store(self.procs[name].directory / "ledger", readonly=True)
        try:
            return Commit.from_value(store.commit_at(height)).round
        finally:
            store.close()

    def double_signers(self) -> set[bytes]:
        """Keys seen (by the recorder) signing two different bodies for one (h, r, step)."""
        seen: dict[tuple[bytes, int, int, int], set[bytes]] = {}
        for payload in self.recorded:
            try:
                msg = wire.decode(CHAIN, payload)
            except Exception:  # noqa: S112 -- a foreign payload is not our concern
                continue
            if isinstance(msg, wire.CompactProposal):  # signed like a full one
                msg = msg.proposal
            if isinstance(msg, Vote):
                seen.setdefault((msg.validator, *msg.hrs), set()).add(_sans_time(msg))
            elif isinstance(msg, Proposal):
                seen.setdefault((msg.proposer, *msg.hrs), set()).add(_sans_time(msg))
        return {k[0] for k, bodies in seen.items() if len(bodies) > 1}

    def committed_everywhere(self, names: list[str]) -> list[bytes]:
        """Submitted txs missing from any of ``names``' stores (empty: none lost)."""
        missing = []
        stores = [Store(self.procs[n].directory / "ledger", readonly=True) for n in names]
        try:
            for raw in self.submitted:
                if any(s.locate_tx(raw) is None for s in stores):
                    missing.append(raw)
        finally:
            for s in stores:
                s.close()
        return missing

    def check(self, names: list[str] | None = None) -> dict[str, Any]:
        """Agreement at every common height, no honest double signature. Raises
        AssertionError naming the first violation; returns figures for the report."""
        chains = self.chains()
        if names is not None:
            chains = {n: c for n, c in chains.items() if n in names}
        reference: dict[int, tuple[bytes, bytes]] = {}
        for name, chain in chains.items():
            for height, pair in enumerate(chain, start=1):
                first = reference.setdefault(height, pair)
                if first != pair:
                    raise AssertionError(f"height {height}: {name} differs ({pair} vs {first})")
        honest = self.double_signers() - self.byzantine_keys
        if honest:
            raise AssertionError(f"honest keys double-signed: {[k.hex()[:8] for k in honest]}")
        return {
            "heights": {n: len(c) for n, c in chains.items()},
            "double_signers": len(self.double_signers()),
            "recorded": len(self.recorded),
        }


def _sans_time(msg: Vote | Proposal) -> bytes:
    """What a signer may not change for one (h, r, step): the value (the sign-state re-sends
    an identical body, but a body differing only in its timestamp is the same vote)."""
    if isinstance(msg, Vote):
        return msg.block_hash or b"nil"
    return msg.block_hash + msg.pol_round.to_bytes(8, "big", signed=True)
