"""Joining on a pseudonymous chain (docs/spec/join.md §6): nothing in clear names the meter.

The ledger only sees the sealed boxes as bytes (their crypto is tested in
tests/unit/edge/test_join_seal.py); here the rules and state of JoinRequest and ApproveMember.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledger import codec, state
from ledger import tx as txm
from ledger.app import App
from ledger.apps import join
from ledger.keys import SigningKey
from ledger.store import Store
from tests.unit.ledger.helpers import (
    ADMIN,
    GOV1,
    N1,
    SLOT,
    T0,
    VAL,
    Signer,
    commit,
    genesis,
    key,
    measure,
    vote_verifier,
)

NEW = key(40)
SERIAL = "LGZ1030655933512"
PSEUDONYM = "ps-" + "ab" * 16
OTHER_PS = "ps-" + "cd" * 16
BOX = os.urandom(120)  # stands in for a sealed box: the ledger checks its size only


def _app(tmp_path: Path, privacy: str = "pseudonymous") -> App:
    meters = {OTHER_PS if privacy == "pseudonymous" else "M1": N1.public_key}
    g = genesis(privacy=privacy, meters=meters)
    return App(Store(tmp_path, g, durable=False), vote_verifier)


def _refusal(app: App, signer: SigningKey, kind: str, body: object) -> tuple[str, str]:
    """Prepare a block holding one tx: ('ok', '') or the rejection (reason, message)."""
    raw = txm.make(signer, app.chain_id, app.sequence(signer.public_key), kind, body)
    time_ms = max(T0, app.last_block_time_ms + 1)
    prepared = app.prepare(app.height + 1, time_ms, VAL.public_key, [raw], None)
    if not prepared.dropped:
        return "ok", ""
    exc = prepared.dropped[0][1]
    return exc.reason.value, exc.message


def _sealed_request() -> dict[str, object]:
    return {"meter_id": "", "identification": "", "name": "", "sealed": BOX}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"meter_id": SERIAL, "identification": "", "name": ""}, "not_pseudonym"),
        ({"meter_id": PSEUDONYM, "identification": SERIAL, "name": ""}, "not_pseudonym"),
        ({"meter_id": PSEUDONYM, "identification": "", "name": SERIAL}, "not_pseudonym"),
        ({"meter_id": "", "identification": SERIAL, "name": "", "sealed": BOX}, "not_pseudonym"),
        ({"meter_id": SERIAL, "identification": "", "name": "", "sealed": BOX}, "not_pseudonym"),
        ({"meter_id": "", "identification": "", "name": ""}, "malformed"),
        ({"meter_id": "", "identification": "", "name": "", "sealed": b"x" * 48}, "malformed"),
        ({"meter_id": "", "identification": "", "name": "", "sealed": b"x" * 513}, "malformed"),
    ],
)
def test_pseudonymous_chain_refuses_cleartext_without_echoing_it(
    tmp_path: Path, body: dict[str, object], reason: str
) -> None:
    """A serial in meter_id, identification or name is refused, and the message does not
    contain it (rejections reach logs and API answers); a request without meter id needs a box."""
    app = _app(tmp_path)
    got, message = _refusal(app, NEW, "JoinRequest", body)
    assert got == reason
    assert SERIAL not in message
    assert app.height == 0


def test_sealed_request_waits_with_no_cleartext_in_state(tmp_path: Path) -> None:
    """The waiting request stores no meter id, identification or name, only the box."""
    app = _app(tmp_path)
    commit(app, [Signer(NEW, app=app)("JoinRequest", _sealed_request())], T0)
    with app.store.state_reader() as base:
        st = state.Overlay(base)
        req = join.request(st, NEW.public_key)
        assert req is not None
        assert (req["meter_id"], req["identification"], req["name"]) == ("", "", "")
        assert req["sealed"] == BOX
        assert st.get_int(join.K_PENDING_N) == 1
        everything = b"".join(k + v for k, v in base.scan(b"", b"\xff"))
    assert SERIAL.encode() not in everything


def test_sealed_request_is_approved_by_the_admin_with_pseudonym_and_admission(
    tmp_path: Path,
) -> None:
    """Only an admin approves a sealed request, naming a pseudonym and a sealed admission; the
    node then owns the pseudonym, finds its admission in join/member and measures."""
    app = _app(tmp_path)
    node, admin = Signer(NEW, app=app), Signer(ADMIN, app=app)
    commit(app, [node("JoinRequest", _sealed_request())], T0)
    admission = os.urandom(100)
    assigned = {"account": NEW.public_key, "meter_id": PSEUDONYM, "admission": admission}
    assert _refusal(app, GOV1, "ApproveMember", {"account": NEW.public_key})[0] == "not_permitted"
    assert _refusal(app, GOV1, "ApproveMember", assigned)[0] == "not_permitted"
    assert _refusal(app, ADMIN, "ApproveMember", {"account": NEW.public_key})[0] == "malformed"
    serial_named = {**assigned, "meter_id": SERIAL}
    reason, message = _refusal(app, ADMIN, "ApproveMember", serial_named)
    assert (reason, SERIAL in message) == ("not_pseudonym", False)
    taken = {**assigned, "meter_id": OTHER_PS}
    assert _refusal(app, ADMIN, "ApproveMember", taken)[0] == "meter_exists"
    commit(app, [admin("ApproveMember", assigned)], T0 + 1000)
    with app.store.state_reader() as base:
        st = state.Overlay(base)
        assert state.meter_owner(st, PSEUDONYM) == NEW.public_key
        assert join.request(st, NEW.public_key) is None
        assert join.member(st, NEW.public_key) == {
            "meter_id": PSEUDONYM, "height": 2, "via": "admin", "admission": admission,
        }  # fmt: skip
        assert st.get_int(join.K_PENDING_N) == 0
    commit(app, [node("SetMeasure", measure(PSEUDONYM, T0, 500, 0))], T0 + SLOT)
    with app.store.state_reader() as base:
        assert base.get(state.k_measure(T0, PSEUDONYM)) is not None


def test_request_with_its_pseudonym_needs_no_box_and_no_assignment(tmp_path: Path) -> None:
    """A node that already holds its admission asks with its pseudonym; an approval must not
    name another meter id (bad_value); the plain approval admits."""
    app = _app(tmp_path)
    body = {"meter_id": PSEUDONYM, "identification": "", "name": ""}
    commit(app, [Signer(NEW, app=app)("JoinRequest", body)], T0)
    assigned = {"account": NEW.public_key, "meter_id": OTHER_PS, "admission": BOX}
    assert _refusal(app, ADMIN, "ApproveMember", assigned)[0] == "bad_value"
    commit(app, [Signer(ADMIN, app=app)("ApproveMember", {"account": NEW.public_key})], T0 + 1)
    with app.store.state_reader() as base:
        assert state.meter_owner(state.Overlay(base), PSEUDONYM) == NEW.public_key


def test_open_chain_refuses_a_box_and_keeps_its_state_format(tmp_path: Path) -> None:
    """On an open chain a sealed box is bad_value; a plain request's stored record has exactly
    the fields it had before sealing existed (same state bytes, same app hash)."""
    app = _app(tmp_path, privacy="open")
    body = {"meter_id": "M7", "identification": "ISK5", "name": "", "sealed": BOX}
    assert _refusal(app, NEW, "JoinRequest", body)[0] == "bad_value"
    plain = {"meter_id": "M7", "identification": "ISK5", "name": ""}
    commit(app, [Signer(NEW, app=app)("JoinRequest", plain)], T0)
    with app.store.state_reader() as base:
        raw = base.get(join.k_request(NEW.public_key))
    assert raw is not None
    assert sorted(codec.decode(raw)) == [
        "approvals", "height", "identification", "meter_id", "name", "time_ms",
    ]  # fmt: skip
