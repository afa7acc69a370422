"""ledger/proofs.py on a real App (LMDB): who gets an answer, what is proven, what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import block as blk
from ledger import codec, state
from ledger.app import App
from ledger.apps import join as join_app
from ledger.consensus.messages import Commit
from ledger.keys import SigningKey
from ledger.proofs import (
    MAX_QUERIES,
    ProofError,
    ProofResponse,
    ProofService,
    make_headers_request,
    make_proof_request,
    own_prefix,
    parse_response,
    verify_key_answer,
    verify_list_answer,
)
from ledger.transport.base import Message
from tests.unit.ledger.helpers import (
    ADMIN,
    CHAIN,
    N1,
    N2,
    SLOT,
    T0,
    VAL,
    Signer,
    commit,
    genesis,
    key,
    measure,
    open_app,
    period,
)

NOW = 1_800_000_000_000


@pytest.fixture
def app(tmp_path: Path) -> App:
    a = open_app(tmp_path, genesis(meters={"M1": N1.public_key, "M2": N2.public_key}))
    commit(a, [Signer(ADMIN)("SetMarketParameters", period("p", T0, T0 + SLOT))], T0)
    commit(
        a,
        [
            Signer(N1)("SetMeasure", measure("M1", T0, 2500, 0)),
            Signer(N2)("SetMeasure", measure("M2", T0, 0, 1400)),
        ],
        T0 + SLOT,
    )
    return a


class Sent(list[tuple[str, bytes, str | None]]):
    def __call__(self, channel: str, payload: bytes, to: str | None) -> None:
        self.append((channel, payload, to))


def _service(app: App, key: SigningKey = VAL) -> tuple[ProofService, Sent]:
    sent = Sent()
    return ProofService(app, key, sent, now_ms=lambda: NOW), sent


def _ask(
    service: ProofService, key: SigningKey, nonce: int, keys: list[bytes], **kw: object
) -> None:
    reply_to = str(kw.get("reply_to", "m1"))
    target = kw.get("target", VAL.public_key)
    assert isinstance(target, bytes)
    queries = [("key", k) for k in keys]
    payload = make_proof_request(key, CHAIN, reply_to, nonce, queries, target)
    service.handle(Message("proof_req", str(kw.get("sender", "m1")), payload))


def test_own_keys_are_proven_against_the_app_hash_others_denied(app: App) -> None:
    """N1 gets its measurement with a proof that leads to the store's app hash; N2's
    measurement is 'denied' in the same answer; the answer goes to the sender only."""
    service, sent = _service(app)
    own, other = state.k_measure(T0, "M1"), state.k_measure(T0, "M2")
    _ask(service, N1, NOW, [own, other])
    ((channel, payload, to),) = sent
    answer = parse_response(payload)
    assert isinstance(answer, ProofResponse)
    assert (channel, to, answer.height) == ("proof_resp", "m1", app.height)
    value = verify_key_answer(answer.answers[0], app.app_hash)
    assert codec.decode(value)[:2] == [2500, 0]
    assert answer.answers[1].status == "denied"


@pytest.mark.parametrize(
    ("nonce", "kw", "reason"),
    [
        (NOW - 400_000, {}, "request_refused_ValueError"),  # outside the ±300 s window
        (NOW, {"reply_to": "m2"}, "request_refused_ValueError"),  # answer to another node
    ],
)
def test_stale_nonces_and_foreign_reply_addresses_are_refused(
    app: App, nonce: int, kw: dict[str, object], reason: str
) -> None:
    """A request older than the window, or one asking for the answer to go elsewhere than its
    sender, gets no answer and is counted."""
    service, sent = _service(app)
    _ask(service, N1, nonce, [state.k_balance(state.COMMUNITY)], **kw)
    assert sent == []
    assert service.stats[reason] == 1


def test_a_replayed_request_is_answered_once(app: App) -> None:
    """The same signed request twice: one answer; a later nonce is answered again."""
    service, sent = _service(app)
    for nonce in (NOW, NOW, NOW + 1):
        _ask(service, N1, nonce, [state.k_balance(state.COMMUNITY)])
    assert len(sent) == 2


def test_a_request_for_another_validator_or_from_a_non_validator_is_ignored(app: App) -> None:
    """A request naming another validator's key is left to that one; a node whose key is not
    in the set answers nothing."""
    service, sent = _service(app)
    _ask(service, N1, NOW, [state.k_balance(state.COMMUNITY)], target=N2.public_key)
    member, member_sent = _service(app, key=N2)
    _ask(member, N1, NOW, [state.k_balance(state.COMMUNITY)], target=N2.public_key)
    member.handle(Message("proof_req", "m1", make_headers_request(CHAIN, 1, NOW)))
    assert sent == []
    assert member_sent == []


def test_a_broadcast_request_is_answered_by_the_validator_the_nonce_picks(app: App) -> None:
    """With one validator, an untargeted (broadcast) request is always its own to answer."""
    service, sent = _service(app)
    _ask(service, N1, NOW, [state.k_balance(state.COMMUNITY)], target=b"")
    assert len(sent) == 1


def _own(account: SigningKey, meter: str) -> bytes:
    return state.k_owned(account.public_key, meter)


def _rotate(service: ProofService, app: App) -> None:
    """What the node does after each commit (the header feed part is not under test here)."""
    raw = app.block(app.height)
    assert raw is not None
    service.on_commit(raw, Commit(app.height, 0, blk.decode(raw).hash, ()))


def test_proofs_come_from_the_state_before_the_newest_block(app: App) -> None:
    """After two commits, a key is proven in the state after the previous block (the app hash
    the newest header carries), so a member can check it at once; a value written by the
    newest block is not visible yet."""
    service, sent = _service(app)
    _rotate(service, app)  # state after block 2 pinned (not yet served)
    later = Signer(N1, app=app)("SetMeasure", measure("M1", T0 + SLOT, 100, 0))
    commit(app, [later], T0 + 2 * SLOT)
    _rotate(service, app)  # serves the state after block 2
    new_key = state.k_measure(T0 + SLOT, "M1")
    _ask(service, N1, NOW, [state.k_measure(T0, "M1"), new_key])
    (_, payload, _), *_ = [s for s in sent if s[0] == "proof_resp"]
    answer = parse_response(payload)
    assert isinstance(answer, ProofResponse)
    assert answer.height == app.height - 1
    previous_app_hash = app.store.app_hash_at(app.height - 1)
    assert previous_app_hash is not None
    assert previous_app_hash != app.app_hash
    value = verify_key_answer(answer.answers[0], previous_app_hash)
    assert codec.decode(value)[:2] == [2500, 0]
    assert answer.answers[1].status == "absent"
    with pytest.raises(ProofError):
        verify_key_answer(answer.answers[0], app.app_hash)


def test_a_member_lists_periods_and_its_own_meters_and_nothing_else(app: App) -> None:
    """``list`` answers period/ and the requester's own/ keys; meas/ or another member's own/
    prefix are denied, so a listing never names another member's rows."""
    service, sent = _service(app)
    prefixes = [b"period/", own_prefix(N1.public_key), b"meas/", own_prefix(N2.public_key)]
    payload = make_proof_request(
        N1, CHAIN, "m1", NOW, [("list", p) for p in prefixes], VAL.public_key
    )
    service.handle(Message("proof_req", "m1", payload))
    answer = parse_response(sent[-1][1])
    assert isinstance(answer, ProofResponse)
    periods, own, meas, other = answer.answers
    assert verify_list_answer(periods) == ([state.k_period("p")], False)
    assert verify_list_answer(own) == ([_own(N1, "M1")], False)
    assert (meas.status, other.status) == ("denied", "denied")


def test_own_meter_rows_are_proven_to_their_owner_only(app: App) -> None:
    """own/<N1>/M1 is proven to N1 (it says only what N1 knows); own/<N2>/M2 is denied to N1."""
    service, sent = _service(app)
    _ask(service, N1, NOW, [_own(N1, "M1"), _own(N2, "M2")])
    answer = parse_response(sent[-1][1])
    assert isinstance(answer, ProofResponse)
    verify_key_answer(answer.answers[0], app.app_hash)
    assert answer.answers[1].status == "denied"


def test_a_day_of_keys_is_one_request_and_more_is_refused(app: App) -> None:
    """96 keys (a day of slots) go in one request and get 96 answers; 97 cannot be made."""
    service, sent = _service(app)
    day = [state.k_measure(T0 + i * SLOT, "M1") for i in range(MAX_QUERIES)]
    _ask(service, N1, NOW, day)
    answer = parse_response(sent[-1][1])
    assert isinstance(answer, ProofResponse)
    assert len(answer.answers) == 96
    # A slot without a row is "denied" to a prosumer, exactly like another member's row.
    assert [a.status for a in answer.answers[:2]] == ["ok", "denied"]
    with pytest.raises(ProofError):
        make_proof_request(N1, CHAIN, "m1", NOW, [("key", k) for k in [*day, day[0]]])


def test_an_unadmitted_key_gets_its_own_join_record_proven_and_not_anothers(app: App) -> None:
    """A key with no role yet (a light node joining by itself) gets its waiting JoinRequest
    and its sequence proven against the app hash; another joining key's request and sequence
    in the same answer are 'denied'."""
    joining, other = key(41), key(42)
    body = {"meter_id": "M9", "identification": "ISK5", "name": "n9"}
    commit(
        app,
        [
            Signer(joining)("JoinRequest", body),
            Signer(other)("JoinRequest", {**body, "meter_id": "M8"}),
        ],
        T0 + 2 * SLOT,
    )
    service, sent = _service(app)
    me, them = joining.public_key, other.public_key
    asked = [join_app.k_request(me), state.k_seq(me), join_app.k_request(them), state.k_seq(them)]
    _ask(service, joining, NOW, asked)
    answer = parse_response(sent[-1][1])
    assert isinstance(answer, ProofResponse)
    own_request, own_seq, *foreign = answer.answers
    assert codec.decode(verify_key_answer(own_request, app.app_hash))["meter_id"] == "M9"
    assert codec.decode(verify_key_answer(own_seq, app.app_hash)) == 1
    assert [a.status for a in foreign] == ["denied", "denied"]
