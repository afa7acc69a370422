"""Block execution reuses the stateless checks of admitted txs only for their exact bytes
(docs/spec/consensus.md §11); everything else is checked in full."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ledger import app as app_module
from ledger import block as blk
from ledger.app import App
from ledger.errors import BlockInvalid
from ledger.store import Store
from tests.unit.ledger.helpers import ADMIN, N1, SLOT, T0, VAL, Signer, genesis


def _app(tmp_path: Path) -> App:
    return App(Store(tmp_path, genesis(), durable=False))


def _block_of(app: App, txs: list[bytes]) -> bytes:
    """A block at height 1 holding exactly ``txs`` (built around the proposer's filter)."""
    honest = app.decode_block(app.prepare(1, T0 + SLOT, VAL.public_key, [], None).block_bytes)
    header = dataclasses.replace(honest.header, txs_hash=blk.txs_hash(txs))
    return blk.Block(header, tuple(txs), None).encode()


def test_admitted_tx_is_reused_but_a_forged_copy_is_checked(tmp_path: Path) -> None:
    """After admitting a tx, a block holding it validates; the same tx with a flipped
    signature bit is refused as bad_signature, and the commit empties the cache."""
    app = _app(tmp_path)
    raw = Signer(ADMIN)("AddMeter", {"meter_id": "A", "account": N1.public_key})
    app.check_tx(raw)
    assert raw in app._authenticated
    forged = bytearray(raw)
    forged[-1] ^= 1
    with pytest.raises(BlockInvalid, match="signature"):
        app.validate_block(_block_of(app, [bytes(forged)]))
    good = _block_of(app, [raw])
    app.validate_block(good)
    app.commit_block(good, None)
    assert app._authenticated == {}


def test_cache_is_bounded_and_drops_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its bound the cache forgets the oldest admitted tx first."""
    monkeypatch.setattr(app_module, "_AUTHENTICATED_TXS", 2)
    app = _app(tmp_path)
    signer = Signer(ADMIN)
    raws = [signer("AddMeter", {"meter_id": f"M{i}", "account": N1.public_key}) for i in range(3)]
    with app.admission() as batch:
        for seq, raw in enumerate(raws):
            batch.admit(raw, seq)
    assert list(app._authenticated) == raws[1:]
