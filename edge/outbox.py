"""The durable measurement outbox: every slot record stays until the ledger has committed it.

Records are keyed by (meter id, slot start) so a record is stored once whatever happens (a
re-emitted slot after a restart overwrites itself with identical content). ``put`` returns only
after LMDB has synced, so an acknowledged record survives a power cut. Records leave the outbox
only through :meth:`Outbox.mark_committed`, which the daemon calls when it sees the record's
SetMeasure in a committed block; a 4G outage of any length just lets the outbox grow.

The same LMDB environment keeps small durable key/values for the daemon (the integrator
checkpoint, say) under ``meta``, so a slot record and the checkpoint that produced it can be
written in one transaction.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from ledger.codec import decode, encode

_MAP_SIZE = (256 << 20) if sys.maxsize > 2**32 else (64 << 20)


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One 15-minute measurement waiting for commitment.

    Attributes:
        meter_id: the meter the record is for.
        slot_start_s: slot start, UTC epoch seconds, aligned to 900 s.
        import_wh: energy imported in the slot [Wh].
        export_wh: energy exported in the slot [Wh].
        quality: quality flags of the integrator (sorted names).
        created_s: when the record entered the outbox (UTC epoch seconds), for age metrics.
    """

    meter_id: str
    slot_start_s: int
    import_wh: int
    export_wh: int
    quality: tuple[str, ...] = ()
    created_s: int = 0

    @property
    def key(self) -> bytes:
        return record_key(self.meter_id, self.slot_start_s)

    def encode(self) -> bytes:
        return encode(
            [
                self.meter_id,
                self.slot_start_s,
                self.import_wh,
                self.export_wh,
                list(self.quality),
                self.created_s,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> OutboxRecord:
        meter_id, slot_start_s, import_wh, export_wh, quality, created_s = decode(data)
        return cls(meter_id, slot_start_s, import_wh, export_wh, tuple(quality), created_s)


def record_key(meter_id: str, slot_start_s: int) -> bytes:
    # Big-endian slot start after the meter id: LMDB's byte order is then slot order per meter.
    return meter_id.encode() + b"\0" + slot_start_s.to_bytes(8, "big")


class Outbox:
    """LMDB-backed outbox and durable key/value store of one node."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(
            str(path), map_size=_MAP_SIZE, max_dbs=4, sync=True, metasync=True, subdir=True
        )
        self._records = self._env.open_db(b"records")
        self._meta = self._env.open_db(b"meta")
        self._rejected = self._env.open_db(b"rejected")

    def close(self) -> None:
        self._env.close()

    def put(self, record: OutboxRecord, *, meta: dict[str, Any] | None = None) -> None:
        """Store ``record`` (and optional meta values) durably in one transaction."""
        with self._env.begin(write=True) as txn:
            txn.put(record.key, record.encode(), db=self._records)
            for name, value in (meta or {}).items():
                txn.put(name.encode(), encode(value), db=self._meta)

    def put_many(self, records: list[OutboxRecord], *, meta: dict[str, Any] | None = None) -> None:
        """Store several records (the slots one reading closed) and meta values atomically."""
        with self._env.begin(write=True) as txn:
            for record in records:
                txn.put(record.key, record.encode(), db=self._records)
            for name, value in (meta or {}).items():
                txn.put(name.encode(), encode(value), db=self._meta)

    def mark_rejected(self, record: OutboxRecord, reason: str) -> None:
        """Move a record the ledger refuses for good (e.g. its period is already solved) to the
        ``rejected`` table with the reason: it stops being retried but is never deleted."""
        with self._env.begin(write=True) as txn:
            txn.delete(record.key, db=self._records)
            txn.put(record.key, encode([record.encode(), reason]), db=self._rejected)

    def rejected(self) -> list[tuple[OutboxRecord, str]]:
        """Records the ledger refused for good, with the reason, oldest slot first."""
        with self._env.begin() as txn:
            out = []
            for _, value in txn.cursor(db=self._rejected):
                raw, reason = decode(bytes(value))
                out.append((OutboxRecord.decode(raw), str(reason)))
        return out

    def mark_committed(self, meter_id: str, slot_start_s: int) -> bool:
        """Remove a record the ledger has committed. Returns False if it was not here."""
        with self._env.begin(write=True) as txn:
            return bool(txn.delete(record_key(meter_id, slot_start_s), db=self._records))

    def pending(self, limit: int | None = None) -> list[OutboxRecord]:
        """Records still waiting, oldest slot first (per meter; one meter per node in practice)."""
        return list(self._iter(limit))

    def _iter(self, limit: int | None) -> Iterator[OutboxRecord]:
        with self._env.begin() as txn:
            for count, (_, value) in enumerate(txn.cursor(db=self._records)):
                if limit is not None and count >= limit:
                    return
                yield OutboxRecord.decode(bytes(value))

    def get(self, meter_id: str, slot_start_s: int) -> OutboxRecord | None:
        with self._env.begin() as txn:
            value = txn.get(record_key(meter_id, slot_start_s), db=self._records)
        return None if value is None else OutboxRecord.decode(bytes(value))

    def depth(self) -> int:
        with self._env.begin() as txn:
            return int(txn.stat(self._records)["entries"])

    def oldest_created_s(self) -> int | None:
        """Creation time of the oldest waiting record (for the outbox-age metric)."""
        return min((r.created_s for r in self._iter(None)), default=None)

    def save_meta(self, name: str, value: Any) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(name.encode(), encode(value), db=self._meta)

    def load_meta(self, name: str) -> Any:
        with self._env.begin() as txn:
            value = txn.get(name.encode(), db=self._meta)
        return None if value is None else decode(bytes(value))
