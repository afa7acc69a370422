"""Retained-memory harness: real ledger nodes commit blocks in one process; tracemalloc diffs.

Four validators and one member (:class:`ledger.node.Node`, LMDB stores without fsync, real
ed25519) run consensus over the in-memory transport on the event loop. A feeder submits a few
admin ``AddMeter`` txs per height, so every block carries signed txs, votes, a commit and a
light-client header. :func:`run_growth` takes a tracemalloc snapshot (after ``gc.collect``) at
each requested height; :func:`growth_by_file` groups the difference by source file, which is
how ``bench/memory_growth.py`` and ``tests/integration/test_memory_growth.py`` find what keeps
memory per block (docs/spec/daemon.md §Memory bounds).
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import tracemalloc
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ledger.consensus.clock import LoopClock
from ledger.consensus.core import TimeoutConfig
from ledger.consensus.engine import EngineConfig
from ledger.genesis import Genesis
from ledger.keys import SigningKey, sha256
from ledger.node import Node
from ledger.transport.memory import LinkFaults, MemoryNetwork
from tests.unit.ledger.helpers import ADMIN, N1, Signer, genesis

VALIDATORS = [SigningKey(sha256(f"growth-validator-{i}".encode())) for i in range(4)]
FAST = TimeoutConfig(300, 100, 200, 100, 200, 100)
_IGNORE = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<unknown>")


@dataclass(frozen=True, slots=True)
class Sample:
    """One snapshot at a height: ``traced`` is the total traced size [B]."""

    height: int
    traced: int
    snapshot: tracemalloc.Snapshot


def _genesis() -> Genesis:
    return genesis(validators=tuple((k.public_key, 10) for k in VALIDATORS))


def _config(g: Genesis) -> EngineConfig:
    # Heartbeat 1 ms: a height starts at once, so idle heights are empty blocks.
    return EngineConfig(
        g.chain_id, timeouts=FAST, heartbeat_ms=1, republish_ms=300, sync_retry_ms=300
    )


def _snapshot(height: int) -> Sample:
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, name) for name in _IGNORE]
    )
    return Sample(height, sum(s.size for s in snap.statistics("filename")), snap)


async def _feed(nodes: list[Node], txs_per_block: int, stop: asyncio.Event) -> None:
    """Submit ``txs_per_block`` new AddMeter txs at v0 each time its height advances."""
    admin = Signer(ADMIN, nodes[0].app.chain_id)
    seen, n = -1, 0
    while not stop.is_set():
        height = nodes[0].app.height
        if height != seen and len(nodes[0].mempool) < txs_per_block:
            seen = height
            for _ in range(txs_per_block):
                raw = admin("AddMeter", {"meter_id": f"G{n}", "account": N1.public_key})
                nodes[0].submit_tx(raw)
                n += 1
        await asyncio.sleep(0.005)


async def _run(root: Path, heights: list[int], txs_per_block: int) -> list[Sample]:
    g = _genesis()
    net = MemoryNetwork(LoopClock(), seed=7, faults=LinkFaults(min_delay_ms=1, max_delay_ms=2))
    keys: list[SigningKey | None] = [*VALIDATORS, None]
    nodes = [
        Node.open(
            root / f"n{i}",
            g,
            net.transport(f"n{i}"),
            key=k,
            config=_config(g),
            durable=False,
        )
        for i, k in enumerate(keys)
    ]
    tasks = [asyncio.create_task(n.run()) for n in nodes]
    stop = asyncio.Event()
    feeder = asyncio.create_task(_feed(nodes, txs_per_block, stop))
    samples: list[Sample] = []
    try:
        for target in heights:
            while min(n.app.height for n in nodes) < target:
                for t in tasks:
                    if t.done():
                        t.result()
                await asyncio.sleep(0.01)
            samples.append(_snapshot(target))
    finally:
        stop.set()
        await feeder
        for n in nodes:
            await n.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    return samples


def run_growth(heights: list[int], *, txs_per_block: int = 2, frames: int = 1) -> list[Sample]:
    """Commit up to ``max(heights)`` blocks; a tracemalloc sample at each of ``heights``.

    Args:
        heights: increasing heights at which every node must have committed before sampling.
        txs_per_block: signed txs offered per height.
        frames: traceback depth tracemalloc keeps (1 is fastest).
    """
    tracemalloc.start(frames)
    try:
        with tempfile.TemporaryDirectory(prefix="lem-growth-") as tmp:
            return asyncio.run(_run(Path(tmp), heights, txs_per_block))
    finally:
        tracemalloc.stop()


def growth_by_file(a: Sample, b: Sample, root: str = "") -> dict[str, int]:
    """Retained bytes gained from ``a`` to ``b`` per source file [B], largest first."""
    out: dict[str, int] = defaultdict(int)
    for stat in b.snapshot.compare_to(a.snapshot, "filename"):
        name = stat.traceback[0].filename
        out[name.removeprefix(root)] += stat.size_diff
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def growth_by_line(a: Sample, b: Sample, limit: int = 25) -> list[tuple[str, int, int]]:
    """Top ``limit`` (file:line, bytes gained [B], blocks gained) from ``a`` to ``b``."""
    stats = b.snapshot.compare_to(a.snapshot, "lineno")
    rows = [(str(s.traceback[0]), s.size_diff, s.count_diff) for s in stats]
    return sorted(rows, key=lambda r: -r[1])[:limit]
