"""Block-body pruning: raw SetMeasure txs leave the block store once their day is pruned.

Spec: docs/spec/privacy.md §3.1. ``PruneMeasurements`` removes a settled day's ``meas/`` rows from
the *state* (consensus, identical on every node). The blocks that carried those rows as signed
``SetMeasure`` txs would still hold them for ever; this module rewrites such stored blocks into
their body-pruned record (:func:`ledger.store.pruned_record`): header, last commit and every tx
hash stay (``txs_hash`` still verifies, ``tx_location`` and inclusion proofs by hash still work),
the SetMeasure envelopes go, every other tx stays whole.

This is local storage work, not consensus: no header, block hash or app hash changes, and nodes
may do it at different times. It runs after a commit, in its own write transaction, over at most
``max_blocks`` blocks per call (a month of history does not stall a height), from a cursor kept
in the store's ``meta`` (resumes after a restart).

The cursor stops at the first block holding a SetMeasure whose day is not pruned yet (the
current period, a period in its dispute window): blocks are in time order and measurements of
later blocks are of later slots, so everything below the cursor is pruned as far as it can be.
A SetMeasure no period covers is never pruned from the state, so its body stays too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ledger import codec, privacy, state
from ledger import tx as txm
from ledger.block import Block
from ledger.block import decode as decode_block
from ledger.store import K_BODY_CURSOR, Store, pruned_record

log = logging.getLogger("ledger.bodyprune")

MAX_BLOCKS_PER_STEP = 16
"""Blocks examined per call [count]. A block of 19 SetMeasure costs ≈ 2 ms on the dev host
(decode, period lookups, re-encode; bench/snapshot_sync.py), so a step adds ≈ 30 ms to a commit
there and an estimated 0.15–0.3 s on a Pi-class core; a month's 2,976 blocks are caught up
after 186 commits (≈ 2 days at one block per slot)."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why the cursor stopped: the measurement of ``slot_ms`` in ``period_id`` is not pruned."""

    height: int
    period_id: str
    slot_ms: int


class BodyPruner:
    """Rewrites this node's stored blocks once their measurements' days are pruned.

    Args:
        store: the node's ledger store (the single writer's).
        max_blocks: blocks examined per :meth:`step` at most.
    """

    def __init__(self, store: Store, max_blocks: int = MAX_BLOCKS_PER_STEP) -> None:
        self._store = store
        self._max_blocks = max_blocks
        self.waiting: Waiting | None = None
        self.pruned_blocks = 0
        self.pruned_txs = 0

    @property
    def cursor(self) -> int:
        """Next height to examine (1 on a store that never pruned)."""
        value = self._store.meta_value(K_BODY_CURSOR)
        return 1 if value is None else int(value[0])

    def step(self) -> int:
        """Examine up to ``max_blocks`` blocks from the cursor; returns how many were rewritten.

        Raises:
            StoreError: the write failed (the cursor did not move: the next step redoes it).
        """
        if not self._still_waiting():
            return 0
        cursor = start = self.cursor
        records: dict[int, bytes] = {}
        examined = 0
        with self._store.state_reader() as base:
            st = state.Overlay(base)
            while cursor <= self._store.height and examined < self._max_blocks:
                raw = self._store.block(cursor)
                if raw is not None:  # None: already pruned, or below a restored snapshot
                    examined += 1  # (those cost one lookup each and do not count)
                    block = decode_block(raw)
                    drop, waiting = _measurements_to_drop(st, block)
                    if waiting is not None:
                        self.waiting = Waiting(cursor, *waiting)
                        break
                    if any(signer is not None for signer in drop):
                        records[cursor] = pruned_record(block, drop)
                        self.pruned_txs += sum(signer is not None for signer in drop)
                cursor += 1
        if cursor != start:
            self._store.rewrite_bodies(records, cursor)
            self.pruned_blocks += len(records)
            if records:
                log.info(
                    "block bodies pruned",
                    extra={"blocks": len(records), "from": start, "cursor": cursor},
                )
        return len(records)

    def _still_waiting(self) -> bool:
        """False while the measurement the cursor stopped at is still unpruned (no decode)."""
        if self.waiting is None:
            return True
        with self._store.state_reader() as base:
            progress = state.Overlay(base).get_value(privacy.k_pruned(self.waiting.period_id))
        if progress is not None and self.waiting.slot_ms < int(progress["next_ms"]):
            self.waiting = None
            return True
        return False


def _measurements_to_drop(
    st: state.Overlay, block: Block
) -> tuple[list[bytes | None], tuple[str, int] | None]:
    """Per tx the signer whose SetMeasure body may go (None: keep it), or the (period, slot) of
    the first measurement that must wait for its day's prune."""
    drop: list[bytes | None] = []
    for raw in block.txs:
        tx = txm.decode(raw)
        if tx.kind != "SetMeasure":
            drop.append(None)
            continue
        slot_ms = int(_body(tx)["slot_start_ms"])
        found = state.find_period(st, slot_ms)
        if found is None:
            drop.append(None)  # no period covers it: its state row is never pruned either
            continue
        period_id, _ = found
        progress = st.get_value(privacy.k_pruned(period_id))
        if progress is None or slot_ms >= int(progress["next_ms"]):
            return drop, (period_id, slot_ms)
        drop.append(tx.signer)
    return drop, None


def _body(tx: txm.Tx) -> dict[str, codec.Value]:
    body = tx.body
    assert isinstance(body, dict), "a committed SetMeasure has a map body"
    return body
