"""The MQTT transport against a real mosquitto on 127.0.0.1 (with a fault proxy where needed)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from ledger.transport.base import PayloadTooLargeError, TransportClosedError
from ledger.transport.mqtt import MqttTransport
from ledger.transport.topics import (
    TopicError,
    broadcast_topic,
    publish_packet_bytes,
    status_topic,
)
from tests.support.mosquitto import Mosquitto
from tests.support.nodes import CHAIN, Receiver, settings, until
from tests.support.proxy import FaultProxy

MakeNode = Callable[..., Awaitable[tuple[MqttTransport, Receiver]]]
BRIDGE_EXAMPLE = Path(__file__).resolve().parents[2] / "systemd/mosquitto/lem-bridge.conf.example"


def _bridge_settings(peer_port: int) -> list[str]:
    """The example bridge's settings, pointed at ``peer_port``, without its TLS file lines."""
    lines = []
    for line in BRIDGE_EXAMPLE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith(
            ("bridge_cafile", "bridge_certfile", "bridge_keyfile", "bridge_insecure")
        ):
            continue
        lines.append(f"address 127.0.0.1:{peer_port}" if line.startswith("address") else line)
    return lines


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    """Start transports with a background receiver each; all are closed at teardown."""
    started: list[tuple[MqttTransport, Receiver]] = []

    async def make(
        node_id: str, urls: list[str], *, connect: bool = True, **overrides: Any
    ) -> tuple[MqttTransport, Receiver]:
        transport = MqttTransport(settings(node_id, urls, **overrides))
        await transport.start()
        receiver = Receiver(transport)
        started.append((transport, receiver))
        if connect:
            await transport.wait_connected(5)
        return transport, receiver

    yield make
    for transport, receiver in started:
        await transport.close()
        await receiver.stop()


async def test_broadcast_reaches_every_other_node_and_direct_only_its_recipient(
    mosquitto: Mosquitto, make_node: MakeNode
) -> None:
    """Three nodes: a broadcast reaches the two others; a direct message only its recipient."""
    a, ra = await make_node("a", [mosquitto.url])
    b, rb = await make_node("b", [mosquitto.url])
    c, rc = await make_node("c", [mosquitto.url])

    await a.publish("tx", b"tx-1")
    await a.publish("sync_resp", b"for-b-only", to="b")
    await b.publish("consensus", b"vote-b")
    await a.publish("block", b"marker")  # after the direct one: c sees the marker, not the direct

    await rb.wait_payload(b"marker")
    await rb.wait_payload(b"tx-1")
    await rc.wait_payload(b"marker")
    await rc.wait_payload(b"tx-1")
    await rc.wait_payload(b"vote-b")
    await ra.wait_payload(b"vote-b")

    # tx gossip rides the outgoing queue's bulk lane, behind control messages (consensus.md §11b)
    assert [(m.channel, m.sender, m.payload) for m in rb.received] == [
        ("sync_resp", "a", b"for-b-only"),
        ("block", "a", b"marker"),
        ("tx", "a", b"tx-1"),
    ]
    assert sorted(rc.payloads()) == [b"marker", b"tx-1", b"vote-b"]
    assert ra.payloads() == [b"vote-b"]
    assert c.stats.foreign_dropped == 0  # the broker never even sent c the direct message


async def test_own_broadcasts_are_not_sent_back(mosquitto: Mosquitto, make_node: MakeNode) -> None:
    """MQTT 5 No Local: a node's broadcasts do not come back to it, not even as bytes."""
    a, ra = await make_node("a", [mosquitto.url])
    _, rb = await make_node("b", [mosquitto.url])

    for i in range(5):
        await a.publish("consensus", b"vote-%d" % i)
    await rb.wait_for(5)
    await a.flush(5)

    assert ra.received == []
    assert a.stats.bytes_in == 0
    assert a.stats.messages_out == 5


async def test_mqtt_311_mode_filters_own_echo_locally(
    mosquitto: Mosquitto, make_node: MakeNode
) -> None:
    """With MQTT 3.1.1 (no No Local) the broker echoes; the transport drops the echo itself."""
    a, ra = await make_node("a", [mosquitto.url], mqtt_version=4)
    _, rb = await make_node("b", [mosquitto.url], mqtt_version=4)

    await a.publish("consensus", b"vote")
    await a.publish("tx", b"direct", to="b")
    await rb.wait_for(2)
    await until(lambda: a.stats.bytes_in > 0, what="the broker echoed a's broadcast")

    assert rb.payloads() == [b"vote", b"direct"]
    assert ra.received == []
    assert a.stats.messages_in == 0


async def test_member_without_consensus_channel_gets_no_votes_but_blocks(
    mosquitto: Mosquitto, make_node: MakeNode
) -> None:
    """broadcast_channels without 'consensus': votes never cross the member's link; blocks do."""
    v, _ = await make_node("v", [mosquitto.url])
    m, rm = await make_node(
        "m", [mosquitto.url], broadcast_channels=("tx", "block", "sync_req", "sync_resp", "join")
    )

    await v.publish("consensus", b"vote" * 10)
    await v.publish("consensus", b"for-m", to="m")  # direct messages arrive on any channel
    await v.publish("block", b"block-1")
    await rm.wait_for(2)
    await v.flush(5)

    assert sorted(rm.payloads()) == [b"block-1", b"for-m"]
    assert m.stats.bytes_in == sum(
        publish_packet_bytes(t, len(p))
        for t, p in (
            ("lem/1/test-chain/consensus/to/m/v", b"for-m"),
            ("lem/1/test-chain/block/v", b"block-1"),
        )
    )


async def test_message_to_self_is_delivered_locally(
    mosquitto: Mosquitto, make_node: MakeNode
) -> None:
    """publish(to=own id) reaches the node's own consumer without the broker."""
    a, ra = await make_node("a", [mosquitto.url])

    await a.publish("sync_req", b"self", to="a")

    assert (await ra.wait_for(1))[0].payload == b"self"
    assert a.stats.messages_out == 0


async def test_identical_payload_is_delivered_once(
    mosquitto: Mosquitto, make_node: MakeNode
) -> None:
    """A re-published identical payload (QoS 1 duplicate, re-gossip) is dropped and counted."""
    a, _ = await make_node("a", [mosquitto.url])
    b, rb = await make_node("b", [mosquitto.url])
    c, _ = await make_node("c", [mosquitto.url])

    await a.publish("consensus", b"same-vote")
    await a.publish("consensus", b"same-vote")
    await c.publish("consensus", b"same-vote")  # another relayer of the same signed vote
    await a.publish("consensus", b"next")
    await rb.wait_payload(b"next")
    await until(lambda: b.stats.duplicates_dropped == 2, what="two duplicates counted")

    assert rb.payloads().count(b"same-vote") == 1
    assert b.stats.messages_in == 2


async def test_oversize_payload_is_refused_on_send_and_never_delivered(
    mosquitto: Mosquitto, make_node: MakeNode
) -> None:
    """Above max_payload_bytes: publish raises and counts; a foreign oversize one never arrives."""
    a, _ = await make_node("a", [mosquitto.url], max_payload_bytes=1024)
    b, rb = await make_node("b", [mosquitto.url], max_payload_bytes=1024)

    with pytest.raises(PayloadTooLargeError, match="1025 bytes, above the limit of 1024"):
        await a.publish("block", b"x" * 1025)
    assert a.stats.oversize_rejected == 1
    assert a.stats.outbox_len == 0

    # A client that ignores the limit: the broker holds b to its announced Maximum Packet Size.
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="rogue") as rogue:
        await rogue.publish(broadcast_topic(CHAIN, "block", "rogue"), b"y" * 4096, qos=1)
        await rogue.publish(broadcast_topic(CHAIN, "block", "rogue"), b"fits", qos=1)
    await rb.wait_payload(b"fits")

    assert rb.payloads() == [b"fits"]
    assert b.stats.bytes_in < 4096


async def test_publish_checks_channel_and_recipient_and_closed_state(
    mosquitto: Mosquitto, make_node: MakeNode
) -> None:
    """Unknown channel, a recipient that is not a topic level, and use after close are errors."""
    a, _ = await make_node("a", [mosquitto.url])

    with pytest.raises(TopicError, match="channel 'gossip'"):
        await a.publish("gossip", b"p")
    with pytest.raises(TopicError, match="not a valid topic level"):
        await a.publish("tx", b"p", to="b/#")
    await a.close()
    with pytest.raises(TransportClosedError):
        await a.publish("tx", b"p")


async def test_failover_to_second_broker_when_first_dies(
    mosquitto_factory: Callable[..., Mosquitto], make_node: MakeNode
) -> None:
    """Nodes list two brokers; the first is killed; traffic continues through the second."""
    first, second = mosquitto_factory(), mosquitto_factory()
    urls = [first.url, second.url]
    a, _ = await make_node("a", urls)
    b, rb = await make_node("b", urls)
    await a.publish("tx", b"via-first")
    await rb.wait_payload(b"via-first")
    assert a.stats.broker == b.stats.broker == str(first.url)

    first.kill()
    await until(
        lambda: a.stats.reconnects == 1 and b.stats.reconnects == 1, what="both failed over"
    )
    await a.publish("tx", b"via-second")
    await rb.wait_payload(b"via-second")

    assert a.stats.broker == b.stats.broker == second.url
    assert rb.payloads() == [b"via-first", b"via-second"]


async def test_broker_restart_reconnects_and_flushes_what_was_queued(
    mosquitto: Mosquitto,
    make_node: MakeNode,
    fault_proxy_factory: Callable[..., Awaitable[FaultProxy]],
) -> None:
    """Broker killed and restarted: both reconnect; messages published meanwhile are delivered."""
    proxy = await fault_proxy_factory(mosquitto.port)
    a, _ = await make_node("a", [proxy.url])
    b, rb = await make_node("b", [mosquitto.url])

    mosquitto.kill()
    await until(lambda: not a.connected and not b.connected, what="both saw the broker die")
    for i in range(3):
        await a.publish("tx", b"queued-%d" % i)
    assert a.stats.outbox_len == 3

    proxy.cut()  # hold a back until b has re-subscribed: the broker keeps no queue for b
    mosquitto.start()
    await b.wait_connected(5)
    proxy.heal()
    await rb.wait_for(3)

    assert rb.payloads() == [b"queued-0", b"queued-1", b"queued-2"]
    assert a.stats.reconnects >= 1
    assert b.stats.reconnects == 1
    assert a.stats.outbox_len == 0


async def test_link_cut_queues_bounded_drop_oldest_and_heals(
    mosquitto: Mosquitto,
    make_node: MakeNode,
    fault_proxy_factory: Callable[..., Awaitable[FaultProxy]],
) -> None:
    """Link cut: publish never blocks, the queue keeps the newest 3 of 5, and they flow on heal."""
    proxy = await fault_proxy_factory(mosquitto.port)
    a, _ = await make_node("a", [proxy.url], outbox_max_messages=3, connect_timeout_s=0.5)
    _, rb = await make_node("b", [mosquitto.url])

    proxy.cut()
    await until(lambda: not a.connected, what="a saw the cut")
    for i in range(5):
        await a.publish("consensus", b"vote-%d" % i)
    assert (a.stats.outbox_len, a.stats.outbox_dropped) == (3, 2)
    await until(lambda: a.stats.connect_failures >= 1, what="a retried while cut, and failed")

    proxy.heal()
    await rb.wait_for(3)

    assert rb.payloads() == [b"vote-2", b"vote-3", b"vote-4"]
    await until(lambda: a.stats.messages_out == 3, what="all three acknowledged")
    assert a.stats.outbox_dropped == 2


async def test_tx_backlog_after_a_cut_neither_drops_nor_delays_consensus(
    mosquitto: Mosquitto,
    make_node: MakeNode,
    fault_proxy_factory: Callable[..., Awaitable[FaultProxy]],
) -> None:
    """Cut link, full queue of tx gossip: every vote survives and is delivered before any tx."""
    proxy = await fault_proxy_factory(mosquitto.port)
    a, _ = await make_node("a", [proxy.url], outbox_max_messages=4, connect_timeout_s=0.5)
    _, rb = await make_node("b", [mosquitto.url])

    proxy.cut()
    await until(lambda: not a.connected, what="a saw the cut")
    await a.publish("consensus", b"vote-0")
    for i in range(20):
        await a.publish("tx", b"tx-%d" % i)
    await a.publish("consensus", b"vote-1")
    assert (a.stats.outbox_len, a.stats.outbox_dropped, a.stats.outbox_dropped_urgent) == (4, 18, 0)

    proxy.heal()
    await rb.wait_for(4)

    assert rb.payloads() == [b"vote-0", b"vote-1", b"tx-18", b"tx-19"]


async def test_silent_link_is_detected_and_message_resent_after_heal(
    mosquitto: Mosquitto,
    make_node: MakeNode,
    fault_proxy_factory: Callable[..., Awaitable[FaultProxy]],
) -> None:
    """Blackholed link (no FIN/RST): the missing PUBACK drops the link; the message is re-queued."""
    proxy = await fault_proxy_factory(mosquitto.port)
    a, _ = await make_node("a", [proxy.url], io_timeout_s=1.0, connect_timeout_s=1.0, keepalive_s=1)
    _, rb = await make_node("b", [mosquitto.url])

    proxy.blackhole()
    await a.publish("consensus", b"lost-in-the-hole")
    await until(lambda: a.stats.requeued >= 1 and not a.connected, what="a gave up on the link")
    assert rb.received == []

    proxy.heal()
    await rb.wait_payload(b"lost-in-the-hole", timeout_s=8)
    assert a.stats.reconnects >= 1


async def test_idle_silent_link_is_noticed_by_the_keepalive(
    mosquitto: Mosquitto,
    make_node: MakeNode,
    fault_proxy_factory: Callable[..., Awaitable[FaultProxy]],
) -> None:
    """No traffic and a blackholed link: the unanswered PINGREQ ends the link; heal reconnects."""
    proxy = await fault_proxy_factory(mosquitto.port)
    a, _ = await make_node("a", [proxy.url], keepalive_s=1, connect_timeout_s=1.0)

    proxy.blackhole()
    await until(lambda: not a.connected, what="keepalive noticed the dead link")
    assert a.stats.requeued == 0  # nothing was being sent: only the keepalive could tell
    proxy.heal()
    await a.wait_connected(5)
    assert a.stats.reconnects >= 1


async def test_late_puback_leads_to_a_resend_whose_duplicate_is_dropped(
    mosquitto: Mosquitto,
    make_node: MakeNode,
    fault_proxy_factory: Callable[..., Awaitable[FaultProxy]],
) -> None:
    """PUBACK later than io_timeout: link dropped, message re-sent; the receiver keeps one copy."""
    proxy = await fault_proxy_factory(mosquitto.port)
    a, _ = await make_node("a", [proxy.url], io_timeout_s=0.5, connect_timeout_s=1.0)
    b, rb = await make_node("b", [mosquitto.url])

    proxy.delay_down_s = 0.8  # the PUBLISH reaches the broker at once, its PUBACK too late
    await a.publish("consensus", b"slow-vote")
    await until(lambda: a.stats.requeued >= 1, what="a gave up waiting for the PUBACK")
    proxy.delay_down_s = 0.0
    await until(lambda: a.stats.messages_out == 1, what="the re-send was acknowledged")
    await until(lambda: b.stats.duplicates_dropped == 1, what="the second copy reached b")

    assert rb.payloads() == [b"slow-vote"]
    assert a.stats.reconnects >= 1


async def test_status_will_marks_a_node_offline_when_its_link_dies(
    mosquitto: Mosquitto,
    make_node: MakeNode,
    fault_proxy_factory: Callable[..., Awaitable[FaultProxy]],
) -> None:
    """status_will: retained 'online' after connect; the broker publishes 'offline' on link loss."""
    proxy = await fault_proxy_factory(mosquitto.port)
    a, _ = await make_node("a", [proxy.url], status_will=True)
    flags: list[bytes] = []
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="watcher") as watcher:
        await watcher.subscribe(status_topic(CHAIN, "a"), qos=1)
        messages = aiter(watcher.messages)
        flags.append((await anext(messages)).payload)  # type: ignore[arg-type]
        proxy.drop_connections()  # no DISCONNECT: the broker sends the will
        flags.append((await anext(messages)).payload)  # type: ignore[arg-type]
        flags.append((await anext(messages)).payload)  # type: ignore[arg-type]

    assert flags == [b"online", b"offline", b"online"]
    # "online" goes out while the new session subscribes, just before it counts itself.
    await until(lambda: a.stats.reconnects == 1, what="a counted its reconnect")


async def test_nodes_on_two_bridged_brokers_hear_each_other_once(
    mosquitto_factory: Callable[..., Mosquitto], make_node: MakeNode
) -> None:
    """The example bridge (systemd/mosquitto): nodes on either broker hear each other once."""
    first = mosquitto_factory()
    second = mosquitto_factory(extra_config=_bridge_settings(first.port))
    a, ra = await make_node("a", [first.url])
    b, rb = await make_node("b", [second.url])
    async with asyncio.timeout(5):  # the bridge connects on its own time: probe until it carries
        for probe in itertools.count():
            await a.publish("join", b"probe-%d" % probe)
            with contextlib.suppress(TimeoutError):
                await rb.wait_for(1, timeout_s=0.2)
                break

    await a.publish("consensus", b"from-a")
    await b.publish("consensus", b"from-b")
    await b.publish("sync_resp", b"b-to-a", to="a")
    await rb.wait_payload(b"from-a")
    await ra.wait_payload(b"b-to-a")
    await ra.wait_payload(b"from-b")
    await a.publish("block", b"marker-a")
    await rb.wait_payload(b"marker-a")

    assert [p for p in rb.payloads() if not p.startswith(b"probe")] == [b"from-a", b"marker-a"]
    assert sorted(ra.payloads()) == [b"b-to-a", b"from-b"]
    assert a.stats.duplicates_dropped == b.stats.duplicates_dropped == 0


async def test_run_owned_by_a_daemon_task_group_ends_normally_on_close(
    mosquitto: Mosquitto,
) -> None:
    """A daemon runs run() in its own TaskGroup: close() ends it without error or hang."""
    transport = MqttTransport(settings("a", [mosquitto.url]))
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        runner = group.create_task(transport.run())
        await transport.wait_connected(5)
        await transport.close(drain_timeout_s=1.0)

    assert runner.done()
    assert not runner.cancelled()
    assert runner.exception() is None
    assert not transport.connected
