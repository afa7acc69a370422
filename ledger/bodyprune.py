"""Block-body pruning: raw SetMeasure txs leave the block store once their day is pruned.

Spec: docs/spec/privacy.md §3.1. ``PruneMeasurements`` removes a settled day's ``meas/`` rows from
the *state* (consensus, identical on every node). The blocks that carried those rows as signed
``SetMeasure`` txs would still hold them for ever; this module rewrites such stored blocks
into their body-pruned record (:func:`ledger.stored_block.pruned_record`): header, last commit
and every tx hash stay (``txs_hash`` still verifies, ``tx_location`` and inclusion proofs by
hash still work), the SetMeasure envelopes go, every other tx stays whole.

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
from ledger.block import Block, Header
from ledger.store import K_BODY_CURSOR, Store
from ledger.stored_block import pruned_record

log = logging.getLogger("ledger.bodyprune")

MAX_BLOCKS_PER_STEP = 32
"""Blocks examined per call [count]. A block of 19 SetMeasure costs ≈ 0.1 ms on the dev host
(trusted decode, cached period lookups, re-encode; bench/snapshot_sync.py: 3 ms per step on
average, 7 ms the slowest), an estimated 5–10× that on a Pi-class core; a month's 2,976
blocks are caught up after 93 commits (about a day at one block per slot)."""


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
            periods = _Periods(state.Overlay(base))
            while cursor <= self._store.height and examined < self._max_blocks:
                raw = self._store.block(cursor)
                if raw is not None:  # None: already pruned, or below a restored snapshot
                    examined += 1  # (those cost one lookup each and do not count)
                    block = _stored_block(raw)
                    drop, waiting = _measurements_to_drop(periods, block)
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


class _Periods:
    """Period lookups of one step: a block's 19 measurements share one period, so each
    (period, pruned-up-to) pair is read from the state once per step, not once per tx."""

    def __init__(self, st: state.Overlay) -> None:
        self._st = st
        self._known: list[tuple[int, int, str, int]] = []  # start, end, id, next_ms

    def find(self, slot_ms: int) -> tuple[str, int] | None:
        """(period id, pruned up to [ms]) of the period holding ``slot_ms``, or None."""
        for start, end, period_id, next_ms in self._known:
            if start <= slot_ms < end:
                return period_id, next_ms
        found = state.find_period(self._st, slot_ms)
        if found is None:
            return None
        period_id, record = found
        progress = self._st.get_value(privacy.k_pruned(period_id))
        next_ms = -1 if progress is None else int(progress["next_ms"])
        self._known.append((int(record["start_ms"]), int(record["end_ms"]), period_id, next_ms))
        return period_id, next_ms


def _stored_block(raw: bytes) -> Block:
    """A whole block this node stored (validated when it was committed): decoded without the
    canonical-form and hash checks of :func:`ledger.block.decode`."""
    header, txs, last_commit = codec.decode_trusted(raw)
    return Block(Header(*header), tuple(txs), last_commit)


def _measurements_to_drop(
    periods: _Periods, block: Block
) -> tuple[list[bytes | None], tuple[str, int] | None]:
    """Per tx the signer whose SetMeasure body may go (None: keep it), or the (period, slot) of
    the first measurement that must wait for its day's prune."""
    drop: list[bytes | None] = []
    for raw in block.txs:
        # Envelope [chain_id, signer, sequence, kind, body, signature] (docs/spec/codec.md).
        _, signer, _, kind, body, _ = codec.decode_trusted(raw)
        if kind != "SetMeasure":
            drop.append(None)
            continue
        slot_ms = int(body["slot_start_ms"])
        found = periods.find(slot_ms)
        if found is None:
            drop.append(None)  # no period covers it: its state row is never pruned either
            continue
        period_id, next_ms = found
        if slot_ms >= next_ms:
            return drop, (period_id, slot_ms)
        drop.append(bytes(signer))
    return drop, None
