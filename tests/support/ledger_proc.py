"""Test entry point: one ledger node (the consensus node lemd runs) as its own OS process.

Usage (spawned by tests/support/cluster.py, never by production code):

    python -m tests.support.ledger_proc --dir D --genesis G.json --seed HEX --broker URL
        --name v0 [--crash POINT:NTH] [--byzantine vote,propose]

The node is :class:`ledger.node.Node` on an :class:`MqttTransport` with durable LMDB stores, as in
``edge/bft.py``, with short consensus timeouts and fast link-failure detection. Test-only
behaviour lives here and only here:

* ``--crash POINT:NTH``: a :class:`CrashPoints` that ends the process with ``os._exit(77)`` the
  NTH time execution passes POINT (``signed_not_persisted``, ``persisted_not_sent``,
  ``block_stored``): a power cut at exactly that instant (no cleanup, no flush).
* ``--byzantine vote|propose``: after each own prevote (or proposal) the node also publishes a
  conflicting twin signed with the raw key, bypassing the sign-state (an equivocator).

Every 100 ms the node writes ``D/status.json`` (height, tip hashes, round, counters); on a
consensus invariant failure (ForkError, a refused committed block) it writes the error there
and exits with code 3. SIGTERM closes it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ledger.consensus import wire
from ledger.consensus.core import TimeoutConfig
from ledger.consensus.crash import NO_CRASH, POINTS, CrashPoints
from ledger.consensus.engine import EngineConfig
from ledger.consensus.messages import Proposal, Step, Vote
from ledger.genesis import Genesis
from ledger.keys import SigningKey, sha256
from ledger.node import Node
from ledger.transport.base import CHANNELS
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings

CRASH_EXIT = 77
INVARIANT_EXIT = 3
TIMEOUTS = TimeoutConfig(1000, 500, 500, 250, 500, 250)
LINK = {
    "keepalive_s": 2,
    "connect_timeout_s": 2.0,
    "io_timeout_s": 2.0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
}


class ProcessCrash(CrashPoints):
    """End the process abruptly the ``nth`` time ``point`` is passed (test entry point only)."""

    def __init__(self, point: str, nth: int) -> None:
        if point not in POINTS:
            raise SystemExit(f"--crash: unknown point {point!r}; known: {', '.join(POINTS)}")
        self.point, self.remaining = point, nth

    def hit(self, point: str) -> None:
        if point != self.point:
            return
        self.remaining -= 1
        if self.remaining == 0:
            os._exit(CRASH_EXIT)


def engine_config(chain_id: str) -> EngineConfig:
    """Short timeouts, re-publication and idle tip for loopback runs; production heartbeat."""
    return EngineConfig(
        chain_id, timeouts=TIMEOUTS, republish_ms=1000, sync_retry_ms=1000, tip_ms=3000
    )


def _twin(node: Node, key: SigningKey, payload: bytes, modes: set[str]) -> bytes | None:
    """A conflicting message for one of ``key``'s own consensus payloads, or None."""
    chain = node.app.chain_id
    try:
        msg = wire.decode(chain, payload)
    except Exception:
        return None
    if isinstance(msg, Vote) and "vote" in modes and msg.validator == key.public_key:
        if msg.step is not Step.PREVOTE:
            return None
        other = sha256(b"byzantine" + msg.body()) if msg.block_hash is None else None
        return wire.encode_vote(chain, replace(msg, block_hash=other).signed(key, chain))
    if isinstance(msg, wire.CompactProposal):  # the same signed proposal, block as hashes
        msg = msg.proposal
    if isinstance(msg, Proposal) and "propose" in modes and msg.proposer == key.public_key:
        block = node.port.prepare_block(msg.height, node.engine.last_commit, _later(node))  # type: ignore[union-attr]
        if node.port.block_id(block) == msg.block_hash:
            return None
        evil = replace(msg, block=block, block_hash=node.port.block_id(block))
        return wire.encode_proposal(chain, evil.signed(key, chain))
    return None


def _later(node: Node) -> int:
    assert node.engine is not None
    return node.engine.height_time_ms + 1  # a different block time: a different block


def make_byzantine(node: Node, key: SigningKey, modes: set[str]) -> None:
    """Wrap ``node``'s publisher so each own prevote/proposal is followed by a conflicting twin."""
    honest = node._send

    def send(channel: str, payload: bytes, to: str | None) -> None:
        honest(channel, payload, to)
        if channel == "consensus":
            twin = _twin(node, key, payload, modes)
            if twin is not None:
                honest(channel, twin, to)

    node._send = send  # type: ignore[method-assign]


def status(node: Node, error: str = "") -> dict[str, Any]:
    engine = node.engine
    link = node.transport.stats  # type: ignore[attr-defined]
    return {
        "connects": link.connects,
        "connected": link.connected,
        "pid": os.getpid(),
        "time": time.time(),
        "height": node.app.height,
        "hash": node.app.last_block_hash.hex(),
        "app_hash": node.app.app_hash.hex(),
        "round": engine.core.round if engine is not None else -1,
        "engine": dict(engine.stats) if engine is not None else {},
        "node": dict(node.stats),
        "mempool": len(node.mempool),
        "error": error,
    }


def write_status(directory: Path, data: dict[str, Any]) -> None:
    tmp = directory / "status.json.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(directory / "status.json")


async def run(args: argparse.Namespace) -> int:
    genesis = Genesis.from_json(args.genesis.read_text())
    key = SigningKey(bytes.fromhex(args.seed))
    crash: CrashPoints = NO_CRASH
    if args.crash:
        point, _, nth = args.crash.partition(":")
        crash = ProcessCrash(point, int(nth or 1))
    settings = MqttSettings.from_urls(
        genesis.chain_id, args.name, [args.broker], broadcast_channels=CHANNELS, **LINK
    )
    transport = MqttTransport(settings)
    node = Node.open(
        args.dir, genesis, transport, key=key, config=engine_config(genesis.chain_id), crash=crash
    )
    if args.byzantine:
        make_byzantine(node, key, set(args.byzantine.split(",")))
    await transport.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(node.close()))
    task = asyncio.create_task(node.run())
    code, error = 0, ""
    try:
        while not task.done():
            write_status(args.dir, status(node))
            await asyncio.wait({task}, timeout=0.1)
        task.result()
    except Exception as exc:
        code, error = INVARIANT_EXIT, f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(Exception):
        write_status(args.dir, status(node, error))
    with contextlib.suppress(Exception):
        await transport.close()
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--genesis", type=Path, required=True)
    parser.add_argument("--seed", required=True, help="the node key's 32-byte seed, hex")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--crash", default="")
    parser.add_argument("--byzantine", default="")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
