"""Sealed joining on a pseudonymous chain: the serial goes to the admin, the admission back.

Spec: docs/spec/join.md §6; docs/spec/privacy.md §5.2. A freshly flashed node knows its meter's
serial but not its pseudonym (that needs the admin's secret). Its ``JoinRequest`` therefore
carries the serial, identification and node name in a libsodium sealed box (X25519 +
XSalsa20-Poly1305, anonymous sender) to the admin's key; the ledger stores only ciphertext. The
admin opens it, admits the meter in its identity store and answers with ``ApproveMember``,
which names the pseudonym and carries the node's admission (chain, pseudonym, member key)
sealed to the node's key. Only that node can open it.

Both boxes use the parties' ed25519 ledger keys converted to X25519 (libsodium's
``crypto_sign_ed25519_pk_to_curve25519``): the admin's key is already in genesis and the node's
key is the request's signer, so no new key has to be distributed. Every box names the chain and
the joining account, so a box copied into another node's request, or replayed on another chain,
is refused when opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.signing

from edge.privacy import Admission
from ledger import codec, privacy
from ledger.errors import LedgerError
from ledger.keys import SigningKey

_REQUEST = "lem1/join-request"
_ADMISSION = "lem1/admission"


class JoinSealError(Exception):
    """A sealed box does not open with this key, or names another chain or account. The message
    never contains the box's content."""


@dataclass(frozen=True, slots=True)
class SealedJoin:
    """What a joining node tells only the admin (docs/spec/join.md §6)."""

    serial: str
    identification: str
    name: str


def _box_to(public_key: bytes) -> nacl.public.SealedBox[nacl.public.PublicKey]:
    return nacl.public.SealedBox(nacl.signing.VerifyKey(public_key).to_curve25519_public_key())


def _box_of(key: SigningKey) -> nacl.public.SealedBox[nacl.public.PrivateKey]:
    signing = nacl.signing.SigningKey(key.seed())
    return nacl.public.SealedBox(signing.to_curve25519_private_key())


def _open(
    key: SigningKey, sealed: bytes, kind: str, chain_id: str, account: bytes
) -> dict[str, Any]:
    try:
        value = codec.decode(_box_of(key).decrypt(sealed))
    except (nacl.exceptions.CryptoError, LedgerError):
        raise JoinSealError("the sealed box does not open with this key") from None
    if not isinstance(value, dict) or value.get("kind") != kind:
        raise JoinSealError(f"the sealed box is not a {kind}")
    if value.get("chain_id") != chain_id or value.get("account") != account:
        raise JoinSealError("the sealed box was made for another chain or another node")
    return value


def seal_request(
    admin_key: bytes, chain_id: str, account: bytes, serial: str, identification: str, name: str
) -> bytes:
    """The ``JoinRequest.sealed`` box: serial (normalised), identification and node name for
    the admin whose public key is ``admin_key``; ``account`` is the joining node's key."""
    plain = {
        "kind": _REQUEST,
        "chain_id": chain_id,
        "account": account,
        "serial": privacy.normalise_serial(serial),
        "identification": identification,
        "name": name,
    }
    return bytes(_box_to(admin_key).encrypt(codec.encode(plain)))


def open_request(admin: SigningKey, sealed: bytes, chain_id: str, account: bytes) -> SealedJoin:
    """Open a sealed join request of ``account`` with the admin's key.

    Raises:
        JoinSealError: not for this admin key, chain or account, or malformed.
    """
    value = _open(admin, sealed, _REQUEST, chain_id, account)
    try:
        return SealedJoin(
            privacy.normalise_serial(str(value["serial"])),
            str(value["identification"]),
            str(value["name"]),
        )
    except (KeyError, privacy.PrivacyError):
        raise JoinSealError("the sealed join request lacks a usable serial") from None


def seal_admission(account: bytes, admission: Admission) -> bytes:
    """The ``ApproveMember.admission`` box for the node with public key ``account``."""
    plain = {
        "kind": _ADMISSION,
        "chain_id": admission.chain_id,
        "account": account,
        "pseudonym": admission.pseudonym,
        "member_key": admission.member_key,
    }
    return bytes(_box_to(account).encrypt(codec.encode(plain)))


def open_admission(node: SigningKey, sealed: bytes, chain_id: str) -> Admission:
    """Open this node's sealed admission (from its ``join/member`` record).

    Raises:
        JoinSealError: not for this node or chain, or malformed.
    """
    value = _open(node, sealed, _ADMISSION, chain_id, node.public_key)
    pseudonym, member_key = value.get("pseudonym"), value.get("member_key")
    ok = isinstance(member_key, bytes) and len(member_key) == 32
    if not (isinstance(pseudonym, str) and privacy.is_pseudonym(pseudonym) and ok):
        raise JoinSealError("the sealed admission lacks a pseudonym or member key")
    assert isinstance(member_key, bytes)
    return Admission(chain_id, pseudonym, member_key)
