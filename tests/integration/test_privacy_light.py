"""Seed 000 Fig. 4 on every interface of a *light* prosumer (the default non-validator mode,
docs/spec/light.md §7), in both privacy modes: 4 real validators on mosquitto, the prosumer's
in-process light lemd (real stores, API, MQTT). Its REST reads are answered from Merkle proofs;
the walk checks the values against a validator's store and that nothing of another member (its
measurements, balance, meter or account) reaches any endpoint, lemctl command or log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from edge.cli.main import main as lemctl
from edge.config import load_config
from edge.http import request
from edge.light_daemon import LightDaemon
from edge.privacy import IdentityStore
from edge.sdnotify import Notifier
from ledger import tx as txm
from ledger.access import Queries
from ledger.genesis import Genesis, Period
from tests.integration.test_consensus_mqtt import VALIDATORS, MqttCommunity
from tests.integration.test_privacy_interfaces import (
    OTHER,
    OTHER_WH,
    P_MS,
    SERIAL_OTHER,
    SERIAL_OWN,
    START_MS,
    Captured,
    shows_number,
)
from tests.support.lemd import PARAMS, SLOT_MS, make_node, until
from tests.support.mosquitto import Mosquitto
from tests.unit.ledger.helpers import ADMIN, N1

pytestmark = pytest.mark.slow


def _genesis(mode: str, own_id: str, other_id: str) -> Genesis:
    return Genesis(
        chain_id="lemd-test",
        genesis_time_ms=START_MS - 60_000,
        validators=tuple((k.public_key, 10) for k in VALIDATORS),
        admins=(ADMIN.public_key,),
        governance_keys=(ADMIN.public_key,),
        governance_threshold=1,
        meters={own_id: N1.public_key, other_id: OTHER.public_key},
        periods=tuple(
            Period(f"p{i}", START_MS + i * P_MS, START_MS + (i + 1) * P_MS, PARAMS)
            for i in range(3)
        ),
        privacy=mode,
    )


def _ids(root: Path, mode: str) -> tuple[str, str, object]:
    if mode == "open":
        return SERIAL_OWN, SERIAL_OTHER, None
    store = IdentityStore.create(root / "admin-identity", "lemd-test")
    admission = store.admit("member-own", SERIAL_OWN, N1.public_key)
    other = store.admit("member-o", SERIAL_OTHER, OTHER.public_key).pseudonym
    return admission.pseudonym, other, admission


def _forbidden(mode: str) -> list[str]:
    out = [OTHER.public_key.hex(), OTHER.public_key.hex()[:16]]
    if mode == "pseudonymous":
        out += [SERIAL_OTHER]
    return out


async def _walk(
    api: str, config: Path, own_id: str, other_id: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, tuple[int, object]]:
    paths = [
        "/status", "/meters", "/params", "/params?period=p0", "/balance", "/key", "/outbox",
        "/totals?period=p0", f"/measure?meter={own_id}&period=p0",
        f"/measure?meter={other_id}&period=p0",
        f"/measure?meter={other_id}&from={START_MS}&to={START_MS + 3 * P_MS}",
        f"/measure?meter={other_id}&slot={START_MS}", "/metrics",
    ]  # fmt: skip
    got = {p: await request(api, "GET", p, timeout_s=30) for p in paths}
    for argv in (
        ("status", "--json"), ("balance", "--json"), ("outbox", "--json"),
        ("market", "show", "--period", "p0", "--json"), ("keys", "show", "--json"),
    ):  # fmt: skip
        code = await asyncio.to_thread(lemctl, ["--config", str(config), *argv])
        got["lemctl " + " ".join(argv)] = (code, capsys.readouterr().out)
    return got


@pytest.mark.parametrize("mode", ["open", "pseudonymous"])
async def test_light_prosumer_reads_own_state_by_proof_and_nothing_of_another_member(
    tmp_path: Path, mosquitto: Mosquitto, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A light prosumer reads its own measurements, balance, meters, the parameters and the
    community totals from proofs (equal to a validator's state); another member's meter
    answers 403 on every /measure form, and no endpoint, lemctl output or log line names its
    account, its meter's owner or its energy (outside community totals)."""
    own_id, other_id, admission = _ids(tmp_path, mode)
    c = MqttCommunity(tmp_path, mosquitto, heartbeat_ms=300)
    c.genesis = _genesis(mode, own_id, other_id)
    node = make_node(tmp_path / "member", key=N1, genesis=c.genesis, meter_id=SERIAL_OWN,
                     brokers=(mosquitto.url,), speed=900.0)  # fmt: skip
    if admission is not None:
        admission.save(node.data_dir / "admission.json")  # type: ignore[attr-defined]
    daemon = LightDaemon(load_config(node.config), N1, Notifier({}))
    logs = Captured()  # the light daemon's own log lines (the validators here log elsewhere)
    lemd_logger = logging.getLogger("lemd")
    lemd_logger.addHandler(logs)
    old_level = lemd_logger.level
    lemd_logger.setLevel(logging.DEBUG)
    try:
        for i, key in enumerate(VALIDATORS):
            await c.start(f"v{i}", key)
        task = asyncio.create_task(daemon.run(), name="light-lemd")
        v0 = c.nodes["v0"]
        for i in range(2):
            body = {
                "meter_id": other_id, "slot_start_ms": START_MS + i * SLOT_MS,
                "import_wh": OTHER_WH, "export_wh": 0, "quality": 0,
            }  # fmt: skip
            v0.submit_tx(txm.make(OTHER, "lemd-test", i, "SetMeasure", body))
        q = Queries(v0.app.store)

        def own_rows() -> int:
            return len(q.measurements(N1.public_key, own_id, START_MS, START_MS + P_MS))

        await c.until(lambda: own_rows() == 2, 60)
        api = daemon.config.api.listen
        code, answer = await request(api, "POST", "/solve", {"period_id": "p0"}, timeout_s=30)
        assert code == 202, answer
        await c.until(lambda: q.periods()["p0"]["solved"], 30)
        solved_at = v0.app.height
        await until(lambda: daemon.light.height > solved_at, 10, "header after the solve")
        got = await _walk(api, node.config, own_id, other_id, capsys)
        assert not task.done()
        me, acct = N1.public_key, N1.public_key.hex()
        expected = {
            "measure": q.measurements(me, own_id, START_MS, START_MS + P_MS),
            "balance": q.balance(me, acct),
            "settled": q.settlement(me, "p0", acct),
            "totals": q.totals(me, START_MS, START_MS + P_MS),
        }
    finally:
        daemon.stop_event.set()
        await c.stop_all()
        lemd_logger.removeHandler(logs)
        lemd_logger.setLevel(old_level)
    assert logs.lines, "the light daemon logged"
    got["logs"] = (0, "\n".join(logs.lines))

    for path in got:
        if path.startswith(f"/measure?meter={other_id}"):
            assert got[path][0] == 403, (path, got[path])
        elif path.startswith("lemctl") or path == "logs":
            assert got[path][0] == 0, (path, got[path])
        else:
            assert got[path][0] == 200, (path, got[path])
    own = got[f"/measure?meter={own_id}&period=p0"][1]
    assert isinstance(own, dict)
    assert [[r["slot_start_ms"], r["import_wh"], r["export_wh"], r["quality"]]
            for r in own["slots"]] == expected["measure"]  # fmt: skip
    assert got["/meters"][1] == {"meters": [own_id], "proof": got["/meters"][1]["proof"]}  # type: ignore[index]
    balance = got["/balance"][1]
    assert isinstance(balance, dict)
    assert balance["balance_uect"] == expected["balance"]
    assert balance["settlements_uect"]["p0"] == expected["settled"]
    assert balance["proof"]["headers"], "the balance is proven against a verified header"
    totals = got["/totals?period=p0"][1]
    assert isinstance(totals, dict)
    rows = [
        [t["slot_start_ms"], t["import_wh"], t["export_wh"], t["meters"]] for t in totals["slots"]
    ]
    assert rows == expected["totals"]
    assert got["/params?period=p0"][1]["solved"] is True  # type: ignore[index]
    assert json.loads(got["lemctl keys show --json"][1])["role"] == "prosumer"  # type: ignore[arg-type]
    for path, (_, answer) in got.items():
        text = answer if isinstance(answer, str) else json.dumps(answer)
        for word in _forbidden(mode):
            assert word not in text, (path, word)
        if mode == "pseudonymous" and "status" not in path:
            assert SERIAL_OWN not in text, path  # ledger views carry the pseudonym only
        if "totals" not in path and "market show" not in path:
            assert not shows_number(text, OTHER_WH), path
    metrics = got["/metrics"][1]
    assert isinstance(metrics, str)
    for word in (own_id, other_id, N1.public_key.hex(), SERIAL_OWN, SERIAL_OTHER):
        assert word not in metrics
