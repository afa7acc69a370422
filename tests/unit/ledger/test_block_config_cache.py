"""Block execution decodes cfg/ records once per block, yet a tx that changes them is seen by
the txs after it in the same block (docs/spec/consensus.md §11)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ledger import block as blk
from ledger.app import App
from ledger.errors import BlockInvalid
from ledger.store import Store
from tests.unit.ledger.helpers import (
    ADMIN,
    GOV1,
    GOV2,
    N1,
    N2,
    SLOT,
    T0,
    VAL,
    Signer,
    genesis,
)


def _app(tmp_path: Path) -> App:
    return App(Store(tmp_path, genesis(), durable=False))


def test_admin_change_inside_a_block_applies_to_the_next_txs(tmp_path: Path) -> None:
    """An AddMeter by the old admin passes before a SetAdmins in the same block and fails
    after it; the new admin's passes; a fresh validation of the block agrees."""
    app = _app(tmp_path)
    admin, n2 = Signer(ADMIN, app=app), Signer(N2, app=app)
    gov1, gov2 = Signer(GOV1, app=app), Signer(GOV2, app=app)
    body = {"action": "SetAdmins", "args": [N2.public_key], "deadline_ms": T0 + 9 * SLOT}
    before = admin("AddMeter", {"meter_id": "A", "account": N1.public_key})
    txs = [
        before,
        gov1("Propose", body),
        gov2("Vote", {"proposal_id": 0}),
        admin("AddMeter", {"meter_id": "B", "account": N1.public_key}),
        n2("AddMeter", {"meter_id": "C", "account": N1.public_key}),
    ]
    prepared = app.prepare(1, T0 + SLOT, VAL.public_key, txs, None)
    assert [raw for raw, _ in prepared.dropped] == [txs[3]]
    assert prepared.dropped[0][1].reason.value == "not_permitted"
    kept = [t for t in txs if t != txs[3]]
    assert list(app.decode_block(prepared.block_bytes).txs) == kept
    fresh = _app(tmp_path / "fresh")
    fresh.validate_block(prepared.block_bytes)  # another node executes the same block alike
    assert fresh.commit_block(prepared.block_bytes, None) == app.commit_block(
        prepared.block_bytes, None
    )


def test_block_with_a_tx_the_admin_change_forbids_is_invalid(tmp_path: Path) -> None:
    """A proposal that keeps the old admin's tx after a SetAdmins in the same block (the old
    admin list already read and decoded for an earlier tx) is refused by validation."""
    app = _app(tmp_path)
    admin, gov1, gov2 = Signer(ADMIN, app=app), Signer(GOV1, app=app), Signer(GOV2, app=app)
    body = {"action": "SetAdmins", "args": [N2.public_key], "deadline_ms": T0 + 9 * SLOT}
    txs = [
        admin("AddMeter", {"meter_id": "A", "account": N1.public_key}),
        gov1("Propose", body),
        gov2("Vote", {"proposal_id": 0}),
    ]
    honest = app.decode_block(app.prepare(1, T0 + SLOT, VAL.public_key, txs, None).block_bytes)
    txs.append(admin("AddMeter", {"meter_id": "B", "account": N1.public_key}))
    header = dataclasses.replace(honest.header, txs_hash=blk.txs_hash(txs))
    forged = blk.Block(header, tuple(txs), None).encode()
    with pytest.raises(BlockInvalid, match="tx 3:"):
        _app(tmp_path / "fresh").validate_block(forged)
