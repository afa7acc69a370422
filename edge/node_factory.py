"""Opening the ledger side of a node: genesis, store, application, and the right ledger node.

Spec: docs/spec/daemon.md §Ledger node. Single-validator mode when the genesis (or the current
validator set) has exactly one validator, it is this node, and no broker is configured; every
other case runs the BFT node of ledger/node.py over MQTT (edge/bft.py).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge.clock import DaemonClock
from edge.config import Config, ConfigError
from edge.health import Health
from edge.ledger_node import LedgerNode, SingleLedger
from ledger.app import App
from ledger.consensus.evidence import ledger_verifier
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from ledger.keys import SigningKey
from ledger.store import Store

log = logging.getLogger("lemd.ledger")

Opened = tuple[LedgerNode, Callable[[], dict[str, Any]] | None, list[Callable[[], Any]]]
"""(node, transport stats getter or None, closers in the order to call them)."""


def load_genesis(path: Path | None) -> Genesis | None:
    """The genesis document at ``path`` (None when not configured).

    Raises:
        ConfigError: unreadable or invalid, naming the file.
    """
    if path is None:
        return None
    try:
        return Genesis.from_json(path.read_text())
    except OSError as exc:
        raise ConfigError(
            f"node.genesis_file = {str(path)!r}: cannot read: {exc.strerror}"
        ) from exc
    except LedgerError as exc:
        raise ConfigError(f"node.genesis_file = {str(path)!r}: {exc}") from exc


def open_store(config: Config) -> Store:
    """The node's ledger store under ``<data_dir>/ledger`` (initialised from the genesis)."""
    genesis = load_genesis(config.node.genesis_file)
    path = config.node.data_dir / "ledger"
    if genesis is None and not (path / "data.mdb").exists():
        raise ConfigError(
            f"node.genesis_file is required to initialise the empty ledger store at {path}"
        )
    return Store(path, genesis)


def bft_available() -> bool:
    """Whether the BFT node (ledger/node.py) is installed."""
    return importlib.util.find_spec("ledger.node") is not None


async def open_ledger(
    config: Config, key: SigningKey, clock: DaemonClock, health: Health
) -> Opened:
    """Open store and app, and pick single-validator or BFT mode.

    Raises:
        ConfigError: no genesis for an empty store; a BFT chain without brokers.
        StoreError: the store cannot be opened or holds another chain.
    """
    store = open_store(config)
    app = App(store, evidence_verifier=ledger_verifier)
    validators = [pk for pk, _ in app.validators()]
    if validators == [key.public_key] and not config.ledger.brokers:
        log.info("single-validator mode", extra={"height": app.height})
        node = SingleLedger(
            app,
            key,
            clock,
            health,
            heartbeat_s=config.ledger.block_heartbeat_s,
            prune_bodies=not config.ledger.keep_block_bodies,
        )
        return node, None, [store.close]
    if not config.ledger.brokers:
        store.close()
        raise ConfigError(
            "ledger.brokers is empty, but this node is not the chain's only validator "
            f"({len(validators)} validator(s)): a broker is needed to reach the community"
        )
    if not bft_available():
        store.close()
        raise ConfigError(
            "ledger.brokers is set but this build has no BFT node (ledger/node.py); "
            "remove the brokers to run single-validator mode"
        )
    opener: Callable[..., Awaitable[Opened]] = importlib.import_module("edge.bft").open_bft
    try:
        return await opener(config, key, clock, health, app)
    except BaseException:
        store.close()
        raise
