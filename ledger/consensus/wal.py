"""The consensus store: write-ahead log of the current height, validator sets, seen commits.

Spec: docs/spec/consensus.md §WAL. One LMDB environment (separate from the sign-state) with
three databases:

- ``wal``: (height, seq) → ``["msg", channel, payload]`` | ``["timeout", step, round]`` |
  ``["start"]``: every input the core saw at the height, in order, so a restarted validator
  replays them and resumes where it stopped. Own messages, timeouts and starts are synced
  before they take effect; peers' messages are written without a sync (a lost one is
  re-published by its sender).
- ``valsets``: height → validator set with proposer priorities in force at that height.
- ``commits``: height → the commit this node saw for the decided block (served to syncing peers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb

from ledger import codec
from ledger.consensus.errors import StoreError
from ledger.consensus.messages import Commit
from ledger.consensus.validators import ValidatorSet
from ledger.errors import CodecError
from ledger.pagetrim import RELEASE_EVERY_HEIGHTS, release_file_pages

MAP_SIZE = 1 << 30
"""LMDB map size [bytes]; the file grows only as used."""


def _hkey(height: int, seq: int = 0) -> bytes:
    return height.to_bytes(8, "big") + seq.to_bytes(8, "big")


class ConsensusStore:
    """The engine's durable state other than the sign-state.

    Args:
        path: directory of the LMDB environment.
        durable: fsync the records that must survive a power cut (tests may turn it off).
    """

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            # Writes are not synced one by one; sync() forces the ones that matter.
            self._env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=3, sync=False)
        except lmdb.Error as exc:
            raise StoreError(f"{path}: cannot open consensus store: {exc}") from exc
        self._durable = durable
        self._path = path
        self._wal = self._env.open_db(b"wal")
        self._valsets = self._env.open_db(b"valsets")
        self._commits = self._env.open_db(b"commits")
        self._seq = 0

    def _sync(self) -> None:
        if self._durable:
            self._env.sync(True)

    # ----------------------------------------------------------------- WAL

    def wal_append(self, height: int, record: list[Any], *, sync: bool) -> None:
        """Append one record for ``height``; ``sync`` forces it to disk before returning."""
        self._seq += 1
        with self._env.begin(write=True, db=self._wal) as txn:
            if self._seq == 1:
                cur = txn.cursor()
                if cur.last():
                    self._seq = int.from_bytes(bytes(cur.key())[8:], "big") + 1
            txn.put(_hkey(height, self._seq), codec.encode(record))
        if sync:
            self._sync()

    def wal_records(self, height: int) -> list[list[Any]]:
        """Records of ``height`` in the order written."""
        out: list[list[Any]] = []
        with self._env.begin(db=self._wal) as txn:
            cur = txn.cursor()
            if not cur.set_range(_hkey(height)):
                return out
            for key, value in cur:
                if int.from_bytes(bytes(key)[:8], "big") != height:
                    break
                try:
                    out.append(codec.decode(bytes(value)))
                except CodecError as exc:
                    raise StoreError(f"WAL record at height {height} is corrupt: {exc}") from exc
        return out

    def wal_prune(self, below_height: int) -> None:
        """Drop WAL records of heights below ``below_height``."""
        with self._env.begin(write=True, db=self._wal) as txn:
            cur = txn.cursor()
            while cur.first() and int.from_bytes(bytes(cur.key())[:8], "big") < below_height:
                cur.delete()
        if below_height % RELEASE_EVERY_HEIGHTS == 0:
            release_file_pages(self._path / "data.mdb")  # see ledger/pagetrim.py

    # ----------------------------------------------------------------- sets & commits

    def save_valset(self, height: int, valset: ValidatorSet, *, sync: bool = True) -> None:
        """Record the validator set in force at ``height`` (synced unless ``sync`` is False:
        the set of the next height can be derived again from this height's and the app)."""
        with self._env.begin(write=True, db=self._valsets) as txn:
            txn.put(_hkey(height), codec.encode(valset.to_value()))
        if sync:
            self._sync()

    def load_valset(self, height: int) -> ValidatorSet | None:
        """The set recorded for ``height``, if any."""
        with self._env.begin(db=self._valsets) as txn:
            raw = txn.get(_hkey(height))
        if raw is None:
            return None
        try:
            return ValidatorSet.from_value(codec.decode(bytes(raw)))
        except (CodecError, ValueError) as exc:
            raise StoreError(f"validator set of height {height} is corrupt: {exc}") from exc

    def save_commit(self, commit: Commit) -> None:
        """Record the commit seen for its height (synced)."""
        with self._env.begin(write=True, db=self._commits) as txn:
            txn.put(_hkey(commit.height), commit.encode())
        self._sync()

    def load_commit(self, height: int) -> Commit | None:
        """The commit seen for ``height``, if any."""
        with self._env.begin(db=self._commits) as txn:
            raw = txn.get(_hkey(height))
        return Commit.decode(bytes(raw)) if raw is not None else None

    def close(self) -> None:
        """Sync and close the environment."""
        self._env.sync(True)
        self._env.close()
