"""ed25519 keys: domain separation, tamper detection and private key files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ledger.errors import KeyFileError, SignatureError
from ledger.keys import SigningKey, sign_bytes, verify


def test_signature_verifies_only_in_its_own_domain() -> None:
    """A signature is bound to chain id, message kind and body."""
    key = SigningKey.generate()
    sig = key.sign("lugaggia", "tx", b"body")
    verify(key.public_key, "lugaggia", "tx", b"body", sig)
    for chain, kind, body in [
        ("other", "tx", b"body"),
        ("lugaggia", "vote", b"body"),
        ("lugaggia", "tx", b"bodx"),
    ]:
        with pytest.raises(SignatureError):
            verify(key.public_key, chain, kind, body, sig)


def test_separator_cannot_be_smuggled_into_chain_or_kind() -> None:
    """Chain ids and kinds with '/' are refused, so sign bytes are unambiguous."""
    with pytest.raises(SignatureError):
        sign_bytes("a/b", "tx", b"")
    assert sign_bytes("ab", "c", b"") != sign_bytes("a", "bc", b"")


def test_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    """Saved keys are mode 0600, load back equal and are never overwritten."""
    key = SigningKey.generate()
    path = tmp_path / "node.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(path).public_key == key.public_key
    with pytest.raises(KeyFileError, match="overwrite"):
        key.save(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="open to others"):
        SigningKey.load(path)


def test_repr_does_not_leak_the_seed() -> None:
    """Logging a key object shows only a prefix of the public key."""
    key = SigningKey.generate()
    assert key.seed().hex() not in repr(key)
    assert key.seed().hex()[:8] not in repr(key)


def test_invalid_keys_and_signatures_are_refused_not_crashed() -> None:
    """Zero / non-curve public keys, a zero signature and wrong lengths raise SignatureError;
    sign bytes are the domain, chain id, kind and body joined by '/'."""
    key = SigningKey.generate()
    sig = key.sign("c", "tx", b"b")
    for public_key, signature in [
        (b"\0" * 32, sig),
        (b"\xff" * 32, sig),
        (key.public_key, b"\0" * 64),
        (key.public_key, sig[:63]),
        (key.public_key[:31], sig),
    ]:
        with pytest.raises(SignatureError):
            verify(public_key, "c", "tx", b"b", signature)
    assert sign_bytes("c", "tx", b"b") == b"lem/1/c/tx/b"
