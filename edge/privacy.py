"""The admin's encrypted identity store, members' admission files, and the meter-id mapping.

Spec: docs/spec/privacy.md §2 (pseudonyms, admission) and §5 (identity store, erasure); seed 000
§4.5 Fig. 5: the allowed-meters list with serials lives off the ledger at the admin.

Store layout (directory mode 0700, every file 0600), under the admin node's data dir:

- ``pseudonym.key``: the admin pseudonymisation secret (32 bytes, hex). Never rotated: every
  member key derives from it and a per-admission salt.
- ``identity.<gen>.key``: the current store key (32 bytes, hex), a PyNaCl SecretBox key.
- ``identity.<gen>.box``: SecretBox(canonical msgpack {chain_id, records: {pseudonym: record}}).

Erasure removes the member's records (with their salts) and *rotates* the store key: the
remaining records are re-encrypted under a fresh key as generation ``gen + 1``, then the old pair
is overwritten and unlinked. Old ciphertext that survives on disk is useless without the old key
(crypto-shredding); without the salt nobody, the admin included, can recompute the pseudonym
from a serial. Limits (flash wear levelling, backups) are in docs/privacy.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
import nacl.utils

from edge.clock import DaemonClock
from edge.scheduler import STAGGER_STEP_MS
from edge.submitter import TxSigner
from ledger import codec, privacy, state
from ledger.access import Queries
from ledger.errors import LedgerError, Reason, TxRejected

log = logging.getLogger("lemd.privacy")

ADMISSION_FILE = "admission.json"
"""A member node's admission file, in its data dir (written by ``lemctl privacy admit``)."""
_GEN_RE = re.compile(r"^identity\.(\d{1,12})\.(key|box)$")


class PrivacyStoreError(Exception):
    """The identity store or an admission file is missing, unreadable, open to others or
    inconsistent; or a request names an unknown member. The message names the file or member
    and never contains a meter serial."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One admitted meter as only the admin knows it.

    Attributes:
        pseudonym: the ledger meter id.
        member: the admin's reference for the person (contract or customer number).
        serial: the meter serial number.
        account: the member node's public key (hex), the ledger account.
        salt: the admission salt (erasing it makes the pseudonym unrecomputable).
        admitted_ms: when the admin admitted the meter [ms since epoch, UTC].
    """

    pseudonym: str
    member: str
    serial: str
    account: str
    salt: bytes
    admitted_ms: int

    def to_value(self) -> list[codec.Value]:
        return [self.member, self.serial, self.account, self.salt, self.admitted_ms]


@dataclass(frozen=True, slots=True)
class Admission:
    """What a member node receives at admission (its own pseudonym and member key only)."""

    chain_id: str
    pseudonym: str
    member_key: bytes

    def pseudonym_of(self, serial: str) -> str:
        return privacy.pseudonym(self.member_key, serial)

    def save(self, path: Path) -> None:
        """Write the file mode 0600 (atomically; refuses to overwrite)."""
        if path.exists():
            raise PrivacyStoreError(f"{path}: refusing to overwrite an admission file")
        doc = {
            "chain_id": self.chain_id,
            "pseudonym": self.pseudonym,
            "member_key": self.member_key.hex(),
        }
        _write_private(path, (json.dumps(doc, indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> Admission:
        data = _read_private(path)
        try:
            doc = json.loads(data)
            adm = cls(str(doc["chain_id"]), str(doc["pseudonym"]), bytes.fromhex(doc["member_key"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise PrivacyStoreError(
                f"{path}: not an admission file ({type(exc).__name__})"
            ) from exc
        if not privacy.is_pseudonym(adm.pseudonym) or len(adm.member_key) != 32:
            raise PrivacyStoreError(f"{path}: pseudonym or member_key malformed")
        return adm


class IdentityStore:
    """The admin's pseudonym → (member, serial, account) map, encrypted at rest.

    Open with :meth:`create` once, then :meth:`open`. Every change is written (fsync'd) before
    the method returns. One writer at a time (an exclusive ``flock`` on ``lock``).
    """

    def __init__(self, directory: Path, chain_id: str, records: dict[str, Identity]) -> None:
        self.directory = directory
        self.chain_id = chain_id
        self._records = records

    # opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, chain_id: str, secret: bytes | None = None) -> IdentityStore:
        """A new, empty store with a fresh pseudonymisation secret and store key.

        ``secret`` (32 bytes) is for generated demo testnets only, whose every key derives
        from a seed (edge/testnet.py); a real community draws it here."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(directory.iterdir()):
            raise PrivacyStoreError(f"{directory}: not empty; refusing to create a store there")
        directory.chmod(0o700)
        secret = nacl.utils.random(32) if secret is None else secret
        if len(secret) != 32:
            raise PrivacyStoreError("the pseudonymisation secret must be 32 bytes")
        _write_private(directory / "pseudonym.key", _hex_key(secret))
        store = cls(directory, chain_id, {})
        with store._lock():
            store._write_generation(0)
        return store

    @classmethod
    def open(cls, directory: Path) -> IdentityStore:
        """Open an existing store (crash leftovers of an interrupted rotation are removed)."""
        if not (directory / "pseudonym.key").exists():
            raise PrivacyStoreError(f"{directory}: no identity store (run lemctl privacy init)")
        if directory.stat().st_mode & 0o077:
            raise PrivacyStoreError(f"{directory}: directory is open to others; chmod 700")
        gen = _current_generation(directory)
        key = _load_key(directory / f"identity.{gen}.key")
        box = nacl.secret.SecretBox(key)
        try:
            value = codec.decode(box.decrypt(_read_private(directory / f"identity.{gen}.box")))
        except (nacl.exceptions.CryptoError, LedgerError) as exc:
            raise PrivacyStoreError(f"{directory}: identity.{gen}.box does not decrypt") from exc
        records = {
            str(p): Identity(str(p), str(m), str(s), str(a), bytes(salt), int(t))
            for p, (m, s, a, salt, t) in value["records"].items()
        }
        return cls(directory, str(value["chain_id"]), records)

    # admin operations ---------------------------------------------------------------------

    def admit(
        self,
        member: str,
        serial: str,
        account: bytes,
        now_ms: int | None = None,
        salt: bytes | None = None,
    ) -> Admission:
        """Admit ``serial`` for ``member`` with ledger account ``account``; returns the member's
        admission (give it to the member node; do not keep a copy). ``salt``: demo testnets
        only (seed-derived, for reproducible genesis files); drawn at random otherwise."""
        serial = privacy.normalise_serial(serial)
        if not member.strip() or len(account) != 32:
            raise PrivacyStoreError("member must be non-empty and account a 32-byte public key")
        if any(r.serial == serial for r in self._records.values()):
            raise PrivacyStoreError("this meter serial is already admitted; erase it first")
        salt = nacl.utils.random(privacy.SALT_BYTES) if salt is None else salt
        if len(salt) != privacy.SALT_BYTES:
            raise PrivacyStoreError(f"the admission salt must be {privacy.SALT_BYTES} bytes")
        member_key = privacy.member_key(self._secret(), self.chain_id, salt)
        pseudonym = privacy.pseudonym(member_key, serial)
        when = int(time.time() * 1000) if now_ms is None else now_ms
        ident = Identity(pseudonym, member.strip(), serial, account.hex(), salt, when)
        with self._lock():
            self._records[pseudonym] = ident
            self._write_generation(_current_generation(self.directory) + 1, rotate=False)
        return Admission(self.chain_id, pseudonym, member_key)

    def reissue(self, pseudonym: str) -> Admission:
        """The admission of an admitted meter again (a member node that lost its file)."""
        ident = self.lookup(pseudonym)
        key = privacy.member_key(self._secret(), self.chain_id, ident.salt)
        return Admission(self.chain_id, pseudonym, key)

    def lookup(self, pseudonym: str) -> Identity:
        try:
            return self._records[pseudonym]
        except KeyError:
            raise PrivacyStoreError(f"no admitted meter with pseudonym {pseudonym}") from None

    def identities(self) -> list[Identity]:
        return sorted(self._records.values(), key=lambda r: (r.member, r.pseudonym))

    def erase(self, member: str) -> list[str]:
        """Remove every record of ``member`` and rotate the store key; returns the erased
        pseudonyms (what stays on the ledger, now unlinkable)."""
        gone = sorted(p for p, r in self._records.items() if r.member == member)
        if not gone:
            raise PrivacyStoreError(f"no member {member!r} in the identity store")
        with self._lock():
            for p in gone:
                del self._records[p]
            self._write_generation(_current_generation(self.directory) + 1, rotate=True)
        return gone

    # files --------------------------------------------------------------------------------

    def _secret(self) -> bytes:
        return _load_key(self.directory / "pseudonym.key")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        fd = os.open(self.directory / "lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_generation(self, gen: int, rotate: bool = True) -> None:
        """Write generation ``gen`` (a new key when rotating, else the current one), then
        shred and remove every older generation."""
        d = self.directory
        old = _generations(d)
        if rotate or not old:
            key = nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)
        else:
            key = _load_key(d / f"identity.{max(old)}.key")
        value = {
            "chain_id": self.chain_id,
            "records": {p: r.to_value() for p, r in sorted(self._records.items())},
        }
        _write_private(d / f"identity.{gen}.key", _hex_key(key))
        _write_private(
            d / f"identity.{gen}.box",
            bytes(nacl.secret.SecretBox(key).encrypt(codec.encode(value))),
        )
        _fsync_dir(d)
        for path in sorted(d.iterdir()):  # older pairs and leftovers of an interrupted write
            m = _GEN_RE.match(path.name)
            if m and int(m.group(1)) != gen:
                _shred(path)
        _fsync_dir(d)


def _generations(d: Path) -> list[int]:
    found: dict[int, set[str]] = {}
    for p in d.iterdir():
        m = _GEN_RE.match(p.name)
        if m:
            found.setdefault(int(m.group(1)), set()).add(m.group(2))
    return sorted(g for g, kinds in found.items() if kinds == {"key", "box"})


def _current_generation(d: Path) -> int:
    gens = _generations(d)
    if not gens:
        raise PrivacyStoreError(f"{d}: no complete identity.<gen>.key/.box pair")
    return gens[-1]


def _hex_key(key: bytes) -> bytes:
    return key.hex().encode() + b"\n"


def _load_key(path: Path) -> bytes:
    try:
        key = bytes.fromhex(_read_private(path).decode().strip())
    except ValueError:
        raise PrivacyStoreError(f"{path}: not a hex key") from None
    if len(key) != 32:
        raise PrivacyStoreError(f"{path}: key must be 32 bytes")
    return key


def _read_private(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise PrivacyStoreError(f"{path}: cannot read: {exc.strerror}") from exc
    if mode & 0o077:
        raise PrivacyStoreError(f"{path}: mode {oct(mode & 0o777)} is open to others; chmod 600")
    return data


def _write_private(path: Path, data: bytes) -> None:
    """Atomic 0600 write: temp file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _shred(path: Path) -> None:
    """Overwrite with zeros, fsync, unlink (helps on plain disks; see docs/privacy.md on flash)."""
    with contextlib.suppress(FileNotFoundError):
        size = path.stat().st_size
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"\x00" * size)
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink()


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# retention: submit PruneMeasurements when due ---------------------------------------------


class RetentionScheduler:
    """Submits PruneMeasurements for solved periods whose dispute window has passed, one day
    chunk at a time (one tx in flight per period, so one block carries one chunk).

    Any member may prune (docs/spec/privacy.md §3); the ledger applies it once (a second one is
    refused ``already_pruned``). Like the period scheduler, each node waits a key-derived
    stagger so a community does not sign nineteen identical prunes; what is pruned is read from
    the committed state. A node whose key has no role gets ``not_permitted`` and stays quiet.

    Args:
        signer: this node's signer (shares sequence numbers with the submitter).
        queries: the committed state.
        clock: the daemon clock (simulated time in demos).
        interval_s: real seconds between checks.
    """

    def __init__(
        self, signer: TxSigner, queries: Queries, clock: DaemonClock, *, interval_s: float = 2.0
    ) -> None:
        self.signer = signer
        self.queries = queries
        self.clock = clock
        self.interval_s = interval_s
        self.stagger_ms = (signer.key.public_key[0] % 16) * STAGGER_STEP_MS
        self.submitted = 0

    async def run(self) -> None:
        while True:
            self.step()
            await asyncio.sleep(self.interval_s)

    def due(self) -> list[str]:
        """Solved, not yet pruned periods whose solved_ms + dispute window (+ stagger) passed."""
        with self.queries.store.state_reader() as base:
            st = state.Overlay(base)
            window = state.chain_params(st).get("dispute_window_ms")
            if window is None:
                return []
            now_ms = self.clock.now_ms()
            out = []
            for pid, rec in sorted(self.queries.periods().items()):
                solved_ms = rec.get("solved_ms", rec["end_ms"])
                if not rec["solved"] or solved_ms + window + self.stagger_ms > now_ms:
                    continue
                progress = st.get_value(privacy.k_pruned(pid))
                if progress is None or not progress["done"]:
                    out.append(pid)  # one day chunk per tx, one tx in flight per period
            return out

    def step(self) -> list[str]:
        """Submit a prune for every due period not already in flight; returns them."""
        self.signer.refresh()
        busy = self.signer.refs()
        sent = []
        for period_id in self.due():
            ref = f"prune/{period_id}"
            if ref in busy:
                continue
            try:
                self.signer.submit("PruneMeasurements", {"period_id": period_id}, ref)
            except TxRejected as exc:
                if exc.reason not in (Reason.ALREADY_PRUNED, Reason.NOT_PERMITTED):
                    log.warning(
                        "PruneMeasurements refused",
                        extra={"period": period_id, "reason": exc.reason.value},
                    )
                continue
            log.info("PruneMeasurements submitted", extra={"period": period_id})
            self.submitted += 1
            sent.append(period_id)
        return sent


def identity_json(ident: Identity) -> dict[str, Any]:
    """JSON view of an :class:`Identity` for the admin's terminal (never for logs)."""
    return {
        "pseudonym": ident.pseudonym,
        "member": ident.member,
        "serial": ident.serial,
        "account": ident.account,
        "admitted_ms": ident.admitted_ms,
    }
