"""edge/light_api.py routes without a network: the read bounds and the 503/504 answers.

The reader is the real ProvenReader over the proof-answering stand-in of
tests/unit/ledger/test_light_reader.py (real Merkle proofs from a real App); the whole light
lemd over mosquitto is walked by tests/integration/test_privacy_light.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge.cli.main import main as lemctl
from edge.health import Health
from edge.http import Request, Response, serve
from edge.light_api import MAX_RANGE_SLOTS, LightParts, build_light_router
from edge.light_submitter import LightSubmitter
from edge.outbox import Outbox
from ledger.app import App
from ledger.genesis import Genesis
from ledger.light_reader import ProvenReader
from tests.support.mosquitto import free_port
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
from tests.unit.ledger.test_light_reader import Node


@pytest.fixture
def app(tmp_path: Path) -> App:
    a = open_app(tmp_path, genesis(meters={"M1": N1.public_key}))
    commit(a, [Signer(ADMIN)("SetMarketParameters", period("p", T0, T0 + SLOT))], T0)
    commit(a, [Signer(N1)("SetMeasure", measure("M1", T0, 2500, 0))], T0 + SLOT)
    return a


def _router(node: Node, g: Genesis) -> Any:
    parts = LightParts(
        config=SimpleNamespace(),
        key=N1,
        genesis=g,
        reader=ProvenReader(node, wait_s=0.05, stale_wait_s=0.01),  # type: ignore[arg-type]
        submitter=SimpleNamespace(inflight={}),  # type: ignore[arg-type]
        outbox=SimpleNamespace(),  # type: ignore[arg-type]
        metrics=SimpleNamespace(),  # type: ignore[arg-type]
        status=dict,
        meter_id="M1",
    )
    return build_light_router(parts)


async def _get(router: Any, path: str, **query: str) -> tuple[Response, Any]:
    response = await router.dispatch(Request("GET", path, query, {}, b""))
    return response, json.loads(response.body)


async def test_own_measurements_are_read_and_another_meter_is_refused_locally(app: App) -> None:
    """/measure of the node's meter answers its proven row; another meter id is 403 before
    any query about it leaves the node (the only keys asked are this node's own)."""
    node = Node(app)
    router = _router(node, app.store.genesis)
    response, body = await _get(router, "/measure", meter="M1", slot=str(T0))
    assert response.status == 200
    assert body["slots"] == [{"slot_start_ms": T0, "import_wh": 2500, "export_wh": 0, "quality": 0}]
    assert body["proof"]["headers"] == [app.height + 1]
    response, _ = await _get(router, "/measure", meter="M2", slot=str(T0))
    assert response.status == 403
    assert all(b"M2" not in key for batch in node.asked for key in batch)


async def test_a_range_over_the_bound_is_400(app: App) -> None:
    """More than MAX_RANGE_SLOTS slots is refused with the bound named (each is one proof)."""
    router = _router(Node(app), app.store.genesis)
    end = T0 + (MAX_RANGE_SLOTS + 1) * SLOT
    response, body = await _get(router, "/totals", **{"from": str(T0), "to": str(end)})
    assert response.status == 400
    assert str(MAX_RANGE_SLOTS) in body["error"]


async def test_no_answer_is_504_and_an_unverifiable_one_503(app: App) -> None:
    """A silent validator: 504 with a JSON error; an answer whose header is not verified yet:
    503 naming the header, with Retry-After."""
    router = _router(Node(app, silent=True), app.store.genesis)
    response, body = await _get(router, "/params", period="p")
    assert response.status == 504
    assert "no validator answered" in body["error"]
    router = _router(Node(app, known=app.height), app.store.genesis)
    response, body = await _get(router, "/params", period="p")
    assert response.status == 503
    assert body["waiting_for_header"] == app.height + 1
    assert response.headers["Retry-After"]


async def _post(router: Any, path: str, body: Any) -> tuple[Response, Any]:
    response = await router.dispatch(Request("POST", path, {}, {}, json.dumps(body).encode()))
    return response, json.loads(response.body)


async def test_writes_are_stored_before_the_202_and_shown_by_lemctl_outbox(
    app: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """POST /measure is a synced outbox record (bad values 400, another meter 403, other
    values for a held slot 409); POST /solve lands in the durable tx queue; ``GET /outbox``
    and ``lemctl outbox`` list the queued tx and one set aside with its reason."""
    node = Node(app)
    node.chain_id = app.chain_id  # type: ignore[attr-defined]
    box = Outbox(tmp_path / "outbox")
    submitter = LightSubmitter(box, node, N1, Health())  # type: ignore[arg-type]
    parts = LightParts(
        config=SimpleNamespace(), key=N1, genesis=app.store.genesis,
        reader=ProvenReader(node, wait_s=0.05, stale_wait_s=0.01),  # type: ignore[arg-type]
        submitter=submitter, outbox=box, metrics=SimpleNamespace(),  # type: ignore[arg-type]
        status=dict, meter_id=lambda: "M1",
    )  # fmt: skip
    router = build_light_router(parts)
    row = {"meter_id": "M1", "slot_start_ms": T0 + SLOT, "import_wh": 10, "export_wh": 0}
    response, body = await _post(router, "/measure", {**row, "quality": 1})
    assert (response.status, body["queued"]) == (202, "outbox")
    [record] = box.pending()
    assert (record.slot_start_s, record.import_wh, record.quality) == (
        (T0 + SLOT) // 1000, 10, ("complete",),
    )  # fmt: skip
    for bad, status in (
        ({**row, "import_wh": 11}, 409),
        ({**row, "slot_start_ms": T0 + 1}, 400),
        ({**row, "export_wh": -1}, 400),
        ({**row, "meter_id": "M2"}, 403),
    ):
        response, body = await _post(router, "/measure", bad)
        assert response.status == status, body
    response, body = await _post(router, "/solve", {"period_id": "p"})
    assert response.status == 202
    assert [i["kind"] for i in submitter.queued()] == ["SolveMarkets"]
    submitter._drop(body["queued"], "not committed after 5 re-sign rounds: refused")
    submitter.queue_tx("SolveMarkets", {"period_id": "q"})
    response, got = await _get(router, "/outbox")
    assert [t["body"] for t in got["queued_txs"]] == [{"period_id": "q"}]
    assert "tx_hash" not in got["queued_txs"][0]  # not signed yet
    submitter._update(got["queued_txs"][0]["id"], tx=b"\x07" * 32, seq=5)
    response, got = await _get(router, "/outbox")
    signed = got["queued_txs"][0]
    assert (signed["tx_hash"], signed["sequence"]) == ("07" * 32, 5)  # for ledger prove --key tx
    assert got["rejected_txs"][0]["reason"].endswith("refused")
    listen = f"127.0.0.1:{free_port()}"
    server = await serve(router, listen)
    config = tmp_path / "lemd.toml"
    config.write_text(f'[node]\nname = "n1"\ndata_dir = "{tmp_path}"\n[api]\nlisten = "{listen}"\n')
    try:
        code = await asyncio.to_thread(lemctl, ["--config", str(config), "outbox"])
    finally:
        server.close()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "txs waiting:" in out
    assert "SolveMarkets-1" in out
    assert "txs never included (kept):" in out
    assert "SolveMarkets-0" in out
    box.close()
