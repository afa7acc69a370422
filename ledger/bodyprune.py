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

A second, independent pass (:class:`JoinPass`, docs/spec/privacy.md §3.1, join.md §6) removes
the ``sealed`` box of a pseudonymous chain's ``JoinRequest`` (the meter serial sealed to the
admin) once the request is no longer pending in the state (approved, or admitted otherwise): so
after ``lemctl privacy erase`` nobody, not even the admin key, can link the account to the serial
from block history. It has its own cursor (``meta/bodyprune_join``) and stops at the first
sealed request still pending.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ledger import codec, privacy, state
from ledger.apps import join
from ledger.block import Header
from ledger.genesis import Genesis
from ledger.store import K_BODY_CURSOR, K_SNAPSHOT_BASE, Store
from ledger.stored_block import PrunedTx, StoredBlock, pruned_record

log = logging.getLogger("ledger.bodyprune")

MAX_BLOCKS_PER_STEP = 32
"""Blocks examined per call [count]. A block of 19 SetMeasure costs ≈ 0.1 ms on the dev host
(trusted decode, cached period lookups, re-encode; bench/snapshot_sync.py: 3 ms per step on
average, 7 ms the slowest), an estimated 5–10× that on a Pi-class core; a month's 2,976
blocks are caught up after 93 commits (about a day at one block per slot)."""

K_JOIN_CURSOR = b"bodyprune_join"
"""meta key: [next height the join pass examines] (:class:`JoinPass`)."""
JOIN_CURSOR_SAVE_EVERY = 256
"""Heights the join cursor may move before it is written [count]. Re-examining a block is
harmless (a pruned box is gone), so a restart redoes at most this many cheap checks, and a
chain without sealed requests does not pay a durable write per commit."""
_JOIN_MARKERS = (codec.encode("JoinRequest"), codec.encode("sealed"))
"""Encoded kind and body key of a sealed JoinRequest: a tx or block without both needs no
decode (a tx is embedded in its block's bytes verbatim)."""


def wanted(genesis: Genesis) -> bool:
    """True when a chain has block bodies to prune: retention (``dispute_window_ms``: the
    SetMeasure pass) or pseudonymous joins (the sealed JoinRequest pass)."""
    return genesis.dispute_window_ms is not None or genesis.privacy == privacy.Mode.PSEUDONYMOUS


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
        max_blocks: blocks examined per :meth:`step` at most (per pass).
        measurements: run the SetMeasure pass (default: the chain has retention).
        joins: run the sealed JoinRequest pass (default: the chain is pseudonymous).
    """

    def __init__(
        self,
        store: Store,
        max_blocks: int = MAX_BLOCKS_PER_STEP,
        *,
        measurements: bool | None = None,
        joins: bool | None = None,
    ) -> None:
        g = store.genesis
        self._store = store
        self._max_blocks = max_blocks
        self._measurements = (
            g.dispute_window_ms is not None if measurements is None else measurements
        )
        if joins is None:
            joins = g.privacy == privacy.Mode.PSEUDONYMOUS
        self.joins = JoinPass(store, max_blocks) if joins else None
        self.waiting: Waiting | None = None
        self.pruned_blocks = 0
        self.pruned_txs = 0

    @property
    def cursor(self) -> int:
        """Next height to examine (1 on a store that never pruned)."""
        value = self._store.meta_value(K_BODY_CURSOR)
        return 1 if value is None else int(value[0])

    def step(self) -> int:
        """Run each pass once (SetMeasure, then sealed JoinRequest); returns blocks rewritten.

        Raises:
            StoreError: a write failed (that pass's cursor did not move: the next step redoes it).
        """
        rewritten = self._step_measurements() if self._measurements else 0
        if self.joins is not None:
            rewritten += self.joins.step()
        return rewritten

    def _step_measurements(self) -> int:
        """Examine up to ``max_blocks`` blocks from the cursor; returns how many were rewritten."""
        if not self._still_waiting():
            return 0
        cursor = start = self.cursor
        records: dict[int, bytes] = {}
        examined = 0
        with self._store.state_reader() as base:
            periods = _Periods(state.Overlay(base))
            while cursor <= self._store.height and examined < self._max_blocks:
                block = _read_block(self._store, cursor)
                if block is not None:  # None: below a restored snapshot (one lookup each,
                    examined += 1  # not counted)
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


def _stored_block(raw: bytes) -> StoredBlock:
    """A whole block this node stored (validated when it was committed): decoded without the
    canonical-form and hash checks of :func:`ledger.block.decode`."""
    header, txs, last_commit = codec.decode_trusted(raw)
    return StoredBlock(Header(*header), tuple(txs), last_commit)


def _read_block(store: Store, height: int) -> StoredBlock | None:
    """The block at ``height`` as stored (whole, or body-pruned by the other pass), or None."""
    raw = store.block(height)
    if raw is not None:
        return _stored_block(raw)
    return store.stored_block(height) if store.is_body_pruned(height) else None


def _measurements_to_drop(
    periods: _Periods, block: StoredBlock
) -> tuple[list[bytes | None], tuple[str, int] | None]:
    """Per tx the signer whose SetMeasure body may go (None: keep it), or the (period, slot) of
    the first measurement that must wait for its day's prune."""
    drop: list[bytes | None] = []
    for raw in block.txs:
        if isinstance(raw, PrunedTx):
            drop.append(None)  # pruned already (a sealed JoinRequest)
            continue
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


class JoinPass:
    """Removes decided sealed JoinRequests' boxes from stored blocks (privacy.md §3.1, §5.3).

    A ``JoinRequest`` with a non-empty ``sealed`` field whose signer has no pending request in
    the committed state (``join.request`` is None: approved, admitted as certified, or replaced
    and decided) becomes ``[tx_hash, signer]`` like a pruned SetMeasure; every other tx stays as
    it is (whole, or pruned by the SetMeasure pass). The first sealed request still pending stops
    the cursor; the pass then reads only that signer's request until it is decided.

    Args:
        store: the node's ledger store (the single writer's).
        max_blocks: heights examined per :meth:`step` at most.
    """

    def __init__(self, store: Store, max_blocks: int = MAX_BLOCKS_PER_STEP) -> None:
        self._store = store
        self._max_blocks = max_blocks
        self._cursor = self._saved = self._load_cursor()
        self.waiting: tuple[int, bytes] | None = None
        """(height, signer) of the sealed request that holds the cursor, or None."""
        self.pruned_blocks = 0
        self.pruned_txs = 0

    @property
    def cursor(self) -> int:
        """Next height to examine (in memory: the stored one may lag, see
        :data:`JOIN_CURSOR_SAVE_EVERY`)."""
        return self._cursor

    def _load_cursor(self) -> int:
        value = self._store.meta_value(K_JOIN_CURSOR)
        return 1 if value is None else int(value[0])

    def _skip_snapshot_gap(self) -> None:
        """Jump over heights a snapshot restore (at start or while running) never stored."""
        base = self._store.meta_value(K_SNAPSHOT_BASE)
        if base is None or self._cursor > int(base[0]):
            return
        if self._store.block(self._cursor) is None and not self._store.is_body_pruned(self._cursor):
            self._cursor = int(base[0]) + 1

    def step(self) -> int:
        """Examine up to ``max_blocks`` heights from the cursor; returns blocks rewritten.

        Raises:
            StoreError: the write failed (the stored cursor did not move past the blocks).
        """
        if self.waiting is not None and self._pending(self.waiting[1]):
            return 0
        self.waiting = None
        self._skip_snapshot_gap()
        cursor = start = self._cursor
        records: dict[int, bytes] = {}
        with self._store.state_reader() as base:
            st = state.Overlay(base)
            while cursor <= self._store.height and cursor - start < self._max_blocks:
                block = _sealed_candidate(self._store, cursor)
                if block is not None:
                    drop, pending = _requests_to_drop(st, block)
                    if pending is not None:
                        self.waiting = (cursor, pending)
                        break
                    if any(signer is not None for signer in drop):
                        records[cursor] = pruned_record(block, drop)
                        self.pruned_txs += sum(signer is not None for signer in drop)
                cursor += 1
        if records:
            self._store.rewrite_bodies(records, _measure_cursor(self._store))
            self.pruned_blocks += len(records)
            log.info("sealed join requests pruned", extra={"blocks": len(records), "from": start})
        self._cursor = cursor
        if records or self.waiting is not None or cursor - self._saved >= JOIN_CURSOR_SAVE_EVERY:
            self._save_cursor()
        return len(records)

    def _pending(self, signer: bytes) -> bool:
        with self._store.state_reader() as base:
            return join.request(state.Overlay(base), signer) is not None

    def _save_cursor(self) -> None:
        if self._cursor == self._saved:
            return
        # Written after the blocks, so a crash in between only repeats work.
        self._store.put_meta_value(K_JOIN_CURSOR, [self._cursor])
        self._saved = self._cursor


def _measure_cursor(store: Store) -> int:
    """The SetMeasure pass's cursor, rewritten unchanged by ``Store.rewrite_bodies``."""
    value = store.meta_value(K_BODY_CURSOR)
    return 1 if value is None else int(value[0])


def _has_markers(raw: bytes) -> bool:
    return all(marker in raw for marker in _JOIN_MARKERS)


def _sealed_candidate(store: Store, height: int) -> StoredBlock | None:
    """The block at ``height`` if it may hold a sealed JoinRequest (None: it cannot, or there
    is no block): a whole block without the markers is not decoded at all."""
    raw = store.block(height)
    if raw is not None:
        return _stored_block(raw) if _has_markers(raw) else None
    if not store.is_body_pruned(height):
        return None
    stored = store.stored_block(height)
    if stored is None or not any(isinstance(t, bytes) and _has_markers(t) for t in stored.txs):
        return None
    return stored


def _requests_to_drop(
    st: state.Overlay, block: StoredBlock
) -> tuple[list[bytes | None], bytes | None]:
    """Per tx the signer whose sealed JoinRequest goes (None: keep the tx), or the signer of the
    first sealed request still pending (the cursor waits there)."""
    drop: list[bytes | None] = []
    for raw in block.txs:
        if isinstance(raw, PrunedTx) or not _has_markers(raw):
            drop.append(None)
            continue
        # Envelope [chain_id, signer, sequence, kind, body, signature] (docs/spec/codec.md).
        _, signer, _, kind, body, _ = codec.decode_trusted(raw)
        if kind != "JoinRequest" or not (isinstance(body, dict) and body.get("sealed")):
            drop.append(None)
            continue
        if join.request(st, bytes(signer)) is not None:
            return drop, bytes(signer)
        drop.append(bytes(signer))
    return drop, None
