"""Signed-tx throughput and commit latency of 4 real ledger validators in one process.

Four :class:`ledger.node.Node` (LMDB stores, fsync on unless ``--no-durable``, ed25519 on
every tx and vote) run consensus over the in-memory transport on the real event loop (1–2 ms
links), so the figures bound what consensus + ledger can do on this machine before MQTT is
added (the MQTT bench measures that). A batch of admin ``AddMeter`` txs is submitted at one
validator; printed: txs/s from first submit until every node committed all of them, blocks,
and per-block commit latency p50/p99 (proposal signed → block committed at the proposer).

Usage: .venv/bin/python bench/consensus_ledger.py [--txs 2000] [--no-durable]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from ledger import state
from ledger import tx as txm
from ledger.consensus.clock import LoopClock
from ledger.consensus.core import TimeoutConfig
from ledger.consensus.engine import EngineConfig
from ledger.genesis import Genesis
from ledger.keys import SigningKey, sha256
from ledger.node import Node
from ledger.transport.memory import LinkFaults, MemoryNetwork

ADMIN = SigningKey(sha256(b"bench-admin"))
OWNER = SigningKey(sha256(b"bench-owner"))
GOV = [SigningKey(sha256(f"bench-gov-{i}".encode())) for i in range(2)]
VALIDATORS = [SigningKey(sha256(f"bench-validator-{i}".encode())) for i in range(4)]


def _genesis() -> Genesis:
    return Genesis(
        chain_id="bench",
        genesis_time_ms=time.time_ns() // 1_000_000 - 60_000,
        validators=tuple((k.public_key, 10) for k in VALIDATORS),
        admins=(ADMIN.public_key,),
        governance_keys=tuple(k.public_key for k in GOV),
        governance_threshold=2,
    )


def _committed(node: Node, meter_id: str) -> bool:
    with node.store.state_reader() as base:
        return state.meter_owner(state.Overlay(base), meter_id) is not None


async def run(count: int, durable: bool) -> None:
    """Submit ``count`` txs and print the figures."""
    g = _genesis()
    config = EngineConfig(
        g.chain_id, timeouts=TimeoutConfig(1000, 500, 500, 250, 500, 250), republish_ms=1000
    )
    network = MemoryNetwork(LoopClock(), faults=LinkFaults(min_delay_ms=1, max_delay_ms=2))
    with tempfile.TemporaryDirectory() as tmp:
        nodes = [
            Node.open(
                Path(tmp) / f"v{i}",
                g,
                network.transport(f"v{i}"),
                key=k,
                config=config,
                durable=durable,
            )
            for i, k in enumerate(VALIDATORS)
        ]
        tasks = [asyncio.create_task(n.run(), name=f"v{i}") for i, n in enumerate(nodes)]
        raws = [
            txm.make(
                ADMIN, g.chain_id, i, "AddMeter", {"meter_id": f"M{i}", "account": OWNER.public_key}
            )
            for i in range(count)
        ]
        started = time.perf_counter()
        for raw in raws:
            nodes[0].submit_tx(raw)
        last = f"M{count - 1}"
        while not all(_committed(n, last) for n in nodes):
            await asyncio.sleep(0.01)
            for t in tasks:
                if t.done():
                    t.result()
        elapsed = time.perf_counter() - started
        heights = nodes[0].app.height
        times = [nodes[0].store.block(h) for h in range(1, heights + 1)]
        for n in nodes:
            await n.close()
        await asyncio.gather(*tasks)
    print(f"4 validators, {count} signed txs, durable={durable}")
    print(f"  throughput: {count / elapsed:.0f} tx/s ({elapsed:.2f} s, {heights} blocks)")
    sizes = [len(b or b"") / 1024 for b in times]
    print(f"  block size: mean {statistics.mean(sizes):.1f} KiB, max {max(sizes):.1f} KiB")
    st = network.stats
    print(
        f"  transport: {st['published']} publishes, "
        f"{st['published_bytes'] / 1024:.0f} KiB published, "
        f"{st['delivered_bytes'] / 1024:.0f} KiB delivered"
    )


async def latency(rounds: int, durable: bool) -> None:
    """Commit one tx at a time; print the submit → committed-everywhere latency p50/p99."""
    g = _genesis()
    config = EngineConfig(
        g.chain_id, timeouts=TimeoutConfig(1000, 500, 500, 250, 500, 250), republish_ms=1000
    )
    network = MemoryNetwork(LoopClock(), faults=LinkFaults(min_delay_ms=1, max_delay_ms=2))
    samples: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        nodes = [
            Node.open(
                Path(tmp) / f"v{i}",
                g,
                network.transport(f"v{i}"),
                key=k,
                config=config,
                durable=durable,
            )
            for i, k in enumerate(VALIDATORS)
        ]
        tasks = [asyncio.create_task(n.run(), name=f"v{i}") for i, n in enumerate(nodes)]
        for i in range(rounds):
            raw = txm.make(
                ADMIN, g.chain_id, i, "AddMeter", {"meter_id": f"L{i}", "account": OWNER.public_key}
            )
            t0 = time.perf_counter()
            nodes[i % 4].submit_tx(raw)
            # Polling the stores: committed state has no event to wait on.
            while not all(_committed(n, f"L{i}") for n in nodes):  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            samples.append((time.perf_counter() - t0) * 1000)
        for n in nodes:
            await n.close()
        await asyncio.gather(*tasks)
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    p50 = statistics.median(samples)
    print(f"  commit latency (1 tx on all 4): p50 {p50:.0f} ms, p99 {p99:.0f} ms, n={rounds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=2000)
    parser.add_argument("--latency-rounds", type=int, default=50)
    parser.add_argument("--no-durable", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.txs, not args.no_durable))
    asyncio.run(latency(args.latency_rounds, not args.no_durable))


if __name__ == "__main__":
    main()
