"""``lemctl ledger prove``: this member's own state, proven against a verified header.

Spec: docs/spec/light.md §4. Follows the chain's headers with the light client kept under
``<data_dir>/light`` (verifying every commit from genesis, or from where it stopped), asks one
validator for Merkle proofs of this node's own keys (a request signed with the node key), and
checks each proof against the app hash of a header it verified itself. Works beside a running
lemd (its own MQTT client id; the answers come to the node's inbox).

Keys: ``balance`` (``bal/<account>`` [µECT]); ``measure --period P`` (the node's meter's
``meas/<slot>/<meter>`` records of period P, from its start, at most ``--limit`` slots);
``period-total --period P`` (``ptot/P/<account>`` after pruning: [import_wh, export_wh,
records]); ``tx --tx-hash H --sequence S`` (inclusion of a committed tx of this node: its
hash and the sequence it was signed with, as ``GET /outbox`` and the logs show them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from ledger import codec, privacy, state
from ledger.errors import LedgerError
from ledger.light import LightClient
from ledger.light_node import LightNode
from ledger.proofs import ProofError, tx_query
from ledger.transport.base import LIGHT_CHANNELS

SLOT_MS = 900_000
BATCH = 16


def register(sub: Any) -> None:
    prove = sub.add_parser(
        "prove", help="fetch this member's own state with a Merkle proof (light client)"
    )
    # SUPPRESS: a missing sub-option must not hide ``lemctl --config X ledger prove``.
    prove.add_argument("--config", default=argparse.SUPPRESS, help="the node's lemd.toml")
    prove.add_argument(
        "--key", choices=("balance", "measure", "period-total", "tx"), default="balance"
    )
    prove.add_argument("--period", help="period id (measure, period-total)")
    prove.add_argument("--meter", help="ledger meter id (default: meter.meter_id / admission)")
    prove.add_argument("--tx-hash", help="hex tx hash (key tx)")
    prove.add_argument("--sequence", type=int, help="the tx's sequence number (key tx)")
    prove.add_argument("--limit", type=int, default=96, help="most slots proven (measure)")
    prove.add_argument("--timeout", type=float, default=120.0, help="seconds to wait [s]")
    prove.add_argument("--json", action="store_true", help="print JSON")
    prove.set_defaults(func=_prove)


def _prove(args: argparse.Namespace) -> int:
    try:
        out = asyncio.run(_run(args))
    except (LedgerError, ValueError) as exc:
        print(f"lemctl ledger prove: {exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print(
            f"lemctl ledger prove: no verified answer within {args.timeout} s (broker or "
            "validators unreachable?)",
            file=sys.stderr,
        )
        return 3
    ok = all(r["status"] == "proof OK" for r in out["results"])
    if args.json:
        print(json.dumps(out))
    else:
        for row in out["results"]:
            print(f"{row['key']}: {row['value']}  ({row['status']})")
        h = out["header"]
        verdict = "proof OK" if ok else "NOT all proven; the rest verified"
        print(f"{verdict} against header {h['height']} (app hash {h['app_hash']})")
    return 0 if ok else 1


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from edge.bft import mqtt_settings
    from edge.config import ConfigError, load_config
    from edge.daemon import load_or_create_key
    from edge.node_factory import load_genesis
    from ledger.transport.mqtt import MqttTransport

    try:
        config = load_config(Path(getattr(args, "config", None) or "/etc/lemd/lemd.toml"))
        genesis = load_genesis(config.node.genesis_file)
    except ConfigError as exc:
        raise LedgerError(str(exc)) from exc
    if genesis is None:
        raise LedgerError("node.genesis_file is required (the light client's trust root)")
    key = load_or_create_key(config.key_file)
    settings = dataclasses.replace(
        mqtt_settings(config, genesis.chain_id, validator=False),
        broadcast_channels=LIGHT_CHANNELS,
        client_id=f"{config.node.name}-prove-{os.getpid()}",
    )
    transport = MqttTransport(settings)
    light = LightClient(config.node.data_dir / "light", genesis)
    node = LightNode(light, transport, key, probe_s=10.0)
    runner = asyncio.create_task(transport.run(), name="prove-mqtt")
    reader = asyncio.create_task(node.run(), name="prove-light")
    try:
        async with asyncio.timeout(args.timeout):
            await transport.wait_connected(args.timeout)
            await node.request_headers()
            return await _queries(args, config, key.public_key, node)
    finally:
        await transport.close()
        for task in (reader, runner):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        light.close()


def _meter_id(args: argparse.Namespace, config: Any) -> str:
    if args.meter:
        return str(args.meter)
    admission = config.node.data_dir / "admission.json"
    if admission.exists():
        from edge.privacy import Admission

        return Admission.load(admission).pseudonym
    if config.meter.meter_id:
        return str(config.meter.meter_id)
    raise ValueError("--meter is needed: no meter.meter_id and no admission file")


async def _queries(
    args: argparse.Namespace, config: Any, me: bytes, node: LightNode
) -> dict[str, Any]:
    account = state.account_id(me)
    if args.key == "balance":
        keys = [state.k_balance(account)]
    elif args.key == "tx":
        if not args.tx_hash or args.sequence is None:
            raise ValueError("--tx-hash and --sequence are needed for --key tx")
        return await _tx(node, bytes.fromhex(args.tx_hash), args.sequence)
    elif not args.period:
        raise ValueError(f"--period is needed for --key {args.key}")
    elif args.key == "period-total":
        keys = [privacy.k_period_total(args.period, account)]
    else:
        keys = await _measure_keys(node, args.period, _meter_id(args, config), args.limit)
    results: list[dict[str, Any]] = []
    height = 0
    for i in range(0, len(keys), BATCH):
        answer, values = await node.prove([("key", k) for k in keys[i : i + BATCH]])
        height = max(height, answer.height + 1)
        for a, v in zip(answer.answers, values, strict=True):
            results.append(_row(a.arg, a.status, v))
    return {"results": results, "header": _header(node, height)}


async def _measure_keys(node: LightNode, period: str, meter: str, limit: int) -> list[bytes]:
    _, (record,) = await node.prove([("key", state.k_period(period))])
    if isinstance(record, ProofError):
        raise LedgerError(f"period {period!r}: {record}")
    rec = codec.decode(record)
    slots = range(int(rec["start_ms"]), int(rec["end_ms"]), SLOT_MS)
    return [state.k_measure(slot, meter) for slot in list(slots)[:limit]]


async def _tx(node: LightNode, tx_hash: bytes, sequence: int) -> dict[str, Any]:
    if len(tx_hash) != 32 or not 0 <= sequence < 1 << 64:
        raise ValueError("--tx-hash is 64 hex digits and --sequence an unsigned 64-bit int")
    _, (result,) = await node.prove([("tx", tx_query(tx_hash, sequence))])
    if isinstance(result, ProofError):
        return {"results": [_row(tx_hash, "refused", result)], "header": _header(node, 0)}
    row = {"key": f"tx/{tx_hash.hex()}", "value": f"in block {result}", "status": "proof OK"}
    return {"results": [row], "header": _header(node, int(result))}


def _row(key: bytes, status: str, value: Any) -> dict[str, Any]:
    name = key.decode(errors="replace")
    if isinstance(value, ProofError):
        shown = "absent (no proof of absence)" if status == "absent" else str(value)
        return {"key": name, "value": shown, "status": "proof FAILED" if status == "ok" else status}
    return {"key": name, "value": _plain(codec.decode(value)), "status": "proof OK"}


def _plain(value: Any) -> Any:
    """A decoded state value as JSON (bytes as hex)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _header(node: LightNode, height: int) -> dict[str, Any]:
    h = node.light.header(height) or node.light.latest
    return {"height": h.height, "hash": h.hash.hex(), "app_hash": h.app_hash.hex()}
