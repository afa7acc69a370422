"""The mempool: admitted txs waiting for a block, and txs held until their sequence is due.

Spec: docs/spec/ledger.md §8. Admission runs the app's ``check_tx`` with the sequence the signer
must use after its pending txs; duplicates (by tx hash) are refused; the pool is bounded in count
and bytes and, when full, refuses new txs (``mempool_full``) rather than evicting admitted ones —
eviction would open sequence gaps, and the submitter (the edge outbox) retries anyway. Reaping is
in admission order.

A gossiped tx that is ahead of its account's next sequence (its predecessor is still on its way:
MQTT promises no order across messages) is *held*, not refused, once its signature verified:
bounded per account and in total, evicted by age; it is admitted as soon as the gap is filled
(the missing tx arrives, or a block commits it).

After a commit, committed txs leave; each affected account's chain of pending txs is re-aligned
with its new committed sequence (stale ones leave, the rest stay or wait as held); a bounded
window at the front (the next proposal's candidates) and every tx a proposer dropped are
re-checked in full against the new state. The cost per block is O(txs of affected accounts +
the window), not O(mempool), and a tx that is still valid is never dropped.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ledger.app import Admission, App
from ledger.errors import Reason, TxRejected
from ledger.keys import sha256
from ledger.tx import Tx, decode

DEFAULT_MAX_TXS = 5000
DEFAULT_MAX_BYTES = 4 << 20
RECHECK_LIMIT = 64
"""Pending txs at the front fully re-checked after each commit (the others keep their checked
state; a tx another account's tx made invalid is dropped by the proposer's filter and then
leaves every pool through its own re-check or the window)."""

DEFAULT_MAX_HELD = 1024
"""Held txs (ahead of their account's sequence) at most, all accounts together."""
DEFAULT_MAX_HELD_PER_ACCOUNT = 64
"""Held txs per account at most; also how far ahead of the next sequence one may be."""
DEFAULT_HELD_MAX_AGE_S = 120.0
"""A held tx whose gap is not filled within this time leaves [s]."""


@dataclass(slots=True)
class AdmitResult:
    """What a batch admission did.

    Attributes:
        admitted: txs now pending, in admission order (including held txs promoted by them).
        held: txs held until their account's gap is filled.
        rejected: (raw tx, why) for the rest.
    """

    admitted: list[Tx] = field(default_factory=list)
    held: list[Tx] = field(default_factory=list)
    rejected: list[tuple[bytes, TxRejected]] = field(default_factory=list)


@dataclass(slots=True)
class _Held:
    tx: Tx
    since: float


class Mempool:
    """Pending txs of one node.

    Args:
        app: the application whose committed state admission checks against.
        max_txs: bound on the number of pending txs.
        max_bytes: bound on their total size [bytes].
        max_held: bound on held txs, all accounts [count].
        max_held_per_account: bound on held txs of one account [count].
        held_max_age_s: age at which a held tx is evicted [s].
        monotonic: clock for the held txs' age [s].
    """

    def __init__(
        self,
        app: App,
        *,
        max_txs: int = DEFAULT_MAX_TXS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_held: int = DEFAULT_MAX_HELD,
        max_held_per_account: int = DEFAULT_MAX_HELD_PER_ACCOUNT,
        held_max_age_s: float = DEFAULT_HELD_MAX_AGE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.max_held = max_held
        self.max_held_per_account = max_held_per_account
        self.held_max_age_s = held_max_age_s
        self._monotonic = monotonic
        self._txs: OrderedDict[bytes, Tx] = OrderedDict()
        self._chains: dict[bytes, list[Tx]] = {}
        """Pending txs per signer, in sequence order (contiguous from the committed one)."""
        self._held: dict[bytes, dict[int, _Held]] = {}
        self._held_order: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
        """tx hash → (signer, sequence) of held txs, oldest first (eviction by age / size)."""
        self.size_bytes = 0
        self.rejected_full = 0
        """Count of txs refused because the pool was full (exported as a metric by edge)."""
        self.held_evicted = 0
        """Held txs that left without their gap being filled (age or bound)."""

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._txs

    @property
    def held_count(self) -> int:
        """Txs held until their account's sequence is due."""
        return len(self._held_order)

    def is_held(self, tx_hash: bytes) -> bool:
        return tx_hash in self._held_order

    def raw_of(self, tx_hash: bytes) -> bytes | None:
        """The envelope of a pending or held tx by its hash (rebuilding a compact proposal)."""
        tx = self._txs.get(tx_hash)
        if tx is not None:
            return tx.raw
        where = self._held_order.get(tx_hash)
        return None if where is None else self._held[where[0]][where[1]].tx.raw

    def pending_of(self, signer: bytes) -> int:
        """Pending (not held) txs of ``signer``."""
        return len(self._chains.get(signer, ()))

    def _next_sequence(self, batch: Admission, signer: bytes) -> int:
        """The sequence ``signer``'s next tx must carry: after its last pending tx, and never
        below the committed one. The two differ while a block is being committed (the single
        validator commits in a worker thread): its txs are then in the committed state and
        still pending here until :meth:`update`, and counting them twice would refuse the
        signer's next tx as stale."""
        committed = batch.sequence(signer)
        chain = self._chains.get(signer)
        return max(committed, chain[-1].sequence + 1) if chain else committed

    # ----------------------------------------------------------------- admission

    def add(self, raw: bytes, *, hold: bool = False) -> Tx:
        """Admit ``raw`` (a local submission: by default a tx ahead of its sequence is refused,
        so the submitter learns of its gap at once).

        Returns:
            The decoded tx (pending, or held when ``hold`` and it is ahead of its sequence).

        Raises:
            TxRejected: ``duplicate_tx``, ``mempool_full`` or any ``check_tx`` reason.
        """
        result = self.add_many([raw], hold=hold)
        if result.rejected:
            raise result.rejected[0][1]
        return (result.held or result.admitted)[0]

    def add_many(self, raws: Iterable[bytes], *, hold: bool = True) -> AdmitResult:
        """Admit gossiped txs in one go, against one snapshot of the committed state.

        A tx ahead of its account's next sequence is held (``hold``), else refused with
        ``future_sequence``; a held tx is admitted as soon as the one before it is.
        """
        result = AdmitResult()
        self._evict_old_held()
        with self.app.admission() as batch:
            for raw in raws:
                try:
                    tx = self._admit_one(batch, raw, hold)
                except TxRejected as exc:
                    result.rejected.append((raw, exc))
                    continue
                if tx.hash in self._held_order:
                    result.held.append(tx)
                else:
                    result.admitted.append(tx)
                    result.admitted.extend(self._promote(batch, tx.signer))
        return result

    def _admit_one(self, batch: Admission, raw: bytes, hold: bool) -> Tx:
        # Decoded first: a pending or held tx is still in the decode cache, so a repeat costs
        # a lookup, and a new one is hashed once (by the decoder), not twice.
        envelope = decode(raw)
        if envelope.hash in self._txs or envelope.hash in self._held_order:
            raise TxRejected(
                Reason.DUPLICATE_TX, f"tx {envelope.hash.hex()[:16]}… is already pending"
            )
        self._check_room(len(raw))
        expected = self._next_sequence(batch, envelope.signer)
        try:
            tx = batch.admit(raw, expected)
        except TxRejected as exc:
            # Raised after the signature and body checks (ledger/execute.py order), so only a
            # correctly signed tx of that account is ever held.
            if not (hold and exc.reason is Reason.FUTURE_SEQUENCE):
                raise
            return self._hold(envelope, expected, exc)
        self._append(tx)
        return tx

    def _check_room(self, size: int) -> None:
        if len(self._txs) >= self.max_txs or self.size_bytes + size > self.max_bytes:
            self.rejected_full += 1
            raise TxRejected(
                Reason.MEMPOOL_FULL,
                f"mempool holds {len(self._txs)} txs / {self.size_bytes} bytes; retry later",
            )

    def _append(self, tx: Tx) -> None:
        self._txs[tx.hash] = tx
        self._chains.setdefault(tx.signer, []).append(tx)
        self.size_bytes += len(tx.raw)

    # ----------------------------------------------------------------- held txs

    def _hold(self, tx: Tx, expected: int, why: TxRejected) -> Tx:
        mine = self._held.setdefault(tx.signer, {})
        ahead = tx.sequence - expected
        if ahead > self.max_held_per_account or len(mine) >= self.max_held_per_account:
            if not mine:
                del self._held[tx.signer]
            raise TxRejected(
                Reason.FUTURE_SEQUENCE,
                f"{why.message}; {len(mine)} txs of this account already held (bound "
                f"{self.max_held_per_account})",
            )
        if tx.sequence in mine:  # another tx with this sequence waits: first one wins
            raise TxRejected(Reason.FUTURE_SEQUENCE, f"{why.message}; another tx holds it")
        while len(self._held_order) >= self.max_held:
            self._drop_held(next(iter(self._held_order)))
            self.held_evicted += 1
        mine[tx.sequence] = _Held(tx, self._monotonic())
        self._held_order[tx.hash] = (tx.signer, tx.sequence)
        return tx

    def _drop_held(self, tx_hash: bytes) -> Tx:
        signer, sequence = self._held_order.pop(tx_hash)
        mine = self._held[signer]
        held = mine.pop(sequence)
        if not mine:
            del self._held[signer]
        return held.tx

    def forget_held(self, signer: bytes) -> int:
        """Drop ``signer``'s held txs; returns how many. The node's own submitter calls this
        when it re-signs from the committed sequence: its new txs replace the held ones."""
        gone = [t.tx.hash for t in self._held.get(signer, {}).values()]
        for tx_hash in gone:
            self._drop_held(tx_hash)
        return len(gone)

    def _evict_old_held(self) -> None:
        horizon = self._monotonic() - self.held_max_age_s
        while self._held_order:
            tx_hash = next(iter(self._held_order))
            signer, sequence = self._held_order[tx_hash]
            if self._held[signer][sequence].since > horizon:
                return
            self._drop_held(tx_hash)
            self.held_evicted += 1

    def _promote(self, batch: Admission, signer: bytes) -> list[Tx]:
        """Admit the held txs of ``signer`` that are now next in line, in sequence order."""
        promoted: list[Tx] = []
        mine = self._held.get(signer)
        if not mine:
            return promoted
        committed = batch.sequence(signer)
        for sequence in sorted(s for s in mine if s < committed):  # used meanwhile
            self._drop_held(mine[sequence].tx.hash)
        while signer in self._held:
            expected = self._next_sequence(batch, signer)
            held = self._held[signer].get(expected)
            if held is None:
                return promoted
            self._drop_held(held.tx.hash)
            try:
                self._check_room(len(held.tx.raw))
                tx = batch.admit(held.tx.raw, expected)
            except TxRejected:
                return promoted  # no longer valid (or no room): it leaves; later ones wait
            self._append(tx)
            promoted.append(tx)
        return promoted

    # ----------------------------------------------------------------- reaping

    def reap(self, max_txs: int | None = None) -> list[bytes]:
        """Pending txs in admission order (they stay until :meth:`update`)."""
        if max_txs is None:
            return [t.raw for t in self._txs.values()]
        out: list[bytes] = []
        for t in self._txs.values():
            if len(out) >= max_txs:
                break
            out.append(t.raw)
        return out

    # ----------------------------------------------------------------- after a commit

    def update(
        self, committed: Sequence[bytes], dropped: Iterable[tuple[bytes, TxRejected]] = ()
    ) -> list[Tx]:
        """After a commit: remove committed txs, re-align and re-check the rest.

        Only the accounts the block touched and the txs the proposer dropped are looked at,
        plus the first :data:`RECHECK_LIMIT` pending txs, re-checked in full (the next
        proposal's candidates). A tx leaves only if it is committed, stale, or fails its
        full re-check against the new state; a tx behind one that left is held, not
        dropped (its account may fill the gap). Held txs whose turn came are admitted.

        Returns:
            The txs that became pending (promoted from held).
        """
        affected: set[bytes] = set()
        for raw in committed:
            tx = self._txs.get(sha256(raw))
            affected.add(tx.signer if tx is not None else decode(raw).signer)
        suspects = {sha256(raw) for raw, _ in dropped}
        promoted: list[Tx] = []
        with self.app.admission() as batch:
            for signer in affected:
                self._realign(batch, signer)
            window = [t for _, t in zip(range(RECHECK_LIMIT), self._txs.values(), strict=False)]
            window += [self._txs[h] for h in suspects if h in self._txs]
            for tx in window:
                if tx.hash in self._txs and not self._still_valid(batch, tx):
                    self._cut(tx)
            for signer in list(self._held):
                promoted.extend(self._promote(batch, signer))
        self._evict_old_held()
        return promoted

    def _realign(self, batch: Admission, signer: bytes) -> None:
        """Drop ``signer``'s pending txs whose sequence a block used; if the rest no longer
        starts at the committed sequence (a tx of theirs was replaced), hold them."""
        chain = self._chains.get(signer)
        if not chain:
            return
        committed = batch.sequence(signer)
        while chain and chain[0].sequence < committed:
            self._remove(chain.pop(0))
        if chain and chain[0].sequence != committed:
            self._cut(chain[0])
        if not chain:
            self._chains.pop(signer, None)

    def _still_valid(self, batch: Admission, tx: Tx) -> bool:
        chain = self._chains[tx.signer]
        expected = batch.sequence(tx.signer) + chain.index(tx)
        try:
            batch.admit(tx.raw, expected)
        except TxRejected:
            return False
        return True

    def _cut(self, tx: Tx) -> None:
        """``tx`` is no longer valid: it leaves; its account's later txs wait as held."""
        chain = self._chains[tx.signer]
        at = chain.index(tx)
        later = chain[at + 1 :]
        del chain[at:]
        if not chain:
            del self._chains[tx.signer]
        self._remove(tx)
        for t in later:
            self._remove(t)
            if t.hash not in self._held_order and t.sequence not in self._held.get(t.signer, {}):
                self._held.setdefault(t.signer, {})[t.sequence] = _Held(t, self._monotonic())
                self._held_order[t.hash] = (t.signer, t.sequence)
        while len(self._held_order) > self.max_held:
            self._drop_held(next(iter(self._held_order)))
            self.held_evicted += 1

    def _remove(self, tx: Tx) -> None:
        if self._txs.pop(tx.hash, None) is not None:
            self.size_bytes -= len(tx.raw)
