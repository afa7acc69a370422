"""ledger/transport/acl.py: the shipped ACL rendered with a community's validators."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.transport.acl import render
from ledger.transport.topics import TopicError

SHIPPED = Path(__file__).parents[4] / "systemd" / "mosquitto" / "lem-broker.acl"


def _rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_members_get_header_and_inbox_reads_only() -> None:
    """Without validators, no rule lets anyone read tx, consensus or block broadcasts."""
    rules = _rules(render(SHIPPED.read_text(), []))
    reads = [r for r in rules if " read " in f" {r} "]
    assert reads == [
        "pattern read lem/1/+/header/+",
        "pattern read lem/1/+/join/+",
        "pattern read lem/1/+/status/+",
        "pattern read lem/1/+/+/to/%u/+",
    ]
    assert all(r.startswith("pattern ") for r in rules)


def test_each_validator_gets_its_own_user_block() -> None:
    """Two validators: a user section each, writes pinned to their own name."""
    rules = _rules(render(SHIPPED.read_text(), ["node1", "node2"]))
    at = rules.index("user node2")
    assert rules[rules.index("user node1") + 1] == "topic write lem/1/+/consensus/node1"
    assert "topic read lem/1/+/tx/+" in rules[at:]
    assert all("node1" not in r for r in rules[at:])


def test_a_bad_node_id_or_template_is_refused() -> None:
    """A node id with a wildcard, or a template without the marker, raises."""
    with pytest.raises(TopicError):
        render(SHIPPED.read_text(), ["node/#"])
    with pytest.raises(ValueError, match="@validators"):
        render("pattern read lem/1/+/header/+\n", ["node1"])
