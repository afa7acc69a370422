"""Consensus errors: one base (a :class:`ledger.errors.LedgerError`), typed subclasses."""

from __future__ import annotations

from ledger.errors import LedgerError


class ConsensusError(LedgerError):
    """Base of every error the consensus package raises on purpose."""


class MessageError(ConsensusError):
    """A consensus message that is malformed, mis-addressed or badly signed.

    Attributes:
        reason: a short stable tag used as a drop counter key (``"bad_signature"``, …).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class CommitError(ConsensusError):
    """A commit that does not prove a block: bad signature, unknown signer, too little power."""


class EvidenceError(ConsensusError):
    """Evidence that does not prove an equivocation."""


class DoubleSignError(ConsensusError):
    """The sign-state refused: it signed another message for this step or a later one.

    Attributes:
        hrs: the (height, round, step) that was asked for.
        last: the last (height, round, step) signed.
    """

    def __init__(self, hrs: tuple[int, int, int], last: tuple[int, int, int]) -> None:
        super().__init__(f"refusing to sign {hrs}: already signed up to {last}")
        self.hrs = hrs
        self.last = last


class ForkError(ConsensusError):
    """Two valid commits for different blocks at one height: more than 1/3 of the power lied.

    This breaks the consensus invariant; the engine stops (systemd restarts; an operator must
    look at the evidence carried here).

    Attributes:
        height: the height with two commits.
        hashes: the two block hashes.
    """

    def __init__(self, height: int, hashes: tuple[bytes, bytes]) -> None:
        super().__init__(
            f"fork at height {height}: {hashes[0].hex()[:16]}… vs {hashes[1].hex()[:16]}…"
        )
        self.height = height
        self.hashes = hashes


class StoreError(ConsensusError):
    """The consensus store (sign-state, WAL) is unreadable or inconsistent."""
