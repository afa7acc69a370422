"""Topic names of the ledger channels and the MQTT PUBLISH size arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.transport.base import CHANNELS
from ledger.transport.topics import (
    ParsedTopic,
    TopicError,
    broadcast_topic,
    check_segment,
    direct_topic,
    parse_topic,
    publish_packet_bytes,
    subscriptions,
)

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)


@settings(max_examples=60)
@given(chain=ids, channel=st.sampled_from(CHANNELS), sender=ids, recipient=ids)
def test_built_topics_parse_back(chain: str, channel: str, sender: str, recipient: str) -> None:
    """Every broadcast and direct topic we build parses back to its channel/sender/recipient."""
    assert parse_topic(chain, broadcast_topic(chain, channel, sender)) == ParsedTopic(
        channel, sender, None
    )
    assert parse_topic(chain, direct_topic(chain, channel, recipient, sender)) == ParsedTopic(
        channel, sender, recipient
    )


@pytest.mark.parametrize(
    "topic",
    [
        "lem/1/other/tx/a",  # other chain
        "lem/2/c/tx/a",  # other protocol version
        "lem/1/c/gossip/a",  # unknown channel
        "lem/1/c/status/a",  # status flag, not a ledger channel
        "lem/1/c/tx/a/b",  # 6 levels
        "lem/1/c/tx/from/b/a",  # 7 levels without the "to" mark
        "lem/1/c/tx/$bad",  # sender not a valid level
        "lem/1/c/tx/",  # empty sender
    ],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    """A topic that is not exactly one of our two layouts for this chain raises TopicError."""
    with pytest.raises(TopicError):
        parse_topic("c", topic)


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "-lead", "x" * 65, "spa ce", "é"])
def test_invalid_segments_name_the_field(bad: str) -> None:
    """A node id that cannot be one topic level is refused with the field's name in the error."""
    with pytest.raises(TopicError, match="node_id"):
        check_segment("node_id", bad)


def test_subscriptions_cover_each_channel_and_own_inbox_only() -> None:
    """One filter per channel's broadcasts plus the node's own direct inbox; no bare '#'."""
    filters = subscriptions("c", "n1")
    assert filters == [f"lem/1/c/{ch}/+" for ch in CHANNELS] + ["lem/1/c/+/to/n1/+"]


def test_publish_packet_size_matches_mqtt_5_layout() -> None:
    """Fixed header + topic length prefix + topic + packet id + property length + payload."""
    topic = "lem/1/c/tx/n1"  # 13 bytes
    assert publish_packet_bytes(topic, 100) == 1 + 1 + 2 + 13 + 2 + 1 + 100
    assert publish_packet_bytes(topic, 100, qos=0, v5=False) == 1 + 1 + 2 + 13 + 100
    # remaining length 128 needs a 2-byte varint (MQTT 5.0 §1.5.5)
    assert publish_packet_bytes(topic, 128 - 18) == 1 + 2 + 128
    assert publish_packet_bytes(topic, 16384 - 18) == 1 + 3 + 16384
