"""State access for tx handlers: the write overlay, the key layout, typed helpers and roles.

Spec: docs/spec/ledger.md §5. State is a sorted map bytes → canonical bytes. Handlers never touch
LMDB: they read and write an :class:`Overlay` whose writes the store commits with the block, so
a failed tx or a rejected block leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ledger import codec

SLOT_MS = 900_000
"""One market slot: 15 minutes [ms]."""

COMMUNITY = "community"
"""Account id of the community (admin) wallet that keeps the LEM margin and rounding residue."""
GRID = "grid"
"""Account id that books what the community owes the grid (DSO) (positive = owed to the grid)."""


class StateReader(Protocol):
    """Read side of a state: point reads and ordered range scans."""

    def get(self, key: bytes) -> bytes | None:
        """The value under ``key``, or None."""
        ...

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < end`` in key order."""
        ...


class MemoryState:
    """A plain dict state (genesis building, tests)."""

    def __init__(self, items: dict[bytes, bytes] | None = None) -> None:
        self.items: dict[bytes, bytes] = dict(items or {})

    def get(self, key: bytes) -> bytes | None:
        return self.items.get(key)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(k for k in self.items if start <= k < end):
            yield key, self.items[key]


class Overlay:
    """Pending writes over a base state; ``None`` marks a deletion."""

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self.base.get(key)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        pending = sorted(k for k in self.writes if start <= k < end)
        if not pending:  # the common case (a settlement scan), without the merge
            yield from self.base.scan(start, end)
            return
        base = self.base.scan(start, end)
        nxt = next(base, None)
        i = 0
        while nxt is not None or i < len(pending):
            if i < len(pending) and (nxt is None or pending[i] <= nxt[0]):
                key = pending[i]
                i += 1
                if nxt is not None and nxt[0] == key:
                    nxt = next(base, None)
                value = self.writes[key]
                if value is not None:
                    yield key, value
            else:
                assert nxt is not None
                yield nxt
                nxt = next(base, None)

    def put(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.writes[key] = None

    def child(self) -> Overlay:
        """A nested overlay (one tx) that :meth:`merge` folds back on success."""
        return Overlay(self)

    def merge(self, child: Overlay) -> None:
        self.writes.update(child.writes)

    # typed access ---------------------------------------------------------------------------

    def get_value(self, key: bytes) -> codec.Value:
        """Decoded value under ``key`` (None when absent)."""
        raw = self.get(key)
        # State bytes were produced by codec.encode on this node and are covered by the app
        # hash, so the canonical re-encoding check of codec.decode is not repeated here.
        return None if raw is None else codec.decode_trusted(raw)

    def put_value(self, key: bytes, value: codec.Value) -> None:
        self.put(key, codec.encode(value))

    def get_int(self, key: bytes) -> int:
        """Integer under ``key``; 0 when absent (balances, sequences)."""
        value = self.get_value(key)
        return 0 if value is None else int(value)


# key layout (docs/spec/ledger.md §5) --------------------------------------------------------


def slot_key(slot_ms: int) -> str:
    """Fixed-width decimal so that byte order is time order (valid until year 2286)."""
    return f"{slot_ms:013d}"


def k_seq(account: bytes) -> bytes:
    return b"seq/" + account.hex().encode()


def k_balance(account: str) -> bytes:
    return b"bal/" + account.encode()


def k_meter(meter_id: str) -> bytes:
    return b"meter/" + meter_id.encode()


def k_owned(account: bytes, meter_id: str) -> bytes:
    return b"own/" + account.hex().encode() + b"/" + meter_id.encode()


def k_period(period_id: str) -> bytes:
    return b"period/" + period_id.encode()


def k_period_start(start_ms: int) -> bytes:
    return b"pstart/" + slot_key(start_ms).encode()


def k_measure(slot_ms: int, meter_id: str) -> bytes:
    return b"meas/" + slot_key(slot_ms).encode() + b"/" + meter_id.encode()


def k_total(slot_ms: int) -> bytes:
    return b"tot/" + slot_key(slot_ms).encode()


def k_settlement(period_id: str, account: str) -> bytes:
    return b"settle/" + period_id.encode() + b"/" + account.encode()


K_ADMINS = b"cfg/admins"
K_GOVERNANCE = b"cfg/governance"
K_VALIDATORS = b"cfg/validators"
K_CHAIN = b"cfg/chain"


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` ('/' + 1 = '0')."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def account_id(public_key: bytes) -> str:
    """Balance account id of a member key (lower-case hex)."""
    return public_key.hex()


# roles (seed 000 Fig. 4) ---------------------------------------------------------------------


def admins(st: Overlay) -> list[bytes]:
    return list(st.get_value(K_ADMINS) or [])


def is_admin(st: Overlay, key: bytes) -> bool:
    # Tested on the record itself, not on the copy admins() makes: most txs ask (an AddMeter
    # each), and the block and admission overlays hand out one decoded record per batch.
    return key in (st.get_value(K_ADMINS) or ())


def meter_owner(st: Overlay, meter_id: str) -> bytes | None:
    value = st.get_value(k_meter(meter_id))
    return None if value is None else bytes(value)


def is_prosumer(st: Overlay, key: bytes) -> bool:
    prefix = b"own/" + key.hex().encode() + b"/"
    return next(st.scan(prefix, prefix_end(prefix)), None) is not None


def validators(st: Overlay) -> list[tuple[bytes, int]]:
    return [(bytes(k), int(p)) for k, p in st.get_value(K_VALIDATORS) or []]


def is_validator(st: Overlay, key: bytes) -> bool:
    return any(k == key for k, _ in validators(st))


def governance(st: Overlay) -> tuple[list[bytes], int]:
    value = st.get_value(K_GOVERNANCE) or {"keys": [], "threshold": 1}
    return [bytes(k) for k in value["keys"]], int(value["threshold"])


def is_governor(st: Overlay, key: bytes) -> bool:
    return key in governance(st)[0]


def chain_params(st: Overlay) -> dict[str, int]:
    value = st.get_value(K_CHAIN) or {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int)}


def add_balance(st: Overlay, account: str, delta_uect: int) -> None:
    key = k_balance(account)
    st.put_value(key, st.get_int(key) + delta_uect)


def find_period(st: Overlay, slot_ms: int) -> tuple[str, dict[str, codec.Value]] | None:
    """The period whose [start_ms, end_ms) holds ``slot_ms``, if any."""
    last = None
    for _, pid in st.scan(b"pstart/", k_period_start(slot_ms + 1)):
        last = pid
    if last is None:
        return None
    period_id = str(codec.decode_trusted(last))
    record = st.get_value(k_period(period_id))
    if record is None or not record["start_ms"] <= slot_ms < record["end_ms"]:
        return None
    return period_id, record
