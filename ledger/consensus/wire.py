"""Wire envelopes of consensus, block announcements and block sync.

Spec: docs/spec/consensus.md §Wire. Every payload is the canonical encoding of an array whose
first element names the kind and whose second is the chain id (so a message from another chain
is dropped and counted before any signature check):

- ``["vote", chain, body, sig]`` on channel ``consensus``
- ``["proposal", chain, body, sig, block]`` on channel ``consensus``
- ``["cproposal", chain, body, sig, compact]`` on channel ``consensus``: the same signed
  proposal with the block in the application's compact form (the ledger: header, tx hashes,
  last commit); receivers rebuild the block from their mempools
- ``["prop_req", chain, height, round, time_ms]`` on ``consensus`` to one proposer: "send me
  your full proposal of (height, round)" (a receiver missing some of a compact block's txs)
- ``["block", chain, block, commit]`` on ``block`` (a decided block and its commit) and on
  ``sync_resp`` (answers to a sync request)
- ``["cblock", chain, compact, commit]`` on ``block``: a decision announced with the block in
  compact form (a receiver that cannot rebuild it asks for blocks by sync)
- ``["tip", chain, commit]`` on ``block`` (an idle validator's periodic re-announcement of
  the latest commit, without the block: a lagging node learns it is behind)
- ``["sync_req", chain, from_height, time_ms]`` on ``sync_req`` (the requester's clock makes
  each retry a distinct payload, so deduplication by hash never swallows a retry)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import codec
from ledger.consensus.errors import MessageError
from ledger.consensus.messages import MAX_BLOCK_BYTES, Commit, Proposal, Vote
from ledger.errors import CodecError

MAX_PAYLOAD_BYTES = MAX_BLOCK_BYTES + (64 << 10)
"""Largest envelope accepted [bytes]: one block plus room for its commit."""


@dataclass(frozen=True, slots=True)
class BlockAnnouncement:
    """A decided block with the commit that proves it."""

    block: bytes
    commit: Commit


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Ask peers for decided blocks from ``from_height`` on (sent at ``time_ms``)."""

    from_height: int
    time_ms: int


@dataclass(frozen=True, slots=True)
class Tip:
    """The latest commit a peer holds (its block is fetched by sync when needed)."""

    commit: Commit


@dataclass(frozen=True, slots=True)
class CompactProposal:
    """A signed proposal whose block travels in compact form (``proposal.block`` is empty)."""

    proposal: Proposal
    compact: bytes


@dataclass(frozen=True, slots=True)
class CompactAnnouncement:
    """A decided block in compact form with the commit that proves it."""

    compact: bytes
    commit: Commit


@dataclass(frozen=True, slots=True)
class ProposalRequest:
    """Ask a proposer for its full proposal of (height, round) (sent at ``time_ms``)."""

    height: int
    round: int
    time_ms: int


Envelope = (
    Vote
    | Proposal
    | CompactProposal
    | ProposalRequest
    | BlockAnnouncement
    | CompactAnnouncement
    | SyncRequest
    | Tip
)


def encode_vote(chain_id: str, vote: Vote) -> bytes:
    """Envelope for a signed vote."""
    return codec.encode(["vote", chain_id, vote.body(), vote.signature])


def encode_proposal(chain_id: str, proposal: Proposal) -> bytes:
    """Envelope for a signed proposal carrying its block."""
    return codec.encode(["proposal", chain_id, proposal.body(), proposal.signature, proposal.block])


def encode_compact_proposal(chain_id: str, proposal: Proposal, compact: bytes) -> bytes:
    """Envelope for a signed proposal carrying its block in compact form."""
    return codec.encode(["cproposal", chain_id, proposal.body(), proposal.signature, compact])


def encode_proposal_request(chain_id: str, height: int, round_: int, time_ms: int) -> bytes:
    """Envelope asking a proposer for its full proposal of (height, round)."""
    return codec.encode(["prop_req", chain_id, height, round_, time_ms])


def encode_block(chain_id: str, block: bytes, commit: Commit) -> bytes:
    """Envelope for a decided block and its commit."""
    return codec.encode(["block", chain_id, block, commit.to_value()])


def encode_compact_block(chain_id: str, compact: bytes, commit: Commit) -> bytes:
    """Envelope for a decided block in compact form and its commit."""
    return codec.encode(["cblock", chain_id, compact, commit.to_value()])


def encode_tip(chain_id: str, commit: Commit) -> bytes:
    """Envelope re-announcing the latest commit (docs/spec/consensus.md §7)."""
    return codec.encode(["tip", chain_id, commit.to_value()])


def encode_sync_request(chain_id: str, from_height: int, time_ms: int) -> bytes:
    """Envelope asking for blocks from ``from_height`` on, sent at ``time_ms`` [ms]."""
    return codec.encode(["sync_req", chain_id, from_height, time_ms])


def decode(chain_id: str, payload: bytes) -> Envelope:
    """Parse an envelope (signatures are *not* checked here).

    Raises:
        MessageError: reason ``"malformed"`` or ``"wrong_chain"``.
    """
    try:
        value: Any = codec.decode(payload, max_bytes=MAX_PAYLOAD_BYTES)
    except CodecError as exc:
        raise MessageError("malformed", str(exc)) from exc
    if not isinstance(value, list) or len(value) < 3 or not isinstance(value[0], str):
        raise MessageError("malformed", "envelope must be [kind, chain, …]")
    kind, chain = value[0], value[1]
    if chain != chain_id:
        raise MessageError("wrong_chain", f"chain {chain!r} is not {chain_id!r}")
    if kind == "vote" and len(value) == 4 and isinstance(value[2], bytes):
        return Vote.from_body(value[2], value[3])
    if kind == "proposal" and len(value) == 5 and isinstance(value[2], bytes):
        return Proposal.from_body(value[2], value[3], value[4])
    if kind == "cproposal" and len(value) == 5 and isinstance(value[2], bytes):
        if not isinstance(value[4], bytes):
            raise MessageError("malformed", "compact proposal block must be bytes")
        return CompactProposal(Proposal.from_body(value[2], value[3], b""), value[4])
    if kind == "prop_req" and len(value) == 5:
        height, round_, time_ms = value[2], value[3], value[4]
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in value[2:])
        if not ints or height < 1 or round_ < 0 or time_ms < 0:
            raise MessageError("malformed", "proposal request height/round/time out of range")
        return ProposalRequest(height, round_, time_ms)
    if kind == "block" and len(value) == 4 and isinstance(value[2], bytes):
        return BlockAnnouncement(value[2], Commit.from_value(value[3]))
    if kind == "cblock" and len(value) == 4 and isinstance(value[2], bytes):
        return CompactAnnouncement(value[2], Commit.from_value(value[3]))
    if kind == "tip" and len(value) == 3:
        return Tip(Commit.from_value(value[2]))
    if kind == "sync_req" and len(value) == 4 and isinstance(value[2], int):
        if value[2] < 1 or not isinstance(value[3], int) or value[3] < 0:
            raise MessageError("malformed", "sync request from height < 1 or bad time")
        return SyncRequest(value[2], value[3])
    raise MessageError("malformed", f"unknown envelope kind {kind!r} or arity {len(value)}")
