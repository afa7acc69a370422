"""The application port consensus drives, and its implementation over the LMDB store.

Spec: docs/spec/ledger.md §1 (a small synchronous cousin of CometBFT's ABCI++: CheckTx,
PrepareProposal, ProcessProposal, FinalizeBlock + Commit folded into ``commit_block``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from ledger import block as blk
from ledger import codec, state
from ledger import tx as txm
from ledger.errors import BlockInvalid, TxRejected
from ledger.execute import Authenticated, admit, execute_block, select_txs
from ledger.registry import Context, EvidenceVerifier
from ledger.store import Store
from ledger.tx import Tx

_CACHE_BLOCKS = 8  # validated proposals kept per height (one per round is typical)
_DECODED_BLOCKS = 4  # decoded blocks kept by their bytes (each up to 1 MiB)
_AUTHENTICATED_TXS = 8192  # admitted txs whose stateless checks are kept (mempool: 5,000)


class CachedReader:
    """A read-through cache over one state snapshot (an LMDB read transaction).

    Executing a block or admitting a batch reads the same few keys (``cfg/chain``,
    ``cfg/admins``, …) for every tx; inside one snapshot the value of a key cannot change,
    so each is read from LMDB once (docs/spec/consensus.md §11). Scans pass through.
    """

    __slots__ = ("_base", "_cache")

    def __init__(self, base: state.StateReader) -> None:
        self._base = base
        self._cache: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        # A membership test, not try/except KeyError: most keys an admission or a block reads
        # (the signer's sequence, the tx's own records) are read once, and a raised KeyError
        # costs ~0.5 µs per miss (docs/spec/consensus.md §11).
        if key in self._cache:
            return self._cache[key]
        value = self._cache[key] = self._base.get(key)
        return value

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self._base.scan(start, end)


class _CheckOverlay(state.Overlay):
    """The overlay admission checks run on: it only reads (a check's writes are dropped after
    each tx), so the chain's config records (``cfg/…``), which nearly every check reads
    (``cfg/admins``, ``cfg/chain``), are decoded once per batch, not once per tx.

    The decoded records are shared by the batch's checks; their readers copy them
    (``state.admins``, ``state.validators``, …) or only read them (``privacy.mode``).
    """

    def __init__(self, base: state.StateReader) -> None:
        super().__init__(base)
        self._config: dict[bytes, codec.Value] = {}

    def get_value(self, key: bytes) -> codec.Value:
        if self.writes or not key.startswith(b"cfg/"):
            return super().get_value(key)
        try:
            return self._config[key]
        except KeyError:
            value = self._config[key] = super().get_value(key)
            return value


class _BlockOverlay(state.Overlay):
    """The overlay a block executes on (proposer's filter, validation): the chain's config
    records (``cfg/…``), which nearly every tx reads (``cfg/admins`` for each AddMeter), are
    decoded once per block instead of once per tx (docs/spec/consensus.md §11).

    Each tx runs in a :class:`_TxOverlay` child. A decoded record is dropped as soon as a tx
    that wrote its key is merged (a SetAdmins executed by governance), so the next tx reads
    the new value; a tx's own unmerged writes are seen by that tx only, through its child.
    The decoded records are shared: their readers copy them (``state.admins``,
    ``state.validators``, ``state.chain_params``) or only read them (``privacy.mode``), and
    writers store fresh values (``ledger/apps/governance.py``).
    """

    def __init__(self, base: state.StateReader) -> None:
        super().__init__(base)
        self._config: dict[bytes, codec.Value] = {}

    def get_value(self, key: bytes) -> codec.Value:
        if not key.startswith(b"cfg/"):
            return super().get_value(key)
        try:
            return self._config[key]
        except KeyError:
            value = self._config[key] = super().get_value(key)
            return value

    def put(self, key: bytes, value: bytes) -> None:
        self._config.pop(key, None)
        super().put(key, value)

    def delete(self, key: bytes) -> None:
        self._config.pop(key, None)
        super().delete(key)

    def child(self) -> state.Overlay:
        return _TxOverlay(self)

    def merge(self, child: state.Overlay) -> None:
        super().merge(child)
        if self._config:
            for key in child.writes:
                self._config.pop(key, None)


class _TxOverlay(state.Overlay):
    """One tx's overlay over a :class:`_BlockOverlay`: ``cfg/`` records it has not written
    come from the block's decoded copies."""

    base: _BlockOverlay

    def get_value(self, key: bytes) -> codec.Value:
        if key in self.writes or not key.startswith(b"cfg/"):
            return super().get_value(key)
        return self.base.get_value(key)


class Admission:
    """Mempool admission of a batch of txs against one snapshot of the committed state.

    Obtained from :meth:`App.admission`; valid only inside its ``with`` block. Admission
    only reads (``check_tx`` never applies a tx), so one overlay and one context serve the
    whole batch, and each account's committed sequence is read once.
    """

    def __init__(self, app: App, reader: CachedReader) -> None:
        self._overlay = _CheckOverlay(reader)
        self._app = app
        self._ctx = app._ctx(self._overlay, app.height + 1, app.last_block_time_ms, True)
        self._sequences: dict[bytes, int] = {}

    def sequence(self, account: bytes) -> int:
        """The next sequence ``account`` must use in the committed state."""
        seq = self._sequences.get(account)
        if seq is None:
            seq = self._sequences[account] = self._overlay.get_int(state.k_seq(account))
        return seq

    def admit(self, raw: bytes, expected_sequence: int | None = None) -> Tx:
        """:meth:`App.admit_tx` on this batch's snapshot.

        Raises:
            TxRejected: the first rule broken.
        """
        try:
            admitted = admit(self._ctx, raw, expected_sequence, self._app._authenticated)
        finally:
            # validate() only reads (ledger/registry.py); should a kind ever write, the next
            # tx of the batch must not see it.
            self._overlay.writes.clear()
        self._app._keep_authenticated(raw, admitted)
        return admitted[0]


class Application(Protocol):
    """What consensus needs from the ledger (docs/spec/ledger.md §1)."""

    @property
    def chain_id(self) -> str: ...
    @property
    def height(self) -> int: ...
    @property
    def last_block_hash(self) -> bytes: ...
    @property
    def last_block_time_ms(self) -> int: ...
    @property
    def app_hash(self) -> bytes: ...
    def validators(self) -> list[tuple[bytes, int]]: ...
    def check_tx(self, tx_bytes: bytes) -> None: ...
    def prepare_block(
        self, height: int, time_ms: int, proposer: bytes, txs: list[bytes], last_commit: codec.Value
    ) -> bytes: ...
    def validate_block(self, block_bytes: bytes) -> None: ...
    def commit_block(self, block_bytes: bytes, commit: codec.Value) -> bytes: ...
    def block(self, height: int) -> bytes | None: ...
    def commit(self, height: int) -> codec.Value: ...


@dataclass(frozen=True, slots=True)
class Prepared:
    """A built proposal and the candidates left out (with why)."""

    block_bytes: bytes
    dropped: list[tuple[bytes, TxRejected]]


class App:
    """The ledger application over one :class:`Store`.

    Args:
        store: the node's opened store.
        evidence_verifier: consensus's double-sign checker; None refuses Evidence txs.
    """

    def __init__(self, store: Store, evidence_verifier: EvidenceVerifier | None = None) -> None:
        self.store = store
        self.evidence_verifier = evidence_verifier
        self._validated: OrderedDict[bytes, dict[bytes, bytes | None]] = OrderedDict()
        self._decoded: OrderedDict[bytes, blk.Block] = OrderedDict()
        self._authenticated: dict[bytes, Authenticated] = {}
        """Stateless check results of admitted txs by their exact bytes: block execution
        (the proposer's filter, validation) skips decode, kind, signature and body checks
        for these (docs/spec/consensus.md §11); committed txs leave it."""

    @property
    def chain_id(self) -> str:
        return self.store.genesis.chain_id

    @property
    def height(self) -> int:
        return self.store.height

    @property
    def last_block_hash(self) -> bytes:
        return self.store.last_block_hash

    @property
    def last_block_time_ms(self) -> int:
        return self.store.last_time_ms

    @property
    def app_hash(self) -> bytes:
        return self.store.app_hash

    def validators(self) -> list[tuple[bytes, int]]:
        """Validator set for height ``height + 1``, sorted by key."""
        with self.store.state_reader() as base:
            return state.validators(state.Overlay(base))

    def block(self, height: int) -> bytes | None:
        return self.store.block(height)

    def commit(self, height: int) -> codec.Value:
        return self.store.commit_at(height)

    def _ctx(self, st: state.Overlay, height: int, time_ms: int, check_only: bool) -> Context:
        return Context(st, self.chain_id, height, time_ms, check_only, self.evidence_verifier)

    # mempool ------------------------------------------------------------------------------

    def check_tx(self, tx_bytes: bytes) -> None:
        """Admission check against the committed state (docs/spec/ledger.md §4).

        Raises:
            TxRejected: the reason and a message.
        """
        self.admit_tx(tx_bytes)

    def admit_tx(self, tx_bytes: bytes, expected_sequence: int | None = None) -> Tx:
        """:meth:`check_tx` that returns the decoded tx; the mempool passes the sequence it
        expects after the signer's pending txs."""
        with self.admission() as batch:
            return batch.admit(tx_bytes, expected_sequence)

    @contextmanager
    def admission(self) -> Iterator[Admission]:
        """Admit many txs against one snapshot of the committed state (one LMDB read
        transaction, each state key read once): the mempool's batch path."""
        with self.store.state_reader() as base:
            yield Admission(self, CachedReader(base))

    def sequence(self, account: bytes) -> int:
        """The next sequence number ``account`` must use, in the committed state."""
        with self.store.state_reader() as base:
            return state.Overlay(base).get_int(state.k_seq(account))

    # proposals ----------------------------------------------------------------------------

    def prepare(
        self, height: int, time_ms: int, proposer: bytes, txs: list[bytes], last_commit: codec.Value
    ) -> Prepared:
        """Build the proposal for ``height`` from candidate txs (see :meth:`prepare_block`)."""
        self._check_next(height, time_ms)
        budget = blk.MAX_BLOCK_BYTES - 4096  # header, commit and framing stay well below this
        with self.store.state_reader() as base:
            overlay = _BlockOverlay(CachedReader(base))
            ctx = self._ctx(overlay, height, time_ms, False)
            kept, dropped = select_txs(ctx, _fit(txs, budget), self._authenticated)
        header = blk.Header(
            blk.BLOCK_VERSION,
            self.chain_id,
            height,
            time_ms,
            self.last_block_hash,
            blk.txs_hash(kept),
            self.app_hash,
            proposer,
            blk.validators_hash(self.validators()),
            blk.commit_hash(last_commit),
        )
        block = blk.Block(header, tuple(kept), last_commit)
        self._remember(block.hash, overlay.writes)
        block_bytes = block.encode()
        self._keep_decoded(block_bytes, block)
        return Prepared(block_bytes, dropped)

    def prepare_block(
        self, height: int, time_ms: int, proposer: bytes, txs: list[bytes], last_commit: codec.Value
    ) -> bytes:
        """Canonical block bytes for ``height`` holding the candidates that execute, in order.

        Raises:
            BlockInvalid: ``height`` is not the next one or ``time_ms`` does not advance.
        """
        return self.prepare(height, time_ms, proposer, txs, last_commit).block_bytes

    def validate_block(self, block_bytes: bytes) -> None:
        """Full check of a proposal (docs/spec/ledger.md §1).

        Raises:
            BlockInvalid: naming the first broken rule.
        """
        self._validate(block_bytes)

    def decode_block(self, block_bytes: bytes) -> blk.Block:
        """:func:`ledger.block.decode`, remembered for the last few blocks by their bytes: a
        proposal is decoded for its id, its proposer, validation and the commit, and each
        decode re-checks the canonical form and the txs hash of the whole block.

        Raises:
            BlockInvalid: as :func:`ledger.block.decode` (failures are not remembered).
        """
        hit = self._decoded.get(block_bytes)
        if hit is None:
            hit = blk.decode(block_bytes)
            self._keep_decoded(block_bytes, hit)
        return hit

    def _keep_authenticated(self, raw: bytes, admitted: Authenticated) -> None:
        cache = self._authenticated
        if raw in cache:
            return
        cache[raw] = admitted
        if len(cache) > _AUTHENTICATED_TXS:  # the oldest first (dicts keep insertion order)
            del cache[next(iter(cache))]

    def _keep_decoded(self, block_bytes: bytes, block: blk.Block) -> None:
        self._decoded[block_bytes] = block
        while len(self._decoded) > _DECODED_BLOCKS:
            self._decoded.popitem(last=False)

    def _validate(self, block_bytes: bytes) -> blk.Block:
        block = self.decode_block(block_bytes)
        if block.hash in self._validated:
            return block
        h = block.header
        self._check_next(h.height, h.time_ms)
        expected = {
            "chain_id": self.chain_id,
            "prev_block_hash": self.last_block_hash,
            "app_hash": self.app_hash,
            "validators_hash": blk.validators_hash(self.validators()),
        }
        for name, value in expected.items():
            if getattr(h, name) != value:
                raise BlockInvalid(f"block {h.height}: header.{name} does not match the chain")
        if all(pk != h.proposer for pk, _ in self.validators()):
            raise BlockInvalid(f"block {h.height}: proposer is not a validator")
        with self.store.state_reader() as base:
            overlay = _BlockOverlay(CachedReader(base))
            try:
                ctx = self._ctx(overlay, h.height, h.time_ms, False)
                execute_block(ctx, block.txs, self._authenticated)
            except TxRejected as exc:
                raise BlockInvalid(f"block {h.height}: {exc}") from exc
        self._remember(block.hash, overlay.writes)
        return block

    def _check_next(self, height: int, time_ms: int) -> None:
        if height != self.height + 1:
            raise BlockInvalid(f"height {height} is not the next height {self.height + 1}")
        if time_ms <= self.last_block_time_ms:
            raise BlockInvalid(
                f"block time {time_ms} ms does not advance past {self.last_block_time_ms} ms"
            )

    def _remember(self, block_hash: bytes, writes: dict[bytes, bytes | None]) -> None:
        self._validated[block_hash] = writes
        while len(self._validated) > _CACHE_BLOCKS:
            self._validated.popitem(last=False)

    # commit -------------------------------------------------------------------------------

    def commit_block(self, block_bytes: bytes, commit: codec.Value) -> bytes:
        """Apply and durably store a decided block; returns the new app hash.

        Raises:
            BlockInvalid: the block does not extend the chain or a tx fails.
            StoreError: the disk write failed (stop the process; nothing was stored).
        """
        app_hash = self.store_block(block_bytes, commit)
        self.release_committed(block_bytes)
        return app_hash

    def store_block(self, block_bytes: bytes, commit: codec.Value) -> bytes:
        """The durable half of :meth:`commit_block`: validate and write the block. For a block
        this app prepared or validated, validation is a cache hit and nothing admission also
        uses is touched, so it may run in a worker thread while the event loop admits txs
        (the single validator does, for its own proposal). Then call
        :meth:`release_committed` on the loop's thread.

        Raises:
            BlockInvalid, StoreError: as :meth:`commit_block`.
        """
        block = self._validate(block_bytes)
        writes = self._validated[block.hash]
        app_hash = self.store.commit(block, block_bytes, commit, writes)
        self._validated.clear()
        return app_hash

    def release_committed(self, block_bytes: bytes) -> None:
        """Drop a stored block's txs from the per-process tx caches (the decoded and
        verified envelopes, the authenticated results): they are not checked again."""
        block = self.decode_block(block_bytes)
        txm.forget(block.txs)
        for raw in block.txs:
            self._authenticated.pop(raw, None)


def _fit(txs: list[bytes], budget: int) -> list[bytes]:
    """The longest prefix within the byte budget and the tx count limit."""
    out, used = [], 0
    for raw in txs[: blk.MAX_BLOCK_TXS]:
        used += len(raw) + 3
        if used > budget:
            break
        out.append(raw)
    return out
