"""Joining on a real App (LMDB store, signed txs): requests, approvals, certified meters."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import state
from ledger import tx as txm
from ledger.app import App
from ledger.apps import join
from ledger.genesis import Genesis, GenesisError
from ledger.keys import SigningKey
from ledger.store import Store
from tests.unit.ledger.helpers import (
    ADMIN,
    GOV1,
    GOV2,
    N1,
    PARAMS,
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

NEW = key(40)  # a freshly flashed node's key
OTHER = key(41)
IDENT = "ISK5MT174-0001"


def _app(tmp_path: Path, **overrides: object) -> App:
    g = genesis(meters={"M1": N1.public_key}, **overrides)
    return App(Store(tmp_path, g, durable=False), vote_verifier)


def _try(app: App, signer: SigningKey, kind: str, body: object, time_ms: int) -> str:
    """Prepare a block holding one tx: 'ok' or the rejection reason."""
    raw = txm.make(signer, app.chain_id, app.sequence(signer.public_key), kind, body)
    prepared = app.prepare(app.height + 1, time_ms, VAL.public_key, [raw], None)
    return "ok" if not prepared.dropped else prepared.dropped[0][1].reason.value


def _join(meter_id: str, name: str = "") -> dict[str, object]:
    return {"meter_id": meter_id, "identification": IDENT, "name": name}


def _admin_period(app: App) -> None:
    period = {
        "period_id": "p1",
        "start_ms": T0,
        "end_ms": T0 + 4 * SLOT,
        "params": PARAMS,
    }
    commit(app, [Signer(ADMIN, app=app)("SetMarketParameters", period)], T0)


def test_uncertified_request_waits_and_cannot_write(tmp_path: Path) -> None:
    """An uncertified meter's request is stored as pending; the node's SetMeasure is refused."""
    app = _app(tmp_path)
    _admin_period(app)
    commit(app, [Signer(NEW, app=app)("JoinRequest", _join("M7", "house-7"))], T0 + SLOT)
    with app.store.state_reader() as base:
        st = state.Overlay(base)
        req = join.request(st, NEW.public_key)
        assert req is not None
        assert (req["meter_id"], req["identification"], req["name"]) == ("M7", IDENT, "house-7")
        assert req["height"] == 2
        assert state.meter_owner(st, "M7") is None
        assert st.get_int(join.K_PENDING_N) == 1
    # The meter is not on the allowed list until admission: unknown_meter, nothing written.
    assert _try(app, NEW, "SetMeasure", measure("M7", T0, 100, 0), T0 + 2 * SLOT) == (
        "unknown_meter"
    )


def test_admin_approval_admits_and_the_node_then_measures(tmp_path: Path) -> None:
    """After ApproveMember by an admin the meter belongs to the node and SetMeasure executes."""
    app = _app(tmp_path)
    _admin_period(app)
    node, admin = Signer(NEW, app=app), Signer(ADMIN, app=app)
    commit(app, [node("JoinRequest", _join("M7"))], T0 + SLOT)
    commit(app, [admin("ApproveMember", {"account": NEW.public_key})], T0 + SLOT + 1000)
    with app.store.state_reader() as base:
        st = state.Overlay(base)
        assert state.meter_owner(st, "M7") == NEW.public_key
        assert join.request(st, NEW.public_key) is None
        assert join.member(st, NEW.public_key) == {"meter_id": "M7", "height": 3, "via": "admin"}
        assert st.get_int(join.K_PENDING_N) == 0
    commit(app, [node("SetMeasure", measure("M7", T0, 1234, 0))], T0 + 2 * SLOT)
    with app.store.state_reader() as base:
        assert base.get(state.k_measure(T0, "M7")) is not None


def test_certified_meter_is_admitted_without_approval(tmp_path: Path) -> None:
    """A JoinRequest naming a meter id certified in genesis admits the node in its own block."""
    app = _app(tmp_path, certified_meters=("M8",))
    commit(app, [Signer(NEW, app=app)("JoinRequest", _join("M8"))], T0)
    with app.store.state_reader() as base:
        st = state.Overlay(base)
        assert state.meter_owner(st, "M8") == NEW.public_key
        assert join.member(st, NEW.public_key) == {
            "meter_id": "M8",
            "height": 1,
            "via": "certified",
        }
    # A second key claiming the same meter is refused: the certificate is used up.
    assert _try(app, OTHER, "JoinRequest", _join("M8"), T0 + 1000) == "meter_exists"


def test_certify_meters_later_then_the_next_request_is_admitted(tmp_path: Path) -> None:
    """CertifyMeters by the admin: a waiting node's repeated request is admitted."""
    app = _app(tmp_path)
    node, admin = Signer(NEW, app=app), Signer(ADMIN, app=app)
    commit(app, [node("JoinRequest", _join("M9"))], T0)
    commit(app, [admin("CertifyMeters", {"add": ["M9"], "remove": []})], T0 + 1000)
    with app.store.state_reader() as base:
        assert state.meter_owner(state.Overlay(base), "M9") is None
    commit(app, [node("JoinRequest", _join("M9"))], T0 + 2000)
    with app.store.state_reader() as base:
        st = state.Overlay(base)
        assert state.meter_owner(st, "M9") == NEW.public_key
        assert st.get_int(join.K_PENDING_N) == 0


def test_governance_quorum_admits_at_threshold(tmp_path: Path) -> None:
    """Governance keys admit when their approvals reach k (2 of 2 here); one is not enough."""
    app = _app(tmp_path)
    commit(app, [Signer(NEW, app=app)("JoinRequest", _join("M7"))], T0)
    commit(app, [Signer(GOV1, app=app)("ApproveMember", {"account": NEW.public_key})], T0 + 1)
    with app.store.state_reader() as base:
        st = state.Overlay(base)
        assert state.meter_owner(st, "M7") is None
        req = join.request(st, NEW.public_key)
        assert req is not None
        assert req["approvals"] == [GOV1.public_key]
    assert _try(app, GOV1, "ApproveMember", {"account": NEW.public_key}, T0 + 2) == (
        "already_voted"
    )
    commit(app, [Signer(GOV2, app=app)("ApproveMember", {"account": NEW.public_key})], T0 + 3)
    with app.store.state_reader() as base:
        st = state.Overlay(base)
        assert state.meter_owner(st, "M7") == NEW.public_key
        member = join.member(st, NEW.public_key)
        assert member is not None
        assert member["via"] == "governance"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"meter_id": "M7", "identification": IDENT}, "malformed"),
        ({"meter_id": "M 7", "identification": IDENT, "name": ""}, "malformed"),
        ({"meter_id": "M7", "identification": "x" * 129, "name": ""}, "malformed"),
        ({"meter_id": "M7", "identification": "a\nb", "name": ""}, "malformed"),
        ({"meter_id": "M1", "identification": IDENT, "name": ""}, "meter_exists"),
    ],
)
def test_bad_join_requests_are_refused(tmp_path: Path, body: object, reason: str) -> None:
    """Malformed bodies and meters that already belong to a member are refused by reason."""
    assert _try(_app(tmp_path), NEW, "JoinRequest", body, T0) == reason


def test_repeated_request_replaces_and_counts_once(tmp_path: Path) -> None:
    """A node that asks again (restart, other meter) has one waiting request, the latest."""
    app = _app(tmp_path)
    node = Signer(NEW, app=app)
    commit(app, [node("JoinRequest", _join("M7")), node("JoinRequest", _join("M6"))], T0)
    with app.store.state_reader() as base:
        st = state.Overlay(base)
        req = join.request(st, NEW.public_key)
        assert req is not None
        assert req["meter_id"] == "M6"
        assert st.get_int(join.K_PENDING_N) == 1


def test_pending_queue_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_PENDING waiting requests a new key is refused with join_queue_full."""
    monkeypatch.setattr(join, "MAX_PENDING", 2)
    app = _app(tmp_path)
    commit(
        app,
        [Signer(key(50 + i), app=app)("JoinRequest", _join(f"M{50 + i}")) for i in range(2)],
        T0,
    )
    assert _try(app, NEW, "JoinRequest", _join("M7"), T0 + 1) == "join_queue_full"
    # A waiting node may still repeat its own request.
    assert _try(app, key(50), "JoinRequest", _join("M50"), T0 + 1) == "ok"


def test_approve_after_the_meter_was_taken_is_refused(tmp_path: Path) -> None:
    """Two keys claim one meter; once one is admitted the other's approval fails meter_exists."""
    app = _app(tmp_path)
    commit(
        app,
        [
            Signer(NEW, app=app)("JoinRequest", _join("M7")),
            Signer(OTHER, app=app)("JoinRequest", _join("M7")),
        ],
        T0,
    )
    admin = Signer(ADMIN, app=app)
    commit(app, [admin("ApproveMember", {"account": NEW.public_key})], T0 + 1)
    assert _try(app, ADMIN, "ApproveMember", {"account": OTHER.public_key}, T0 + 2) == (
        "meter_exists"
    )


def test_certify_meters_body_rules(tmp_path: Path) -> None:
    """CertifyMeters refuses an id both added and removed, and duplicate ids."""
    app = _app(tmp_path)
    both = {"add": ["M9"], "remove": ["M9"]}
    assert _try(app, ADMIN, "CertifyMeters", both, T0) == "bad_value"
    twice = {"add": ["M9", "M9"], "remove": []}
    assert _try(app, ADMIN, "CertifyMeters", twice, T0) == "bad_value"


def test_genesis_certified_meters_round_trip_and_hash_stability() -> None:
    """certified_meters survives JSON and bytes; an empty list keeps the old genesis hash."""
    g = genesis(certified_meters=("M8", "M3"))
    assert Genesis.from_json(g.to_json()) == Genesis.from_json(g.to_json())
    assert Genesis.decode(g.encode()).certified_meters == ("M3", "M8")
    assert "certified_meters" not in genesis().to_value()
    with pytest.raises(GenesisError, match="certified_meters"):
        genesis(certified_meters=("M8", "M8"))


OPS = st.lists(
    st.tuples(
        st.sampled_from(["join", "approve", "gov", "certify"]),
        st.integers(0, 3),  # which new key
        st.integers(0, 2),  # which meter id
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=20, deadline=None)
@given(ops=OPS)
def test_join_invariants_under_random_ops(ops: list[tuple[str, int, int]]) -> None:
    """Whatever order of requests, approvals and certificates: join/n counts the waiting
    requests, each meter has at most one owner, and every joined key owns its meter."""
    keys = [key(60 + i) for i in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        app = _app(Path(tmp))
        signers = {k.public_key: Signer(k, app=app) for k in [*keys, ADMIN, GOV1]}
        for n, (op, who, meter) in enumerate(ops):
            k = keys[who]
            if op == "join":
                signer, kind, body = signers[k.public_key], "JoinRequest", _join(f"J{meter}")
            elif op == "certify":
                signer, kind, body = (
                    signers[ADMIN.public_key],
                    "CertifyMeters",
                    {"add": [f"J{meter}"], "remove": []},
                )
            else:
                approver = ADMIN if op == "approve" else GOV1
                signer, kind = signers[approver.public_key], "ApproveMember"
                body = {"account": k.public_key}
            raw = signer(kind, body)
            last_commit = app.commit(app.height)
            prepared = app.prepare(app.height + 1, T0 + n, VAL.public_key, [raw], last_commit)
            if prepared.dropped:
                signer.seq -= 1  # refused: the sequence number was not used
                continue
            app.commit_block(prepared.block_bytes, [[VAL.public_key, b"\x00" * 64]])
        with app.store.state_reader() as base:
            s = state.Overlay(base)
            waiting = list(base.scan(join.K_REQ, state.prefix_end(join.K_REQ)))
            assert s.get_int(join.K_PENDING_N) == len(waiting)
            for k in keys:
                member = join.member(s, k.public_key)
                if member is not None:
                    assert state.meter_owner(s, member["meter_id"]) == k.public_key
                    assert join.request(s, k.public_key) is None
        app.store.close()
