"""ed25519 keys: domain separation, tamper detection and private key files."""

from __future__ import annotations

import stat
from pathlib import Path

import ed25519_zebra
import nacl.bindings
import nacl.exceptions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import keys
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


# --------------------------------------------------------------- the verification rule
# ZIP 215 with libsodium's key checks (docs/spec/codec.md §Signatures).

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # order of the prime subgroup
_D = -121665 * pow(121666, -1, _P) % _P  # curve25519's twisted Edwards d
_IDENTITY = (1).to_bytes(32, "little")


def _encodings(y: int) -> list[bytes]:
    """Both encodings of y (x's sign bit clear and set)."""
    low = y.to_bytes(32, "little")
    return [low, low[:31] + bytes([low[31] | 0x80])]


def test_small_order_constant_is_on_the_curve_with_order_8() -> None:
    """keys._Y_ORDER_8 and p - it are the y of points P with 2P of order 4 (y(2P) = 0, i.e.
    d·y⁴ + 2y² - 1 = 0 on -x² + y² = 1 + d·x²·y²), and such a point exists (x² is a square)."""
    for y in (keys._Y_ORDER_8, _P - keys._Y_ORDER_8):
        assert (_D * pow(y, 4, _P) + 2 * y * y - 1) % _P == 0
        x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
        assert pow(x2, (_P - 1) // 2, _P) == 1  # Euler's criterion: x² has a root


def test_small_order_keys_sign_nothing() -> None:
    """Under the cofactored equation a key of small order accepts R = identity, s = 0 for any
    message (ed25519-zebra itself says yes for the identity key); verify refuses every
    encoding of every small-order y."""
    forged = _IDENTITY + bytes(32)
    assert ed25519_zebra.ed_verify(forged, sign_bytes("c", "tx", b"any"), _IDENTITY)
    small = (0, 1, _P - 1, keys._Y_ORDER_8, _P - keys._Y_ORDER_8)
    for public_key in (enc for y in small for enc in _encodings(y)):
        with pytest.raises(SignatureError):
            verify(public_key, "c", "tx", b"any", forged)


def test_non_canonical_keys_and_unreduced_s_are_refused() -> None:
    """A key whose y is p or more is refused, and so is a valid signature with L added to s
    (no second signature for one tx, so no second tx hash)."""
    key = SigningKey.generate()
    sig = key.sign("c", "tx", b"b")
    s = int.from_bytes(sig[32:], "little")
    with pytest.raises(SignatureError):
        verify(key.public_key, "c", "tx", b"b", sig[:32] + (s + _L).to_bytes(32, "little"))
    for y in (_P, _P + 1, _P + 3, 2**255 - 1):
        for public_key in _encodings(y):
            with pytest.raises(SignatureError):
                verify(public_key, "c", "tx", b"b", sig)


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), body=st.binary(max_size=300), bit=st.integers(0))
def test_agrees_with_libsodium_on_signed_and_tampered(seed: bytes, body: bytes, bit: int) -> None:
    """Every signature libsodium makes verifies; flipping any one bit of the signature or of
    the body makes both libsodium and verify refuse it."""
    key = SigningKey(seed)
    sig = key.sign("c", "tx", body)
    verify(key.public_key, "c", "tx", body, sig)
    signed = bytearray(sig + body)
    signed[bit // 8 % len(signed)] ^= 1 << (bit % 8)
    bad_sig, bad_body = bytes(signed[:64]), bytes(signed[64:])
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.bindings.crypto_sign_open(bad_sig + sign_bytes("c", "tx", bad_body), key.public_key)
    with pytest.raises(SignatureError):
        verify(key.public_key, "c", "tx", bad_body, bad_sig)
