"""Whole-chain verification by replay from genesis (``lemctl ledger verify``).

Spec: docs/spec/ledger.md §5.3. Checks, height by height: the stored block decodes canonically,
its hash index and tx index entries point back to it, its header links to the previous block,
and replaying it on a fresh store from genesis succeeds and reproduces the stored app hash.
Commit signatures are consensus's to check (a node's seen commit for H may legitimately differ
from the ``last_commit`` that block H+1 carries: another +2/3 subset of the same precommits).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ledger import block as blk
from ledger import tx as txm
from ledger.app import App
from ledger.errors import LedgerError
from ledger.registry import EvidenceVerifier
from ledger.store import K_SNAPSHOT_BASE, Store


@dataclass
class VerifyReport:
    """Outcome: ``ok`` when ``problems`` is empty; ``verified_height`` is the last good height."""

    height: int
    verified_height: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(store: Store, evidence_verifier: EvidenceVerifier | None = None) -> VerifyReport:
    """Replay ``store``'s chain into a throw-away store and compare every hash."""
    report = VerifyReport(store.height)
    with tempfile.TemporaryDirectory(prefix="lem-verify-") as tmp:
        replay = App(Store(Path(tmp), store.genesis, durable=False), evidence_verifier)
        try:
            if replay.app_hash != store.app_hash_at(0):
                report.problems.append("height 0: genesis state hash differs from the stored one")
                return report
            for height in range(1, store.height + 1):
                problem = verify_height(store, replay, height)
                if problem:
                    report.problems.append(f"height {height}: {problem}")
                    return report
                report.verified_height = height
            if (replay.last_block_hash, replay.app_hash) != (store.last_block_hash, store.app_hash):
                report.problems.append("tip record differs from the replayed chain")
        finally:
            replay.store.close()
    return report


def verify_height(store: Store, replay: App, height: int) -> str | None:
    """Check stored block ``height`` and replay it on ``replay`` (at ``height - 1``).

    Returns:
        None when it verifies, else what is wrong.
    """
    raw = store.block(height)
    if raw is None and store.is_body_pruned(height):
        # docs/spec/privacy.md §3.1: the raw SetMeasure txs are gone, so no replay from here.
        return "block body pruned: cannot replay (a node joins such a chain by snapshot)"
    base = store.meta_value(K_SNAPSHOT_BASE)
    if raw is None and base is not None and height <= int(base[0]):
        return f"the store was restored from a snapshot at height {base[0]}: no block to replay"
    if raw is None:
        return "block missing"
    try:
        block = blk.decode(raw)
    except LedgerError as exc:
        return f"block does not decode: {exc}"
    if block.header.height != height:
        return f"block claims height {block.header.height}"
    if store.height_of(block.hash) != height:
        return "block hash index does not point to this height"
    for i, t in enumerate(block.txs):
        try:
            tx = txm.decode(t)
        except LedgerError as exc:
            return f"tx {i} does not decode: {exc}"
        if store.tx_location(tx.signer, tx.sequence) != (height, i):
            return f"tx index entry of tx {i} is missing or wrong"
    try:
        app_hash = replay.commit_block(raw, store.commit_at(height))
    except LedgerError as exc:
        return f"replay failed: {exc}"
    if app_hash != store.app_hash_at(height):
        return "replayed app hash differs from the stored one"
    return None
