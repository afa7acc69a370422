"""``lemctl ledger verify|show|prove|compact``: inspect a node's ledger store (running or
stopped); ``prove`` (edge/cli/ledger_prove.py) fetches own state with a proof as a light member;
``compact`` rewrites a stopped node's stores without free pages (docs/spec/privacy.md §3.2).

Spec: docs/spec/ledger.md §10, docs/spec/light.md §4.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from ledger.errors import LedgerError
from ledger.registry import EvidenceVerifier
from ledger.store import Store
from ledger.verify import verify_store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ledger", help="inspect and verify the ledger store")
    sub = parser.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    verify = sub.add_parser("verify", help="replay the chain from genesis and check every hash")
    verify.add_argument(
        "--data-dir", type=Path, help="the ledger store directory (default: from --config)"
    )
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(func=_verify)
    show = sub.add_parser("show", help="print a block's height, hash, app hash, time, tx count")
    show.add_argument(
        "--data-dir", type=Path, help="the ledger store directory (default: from --config)"
    )
    show.add_argument("--height", type=int, help="block height (default: the last one)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_show)
    compact = sub.add_parser(
        "compact",
        help="rewrite a stopped node's stores without their free pages (pruned bytes go)",
    )
    compact.add_argument(
        "--data-dir",
        type=Path,
        help="the ledger store directory (default: from --config); its parent is the node's "
        "data directory, whose ledger and consensus stores are compacted",
    )
    compact.add_argument(
        "--force", action="store_true", help="compact even when few pages are free"
    )
    compact.add_argument("--json", action="store_true", help="print JSON")
    compact.set_defaults(func=_compact)
    from edge.cli import ledger_prove

    ledger_prove.register(sub)


def _store_dir(args: argparse.Namespace) -> Path:
    """``--data-dir``, else ``<node.data_dir>/ledger`` of ``--config`` (or /etc/lemd/lemd.toml)."""
    if args.data_dir is not None:
        return Path(args.data_dir)
    from edge.config import ConfigError, load_config

    try:
        config = load_config(Path(getattr(args, "config", None) or "/etc/lemd/lemd.toml"))
    except ConfigError as exc:
        raise LedgerError(str(exc)) from exc
    return config.node.data_dir / "ledger"


def _open(args: argparse.Namespace) -> Store:
    path = _store_dir(args)
    if not (path / "data.mdb").exists() and (path.parent / "light" / "data.mdb").exists():
        raise LedgerError(
            f"{path}: no ledger store: this node is a light member (verified headers only, "
            "docs/spec/light.md); `lemctl ledger show` prints its headers, `lemctl ledger "
            'prove` its own state; member_mode = "full" keeps a replica'
        )
    if not (path / "data.mdb").exists():
        raise LedgerError(f"{path}: no ledger store here (data.mdb missing)")
    return Store(path, readonly=True)


def _evidence_verifier() -> EvidenceVerifier | None:
    """Consensus's double-sign checker in the ledger's calling convention, when provided
    (docs/spec/ledger.md §1: ``ledger.consensus.evidence.ledger_verifier``)."""
    try:
        module = importlib.import_module("ledger.consensus.evidence")
    except ImportError:
        return None
    verifier: EvidenceVerifier | None = getattr(module, "ledger_verifier", None)
    return verifier if callable(verifier) else None


def _verify(args: argparse.Namespace) -> int:
    try:
        store = _open(args)
    except LedgerError as exc:
        print(f"lemctl ledger verify: {exc}", file=sys.stderr)
        return 2
    try:
        report = verify_store(store, _evidence_verifier())
    finally:
        store.close()
    if args.json:
        out = {"ok": report.ok, "height": report.height, "verified_height": report.verified_height}
        print(json.dumps({**out, "problems": report.problems}))
    elif report.ok:
        print(f"ok: {report.height} blocks verified by replay from genesis")
    else:
        print("\n".join(report.problems))
    return 0 if report.ok else 1


def _show(args: argparse.Namespace) -> int:
    try:
        light = _light_dir(args)
        if light is not None:
            info = _header_info(args, light)
        else:
            store = _open(args)
            try:
                info = _block_info(store, store.height if args.height is None else args.height)
            finally:
                store.close()
    except LedgerError as exc:
        print(f"lemctl ledger show: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
    return 0


def _light_dir(args: argparse.Namespace) -> Path | None:
    """A light member's header store (``<data_dir>/light``) when there is no ledger store."""
    if args.data_dir is not None:
        return None
    path = _store_dir(args)
    light = path.parent / "light"
    if (path / "data.mdb").exists() or not (light / "data.mdb").exists():
        return None
    return light


def _header_info(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """``ledger show`` on a light member: the header it verified (docs/spec/light.md §3). The
    app hash after the block is the next verified header's (None until that one is); the
    number of txs is not known to a light member."""
    from edge.config import ConfigError, load_config
    from edge.node_factory import load_genesis
    from ledger.light import LightClient

    try:
        config = load_config(Path(getattr(args, "config", None) or "/etc/lemd/lemd.toml"))
        genesis = load_genesis(config.node.genesis_file)
    except ConfigError as exc:
        raise LedgerError(str(exc)) from exc
    if genesis is None:
        raise LedgerError("node.genesis_file is required to open the light member's headers")
    light = LightClient(path, genesis)
    try:
        height = light.height if args.height is None else args.height
        header, after = light.header(height), light.header(height + 1)
    finally:
        light.close()
    if header is None:
        raise LedgerError(f"height {height}: no verified header (kept: the newest ones only)")
    return {
        "chain_id": genesis.chain_id,
        "height": height,
        "hash": header.hash.hex(),
        "app_hash": None if after is None else after.app_hash.hex(),
        "time_ms": header.time_ms,
        "time": dt.datetime.fromtimestamp(header.time_ms / 1000, tz=dt.UTC).isoformat(),
        "n_txs": None,
        "light": True,
    }


def _block_info(store: Store, height: int) -> dict[str, Any]:
    if not 0 <= height <= store.height:
        raise LedgerError(f"height {height} is not in 0..{store.height}")
    app_hash = store.app_hash_at(height) or b""
    if height == 0:
        block_hash, time_ms, n_txs = store.genesis.hash, store.genesis.genesis_time_ms, 0
    else:
        stored = store.stored_block(height)  # also a body-pruned block (privacy.md §3.1)
        if stored is None:
            raise LedgerError(f"no block stored at height {height} (below a restored snapshot)")
        header = stored.header
        block_hash, time_ms, n_txs = header.hash, header.time_ms, len(stored.txs)
    when = dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC).isoformat()
    return {
        "chain_id": store.genesis.chain_id,
        "height": height,
        "hash": block_hash.hex(),
        "app_hash": app_hash.hex(),
        "time_ms": time_ms,
        "time": when,
        "n_txs": n_txs,
    }


def _compact(args: argparse.Namespace) -> int:
    """Compact a stopped node's stores: 0 done, 2 the node runs or a store cannot be read."""
    from edge.node_lock import NodeLock, NodeLocked, compact_stores

    try:
        data_dir = _store_dir(args).parent
        lock = NodeLock(data_dir)
    except (LedgerError, NodeLocked, OSError) as exc:
        print(f"lemctl ledger compact: {exc}", file=sys.stderr)
        return 2
    try:
        done = compact_stores(data_dir, force=args.force)
    except (LedgerError, OSError) as exc:
        print(f"lemctl ledger compact: {exc}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    if args.json:
        print(
            json.dumps(
                {name: {"bytes_before": b, "bytes_after": a} for name, (b, a) in done.items()}
            )
        )
    elif not done:
        print("nothing to compact (less than 25 % or 4 MiB of each store is free; --force)")
    for name, (before, after) in () if args.json else done.items():
        print(f"{name}: {before} -> {after} bytes")
    return 0
