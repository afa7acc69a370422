"""Validation rules: each rejection of issue 4 yields its reason code; state rules hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import codec, state
from ledger import tx as txm
from ledger.app import App
from ledger.errors import TxRejected
from ledger.store import Store
from tests.unit.ledger.helpers import (
    ADMIN,
    CHAIN,
    GOV1,
    GOV2,
    N1,
    N2,
    SLOT,
    T0,
    VAL,
    Signer,
    commit,
    genesis,
    measure,
    period,
    vote,
    vote_verifier,
)


@pytest.fixture
def app(tmp_path: Path) -> App:
    g = genesis(meters={"M1": N1.public_key, "M2": N2.public_key})
    application = App(Store(tmp_path, g, durable=False), vote_verifier)
    commit(application, [Signer(ADMIN)("SetMarketParameters", period("p", T0, T0 + 4 * SLOT))], T0)
    return application


def outcome(app: App, raw: bytes, time_ms: int) -> str:
    """'ok' if ``raw`` would execute in the next block at ``time_ms``, else its reason code."""
    prepared = app.prepare(app.height + 1, time_ms, VAL.public_key, [raw], None)
    return "ok" if not prepared.dropped else prepared.dropped[0][1].reason.value


def signed(key: object, kind: str, body: object, app: App, seq: int | None = None) -> bytes:
    k = key  # a SigningKey
    sequence = app.sequence(k.public_key) if seq is None else seq  # type: ignore[attr-defined]
    return txm.make(k, CHAIN, sequence, kind, body)  # type: ignore[arg-type]


def test_bad_signature(app: App) -> None:
    """A flipped signature bit is refused as bad_signature."""
    raw = bytearray(signed(N1, "SetMeasure", measure("M1", T0, 1, 0), app))
    raw[-1] ^= 1
    assert outcome(app, bytes(raw), T0 + SLOT) == "bad_signature"


def test_wrong_chain(app: App) -> None:
    """A tx signed for another chain id is refused as wrong_chain."""
    raw = txm.make(N1, "other-chain", 0, "SetMeasure", measure("M1", T0, 1, 0))
    assert outcome(app, raw, T0 + SLOT) == "wrong_chain"


def test_stale_and_future_sequence(app: App) -> None:
    """Sequence numbers below or above the next one are stale_sequence / future_sequence."""
    n1 = Signer(N1)
    commit(app, [n1("SetMeasure", measure("M1", T0, 1, 0))], T0 + SLOT)
    assert (
        outcome(
            app, signed(N1, "SetMeasure", measure("M1", T0 + SLOT, 1, 0), app, 0), T0 + 3 * SLOT
        )
        == "stale_sequence"
    )
    assert (
        outcome(
            app, signed(N1, "SetMeasure", measure("M1", T0 + SLOT, 1, 0), app, 2), T0 + 3 * SLOT
        )
        == "future_sequence"
    )


def test_replayed_tx_is_stale(app: App) -> None:
    """Re-submitting a committed tx's exact bytes is refused (replay protection)."""
    raw = signed(N1, "SetMeasure", measure("M1", T0, 1, 0), app)
    commit(app, [raw], T0 + SLOT)
    assert outcome(app, raw, T0 + 2 * SLOT) == "stale_sequence"


@pytest.mark.parametrize(
    ("body", "time_ms", "reason"),
    [
        (measure("M7", T0, 1, 0), T0 + SLOT, "unknown_meter"),
        (measure("M2", T0, 1, 0), T0 + SLOT, "not_meter_owner"),
        (measure("M1", T0 + 1000, 1, 0), T0 + SLOT, "slot_unaligned"),
        (measure("M1", T0, 1, 0), T0 + SLOT - 60_001, "slot_in_future"),
        (measure("M1", T0, 1, 0), T0 + SLOT - 60_000, "ok"),  # the 60 s clock-skew allowance
        (measure("M1", T0, -1, 0), T0 + SLOT, "malformed"),
        ({"meter_id": "M1"}, T0 + SLOT, "malformed"),
    ],
)
def test_set_measure_rules(app: App, body: dict[str, object], time_ms: int, reason: str) -> None:
    """SetMeasure refuses unknown or foreign meters, unaligned, future and malformed slots."""
    assert outcome(app, signed(N1, "SetMeasure", body, app), time_ms) == reason


def test_second_measurement_idempotent_or_conflict(app: App) -> None:
    """An identical repeat is accepted without effect; a different value for the slot is not."""
    n1 = Signer(N1)
    commit(app, [n1("SetMeasure", measure("M1", T0, 500, 0))], T0 + SLOT)
    before = app.app_hash
    commit(app, [n1("SetMeasure", measure("M1", T0, 500, 0))], T0 + SLOT + 1)
    with app.store.state_reader() as r:
        assert state.Overlay(r).get_value(state.k_total(T0)) == [500, 0, 1]  # counted once
    assert app.app_hash != before  # only the sequence moved
    assert (
        outcome(app, n1("SetMeasure", measure("M1", T0, 501, 0)), T0 + SLOT + 2)
        == "measure_conflict"
    )


def test_measure_for_solved_period_refused(app: App) -> None:
    """Once a period is solved, no measurement for its slots is accepted."""
    commit(app, [Signer(ADMIN, app=app)("SolveMarkets", {"period_id": "p"})], T0 + 4 * SLOT)
    raw = signed(N1, "SetMeasure", measure("M1", T0 + SLOT, 1, 0), app)
    assert outcome(app, raw, T0 + 5 * SLOT) == "period_solved"


def test_solve_before_end_and_twice(app: App) -> None:
    """SolveMarkets before the period ended, or a second time, is refused."""
    raw = signed(N1, "SolveMarkets", {"period_id": "p"}, app)
    assert outcome(app, raw, T0 + 4 * SLOT - 1) == "period_not_ended"
    commit(app, [raw], T0 + 4 * SLOT)
    assert (
        outcome(app, signed(N2, "SolveMarkets", {"period_id": "p"}, app), T0 + 5 * SLOT)
        == "already_solved"
    )
    assert (
        outcome(app, signed(N2, "SolveMarkets", {"period_id": "zz"}, app), T0 + 5 * SLOT)
        == "unknown_period"
    )


def test_solve_twice_in_one_block_keeps_one(app: App) -> None:
    """Two SolveMarkets for one period in one proposal: the second is dropped."""
    a = signed(N1, "SolveMarkets", {"period_id": "p"}, app)
    b = signed(N2, "SolveMarkets", {"period_id": "p"}, app)
    prepared = app.prepare(app.height + 1, T0 + 5 * SLOT, VAL.public_key, [a, b], None)
    assert [e.reason.value for _, e in prepared.dropped] == ["already_solved"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (period("q", T0 + 2 * SLOT, T0 + 6 * SLOT), "period_overlap"),
        (period("q", T0 - SLOT, T0), "period_started"),
        (period("q", T0 + 4 * SLOT + 5, T0 + 6 * SLOT), "slot_unaligned"),
        (period("q", T0 + 6 * SLOT, T0 + 6 * SLOT), "bad_value"),
        (period("q", T0 + 4 * SLOT, T0 + 6 * SLOT, {"p_buy_bau": "1"}), "bad_params"),
        (
            period(
                "q",
                T0 + 4 * SLOT,
                T0 + 6 * SLOT,
                {"p_buy_bau": "21", "p_sell_bau": "6", "p_buy_lem": "22", "p_sell_lem": "9"},
            ),
            "bad_params",
        ),
        (period("p", T0, T0 + 4 * SLOT), "period_started"),
        (period("q", T0 + 4 * SLOT, T0 + 6 * SLOT), "ok"),
    ],
)
def test_set_market_parameters_rules(app: App, body: dict[str, object], reason: str) -> None:
    """Periods are aligned, non-overlapping, not retroactive and carry valid parameters."""
    assert outcome(app, signed(ADMIN, "SetMarketParameters", body, app), T0 + SLOT) == reason


def test_oversized_and_unknown_kind(app: App) -> None:
    """A tx over 4 KiB is refused before decoding; an unregistered kind is unknown_kind."""
    with pytest.raises(TxRejected) as exc:
        app.check_tx(b"\x96" + b"\x00" * 5000)
    assert exc.value.reason.value == "oversized"
    assert outcome(app, signed(N1, "MintTokens", {}, app), T0 + SLOT) == "unknown_kind"
    with pytest.raises(TxRejected) as exc:
        txm.make(N1, CHAIN, 0, "SetMeasure", {"pad": "x" * 5000})
    assert exc.value.reason.value == "oversized"


def test_transfer_moves_balance(app: App) -> None:
    """Transfer debits the signer and credits the recipient; overdraft and zero are refused."""
    n1, n2, admin = Signer(N1), Signer(N2), Signer(ADMIN, app=app)
    commit(
        app,
        [
            n1("SetMeasure", measure("M1", T0, 0, 1000)),
            n2("SetMeasure", measure("M2", T0, 1000, 0)),
        ],
        T0 + SLOT,
    )
    commit(app, [admin("SolveMarkets", {"period_id": "p"})], T0 + 4 * SLOT)
    with app.store.state_reader() as r:
        credit = state.Overlay(r).get_int(state.k_balance(N1.public_key.hex()))
    assert credit > 0
    assert (
        outcome(
            app,
            signed(N1, "Transfer", {"to": N2.public_key, "amount_uect": credit + 1}, app),
            T0 + 5 * SLOT,
        )
        == "insufficient_funds"
    )
    assert (
        outcome(
            app, signed(N1, "Transfer", {"to": N2.public_key, "amount_uect": 0}, app), T0 + 5 * SLOT
        )
        == "bad_amount"
    )
    commit(app, [n1("Transfer", {"to": N2.public_key, "amount_uect": credit})], T0 + 5 * SLOT)
    with app.store.state_reader() as r:
        st = state.Overlay(r)
        assert st.get_int(state.k_balance(N1.public_key.hex())) == 0
        total = sum(int(codec.decode(v)) for _, v in st.scan(b"bal/", b"bal0"))
    assert total == 0  # money is conserved over all accounts


def test_governance_k_of_n(app: App) -> None:
    """A validator-set change passes only at the 2nd of 2 approvals, then applies at H+1."""
    gov1, gov2 = Signer(GOV1), Signer(GOV2)
    new_set = [[VAL.public_key, 10], [N2.public_key, 5]]
    deadline = T0 + 10 * SLOT
    commit(
        app,
        [gov1("Propose", {"action": "SetValidators", "args": new_set, "deadline_ms": deadline})],
        T0 + SLOT,
    )
    assert [pk for pk, _ in app.validators()] == [VAL.public_key]  # 1 of 2: not yet
    assert (
        outcome(app, signed(GOV1, "Vote", {"proposal_id": 0}, app), T0 + SLOT + 1)
        == "already_voted"
    )
    assert (
        outcome(app, signed(GOV2, "Vote", {"proposal_id": 1}, app), T0 + SLOT + 1)
        == "unknown_proposal"
    )
    assert (
        outcome(app, signed(GOV2, "Vote", {"proposal_id": 0}, app), deadline + 1)
        == "proposal_expired"
    )
    commit(app, [gov2("Vote", {"proposal_id": 0})], T0 + SLOT + 1)
    assert sorted(app.validators()) == sorted((bytes(k), p) for k, p in new_set)
    assert outcome(app, signed(GOV2, "Vote", {"proposal_id": 0}, app), T0 + SLOT + 2) == "bad_value"


def test_governance_changes_started_period_prices(app: App) -> None:
    """The admin alone cannot reprice a running period; governance can."""
    new = period(
        "p",
        T0,
        T0 + 4 * SLOT,
        {"p_buy_bau": "22", "p_sell_bau": "6", "p_buy_lem": "16", "p_sell_lem": "9"},
    )
    assert (
        outcome(app, signed(ADMIN, "SetMarketParameters", new, app), T0 + SLOT) == "period_started"
    )
    gov1, gov2 = Signer(GOV1), Signer(GOV2)
    body = {"action": "SetMarketParameters", "args": new, "deadline_ms": T0 + 9 * SLOT}
    commit(app, [gov1("Propose", body), gov2("Vote", {"proposal_id": 0})], T0 + SLOT)
    with app.store.state_reader() as r:
        assert state.Overlay(r).get_value(state.k_period("p"))["params"]["p_buy_bau"] == "22"


def test_governance_changes_admins(app: App) -> None:
    """SetAdmins through governance replaces the admin key set."""
    gov1, gov2 = Signer(GOV1), Signer(GOV2)
    body = {"action": "SetAdmins", "args": [N2.public_key], "deadline_ms": T0 + 9 * SLOT}
    commit(app, [gov1("Propose", body), gov2("Vote", {"proposal_id": 0})], T0 + SLOT)
    assert (
        outcome(
            app,
            signed(ADMIN, "AddMeter", {"meter_id": "X", "account": N1.public_key}, app),
            T0 + SLOT + 1,
        )
        == "not_permitted"
    )
    assert (
        outcome(
            app,
            signed(N2, "AddMeter", {"meter_id": "X", "account": N1.public_key}, app),
            T0 + SLOT + 1,
        )
        == "ok"
    )


def test_evidence_real_votes(app: App) -> None:
    """Two real signed conflicting votes are recorded once; forged or consistent pairs are not."""
    a, b = vote(VAL, 7, 1, b"\x01" * 32), vote(VAL, 7, 1, b"\x02" * 32)
    ev = Signer(VAL)
    forged = bytearray(b)
    forged[-1] ^= 1
    assert (
        outcome(
            app, signed(VAL, "Evidence", {"vote_a": a, "vote_b": bytes(forged)}, app), T0 + SLOT
        )
        == "bad_evidence"
    )
    assert (
        outcome(app, signed(VAL, "Evidence", {"vote_a": a, "vote_b": a}, app), T0 + SLOT)
        == "bad_evidence"
    )
    other_step = vote(VAL, 7, 2, b"\x02" * 32)
    assert (
        outcome(app, signed(VAL, "Evidence", {"vote_a": a, "vote_b": other_step}, app), T0 + SLOT)
        == "bad_evidence"
    )
    commit(app, [ev("Evidence", {"vote_a": a, "vote_b": b})], T0 + SLOT)
    assert (
        outcome(app, signed(VAL, "Evidence", {"vote_a": b, "vote_b": a}, app), T0 + SLOT + 1)
        == "duplicate_evidence"
    )


def test_evidence_without_verifier(tmp_path: Path) -> None:
    """A node without consensus's verifier refuses evidence rather than guessing."""
    application = App(Store(tmp_path, genesis(), durable=False))
    raw = txm.make(
        VAL,
        CHAIN,
        0,
        "Evidence",
        {"vote_a": vote(VAL, 1, 0, b"a" * 32), "vote_b": vote(VAL, 1, 0, b"b" * 32)},
    )
    assert outcome(application, raw, T0) == "evidence_unsupported"


def test_remove_meter_stops_measures_keeps_history(app: App) -> None:
    """After RemoveMeter, new SetMeasure for it is unknown_meter; recorded rows remain."""
    n1, admin = Signer(N1), Signer(ADMIN, app=app)
    commit(app, [n1("SetMeasure", measure("M1", T0, 7, 0))], T0 + SLOT)
    commit(app, [admin("RemoveMeter", {"meter_id": "M1"})], T0 + SLOT + 1)
    assert (
        outcome(app, n1("SetMeasure", measure("M1", T0 + SLOT, 1, 0)), T0 + 2 * SLOT)
        == "unknown_meter"
    )
    with app.store.state_reader() as r:
        assert state.Overlay(r).get_value(state.k_measure(T0, "M1"))[:2] == [7, 0]
