"""One lemd per data directory, and store compaction only while none runs.

Spec: docs/spec/privacy.md §3.2, docs/spec/daemon.md. Two processes on one data directory would
both write the ledger and both sign with its key; an offline compaction (ledger/compact.py)
replacing ``data.mdb`` under a running node would lose that node's later writes. Both take an
exclusive ``flock`` on ``<data_dir>/lemd.lock``; the kernel releases it when the process dies,
also on kill -9, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from ledger import compact
from ledger.errors import StoreError

log = logging.getLogger("edge.node_lock")

LOCK_FILE = "lemd.lock"
COMPACTED_STORES = ("ledger", "consensus")
"""Sub-directories of the data directory whose LMDB files may hold pruned raw measurements
(blocks and the consensus WAL); the light client's headers and the sign-state hold none."""


class NodeLocked(Exception):  # noqa: N818 — the state of the directory, as its callers see it
    """Another process (a running lemd, or a compaction) holds the data directory."""


class NodeLock:
    """An exclusive, non-blocking lock on a node's data directory (held until :meth:`release`)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise NodeLocked(
                f"{data_dir}: another lemd (or a compaction) holds {self.path}"
            ) from None
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the directory up (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def compact_stores(data_dir: Path, *, force: bool = False) -> dict[str, tuple[int, int]]:
    """Compact each store under ``data_dir`` that is worth it (``force``: every one present).

    The caller holds the :class:`NodeLock`. Returns {store: (bytes before, bytes after)} of the
    stores compacted.

    Raises:
        StoreError: a store cannot be read or copied (it is left as it was).
    """
    done: dict[str, tuple[int, int]] = {}
    for name in COMPACTED_STORES:
        path = data_dir / name
        if not (path / compact.DATA_FILE).is_file():
            continue
        if not force and not compact.usage(path).worth_compacting():
            continue
        done[name] = compact.compact(path)
        log.info(
            "compacted store",
            extra={"store": name, "bytes_before": done[name][0], "bytes_after": done[name][1]},
        )
    return done


__all__ = ["NodeLock", "NodeLocked", "StoreError", "compact_stores"]
