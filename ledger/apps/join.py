"""Joining the community: a new node asks, the ledger decides (docs/spec/join.md).

Spec: docs/spec/join.md §2 (kinds), §3 (state). Kinds:

- ``JoinRequest`` — signed by the new node's own key (any key: the signer need not be known):
  the meter id it read off its meter and the meter's identification string. If the meter id is on
  the certified list (genesis ``certified_meters`` or a later ``CertifyMeters``), the node is
  admitted at once; otherwise the request waits. On a pseudonymous chain the request carries no
  serial, identification or name in clear: ``meter_id`` is the node's pseudonym or "" and the
  rest travels in ``sealed``, a box only the admin opens (docs/spec/join.md §6).
- ``ApproveMember`` — an admin admits a waiting node at once; governance keys admit it when their
  approvals reach the governance threshold k (the same k-of-n as ``Propose``/``Vote``). A sealed
  request without a pseudonym is approved by an admin only, naming the pseudonym it assigned and
  the node's admission sealed to the node's key.
- ``CertifyMeters`` — an admin adds ids to or removes ids from the certified list.

Admission writes exactly what ``AddMeter`` writes (the meter → the node's key), so from that
block on the node's ``SetMeasure`` txs pass; before it they fail with ``not_permitted``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import codec, privacy, state
from ledger.errors import Reason
from ledger.registry import Context, TxKind, fields, id_field, key_field, register, reject
from ledger.tx import Tx

MAX_PENDING = 1024
"""Waiting requests at most: a flood of join requests from fresh keys cannot grow state for ever."""
MAX_CERTIFY = 256
"""Ids per CertifyMeters tx."""
MAX_IDENT_CHARS = 128
"""IEC 62056-21 identification is at most 16 chars after the manufacturer; DSMR headers longer."""
SEAL_OVERHEAD = 48
"""A libsodium sealed box adds an ephemeral X25519 key (32 B) and a MAC (16 B)."""
MAX_SEALED_BYTES = 512
"""Sealed join request or admission at most: serial, identification and name fit easily."""

K_PENDING_N = b"join/n"
K_CERT = b"join/cert/"
K_REQ = b"join/req/"
K_MEMBER = b"join/member/"


def k_cert(meter_id: str) -> bytes:
    return K_CERT + meter_id.encode()


def k_request(account: bytes) -> bytes:
    return K_REQ + account.hex().encode()


def k_member(account: bytes) -> bytes:
    return K_MEMBER + account.hex().encode()


@dataclass(frozen=True, slots=True)
class JoinRequest:
    meter_id: str
    """The meter id; "" on a pseudonymous chain when the node does not know its pseudonym yet."""
    identification: str
    name: str
    sealed: bytes = b""
    """Pseudonymous chains: serial, identification and name sealed to the admin (or b"")."""


@dataclass(frozen=True, slots=True)
class ApproveMember:
    account: bytes
    meter_id: str = ""
    """The pseudonym the admin assigned, for a sealed request without one (else "")."""
    admission: bytes = b""
    """The node's admission sealed to the node's key, with ``meter_id`` (else b"")."""


@dataclass(frozen=True, slots=True)
class CertifyMeters:
    add: tuple[str, ...]
    remove: tuple[str, ...]


def is_certified(st: state.Overlay, meter_id: str) -> bool:
    """True when ``meter_id`` is on the certified list (admitted without approval)."""
    return st.get(k_cert(meter_id)) is not None


def request(st: state.Overlay, account: bytes) -> dict[str, Any] | None:
    """The waiting request of ``account``, or None."""
    value = st.get_value(k_request(account))
    return value if isinstance(value, dict) else None


def member(st: state.Overlay, account: bytes) -> dict[str, Any] | None:
    """How and when ``account`` was admitted through a join, or None."""
    value = st.get_value(k_member(account))
    return value if isinstance(value, dict) else None


# JoinRequest ------------------------------------------------------------------------------


def _printable(value: Any, where: str, max_chars: int) -> str:
    ok = isinstance(value, str) and len(value) <= max_chars and value.isprintable()
    if not ok:
        raise reject(Reason.MALFORMED, f"{where} must be printable text of <= {max_chars} chars")
    return str(value)


def _sealed_field(body: dict[str, Any], where: str) -> bytes:
    v = body[where.rsplit(".", 1)[1]]
    if not isinstance(v, bytes) or not SEAL_OVERHEAD < len(v) <= MAX_SEALED_BYTES:
        raise reject(
            Reason.MALFORMED, f"{where} must be a sealed box of {SEAL_OVERHEAD + 1}.."
            f"{MAX_SEALED_BYTES} bytes"
        )  # fmt: skip
    return v


def _decode_join(value: codec.Value) -> JoinRequest:
    k = "JoinRequest"
    names = ("meter_id", "identification", "name")
    sealed_form = isinstance(value, dict) and "sealed" in value
    body = fields(value, k, (*names, "sealed") if sealed_form else names)
    sealed = _sealed_field(body, f"{k}.sealed") if sealed_form else b""
    name = body["name"]
    if name != "":
        name = id_field(body, k, "name")
    # "" = the node does not know its pseudonym yet; only with a sealed box (the admin assigns it)
    meter_id = "" if sealed and body["meter_id"] == "" else id_field(body, k, "meter_id")
    return JoinRequest(
        meter_id,
        _printable(body["identification"], f"{k}.identification", MAX_IDENT_CHARS),
        name,
        sealed,
    )


def _validate_join(ctx: Context, tx: Tx, body: JoinRequest) -> None:
    st = ctx.state
    if privacy.mode(st) is privacy.Mode.PSEUDONYMOUS:
        _pseudonymous_join_rules(body)
    elif body.sealed:
        raise reject(Reason.BAD_VALUE, "JoinRequest.sealed is for pseudonymous chains only")
    if state.is_prosumer(st, tx.signer) or member(st, tx.signer) is not None:
        raise reject(Reason.ALREADY_MEMBER, "this key is already a member")
    if body.meter_id and state.meter_owner(st, body.meter_id) is not None:
        raise reject(Reason.METER_EXISTS, f"meter {body.meter_id!r} already belongs to a member")
    if request(st, tx.signer) is None and st.get_int(K_PENDING_N) >= MAX_PENDING:
        raise reject(Reason.JOIN_QUEUE_FULL, f"{MAX_PENDING} join requests are already waiting")


def _pseudonymous_join_rules(body: JoinRequest) -> None:
    """Nothing in clear that may name a meter or a person (docs/spec/join.md §6). The messages
    never echo the refused value: it may be a serial number, and rejections reach logs."""
    if body.meter_id and not privacy.is_pseudonym(body.meter_id):
        raise reject(Reason.NOT_PSEUDONYM, "JoinRequest.meter_id must be a pseudonym or empty")
    if body.identification or body.name:
        raise reject(
            Reason.NOT_PSEUDONYM,
            "JoinRequest.identification and name must be empty on a pseudonymous chain "
            "(they travel sealed to the admin)",
        )


def _apply_join(ctx: Context, tx: Tx, body: JoinRequest) -> None:
    st = ctx.state
    if body.meter_id and is_certified(st, body.meter_id):
        if request(st, tx.signer) is not None:
            _drop_request(st, tx.signer)
        _admit(ctx, tx.signer, body.meter_id, "certified")
        return
    if request(st, tx.signer) is None:
        st.put_value(K_PENDING_N, st.get_int(K_PENDING_N) + 1)
    # A repeated request (the node restarted, or found its meter on another port) replaces the
    # waiting one; approvals already given are for the key and are kept only for the same meter.
    old = request(st, tx.signer)
    same = old is not None and bool(body.meter_id) and old["meter_id"] == body.meter_id
    record: dict[str, Any] = {
        "meter_id": body.meter_id,
        "identification": body.identification,
        "name": body.name,
        "height": ctx.height,
        "time_ms": ctx.time_ms,
        "approvals": old["approvals"] if same and old is not None else [],
    }
    if body.sealed:  # absent otherwise: open chains keep their state (and app hash) format
        record["sealed"] = body.sealed
    st.put_value(k_request(tx.signer), record)


def _drop_request(st: state.Overlay, account: bytes) -> None:
    st.delete(k_request(account))
    st.put_value(K_PENDING_N, st.get_int(K_PENDING_N) - 1)


def _admit(ctx: Context, account: bytes, meter_id: str, via: str, admission: bytes = b"") -> None:
    st = ctx.state
    st.put_value(state.k_meter(meter_id), account)
    st.put_value(state.k_owned(account, meter_id), True)
    record: dict[str, Any] = {"meter_id": meter_id, "height": ctx.height, "via": via}
    if admission:  # sealed to the node's key: only that node reads its member key
        record["admission"] = admission
    st.put_value(k_member(account), record)


# ApproveMember ----------------------------------------------------------------------------


def _decode_approve(value: codec.Value) -> ApproveMember:
    k = "ApproveMember"
    assigned = isinstance(value, dict) and "meter_id" in value
    body = fields(value, k, ("account", "meter_id", "admission") if assigned else ("account",))
    account = key_field(body, k, "account")
    if not assigned:
        return ApproveMember(account)
    return ApproveMember(
        account, id_field(body, k, "meter_id"), _sealed_field(body, f"{k}.admission")
    )


def _validate_approve(ctx: Context, tx: Tx, body: ApproveMember) -> None:
    st = ctx.state
    admin = state.is_admin(st, tx.signer)
    if not admin and not state.is_governor(st, tx.signer):
        raise reject(Reason.NOT_PERMITTED, "ApproveMember needs an admin or a governance key")
    req = request(st, body.account)
    if req is None:
        raise reject(Reason.NO_JOIN_REQUEST, f"no waiting join request from {body.account.hex()}")
    _check_assignment(req, body, admin)
    meter_id = req["meter_id"] or body.meter_id
    if state.meter_owner(st, meter_id) is not None:
        raise reject(Reason.METER_EXISTS, f"meter {meter_id!r} already belongs to a member")
    if not admin and tx.signer in req["approvals"]:
        raise reject(Reason.ALREADY_VOTED, "this governance key already approved this request")


def _check_assignment(req: dict[str, Any], body: ApproveMember, admin: bool) -> None:
    """A request without a meter id (sealed, pseudonymous chain) needs the admin to name the
    pseudonym it assigned; any other request must not name one."""
    if req["meter_id"]:
        if body.meter_id:
            raise reject(Reason.BAD_VALUE, "ApproveMember.meter_id: the request names its meter")
        return
    if not admin:
        raise reject(
            Reason.NOT_PERMITTED, "a sealed join request is approved by the admin (who opens it)"
        )
    if not body.meter_id:
        raise reject(Reason.MALFORMED, "ApproveMember needs meter_id and admission here")
    if not privacy.is_pseudonym(body.meter_id):
        raise reject(Reason.NOT_PSEUDONYM, "ApproveMember.meter_id must be a pseudonym")


def _apply_approve(ctx: Context, tx: Tx, body: ApproveMember) -> None:
    st = ctx.state
    req = request(st, body.account)
    assert req is not None
    if not req["meter_id"]:
        _drop_request(st, body.account)
        _admit(ctx, body.account, body.meter_id, "admin", body.admission)
        return
    if state.is_admin(st, tx.signer):
        via = "admin"
    else:
        req["approvals"] = sorted([*req["approvals"], tx.signer])
        gov_keys, threshold = state.governance(st)
        if sum(1 for a in req["approvals"] if a in gov_keys) < threshold:
            st.put_value(k_request(body.account), req)
            return
        via = "governance"
    _drop_request(st, body.account)
    _admit(ctx, body.account, req["meter_id"], via)


# CertifyMeters ----------------------------------------------------------------------------


def _id_list(body: dict[str, Any], name: str) -> tuple[str, ...]:
    v = body[name]
    if not isinstance(v, list) or len(v) > MAX_CERTIFY:
        raise reject(Reason.MALFORMED, f"CertifyMeters.{name} must be a list of <= {MAX_CERTIFY}")
    ids = tuple(id_field({"id": item}, "CertifyMeters", "id") for item in v)
    if len(set(ids)) != len(ids):
        raise reject(Reason.BAD_VALUE, f"CertifyMeters.{name} lists an id twice")
    return ids


def _decode_certify(value: codec.Value) -> CertifyMeters:
    body = fields(value, "CertifyMeters", ("add", "remove"))
    add, remove = _id_list(body, "add"), _id_list(body, "remove")
    if set(add) & set(remove):
        raise reject(Reason.BAD_VALUE, "CertifyMeters adds and removes the same id")
    return CertifyMeters(add, remove)


def _validate_certify(ctx: Context, tx: Tx, body: CertifyMeters) -> None:
    if not state.is_admin(ctx.state, tx.signer):
        raise reject(Reason.NOT_PERMITTED, "CertifyMeters needs an admin key")
    pseudonymous = privacy.mode(ctx.state) is privacy.Mode.PSEUDONYMOUS
    if pseudonymous and not all(privacy.is_pseudonym(m) for m in body.add):
        raise reject(Reason.NOT_PSEUDONYM, "CertifyMeters.add must hold pseudonyms")


def _apply_certify(ctx: Context, tx: Tx, body: CertifyMeters) -> None:
    # A request already waiting for a newly certified meter stays waiting: certification admits
    # at JoinRequest time, so the node's next (periodic) request is admitted.
    for meter_id in body.add:
        ctx.state.put_value(k_cert(meter_id), True)
    for meter_id in body.remove:
        ctx.state.delete(k_cert(meter_id))


register(TxKind("JoinRequest", _decode_join, _validate_join, _apply_join))
register(TxKind("ApproveMember", _decode_approve, _validate_approve, _apply_approve))
register(TxKind("CertifyMeters", _decode_certify, _validate_certify, _apply_certify))
