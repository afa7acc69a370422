"""The sign-state ("privval"): a validator never signs two messages for one step.

Spec: docs/spec/consensus.md §Sign-state. Before a signature leaves this module, the
(height, round, step), the signed body and the signature are written to an LMDB environment
of their own with ``sync`` on (the write is on disk before ``sign_*`` returns). Requests for an
earlier (height, round, step) are refused; for the same one, the identical body gets the stored
signature back, a body differing only in its timestamp gets the stored message (so a restarted
validator re-sends exactly what it sent before), anything else is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lmdb

from ledger import codec
from ledger.consensus.crash import NO_CRASH, SIGNED_NOT_PERSISTED, CrashPoints
from ledger.consensus.errors import DoubleSignError, StoreError
from ledger.consensus.messages import Proposal, Vote
from ledger.errors import CodecError
from ledger.keys import SigningKey

_KEY = b"last"
_TS_INDEX = 4
"""Position of timestamp_ms in both vote and proposal bodies (messages.py)."""


class SignState:
    """Durable last-signed record guarding one validator key.

    Args:
        path: directory of the LMDB environment (created if missing).
        crash: crash points (tests); :data:`NO_CRASH` in production.
        durable: fsync each record (always True in production; simulations that only
            simulate crashes may turn it off to run faster).
    """

    def __init__(self, path: Path, *, crash: CrashPoints = NO_CRASH, durable: bool = True) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(
                str(path), map_size=1 << 20, max_dbs=1, sync=durable, metasync=durable
            )
        except lmdb.Error as exc:
            raise StoreError(f"{path}: cannot open sign-state: {exc}") from exc
        self._crash = crash
        self._last = self._load()

    def _load(self) -> tuple[tuple[int, int, int], bytes, bytes] | None:
        with self._env.begin() as txn:
            raw = txn.get(_KEY)
        if raw is None:
            return None
        try:
            h, r, s, body, sig = codec.decode(bytes(raw))
        except (CodecError, ValueError) as exc:
            raise StoreError(f"sign-state record is corrupt: {exc}") from exc
        return (h, r, s), body, sig

    @property
    def last(self) -> tuple[int, int, int] | None:
        """The last (height, round, step) signed, if any."""
        return self._last[0] if self._last else None

    def sign_vote(self, key: SigningKey, chain_id: str, vote: Vote) -> Vote:
        """Sign ``vote`` (or return the identical-but-for-time vote signed before).

        Raises:
            DoubleSignError: a different vote was signed for this or a later step.
        """
        body = vote.body()
        stored, sig = self._sign(vote.hrs, body, lambda: key.sign(chain_id, "vote", body))
        return Vote.from_body(stored, sig)

    def sign_proposal(self, key: SigningKey, chain_id: str, proposal: Proposal) -> Proposal:
        """Sign ``proposal``; same rules as :meth:`sign_vote`."""
        body = proposal.body()
        stored, sig = self._sign(proposal.hrs, body, lambda: key.sign(chain_id, "proposal", body))
        return Proposal.from_body(stored, sig, proposal.block)

    def _sign(
        self, hrs: tuple[int, int, int], body: bytes, make: Callable[[], bytes]
    ) -> tuple[bytes, bytes]:
        if self._last is not None:
            last_hrs, last_body, last_sig = self._last
            if hrs < last_hrs:
                raise DoubleSignError(hrs, last_hrs)
            if hrs == last_hrs:
                if _same_but_time(body, last_body):
                    return last_body, last_sig
                raise DoubleSignError(hrs, last_hrs)
        sig = make()
        self._crash.hit(SIGNED_NOT_PERSISTED)
        record = codec.encode([*hrs, body, sig])
        with self._env.begin(write=True) as txn:
            txn.put(_KEY, record)
        self._last = (hrs, body, sig)
        return body, sig

    def close(self) -> None:
        """Close the environment."""
        self._env.close()


def _same_but_time(a: bytes, b: bytes) -> bool:
    """Whether two bodies differ at most in their timestamp field."""
    if a == b:
        return True
    fa, fb = codec.decode(a), codec.decode(b)
    if not isinstance(fa, list) or not isinstance(fb, list) or len(fa) != len(fb):
        return False
    fa[_TS_INDEX] = fb[_TS_INDEX] = 0
    return bool(fa == fb)
