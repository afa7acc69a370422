"""Determinism: the same blocks on fresh stores give identical app hashes, block by block,
for random sequences of valid and invalid txs."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ledger import state
from ledger import tx as txm
from ledger.app import App
from ledger.errors import TxRejected
from ledger.execute import execute_tx
from ledger.genesis import Period
from ledger.registry import Context
from ledger.store import Store
from tests.unit.ledger.helpers import (
    ADMIN,
    CHAIN,
    N1,
    N2,
    OUTSIDER,
    PARAMS,
    SLOT,
    T0,
    VAL,
    genesis,
    measure,
    period,
)

KEYS = [ADMIN, N1, N2, OUTSIDER]
OWNERS = {"M1": N1, "M2": N2, "M3": OUTSIDER}  # M3 is not on the allowed list
G = genesis(
    meters={"M1": N1.public_key, "M2": N2.public_key},
    periods=(Period("p", T0, T0 + 2 * SLOT, PARAMS),),
)

# Mostly well-formed ops from the right signer, with a share of wrong signers, wrong sequences,
# unaligned or future slots, overdrafts and garbage bytes.
signer = st.sampled_from(KEYS)
meter = st.sampled_from(sorted(OWNERS))
op = st.one_of(
    st.tuples(
        st.just("measure"),
        meter.flatmap(lambda m: st.sampled_from([OWNERS[m]] * 3 + KEYS)),
        meter,
        st.integers(0, 5),
        st.integers(0, 3000),
        st.integers(0, 3000),
    ),
    st.tuples(st.just("solve"), signer, st.sampled_from(["p", "q"])),
    st.tuples(
        st.just("period"), st.sampled_from([ADMIN, ADMIN, N1]), st.just("q"), st.integers(2, 9)
    ),
    st.tuples(st.just("transfer"), signer, signer, st.integers(-5, 20_000_000)),
    st.tuples(st.just("garbage"), st.binary(max_size=40)),
    st.tuples(st.just("seq"), signer, st.integers(1, 3)),
)


def _tx(ctx: Context, o: tuple[object, ...]) -> bytes | None:
    """The tx of one op, signed with the signer's next sequence in the block being built (as a
    client that saw the earlier txs land would), run on ``ctx`` to advance that state."""
    kind = o[0]
    if kind == "garbage":
        return o[1]  # type: ignore[return-value]  # never executes
    key = o[1]
    pk = key.public_key  # type: ignore[attr-defined]
    seq = ctx.state.get_int(state.k_seq(pk))
    if kind == "measure":
        _, _, meter, slot, imp, exp = o
        body, name = measure(meter, T0 + slot * SLOT, imp, exp), "SetMeasure"  # type: ignore[operator, arg-type]
    elif kind == "solve":
        body, name = {"period_id": o[2]}, "SolveMarkets"
    elif kind == "period":
        start = T0 + o[3] * SLOT  # type: ignore[operator]
        body, name = period(o[2], start, start + 2 * SLOT), "SetMarketParameters"  # type: ignore[arg-type]
    elif kind == "transfer":
        body, name = {"to": o[2].public_key, "amount_uect": o[3]}, "Transfer"  # type: ignore[attr-defined]
    else:  # a deliberately wrong sequence
        seq += o[2]  # type: ignore[operator]
        body, name = {"period_id": "p"}, "SolveMarkets"
    try:
        raw = txm.make(key, CHAIN, seq, name, body)  # type: ignore[arg-type]
    except TxRejected:
        return None  # a body the builder refuses (e.g. negative amount) is never sent
    with contextlib.suppress(TxRejected):
        execute_tx(ctx, raw)
    return raw


def _run(path: Path, ops_per_block: list[list[tuple[object, ...]]]) -> tuple[list[bytes], int]:
    """Proposer role: build each block from its candidates; returns the blocks and how many
    candidate txs executed."""
    app = App(Store(path, G, durable=False))
    made, executed = [], 0
    for i, ops in enumerate(ops_per_block):
        time_ms = T0 + (i + 3) * SLOT + 1
        with app.store.state_reader() as base:
            ctx = Context(state.Overlay(base), CHAIN, app.height + 1, time_ms)
            candidates = [t for t in (_tx(ctx, o) for o in ops) if t is not None]
        prepared = app.prepare(
            app.height + 1, T0 + (i + 3) * SLOT + 1, VAL.public_key, candidates, None
        )
        executed += len(candidates) - len(prepared.dropped)
        app.commit_block(prepared.block_bytes, [i])
        made.append(prepared.block_bytes)
    app.store.close()
    return made, executed


def _replay(path: Path, made: list[bytes]) -> tuple[list[bytes], dict[bytes, bytes]]:
    app = App(Store(path, G, durable=False))
    hashes = [app.commit_block(raw, [i]) for i, raw in enumerate(made)]
    with app.store.state_reader() as r:
        items = dict(r.scan(b"", b"\xff"))
    app.store.close()
    return hashes, items


@given(st.lists(st.lists(op, min_size=2, max_size=8), min_size=1, max_size=6))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_same_blocks_same_app_hashes(ops_per_block: list[list[tuple[object, ...]]]) -> None:
    """Two fresh stores fed the same blocks agree on every app hash and every state byte, and
    money is conserved."""
    with tempfile.TemporaryDirectory() as tmp:
        made, executed = _run(Path(tmp) / "proposer", ops_per_block)
        h1, s1 = _replay(Path(tmp) / "a", made)
        h2, s2 = _replay(Path(tmp) / "b", made)
    assert h1 == h2
    assert s1 == s2
    o = state.Overlay(state.MemoryState(s1))
    balances = [o.get_int(k) for k in s1 if k.startswith(b"bal/")]
    assert sum(balances) == 0
    event(f"txs executed: {'0' if not executed else '1-4' if executed < 5 else '5+'}")


def test_genesis_hashes_are_pinned(tmp_path: Path) -> None:
    """Genesis hash and genesis app hash are pinned: any change to the canonical genesis form,
    the state key layout or the Merkle scheme is a chain-breaking change and shows here."""
    app = App(Store(tmp_path, G, durable=False))
    assert G.hash.hex() == "c840919bab64a6489577aaf19066d5cd35f9a97a7be499d9fec625ff2951c715"
    assert app.app_hash.hex() == "771e48cb0db2df83122bf8ba9cd502e9bd1e6d20afa17dfd25c93ddc86999302"
