"""The shipped broker config (systemd/mosquitto/) run by a real mosquitto: TLS, auth, ACL.

The config and ACL files are the ones in the repository, with only their /etc paths and ports
substituted, so the files an installer copies are the files these tests prove.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from ledger.transport.acl import render as render_acl
from ledger.transport.base import LIGHT_CHANNELS
from ledger.transport.mqtt import MqttTransport
from ledger.transport.topics import broadcast_topic, direct_topic
from tests.support.mosquitto import BrokerError, Mosquitto, free_port, listening
from tests.support.nodes import CHAIN, Receiver, settings, until
from tests.support.tls import CertFiles, Pki

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONF = REPO / "systemd" / "mosquitto" / "lem-broker.conf"
SHIPPED_ACL = REPO / "systemd" / "mosquitto" / "lem-broker.acl"
VALIDATOR_IDS = ("a", "b", "v1")


@dataclass
class SecureBroker:
    """The shipped config running on two loopback ports, with its PKI and passwords."""

    broker: Mosquitto
    pki: Pki
    cert_port: int  # mutual TLS (listener 8883 in the shipped file)
    password_port: int  # TLS + username/password (listener 8884)

    @property
    def cert_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.cert_port}"

    @property
    def password_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.password_port}"

    def client_cert(self, node_id: str) -> CertFiles:
        return self.pki.issue(node_id, server=False)


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    """mosquitto running systemd/mosquitto/lem-broker.conf + .acl with a fresh test PKI."""
    etc = tmp_path / "etc"
    pki = Pki.create(etc)
    server = pki.issue("broker", server=True)
    server.cert.rename(etc / "broker.crt")
    server.key.rename(etc / "broker.key")
    # Validators: "a", "b" (client certificates) and "v1" (password); m1, m2 are members.
    (etc / "acl").write_text(render_acl(SHIPPED_ACL.read_text(), VALIDATOR_IDS))
    passwd = etc / "passwd"
    users = (("m1", "m1-secret"), ("m2", "m2-secret"), ("v1", "v1-secret"))
    for i, (user, password) in enumerate(users):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd), user, password], check=True)
    for attempt in range(5):
        # Two ports picked free a moment ago: another test on the host may take one first.
        cert_port, password_port = free_port(), free_port()
        text = (
            SHIPPED_CONF.read_text()
            .replace("/etc/mosquitto/lem/", f"{etc}/")
            .replace("listener 8883", f"listener {cert_port} 127.0.0.1")
            .replace("listener 8884", f"listener {password_port} 127.0.0.1")
        )
        broker = Mosquitto(tmp_path / f"broker{attempt}", port=cert_port, config_text=text)
        try:
            broker.start()
            break
        except BrokerError as exc:
            if "in use" not in str(exc) or attempt == 4:
                raise
    yield SecureBroker(broker, pki, cert_port, password_port)
    broker.kill()


@pytest.fixture
async def started() -> AsyncIterator[list[MqttTransport]]:
    """Transports a test starts; all closed at teardown."""
    transports: list[MqttTransport] = []
    yield transports
    for transport in transports:
        await transport.close()


async def _start(started: list[MqttTransport], node_id: str, url: str, **kw: Any) -> MqttTransport:
    transport = MqttTransport(settings(node_id, [url], **kw))
    await transport.start()
    started.append(transport)
    return transport


async def test_mutual_tls_nodes_exchange_and_password_member_joins(
    secure_broker: SecureBroker, started: list[MqttTransport]
) -> None:
    """Cert-authenticated validators and a password-authenticated member talk through TLS;
    the member reads the header feed but not the validators' votes (docs/spec/light.md §5)."""
    sb = secure_broker
    ca = sb.pki.ca_cert
    ca_a, ca_b = sb.client_cert("a"), sb.client_cert("b")
    a = await _start(started, "a", sb.cert_url, ca_file=ca, cert_file=ca_a.cert, key_file=ca_a.key)
    b = await _start(started, "b", sb.cert_url, ca_file=ca, cert_file=ca_b.cert, key_file=ca_b.key)
    m1 = await _start(
        started, "m1", sb.password_url, ca_file=ca, username="m1", password="m1-secret"
    )
    for transport in (a, b, m1):
        await transport.wait_connected(5)
    rb, rm = Receiver(b), Receiver(m1)

    await a.publish("consensus", b"vote-a")
    await a.publish("header", b"header-a")
    await m1.publish("tx", b"tx-m1", to="b")
    await rb.wait_for(3)
    await rm.wait_for(1)

    assert sorted(rb.payloads()) == [b"header-a", b"tx-m1", b"vote-a"]
    assert rm.payloads() == [b"header-a"]
    await rb.stop()
    await rm.stop()


async def test_acl_keeps_a_node_from_writing_as_another_or_reading_its_inbox(
    secure_broker: SecureBroker, started: list[MqttTransport]
) -> None:
    """Authenticated as m1, a client cannot publish under m2's name nor read m2's direct inbox."""
    sb = secure_broker
    ca = sb.pki.ca_cert
    m2 = await _start(
        started, "m2", sb.password_url, ca_file=ca, username="m2", password="m2-secret"
    )
    await m2.wait_connected(5)
    victim = Receiver(m2)
    tls = aiomqtt.TLSParameters(ca_certs=str(ca))
    async with aiomqtt.Client(
        "127.0.0.1",
        sb.password_port,
        username="m1",
        password="m1-secret",
        identifier="m1",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_params=tls,
    ) as rogue:
        # mosquitto 2.0 grants the wildcard SUBSCRIBE and applies the read ACL per message.
        await rogue.subscribe(
            [
                (direct_topic(CHAIN, "+", "m2", "+"), SubscribeOptions(qos=1)),
                (broadcast_topic(CHAIN, "+", "+"), SubscribeOptions(qos=1)),
            ]
        )
        # Forged sender levels: the broker must drop both silently (PUBACK "not authorized").
        await rogue.publish(broadcast_topic(CHAIN, "consensus", "m2"), b"forged-bcast", qos=1)
        await rogue.publish(direct_topic(CHAIN, "tx", "m2", "a"), b"forged-direct", qos=1)
        await rogue.publish(direct_topic(CHAIN, "tx", "m2", "m1"), b"honest", qos=1)
        await victim.wait_payload(b"honest")
        await m2.publish("sync_resp", b"m2-private", to="m2-peer")
        await m2.flush(5)  # acknowledged, so routed before the marker below
        await m2.publish("join", b"marker")  # a broadcast every member may read
        seen = []
        async with asyncio.timeout(5):
            async for message in rogue.messages:
                seen.append(message.payload)
                if message.payload == b"marker":
                    break

    assert victim.payloads() == [b"honest"]
    assert [m.sender for m in victim.received] == ["m1"]
    assert seen == [b"marker"]  # neither m2's direct message nor anything forged
    await victim.stop()


async def test_client_without_certificate_or_with_wrong_password_never_connects(
    secure_broker: SecureBroker, started: list[MqttTransport]
) -> None:
    """No client certificate on the mutual-TLS port, or a wrong password: refused, retried."""
    sb = secure_broker
    ca = sb.pki.ca_cert
    # TLS 1.3 reports a refused client certificate after the handshake: the broker just
    # closes. Two failures within 5 s despite a 10 s CONNACK bound: the close ends the attempt.
    fast = {"connect_timeout_s": 10.0}
    no_cert = await _start(started, "a", sb.cert_url, ca_file=ca, **fast)
    bad_pw = await _start(
        started, "m1", sb.password_url, ca_file=ca, username="m1", password="x", **fast
    )
    await until(
        lambda: no_cert.stats.connect_failures >= 2 and bad_pw.stats.connect_failures >= 2,
        what="both refused twice",
    )
    assert not no_cert.connected
    assert not bad_pw.connected
    assert no_cert.stats.connects == bad_pw.stats.connects == 0


async def test_broker_certificate_from_another_ca_is_refused(
    secure_broker: SecureBroker, started: list[MqttTransport], tmp_path: Path
) -> None:
    """A node that trusts a different CA does not talk to the broker (no silent fallback)."""
    other_ca = Pki.create(tmp_path / "other").ca_cert
    node = await _start(
        started,
        "m1",
        secure_broker.password_url,
        ca_file=other_ca,
        username="m1",
        password="m1-secret",
    )
    await until(lambda: node.stats.connect_failures >= 2, what="TLS verification failed twice")
    assert node.stats.connects == 0


async def test_an_unadmitted_light_member_has_what_joining_needs_and_no_more(
    secure_broker: SecureBroker, started: list[MqttTransport]
) -> None:
    """A member the ledger has not admitted (the broker only knows its account) can send its
    JoinRequest on ``tx`` and proof requests (broadcast and direct), and receives headers and
    its proof answers (docs/spec/join.md §4a); a client logged in under its name still reads
    no other member's tx."""
    sb = secure_broker
    ca = sb.pki.ca_cert
    pw = {"ca_file": ca}
    v1 = await _start(started, "v1", sb.password_url, username="v1", password="v1-secret", **pw)
    m1 = await _start(started, "m1", sb.password_url, username="m1", password="m1-secret", **pw)
    m2 = await _start(
        started, "m2", sb.password_url, username="m2", password="m2-secret",
        broadcast_channels=LIGHT_CHANNELS, **pw,
    )  # fmt: skip
    for transport in (v1, m1, m2):
        await transport.wait_connected(5)
    rv, rm = Receiver(v1), Receiver(m2)
    await m2.publish("tx", b"join-request")
    await m2.publish("proof_req", b"headers-req")
    await m2.publish("proof_req", b"proof-req", to="v1")
    await rv.wait_for(3)
    await v1.publish("header", b"header-1")
    await v1.publish("proof_resp", b"proof-answer", to="m2")
    await rm.wait_for(2)
    assert sorted(rv.payloads()) == [b"headers-req", b"join-request", b"proof-req"]
    assert sorted(rm.payloads()) == [b"header-1", b"proof-answer"]
    tls = aiomqtt.TLSParameters(ca_certs=str(ca))
    async with aiomqtt.Client(
        "127.0.0.1", sb.password_port, username="m2", password="m2-secret",
        identifier="m2-rogue", protocol=aiomqtt.ProtocolVersion.V5, tls_params=tls,
    ) as rogue:  # fmt: skip
        await rogue.subscribe(broadcast_topic(CHAIN, "+", "+"), qos=1)
        await m1.publish("tx", b"m1-measure")
        await m1.flush(5)
        await m1.publish("join", b"marker")
        seen = []
        async with asyncio.timeout(5):
            async for message in rogue.messages:
                seen.append(message.payload)
                if message.payload == b"marker":
                    break
    assert seen == [b"marker"]
    await rv.stop()
    await rm.stop()


async def test_lemctl_approve_reaches_the_validators_through_the_acl(
    secure_broker: SecureBroker, started: list[MqttTransport]
) -> None:
    """``lemctl member approve`` publishes with the node's account under a client id of its
    own (``<node>-lemctl-<pid>``): its tx reaches the validators through the shipped ACL; a tx
    under a name that is neither the account nor the client id is still dropped."""
    sb = secure_broker
    ca = sb.pki.ca_cert
    ca_b = sb.client_cert("b")
    b = await _start(started, "b", sb.cert_url, ca_file=ca, cert_file=ca_b.cert, key_file=ca_b.key)
    await b.wait_connected(5)
    rb = Receiver(b)
    lemctl = await _start(
        started, "v1-lemctl-4242", sb.password_url, username="v1", password="v1-secret",
        ca_file=ca,
    )  # fmt: skip
    await lemctl.wait_connected(5)
    tls = aiomqtt.TLSParameters(ca_certs=str(ca))
    async with aiomqtt.Client(
        "127.0.0.1", sb.password_port, username="m1", password="m1-secret",
        identifier="m1-tool", protocol=aiomqtt.ProtocolVersion.V5, tls_params=tls,
    ) as rogue:  # fmt: skip
        await rogue.publish(broadcast_topic(CHAIN, "tx", "v1"), b"forged-tx", qos=1)
    await lemctl.publish("tx", b"approve-member")
    await rb.wait_payload(b"approve-member")
    assert rb.payloads() == [b"approve-member"]
    assert [m.sender for m in rb.received] == ["v1-lemctl-4242"]
    await rb.stop()


def test_the_shipped_broker_listens_on_its_two_tls_ports_only(secure_broker: SecureBroker) -> None:
    """No plain-text default listener: a listener option in the general section (it was
    ``max_connections``) makes mosquitto open 1883 on every interface, where passwords would
    travel in clear."""
    process = secure_broker.broker.process
    assert process is not None
    assert listening(process.pid, secure_broker.cert_port)
    assert listening(process.pid, secure_broker.password_port)
    assert not listening(process.pid, 1883)
