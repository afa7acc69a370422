"""The broker ACL: member rights for every node, full-node rights per validator.

Spec: docs/spec/light.md §5, docs/spec/transport.md §9. The shipped file
``systemd/mosquitto/lem-broker.acl`` grants every authenticated node the light-member rights
(patterns keyed on ``%u``); :func:`render` appends after its ``# @validators`` marker one
``user`` block per validator node id, which may read txs, votes and blocks and write
consensus messages, blocks and headers. mosquitto has no groups, so the validator list is
spelled out; re-render and reload (SIGHUP) the broker when governance changes the set.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.transport.topics import check_segment

MARKER = "# @validators"
VALIDATOR_WRITES = ("consensus", "block", "header", "sync_resp")
VALIDATOR_READS = ("tx", "consensus", "block", "sync_req", "sync_resp", "proof_req")


def validator_block(node_id: str) -> list[str]:
    """ACL lines of one validator (``user`` section)."""
    check_segment("validator node id", node_id)
    lines = [f"user {node_id}"]
    lines += [f"topic write lem/1/+/{channel}/{node_id}" for channel in VALIDATOR_WRITES]
    lines += [f"topic read lem/1/+/{channel}/+" for channel in VALIDATOR_READS]
    return lines


def render(template: str, validators: Sequence[str]) -> str:
    """The ACL file for a community whose validators have these node ids.

    Raises:
        ValueError: the template has no ``# @validators`` marker line.
        TopicError: a node id that cannot be one topic level.
    """
    lines = template.splitlines()
    if MARKER not in lines:
        raise ValueError(f"ACL template has no {MARKER!r} line")
    at = lines.index(MARKER) + 1
    block: list[str] = []
    for node_id in validators:
        block += ["", *validator_block(node_id)]
    return "\n".join(lines[:at] + block + lines[at:]) + "\n"
