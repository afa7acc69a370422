"""Queries follow seed 000 Fig. 4: admin sees all; a prosumer sees meter ids, parameters,
totals and its own data; anyone sees status and parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import merkle, state
from ledger.access import Queries, Role
from ledger.apps import join as join_app
from ledger.errors import AccessDenied
from tests.unit.ledger.helpers import (
    ADMIN,
    N1,
    N2,
    OUTSIDER,
    SLOT,
    T0,
    Signer,
    commit,
    genesis,
    measure,
    open_app,
    period,
)
from tests.unit.ledger.helpers import key as make_key


@pytest.fixture
def q(tmp_path: Path) -> Queries:
    app = open_app(tmp_path, genesis(meters={"M1": N1.public_key, "M2": N2.public_key}))
    admin = Signer(ADMIN)
    commit(app, [admin("SetMarketParameters", period("p", T0, T0 + SLOT))], T0)
    commit(
        app,
        [
            Signer(N1)("SetMeasure", measure("M1", T0, 2500, 0)),
            Signer(N2)("SetMeasure", measure("M2", T0, 0, 1400)),
        ],
        T0 + SLOT,
    )
    commit(app, [admin("SolveMarkets", {"period_id": "p"})], T0 + 2 * SLOT)
    return Queries(app.store)


P1, P2, A, X = N1.public_key, N2.public_key, ADMIN.public_key, OUTSIDER.public_key


def test_roles(q: Queries) -> None:
    """Roles come from state: admin key, meter owner, everyone else."""
    assert [q.role(k) for k in (A, P1, X, None)] == [
        Role.ADMIN,
        Role.PROSUMER,
        Role.ANYONE,
        Role.ANYONE,
    ]


def test_meter_list(q: Queries) -> None:
    """Prosumers read the meter ids but not the accounts; anyone reads neither."""
    assert q.meter_ids(P1) == ["M1", "M2"]
    assert q.meter_accounts(A) == {"M1": P1.hex(), "M2": P2.hex()}
    with pytest.raises(AccessDenied):
        q.meter_accounts(P1)
    with pytest.raises(AccessDenied):
        q.meter_ids(X)


def test_parameters_and_totals(q: Queries) -> None:
    """Parameters are public; community totals per slot are for members only."""
    assert q.periods()["p"]["params"]["p_buy_bau"] == "21"
    assert q.totals(P1, T0, T0 + SLOT) == [[T0, 2500, 1400, 2]]
    with pytest.raises(AccessDenied):
        q.totals(None, T0, T0 + SLOT)


def test_measurements_own_only(q: Queries) -> None:
    """A prosumer reads its own measurements, never another member's; the admin reads all."""
    assert q.measurements(P1, "M1", T0, T0 + SLOT) == [[T0, 2500, 0, 0]]
    with pytest.raises(AccessDenied):
        q.measurements(P1, "M2", T0, T0 + SLOT)
    assert q.measurements(A, "M2", T0, T0 + SLOT) == [[T0, 0, 1400, 0]]
    with pytest.raises(AccessDenied):
        q.measurements(X, "M1", T0, T0 + SLOT)


def test_balances_own_only(q: Queries) -> None:
    """A prosumer reads its own, the community's and the grid's balance, not another member's."""
    assert q.balance(P1, P1.hex()) == -45_500_000
    assert q.balance(P1, state.COMMUNITY) == 9_800_000
    assert q.settlement(P2, "p", P2.hex()) == 12_600_000
    with pytest.raises(AccessDenied):
        q.balance(P1, P2.hex())
    with pytest.raises(AccessDenied):
        q.balance(None, state.COMMUNITY)


def test_proofs_follow_the_same_rules(q: Queries) -> None:
    """A prosumer gets a verifying proof of its own balance, and none of another's data."""
    proof = q.prove(P1, state.k_balance(P1.hex()))
    assert proof is not None
    assert merkle.verify_proof(proof, q.store.app_hash)
    assert q.prove(P1, state.k_measure(T0, "M1")) is not None
    for key in (state.k_balance(P2.hex()), state.k_measure(T0, "M2"), state.k_meter("M1")):
        with pytest.raises(AccessDenied):
            q.prove(P1, key)
    assert q.prove(None, state.k_period("p")) is not None
    assert q.status()["height"] == 3


def test_anyone_proves_the_admin_keys_and_no_other_config_record(q: Queries) -> None:
    """The admin list is public (a light node seals its join request to the current admin,
    docs/spec/join.md §4a); an anonymous or unadmitted viewer still gets no other cfg/ row."""
    for viewer in (None, X):
        proof = q.prove(viewer, state.K_ADMINS)
        assert proof is not None
        assert merkle.verify_proof(proof, q.store.app_hash)
        with pytest.raises(AccessDenied):
            q.prove(viewer, state.K_GOVERNANCE)


def test_an_unadmitted_key_proves_its_own_join_records_and_nothing_of_another(
    tmp_path: Path,
) -> None:
    """A key with no role proves its own sequence and waiting JoinRequest (a light node
    joining by itself, docs/spec/join.md §4a), never another key's request, admission or
    sequence; an admitted key proves its own admission record and not the waiting one."""
    other = make_key(41)
    app = open_app(tmp_path, genesis(meters={"M1": N1.public_key}))
    join = {"meter_id": "M9", "identification": "ISK5", "name": "n9"}
    commit(
        app,
        [
            Signer(OUTSIDER)("JoinRequest", join),
            Signer(other)("JoinRequest", {**join, "meter_id": "M8", "name": "n8"}),
        ],
        T0,
    )
    commit(app, [Signer(ADMIN)("ApproveMember", {"account": other.public_key})], T0 + 1000)
    q, o = Queries(app.store), other.public_key
    assert q.role(X) is Role.ANYONE
    own = q.prove(X, join_app.k_request(X))
    assert own is not None
    assert merkle.verify_proof(own, app.store.app_hash)
    assert q.prove(X, state.k_seq(X)) is not None
    assert q.prove(X, join_app.k_member(X)) is None  # own, not admitted yet: absent
    assert q.prove(o, join_app.k_member(o)) is not None
    for viewer, foreign in (
        (X, join_app.k_member(o)),
        (X, join_app.k_request(o)),
        (X, state.k_seq(o)),
        (X, state.k_seq(P1)),
        (o, join_app.k_request(X)),
        (P1, join_app.k_request(X)),
        (None, join_app.k_request(X)),
    ):
        with pytest.raises(AccessDenied):
            q.prove(viewer, foreign)
