"""Header-only light client of a member node: verified headers + commits, no blocks, no state.

Spec: docs/spec/light.md. Sequential verification (CometBFT light client spec, "sequential"
mode, with its skipping rule's trust level for validator-set changes): header ``h`` is accepted
iff it links to the trusted header ``h-1`` (``prev_block_hash``), its ``validators_hash`` names a
set the client knows, its commit carries more than 2/3 of that set's power
(:func:`ledger.consensus.commit.verify_commit`), and — when the set changed — more than 1/3 of
the *previously trusted* set's power signed it too. Only headers and their (quorum-trimmed)
commits are stored, in LMDB, pruned to the newest ``keep_headers``.

Wire form of a header update (channel ``header``; docs/spec/light.md §2), compact because every
member pays for every block on a metered link:
``["hdr", [height, time_ms, txs_hash, app_hash, proposer, validators_hash, last_commit_hash],
[round, [[signer_index, timestamp_ms, signature], …]], validators | nil]``. ``version``,
``chain_id`` and ``prev_block_hash`` are filled in by the receiver (its chain, the trusted
previous hash); a forged value changes the header hash and fails the commit check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from ledger import block as blk
from ledger import codec
from ledger.consensus.commit import verify_commit
from ledger.consensus.errors import CommitError, ConsensusError, MessageError
from ledger.consensus.messages import Commit, CommitSig
from ledger.consensus.validators import ValidatorSet
from ledger.errors import CodecError, LedgerError
from ledger.genesis import Genesis

KEEP_HEADERS = 2 * 1440
"""Default number of newest headers kept (two days at the 60 s heartbeat)."""
MAX_PENDING = 64
"""Headers ahead of the trusted tip kept while the gap is filled."""
MAP_SIZE_BYTES = 64 << 20

Valset = tuple[tuple[bytes, int], ...]


class LightError(LedgerError):
    """Base of light-client failures."""


class HeaderRejected(LightError):  # noqa: N818 -- named for the outcome, like TxRejected
    """A header update that does not verify; nothing was stored.

    Attributes:
        height: the header's height (0 when it could not be read).
        reason: short stable tag (``malformed``, ``bad_link``, ``unknown_validators``,
            ``bad_commit``, ``untrusted_set_change``).
    """

    def __init__(self, height: int, reason: str, detail: str) -> None:
        super().__init__(f"header {height}: {reason}: {detail}")
        self.height = height
        self.reason = reason


class ForkDetected(LightError):  # noqa: N818
    """A validly signed header conflicts with a trusted one: > 1/3 of the power equivocated."""


@dataclass(frozen=True, slots=True)
class TrustedHeader:
    """One verified header, as ``lemctl status`` and proofs use it.

    Attributes:
        height: block height (0: genesis).
        hash: header hash (block id) [32 bytes].
        app_hash: state root after block ``height - 1`` [32 bytes].
        validators_hash: hash of the set that signed this height [32 bytes].
        txs_hash: Merkle root of the block's tx hashes [32 bytes].
        time_ms: BFT block time [ms since the epoch, UTC].
    """

    height: int
    hash: bytes
    app_hash: bytes
    validators_hash: bytes
    txs_hash: bytes
    time_ms: int


def valset_hash(valset: Valset) -> bytes:
    """``header.validators_hash`` of a set (docs/spec/ledger.md §1)."""
    return blk.validators_hash(sorted(valset))


# wire form ------------------------------------------------------------------------------------


EMPTY_TXS_HASH = blk.txs_hash([])


def compact_header(header: blk.Header, validators: Valset) -> list[codec.Value]:
    """The header fields a receiver cannot fill in itself (module docstring); an empty block's
    ``txs_hash`` as nil and the proposer as its index in the sorted set (33 B less each)."""
    h = header
    keys = [pk for pk, _ in sorted(validators)]
    proposer: codec.Value = keys.index(h.proposer) if h.proposer in keys else h.proposer
    return [
        h.height,
        h.time_ms,
        None if h.txs_hash == EMPTY_TXS_HASH else h.txs_hash,
        h.app_hash,
        proposer,
        h.validators_hash,
        h.last_commit_hash,
    ]


def compact_commit(commit: Commit, validators: Valset) -> list[codec.Value]:
    """Commit signatures as indices into the sorted set, trimmed to the first quorum.

    A member needs only > 2/3 of the power (the rest costs bytes on its link); signers are
    kept in key order until their power exceeds 2/3 of the total.
    """
    ordered = sorted(validators)
    index = {pk: i for i, (pk, _) in enumerate(ordered)}
    total = sum(p for _, p in ordered)
    power, sigs = 0, []
    for s in commit.sigs:
        if s.validator not in index:
            continue
        sigs.append([index[s.validator], s.timestamp_ms, s.signature])
        power += dict(ordered)[s.validator]
        if 3 * power > 2 * total:
            break
    return [commit.round, sigs]


def encode_update(header: blk.Header, commit: Commit, validators: Valset, with_set: bool) -> bytes:
    """Bytes of one header update; ``with_set`` appends the signing set (after a change)."""
    vals: codec.Value = [[pk, p] for pk, p in sorted(validators)] if with_set else None
    compact = compact_header(header, validators)
    return codec.encode(["hdr", compact, compact_commit(commit, validators), vals])


@dataclass(frozen=True, slots=True)
class HeaderUpdate:
    """A decoded (not yet verified) header update."""

    fields: tuple[Any, ...]
    round: int
    sigs: tuple[tuple[int, int, bytes], ...]
    validators: Valset | None

    @property
    def height(self) -> int:
        return int(self.fields[0])


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == 32


def decode_update(value: codec.Value) -> HeaderUpdate:
    """Parse the value of a header update.

    Raises:
        HeaderRejected: ``malformed``.
    """
    try:
        kind, fields, commit, vals = value
        ok = kind == "hdr" and isinstance(fields, list) and len(fields) == 7
        ok = ok and all(isinstance(f, int) and f >= 0 for f in fields[:2])
        ok = ok and (fields[2] is None or _is_hash(fields[2])) and _is_hash(fields[3])
        ok = ok and (_is_hash(fields[4]) or (isinstance(fields[4], int) and fields[4] >= 0))
        ok = ok and _is_hash(fields[5]) and _is_hash(fields[6])
        rnd, raw_sigs = commit
        ok = ok and isinstance(rnd, int) and isinstance(raw_sigs, list) and len(raw_sigs) > 0
        sigs = tuple((int(i), int(ts), bytes(sig)) for i, ts, sig in raw_sigs)
        valset = None if vals is None else tuple((bytes(pk), int(p)) for pk, p in vals)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise HeaderRejected(0, "malformed", "not a header update")
    return HeaderUpdate(tuple(fields), rnd, sigs, valset)


# store ----------------------------------------------------------------------------------------


def _h8(height: int) -> bytes:
    return height.to_bytes(8, "big")


class LightClient:
    """The member's trusted header chain (LMDB, single writer).

    Args:
        path: directory of the LMDB environment (created if missing).
        genesis: the community's genesis (trust root: its hash and validator set).
        keep_headers: newest headers kept; older ones are pruned (genesis stays).
        durable: sync on every write (tests may turn it off).
    """

    def __init__(
        self,
        path: Path,
        genesis: Genesis,
        *,
        keep_headers: int = KEEP_HEADERS,
        durable: bool = True,
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(
                str(path), map_size=MAP_SIZE_BYTES, max_dbs=3, sync=durable, metasync=durable
            )
            self._headers = self._env.open_db(b"headers")
            self._sets = self._env.open_db(b"valsets")
            self._meta = self._env.open_db(b"meta")
        except lmdb.Error as exc:
            raise LightError(f"{path}: cannot open light-client store: {exc}") from exc
        self.chain_id = genesis.chain_id
        self.keep_headers = keep_headers
        self._pending: dict[int, HeaderUpdate] = {}
        self._init(genesis)

    def _init(self, genesis: Genesis) -> None:
        with self._env.begin(db=self._meta) as txn:
            stored = txn.get(b"genesis")
        if stored is not None:
            if bytes(stored) != genesis.hash:
                raise LightError("the light-client store holds another chain's genesis")
            return
        vals = tuple(sorted(genesis.validators))
        root = TrustedHeader(0, genesis.hash, b"", valset_hash(vals), b"", genesis.genesis_time_ms)
        with self._txn() as txn:
            txn.put(b"genesis", genesis.hash, db=self._meta)
            txn.put(valset_hash(vals), codec.encode([list(v) for v in vals]), db=self._sets)
            self._put(txn, root, None)

    @contextmanager
    def _txn(self) -> Iterator[lmdb.Transaction]:
        with self._env.begin(write=True) as txn:
            yield txn

    def _put(self, txn: lmdb.Transaction, th: TrustedHeader, commit: Commit | None) -> None:
        row = [th.height, th.hash, th.app_hash, th.validators_hash, th.txs_hash, th.time_ms]
        value = [row, None if commit is None else commit.to_value()]
        txn.put(_h8(th.height), codec.encode(value), db=self._headers)
        txn.put(b"tip", _h8(th.height), db=self._meta)

    # reads ----------------------------------------------------------------------------------

    @property
    def latest(self) -> TrustedHeader:
        """The newest verified header (height 0: genesis)."""
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(b"tip")
        tip = 0 if raw is None else int.from_bytes(bytes(raw), "big")
        found = self.header(tip)
        assert found is not None, "tip row is written with the tip"
        return found

    @property
    def height(self) -> int:
        return self.latest.height

    def header(self, height: int) -> TrustedHeader | None:
        """The verified header at ``height`` (None if unknown or pruned)."""
        with self._env.begin(db=self._headers) as txn:
            raw = txn.get(_h8(height))
        if raw is None:
            return None
        row = codec.decode_trusted(bytes(raw))[0]
        return TrustedHeader(*row)

    def commit(self, height: int) -> Commit | None:
        """The stored (quorum-trimmed) commit of ``height``."""
        with self._env.begin(db=self._headers) as txn:
            raw = txn.get(_h8(height))
        value = None if raw is None else codec.decode_trusted(bytes(raw))[1]
        return None if value is None else Commit.from_value(value)

    def validators(self, vhash: bytes) -> Valset | None:
        """A known validator set by its hash."""
        with self._env.begin(db=self._sets) as txn:
            raw = txn.get(vhash)
        if raw is None:
            return None
        return tuple((bytes(pk), int(p)) for pk, p in codec.decode_trusted(bytes(raw)))

    def stored_heights(self) -> int:
        """Rows in the header table (genesis included)."""
        with self._env.begin(db=self._headers) as txn:
            return int(txn.stat(self._headers)["entries"])

    # verification ---------------------------------------------------------------------------

    def offer(self, update: HeaderUpdate) -> list[TrustedHeader]:
        """Verify ``update`` (and any buffered successors it unblocks); returns what was accepted.

        A header ahead of ``tip + 1`` is buffered (at most :data:`MAX_PENDING`) until the gap is
        filled; one at or below the tip is compared with the trusted header.

        Raises:
            HeaderRejected: the next header does not verify.
            ForkDetected: a validly signed header conflicts with a trusted one.
        """
        tip = self.latest
        if update.height <= tip.height:
            self._check_known(update)
            return []
        if update.height > tip.height + 1:
            if len(self._pending) < MAX_PENDING or update.height in self._pending:
                self._pending[update.height] = update
            return []
        accepted = [self._accept(tip, update)]
        while (nxt := self._pending.pop(accepted[-1].height + 1, None)) is not None:
            accepted.append(self._accept(accepted[-1], nxt))
        self._pending = {h: u for h, u in self._pending.items() if h > accepted[-1].height}
        return accepted

    @property
    def gap(self) -> tuple[int, int] | None:
        """(first missing height, highest buffered height) while headers are missing."""
        if not self._pending:
            return None
        return self.height + 1, max(self._pending)

    def _check_known(self, update: HeaderUpdate) -> None:
        known = self.header(update.height)
        prev = self.header(update.height - 1)
        if known is None or prev is None or update.height == 0:
            return  # pruned: nothing to compare with
        header, _, _ = self._verify(prev, update)
        if header.hash != known.hash:
            raise ForkDetected(
                f"height {update.height}: signed header {header.hash.hex()[:16]}… conflicts "
                f"with trusted {known.hash.hex()[:16]}…"
            )

    def _verify(
        self, prev: TrustedHeader, update: HeaderUpdate
    ) -> tuple[blk.Header, Commit, Valset]:
        h = update.height
        f = update.fields
        valset = self._signing_set(h, f[5], update)
        ordered = sorted(valset)
        proposer = f[4]
        if isinstance(proposer, int):
            if proposer >= len(ordered):
                raise HeaderRejected(h, "malformed", "proposer index outside the set")
            proposer = ordered[proposer][0]
        txs_hash = EMPTY_TXS_HASH if f[2] is None else f[2]
        header = blk.Header(
            blk.BLOCK_VERSION, self.chain_id, h, f[1], prev.hash, txs_hash, f[3], proposer, *f[5:]
        )
        if header.time_ms <= prev.time_ms:
            raise HeaderRejected(h, "bad_link", "time does not increase")
        if any(i < 0 for i, _, _ in update.sigs):
            raise HeaderRejected(h, "bad_commit", "negative signer index")
        try:
            sigs = tuple(CommitSig(ordered[i][0], ts, sig) for i, ts, sig in sorted(update.sigs))
            commit = Commit(h, update.round, header.hash, sigs)
            power_set = ValidatorSet.from_powers(dict(valset))
            verify_commit(self.chain_id, power_set, h, header.hash, commit)
        except IndexError:
            raise HeaderRejected(h, "bad_commit", "signer index outside the set") from None
        except (CommitError, MessageError, ConsensusError) as exc:
            raise HeaderRejected(h, "bad_commit", str(exc)) from exc
        if header.validators_hash != prev.validators_hash:
            self._check_trust(h, prev, commit)
        return header, commit, valset

    def _signing_set(self, height: int, vhash: bytes, update: HeaderUpdate) -> Valset:
        known = self.validators(vhash)
        if known is not None:
            return known
        if update.validators is not None and valset_hash(update.validators) == vhash:
            return update.validators
        raise HeaderRejected(height, "unknown_validators", f"set {vhash.hex()[:16]}… not known")

    def _check_trust(self, height: int, prev: TrustedHeader, commit: Commit) -> None:
        """CometBFT's trust level 1/3: a new set is adopted only if the trusted set vouches."""
        trusted = self.validators(prev.validators_hash)
        assert trusted is not None, "a trusted header's set is stored with it"
        old = ValidatorSet.from_powers(dict(trusted))
        power = sum(old.power_of(s.validator) for s in commit.sigs)
        if not old.is_one_third(power):
            raise HeaderRejected(
                height,
                "untrusted_set_change",
                f"only {power} of the trusted set's {old.total_power} signed the new set",
            )

    def _accept(self, prev: TrustedHeader, update: HeaderUpdate) -> TrustedHeader:
        header, commit, valset = self._verify(prev, update)
        th = TrustedHeader(
            header.height,
            header.hash,
            header.app_hash,
            header.validators_hash,
            header.txs_hash,
            header.time_ms,
        )
        with self._txn() as txn:
            txn.put(header.validators_hash, codec.encode([list(v) for v in valset]), db=self._sets)
            self._put(txn, th, commit)
            self._prune(txn, th.height)
        return th

    def _prune(self, txn: lmdb.Transaction, tip: int) -> None:
        """Delete headers older than the newest ``keep_headers`` (genesis row kept)."""
        cursor = txn.cursor(db=self._headers)
        if not cursor.set_range(_h8(1)):
            return
        for key in list(cursor.iternext(values=False)):
            height = int.from_bytes(bytes(key), "big")
            if height > tip - self.keep_headers:
                break
            txn.delete(bytes(key), db=self._headers)

    def close(self) -> None:
        self._env.close()


def read_update(payload: bytes) -> HeaderUpdate:
    """Decode a ``header`` channel payload.

    Raises:
        HeaderRejected: not canonical MessagePack or not a header update.
    """
    try:
        value = codec.decode(payload, max_bytes=64 << 10)
    except CodecError as exc:
        raise HeaderRejected(0, "malformed", str(exc)) from exc
    return decode_update(value)
