"""Light members over a real mosquitto: 4 validators (ledger.node.Node) publish verified
headers; two members follow them header-only, submit SetMeasure, and fetch their own state
with Merkle proofs; a proof of another member's measurement is refused (seed 000 Fig. 4)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from edge.cli.main import main as lemctl
from ledger import codec, state
from ledger import tx as txm
from ledger.consensus.engine import EngineConfig
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey, sha256
from ledger.light import LightClient
from ledger.light_node import LightNode
from ledger.node import Node
from ledger.proofs import ProofError, make_proof_request, tx_query, tx_query_of
from ledger.transport.base import LIGHT_CHANNELS, Message
from ledger.transport.mqtt import MqttTransport
from ledger.transport.mqtt_settings import MqttSettings
from tests.integration.test_consensus_mqtt import TIMEOUTS, VALIDATORS, MqttCommunity
from tests.integration.test_mqtt_security import SecureBroker, secure_broker  # noqa: F401
from tests.support.lemd import make_node
from tests.support.mosquitto import Mosquitto
from tests.support.nodes import CHAIN, FAST, settings, until
from tests.unit.ledger.helpers import ADMIN, N1, N2, PARAMS, SLOT, T0, Signer, genesis

pytestmark = pytest.mark.slow

M1, M2 = "meter-n1", "meter-n2"
V0 = VALIDATORS[0].public_key


def _genesis() -> Genesis:
    return genesis(
        validators=tuple((k.public_key, 10) for k in VALIDATORS),
        meters={M1: N1.public_key, M2: N2.public_key},
        periods=(Period("p0", T0, T0 + SLOT, PARAMS),),
    )


class Member:
    def __init__(self, root: Path, url: str, name: str, key: SigningKey, g: Genesis) -> None:
        settings = MqttSettings.from_urls(
            g.chain_id, name, [url], broadcast_channels=LIGHT_CHANNELS, **FAST
        )
        self.transport = MqttTransport(settings)
        self.light = LightClient(root / name, g, durable=False)
        self.node = LightNode(
            self.light,
            self.transport,
            key,
            probe_s=1.0,
        )
        self.signer = Signer(key, g.chain_id)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.transport.start()
        await self.transport.wait_connected(5)
        self.task = asyncio.create_task(self.node.run(), name=f"light-{self.transport.node_id}")

    async def stop(self) -> None:
        await self.transport.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.light.close()


@asynccontextmanager
async def light_community(
    root: Path, broker: Mosquitto
) -> AsyncIterator[tuple[MqttCommunity, Member, Member]]:
    c = MqttCommunity(root, broker, heartbeat_ms=1000)
    c.genesis = _genesis()
    members = [
        Member(root, broker.url, "m1", N1, c.genesis),
        Member(root, broker.url, "m2", N2, c.genesis),
    ]
    try:
        for i, key in enumerate(VALIDATORS):
            await c.start(f"v{i}", key)
        for m in members:
            await m.start()
        yield c, members[0], members[1]
    finally:
        for m in members:
            await m.stop()
        await c.stop_all()


def _measure(meter: str, import_wh: int, export_wh: int) -> dict[str, object]:
    return {
        "meter_id": meter, "slot_start_ms": T0, "import_wh": import_wh,
        "export_wh": export_wh, "quality": 0,
    }  # fmt: skip


async def test_members_follow_headers_and_prove_their_own_state(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """Members verify the validators' header chain (same hashes and app hashes), learn that
    their SetMeasure was committed from a tx-inclusion proof, and read their balance after
    settlement (Algorithm 1: N1 -45.5 ECT) with a Merkle proof, also through ``lemctl ledger
    prove``; N2 asking for N1's measurement or N1's tx is refused."""
    async with light_community(tmp_path, mosquitto) as (c, m1, m2):
        raw1 = m1.signer("SetMeasure", _measure(M1, 2500, 0))
        raw2 = m2.signer("SetMeasure", _measure(M2, 0, 1400))
        await m1.node.submit(raw1)
        await m2.node.submit(raw2)
        v0 = c.nodes["v0"]
        key1 = state.k_measure(T0, M1)

        def measured() -> bool:
            with v0.store.state_reader() as base:
                return base.get(key1) is not None and base.get(state.k_measure(T0, M2)) is not None

        await c.until(measured)
        _, (included,) = await m1.node.prove([("tx", tx_query_of(raw1))])
        assert isinstance(included, int)
        location = v0.store.locate_tx(raw1)
        assert location is not None
        assert location[0] == included
        # The same sequence with another hash (a tx of m1's that lost its sequence) is absent.
        other = tx_query(sha256(b"never signed"), txm.decode(raw1).sequence)
        _, (lost,) = await m1.node.prove([("tx", other)])
        assert isinstance(lost, ProofError)
        assert "absent" in str(lost)

        await m1.node.submit(m1.signer("SolveMarkets", {"period_id": "p0"}))
        account = state.k_balance(state.account_id(N1.public_key))

        def solved() -> bool:
            with v0.store.state_reader() as base:
                return base.get(account) is not None

        await c.until(solved)
        solved_at = v0.app.height
        # Proofs come from the state before a validator's newest block (light.md §4): the
        # settlement is readable once one more block (here the 1 s heartbeat) is committed.
        await c.until(lambda: v0.app.height > solved_at)
        answer, (balance, measure) = await m1.node.prove([("key", account), ("key", key1)])
        assert codec.decode(balance) == -45_500_000
        assert codec.decode(measure)[:2] == [2500, 0]
        header = m1.light.header(answer.height + 1)
        assert header is not None
        assert v0.store.height_of(header.hash) == answer.height + 1
        assert v0.store.app_hash_at(answer.height) == header.app_hash

        node_dir = make_node(
            tmp_path / "m1-cli", key=N1, genesis=c.genesis, meter_id=M1, brokers=(c.broker.url,)
        )
        argv = ["ledger", "prove", "--config", str(node_dir.config), "--json"]
        code = await asyncio.to_thread(lemctl, [*argv, "--timeout", "30"])
        printed = json.loads(capsys.readouterr().out)
        assert code == 0
        assert printed["results"][0]["value"] == -45_500_000
        assert printed["results"][0]["status"] == "proof OK"
        assert v0.store.height_of(bytes.fromhex(printed["header"]["hash"])) is not None
        code = await asyncio.to_thread(lemctl, [*argv[:-1], "--timeout", "30"])
        text = capsys.readouterr().out
        assert code == 0
        assert f"bal/{state.account_id(N1.public_key)}: -45500000  (proof OK)" in text
        assert "proof OK against header " in text
        argv += ["--key", "measure", "--period", "p0", "--timeout", "30"]
        code = await asyncio.to_thread(lemctl, argv)
        (row,) = json.loads(capsys.readouterr().out)["results"]
        assert code == 0
        assert row["value"][:2] == [2500, 0]

        _, (refused, not_mine, malformed) = await m2.node.prove(
            [("key", key1), ("tx", tx_query_of(raw1)), ("tx", txm.decode(raw1).hash)]
        )
        assert isinstance(refused, ProofError)
        assert "denied" in str(refused)
        # m1's tx is looked up among m2's own: absent, so the answer does not even tell that
        # it exists; a bare hash (no sequence) is refused by name.
        assert isinstance(not_mine, ProofError)
        assert "absent" in str(not_mine)
        assert isinstance(malformed, ProofError)
        assert "denied: a tx query is a tx hash and its u64 sequence" in str(malformed)

        await c.until(lambda: m2.light.height >= 3 and m1.light.height >= 3)
        for m in (m1, m2):
            tip = m.light.latest
            assert v0.store.height_of(tip.hash) == tip.height
        assert m1.node.stats["header_rejected_bad_commit"] == 0


async def test_a_validator_cannot_answer_a_tx_query_with_another_txs_proof(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A byzantine validator that answers "is my tx committed?" with the (valid) proof of
    another committed tx of the member does not convince it: the answer is refused because it
    is not to the query asked, so the member never takes an uncommitted tx for committed."""
    async with light_community(tmp_path, mosquitto) as (c, m1, _):
        raw = m1.signer("SetMeasure", _measure(M1, 2500, 0))
        await m1.node.submit(raw)
        v0 = c.nodes["v0"]
        await c.until(lambda: all(n.store.locate_tx(raw) is not None for n in c.nodes.values()))
        never_committed = tx_query(sha256(b"still on its way"), txm.decode(raw).sequence + 1)
        for node in c.nodes.values():
            honest = node.proofs._answer

            def swapped(requester: bytes, kind: str, arg: bytes, honest: Any = honest) -> Any:
                return honest(requester, kind, tx_query_of(raw) if kind == "tx" else arg)

            node.proofs._answer = swapped  # type: ignore[method-assign]
        with pytest.raises(ProofError, match="not to the queries asked"):
            await m1.node.prove([("tx", never_committed)], timeout_s=20)
        assert m1.node.stats["proof_answer_mismatch"] == 1
        assert v0.store.tx_location(N1.public_key, txm.decode(raw).sequence + 1) is None


async def test_a_replayed_or_unsigned_proof_request_gets_no_answer(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The validator answers a signed request once: the same payload again (a replay past the
    transport's dedup), a bad signature, and a reply_to that is not the sender are refused."""
    async with light_community(tmp_path, mosquitto) as (c, m1, _):
        v0 = c.nodes["v0"]
        nonce = time.time_ns() // 1_000_000
        key = state.k_balance(state.COMMUNITY)
        good = make_proof_request(N1, c.genesis.chain_id, "m1", nonce, [("key", key)], V0)
        await m1.transport.publish("proof_req", good, to="v0")
        await c.until(lambda: v0.proofs.stats["proofs_answered"] == 1)
        v0.proofs.handle(Message("proof_req", "m1", good))  # replayed after the dedup window
        forged = bytearray(
            make_proof_request(N1, c.genesis.chain_id, "m1", nonce + 1, [("key", key)], V0)
        )
        forged[-1] ^= 1
        await m1.transport.publish("proof_req", bytes(forged), to="v0")
        other = make_proof_request(N1, c.genesis.chain_id, "m2", nonce + 2, [("key", key)], V0)
        await m1.transport.publish("proof_req", other, to="v0")
        stats = v0.proofs.stats
        refused = ("request_refused_SignatureError", "request_refused_ValueError")
        await c.until(lambda: sum(stats[k] for k in refused) >= 3)
        assert stats["proofs_answered"] == 1
        assert stats["request_refused_SignatureError"] == 1
        assert stats["request_refused_ValueError"] == 2


async def test_light_member_works_through_the_shipped_acl(
    tmp_path: Path,
    secure_broker: SecureBroker,  # noqa: F811
) -> None:
    """On the shipped broker config with the rendered ACL (validator v1, member m1, TLS and
    passwords): m1 catches up by a broadcast header request, submits a SetMeasure that v1 reads
    and commits, and proves its inclusion through its inbox; m1 reads no tx or block."""
    sb = secure_broker
    v1_key = VALIDATORS[0]
    g = Genesis(
        chain_id=CHAIN,
        genesis_time_ms=T0 - 60_000,
        validators=((v1_key.public_key, 10),),
        admins=(ADMIN.public_key,),
        governance_keys=(ADMIN.public_key,),
        governance_threshold=1,
        meters={M1: N1.public_key},
        periods=(Period("p0", T0, T0 + SLOT, PARAMS),),
    )
    tls = {"ca_file": sb.pki.ca_cert, **FAST}
    v_transport = MqttTransport(
        settings("v1", [sb.password_url], username="v1", password="v1-secret", **tls)
    )
    m_transport = MqttTransport(
        settings(
            "m1", [sb.password_url], username="m1", password="m1-secret",
            broadcast_channels=(*LIGHT_CHANNELS, "tx", "block", "consensus"), **tls,
        )
    )  # fmt: skip
    config = EngineConfig(CHAIN, timeouts=TIMEOUTS, heartbeat_ms=1000)
    validator = Node.open(tmp_path / "v1", g, v_transport, key=v1_key, config=config, durable=False)
    light = LightClient(tmp_path / "m1", g, durable=False)
    member = LightNode(light, m_transport, N1, probe_s=1.0)
    seen: list[str] = []
    original = member.handle

    async def spy(message: Message) -> None:
        seen.append(message.channel)
        await original(message)

    member.handle = spy  # type: ignore[method-assign]
    tasks: list[asyncio.Task[None]] = []
    try:
        for t in (v_transport, m_transport):
            await t.start()
            await t.wait_connected(5)
        tasks = [
            asyncio.create_task(validator.run(), name="v1"),
            asyncio.create_task(member.run(), name="m1"),
        ]
        raw = Signer(N1, CHAIN)("SetMeasure", _measure(M1, 2500, 0))
        await member.submit(raw)
        await until(lambda: validator.store.locate_tx(raw) is not None, 20, "tx committed")
        _, (height,) = await member.prove([("tx", tx_query_of(raw))], timeout_s=20)
        assert height == validator.store.locate_tx(raw)[0]  # type: ignore[index]
        assert light.height >= height
        assert set(seen) <= {"header", "proof_resp"}
        assert "header" in seen
    finally:
        await validator.close()
        await m_transport.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        light.close()
