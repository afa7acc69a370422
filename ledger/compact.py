"""Offline compaction of a node's LMDB environments, so pruned bytes leave the file.

Spec: docs/spec/privacy.md §3.2. LMDB never overwrites a freed page until it needs one: after
``PruneMeasurements`` and block-body pruning (ledger/bodyprune.py) the raw SetMeasure bytes are
unreachable but may stay readable in ``data.mdb`` for a long time. A compacting copy writes only
the live pages into a new file, which then replaces the old one in one ``rename``: a power cut
leaves either the old file or the new one, never a mix.

Only a stopped node may be compacted (another process would keep writing to the replaced
inode): the caller holds the node's lock (edge/node_lock.py) first.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from ledger.errors import StoreError

DATA_FILE = "data.mdb"
_TMP_DIR = "compact.tmp"
_META_PAGES = 2
MIN_FREE_BYTES = 4 << 20
"""Below this much free space [bytes] a compaction is not worth a copy of the file."""
MIN_FREE_SHARE = 0.25
"""Compact only when at least this share of the file is free pages."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Page accounting of one LMDB environment [bytes]."""

    file_bytes: int
    used_bytes: int

    @property
    def free_bytes(self) -> int:
        return max(0, self.file_bytes - self.used_bytes)

    def worth_compacting(self) -> bool:
        """Whether enough of the file is free pages to pay for a copy."""
        return (
            self.free_bytes >= MIN_FREE_BYTES
            and self.free_bytes >= MIN_FREE_SHARE * self.file_bytes
        )


def _pages(stat: Mapping[str, Any]) -> int:
    return int(stat["branch_pages"]) + int(stat["leaf_pages"]) + int(stat["overflow_pages"])


def _open(path: Path, *, readonly: bool) -> lmdb.Environment:
    if not (path / DATA_FILE).is_file():
        raise StoreError(f"{path}: no LMDB environment ({DATA_FILE} missing)")
    try:
        return lmdb.open(str(path), readonly=readonly, max_dbs=64, lock=True)
    except lmdb.Error as exc:
        raise StoreError(f"{path}: cannot open LMDB environment: {exc}") from exc


def usage(path: Path) -> Usage:
    """Pages in use (every named database plus the main one) against pages in the file.

    Raises:
        StoreError: ``path`` holds no LMDB environment or it cannot be opened.
    """
    env = _open(path, readonly=True)
    try:
        info, main = env.info(), env.stat()
        page = main["psize"]
        used = _META_PAGES + _pages(main)
        with env.begin() as txn:
            names = [bytes(key) for key, _ in txn.cursor()]
            for name in names:
                used += _pages(txn.stat(env.open_db(name, txn=txn, create=False)))
        return Usage(file_bytes=(info["last_pgno"] + 1) * page, used_bytes=used * page)
    finally:
        env.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compact(path: Path) -> tuple[int, int]:
    """Replace ``path/data.mdb`` by a compacting copy; returns (bytes before, bytes after).

    The copy goes to ``path/compact.tmp/`` (a leftover of an interrupted run is removed first),
    is fsynced, then renamed over the old file and the directory fsynced.

    Raises:
        StoreError: no environment at ``path``, or the copy failed (the old file is untouched).
    """
    data = path / DATA_FILE
    tmp = path / _TMP_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    before = data.stat().st_size if data.exists() else 0
    env = _open(path, readonly=True)
    try:
        env.copy(str(tmp), compact=True)
    except lmdb.Error as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(f"{path}: compacting copy failed: {exc}") from exc
    finally:
        env.close()
    _fsync(tmp / DATA_FILE)
    os.replace(tmp / DATA_FILE, data)
    _fsync(path)
    shutil.rmtree(tmp, ignore_errors=True)
    return before, data.stat().st_size
