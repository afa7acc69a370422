"""Privacy primitives: pseudonymous meter ids and commitments to pruned measurements.

Spec: docs/spec/privacy.md (§2 pseudonyms, §3 retention, §4 record proofs); seed 000 §4.5 and
Fig. 5 (the allowed-meters list kept off the ledger by the admin, pseudonyms on it).

Everything here is pure: the admin's node, a member's node and an auditor run the same
functions. Pseudonyms are two-level keyed BLAKE2b:

- ``member_key = BLAKE2b-256(key=admin_secret, person="lem1/member-key", chain_id ‖ 0 ‖ salt)``
  with a fresh random ``salt`` per admission, kept only in the admin's encrypted store;
- ``pseudonym = "ps-" ‖ hex(BLAKE2b-128(key=member_key, person="lem1/pseudonym", serial))``.

A member receives its ``member_key`` at admission and recomputes its pseudonym from the serial
its own meter reports; it cannot compute anyone else's (other members' keys are independent
pseudo-random values under the admin secret). Erasing the salt makes a pseudonym impossible to
recompute even for the admin, who still holds the secret and may still know the serial.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

from ledger import codec, merkle, state
from ledger.errors import LedgerError

SECRET_BYTES = 32
"""Admin pseudonymisation secret and member keys [bytes] (BLAKE2b key size up to 64)."""
SALT_BYTES = 16
"""Per-admission salt [bytes]."""
PSEUDONYM_DIGEST_BYTES = 16
"""Pseudonym digest: 128 bits. Guessing needs the member key (256 bits), so length only has to
make accidental collisions negligible: p ≈ n²/2¹²⁹ (≈ 1.5e-33 for 1,000 meters); AddMeter
refuses a duplicate anyway. 35 characters fit the ledger's 64-character id rule."""
PSEUDONYM_RE = re.compile(r"^ps-[0-9a-f]{32}$")
_SERIAL_RE = re.compile(r"^[\x21-\x7e]{1,64}$")


class PrivacyError(LedgerError):
    """A secret, salt, serial, record or proof that is malformed (names what and where)."""


class Mode(StrEnum):
    """Community-wide privacy mode, fixed in genesis (docs/spec/privacy.md §1)."""

    OPEN = "open"
    """Meter serials are the ledger's meter ids, readable by members (seed 000 §4.4 AM)."""
    PSEUDONYMOUS = "pseudonymous"
    """Only keyed-hash pseudonyms on the ledger; serials stay at the admin (seed 000 Fig. 5)."""


def mode(st: state.Overlay) -> Mode:
    """The chain's privacy mode from ``cfg/chain``.

    Raises:
        ValueError: the record names no known mode.
    """
    value = st.get_value(state.K_CHAIN) or {}
    name = value.get("privacy", _OPEN)
    # Dict lookups, not Mode(name) or Mode.OPEN.value: each enum call or member attribute costs
    # ~0.7 µs, and every AddMeter asks twice (admission and execution; consensus.md §11).
    known = _MODES.get(name) if isinstance(name, str) else None
    return known or Mode(str(name))


_MODES = {m.value: m for m in Mode}
_OPEN = Mode.OPEN.value


def is_pseudonym(meter_id: str) -> bool:
    return PSEUDONYM_RE.match(meter_id) is not None


def member_key(admin_secret: bytes, chain_id: str, salt: bytes) -> bytes:
    """The secret a member receives at admission [32 bytes] (docs/spec/privacy.md §2)."""
    if len(admin_secret) != SECRET_BYTES:
        raise PrivacyError(f"admin secret must be {SECRET_BYTES} bytes, got {len(admin_secret)}")
    if len(salt) != SALT_BYTES:
        raise PrivacyError(f"admission salt must be {SALT_BYTES} bytes, got {len(salt)}")
    data = chain_id.encode() + b"\x00" + salt
    return hashlib.blake2b(
        data, key=admin_secret, digest_size=SECRET_BYTES, person=b"lem1/member-key"
    ).digest()


def normalise_serial(serial: str) -> str:
    """The serial as hashed: surrounding blanks removed, printable ASCII, 1–64 characters."""
    text = serial.strip()
    if not _SERIAL_RE.match(text):
        raise PrivacyError("meter serial must be 1-64 printable ASCII characters without blanks")
    return text


def pseudonym(key: bytes, serial: str) -> str:
    """The ledger meter id of ``serial`` under a member key (docs/spec/privacy.md §2)."""
    if len(key) != SECRET_BYTES:
        raise PrivacyError(f"member key must be {SECRET_BYTES} bytes, got {len(key)}")
    digest = hashlib.blake2b(
        normalise_serial(serial).encode(),
        key=key,
        digest_size=PSEUDONYM_DIGEST_BYTES,
        person=b"lem1/pseudonym",
    )
    return "ps-" + digest.hexdigest()


# retention: state keys and commitments (docs/spec/privacy.md §3) ----------------------------

DAY_MS = 86_400_000
"""Pruning works one UTC day of a period per tx (a chunk), so one block's work stays bounded
(a day of 19 members ≈ 1,800 rows) and a member proves a record with its own rows of that day."""


def day_of(slot_ms: int) -> int:
    """Start of the UTC day holding ``slot_ms`` [ms] (the chunk a record is committed in)."""
    return slot_ms - slot_ms % DAY_MS


def k_pruned(period_id: str) -> bytes:
    """``pruned/<period_id>``: {next_ms, records, done, root, height, time_ms}."""
    return b"pruned/" + period_id.encode()


def k_period_total(period_id: str, account: str) -> bytes:
    """``ptot/<period_id>/<account>``: [import_wh, export_wh, records] of the pruned rows."""
    return b"ptot/" + period_id.encode() + b"/" + account.encode()


def k_day_root(period_id: str, day_ms: int, account: str) -> bytes:
    """``proot/<period_id>/<day_ms>/<account>``: [import_wh, export_wh, records, member_root]."""
    return (
        b"proot/"
        + period_id.encode()
        + b"/"
        + state.slot_key(day_ms).encode()
        + b"/"
        + (account.encode())
    )


@dataclass(frozen=True, slots=True, order=True)
class Record:
    """One pruned measurement as its member kept it (the ``meas/`` row without the signer).

    Ordering is (slot, meter id): the state key order of ``meas/<slot>/<meter_id>``.
    """

    slot_start_ms: int
    meter_id: str
    import_wh: int
    export_wh: int
    quality: int

    def to_value(self) -> list[codec.Value]:
        return [self.slot_start_ms, self.meter_id, self.import_wh, self.export_wh, self.quality]

    @classmethod
    def from_json(cls, v: Any, where: str = "record") -> Record:
        """From ``{"slot_start_ms", "meter_id", "import_wh", "export_wh", "quality"}``."""
        try:
            rec = cls(
                int(v["slot_start_ms"]),
                str(v["meter_id"]),
                int(v["import_wh"]),
                int(v["export_wh"]),
                int(v.get("quality", 0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PrivacyError(f"{where}: {type(exc).__name__}: {exc}") from exc
        return rec

    def to_json(self) -> dict[str, Any]:
        return {
            "slot_start_ms": self.slot_start_ms,
            "meter_id": self.meter_id,
            "import_wh": self.import_wh,
            "export_wh": self.export_wh,
            "quality": self.quality,
        }


def record_digest(record: Record) -> bytes:
    """SHA-256 of the domain-separated canonical record."""
    # msgpack.packb of this flat [int, str, int, int, int] array is byte-equal to codec.encode
    # (which only adds a type walk, a third of a month's prune time); pinned by a property test.
    # An int beyond 64 bits raises OverflowError here as it would there.
    packed = msgpack.packb(
        [record.slot_start_ms, record.meter_id, record.import_wh, record.export_wh, record.quality],
        use_bin_type=True,
    )
    return hashlib.sha256(b"lem/1/record\x00" + packed).digest()


def member_root(records: Iterable[Record]) -> bytes:
    """RFC 6962 root over one account's records of one day chunk, in (slot, meter) order."""
    return merkle.list_root([record_digest(r) for r in sorted(records)])


def chunk_digest(day_ms: int, account: str, root: bytes, n_records: int) -> bytes:
    value = codec.encode([day_ms, account, root, n_records])
    return hashlib.sha256(b"lem/1/chunk\x00" + value).digest()


def period_root(entries: Sequence[tuple[int, str, bytes, int]]) -> bytes:
    """Root over (day, account, member root, record count) in (day, account) order: the
    period's one commitment to everything pruned."""
    return merkle.list_root([chunk_digest(d, a, r, n) for d, a, r, n in sorted(entries)])


@dataclass(frozen=True, slots=True)
class RecordProof:
    """A kept record's inclusion in its account's committed root for that day (spec §4).

    Attributes:
        period_id, account: where the root is committed (``proot/<period>/<day>/<account>``).
        record: the kept measurement (its UTC day names the chunk).
        index, size: its position among the account's records of that day, and their count.
        path: RFC 6962 audit path (leaf first).
        member_root: the root the path leads to.
    """

    period_id: str
    account: str
    record: Record
    index: int
    size: int
    path: tuple[bytes, ...]
    member_root: bytes

    @property
    def state_key(self) -> bytes:
        """The state key whose value commits to :attr:`member_root`."""
        return k_day_root(self.period_id, day_of(self.record.slot_start_ms), self.account)

    def to_json(self) -> dict[str, Any]:
        return {
            "period_id": self.period_id,
            "account": self.account,
            "record": self.record.to_json(),
            "index": self.index,
            "size": self.size,
            "path": [h.hex() for h in self.path],
            "member_root": self.member_root.hex(),
        }

    @classmethod
    def from_json(cls, v: Any) -> RecordProof:
        try:
            return cls(
                str(v["period_id"]),
                str(v["account"]),
                Record.from_json(v["record"]),
                int(v["index"]),
                int(v["size"]),
                tuple(bytes.fromhex(h) for h in v["path"]),
                bytes.fromhex(v["member_root"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PrivacyError(f"record proof: {type(exc).__name__}: {exc}") from exc


def prove_record(
    period_id: str, account: str, records: Iterable[Record], record: Record
) -> RecordProof:
    """Build the proof of ``record`` from the records the member kept (at least every one of
    its rows of that UTC day; other days are ignored).

    Raises:
        PrivacyError: ``record`` is not among ``records``.
    """
    day = day_of(record.slot_start_ms)
    ordered = sorted({r for r in records if day_of(r.slot_start_ms) == day})
    try:
        index = ordered.index(record)
    except ValueError:
        raise PrivacyError(f"slot {record.slot_start_ms} of {record.meter_id} not kept") from None
    digests = [record_digest(r) for r in ordered]
    return RecordProof(
        period_id,
        account,
        record,
        index,
        len(ordered),
        tuple(merkle.list_path(digests, index)),
        merkle.list_root(digests),
    )


def verify_record(proof: RecordProof) -> bool:
    """True when the proof's record is leaf ``index`` of a tree of ``size`` with ``member_root``."""
    return merkle.list_verify(
        record_digest(proof.record), proof.index, proof.size, proof.path, proof.member_root
    )


def matches_commitment(proof: RecordProof, day_root: codec.Value) -> bool:
    """True when ``day_root`` (the ``proot/`` value) commits to the proof's root and size."""
    if not isinstance(day_root, list) or len(day_root) != 4:
        return False
    return bool(day_root[2] == proof.size and day_root[3] == proof.member_root)


def verify_record_in_state(proof: RecordProof, state_proof: merkle.Proof, app_hash: bytes) -> bool:
    """The whole chain: kept record → member root → ``proot/`` entry → app hash (of a header
    the verifier trusts). Pure; what a member or auditor runs."""
    if state_proof.key != proof.state_key:
        return False
    if not merkle.verify_proof(state_proof, app_hash):
        return False
    try:
        committed = codec.decode(state_proof.value)
    except LedgerError:
        return False
    return matches_commitment(proof, committed) and verify_record(proof)
