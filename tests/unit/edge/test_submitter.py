"""The outbox submitter and tx signer: sequence numbers, commit detection, refusals, resets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.clock import DaemonClock
from edge.config import load_config
from edge.health import Health
from edge.ledger_node import SingleLedger
from edge.metrics import Metrics
from edge.node_factory import open_ledger
from edge.outbox import Outbox, OutboxRecord
from edge.submitter import Submitter, TxSigner, measure_body, tx_ref
from ledger import tx as txm
from ledger.keys import SigningKey
from tests.support.lemd import SIM_START, make_node

T0_S = int(SIM_START.timestamp())


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    node: SingleLedger
    outbox: Outbox
    signer: TxSigner
    submitter: Submitter
    time: FakeTime
    key: SigningKey


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    nd = make_node(tmp_path / "n1", speed=1.0)
    config = load_config(nd.config)
    clock = DaemonClock(1.0, SIM_START.replace(day=22))  # a day after the slots below
    node, _, closers = await open_ledger(config, nd.key, clock, Health())
    assert isinstance(node, SingleLedger)
    outbox = Outbox(tmp_path / "outbox")
    fake = FakeTime()
    signer = TxSigner(nd.key, node, Metrics(), resign_timeout_s=30, monotonic=fake)
    submitter = Submitter(outbox, signer, Health(), max_inflight=4)
    yield Rig(node, outbox, signer, submitter, fake, nd.key)
    outbox.close()
    for close in closers:
        close()


def record(slot: int, imp: int = 100, exp: int = 0, meter: str = "lic-h03") -> OutboxRecord:
    return OutboxRecord(meter, T0_S + 900 * slot, imp, exp, ("complete",), 1)


async def test_records_are_signed_in_sequence_and_leave_only_when_committed(rig: Rig) -> None:
    """Up to max_inflight txs with consecutive sequences; a record leaves the outbox only after
    its measurement is in the committed state."""
    for slot in range(6):
        rig.outbox.put(record(slot, imp=100 + slot))
    rig.submitter.step()
    assert sorted(rig.signer.inflight) == [0, 1, 2, 3]
    assert rig.outbox.depth() == 6
    rig.submitter.step()  # nothing committed yet: nothing new signed, nothing removed
    assert len(rig.node.mempool) == 4
    await rig.node.node.make_block()
    rig.submitter.step()
    assert rig.submitter.committed_records == 4
    assert sorted(rig.signer.inflight) == [4, 5]
    await rig.node.node.make_block()
    rig.submitter.step()
    assert rig.outbox.depth() == 0
    assert rig.signer.committed_sequence() == 6


async def test_a_record_for_a_solved_period_moves_to_rejected(rig: Rig) -> None:
    """SetMeasure into a solved period is refused for good: kept in the rejected table."""
    rig.signer.submit("SolveMarkets", {"period_id": "p0"}, "solve/p0")
    await rig.node.node.make_block()
    rig.outbox.put(record(1))
    rig.submitter.step()
    assert rig.outbox.depth() == 0
    [(kept, reason)] = rig.outbox.rejected()
    assert kept == record(1)
    assert reason.startswith("period_solved")


async def test_a_different_committed_value_is_a_conflict_not_a_commit(rig: Rig) -> None:
    """If the ledger holds another value for the slot, the record is rejected (not dropped)."""
    rig.signer.submit("SetMeasure", measure_body(record(0, imp=5)), "x")
    await rig.node.node.make_block()
    rig.outbox.put(record(0, imp=6))
    rig.submitter.step()
    [(_, reason)] = rig.outbox.rejected()
    assert reason.startswith("measure_conflict")
    assert rig.submitter.committed_records == 0


async def test_an_unknown_meter_is_retried_not_rejected(rig: Rig) -> None:
    """A meter not (yet) on the allowed list keeps its records waiting for the admin."""
    rig.outbox.put(record(0, meter="not-listed"))
    rig.submitter.step()
    rig.submitter.step()
    assert rig.outbox.depth() == 1
    assert rig.outbox.rejected() == []
    assert rig.signer.inflight == {}


async def test_lost_txs_are_re_signed_after_the_timeout_with_identical_bytes(rig: Rig) -> None:
    """Nothing committed within resign_timeout_s: in flight rebuilt from the mempool; txs that
    vanished (lost) are signed again with the same sequence and the same bytes."""
    lossy = Lossy(rig.node)
    rig.signer.node = lossy  # type: ignore[assignment]
    rig.outbox.put(record(0))
    rig.submitter.step()
    first = rig.signer.inflight[0].raw
    assert lossy.lost == [first]
    lossy.down = False
    rig.time.now = 31
    rig.submitter.step()
    assert rig.signer.resets == 1
    assert rig.signer.inflight[0].raw == first
    await rig.node.node.make_block()
    rig.submitter.step()
    assert rig.outbox.depth() == 0


class Lossy:
    """A ledger node behind a link that loses what is submitted while ``down``."""

    def __init__(self, inner: SingleLedger) -> None:
        self.inner, self.app, self.mempool = inner, inner.app, inner.mempool
        self.down = True
        self.lost: list[bytes] = []

    def submit(self, raw: bytes) -> txm.Tx:
        if self.down:
            self.lost.append(raw)
            return txm.decode(raw)
        return self.inner.submit(raw)

    def resend(self, raws: list[bytes]) -> None:
        self.inner.resend(raws)


async def test_reset_keeps_txs_still_pending_locally(rig: Rig) -> None:
    """A reset adopts this key's txs still in the mempool, so nothing is signed twice; without
    progress the next reset waits twice as long."""
    for slot in range(3):
        rig.outbox.put(record(slot))
    rig.submitter.step()
    rig.time.now = 31
    rig.signer.refresh()
    assert rig.signer.resets == 1
    rig.time.now = 31 + 59  # the next reset waits twice as long: 60 s
    rig.signer.refresh()
    assert rig.signer.resets == 1
    rig.time.now = 31 + 61
    rig.signer.refresh()
    assert rig.signer.resets == 2
    assert {f.ref for f in rig.signer.inflight.values()} == {
        tx_ref(txm.decode(raw)) for raw in rig.node.mempool.reap()
    }
    rig.submitter.step()
    assert len(rig.node.mempool) == 3
