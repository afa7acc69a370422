"""Seed 000 Fig. 4 on every interface of a prosumer node, in both privacy modes
(docs/privacy.md §3): REST API, lemctl, metrics, logs (an in-process lemd with real LMDB
stores, API and tasks) and MQTT topics (the shipped broker config on a real mosquitto).

The prosumer node owns meter "lic-h03" (its simulated meter's id stands for the serial); a second
member OTHER owns "lic-h05" and writes 77,777 Wh per slot, a figure the prosumer must never see
except inside community totals. The run goes through a solved and pruned period, so the
retention scheduler and the pruned state are walked as well.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.cli.main import main as lemctl
from edge.daemon import Daemon
from edge.http import request
from edge.logs import LogfmtFormatter
from edge.privacy import IdentityStore
from ledger import privacy
from ledger import tx as txm
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey
from ledger.transport.mqtt import MqttTransport
from ledger.transport.topics import broadcast_topic
from tests.integration.test_mqtt_security import SecureBroker, secure_broker  # noqa: F401
from tests.support.lemd import (
    PARAMS,
    SIM_START,
    SLOT_MS,
    NodeDir,
    make_node,
    running_daemon,
    until,
)
from tests.support.nodes import CHAIN, settings

pytestmark = pytest.mark.slow

SERIAL_OWN, SERIAL_OTHER = "lic-h03", "lic-h05"
OTHER = SigningKey(b"\x42" * 32)
OTHER_WH = 77_777
START_MS = int(SIM_START.timestamp() * 1000)
P_MS = 2 * 900_000
"""Period length: two slots (keeps the run short at the test clock's 900× speed)."""


@dataclass
class Community:
    mode: str
    node: NodeDir
    own_id: str
    other_id: str

    @property
    def config(self) -> Path:
        return self.node.config

    @property
    def key(self) -> SigningKey:
        return self.node.key


def _community(root: Path, mode: str) -> Community:
    """Genesis with both members' meters (serials or pseudonyms), one-hour periods, a dispute
    window of one slot; in the pseudonymous mode the node gets its admission file."""
    key, admin = SigningKey.generate(), SigningKey.generate()
    ids = (SERIAL_OWN, SERIAL_OTHER)
    admission = None
    if mode == "pseudonymous":
        store = IdentityStore.create(root / "admin-identity", "lemd-test")
        admission = store.admit("member-own", SERIAL_OWN, key.public_key)
        ids = (
            admission.pseudonym,
            store.admit("member-o", SERIAL_OTHER, OTHER.public_key).pseudonym,
        )
    genesis = Genesis(
        chain_id="lemd-test",
        genesis_time_ms=START_MS - 60_000,
        validators=((key.public_key, 1),),
        admins=(admin.public_key,),
        governance_keys=(admin.public_key,),
        governance_threshold=1,
        meters={ids[0]: key.public_key, ids[1]: OTHER.public_key},
        periods=tuple(
            Period(f"p{i}", START_MS + i * P_MS, START_MS + (i + 1) * P_MS, PARAMS)
            for i in range(3)
        ),
        privacy=mode,
        dispute_window_ms=SLOT_MS,
    )
    node = make_node(root / "node", key=key, admin=admin, genesis=genesis, meter_id=SERIAL_OWN)
    if admission is not None:
        admission.save(node.data_dir / "admission.json")
    return Community(mode, node, ids[0], ids[1])


class Captured(logging.Handler):
    """Every log line of the process, formatted as lemd writes them (extras included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(LogfmtFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def shows_number(text: str, number: int) -> bool:
    """``number`` as a token of its own: not digits inside a hex hash or a longer number
    (an app hash once held "77777", and a plain substring test failed on it)."""
    return re.search(rf"(?<![0-9A-Za-z]){number}(?![0-9A-Za-z])", text) is not None


def _forbidden(c: Community, *, ledger_view: bool) -> list[str]:
    """What a prosumer must never read: the other member's account and values; in the
    pseudonymous mode no serial at all in ledger views and logs (and never OTHER's)."""
    out = [OTHER.public_key.hex()]
    if c.mode == "pseudonymous":
        out.append(SERIAL_OTHER)
        if ledger_view:
            out.append(SERIAL_OWN)
    return out


async def _rest(api: str, c: Community) -> dict[str, tuple[int, object]]:
    paths = [
        "/status", "/meters", "/params", "/balance", "/key", "/outbox",
        "/totals?period=p0",
        f"/measure?meter={c.own_id}&period=p0",
        f"/measure?meter={c.other_id}&period=p0",
        f"/measure?meter={c.other_id}&from={START_MS}&to={START_MS + 3 * P_MS}",
        "/metrics",
    ]  # fmt: skip
    return {p: await request(api, "GET", p) for p in paths}


async def _lemctl(config: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = await asyncio.to_thread(lemctl, ["--config", str(config), *argv])
    out = capsys.readouterr().out
    assert code == 0, (argv, out)
    return out


def _check_rest(c: Community, got: dict[str, tuple[int, object]], pruned: bool) -> None:
    for path in got:
        if path.startswith(f"/measure?meter={c.other_id}"):
            assert got[path][0] == 403, path
    status, own = got[f"/measure?meter={c.own_id}&period=p0"]
    assert status == 200
    assert isinstance(own, dict)
    assert len(own["slots"]) == (0 if pruned else 2)  # own rows: readable until pruned
    meters = got["/meters"][1]
    assert meters == {"meters": sorted([c.own_id, c.other_id])}  # ids only, no accounts
    for path, (_, body) in got.items():
        text = json.dumps(body) if not isinstance(body, str) else body
        for word in _forbidden(c, ledger_view=path != "/status"):
            assert word not in text, (path, word)
        if not path.startswith("/totals"):  # community totals include OTHER's energy
            assert not shows_number(text, OTHER_WH), path
    metrics = got["/metrics"][1]
    assert isinstance(metrics, str)
    for word in (c.own_id, c.other_id, c.key.public_key.hex(), SERIAL_OWN, SERIAL_OTHER):
        assert word not in metrics  # labels carry no identities


async def _walk(
    c: Community, daemon: Daemon, capsys: pytest.CaptureFixture[str], *, pruned: bool
) -> None:
    api = daemon.config.api.listen
    _check_rest(c, await _rest(api, c), pruned)
    for argv in (
        ("status", "--json"), ("balance", "--json"), ("outbox", "--json"),
        ("market", "show", "--period", "p0", "--json"), ("keys", "show", "--json"),
    ):  # fmt: skip
        out = await _lemctl(c.config, capsys, *argv)
        for word in _forbidden(c, ledger_view=argv[0] != "status"):
            assert word not in out, (argv, word)
        if argv[0] != "market":
            assert not shows_number(out, OTHER_WH), argv


@pytest.mark.parametrize("mode", ["open", "pseudonymous"])
async def test_prosumer_reads_nothing_of_another_member(
    tmp_path: Path, mode: str, logs: Captured, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before and after its period is solved and pruned, the prosumer node's REST API, lemctl,
    metrics and logs show neither another member's measurements nor its account; in the
    pseudonymous mode no serial reaches a ledger view or a log line of the node."""
    c = _community(tmp_path, mode)
    async with running_daemon(c.node) as daemon:
        parts = daemon.parts
        assert parts is not None
        for i in range(2):
            body = {
                "meter_id": c.other_id, "slot_start_ms": START_MS + i * SLOT_MS,
                "import_wh": OTHER_WH, "export_wh": 0, "quality": 0,
            }  # fmt: skip
            parts.node.submit(txm.make(OTHER, "lemd-test", i, "SetMeasure", body))
        q = parts.queries
        await until(lambda: q.periods()["p0"]["solved"], 30, "p0 solved")
        await _walk(c, daemon, capsys, pruned=False)
        if mode == "pseudonymous":  # retention is mode-independent: walked once
            await _retention_walk(c, daemon, capsys)
    text = "\n".join(logs.lines)
    assert ("PruneMeasurements submitted" in text) is (mode == "pseudonymous")
    for word in _forbidden(c, ledger_view=True):
        assert word not in text, word


async def _retention_walk(c: Community, daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    """The node's retention scheduler prunes p0; the prosumer then reads its own period totals
    (member root over its 2 slots) and, through every interface, still nothing of OTHER."""
    assert daemon.parts is not None
    q = daemon.parts.queries

    def pruned() -> bool:
        with q.store.state_reader() as base:
            return base.get(privacy.k_pruned("p0")) is not None

    await until(pruned, 30, "p0 pruned by the retention scheduler")
    own = q.period_total(c.key.public_key, "p0", c.key.public_key.hex())
    assert own is not None
    assert own[2] == 2
    await _walk(c, daemon, capsys, pruned=True)


async def test_mqtt_topics_carry_node_ids_only(
    secure_broker: SecureBroker,  # noqa: F811
) -> None:
    """On the shipped broker a member's SetMeasure broadcast reaches the validators on
    lem/1/<chain>/tx/<node id>: the topic names the sending node, not a meter or a person."""
    sb = secure_broker
    ca = sb.pki.ca_cert
    m2 = MqttTransport(
        settings("m2", [sb.password_url], ca_file=ca, username="m2", password="m2-secret")
    )
    await m2.start()
    try:
        await m2.wait_connected(5)
        payload = _other_measure(privacy_id="ps-" + "ab" * 16)
        topics = await _tx_topics_seen_by(sb, m2, payload, observer="v1")
    finally:
        await m2.close()
    assert topics == [broadcast_topic(CHAIN, "tx", "m2")]


def _other_measure(privacy_id: str) -> bytes:
    body = {
        "meter_id": privacy_id, "slot_start_ms": START_MS,
        "import_wh": OTHER_WH, "export_wh": 0, "quality": 0,
    }  # fmt: skip
    return txm.make(OTHER, CHAIN, 0, "SetMeasure", body)


async def _tx_topics_seen_by(
    sb: SecureBroker, m2: MqttTransport, payload: bytes, observer: str = "m1"
) -> list[str]:
    """Topics of the tx broadcasts a client authenticated as ``observer`` (member m1 or
    validator v1 of the shipped ACL) receives while m2 publishes ``payload`` on channel tx."""
    tls = aiomqtt.TLSParameters(ca_certs=str(sb.pki.ca_cert))
    seen: list[str] = []
    async with aiomqtt.Client(
        "127.0.0.1", sb.password_port, username=observer, password=f"{observer}-secret",
        identifier=observer, protocol=aiomqtt.ProtocolVersion.V5, tls_params=tls,
    ) as m1:  # fmt: skip
        filters = [broadcast_topic(CHAIN, ch, "+") for ch in ("tx", "join")]
        await m1.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        await m2.publish("tx", payload)
        await m2.flush(5)  # tx gossip yields to other channels (consensus.md §11b): send it first
        await m2.publish("join", b"marker")  # readable by every node: ends the wait
        async with asyncio.timeout(5):
            async for message in m1.messages:
                if message.payload == b"marker":
                    break
                seen.append(str(message.topic))
    return seen


async def test_mqtt_member_cannot_read_another_members_measurement(
    secure_broker: SecureBroker,  # noqa: F811
) -> None:
    """A client authenticated as member m1 must not receive member m2's SetMeasure payload
    (Fig. 4: a prosumer does not read other members' measurements)."""
    sb = secure_broker
    m2 = MqttTransport(
        settings(
            "m2", [sb.password_url], ca_file=sb.pki.ca_cert, username="m2", password="m2-secret"
        )
    )
    await m2.start()
    try:
        await m2.wait_connected(5)
        payload = _other_measure(privacy_id="ps-" + "cd" * 16)
        topics = await _tx_topics_seen_by(sb, m2, payload, observer="m1")
    finally:
        await m2.close()
    assert topics == []


async def test_lemctl_member_list_hides_accounts_from_a_prosumer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a prosumer node, ``lemctl member list`` must not link another node's account to a
    meter id (Fig. 4: prosumers read meter ids, not accounts)."""
    from ledger.apps import join as join_app

    c = _community(tmp_path, "pseudonymous")
    newcomer = SigningKey(b"\x43" * 32)
    body = {"meter_id": "ps-" + "ef" * 16, "identification": "", "name": ""}
    async with running_daemon(c.node) as daemon:
        assert daemon.parts is not None
        daemon.parts.node.submit(txm.make(newcomer, "lemd-test", 0, "JoinRequest", body))
        store = daemon.parts.queries.store

        def waiting() -> bool:
            with store.state_reader() as base:
                return base.get(join_app.k_request(newcomer.public_key)) is not None

        await until(waiting, 10, "the join request committed")
    code = await asyncio.to_thread(lemctl, ["member", "list", "--config", str(c.config), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    assert newcomer.public_key.hex() not in out
