"""Single-validator mode prunes block bodies too (docs/spec/privacy.md §3.1): after a block,
SingleLedger runs one bounded body-pruning step in a worker thread."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edge.clock import DaemonClock
from edge.health import Health
from edge.ledger_node import SingleLedger
from tests.unit.ledger.helpers import VAL, commit
from tests.unit.ledger.test_privacy_retention import SOLVED_AT, WINDOW_MS, Community


def _ledger(c: Community, prune_bodies: bool) -> SingleLedger:
    start = datetime.fromtimestamp((SOLVED_AT + WINDOW_MS + 60_000) / 1000, tz=UTC)
    return SingleLedger(c.app, VAL, DaemonClock(1.0, start), Health(), prune_bodies=prune_bodies)


async def test_single_validator_prunes_bodies_after_its_next_block(tmp_path: Path) -> None:
    """Once the period is pruned from the state, the next block made by the single validator
    removes the SetMeasure bodies of the period's four blocks; with prune_bodies off
    (``[ledger] keep_block_bodies = true``) they stay."""
    for prune in (True, False):
        c = Community(tmp_path / str(prune))
        commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS)
        commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS + 1)
        ledger = _ledger(c, prune)
        height = c.app.height
        await ledger._make_block()
        await ledger.close()
        assert c.app.height == height + 1
        pruned = [h for h in range(1, c.app.height + 1) if c.app.store.is_body_pruned(h)]
        assert pruned == ([2, 3, 4, 5] if prune else [])
        c.app.store.close()
