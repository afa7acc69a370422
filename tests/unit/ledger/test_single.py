"""Single-validator mode end to end: submit → mempool → block → state → query, on real LMDB."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from ledger import codec
from ledger import tx as txm
from ledger.access import Queries
from ledger.block import decode
from ledger.errors import LedgerError, TxRejected
from ledger.single import SingleNode, verify_single_commit
from ledger.verify import verify_store
from tests.unit.ledger.helpers import (
    ADMIN,
    CHAIN,
    N1,
    N2,
    SLOT,
    T0,
    VAL,
    Signer,
    genesis,
    measure,
    open_app,
    period,
)


class FakeClock:
    """Wall clock under test control [ms]."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


async def test_submit_to_query(tmp_path: Path) -> None:
    """Algorithm 1 submitted to a running single node settles, and each commit is signed."""
    app = open_app(tmp_path, durable=True)
    clock = FakeClock(T0)
    node = SingleNode(app, VAL, heartbeat_s=3600, batch_delay_s=0.001, clock_ms=clock)
    runner = asyncio.create_task(node.run())
    admin, n1, n2 = Signer(ADMIN), Signer(N1), Signer(N2)

    async def settle(*raws: bytes) -> None:
        height = app.height
        for raw in raws:
            node.submit(raw)
        while app.height == height or len(node.mempool):  # noqa: ASYNC110 -- polls node state
            await asyncio.sleep(0.005)

    await settle(
        admin("SetMarketParameters", period("p", T0, T0 + SLOT)),
        admin("AddMeter", {"meter_id": "M1", "account": N1.public_key}),
        admin("AddMeter", {"meter_id": "M2", "account": N2.public_key}),
    )
    clock.now_ms = T0 + SLOT
    await settle(
        n1("SetMeasure", measure("M1", T0, 2500, 0)), n2("SetMeasure", measure("M2", T0, 0, 1400))
    )
    clock.now_ms = T0 + SLOT + 60_000
    await settle(admin("SolveMarkets", {"period_id": "p"}))
    runner.cancel()
    q = Queries(app.store)
    assert q.balance(N1.public_key, N1.public_key.hex()) == -45_500_000
    for h in range(1, app.height + 1):
        b = decode(app.block(h) or b"")
        verify_single_commit(CHAIN, app.commit(h), VAL.public_key)
        assert app.commit(h)[1] == b.hash
    with pytest.raises(TxRejected):
        node.submit(b"junk")
    assert verify_store(app.store).ok


async def test_heartbeat_and_waiting_txs(tmp_path: Path) -> None:
    """With nothing to do the node makes heartbeat blocks only; a tx waiting for its slot to end
    does not make it spin, and lands in the first block after the slot ended."""
    app = open_app(tmp_path, genesis(meters={"M1": N1.public_key}))
    clock = FakeClock(T0)
    node = SingleNode(app, VAL, heartbeat_s=0.05, batch_delay_s=0.001, clock_ms=clock)
    runner = asyncio.create_task(node.run())
    node.submit(Signer(N1)("SetMeasure", measure("M1", T0, 5, 0)))
    await asyncio.sleep(0.3)
    heights = app.height
    assert 1 <= heights <= 12  # heartbeats (~every 50 ms), not one block per loop turn
    assert len(node.mempool) == 1
    clock.now_ms = T0 + SLOT
    while len(node.mempool):  # noqa: ASYNC110 -- polls node state
        await asyncio.sleep(0.01)
    runner.cancel()
    with app.store.state_reader() as r:
        assert codec.decode(r.get(b"tot/" + f"{T0:013d}".encode()) or b"") == [5, 0, 1]


async def test_the_commit_thread_leaves_the_tx_caches_to_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block is written in a worker thread; the tx caches admission also uses (decoded,
    verified, authenticated envelopes) are released on the event loop's thread, so a
    concurrent admission never sees them change under it."""
    app = open_app(tmp_path)
    node = SingleNode(app, VAL, heartbeat_s=3600, batch_delay_s=0.001, clock_ms=lambda: T0)
    threads: dict[str, int] = {}
    store_block, forget = app.store_block, txm.forget

    def recording_store_block(block_bytes: bytes, commit: codec.Value) -> bytes:
        threads["store"] = threading.get_ident()
        return store_block(block_bytes, commit)

    def recording_forget(raws: Iterable[bytes]) -> None:
        threads["forget"] = threading.get_ident()
        forget(raws)

    monkeypatch.setattr(app, "store_block", recording_store_block)
    monkeypatch.setattr(txm, "forget", recording_forget)
    raw = Signer(ADMIN)("AddMeter", {"meter_id": "M1", "account": N1.public_key})
    node.submit(raw)
    assert raw in app._authenticated
    await node.make_block()
    assert app.height == 1
    assert threads["store"] != threading.get_ident()
    assert threads["forget"] == threading.get_ident()
    assert raw not in app._authenticated


def test_refuses_other_validator_sets(tmp_path: Path) -> None:
    """Single mode needs the node's key as the only validator."""
    app = open_app(tmp_path)
    with pytest.raises(LedgerError, match="only validator"):
        SingleNode(app, ADMIN)
