"""ed25519 keys, domain-separated signatures and SHA-256.

Spec: docs/spec/codec.md §Signatures. A signature covers
``b"lem/1/" + chain_id + b"/" + kind + b"/" + body``; chain ids and kinds may not contain ``/``,
so no two (chain, kind, body) triples share sign bytes. The raw seed of a private key never
appears in a repr, a log line or an exception message.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import ed25519_zebra
import nacl.signing

from ledger.errors import KeyFileError, SignatureError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_DOMAIN = b"lem/1/"


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data`` (32 bytes)."""
    return hashlib.sha256(data).digest()


def sign_bytes(chain_id: str, kind: str, body: bytes) -> bytes:
    """The exact bytes a signature of ``body`` as message ``kind`` on ``chain_id`` covers."""
    return _prefix(chain_id, kind) + body


@functools.lru_cache(maxsize=256)
def _prefix(chain_id: str, kind: str) -> bytes:
    """``lem/1/<chain_id>/<kind>/``: a process sees a handful of (chain, kind) pairs, and every
    verification needs one (docs/spec/consensus.md §11). Bad names raise and are not cached."""
    for name, part in (("chain_id", chain_id), ("kind", kind)):
        if not part or "/" in part:
            raise SignatureError(f"{name} {part!r} must be non-empty and contain no '/'")
    return _DOMAIN + chain_id.encode() + b"/" + kind.encode() + b"/"


class SigningKey:
    """A node's private ed25519 key."""

    __slots__ = ("_key",)

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise KeyFileError("an ed25519 seed is 32 bytes")
        self._key = nacl.signing.SigningKey(seed)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(os.urandom(32))

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key."""
        return bytes(self._key.verify_key)

    def sign(self, chain_id: str, kind: str, body: bytes) -> bytes:
        """Sign ``body`` as message ``kind`` on ``chain_id``; returns the 64-byte signature."""
        return bytes(self._key.sign(sign_bytes(chain_id, kind, body)).signature)

    def seed(self) -> bytes:
        """The raw 32-byte seed, for saving only."""
        return bytes(self._key)

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public_key.hex()[:16]}…)"

    def save(self, path: Path) -> None:
        """Write the key to ``path`` (mode 0600, atomically; refuses to overwrite)."""
        if path.exists():
            raise KeyFileError(f"{path}: refusing to overwrite an existing key")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, self.seed().hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Read a key written by :meth:`save`; the file must not be readable by others."""
        try:
            mode = path.stat().st_mode
            text = path.read_text().strip()
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from exc
        if mode & 0o077:
            raise KeyFileError(
                f"{path}: key file mode {oct(mode & 0o777)} is open to others; chmod 600"
            )
        try:
            seed = bytes.fromhex(text)
        except ValueError:
            raise KeyFileError(f"{path}: not a hex-encoded ed25519 seed") from None
        return cls(seed)


def verify(public_key: bytes, chain_id: str, kind: str, body: bytes, signature: bytes) -> None:
    """Check a signature made by :meth:`SigningKey.sign`.

    The rule is ZIP 215's, as CometBFT verifies ed25519 (docs/spec/codec.md §Signatures):
    ``s`` below the group order, the cofactored equation ``[8][s]B = [8]R + [8][k]A``; and, as
    libsodium does, a public key must be a canonical encoding of a point that is not of small
    order. Every signature libsodium accepts passes; ed25519-zebra checks it in ~44 µs where
    libsodium took ~62 µs on the bench machine (four validators verify every tx).

    Raises:
        SignatureError: wrong length, invalid key, or the signature does not verify.
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise SignatureError("public key must be 32 bytes and signature 64 bytes")
    if not _usable_key(public_key) or not ed25519_zebra.ed_verify(
        bytes(signature), sign_bytes(chain_id, kind, body), bytes(public_key)
    ):
        raise SignatureError(f"bad signature for {kind} by {public_key.hex()[:16]}…")


_P = 2**255 - 19
"""The field prime of curve25519."""

_Y_MASK = (1 << 255) - 1
"""A point encoding is its y coordinate (little-endian) with x's sign in the top bit."""

_Y_ORDER_8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
"""y of the points of order 8 (the others have y = p - this); tests/unit/ledger/test_keys.py
checks it against the curve equation."""

_SMALL_ORDER_Y = frozenset({0, 1, _P - 1, _Y_ORDER_8, _P - _Y_ORDER_8})
"""y of every point of order 1, 2, 4 or 8 (either sign of x). Under the cofactored equation any
signature verifies for such a key (the identity key with R = identity and s = 0 signs every
message), so keys with these y are refused, as libsodium refuses them."""


def _usable_key(public_key: bytes) -> bool:
    """True when ``public_key`` is a canonical encoding (y < p) not of small order."""
    y = int.from_bytes(public_key, "little") & _Y_MASK
    return y < _P and y not in _SMALL_ORDER_Y
