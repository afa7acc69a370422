"""ledger/light_reader.py: batching, the per-header cache, pending answers, 503/504 outcomes.

The node here is a stand-in that answers with real Merkle proofs from a real App (LMDB) and
knows a chosen set of headers; the real LightNode + ProofService over mosquitto are walked by
tests/integration/test_privacy_light.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ledger import codec, state
from ledger.app import App
from ledger.light import TrustedHeader
from ledger.light_reader import NotYetProven, ProvenReader, ReadTimeout
from ledger.proofs import MAX_QUERIES, Answer, ProofError, ProofResponse, verify_key_answer
from tests.unit.ledger.helpers import (
    ADMIN,
    N1,
    SLOT,
    T0,
    Signer,
    commit,
    genesis,
    measure,
    open_app,
    period,
)


@dataclass
class Light:
    height: int = 0
    keep_headers: int = 2880


@dataclass
class Node:
    """Answers key (and list) queries from ``app``'s current state at ``app.height``; headers
    above ``known`` are 'not verified yet'."""

    app: App
    light: Light = field(default_factory=Light)
    known: int = 10**9
    silent: bool = False
    asked: list[list[bytes]] = field(default_factory=list)

    async def ask(self, queries: list[tuple[str, bytes]], timeout_s: float) -> ProofResponse:
        if self.silent:
            await asyncio.sleep(timeout_s)
            raise TimeoutError
        self.asked.append([arg for _, arg in queries])
        answers = []
        for kind, key in queries:
            if kind == "list":
                with self.app.store.state_reader() as base:
                    found = [k for k, _ in base.scan(key, state.prefix_end(key))]
                answers.append(Answer("list", key, "ok", [found, False]))
                continue
            proof = self.app.store.prove(key)
            status = "absent" if proof is None else "ok"
            answers.append(Answer("key", key, status, None if proof is None else proof.to_value()))
        return ProofResponse(0, self.app.height, tuple(answers))

    def key_header(self, response: ProofResponse) -> TrustedHeader | None:
        h = response.height + 1
        if h > self.known:
            return None
        return TrustedHeader(h, b"", self.app.app_hash, b"", b"", 0)

    def check(self, answer: Answer, response: ProofResponse) -> Any:
        try:
            return verify_key_answer(answer, self.app.app_hash)
        except ProofError as exc:
            return exc

    async def wait_height(self, height: int, timeout_s: float, *, ask: bool = True) -> None:
        await asyncio.sleep(timeout_s)
        raise TimeoutError


@pytest.fixture
def app(tmp_path: Path) -> App:
    a = open_app(tmp_path, genesis(meters={"M1": N1.public_key}))
    commit(a, [Signer(ADMIN)("SetMarketParameters", period("p", T0, T0 + SLOT))], T0)
    commit(a, [Signer(N1)("SetMeasure", measure("M1", T0, 2500, 0))], T0 + SLOT)
    return a


def _reader(node: Node, **kw: float) -> ProvenReader:
    return ProvenReader(node, wait_s=kw.get("wait_s", 0.05), stale_wait_s=0.01)  # type: ignore[arg-type]


async def test_values_are_proven_and_cached_until_the_next_header(app: App) -> None:
    """A read returns proven values with their header; the same read at the same tip asks
    nothing; after a new header the (non-sticky) value is asked again."""
    node = Node(app)
    reader = _reader(node)
    key = state.k_period("p")
    got = await reader.read([key])
    assert got[key].status == "ok"
    assert got[key].header_height == app.height + 1
    assert codec.decode(got[key].value or b"")["start_ms"] == T0
    await reader.read([key])
    assert node.asked == [[key]]
    node.light.height = app.height + 2
    await reader.read([key])
    assert len(node.asked) == 2


async def test_own_measurements_are_never_asked_twice(app: App) -> None:
    """A proven meas/ row is written once: later reads come from the cache at any tip."""
    node = Node(app)
    reader = _reader(node)
    key = state.k_measure(T0, "M1")
    await reader.read([key])
    node.light.height += 50
    got = await reader.read([key])
    assert node.asked == [[key]]
    assert codec.decode(got[key].value or b"")[:2] == [2500, 0]


async def test_many_keys_go_in_bounded_batches(app: App) -> None:
    """Two days of slots (192 keys) are asked in two requests of MAX_QUERIES."""
    node = Node(app)
    keys = [state.k_measure(T0 + i * SLOT, "M1") for i in range(2 * MAX_QUERIES)]
    # The stand-in answers at once, but 96 real proofs may outlast a 50 ms deadline on a
    # loaded host, which would (rightly) leave the second batch unasked.
    got = await _reader(node, wait_s=10.0).read(keys)
    assert [len(batch) for batch in node.asked] == [MAX_QUERIES, MAX_QUERIES]
    assert [got[k].status for k in keys[:2]] == ["ok", "absent"]


async def test_an_answer_without_its_header_is_a_503_then_served_when_it_comes(
    app: App,
) -> None:
    """Before header H+1 is verified the read raises NotYetProven naming it; once it is, the
    pending answer is taken in without a new request."""
    node = Node(app, known=app.height)
    reader = _reader(node)
    key = state.k_period("p")
    with pytest.raises(NotYetProven) as caught:
        await reader.read([key])
    assert caught.value.header_height == app.height + 1
    node.known = app.height + 1
    got = await reader.read([key])
    assert got[key].status == "ok"
    assert len(node.asked) == 1


async def test_no_answer_is_a_504_and_an_older_proof_is_served_meanwhile(app: App) -> None:
    """A silent validator: ReadTimeout when nothing is known; once a value was proven, a later
    read past a new header serves that older proof (not current) instead of failing."""
    node = Node(app, silent=True)
    reader = _reader(node)
    key = state.k_period("p")
    with pytest.raises(ReadTimeout):
        await reader.read([key])
    node.silent = False
    proven = (await reader.read([key]))[key]
    node.silent = True
    node.light.height = app.height + 5
    again = (await reader.read([key]))[key]
    assert again == proven
    assert again.status == "ok"
    assert 0 < again.header_height < node.light.height
