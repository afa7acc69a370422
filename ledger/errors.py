"""The ledger package's exception hierarchy: one base, typed subclasses carrying data."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger package raises on purpose."""


class CodecError(LedgerError):
    """Bytes that are not one canonical MessagePack encoding of a ledger value."""


class SignatureError(LedgerError):
    """A signature that does not verify, or a key that is not a valid ed25519 key."""


class KeyFileError(LedgerError):
    """A key file that is missing, unreadable, malformed or not private to its owner."""
