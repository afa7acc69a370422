"""The fault matrix's scenarios over :class:`tests.support.cluster.Cluster` (node processes).

Spec: docs/spec/consensus.md §Fault matrix (processes). Each scenario drives one fault and
returns what happened in a few words; :func:`run` wraps it: builds the cluster (n validators
+ 1 member, each its own process behind its own proxy, real mosquitto), runs the scenario, makes
sure progress resumes on every live node after the fault healed, stops everything and checks
the invariants on the stores and the recorded signatures (raising AssertionError naming the
first violation). A crashed process (exit 77 at an injected crash point) is restarted without
the crash point, as systemd would.

Partitions go through the proxies of one broker: the minority side's nodes lose the broker
(so "2+2" is two validators that still talk to each other and two isolated ones: no side
holds more than 2/3 of the power, as in a true 2+2 split).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ledger import block as blk
from ledger import tx as txm
from ledger.store import Store
from tests.support.cluster import Cluster
from tests.support.ledger_proc import CRASH_EXIT

Scenario = Callable[[Cluster], Awaitable[str]]
STEP_S = 60.0  # bound on one wait inside a scenario [s]


def _validators(c: Cluster) -> list[str]:
    return [n for n in c.procs if n.startswith("v") and "twin" not in n]


def _f(c: Cluster) -> int:
    return (len(_validators(c)) - 1) // 3


def _others(c: Cluster, *excluded: str) -> list[str]:
    return [n for n in c.procs if n not in excluded and "twin" not in n]


async def _kill_and_restart(c: Cluster, name: str, others: list[str]) -> None:
    c.kill(name)
    await c.reap(name)
    await c.commit_more(2, others, STEP_S)
    await c.restart(name)
    await c.until(c.reached(max(c.heights(others)), [name]), STEP_S, f"{name} catches up")


async def kill_random_validator(c: Cluster) -> str:
    victim = c.rng.choice(_validators(c))
    await c.commit_more(1, None, STEP_S)
    await _kill_and_restart(c, victim, _others(c, victim))
    return f"{victim} killed -9, others went on, it restarted and caught up"


async def kill_proposer(c: Cluster) -> str:
    await c.commit_more(1, None, STEP_S)
    height = max(c.heights()) + 1
    victim = c.proposer(height)
    c.kill(victim)  # before the txs arrive: its round 0 cannot happen
    await c.reap(victim)
    await c.commit_more(1, _others(c, victim), STEP_S)
    await c.restart(victim)
    await c.until(c.reached(height, [victim]), STEP_S, f"{victim} catches up")
    decided_in = c.commit_round(height)
    if decided_in < 1:
        raise AssertionError(f"h{height} decided in round 0 although its proposer was dead")
    return f"proposer {victim} of h{height} killed; decided in round {decided_in}; caught up"


async def kill_mid_round(c: Cluster) -> str:
    await c.commit_more(1, None, STEP_S)
    victim = c.rng.choice(_validators(c))
    await c.submit(3)
    await asyncio.sleep(c.rng.uniform(0.02, 0.3))  # somewhere inside the height
    c.kill(victim)
    await c.reap(victim)
    await c.commit_more(1, _others(c, victim), STEP_S)
    await c.restart(victim)
    await c.until(c.reached(max(c.heights()), [victim]), STEP_S, f"{victim} catches up")
    return f"{victim} killed mid-height; resumed from sign-state + WAL"


def crash_at(point: str, nth: int) -> Scenario:
    async def scenario(c: Cluster) -> str:
        victim = c.rng.choice(_validators(c))
        await c.restart_with(victim, f"{point}:{nth}")
        await c.until(c.connected([victim]), STEP_S, f"{victim} up")
        for _ in range(8):
            await c.commit_more(1, _others(c, victim), STEP_S)
            if CRASH_EXIT in c.procs[victim].exits:
                break
        if CRASH_EXIT not in c.procs[victim].exits:
            raise AssertionError(f"{victim} never reached crash point {point} #{nth}")
        await c.until(c.reached(max(c.heights()), [victim]), STEP_S, f"{victim} back")
        return f"{victim} died at {point} #{nth}, restarted from its stores, caught up"

    scenario.__name__ = f"crash_{point}"
    return scenario


async def sigstop(c: Cluster, seconds: float = 10.0) -> str:
    await c.commit_more(1, None, STEP_S)
    victim = c.rng.choice(_validators(c))
    c.signal(victim, signal.SIGSTOP)
    await c.commit_more(1, _others(c, victim), STEP_S)
    await asyncio.sleep(max(0.0, seconds - 3.0))
    c.signal(victim, signal.SIGCONT)
    await c.until(c.reached(max(c.heights()), [victim]), STEP_S, f"{victim} catches up")
    return f"{victim} stopped {seconds:.0f} s (keepalive dropped it), continued, caught up"


async def link_cut(c: Cluster) -> str:
    await c.commit_more(1, None, STEP_S)
    victim = c.rng.choice(_validators(c))
    c.procs[victim].proxy.cut()
    await c.commit_more(2, _others(c, victim), STEP_S)
    c.procs[victim].proxy.heal()
    await c.until(c.reached(max(c.heights()), [victim]), STEP_S, f"{victim} syncs")
    return f"{victim}'s link cut for 2 blocks; reconnect -> sync at once"


async def partition_no_quorum(c: Cluster) -> str:
    """2+2 (4 validators; 4+3 of 7): two groups on two brokers, neither with > 2/3."""
    await c.commit_more(1, None, STEP_S)
    vals = _validators(c)
    side = c.rng.sample(vals, len(vals) // 2)
    await c.split(side)
    before = c.heights()
    await c.submit(2)
    # A height whose precommit quorum formed just before the split may still be applied after
    # the snapshot (a slow node, a loaded machine): at most that one. After it, nothing.
    await asyncio.sleep(6.0)
    settled = c.heights()
    await asyncio.sleep(6.0)
    during = c.heights()
    c.heal_split()
    if max(settled) > max(before) + 1 or max(during) != max(settled):
        raise AssertionError(f"commit without a quorum: {before} -> {settled} -> {during}")
    rest = [v for v in vals if v not in side]
    return f"{'+'.join(rest)} | {'+'.join(side)}: no commit after the split; healed: progress"


async def partition_minority(c: Cluster) -> str:
    """3+1 (5+2 of 7): f validators on their own broker; the rest commit; they sync."""
    await c.commit_more(1, None, STEP_S)
    side = c.rng.sample(_validators(c), _f(c))
    await c.split(side)
    await c.commit_more(3, _others(c, *side), STEP_S)
    c.heal_split()
    await c.until(c.reached(max(c.heights()), side), STEP_S, "minority syncs")
    return f"{'+'.join(side)} split off: majority committed 3; minority synced after healing"


async def delayed_links(c: Cluster) -> str:
    slow = c.rng.sample(_validators(c), 2)
    for name in slow:
        c.procs[name].proxy.delay_s = 0.4
    await c.commit_more(3, None, STEP_S)
    for name in slow:
        c.procs[name].proxy.delay_s = 0.0
    return f"{'+'.join(slow)} links delayed 400 ms each way: 3 blocks"


async def replayed_messages(c: Cluster) -> str:
    await c.commit_more(3, None, STEP_S)
    sent = await c.replay(len(c.recorded))  # old, duplicated and reordered
    await c.commit_more(2, None, STEP_S)
    sent += await c.replay(200)
    await c.commit_more(1, None, STEP_S)
    return f"{sent} recorded consensus messages replayed shuffled: no effect"


async def broker_restart(c: Cluster) -> str:
    await c.commit_more(1, None, STEP_S)
    c.broker.kill()
    await asyncio.sleep(2.0)
    c.broker.start()
    await c.until(c.reconnected(), STEP_S, "every node reconnected")
    await c.commit_more(2, None, STEP_S)
    return "broker killed -9 and restarted: every node reconnected, 2 more blocks"


def equivocator(mode: str) -> Scenario:
    async def scenario(c: Cluster) -> str:
        bad = "v3"
        await c.restart_with(bad, "", byzantine=mode)
        await c.until(c.connected([bad]), STEP_S, f"{bad} up")
        await c.until_evidence(STEP_S * 2)
        return f"{bad} double-{mode}s: evidence committed on every node"

    scenario.__name__ = f"equivocate_{mode}"
    return scenario


async def same_key_twice(c: Cluster) -> str:
    """f keys each run by two processes (twins with separate sign-states): safe."""
    twins = _validators(c)[-_f(c) :]
    for name in twins:
        await c.twin(name)
    await c.commit_more(4, _others(c), STEP_S * 2)
    return f"{'+'.join(twins)} run twice: agreement"


async def f_plus_one_byzantine(c: Cluster) -> str:
    """f+1 keys run twice, one incarnation on each side of a partition, with the honest
    validators split between the sides: each side holds > 2/3 of the power, so both commit
    (a fork). After healing, a fork must be detected or progress halt; never silent."""
    await c.commit_more(1, None, STEP_S)
    vals = _validators(c)
    twins = vals[-(_f(c) + 1) :]
    honest = [v for v in vals if v not in twins]
    side = honest[len(honest) // 2 :]
    await c.split(side)
    for name in twins:
        await c.twin(name, side=True)
    main = _others(c, *side)
    await c.commit_more(1, main, STEP_S)
    await c.commit_more(3, side, STEP_S)  # the side gets ahead: its heights include main's
    c.heal_split()
    await c.submit(2)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40
    while loop.time() < deadline and not _forks(c):
        await asyncio.sleep(1.0)
        await c.resubmit_pending()
    c.allow_fork = True
    forks = _forks(c)
    halted = [
        n for n, p in c.procs.items() if p.status().get("engine", {}).get("invalid_committed_block")
    ]
    if not forks and not halted:
        raise AssertionError(f"fork neither detected nor halting: {c.describe()}")
    detected, stuck = "+".join(forks) or "-", "+".join(halted) or "-"
    return f"both sides committed; fork detected by {detected}; halted on a refused block {stuck}"


def _forks(c: Cluster) -> list[str]:
    return [n for n, p in c.procs.items() if "ForkError" in p.status().get("error", "")]


SCENARIOS: dict[str, Scenario] = {
    "kill -9 random validator": kill_random_validator,
    "kill -9 proposer": kill_proposer,
    "kill -9 mid-round": kill_mid_round,
    "crash: signed, not persisted": crash_at("signed_not_persisted", 3),
    "crash: persisted, not sent": crash_at("persisted_not_sent", 3),
    "crash: block stored": crash_at("block_stored", 2),
    "SIGSTOP 10 s": sigstop,
    "node-broker link cut": link_cut,
    "partition 2+2 (no quorum)": partition_no_quorum,
    "partition 3+1": partition_minority,
    "delayed links": delayed_links,
    "old/duplicate/reordered messages replayed": replayed_messages,
    "broker killed and restarted": broker_restart,
    "double prevote": equivocator("vote"),
    "double proposal": equivocator("propose"),
    "same key on two processes (f)": same_key_twice,
    "f+1 byzantine (twins)": f_plus_one_byzantine,
}


def evidence_heights(store_path: Path) -> list[int]:
    """Heights of the Evidence txs in a node's store."""
    store = Store(store_path, readonly=True)
    try:
        out = []
        for h in range(1, store.height + 1):
            raw = store.block(h)
            if raw is not None and any(
                txm.decode(t).kind == "Evidence" for t in blk.decode(raw).txs
            ):
                out.append(h)
        return out
    finally:
        store.close()


async def run(
    name: str, root: Path, validators: int = 4, members: int = 1, seed: int = 0
) -> dict[str, Any]:
    """Run scenario ``name`` on a fresh cluster and check the invariants.

    Returns:
        {"scenario", "outcome", "seconds", "heights", "double_signers", "recorded"}.

    Raises:
        AssertionError: an invariant broke or progress did not resume (named).
    """
    started = time.monotonic()
    c = Cluster(root, validators, members, seed)
    try:
        await c.start()
        c.supervise()
        outcome = await SCENARIOS[name](c)
        if not c.allow_fork:
            live = [n for n, p in c.procs.items() if p.alive or n.startswith("m")]
            await c.commit_more(1, [n for n in live if "twin" not in n], STEP_S)
    finally:
        await c.close()
    if c.allow_fork:
        try:
            figures = c.check(_honest(c))
        except AssertionError as exc:  # the fork was detected: it is the expected outcome
            figures = {"divergence": str(exc)[:120]}
    else:
        figures = c.check(None)
        missing = c.committed_everywhere([n for n in c.procs if "twin" not in n])
        if missing:
            raise AssertionError(f"{len(missing)} submitted txs are not committed everywhere")
    return {"scenario": name, "outcome": outcome, "seconds": time.monotonic() - started, **figures}


def _honest(c: Cluster) -> list[str]:
    """Nodes whose chains must agree even when f+1 keys are byzantine: none may hold a block
    that another honest node contradicts unless it detected the fork (and halted)."""
    return [
        n
        for n, p in c.procs.items()
        if "twin" not in n and "ForkError" not in p.status().get("error", "")
    ]
