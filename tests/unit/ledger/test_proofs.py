"""ledger/proofs.py on a real App (LMDB): who gets an answer, what is proven, what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import codec, state
from ledger.app import App
from ledger.keys import SigningKey
from ledger.proofs import (
    ProofResponse,
    ProofService,
    make_headers_request,
    make_proof_request,
    parse_response,
    verify_key_answer,
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
